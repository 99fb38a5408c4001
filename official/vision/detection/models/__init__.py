"""The detector and its configuration, under the names the official package uses."""
from .config import FCOSConfig
from .fcos import FCOS

__all__ = ["FCOS", "FCOSConfig"]
