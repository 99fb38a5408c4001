"""Small synthetic COCO-format detection datasets, for the offline demo and tests.

Each image shows a few flat shapes (circle, rectangle, triangle, cross) in random colours on a
textured background, lightly blurred and noisy. Colours are not tied to classes, so a detector
has to learn shape; every object stays at least MIN_VISIBLE_FRACTION visible and its box is
computed from its visible pixels, so boxes are tight.

The files deliberately look like a real COCO download, with the details downstream code tends
to get wrong: category ids are not 1..K, image ids are not 0..N-1, some file names contain a
sub-folder, images differ in size, and both splits contain images without objects.
"""
import collections
import os
import re

import cv2
import numpy as np

from ..boxes import pairwise_iou, xywh_to_xyxy
from ..errors import ConfigError, DatasetError
from ..utils.files import write_json_atomic

# Non-contiguous ids, so readers must map category ids to labels from the file.
CATEGORIES = (
    {"id": 2, "name": "circle", "supercategory": "shape"},
    {"id": 5, "name": "rectangle", "supercategory": "shape"},
    {"id": 9, "name": "triangle", "supercategory": "shape"},
    {"id": 11, "name": "cross", "supercategory": "shape"},
)
# Image ids run over both splits (train first) from FIRST_IMAGE_ID in steps of IMAGE_ID_STEP;
# annotation ids run from 1 (pycocotools' COCOeval treats a matched ground-truth id 0 as no match).
FIRST_IMAGE_ID = 1000
IMAGE_ID_STEP = 7
SPLITS = ("train", "val")
# Every third image (index 1, 4, 7, ...) goes into this sub-folder of the split's image folder.
SUBFOLDER = "part1"
JPEG_QUALITY = 95

# Object extent as a fraction of the short image side, drawn log-uniformly so that small and
# large objects are equally common.
OBJECT_SCALE = (0.1, 0.6)
# Occlusion limits that keep every object recognizable.
MAX_BOX_IOU = 0.3
MIN_VISIBLE_FRACTION = 0.8
PLACEMENT_ATTEMPTS = 30
# A colour "blends in" at a pixel when its L1 distance (over BGR) is below this; an object
# colour is accepted when at most LOW_CONTRAST_LIMIT of the pixels it covers blend in.
MIN_COLOUR_DISTANCE = 90
LOW_CONTRAST_LIMIT = 0.1
MIN_IMAGE_SIDE = 32
_SIDE_PATTERN = re.compile(r"(\d+)(?:-(\d+))?")  # "160" or "128-192"

# image: uint8 BGR [H, W, 3]; label_map: int32 [H, W], 0 for background and k for the visible
# pixels of the k-th object, whose category id is category_ids[k - 1].
SyntheticImage = collections.namedtuple("SyntheticImage", "image label_map category_ids")
SplitSummary = collections.namedtuple(
    "SplitSummary", "image_dir annotation_file num_images num_annotations num_empty")


