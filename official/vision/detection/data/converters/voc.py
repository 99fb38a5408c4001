"""Pascal VOC: a year folder (``VOC2007/``) with ``ImageSets/Main/<split>.txt`` listing image
ids, ``Annotations/<id>.xml`` and ``JPEGImages/<id>.jpg``.

VOC's boxes are 1-based pixel indices, both ends inclusive: (xmin=1, xmax=W) covers the whole
width. In pixel coordinates that box spans 0..W, so xmin and ymin move by -1 and xmax, ymax stay
(detectron2's ``load_voc_instances`` does the same; MMDetection's converter moves all four,
giving boxes 1 px narrower). ``difficult`` objects become ignored regions, as VOC's own
evaluation treats them.
"""
import os
import xml.etree.ElementTree as ET
from xml.parsers import expat

from .source import (
    SourceBox, SourceImage, SourceSplit, at_line, check_box_order, image_size, source_error
)


def read_voc(year_folder, split):
    """The SourceSplit of ``ImageSets/Main/<split>.txt`` in a VOC year folder."""
    list_file = os.path.join(year_folder, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(list_file):
        raise FileNotFoundError("no split list {} (a VOC year folder has ImageSets/Main/"
                                "<split>.txt)".format(list_file))
    images = []
    with open(list_file) as f:
        for number, line in enumerate(f, 1):
            if line.split():
                # trainval.txt lists ids; the per-class lists add a 1/-1/0 column
                images.append(_read_image(year_folder, line.split()[0],
                                          at_line(list_file, number)))
    if not images:
        raise source_error(list_file, "lists no images")
    return SourceSplit(images)


def _read_image(year_folder, image_id, listed_at):
    xml_path = os.path.join(year_folder, "Annotations", image_id + ".xml")
    if not os.path.isfile(xml_path):
        raise source_error(listed_at, "no annotation file {}".format(xml_path))
    root, lines = _parse_xml(xml_path)
    path = os.path.join(year_folder, "JPEGImages", image_id + ".jpg")
    if not os.path.isfile(path) and root.findtext("filename"):
        # other tools writing VOC (labelImg) keep .png and other files, named here
        path = os.path.join(year_folder, "JPEGImages", root.findtext("filename").strip())
    height, width = image_size(path, listed_at)
    boxes = [_read_object(obj, at_line(xml_path, lines[obj])) for obj in root.iter("object")]
    return SourceImage(path, height, width, boxes)


def _read_object(obj, where):
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise source_error(where, "object without a <name>")
    try:
        difficult = int(float(obj.findtext("difficult") or 0))
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (AttributeError, TypeError, ValueError):
        raise source_error(where, "object {!r} lacks a <bndbox> of four numbers (xmin, ymin, "
                                  "xmax, ymax) or has a <difficult> other than 0/1".format(name))
    xyxy = (xmin - 1, ymin - 1, xmax, ymax)
    check_box_order(xyxy, where)
    return SourceBox(name, xyxy, where, ignored=bool(difficult))


def _parse_xml(path):
    """(root element, {element: its line}) of an XML file; broken XML is a one-line error."""
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    lines = {}

    def start(tag, attributes):
        lines[builder.start(tag, attributes)] = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    with open(path, "rb") as f:
        try:
            parser.ParseFile(f)
        except expat.ExpatError as error:
            raise source_error(at_line(path, error.lineno), "broken XML ({})".format(
                expat.ErrorString(error.code)))
    return builder.close(), lines
