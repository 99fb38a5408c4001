"""tools/convert_dataset.py and data/converters/: VOC, YOLO and LabelMe sources, written from one
known truth, convert to COCO files whose boxes match it; the result trains; bad sources end in
one line naming the file and line and leave the output folder as it was."""
import json
import os
import re

import cv2
import numpy as np
import pytest

from official.vision.detection.data.converters.convert import convert_dataset
from official.vision.detection.engine.checkpoint import latest_checkpoint, load_checkpoint
from official.vision.detection.engine.trainer import TrainOptions, run_training
from official.vision.detection.errors import DatasetError

from conftest import run_tool, write_config

CLASSES = ["circle", "square", "triangle"]
# (file stem, height, width, [(class, x1, y1, x2, y2 in pixel coordinates, difficult)]);
# "empty" has no objects, and a YOLO source gives it no label file
TRUTH = {
    "train": [
        ("a", 60, 80, [("square", 4, 6, 30, 40, False), ("circle", 40, 10, 80, 60, False)]),
        ("b", 72, 64, [("triangle", 0, 0, 20, 24, False), ("square", 10, 30, 50, 70, True)]),
        ("empty", 50, 50, []),
        ("c", 64, 96, [("circle", 50, 2, 95, 40, False), ("triangle", 5, 20, 45, 63, False)]),
    ],
    "val": [
        ("d", 64, 64, [("triangle", 8, 8, 40, 48, False)]),
        ("e", 48, 80, [("circle", 30, 4, 70, 44, False), ("square", 2, 2, 20, 20, False)]),
    ],
}


