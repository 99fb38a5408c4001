"""The package's error types: bad input or an unavailable resource, as opposed to a bug.

The tools print these (and file errors) as one ``error: ...`` line; any other exception keeps
its traceback, since it means the code, not the user's input, is wrong. Each type also derives
from the built-in exception it refines, so ``except ValueError`` keeps catching a bad setting.
"""


class DetectionError(Exception):
    """Something the user can fix: the message says what."""


class ConfigError(DetectionError, ValueError):
    """A config field, argument or model file that cannot work as given."""


class DatasetError(DetectionError, ValueError):
    """A dataset path, annotation file, image or label that cannot be used."""


class WeightsUnavailableError(DetectionError, RuntimeError):
    """A weight file could not be found, downloaded or read, or does not fit the model."""


class NonFiniteError(DetectionError, ValueError):
    """A loss or a model output is NaN or infinite (diverged training or broken weights)."""


class NonFiniteLossError(NonFiniteError):
    """Training produced a NaN or Inf loss; no checkpoint was written for that epoch."""