def make_synthetic_coco(root, num_train=200, num_val=50, image_size=160, seed=0, num_classes=4,
                        max_objects=6, num_empty_train=2, num_empty_val=1,
                        object_scale=OBJECT_SCALE):
    """Write a COCO-format dataset under root and return {split: SplitSummary}.

    Layout: root/{train,val}/[part1/]<image id>.jpg and root/annotations/{train,val}.json.
    image_size is N, (height, width) or per side an inclusive (low, high) range drawn per image,
    e.g. ((128, 192), (128, 192)); see parse_image_size for the text form. object_scale is the
    (low, high) range of object extents as fractions of the short image side. The output depends
    only on the arguments: the same seed gives the same JSON bytes and the same JPEG bytes.
    """
    # Both splits are set up before anything is written, so bad arguments leave no files.
    splits = {
        "train": synthesize_split("train", num_train, num_empty_train, image_size, seed,
                                  num_classes, max_objects, object_scale),
        "val": synthesize_split("val", num_val, num_empty_val, image_size, seed, num_classes,
                                max_objects, object_scale),
    }
    categories = [dict(c) for c in _categories(num_classes)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    next_image_id, next_annotation_id = FIRST_IMAGE_ID, 1
    summary = {}
    for split in SPLITS:
        coco = _write_split(os.path.join(root, split), splits[split], categories, next_image_id,
                            next_annotation_id)
        annotation_file = os.path.join(root, "annotations", split + ".json")
        write_json_atomic(coco, annotation_file)
        annotated_images = {a["image_id"] for a in coco["annotations"]}
        summary[split] = SplitSummary(
            os.path.join(root, split), annotation_file, len(coco["images"]),
            len(coco["annotations"]), len(coco["images"]) - len(annotated_images))
        next_image_id += IMAGE_ID_STEP * len(coco["images"])
        next_annotation_id += len(coco["annotations"])
    return summary


def synthesize_split(split, num_images, num_empty, image_size, seed=0, num_classes=4,
                     max_objects=6, object_scale=OBJECT_SCALE):
    """An iterator over the split's SyntheticImage samples in file order (what
    make_synthetic_coco writes). Arguments are checked at once, not on first iteration.

    Each image has its own generator seeded by (seed, split, index), so any image can be
    re-created alone, e.g. by tests checking boxes against the label map.
    """
    if not 0 <= num_empty <= num_images:
        raise ConfigError("{}: need 0 <= empty images ({}) <= images ({})".format(
            split, num_empty, num_images))
    if max_objects < 1:
        raise ConfigError("max_objects must be at least 1, got {}".format(max_objects))
    if not 0 < object_scale[0] <= object_scale[1] <= 1:
        raise ConfigError("object_scale must satisfy 0 < low <= high <= 1, got {!r}".format(
            object_scale))
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ConfigError("seed must be a non-negative integer, got {!r}".format(seed))
    image_size = normalize_image_size(image_size)
    category_ids = [c["id"] for c in _categories(num_classes)]
    split_index = SPLITS.index(split)
    empty = np.random.default_rng((seed, split_index)).choice(num_images, num_empty,
                                                              replace=False)
    return _samples(seed, split_index, num_images, set(empty.tolist()), image_size,
                    category_ids, max_objects, object_scale)


def _samples(seed, split_index, num_images, empty, image_size, category_ids, max_objects,
             object_scale):
    for index in range(num_images):
        rng = np.random.default_rng((seed, split_index, index))
        height, width = (int(rng.integers(low, high + 1)) for low, high in image_size)
        num_objects = 0 if index in empty else int(rng.integers(1, max_objects + 1))
        yield render_image(rng, height, width, num_objects, category_ids, object_scale)


def _write_split(image_dir, samples, categories, first_image_id, first_annotation_id):
    """Write the split's JPEGs and return its COCO dict."""
    coco = {"info": {"description": "synthetic shapes", "version": "1.0"}, "licenses": [],
            "images": [], "annotations": [], "categories": categories}
    for index, sample in enumerate(samples):
        image_id = first_image_id + IMAGE_ID_STEP * index
        image_record = _image_record(image_id, index, sample.image.shape)
        _write_jpeg(os.path.join(image_dir, image_record["file_name"]), sample.image)
        coco["images"].append(image_record)
        coco["annotations"].extend(
            annotate(sample, image_id, first_annotation_id + len(coco["annotations"])))
    return coco


def render_image(rng, height, width, num_objects, category_ids, object_scale=OBJECT_SCALE):
    """Draw up to num_objects shapes on a textured background; return a SyntheticImage.

    Fewer objects are drawn when the occlusion limits leave no room for more.
    """
    canvas = _background(rng, height, width)
    label_map = np.zeros((height, width), np.int32)
    placed_ids, full_areas, full_boxes = [], [], []
    for _ in range(num_objects):
        category_id = category_ids[rng.integers(len(category_ids))]
        name = _category_name(category_id)
        for _attempt in range(PLACEMENT_ATTEMPTS):
            mask = _random_shape_mask(rng, name, height, width, object_scale)
            box = tight_box(mask)
            if _occludes_too_much(mask, box, label_map, full_areas, full_boxes):
                continue
            _paint(rng, canvas, mask)
            placed_ids.append(category_id)
            full_areas.append(int(mask.sum()))
            full_boxes.append(box)
            label_map[mask] = len(placed_ids)
            break
    return SyntheticImage(_degrade(rng, canvas), label_map, placed_ids)


def annotate(sample, image_id, first_annotation_id):
    """COCO annotations of a sample: tight boxes and pixel areas of the visible parts."""
    annotations = []
    for k, category_id in enumerate(sample.category_ids, start=1):
        mask = sample.label_map == k
        annotations.append({
            "id": first_annotation_id + k - 1, "image_id": image_id,
            "category_id": int(category_id), "bbox": [float(v) for v in tight_box(mask)],
            "area": float(mask.sum()), "iscrowd": 0,
        })
    return annotations


def tight_box(mask):
    """(x, y, w, h) of the smallest pixel-aligned box holding every True pixel of mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = int(cols[0]), int(rows[0])
    return x0, y0, int(cols[-1]) + 1 - x0, int(rows[-1]) + 1 - y0


def normalize_image_size(image_size):
    """N, (h, w) or ((h_low, h_high), (w_low, w_high)) -> ((h_low, h_high), (w_low, w_high))."""
    if np.isscalar(image_size):
        image_size = (image_size, image_size)
    if len(image_size) != 2:
        raise ConfigError("image_size must be N or (height, width), got {!r}".format(image_size))
    return tuple(_side_range(side) for side in image_size)


def parse_image_size(text):
    """Text form of image_size: "160", "160x128" (height x width), "128-192" (both sides drawn
    from a range) or "128-192x160"."""
    sides = [_SIDE_PATTERN.fullmatch(side) for side in text.lower().split("x")]
    if len(sides) > 2 or not all(sides):
        raise ConfigError("image size must look like 160, 160x128 or 128-192, got " + repr(text))
    image_size = tuple(int(m[1]) if m[2] is None else (int(m[1]), int(m[2])) for m in sides)
    if len(image_size) == 1:
        image_size *= 2
    normalize_image_size(image_size)  # reject bad values while parsing arguments
    return image_size


def _categories(num_classes):
    if not 1 <= num_classes <= len(CATEGORIES):
        raise ConfigError("num_classes must be 1..{}, got {}".format(len(CATEGORIES), num_classes))
    return CATEGORIES[:num_classes]


def _category_name(category_id):
    return next(c["name"] for c in CATEGORIES if c["id"] == category_id)


def _side_range(side):
    low, high = (side, side) if np.isscalar(side) else side
    if not MIN_IMAGE_SIDE <= low <= high:
        raise ConfigError("image sides must satisfy {} <= low <= high, got {!r}".format(
            MIN_IMAGE_SIDE, side))
    return int(low), int(high)


def _image_record(image_id, index, shape):
    file_name = "{:06d}.jpg".format(image_id)
    if index % 3 == 1:
        file_name = SUBFOLDER + "/" + file_name
    return {"id": image_id, "file_name": file_name, "height": shape[0], "width": shape[1]}


def _write_jpeg(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise DatasetError("cannot write image {}: check that its folder is writable and has "
                           "room".format(path))


def _background(rng, height, width):
    """Float BGR clutter: a two-colour gradient, smooth colour blobs and sometimes stripes."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xs * np.cos(angle) + ys * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    start, end = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    canvas = start + ramp[..., None] * (end - start)
    # Upsampling a coarse random grid gives soft blobs of other colours.
    grid = rng.normal(0, 40, (rng.integers(3, 8), rng.integers(3, 8), 3)).astype(np.float32)
    canvas += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        period = rng.uniform(5, 20)
        angle = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period
                      + rng.uniform(0, 2 * np.pi))
        canvas += wave[..., None] * rng.uniform(-35, 35, 3).astype(np.float32)
    return np.clip(canvas, 0, 255)