def write_image(path, height, width, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    cv2.imwrite(path, rng.randint(0, 255, (height, width, 3)).astype(np.uint8))


def write_voc(year):
    """A VOC year folder of TRUTH: 1-based inclusive pixel indices, as VOC's files have."""
    for split, images in TRUTH.items():
        (year / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (year / "ImageSets" / "Main" / (split + ".txt")).write_text(
            "".join(stem + "\n" for stem, _, _, _ in images))
        for seed, (stem, height, width, boxes) in enumerate(images):
            write_image(str(year / "JPEGImages" / (stem + ".jpg")), height, width, seed)
            objects = "".join(
                "  <object>\n    <name>{}</name>\n    <difficult>{}</difficult>\n"
                "    <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>"
                "</bndbox>\n  </object>\n".format(name, int(difficult), x1 + 1, y1 + 1, x2, y2)
                for name, x1, y1, x2, y2, difficult in boxes)
            (year / "Annotations").mkdir(exist_ok=True)
            (year / "Annotations" / (stem + ".xml")).write_text(
                "<annotation>\n  <filename>{}.jpg</filename>\n  <size><width>{}</width>"
                "<height>{}</height><depth>3</depth></size>\n{}</annotation>\n".format(
                    stem, width, height, objects))
    return year


def write_yolo(root):
    """An Ultralytics layout of TRUTH: images/<split>/, labels/<split>/, data.yaml with the
    names as a mapping; difficult boxes are ordinary boxes in YOLO."""
    for split, images in TRUTH.items():
        for seed, (stem, height, width, boxes) in enumerate(images):
            write_image(str(root / "images" / split / (stem + ".jpg")), height, width, seed)
            if not boxes:
                continue
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / (stem + ".txt")).write_text("".join(
                "{} {:.6f} {:.6f} {:.6f} {:.6f}\n".format(
                    CLASSES.index(name), (x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                    (x2 - x1) / width, (y2 - y1) / height)
                for name, x1, y1, x2, y2, _ in boxes))
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n" +
        "".join("  {}: {}\n".format(i, name) for i, name in enumerate(CLASSES)))
    return root / "data.yaml"


def write_labelme(folder, split):
    """LabelMe files of TRUTH's split, images beside them; rectangles drawn from the bottom
    right corner to the top left for one of them."""
    for seed, (stem, height, width, boxes) in enumerate(TRUTH[split]):
        write_image(str(folder / (stem + ".jpg")), height, width, seed)
        shapes = [{"label": name, "shape_type": "rectangle", "flags": {}, "group_id": None,
                   "points": [[x2, y2], [x1, y1]] if i == 0 else [[x1, y1], [x2, y2]]}
                  for i, (name, x1, y1, x2, y2, _) in enumerate(boxes)]
        (folder / (stem + ".json")).write_text(json.dumps(
            {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": stem + ".jpg",
             "imageData": None, "imageHeight": height, "imageWidth": width}, indent=2))
    return folder


def converted_boxes(out, split):
    """{file stem: [(class, x1, y1, x2, y2, iscrowd)]} of a converted split, and its data."""
    with open(os.path.join(out, "annotations", split + ".json")) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    found = {os.path.splitext(image["file_name"])[0]: [] for image in data["images"]}
    stems = {image["id"]: os.path.splitext(image["file_name"])[0] for image in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        found[stems[ann["image_id"]]].append((names[ann["category_id"]], x, y, x + w, y + h,
                                               bool(ann["iscrowd"])))
    return found, data


def assert_matches_truth(out, split, difficult_kept):
    found, data = converted_boxes(out, split)
    assert sorted(found) == sorted(stem for stem, _, _, _ in TRUTH[split])  # unlabelled kept
    for stem, height, width, boxes in TRUTH[split]:
        image = next(i for i in data["images"] if i["file_name"] == stem + ".jpg")
        assert (image["height"], image["width"]) == (height, width)
        assert os.path.isfile(os.path.join(out, split, image["file_name"]))
        assert len(found[stem]) == len(boxes)
        for truth, box in zip(boxes, found[stem]):
            assert box[0] == truth[0]
            assert np.abs(np.subtract(box[1:5], truth[1:5])).max() <= 1.0, (truth, box)
            assert box[5] == (truth[5] and difficult_kept)


def test_voc_boxes_names_and_difficult_objects_convert_exactly(tmp_path):
    year = write_voc(tmp_path / "VOC2007")
    out = tmp_path / "data" / "voc07"
    for split in TRUTH:
        conversion = convert_dataset("voc", str(year), str(out), split)
        assert not conversion.report.errors
        assert_matches_truth(str(out), split, difficult_kept=True)
    _, train = converted_boxes(str(out), "train")
    _, val = converted_boxes(str(out), "val")
    assert train["categories"] == val["categories"] == [
        {"id": i, "name": name} for i, name in enumerate(CLASSES, 1)]
    kinds = {f.kind for f in convert_dataset("voc", str(year), str(out), "train").report.findings}
    assert kinds == {"crowd_box", "image_without_annotations"}


def test_yolo_centre_boxes_become_pixel_boxes_and_images_without_labels_are_kept(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo")
    out = tmp_path / "data" / "shapes"
    for split in TRUTH:
        convert_dataset("yolo", str(data_yaml), str(out), split)
        assert_matches_truth(str(out), split, difficult_kept=False)
    _, train = converted_boxes(str(out), "train")
    assert train["categories"] == [{"id": i, "name": name} for i, name in enumerate(CLASSES)]
    # the names as a list, the split as a list of one .txt file of image paths
    (tmp_path / "yolo" / "val.txt").write_text("images/val/d.jpg\nimages/val/e.jpg\n")
    data_yaml.write_text("val: [val.txt]\nnames: {}\n".format(json.dumps(CLASSES)))
    convert_dataset("yolo", str(data_yaml), str(tmp_path / "listed"), "val")
    assert_matches_truth(str(tmp_path / "listed"), "val", difficult_kept=False)
    assert converted_boxes(str(tmp_path / "listed"), "val")[1]["categories"] == train[
        "categories"]


def test_labelme_rectangles_convert_in_either_corner_order(tmp_path):
    out = tmp_path / "data" / "parts"
    for split in TRUTH:
        convert_dataset("labelme", str(write_labelme(tmp_path / split, split)), str(out), split)
        assert_matches_truth(str(out), split, difficult_kept=False)


def test_a_classes_file_fixes_the_ids_and_a_class_new_to_the_folder_joins_every_split(
        tmp_path):
    out = tmp_path / "data" / "parts"
    only_squares = tmp_path / "squares"
    only_squares.mkdir()
    write_image(str(only_squares / "s.jpg"), 40, 40, 0)
    (only_squares / "s.json").write_text(json.dumps({"imagePath": "s.jpg", "shapes": [
        {"label": "square", "shape_type": "polygon", "points": [[5, 5], [30, 8], [20, 35]]}]}))
    convert_dataset("labelme", str(only_squares), str(out), "val")
    assert converted_boxes(str(out), "val")[0] == {"s": [("square", 5, 5, 30, 35, False)]}
    convert_dataset("labelme", str(write_labelme(tmp_path / "train", "train")), str(out),
                    "train")
    expected = [{"id": 1, "name": "square"}, {"id": 2, "name": "circle"},
                {"id": 3, "name": "triangle"}]  # square keeps its id, new names follow
    assert converted_boxes(str(out), "train")[1]["categories"] == expected
    assert converted_boxes(str(out), "val")[1]["categories"] == expected

    classes = tmp_path / "classes.txt"
    classes.write_text("triangle\nsquare\ncircle\n")
    other = tmp_path / "data" / "ordered"
    convert_dataset("labelme", str(tmp_path / "train"), str(other), "train", str(classes))
    assert converted_boxes(str(other), "train")[1]["categories"] == [
        {"id": 1, "name": "triangle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "circle"}]
    with pytest.raises(DatasetError, match="category id 1 is 'square' in train.json"):
        convert_dataset("labelme", str(only_squares), str(out), "val", str(classes))


def break_voc_xml(tmp_path):
    year = write_voc(tmp_path / "VOC2007")
    xml = year / "Annotations" / "b.xml"
    xml.write_text(xml.read_text().replace("</bndbox>", "", 1))
    return "voc", year, None, r"Annotations/b\.xml, line 8: broken XML \(mismatched tag\)$"


def remove_voc_image(tmp_path):
    year = write_voc(tmp_path / "VOC2007")
    os.remove(str(year / "JPEGImages" / "c.jpg"))
    return "voc", year, None, r"ImageSets/Main/train\.txt, line 4: image \S*c\.jpg not found$"


def leave_a_voc_class_out(tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("circle\nsquare\n")
    return ("voc", write_voc(tmp_path / "VOC2007"), str(classes),
            r"Annotations/b\.xml, line 4: class 'triangle' is not in --classes "
            r"\(circle, square\)$")


def cut_a_yolo_line(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo")
    labels = tmp_path / "yolo" / "labels" / "train" / "a.txt"
    first, second = labels.read_text().splitlines()
    labels.write_text(first + "\n" + second.rsplit(" ", 1)[0] + "\n")
    return "yolo", data_yaml, None, r"labels/train/a\.txt, line 2: 4 fields; a box line has 5"


def use_an_unknown_yolo_class(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo")
    labels = tmp_path / "yolo" / "labels" / "train" / "c.txt"
    labels.write_text(labels.read_text().replace("0 ", "7 ", 1))
    return "yolo", data_yaml, None, (r"labels/train/c\.txt, line 1: class index 7 is out of "
                                     r"range \(data.yaml names 0, 1, 2\)$")


def break_labelme_json(tmp_path):
    folder = write_labelme(tmp_path / "train", "train")
    (folder / "b.json").write_text((folder / "b.json").read_text()[:-2])
    return "labelme", folder, None, r"train/b\.json, line \d+: broken JSON"


def remove_labelme_image(tmp_path):
    folder = write_labelme(tmp_path / "train", "train")
    os.remove(str(folder / "c.jpg"))
    lines = (folder / "c.json").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if '"imagePath"' in text)
    return "labelme", folder, None, r"train/c\.json, line {}: image \S*c\.jpg not found$".format(
        line)


def tree(folder):
    """{path: bytes} of every file under ``folder``, and every folder's path."""
    found = {}
    for parent, folders, files in os.walk(str(folder)):
        found.update({os.path.join(parent, d): None for d in folders})
        for name in files:
            with open(os.path.join(parent, name), "rb") as f:
                found[os.path.join(parent, name)] = f.read()
    return found


@pytest.mark.parametrize("break_source", [
    break_voc_xml, remove_voc_image, leave_a_voc_class_out, cut_a_yolo_line,
    use_an_unknown_yolo_class, break_labelme_json, remove_labelme_image])
def test_a_bad_source_is_one_line_naming_file_and_line_and_leaves_no_output(tmp_path,
                                                                             break_source):
    source_format, source, classes, message = break_source(tmp_path)
    out = tmp_path / "data" / "set"
    good_val = tmp_path / "val" if source_format == "labelme" else source
    if source_format == "labelme":
        write_labelme(good_val, "val")
    convert_dataset(source_format, str(good_val), str(out), "val")
    before = tree(tmp_path / "data")
    with pytest.raises(DatasetError) as error:
        convert_dataset(source_format, str(source), str(out), "train", classes)
    assert re.search(message, str(error.value)) and "\n" not in str(error.value)
    assert tree(tmp_path / "data") == before  # the val split intact, nothing else written
    with pytest.raises(DatasetError):
        convert_dataset(source_format, str(source), str(tmp_path / "data" / "new"), "train",
                        classes)
    assert not os.path.exists(str(tmp_path / "data" / "new"))


def test_the_tool_prints_the_check_or_one_error_line(tmp_path):
    _, year, _, message = break_voc_xml(tmp_path)
    result = run_tool("convert_dataset.py", "--from", "voc", year, "-o", tmp_path / "voc",
                      "--split", "val")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(
        "2 images, 3 boxes (0 ignored), 3 categories (1 circle, 2 square, 3 triangle) -> ")
    assert result.stdout.splitlines()[1].endswith("val.json: 2 images, 3 annotations, 0 errors, "
                                                  "0 warnings")
    result = run_tool("convert_dataset.py", "--from", "voc", year, "-o", tmp_path / "voc",
                      "--split", "train")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and re.search(message, result.stderr)


def test_a_converted_dataset_trains_and_its_checkpoint_names_the_detections(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo")
    for split in TRUTH:
        convert_dataset("yolo", str(data_yaml), str(tmp_path / "datasets" / "shapes"), split)
    config = write_config(tmp_path / "converted.py", nr_images=4)  # 2 steps an epoch, 2 epochs
    log = str(tmp_path / "log")
    run_training(config, TrainOptions(str(tmp_path / "datasets"), log, batch_size=2,
                                      num_workers=0))
    categories = [{"id": i, "name": name} for i, name in enumerate(CLASSES)]
    assert load_checkpoint(latest_checkpoint(log))["categories"] == categories
    # no -d: the names and the dataset's ids come from the checkpoint
    out = tmp_path / "pictures"
    result = run_tool("inference.py", "-f", config, "-w", log, "-i",
                      tmp_path / "yolo" / "images" / "val", "-o", out, "--thresh", "0")
    assert result.returncode == 0, result.stderr
    with open(str(out / "detections.json")) as f:
        detections = [d for record in json.load(f) for d in record["detections"]]
    assert detections and all({"id": d["category_id"], "name": d["class"]} ==
                              categories[d["label"]] for d in detections)


@pytest.mark.parametrize("source_format", ["voc", "labelme"])
def test_voc_and_labelme_conversions_train_with_their_classes(tmp_path, source_format):
    # VOC's difficult objects reach the trainer as crowd regions, which it must skip
    out = tmp_path / "datasets" / "shapes"
    year = write_voc(tmp_path / "VOC2007") if source_format == "voc" else None
    for split in TRUTH:
        source = year or write_labelme(tmp_path / split, split)
        convert_dataset(source_format, str(source), str(out), split)
    config = write_config(tmp_path / "converted.py", nr_images=4)  # 2 steps an epoch, 2 epochs
    log = str(tmp_path / "log")
    losses = run_training(config, TrainOptions(str(tmp_path / "datasets"), log, batch_size=2,
                                               num_workers=0))
    assert len(losses) == 4 and all(np.isfinite(losses))
    names = [c["name"] for c in load_checkpoint(latest_checkpoint(log))["categories"]]
    assert sorted(names) == CLASSES


def test_a_split_converted_again_replaces_its_images_and_annotations(tmp_path):
    year = write_voc(tmp_path / "VOC2007")
    out = tmp_path / "data" / "voc07"
    convert_dataset("voc", str(year), str(out), "train")
    (year / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    convert_dataset("voc", str(year), str(out), "train")
    assert sorted(os.listdir(str(out / "train"))) == ["a.jpg", "b.jpg"]
    assert sorted(converted_boxes(str(out), "train")[0]) == ["a", "b"]
    assert sorted(os.listdir(str(tmp_path / "data"))) == ["voc07"]
