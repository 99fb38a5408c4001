"""Where detections go wrong: the COCO error breakdown, precision-recall curves, a confusion
matrix with background and the worst images of a COCO result file (tools/analyze_results.py)."""
