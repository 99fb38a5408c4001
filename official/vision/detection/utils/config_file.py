"""Config files: any Python file exposing ``Net`` and ``Cfg`` (as the official package's)."""
import importlib.util
import os

from ..errors import ConfigError


def load_config_module(path):
    """Import a config file by path; it must define ``Net`` and ``Cfg``."""
    if not os.path.isfile(path):
        raise FileNotFoundError("config file not found: {}".format(path))
    name = "fcos_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [attr for attr in ("Net", "Cfg") if not hasattr(module, attr)]
    if missing:
        raise ConfigError("config file {} does not define {}".format(
            path, " and ".join(missing)))
    return module


def config_name(path):
    """The file name without .py: names the default output folder log-of-<name>."""
    return os.path.splitext(os.path.basename(path))[0]
