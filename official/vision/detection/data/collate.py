"""Batching: images zero-padded to the batch's largest size, boxes padded to the most boxes."""
import numpy as np


def stack_padded(arrays):
    """[C, H, W] arrays -> float32 [N, C, H_max, W_max], zero at the bottom and right."""
    height = max(array.shape[1] for array in arrays)
    width = max(array.shape[2] for array in arrays)
    batch = np.zeros((len(arrays), arrays[0].shape[0], height, width), dtype=np.float32)
    for index, array in enumerate(arrays):
        batch[index, :, :array.shape[1], :array.shape[2]] = array
    return batch


def pad_images(images):
    """HxWx3 images -> float32 [N, 3, H_max, W_max], zero at the bottom and right."""
    return stack_padded([image.transpose(2, 0, 1) for image in images])


def collate_train(samples):
    """Training batch: image [N, 3, H, W], im_info [N, 5] (resized h, w, original h, w, number
    of boxes), gt_boxes [N, G, 5] (x1, y1, x2, y2, label) with G >= 1 (zero rows pad)."""
    max_boxes = max([1] + [len(s["boxes"]) for s in samples])
    gt_boxes = np.zeros((len(samples), max_boxes, 5), dtype=np.float32)
    for index, sample in enumerate(samples):
        count = len(sample["boxes"])
        gt_boxes[index, :count, :4] = sample["boxes"]
        gt_boxes[index, :count, 4] = sample["labels"]
    im_info = np.array([list(s["im_info"]) + [len(s["boxes"])] for s in samples],
                       dtype=np.float32)
    return dict(image=pad_images([s["image"] for s in samples]), im_info=im_info,
                gt_boxes=gt_boxes)
