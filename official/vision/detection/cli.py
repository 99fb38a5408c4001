"""What command-line tools share: one-line errors for bad input, tracebacks for bugs; the
arguments that name a detector."""
import sys

from .cpu.mkl import use_mkl_avx2_kernels
from .deploy.detector import ENGINE_HELP, ENGINES
from .deploy.precision import PRECISION_HELP, PRECISIONS
from .engine.checkpoint import resolve_weights
from .errors import DetectionError
from .model_zoo import released_model_of_config

# what a user fixes by naming another file or making room; other OSErrors keep their traceback
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def run_cli(main):
    """Call ``main()``; on the package's own errors and file errors exit with status 1 and a
    single ``error: ...`` line. Any other exception is a bug and keeps its traceback.
    MKL's kernels are chosen first (see cpu/mkl.py): MKL reads its switch at its first call."""
    use_mkl_avx2_kernels()
    try:
        main()
    except (DetectionError,) + FILE_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print("error: {}".format(message), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def add_detector_arguments(parser, default_engine):
    """-f CONFIG, the weights (-w, --pretrained or --model), --engine and --precision, as
    tools/inference.py and tools/serve.py take them."""
    parser.add_argument("-f", "--file", required=True, help="config file exposing Net and Cfg")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("-w", "--weights", help="state_dict or training checkpoint (a training "
                         "output folder stands for its newest checkpoint)")
    weights.add_argument("--pretrained", action="store_true",
                         help="the published weights of the config's hub entry")
    weights.add_argument("--model", help="a .mge (with --engine lite), .onnx (with --engine "
                         "onnxruntime or openvino) or .xml (openvino) from tools/dump.py")
    parser.add_argument("--engine", choices=ENGINES, default=default_engine, help=ENGINE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)


def weight_source(args):
    """The weight file or URL of ``add_detector_arguments``' arguments; None with a dumped
    model."""
    if args.model:
        return None
    if args.pretrained:
        return released_model_of_config(args.file).url
    return resolve_weights(args.weights)
