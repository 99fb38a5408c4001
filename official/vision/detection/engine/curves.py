"""curves.png: the losses, the learning rate and the throughput against the step, and the
validation AP against the epoch, drawn from the records of metrics.jsonl (training_logs.py).

Drawn with matplotlib's Agg canvas on a Figure of its own: no display and no pyplot state.
"""
import contextlib
import warnings

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..utils.files import atomic_target
from .metric_keys import PROGRESS_KEYS, RATE_KEYS, VALIDATION_PREFIX

CURVES_SIZE = (1200, 900)  # pixels, width x height
DPI = 100


@contextlib.contextmanager
def subnormal_warning_ignored():
    # NumPy warns that float64's smallest subnormal is zero when it first looks the value up
    # for matplotlib while MegEngine's kernels have the CPU flush subnormals: nothing to act on
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The value of the smallest subnormal", UserWarning)
        yield


def plot_curves(records, path):
    """Write the curves of ``records`` (metrics.jsonl's) to the PNG file ``path``
    atomically."""
    with subnormal_warning_ignored():
        _draw(records, path)


def _draw(records, path):
    figure = Figure(figsize=(CURVES_SIZE[0] / DPI, CURVES_SIZE[1] / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    (losses, lr), (speed, validation) = figure.subplots(2, 2)
    train = [r for r in records if "lr" in r]
    epoch_ends = [r["step"] for r, following in zip(train, train[1:])
                  if following["epoch"] != r["epoch"]]
    loss_names = sorted(name for name in {name for r in train for name in r}
                        - set(PROGRESS_KEYS + RATE_KEYS)
                        if not name.startswith(VALIDATION_PREFIX))
    for name in loss_names:
        _plot_series(losses, train, "step", name, linewidth=2 if name == "total_loss" else 1)
    # each record holds the rate of its last step, which the steps before it mostly share
    _plot_series(lr, train, "step", "lr", drawstyle="steps-pre")
    _plot_series(speed, train, "step", "images_per_second")
    for axes, title in ((losses, "losses (mean since the previous record)"),
                        (lr, "learning rate"), (speed, "images per second")):
        axes.set_title(title)
        axes.set_xlabel("step")
        for step in epoch_ends:
            axes.axvline(step, color="0.8", linestyle=":", linewidth=1)
    losses.legend(loc="upper right")
    _plot_validation(validation, [r for r in records if VALIDATION_PREFIX + "AP" in r])
    figure.tight_layout()
    with atomic_target(path) as temporary:  # keeps the .png suffix
        figure.savefig(temporary, format="png")


def _plot_series(axes, records, x_key, y_key, **style):
    points = [(r[x_key], r[y_key]) for r in records if y_key in r]
    if points:
        axes.plot(*zip(*points), label=y_key, **style)


def _plot_validation(axes, records):
    axes.set_title("validation (COCO bbox)")
    axes.set_xlabel("epoch (checkpoint epoch_<N>.pkl)")
    if not records:
        axes.text(0.5, 0.5, "no validation records:\ntrain with --eval-every-epoch",
                  ha="center", va="center", transform=axes.transAxes)
        return
    for name in ("AP", "AP50"):
        _plot_series(axes, records, "epoch", VALIDATION_PREFIX + name, marker="o")
    axes.set_ylim(0, 1)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="lower right")
