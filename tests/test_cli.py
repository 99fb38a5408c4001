"""The tools' error handling: the package's own errors and file errors are one line, anything
else is a bug and keeps its traceback."""
import pytest

from official.vision.detection.errors import (
    ConfigError, DatasetError, NonFiniteLossError, WeightsUnavailableError
)
from official.vision.detection.cli import run_cli


def raising(error):
    def main():
        raise error
    return main


@pytest.mark.parametrize("error", [
    ConfigError("layout must be one of ('auto', 'nchw', 'nchw88'), got 'x'"),
    DatasetError("cannot read image a.jpg\n(unreadable or not an image)"),
    WeightsUnavailableError("weight file not found: w.pkl"),
    NonFiniteLossError("loss is nan at iteration 3"),
    FileNotFoundError("config file not found: c.py"),
    PermissionError("cannot write outputs/detections.json"),
])
def test_user_errors_end_the_tool_with_one_line(capsys, error):
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(error))
    assert ended.value.code == 1
    assert capsys.readouterr().err == "error: {}\n".format(" ".join(str(error).split()))


@pytest.mark.parametrize("bug", [
    AttributeError("'NoneType' object has no attribute 'shape'"),
    RuntimeError("assertion `data.ndim == 4' failed"),
    ValueError("operands could not be broadcast together"),
    KeyError("state_dict"),
])
def test_other_exceptions_keep_their_traceback(bug):
    with pytest.raises(type(bug)) as raised:
        run_cli(raising(bug))
    assert raised.value is bug
