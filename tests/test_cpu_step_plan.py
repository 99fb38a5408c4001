"""The CPU training step's plan (cpu/step_plan.py): canvases, box rows and eager or traced."""
import itertools

import pytest

from official.vision.detection.cpu import custom_operators_available
from official.vision.detection.cpu.step_plan import (
    MAX_GRAPHS, RunCost, StepPlan, box_rows, choose_canvases, plan_cpu_step
)
from official.vision.detection.engine.trainer import TrainOptions, quiet_cpu_workers

# padded batch sizes of a multi-scale run on images of varied sizes and aspect ratios
LANDSCAPE = {(160, 256): 300, (160, 224): 110, (160, 192): 20, (128, 256): 3}
PORTRAIT = {(256, 160): 260, (224, 160): 140, (192, 160): 15}


def sizes_of(counts):
    return [size for size, count in counts.items() for _ in range(count)]


def test_canvases_hold_every_batch_and_are_few():
    counts = {**LANDSCAPE, **PORTRAIT}
    canvases = choose_canvases(RunCost(counts, batch_size=8))
    assert canvases == [(160, 256), (256, 160)]
    plan = StepPlan("traced", tuple(canvases), 16, "")
    assert plan.input_size(150, 200) == (160, 256)  # padded to 160 x 224, then the canvas
    assert plan.input_size(220, 130) == (256, 160)
    assert plan.input_size(300, 100) == (320, 128)  # no canvas holds it: multiples of 32


def test_a_size_of_its_own_is_a_canvas_where_it_saves_more_than_its_compilation():
    # 4:3 images with a few wider ones: padding 400 batches from 224 to 256 columns costs
    # more than a second graph; 10 batches would not
    many, few = {(160, 224): 400, (160, 256): 60}, {(160, 224): 10, (160, 256): 60}
    assert choose_canvases(RunCost(many, 8)) == [(160, 224), (160, 256)]
    assert choose_canvases(RunCost(few, 8)) == [(160, 256)]
    cost = RunCost(few, 8)
    assert cost.traced([(160, 256)]) < cost.traced([(160, 224), (160, 256)])


def test_incomparable_sizes_merge_into_at_most_max_graphs_canvases():
    counts = {(96 + 32 * k, 320 - 32 * k): 50 for k in range(6)}  # none holds another
    canvases = choose_canvases(RunCost(counts, 8))
    assert len(canvases) <= MAX_GRAPHS
    assert all(any(c[0] >= s[0] and c[1] >= s[1] for c in canvases) for s in counts)


def test_a_long_run_is_traced_and_a_short_one_eager_with_the_reason():
    long_run = plan_cpu_step(sizes_of({**LANDSCAPE, **PORTRAIT}), 8, max_boxes=5)
    assert long_run.step == "traced" and long_run.canvases == ((160, 256), (256, 160))
    assert long_run.reason.startswith(
        "traced (one compiled graph per canvas): 848 batches of 7 padded size(s) on 2 "
        "canvas(es) 160x256, 256x160, estimated 0.")
    # a run too short to pay for recording and compiling its graph is eager
    short = next(steps for steps in range(1, 100)
                 if plan_cpu_step([(160, 256)] * steps, 8, max_boxes=5).step == "traced") - 1
    assert short >= 1
    short_run = plan_cpu_step([(160, 256)] * short, 8, max_boxes=5)
    assert short_run.step == "eager"
    assert short_run.reason.startswith("eager at async level 0 (tracing would not pay for its "
                                       "compilations): {} batches".format(short))


@pytest.mark.parametrize("boxes, rows", [(0, 16), (1, 16), (16, 16), (17, 32), (100, 128)])
def test_box_rows_are_a_power_of_two_of_at_least_16(boxes, rows):
    assert box_rows(boxes) == rows
    assert plan_cpu_step([(96, 128)] * 50, 8, boxes).box_rows == rows


def test_the_plan_depends_only_on_the_batches():
    sizes = sizes_of({**LANDSCAPE, **PORTRAIT})
    shuffled = list(itertools.chain(sizes[1::2], sizes[::2]))
    assert plan_cpu_step(sizes, 8, 3) == plan_cpu_step(sizes, 8, 3)
    assert plan_cpu_step(shuffled, 8, 3).canvases == plan_cpu_step(sizes, 8, 3).canvases


def test_megengines_workers_are_quieted_for_a_traced_step_on_the_packages_operators_only():
    """An eager run at level 0 waits after each operator, and a worker that sleeps at once
    must then be woken for each: quieting is for the traced step (the plan's, by default)."""
    traced, eager = (StepPlan(step, ((96, 128),), 16, "") for step in ("traced", "eager"))
    default, asked_eager = TrainOptions("", ""), TrainOptions("", "", step="eager")
    assert not quiet_cpu_workers(default, eager)
    assert not quiet_cpu_workers(asked_eager, traced)
    assert quiet_cpu_workers(default, traced) == custom_operators_available()
    assert not quiet_cpu_workers(TrainOptions("", "", cpu_kernels=False), traced)
