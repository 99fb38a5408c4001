"""Training and its logs, checkpoints, distributed launch, COCO evaluation, and inference over
image files and videos."""
