"""Other annotation formats into this package's COCO-format dataset folders.

Each format's reader (voc.py, yolo.py, labelme.py) turns a source split into a ``SourceSplit``
(source.py): image files with their decoded sizes and pixel boxes named by class. convert.py
gives the classes their ids, writes the COCO annotation file and the images and checks the
result.
"""
