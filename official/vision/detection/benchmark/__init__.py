"""Timing and arithmetic cost: inference stages, training steps, convolution FLOPs."""
