"""Memory and compilation time of the traced training step (cpu/traced_step.py) with its graph
options, or with one of them changed back to MegEngine's default: each setting in a fresh
process, training the demo's model on synthetic batches of one or more sizes in turn.

    .venv/bin/python benchmarks/traced_graph_memory.py --sizes 160x256 --steps 4
    .venv/bin/python benchmarks/traced_graph_memory.py --sizes 160x256 256x160 --steps 6 \
        --settings package no-trim opt-level-2

Per step: wall and CPU seconds (the first step of each size records and compiles its
graph), the peak resident memory during the step and the resident memory after it; then the
process's peak, and its resident memory once glibc has returned its free blocks (malloc_trim):
what the graphs and the model hold.
"""
import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"
# how each setting differs from the package's graph options
SETTINGS = {
    "package": {},
    "dynamic-shapes": {"record_input_shapes": False},
    "sanity-check": {"var_sanity_check_first_run": True},
    "opt-level-2": {"graph_opt_level": 2},
    "no-trim": {},
}


def rss_mb(field):
    """VmRSS or VmHWM (the peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def run(setting, sizes, steps, batch_size):
    """One process's measurements: JSON rows, one per step, and a summary row."""
    import megengine as mge
    from official.vision.detection import cpu
    from official.vision.detection.benchmark.training import synthetic_batches
    from official.vision.detection.cpu import traced_step
    from official.vision.detection.engine.trainer import TrainOptions, build_trainer
    from official.vision.detection.utils.config_file import load_config_module

    changes = SETTINGS[setting]
    package_graph = traced_step.static_graph

    def static_graph(function):
        graph = package_graph(function)
        for name, value in changes.items():
            if name == "record_input_shapes":
                graph._trace.record_input_shapes = value  # pylint: disable=protected-access
            else:
                graph._graph_options[name] = value  # pylint: disable=protected-access
        return graph

    traced_step.static_graph = static_graph
    if setting == "no-trim":
        traced_step.return_freed_memory = lambda: None
    libc = ctypes.CDLL("libc.so.6")
    cpu.prepare_cpu_process()
    module = load_config_module(CONFIG)
    with cpu.default_cpu_threads(2), cpu.async_level(cpu.CPU_TRAINING_ASYNC_LEVEL):
        cfg = module.Cfg()
        mge.random.seed(0)
        model = module.Net(cfg)
        trainer = build_trainer(model, cfg, TrainOptions("", "", batch_size=batch_size,
                                                         step="traced"), on_cpu=True)
        model.train()
        batches = [synthetic_batches(cfg, batch_size, height, width, 0) for height, width in sizes]
        rows = []
        for number in range(steps):
            batch = next(batches[number % len(sizes)])
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM: the peak of this step alone
            wall, cpu_time = time.perf_counter(), time.process_time()
            trainer.run_step(batch)
            mge._full_sync()  # pylint: disable=protected-access
            wall, cpu_time = time.perf_counter() - wall, time.process_time() - cpu_time
            rows.append(dict(setting=setting, step=number, size=batch["image"].shape[2:],
                             wall_s=round(wall, 2), cpu_s=round(cpu_time, 2),
                             step_peak_mb=round(rss_mb("VmHWM")),
                             after_mb=round(rss_mb("VmRSS"))))
            print(json.dumps(rows[-1]), flush=True)
    libc.malloc_trim(0)
    later = [row["wall_s"] for row in rows[len(sizes):]] or [float("nan")]
    print(json.dumps(dict(setting=setting, sizes=sizes, batch_size=batch_size,
                          median_later_step_s=statistics.median(later),
                          peak_rss_mb=max(row["step_peak_mb"] for row in rows),
                          held_after_trim_mb=round(rss_mb("VmRSS")))), flush=True)


def size(text):
    height, _, width = text.partition("x")
    return int(height), int(width)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=size, default=[(160, 256)],
                        help="batch sizes HxW, used in turn")
    parser.add_argument("-b", "--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=sorted(SETTINGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run(args.child, args.sizes, args.steps, args.batch_size)
    for setting in args.settings:
        subprocess.run([sys.executable, __file__, "--child", setting, "--steps", str(args.steps),
                        "-b", str(args.batch_size), "--sizes"]
                       + ["{}x{}".format(*s) for s in args.sizes], check=True)
    return None


if __name__ == "__main__":
    main()
