"""Training, checkpoints, distributed launch and COCO evaluation."""
