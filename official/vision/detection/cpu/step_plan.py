"""Which training step a CPU run takes, and the few batch sizes ("canvases") its traced graphs
are compiled for.

A traced graph (traced_step.py) serves one input shape; compiling one costs a few of its
steps and it keeps its memory. Multi-scale training on images of varied
sizes gives batches of many padded sizes, so each batch is padded further, to the smallest of
a few canvases that holds it, as detectron2 and YOLOX train on fixed sizes. The canvases are
chosen from the padded size of every batch of the run, known before training from the
annotations and the augmentation's draws (engine/trainer.py, ``TrainBatches.padded_size``):
a deterministic function of the config, the data and the seed, so a resumed run pads as the
uninterrupted one did. The eager step runs instead where the graphs cannot pay for
themselves (a short run, or batches too varied for few canvases to hold them cheaply).

The cost model is a step's time as a fixed part plus a part per pixel of its padded batch,
for each step, and a graph's recording and compilation likewise; its constants were
measured on a 2-core AMD EPYC (Zen 4) at three sizes with the oneDNN convolutions
(docs/megengine_notes.md, "Batch canvases and the choice of step"), and only their ratios
matter.
"""
import collections
import dataclasses
import itertools

from ..boxes import padded_side

# seconds, fixed + per pixel of the padded batch: a step of the compiled graph, one of the
# eager step at async level 0, which waits for each of its thousands of operators, and a
# graph's recording and compilation besides its first step (fitted to 2 x 64 x 96,
# 8 x 96 x 128 and 8 x 160 x 256 images of the demo's model, two runs each: within 0.03,
# 0.14 and 0.08 s)
TRACED_STEP = (0.10, 1.9e-6)
EAGER_STEP = (0.72, 3.2e-6)
NEW_GRAPH = (0.70, 2.0e-6)
# graphs kept at once: each holds its activations' memory (~0.3 GB at 8 images of 160 x 256)
MAX_GRAPHS = 2
# box rows of a batch are padded to a power of two, at least this many: the assignment's
# cost per row is small, and one number of rows for the run keeps one graph per canvas
MIN_BOX_ROWS = 16


@dataclasses.dataclass(frozen=True)
class StepPlan:
    step: str  # "traced" or "eager"
    canvases: tuple  # ((height, width), ...): each batch padded to the smallest that holds it
    box_rows: int  # box rows of every batch
    reason: str  # one line: which step and why

    def input_size(self, height, width):
        """(height, width) of the traced step's input for a batch of images up to this size:
        the smallest canvas that holds it, else the size padded to multiples of 32 (as the
        model pads)."""
        size = (padded_side(height), padded_side(width))
        return smallest_holding(self.canvases, size) or size


def box_rows(max_boxes):
    """A power of two of at least MIN_BOX_ROWS rows that holds ``max_boxes``."""
    return max(MIN_BOX_ROWS, 1 << (max(max_boxes, 1) - 1).bit_length())


def plan_cpu_step(batch_sizes, batch_size, max_boxes):
    """The plan of a run whose batches of ``batch_size`` images have the padded sizes
    ``batch_sizes`` ((height, width) each, every batch of the run) and at most ``max_boxes``
    boxes per image."""
    cost = RunCost(collections.Counter(batch_sizes), batch_size)
    canvases = choose_canvases(cost)
    traced, eager = cost.traced(canvases), cost.eager()
    step = "traced" if traced < eager else "eager"
    reason = "{}: {} batches of {} padded size(s) on {} canvas(es) {}, estimated {:.2f}x the " \
        "eager step's time (compilations included)".format(
            "traced (one compiled graph per canvas)" if step == "traced" else
            "eager at async level 0 (tracing would not pay for its compilations)",
            len(batch_sizes), len(cost.counts), len(canvases),
            ", ".join("{}x{}".format(*canvas) for canvas in canvases), traced / eager)
    return StepPlan(step, tuple(canvases), box_rows(max_boxes), reason)


def choose_canvases(cost):
    """At most MAX_GRAPHS canvases for the batches of ``cost`` (a RunCost), of least traced
    time: start from the sizes no other size holds, merge canvases (into the size holding
    both) while that is faster or there are too many, then add sizes of their own while
    that is faster and allowed."""
    sizes = list(cost.counts)
    canvases = [size for size in sizes
                if not any(other != size and _holds(other, size) for other in sizes)]
    while len(canvases) > 1:
        merged = min((_merged(canvases, a, b) for a, b in itertools.combinations(canvases, 2)),
                     key=cost.traced)
        if len(canvases) <= MAX_GRAPHS and cost.traced(merged) >= cost.traced(canvases):
            break
        canvases = merged
    while len(canvases) < MAX_GRAPHS:
        best = min((canvases + [size] for size in sizes if size not in canvases),
                   key=cost.traced, default=None)
        if best is None or cost.traced(best) >= cost.traced(canvases):
            break
        canvases = best
    return sorted(canvases)


class RunCost:
    """Estimated seconds of a run's batches (``counts``: {padded size: batches}) of
    ``batch_size`` images, by either step."""

    def __init__(self, counts, batch_size):
        self.counts, self.batch_size = counts, batch_size

    def traced(self, canvases):
        """Every batch at its canvas, and each canvas's recording and compilation."""
        return (sum(count * self._step(TRACED_STEP, smallest_holding(canvases, size))
                    for size, count in self.counts.items())
                + sum(self._step(NEW_GRAPH, canvas) for canvas in canvases))

    def eager(self):
        return sum(count * self._step(EAGER_STEP, size) for size, count in self.counts.items())

    def _step(self, cost, size):
        fixed, per_pixel = cost
        return fixed + per_pixel * self.batch_size * _area(size)


def smallest_holding(canvases, size):
    """The canvas of least area that holds ``size`` (the first on ties), or None."""
    return min((canvas for canvas in canvases if _holds(canvas, size)), key=_area, default=None)


def _merged(canvases, a, b):
    union = (max(a[0], b[0]), max(a[1], b[1]))
    return [union] + [canvas for canvas in canvases if not _holds(union, canvas)]


def _holds(canvas, size):
    return canvas[0] >= size[0] and canvas[1] >= size[1]


def _area(size):
    return size[0] * size[1]
