"""Building blocks of the detector: norms, FPN, head, points, targets, losses, NMS."""
