"""Element-wise detection losses; callers choose the reduction and the normalizer."""
import megengine.functional as F

from ..errors import ConfigError

IOU_LOSS_TYPES = ("iou", "linear_iou", "giou")


def binary_cross_entropy_with_logits(logits, targets):
    """-(t log sigmoid(x) + (1 - t) log sigmoid(-x)), computed stably."""
    return -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    """Focal loss (Lin et al. 2017): BCE * (1 - p_t)^gamma * alpha_t, alpha < 0 disables alpha_t."""
    probs = F.sigmoid(logits)
    loss = binary_cross_entropy_with_logits(logits, targets)
    if gamma != 0:
        p_t = targets * probs + (1 - targets) * (1 - probs)
        loss = loss * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (targets * alpha + (1 - targets) * (1 - alpha))
    return loss


def iou_loss_ltrb(pred, target, loss_type="giou", eps=1e-8):
    """IoU-based loss between boxes given as distances (l, t, r, b) from the same point.

    ``loss_type``: "iou" is -log(IoU), "linear_iou" is 1 - IoU, "giou" is 1 - GIoU.
    """
    if loss_type not in IOU_LOSS_TYPES:
        raise ConfigError(
            "iou_loss_type must be one of {}, got {!r}".format(IOU_LOSS_TYPES, loss_type)
        )
    # boxes relative to the point: x1 = -l, y1 = -t, x2 = r, y2 = b
    pred_x1y1, pred_x2y2 = -pred[..., :2], pred[..., 2:]
    target_x1y1, target_x2y2 = -target[..., :2], target[..., 2:]

    def area(x1y1, x2y2):
        size = F.maximum(x2y2 - x1y1, 0)
        return size[..., 0] * size[..., 1]

    inter_size = F.maximum(
        F.minimum(pred_x2y2, target_x2y2) - F.maximum(pred_x1y1, target_x1y1), 0
    )
    inter = inter_size[..., 0] * inter_size[..., 1]
    union = area(pred_x1y1, pred_x2y2) + area(target_x1y1, target_x2y2) - inter
    ious = inter / F.maximum(union, eps)
    if loss_type == "iou":
        return -F.log(F.maximum(ious, eps))
    if loss_type == "linear_iou":
        return 1 - ious
    enclosing_size = F.maximum(pred_x2y2, target_x2y2) - F.minimum(pred_x1y1, target_x1y1)
    enclosing = enclosing_size[..., 0] * enclosing_size[..., 1]
    return 1 - (ious - (enclosing - union) / F.maximum(enclosing, eps))
