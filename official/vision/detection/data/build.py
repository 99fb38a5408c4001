"""The training and test datasets a config names, built and checked in one place."""
from ..errors import DatasetError
from .check import check_split
from .coco import COCODetection, resolve_dataset_paths


def build_dataset(dataset_cfg, dataset_dir, num_classes, remove_images_without_annotations):
    """The COCO-format dataset of a config's ``train_dataset``/``test_dataset`` dict (its own
    ``remove_images_without_annotations`` entry overrides the default given); its categories
    must be the config's ``num_classes``."""
    root, ann_file = resolve_dataset_paths(dataset_cfg, dataset_dir)
    dataset = COCODetection(root, ann_file, dataset_cfg.get(
        "remove_images_without_annotations", remove_images_without_annotations))
    found = len(dataset.category_ids)
    if found != num_classes:
        raise DatasetError("cfg.num_classes is {} but {} has {} categories; set num_classes = "
                           "{}".format(num_classes, ann_file, found, found))
    return dataset


def build_train_dataset(cfg, dataset_dir):
    """Images without objects teach nothing to FCOS and are left out by default."""
    return build_dataset(cfg.train_dataset, dataset_dir, cfg.num_classes, True)


def build_test_dataset(cfg, dataset_dir):
    """Every image counts in testing, with objects or not, by default."""
    return build_dataset(cfg.test_dataset, dataset_dir, cfg.num_classes, False)


def check_dataset(dataset_cfg, dataset_dir, decode_images=False):
    """The check report (check.py) of a config's ``train_dataset``/``test_dataset`` split."""
    root, ann_file = resolve_dataset_paths(dataset_cfg, dataset_dir)
    return check_split(ann_file, root, decode_images)
