"""What command-line tools share: one-line errors instead of tracebacks for bad input."""
import sys

from ..data.coco import DatasetError
from ..weights import WeightsUnavailableError

USER_ERRORS = (DatasetError, WeightsUnavailableError, FileNotFoundError, ValueError,
               AttributeError, RuntimeError)


def run_cli(main):
    """Call ``main()``; exit with status 1 and a single ``error: ...`` line on a user error."""
    try:
        main()
    except USER_ERRORS as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print("error: {}".format(message), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