def _random_shape_mask(rng, name, height, width, object_scale):
    """Boolean mask of one randomly sized shape, placed so that it lies wholly in the image."""
    size = min(height, width) * np.exp(rng.uniform(np.log(object_scale[0]),
                                                   np.log(object_scale[1])))
    mask = np.zeros((height, width), np.uint8)
    if name == "circle":
        radius = size / 2
        center = rng.uniform(radius, (width - 1 - radius, height - 1 - radius))
        cv2.circle(mask, tuple(_fixed_point(center).tolist()), int(radius * 16), 1, -1, shift=4)
    else:
        polygon = _SHAPE_POLYGONS[name](rng, size)
        polygon -= polygon.min(axis=0)
        extent = polygon.max(axis=0)
        polygon += rng.uniform(0, (width - 1 - extent[0], height - 1 - extent[1]))
        cv2.fillPoly(mask, [_fixed_point(polygon)], 1, shift=4)
    return mask.astype(bool)


def _fixed_point(points):
    """Coordinates in OpenCV's 4-bit fixed point (shift=4), for sub-pixel placement."""
    return np.round(np.asarray(points) * 16).astype(np.int32)


def _rectangle(rng, size):
    # Axis-aligned, so this class fills its box: the easy end next to the rotated shapes.
    long_side, short_side = size, size * rng.uniform(0.5, 1.0)
    w, h = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def _triangle(rng, size):
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
    angles += rng.uniform(-0.25, 0.25, 3)  # not always equilateral
    return _rotate_scale(np.stack([np.cos(angles), np.sin(angles)], axis=1), size / 2)


