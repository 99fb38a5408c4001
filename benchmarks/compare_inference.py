"""This package's FCOS against torchvision's FCOS-R50 on one image, measured alternately.

    python3 benchmarks/compare_inference.py -i cat.jpg [--rounds 3] \
        [--modes auto lite onnxruntime openvino auto:bf16]

Runs from any Python: it only starts processes. It sets up benchmarks/.venv (torchvision) if
needed, measures the FMA peak with benchmarks/fma_peak.c when gcc is there (512-bit FMAs where
the CPU has AVX-512), saves one set of random weights of the config's model and writes it once
as a Lite file (--layout auto) and an ONNX file, then repeats rounds of `tools/benchmark.py`
(each mode: lite, onnxruntime and openvino run those files, auto chooses and remembers its engine
for the weights, traced and eager run them in MegEngine; ENGINE:PRECISION runs the engine in
that precision, e.g. auto:bf16) and benchmarks/torchvision_fcos.py, both image to detections at
800/1333 with 80 classes. Prints every run's `median_ms`, then the median over
rounds and the ratio to torchvision per mode, with the CPU it ran on.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
PROJECT_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
TORCH_PYTHON = os.path.join(BENCHMARKS, ".venv", "bin", "python")
DEFAULT_CONFIG = "official/vision/detection/configs/fcos_res50_coco_3x_800size.py"


def run(command, **kwargs):
    """Run a command from the project root; its stdout (it must succeed)."""
    result = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
                            **kwargs)
    return result.stdout


def last_value(output, key):
    """The number in the last ``key=<number>`` line of a tool's output."""
    return float(re.findall(r"^{}=([0-9.]+)$".format(key), output, re.MULTILINE)[-1])


def cpu_description():
    fields = dict(line.split(":", 1) for line in run(["lscpu"]).splitlines() if ":" in line)
    return "{}, cpu family {}, model {}".format(*(fields.get(key, "?").strip() for key in (
        "Model name", "CPU family", "Model")))


def measured_peak(directory):
    """GFLOP/s of benchmarks/fma_peak.c on every core, or None without gcc."""
    binary = os.path.join(directory, "fma_peak")
    with open("/proc/cpuinfo") as f:
        widest = "-mavx512f" if " avx512f " in f.read() else "-mavx2"
    try:
        run(["gcc", "-O3", widest, "-mfma", "-fopenmp", os.path.join(BENCHMARKS, "fma_peak.c"),
             "-o", binary])
    except (OSError, subprocess.CalledProcessError):
        return None
    return last_value(run([binary], env=dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count()))),
                      "peak_gflops")


SAVE_RANDOM_WEIGHTS = """
import sys, megengine as mge
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.weights import build_model
mge.random.seed(0)
mge.save(build_model(load_config_module(sys.argv[1])).state_dict(), sys.argv[2])
"""


def write_models(config, directory, modes):
    """Random weights of the config's model, and the Lite and ONNX files of them that
    ``modes`` run."""
    engines = {mode.partition(":")[0] for mode in modes}
    models = ["model.mge"] if "lite" in engines else []
    models += ["model.onnx"] if any(mode.partition(":")[0] in ("onnxruntime", "openvino") and
                                    not mode.endswith(":int8") for mode in modes) else []
    files = {name: os.path.join(directory, name) for name in ["weights.pkl"] + models}
    run([PROJECT_PYTHON, "-c", SAVE_RANDOM_WEIGHTS, config, files["weights.pkl"]])
    for model in models:
        print(run([PROJECT_PYTHON, "tools/dump.py", "-f", config, "-w", files["weights.pkl"],
                   "-o", files[model]]).strip().splitlines()[-1])
    return files


ENGINES = ("auto", "lite", "onnxruntime", "openvino", "traced", "eager")
PRECISIONS = ("fp32", "bf16", "int8")
MODES = ENGINES + tuple("{}:{}".format(engine, precision) for engine in ("auto", "openvino")
                        for precision in PRECISIONS[1:]) + ("onnxruntime:int8",)


def mode_arguments(mode, files):
    """What tools/benchmark.py runs for ``mode`` (ENGINE or ENGINE:PRECISION)."""
    engine, _, precision = mode.partition(":")
    arguments = ["--mode", engine, "--precision", precision or "fp32"]
    # int8 quantizes the weights, calibrated on the timed image, once (then cached)
    if engine in ("lite", "onnxruntime", "openvino") and precision != "int8":
        return arguments + ["--model", files["model.mge" if engine == "lite" else "model.onnx"]]
    return arguments + ["-w", files["weights.pkl"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--image", required=True)
    parser.add_argument("-f", "--config", default=DEFAULT_CONFIG)
    parser.add_argument("--modes", nargs="+", default=["auto", "lite", "onnxruntime"],
                        choices=MODES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    image = os.path.abspath(args.image)

    subprocess.run(["bash", os.path.join(BENCHMARKS, "setup.sh")], check=True)
    with tempfile.TemporaryDirectory() as directory:
        peak = measured_peak(directory)
        print("FMA peak: {}".format("{:.1f} GFLOP/s".format(peak) if peak else "not measured"))
        files = write_models(args.config, directory, args.modes)
        results = {mode: [] for mode in args.modes + ["torchvision"]}
        for round_index in range(args.rounds):
            for mode in args.modes:
                command = [PROJECT_PYTHON, "tools/benchmark.py", "-f", args.config, "-i", image,
                           "-n", str(args.runs), "--threads", str(args.threads)]
                command += mode_arguments(mode, files)
                command += ["--peak-gflops", str(peak)] if peak else []
                output = run(command)
                results[mode].append(last_value(output, "median_ms"))
                print("round {} {}: {}".format(round_index, mode, " | ".join(
                    line.strip() for line in output.splitlines()[-4:])))
            output = run([TORCH_PYTHON, os.path.join(BENCHMARKS, "torchvision_fcos.py"),
                          "--mode", "inference", "-i", image, "--num-classes", "80",
                          "-n", str(args.runs), "--threads", str(args.threads)])
            results["torchvision"].append(last_value(output, "median_ms"))
            print("round {} torchvision: median_ms={:.1f}".format(
                round_index, results["torchvision"][-1]))
    reference = statistics.median(results["torchvision"])
    print("\n{} ({} threads)".format(cpu_description(), args.threads))
    for mode, values in results.items():
        print("{:<12} median over {} rounds {:8.1f} ms   {:.2f}x torchvision".format(
            mode, len(values), statistics.median(values), statistics.median(values) / reference))


if __name__ == "__main__":
    sys.exit(main())
