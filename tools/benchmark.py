"""Time FCOS from an image to detections (eager, traced, MegEngine Lite, onnxruntime or
OpenVINO; fp32, bf16 or int8), or its training step.

    python tools/benchmark.py -f official/vision/detection/configs/fcos_res50_coco_3x_800size.py \
        -i cat.jpg --mode lite -n 5
    python tools/benchmark.py -f CONFIG -i cat.jpg --mode onnxruntime --model fcos_res50.onnx
    python tools/benchmark.py -f CONFIG -i cat.jpg --mode auto --precision bf16
    python tools/benchmark.py -f official/vision/detection/configs/fcos_res18_synthetic_demo.py \
        --train -b 8 -n 20 --short-size 96 --max-size 128
    python tools/benchmark.py -f CONFIG --train -d DATA -b 8 -n 80 --warmup 0   # DATA's batches

On AMD CPUs importing the package sets MKL_DEBUG_CPU_TYPE=5 (MKL's AVX2 kernels) unless the
variable is set: set it yourself to time other MKL kernels (see cpu/mkl.py). The last line is
``median_ms=<median total per image>``; with ``--train`` the last three are
``train_total_s=<all timed steps>``, ``train_ms_per_image=<median step / batch size>`` and
``peak_rss_mb=<peak resident memory>``.
"""
import argparse
import os

import cv2
import megengine as mge

from official.vision.detection.benchmark.flops import count_conv_flops
from official.vision.detection.benchmark.inference import (
    STAGES, benchmark, machine_peak_gflops, median_ms, stage_ms, use_eager_threads
)
from official.vision.detection.benchmark.training import peak_rss_mb, time_training
from official.vision.detection.cpu import CONVOLUTIONS, TRAINING_PRECISIONS
from official.vision.detection.deploy.detector import ENGINES, build_detector, engine_of
from official.vision.detection.deploy.precision import PRECISION_HELP, PRECISIONS
from official.vision.detection.deploy.quantize import (
    DatasetCalibration, ImageCalibration, cpu_has_vnni
)
from official.vision.detection.errors import ConfigError
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.utils.machine import usable_cpus
from official.vision.detection.weights import build_model

logger = mge.get_logger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True, help="config file defining Net and Cfg")
    parser.add_argument("-w", "--weights",
                        help="state_dict or checkpoint (path or URL); omit for random weights")
    parser.add_argument("-i", "--image", help="image file read with cv2 (inference)")
    parser.add_argument("--train", action="store_true",
                        help="time training steps instead of inference, on synthetic images of "
                             "--short-size x --max-size, or with -d on the config's training "
                             "split")
    parser.add_argument("-b", "--batch-size", type=int, default=8, help="images per step "
                        "(--train)")
    parser.add_argument("--mode", "--engine", dest="engine", choices=ENGINES, default="auto",
                        help="what runs the network (--engine as in test.py and inference.py); "
                             "auto: the fastest here of lite, onnxruntime and openvino that can "
                             "run the model in --precision")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    parser.add_argument("-d", "--dataset-dir",
                        help="--train: train on the batches of the config's train split there "
                             "(its sizes, the config's scales), as tools/train.py draws them; "
                             "int8: calibrate on that split (default: on the timed image)")
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs (or steps)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of the network (default: the CPUs this process may "
                             "use)")
    parser.add_argument("--async-level", type=int, choices=(0, 1, 2),
                        help="--train: MegEngine's async_level (default: the trainer's, 0 on "
                             "the CPU)")
    parser.add_argument("--step", choices=("eager", "traced"),
                        help="--train: the training step, as tools/train.py's --step (default: "
                             "the trainer's, traced on the CPU)")
    parser.add_argument("--convolutions", choices=CONVOLUTIONS, default="auto",
                        help="--train: what runs the convolutions, as tools/train.py's")
    parser.add_argument("--short-size", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--model", help="lite / onnxruntime / openvino engine: a .mge / .onnx "
                                        "/ .onnx or .xml from tools/dump.py instead of writing "
                                        "the config's model to a temporary file")
    parser.add_argument("--profile", metavar="JSON",
                        help="lite engine: write per-operator times there (read them with "
                             "python -m megengine.tools.profile_analyze JSON)")
    parser.add_argument("--peak-gflops", type=float,
                        help="measured arithmetic limit of the machine, e.g. of an FMA loop on "
                             "every core (default: the nominal one, all cores x reported clock "
                             "x 32 fp32 FLOPs per cycle, which boosting cores exceed)")
    return parser.parse_args(argv)


