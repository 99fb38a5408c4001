"""What command-line tools share: one-line errors for bad input, tracebacks for bugs."""
import sys

from .cpu.mkl import use_mkl_avx2_kernels
from .errors import DetectionError

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
