"""One sitting of the CPU training targets (docs/benchmarks.md, "Training step") on this
machine, each command alternated with the others round by round, so a slow spell of a shared
machine hits them all and each ratio is of one round.

    bash benchmarks/setup.sh      # benchmarks/.venv: torch and torchvision, for the reference
    .venv/bin/python benchmarks/training_targets.py --rounds 4 -o targets.jsonl
    .venv/bin/python benchmarks/training_targets.py --rounds 4 --varied-rounds 2 -o targets.jsonl

Demo step: ``tools/benchmark.py --train`` on the demo config (batch 8 of 96 x 128, 20 steps
after 3) in fp32 and, where the CPU has bf16 units, bf16; torchvision's FCOS
(benchmarks/torchvision_fcos.py) with AdamW (the demo's optimizer) and SGD, same batch, size and
threads. Varied sizes (``--varied-rounds``): the default step against ``--step eager`` on a
synthetic dataset of images of 96-512 px (made once in ``--varied-data``), 80 steps each, wall
time and peak RSS. Prints every run and the targets' ratios (medians of the rounds'); appends
a JSON line per run, with the CPU's family and model, to ``--output``.

Runs with the project's .venv (it needs MegEngine, not torch; torch runs in benchmarks/.venv).
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

from official.vision.detection.utils.machine import cpu_model_name, usable_cpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"
VARIED_CONFIG = "benchmarks/configs/fcos_res18_synthetic_multiscale.py"
DEMO_SIZE = ["-b", "8", "--short-size", "96", "--max-size", "128", "-n", "20", "--warmup", "3"]


def demo_commands(threads, torch_python):
    """{name: command} of the demo step's runs."""
    ours = [sys.executable, "tools/benchmark.py", "-f", DEMO_CONFIG, "--train",
            "--threads", str(threads)] + DEMO_SIZE
    torchvision = [torch_python, "benchmarks/torchvision_fcos.py", "--mode", "train",
                   "--num-classes", "3", "--threads", str(threads)] + DEMO_SIZE
    return {"ours": ours, "ours_bf16": ours + ["--precision", "bf16"],
            "torchvision_adamw": torchvision + ["--optimizer", "adamw"],
            "torchvision_sgd": torchvision + ["--optimizer", "sgd"]}


def varied_commands(data, threads):
    default = [sys.executable, "tools/benchmark.py", "-f", VARIED_CONFIG, "--train", "-d", data,
               "-b", "8", "-n", "80", "--warmup", "0", "--threads", str(threads)]
    return {"varied_default": default, "varied_eager": default + ["--step", "eager"]}


def make_varied_data(data):
    """A synthetic COCO of images of varied sizes and aspect ratios in ``data``, once."""
    if os.path.isdir(os.path.join(data, "synthetic")):
        return
    subprocess.run([sys.executable, "tools/make_synthetic_coco.py", "-o",
                    os.path.join(data, "synthetic"), "--train", "800", "--val", "20",
                    "--classes", "3", "--size", "96-512", "--max-objects", "4",
                    "--object-scale", "0.2-0.6"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)


def run(command):
    """{ms_per_image, peak_rss_mb, wall_s} of one run, or {refused: its last line}."""
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, check=False)
    wall = time.monotonic() - start
    found = dict(re.findall(r"^(train_ms_per_image|peak_rss_mb)=([\d.]+)$", result.stdout,
                            re.MULTILINE))
    if result.returncode or len(found) < 2:
        lines = result.stdout.strip().splitlines() or ["exit status {}".format(result.returncode)]
        return {"refused": lines[-1]}
    return {"ms_per_image": float(found["train_ms_per_image"]),
            "peak_rss_mb": float(found["peak_rss_mb"]), "wall_s": round(wall, 1)}


def median_ratio(rounds, name, reference, key="ms_per_image"):
    """The median over rounds of ``name``'s ``key`` over ``reference``'s, with the rounds'."""
    ratios = [r[name][key] / r[reference][key] for r in rounds
              if key in r.get(name, {}) and key in r.get(reference, {})]
    refusals = [r[name]["refused"] for r in rounds if "refused" in r.get(name, {})]
    if not ratios:
        return "not measured: " + (refusals[0] if refusals else "no runs")
    return "{:.2f}x (rounds {})".format(statistics.median(ratios),
                                         " ".join("{:.2f}".format(x) for x in ratios))


def summary(demo, varied):
    lines = []
    if demo:
        lines += ["demo step, ours / torchvision AdamW (target <= 1.0): "
                  + median_ratio(demo, "ours", "torchvision_adamw"),
                  "demo step, ours / torchvision SGD: "
                  + median_ratio(demo, "ours", "torchvision_sgd"),
                  "demo peak RSS, ours / torchvision AdamW (target <= 1.0): "
                  + median_ratio(demo, "ours", "torchvision_adamw", "peak_rss_mb"),
                  "bf16 step / torchvision AdamW fp32 (target <= 0.5): "
                  + median_ratio(demo, "ours_bf16", "torchvision_adamw")]
    if varied:
        lines += ["varied sizes, default / eager time (target <= 0.75): "
                  + median_ratio(varied, "varied_default", "varied_eager", "wall_s"),
                  "varied sizes, default / eager peak RSS (target <= 1.5): "
                  + median_ratio(varied, "varied_default", "varied_eager", "peak_rss_mb")]
    return lines


def sitting(commands, rounds, output, label):
    """Runs ``commands`` in turn ``rounds`` times; a refused command (bf16 on a CPU without
    bf16 units) is reported once and not run again. Returns each round's {name: result}."""
    refused, results = set(), []
    for number in range(1, rounds + 1):
        results.append({})
        for name, command in commands.items():
            if name in refused:
                continue
            result = run(command)
            results[-1][name] = result
            refused.update([name] if "refused" in result else [])
            print("{} round {} {:18s} {}".format(label, number, name, result), flush=True)
            row = dict(result, run=name, round=number, cpu=cpu_model_name(),
                       time=datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S"),
                       command=" ".join(command[1:]))
            with open(output, "a") as f:
                f.write(json.dumps(row) + "\n")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="demo step rounds (0: none)")
    parser.add_argument("--varied-rounds", type=int, default=0, help="varied-size rounds")
    parser.add_argument("--varied-data", default="/tmp/fcos_varied_sizes",
                        help="where the varied-size dataset is made (once) and read")
    parser.add_argument("--threads", type=int, default=usable_cpus())
    parser.add_argument("--torch-python", default=os.path.join(ROOT, "benchmarks", ".venv",
                                                               "bin", "python"))
    parser.add_argument("-o", "--output", required=True, help="JSON lines, appended")
    args = parser.parse_args()
    if args.rounds and not os.path.exists(args.torch_python):
        parser.error("{} is missing: run bash benchmarks/setup.sh".format(args.torch_python))
    print("{}, {} threads".format(cpu_model_name(), args.threads))
    demo = sitting(demo_commands(args.threads, args.torch_python), args.rounds, args.output,
                   "demo")
    varied = []
    if args.varied_rounds:
        make_varied_data(args.varied_data)
        varied = sitting(varied_commands(args.varied_data, args.threads), args.varied_rounds,
                         args.output, "varied")
    print("\n".join(summary(demo, varied)))


if __name__ == "__main__":
    main()