def _cross(rng, size):
    arm = rng.uniform(0.28, 0.4)  # half the bar thickness, relative to the half length 1
    quarter = np.array([(1, arm), (arm, arm), (arm, 1)])
    # The 12 corners in order: each quarter is the previous one turned by 90 degrees.
    corners = np.concatenate([_rotate_scale(quarter, 1, q * np.pi / 2) for q in range(4)])
    return _rotate_scale(corners, size / 2, rng.uniform(0, np.pi / 2))


def _rotate_scale(points, scale, angle=0.0):
    """Points [N, 2] turned by angle (x towards y) about the origin, then scaled."""
    cos, sin = np.cos(angle), np.sin(angle)
    return scale * points @ np.array([[cos, sin], [-sin, cos]])


_SHAPE_POLYGONS = {"rectangle": _rectangle, "triangle": _triangle, "cross": _cross}


def _occludes_too_much(mask, box, label_map, full_areas, full_boxes):
    """Whether drawing mask on top would overlap a box too much or hide too much of an object."""
    if not full_boxes:
        return False
    ious = pairwise_iou(xywh_to_xyxy(_boxes([box])), xywh_to_xyxy(_boxes(full_boxes)))
    if ious.max() > MAX_BOX_IOU:
        return True
    num_labels = len(full_areas) + 1
    visible = np.bincount(label_map.ravel(), minlength=num_labels)[1:]
    covered = np.bincount(label_map[mask], minlength=num_labels)[1:]
    return bool(np.any(visible - covered < MIN_VISIBLE_FRACTION * np.asarray(full_areas)))


def _boxes(boxes):
    """A list of boxes as a float64 [n, 4] array."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _paint(rng, canvas, mask):
    """Fill mask with a random colour that stands out from what it covers, lightly shaded."""
    covered = canvas[mask]
    candidates = rng.uniform(0, 255, (16, 3))
    distances = np.abs(covered[None] - candidates[:, None]).sum(axis=2)
    low_contrast = (distances < MIN_COLOUR_DISTANCE).mean(axis=1)
    acceptable = np.flatnonzero(low_contrast <= LOW_CONTRAST_LIMIT)
    colour = candidates[acceptable[0] if acceptable.size else np.argmin(low_contrast)]
    # A gentle linear shade across the object, so its fill is not one flat value.
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle)
    shade = 1 + rng.uniform(0, 0.2) * ramp / max(float(np.abs(ramp).max()), 1.0)
    canvas[mask] = np.clip(colour * shade[:, None], 0, 255)


def _degrade(rng, canvas):
    """Slight blur and sensor-like noise, so the pixels are not trivially clean."""
    blurred = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.3, 0.9))
    noisy = blurred + rng.normal(0, rng.uniform(2, 6), canvas.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
