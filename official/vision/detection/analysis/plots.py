"""The analysis pictures, drawn with matplotlib's Agg canvas on Figures of their own (no
display, no pyplot state), each written to its PNG file atomically."""
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..engine.curves import subnormal_warning_ignored
from ..utils.files import atomic_target
from .breakdown import ERROR_TYPES

# Hoiem's colours, as the COCO API's analyze() plots them: C75 and C50 white-ish, then blue,
# red, green, purple and orange
BREAKDOWN_COLORS = ((1.0, 1.0, 1.0), (0.9, 0.9, 0.9), (0.31, 0.51, 0.74), (0.75, 0.31, 0.30),
                    (0.36, 0.90, 0.38), (0.50, 0.39, 0.64), (1.0, 0.6, 0.0))
DPI = 100
PANEL_INCHES = 3.2


def _save(figure, path):
    figure.tight_layout()
    with atomic_target(path) as temporary:
        figure.savefig(temporary, format="png")


def _panel_grid(count, columns=None):
    columns = columns or min(count, max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[count:]:
        unused.set_visible(False)
    return figure, axes[:count]


def _recall_precision_axes(axes, title):
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title, fontsize=10)


def plot_pr_curves(recall, curves, names, path):
    """One panel per category: precision against recall at IoU 0.5 (C50) and 0.75 (C75)."""
    with subnormal_warning_ignored():
        figure, panels = _panel_grid(len(names))
        for k, (axes, name) in enumerate(zip(panels, names)):
            _recall_precision_axes(axes, name)
            if curves[0, 0, k] == -1:
                axes.text(0.5, 0.5, "no ground truth", ha="center", va="center")
                continue
            for t, iou, style in ((1, "0.5", "-"), (0, "0.75", "--")):
                axes.plot(recall, curves[t, :, k], style,
                          label="IoU {} (AP {:.3f})".format(iou, curves[t, :, k].mean()))
            axes.legend(loc="lower left", fontsize=8)
        _save(figure, path)


def _stacked_breakdown(axes, recall, curves, title):
    """Hoiem's plot: the area between a curve and the one before it in the error's colour."""
    _recall_precision_axes(axes, title)
    lower = np.zeros_like(recall)
    for t in range(len(ERROR_TYPES)):
        axes.fill_between(recall, lower, curves[t], color=BREAKDOWN_COLORS[t],
                          label="[{:.3f}] {}".format(curves[t].mean(), ERROR_TYPES[t]))
        axes.plot(recall, curves[t], color="black", linewidth=0.5)
        lower = curves[t]
    axes.legend(loc="lower left", fontsize=7)


def plot_breakdown(recall, overall, curves, names, path):
    """The overall breakdown in the first panel, then one panel per category."""
    with subnormal_warning_ignored():
        figure, panels = _panel_grid(len(names) + 1)
        _stacked_breakdown(panels[0], recall, overall, "overall")
        for k, (axes, name) in enumerate(zip(panels[1:], names)):
            if curves[0, 0, k] == -1:
                _recall_precision_axes(axes, name)
                axes.text(0.5, 0.5, "no ground truth", ha="center", va="center")
            else:
                _stacked_breakdown(axes, recall, curves[:, :, k], name)
        _save(figure, path)


def plot_confusion_matrix(matrix, names, iou_threshold, score_threshold, path):
    """Counts, coloured by their share of the row (ground truth), with background last."""
    labels = list(names) + ["background"]
    side = max(4.0, 0.45 * len(labels) + 2)
    with subnormal_warning_ignored():
        figure = Figure(figsize=(side + 1, side), dpi=DPI)
        FigureCanvasAgg(figure)
        axes = figure.subplots()
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        figure.colorbar(image, ax=axes, label="share of the row")
        if len(labels) <= 30:  # beyond that the numbers overlap
            for (row, column), count in np.ndenumerate(matrix):
                axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                          color="white" if shares[row, column] > 0.5 else "black")
        axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        axes.set_yticks(range(len(labels)), labels)
        axes.set_xlabel("detected (score >= {:g})".format(score_threshold))
        axes.set_ylabel("ground truth")
        axes.set_title("confusion at IoU {:g}".format(iou_threshold))
        _save(figure, path)
