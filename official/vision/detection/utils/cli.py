"""What command-line tools share: one-line errors for bad input, tracebacks for bugs."""
import sys

from ..errors import DetectionError

# what a user fixes by naming another file or making room; other OSErrors keep their traceback
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def run_cli(main):
    """Call ``main()``; on the package's own errors and file errors exit with status 1 and a
    single ``error: ...`` line. Any other exception is a bug and keeps its traceback."""
    try:
        main()
    except (DetectionError,) + FILE_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print("error: {}".format(message), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
