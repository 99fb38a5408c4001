"""The keys of a training metrics record (training_logs.py writes them, curves.py draws them)
besides the loss names."""
PROGRESS_KEYS = ("step", "epoch")
RATE_KEYS = ("lr", "images_per_second")
VALIDATION_PREFIX = "bbox/"  # the COCO metrics of the validation split: bbox/AP, bbox/AP50, ...
