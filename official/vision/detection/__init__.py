"""FCOS object detection for MegEngine, compatible with the official model-hub weights."""
