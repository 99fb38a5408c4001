"""Box and image-size geometry shared by the data pipeline, the model, the evaluator and
post-processing: the resize rule, padding to a multiple of 32, mirroring, scaling and IoU.

Boxes are [..., 4+] float arrays (x1, y1, x2, y2, ...) in pixels, without the +1 convention.
"""
import numpy as np

SIZE_DIVISIBILITY = 32  # the input is padded so that every pyramid level halves exactly


def resized_hw(height, width, short_size, max_size):
    """Size after scaling the short side to ``short_size``, unless the long side would exceed
    ``max_size``, in which case the long side becomes ``max_size``."""
    scale = short_size / min(height, width)
    if scale * max(height, width) > max_size:
        scale = max_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale))


def padded_side(side, multiple=SIZE_DIVISIBILITY):
    """``side`` rounded up to a multiple; works on ints and on traced shape tensors."""
    return (side + multiple - 1) // multiple * multiple


def padded_hw(height, width, short_size, max_size):
    """The network input size of an image: resized by the rule above, then padded."""
    return tuple(padded_side(side) for side in resized_hw(height, width, short_size, max_size))


def group_by_padded_size(sizes):
    """Indices of ``sizes`` ((height, width) of resized images) grouped by padded size, groups
    in order of first appearance: images of a group pad to the same input, so a batch of them
    gives the results of one image at a time."""
    groups = {}
    for index, (height, width) in enumerate(sizes):
        groups.setdefault((padded_side(height), padded_side(width)), []).append(index)
    return list(groups.values())


def scale_boxes(boxes, old_hw, new_hw):
    """Boxes [G, 4] from an image of size old_hw to one of size new_hw."""
    scale = np.array([new_hw[1] / old_hw[1], new_hw[0] / old_hw[0]] * 2, dtype=np.float32)
    return boxes * scale


def hflip_boxes(boxes, width):
    """Boxes [P, 4] of an image ``width`` pixels wide, mirrored left-right (x -> width - x):
    the same call maps them back."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


def xywh_to_xyxy(boxes):
    """[..., 4] boxes (x, y, width, height), as COCO files store them -> (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:4]], axis=-1)


def xyxy_to_xywh(boxes):
    """[..., 4] boxes (x1, y1, x2, y2) -> (x, y, width, height), as COCO files store them."""
    boxes = np.asarray(boxes)
    return np.concatenate([boxes[..., :2], boxes[..., 2:4] - boxes[..., :2]], axis=-1)


def pairwise_iou(boxes_a, boxes_b):
    """IoU [A, B] = inter / max(union, 1e-5)."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = np.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-5)
