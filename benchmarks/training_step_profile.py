"""Where the traced CPU training step's time goes: MegEngine's graph profiler on the compiled
step (cpu/traced_step.py) of a config, its operators' times summed by kind, in ms per step.

    .venv/bin/python benchmarks/training_step_profile.py
    .venv/bin/python benchmarks/training_step_profile.py --precision bf16 --runs 3

Kinds: the operator's type, the package's custom operators by name (FcosConvForward, ...),
MegEngine's elementwise operators by mode (MUL, SIGN, ...). Each run is a fresh step on a new
synthetic batch after the warm-up ones; the profile is of the graph's last run. The times are
each operator's start to end on its thread, so they sum to about the step's wall time.
"""
import argparse
import collections
import json
import re

CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"


def operator_kind(operator):
    """FcosConvBackward for a custom operator, SIGN for an elementwise one, else the type."""
    name, kind = operator.get("name", ""), operator.get("type", "?")
    if kind == "CustomOpNode":
        return name.split("(")[0]
    if kind == "Elemwise":
        return "Elemwise " + re.sub(r"\d+$", "", name.split(".")[-1].split("(")[0])
    return kind


def step_times(profile):
    """{kind: [ms, count]} of one run of a compiled graph, from trace.get_profile()."""
    operators = profile["graph_exec"]["operator"]
    kinds = collections.defaultdict(lambda: [0.0, 0])
    for key, devices in profile["profiler"]["device"].items():
        for times in devices.values():
            entry = kinds[operator_kind(operators.get(key, {}))]
            entry[0] += 1000 * (times["end"] - times["start"])
            entry[1] += 1
    return kinds


def profile_steps(config, batch_size, short_size, max_size, precision, warmup, runs):
    """The kinds' ms of each of ``runs`` steps after ``warmup``."""
    import megengine as mge  # pylint: disable=import-outside-toplevel
    from official.vision.detection import cpu  # pylint: disable=import-outside-toplevel
    from official.vision.detection.benchmark.training import (  # pylint: disable=import-outside-toplevel
        synthetic_batches)
    from official.vision.detection.cpu import traced_step  # pylint: disable=import-outside-toplevel
    from official.vision.detection.engine.trainer import (  # pylint: disable=import-outside-toplevel
        TrainOptions, build_trainer, quiet_cpu_workers)
    from official.vision.detection.utils.config_file import (  # pylint: disable=import-outside-toplevel
        load_config_module)

    package_graph = traced_step.static_graph

    def profiled_graph(function):
        graph = package_graph(function)
        graph._trace.profile = True  # pylint: disable=protected-access
        return graph

    traced_step.static_graph = profiled_graph
    options = TrainOptions("", "", batch_size=batch_size, precision=precision)
    cpu.prepare_cpu_process(quiet_cpu_workers(options, None))  # as the trainer does
    module = load_config_module(config)
    cfg = module.Cfg()
    with cpu.default_cpu_threads(options.threads), cpu.async_level(cpu.CPU_TRAINING_ASYNC_LEVEL):
        mge.random.seed(0)
        model = module.Net(cfg)
        trainer = build_trainer(model, cfg, options, on_cpu=True)
        model.train()
        batches = synthetic_batches(cfg, batch_size, short_size, max_size, 0)
        for _ in range(warmup):
            trainer.run_step(next(batches))
        results = []
        for _ in range(runs):
            trainer.run_step(next(batches))
            mge._full_sync()  # pylint: disable=protected-access
            (graph,) = trainer.traced_step.graphs.values()
            results.append(step_times(graph.get_profile()))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", default=CONFIG, help="config (default: the demo's)")
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("--short-size", type=int, default=96)
    parser.add_argument("--max-size", type=int, default=128)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3, help="profiled steps (the table: medians)")
    parser.add_argument("--json", help="write every run's {kind: [ms, count]} there")
    args = parser.parse_args()
    runs = profile_steps(args.file, args.batch_size, args.short_size, args.max_size,
                         args.precision, args.warmup, args.runs)
    kinds = sorted({kind for run in runs for kind in run},
                   key=lambda kind: -sorted(run.get(kind, [0.0])[0] for run in runs)[len(runs) // 2])
    print("{:<28} {:>6} {}".format("operators", "count", "ms per step, each profiled run"))
    for kind in kinds:
        print("{:<28} {:>6} {}".format(kind, runs[-1].get(kind, [0, 0])[1], "  ".join(
            "{:7.2f}".format(run.get(kind, [0.0])[0]) for run in runs)))
    print("{:<28} {:>6} {}".format("all", "", "  ".join(
        "{:7.2f}".format(sum(ms for ms, _ in run.values())) for run in runs)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{kind: list(value) for kind, value in run.items()} for run in runs], f)


if __name__ == "__main__":
    main()
