"""Evaluate FCOS weights on a COCO-format test set with pycocotools.

    python tools/test.py -f CONFIG -w WEIGHTS -d /data/datasets [-b 4] [--tta]
    python tools/test.py -f CONFIG -se 40 -ee 53 -d /data/datasets   # epoch checkpoints
    python tools/test.py -f CONFIG -w WEIGHTS -d /data/datasets --engine lite  # compiled
    python tools/test.py -f CONFIG --model fcos.mge -d /data/datasets --engine lite
    python tools/test.py -f CONFIG --model fcos.onnx -d /data/datasets --engine onnxruntime
    python tools/test.py -f CONFIG -w WEIGHTS -d /data/datasets --engine auto --precision bf16
    python tools/test.py -f CONFIG -w WEIGHTS -d /data/datasets --engine auto --precision int8

After the table of the 12 COCO metrics, a table per category (AP, AP50, ground-truth boxes),
also saved beside the result file as <results>_per_class.json.
"""
import argparse
import functools

from official.vision.detection.deploy.detector import ENGINE_HELP, ENGINES, build_detector
from official.vision.detection.deploy.precision import PRECISION_HELP, PRECISIONS
from official.vision.detection.deploy.quantize import DatasetCalibration
from official.vision.detection.engine.checkpoint import checkpoint_path, resolve_weights
from official.vision.detection.engine.coco_evaluation import EvalOptions, run_test
from official.vision.detection.errors import ConfigError
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import config_name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True, help="config file exposing Net and Cfg")
    evaluated = parser.add_mutually_exclusive_group()
    evaluated.add_argument("-w", "--weights", nargs="+",
                           help="state_dicts or training checkpoints; a training output folder "
                           "stands for its newest checkpoint")
    evaluated.add_argument("-se", "--start-epoch", type=int, help="first epoch checkpoint")
    evaluated.add_argument("--model", help="a .mge (with --engine lite), .onnx (with --engine "
                           "onnxruntime or openvino) or .xml (openvino) from tools/dump.py")
    parser.add_argument("-ee", "--end-epoch", type=int, help="last epoch checkpoint")
    parser.add_argument("--log-dir", help="where -se/-ee look (default log-of-<config name>)")
    parser.add_argument("-d", "--dataset-dir", default="", help="base of relative dataset paths")
    parser.add_argument("-n", "--devices", type=int, default=1, help="GPUs")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="images per forward")
    parser.add_argument("--out", help="COCO result file (default: beside the weights or model)")
    parser.add_argument("--tta", action="store_true", help="flip and extra scales, merged")
    parser.add_argument("--workers", type=int, default=2, help="image-loading processes")
    parser.add_argument("--engine", choices=ENGINES, default="eager",
                        help=ENGINE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    return parser.parse_args(argv)


def weight_files(args):
    if args.model:
        return []
    if args.weights:
        return [resolve_weights(path) for path in args.weights]
    if args.start_epoch is None:
        raise ConfigError("give -w WEIGHTS, -se START_EPOCH [-ee END_EPOCH] or --model MODEL.mge")
    log_dir = args.log_dir or "log-of-{}".format(config_name(args.file))
    end = args.start_epoch if args.end_epoch is None else args.end_epoch
    return [checkpoint_path(log_dir, epoch) for epoch in range(args.start_epoch, end + 1)]


def main():
    args = parse_args()
    weights = weight_files(args)
    if args.out and len(weights) > 1:
        raise ConfigError("--out names one result file; it cannot take several weight files")
    options = EvalOptions(dataset_dir=args.dataset_dir, weights=weights,
                          batch_size=args.batch_size, tta=args.tta, results_path=args.out,
                          num_workers=args.workers, engine=args.engine, model_path=args.model,
                          precision=args.precision)
    # int8: calibrated on the train split of the same dataset folder, once (then cached)
    table = run_test(args.file, options, args.devices, functools.partial(
        build_detector, calibration=DatasetCalibration(args.dataset_dir)))
    print("mAP={:.4f}".format(list(table.values())[-1]["AP"]))


if __name__ == "__main__":
    run_cli(main)
