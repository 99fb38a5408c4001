"""Serve detections over HTTP: a JSON API for applications and a page at / for people.

    python tools/serve.py -f official/vision/detection/configs/fcos_res50_coco_3x_800size.py \
        --pretrained
    python tools/serve.py -f CONFIG -w WEIGHTS --engine auto --precision bf16 --port 8000
    python tools/serve.py -f CONFIG --model fcos.onnx --engine onnxruntime --host 0.0.0.0 \
        --token SECRET

The model is loaded once and warmed up; the server listens on 127.0.0.1 unless --host says
otherwise, and another host needs a token (--token or FCOS_SERVE_TOKEN). POST an image to
/v1/detect (curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' URL/v1/detect); the API,
its limits and the Ray Serve deployment: docs/serving.md. SIGTERM stops it gracefully.
"""
import argparse
import os

from official.vision.detection.cli import add_detector_arguments, run_cli, weight_source
from official.vision.detection.deploy.detector import build_detector, engine_of
from official.vision.detection.deploy.quantize import DatasetCalibration
from official.vision.detection.engine.file_inference import label_categories
from official.vision.detection.errors import ConfigError
try:
    from official.vision.detection.serve.app import ServeSettings, create_app
    from official.vision.detection.serve.server import (
        bind, check_exposure, return_large_blocks_to_the_system, run_server, server_token, url_of
    )
except ImportError as missing:  # `make demo` installs requirements.txt only
    raise SystemExit("error: serving needs the Python package {} ({}): run `make setup`, or "
                     "pip install -r requirements-serve.txt".format(missing.name, missing)) from None
from official.vision.detection.utils.config_file import load_config_module

DEFAULTS = ServeSettings()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_detector_arguments(parser, default_engine="auto")
    parser.add_argument("-d", "--dataset-dir", default="",
                        help="where the config's test annotations are, for the class names of "
                        "weights that do not keep them; int8: its train split calibrates")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; other than loopback needs a token")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--token", help="requests to /v1/* need 'Authorization: Bearer TOKEN' "
                        "(default: the FCOS_SERVE_TOKEN variable; none on loopback)")
    parser.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                        help="requests read, decoded or waiting for the engine at once; one "
                        "more is answered 503 at once (default: as many as the engine serves "
                        "within --timeout, from its time at warm-up, at most 16; a larger "
                        "queue can answer 504)")
    parser.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch,
                        help="queued images of one padded size the network runs together")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULTS.max_body_bytes / 2 ** 20,
                        help="largest request body (413 above it)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULTS.max_pixels,
                        help="largest width x height of an image (413 above it, read from "
                        "its header before decoding)")
    parser.add_argument("--timeout", type=float, default=DEFAULTS.timeout,
                        help="seconds from a request's arrival to its answer (504 past it)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds SIGTERM lets the requests in flight finish")
    parser.add_argument("--cors-origin", action="append", default=[],
                        help="an origin whose pages may call the API (repeat for more); "
                        "none by default")
    return parser.parse_args(argv)


def settings_of(args):
    for name in ("max_queue", "max_batch", "max_pixels"):
        value = getattr(args, name)
        if value is not None and value < 1:  # max_queue None: chosen at warm-up
            raise ConfigError("--{} must be at least 1".format(name.replace("_", "-")))
    if args.max_body_mb <= 0 or args.timeout <= 0:
        raise ConfigError("--max-body-mb and --timeout must be positive")
    return ServeSettings(max_queue=args.max_queue, max_batch=args.max_batch,
                         max_body_bytes=int(args.max_body_mb * 2 ** 20),
                         max_pixels=args.max_pixels, timeout=args.timeout,
                         token=server_token(args.token), cors_origins=tuple(args.cors_origin))


def main():
    args = parse_args()
    return_large_blocks_to_the_system()  # before the model's memory is taken
    settings = settings_of(args)
    check_exposure(args.host, settings.token)
    sock = bind(args.host, args.port)  # before the model loads: a port in use ends at once
    weights = weight_source(args)
    detector = build_detector(
        load_config_module(args.file), weights, args.engine, args.model,
        precision=args.precision,
        calibration=DatasetCalibration(args.dataset_dir) if args.dataset_dir else None,
        spin=False)  # the engine's threads yield the cores to HTTP and decoding between runs
    description = {"config": os.path.basename(args.file),
                   "weights": os.path.basename(args.model or weights or "") or None,
                   "engine": engine_of(detector), "precision": args.precision}
    app = create_app(detector, label_categories(detector.cfg, weights, args.dataset_dir),
                     description, settings)
    print("serving on {} (engine {}, {})".format(url_of(sock), description["engine"],
                                                 args.precision), flush=True)
    run_server(app, sock, args.shutdown_timeout)


if __name__ == "__main__":
    run_cli(main)