def report(timings, flops, measured_peak_gflops=None, precision="fp32"):
    medians, runs = median_ms(timings), stage_ms(timings)
    for stage in STAGES + ("total",):
        # min and max show when other processes disturbed some runs
        print("{:<12} median {:9.1f} ms  (min {:.1f}, max {:.1f})".format(
            stage, medians[stage], min(runs[stage]), max(runs[stage])))
    gflops = flops / 1e9 / (medians["network"] / 1000)
    line = "network: {:.1f} conv GFLOPs (2 x MACs), {:.1f} GFLOP/s".format(flops / 1e9, gflops)
    nominal_peak_gflops = machine_peak_gflops() if precision == "fp32" else None
    # the limits are those of fp32 FMAs: no share of them is printed for bf16 or int8
    if measured_peak_gflops and precision == "fp32":
        line += ", {:.0%} of the measured {:.0f} GFLOP/s limit".format(
            gflops / measured_peak_gflops, measured_peak_gflops)
    elif nominal_peak_gflops:
        line += (", {:.0%} of the nominal {:.0f} GFLOP/s limit (reported clock; pass "
                 "--peak-gflops for cores that boost)").format(
                     gflops / nominal_peak_gflops, nominal_peak_gflops)
    print(line)
    print("median_ms={:.1f}".format(medians["total"]))


def report_training(timing, measured_peak_gflops=None):
    for phase in timing.phase_ms:
        print("{:<12} median {:9.1f} ms  (min {:.1f}, max {:.1f})".format(
            phase, timing.median_ms(phase), min(timing.phase_ms[phase]),
            max(timing.phase_ms[phase])))
    line = "step: {:.1f} ms for {} images of {}x{} (padded), {:.1f} conv GFLOPs (3 x the " \
        "forward's), {:.1f} GFLOP/s".format(
            timing.ms_per_image() * timing.batch_size, timing.batch_size,
            timing.input_shape[2], timing.input_shape[3], timing.step_flops / 1e9,
            timing.gflops_per_second())
    if measured_peak_gflops:
        line += ", {:.0%} of the measured {:.0f} GFLOP/s limit".format(
            timing.gflops_per_second() / measured_peak_gflops, measured_peak_gflops)
    print(line)
    print("total: {:.1f} s for {} steps of {} padded input shape(s), data and graph "
          "compilations included".format(timing.total_seconds(), len(timing.step_ms()),
                                         timing.num_shapes))
    print("train_total_s={:.1f}".format(timing.total_seconds()))
    print("train_ms_per_image={:.1f}".format(timing.ms_per_image()))
    print("peak_rss_mb={:.0f}".format(peak_rss_mb()))


def main_training(args, module):
    if args.precision not in TRAINING_PRECISIONS:
        raise ConfigError("--train runs --precision {}, not {}".format(
            " or ".join(TRAINING_PRECISIONS), args.precision))
    timing = time_training(module, args.batch_size, args.runs, args.warmup, args.short_size,
                           args.max_size, async_level=args.async_level, step=args.step,
                           convolutions=args.convolutions, precision=args.precision,
                           threads=args.threads, dataset_dir=args.dataset_dir)
    print("{} training step, {} thread(s), async level {}, {} convolutions in {}, {} steps "
          "after {} warm-up".format(timing.step, args.threads, timing.async_level,
                                    timing.convolutions, args.precision, args.runs,
                                    args.warmup))
    report_training(timing, args.peak_gflops)


def main():
    args = parse_args()
    if not args.train and args.image is None:
        raise ConfigError("give -i IMAGE to time inference, or --train")
    if args.profile and args.engine != "lite":
        raise ConfigError("--profile times Lite's operators: use it with --mode lite")
    args.threads = args.threads or usable_cpus()
    if args.engine in ("eager", "traced") or args.train:
        use_eager_threads(args.threads)
    if args.train:
        return main_training(args, load_config_module(args.file))
    if args.weights is None and args.model is None:
        logger.warning("no weights given (-w): random weights; timings only")
    module = load_config_module(args.file)
    img = cv2.imread(args.image)
    data, _ = DetEvaluator.process_inputs(img, args.short_size, args.max_size)
    # FLOPs depend on the architecture only
    flops = count_conv_flops(build_model(module), data.shape)
    calibration = DatasetCalibration(args.dataset_dir) if args.dataset_dir else ImageCalibration(
        [args.image])
    detector = build_detector(module, args.weights, args.engine, args.model, args.threads,
                              args.profile, precision=args.precision, calibration=calibration)
    engine = engine_of(detector)
    timings = benchmark(detector, img, args.short_size, args.max_size, args.runs, args.warmup)
    del detector  # Lite writes the profile when its network is destroyed
    print("{} engine{}, {} thread(s), {}, MKL_DEBUG_CPU_TYPE={}, input {}x{}, {} runs after {} "
          "warm-up".format(engine, " (auto)" if args.engine == "auto" else "", args.threads,
                           args.precision,
                           os.environ.get("MKL_DEBUG_CPU_TYPE"), data.shape[2], data.shape[3],
                           args.runs, args.warmup))
    if args.precision == "int8":
        print("int8{}; this CPU {} VNNI (int8 dot products; without, int8 runs slower)".format(
            "" if args.model or args.dataset_dir else
            ", calibrated on the timed image (no -d DATA given)",
            "has" if cpu_has_vnni() else "lacks"))
    report(timings, flops, args.peak_gflops, args.precision)


if __name__ == "__main__":
    run_cli(main)
