"""The packages of ONNX export and of the onnxruntime engine, imported when they are used.

They come from requirements-export.txt and requirements-mgeconvert.txt (``make setup`` installs
both); without them the rest of the package works, and asking for ONNX gives a one-line error
that names the missing package.
"""
import importlib
import importlib.util
import sys
import types

from ..errors import DetectionError

INSTALL = "run `make setup` (requirements-export.txt and requirements-mgeconvert.txt)"


class MissingPackageError(DetectionError, ImportError):
    """A package of ONNX export or of the onnxruntime engine is not installed."""


def import_optional(name, purpose):
    """The module ``name``; a ``MissingPackageError`` naming it if it cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        # the package missing may be one that ``name`` imports (mgeconvert imports onnx)
        missing = (getattr(error, "name", None) or name).split(".")[0]
        raise MissingPackageError("{} needs the Python package {}, which cannot be imported ({}); "
                                  "{}".format(purpose, missing, error, INSTALL)) from error


def import_mgeconvert_module(name, purpose):
    """A submodule of mgeconvert, e.g. "mgeconvert.backend.ir_to_onnx.onnx_op".

    mgeconvert's own ``__init__`` imports its TFLite converter, whose compiled flexbuffers
    module in the 1.0.2 sdist is built for Python 3.9 and fails to import on 3.10. Its
    subpackages do not need it, so the package is entered as a bare module with its path
    instead of running that ``__init__``.
    """
    if "mgeconvert" not in sys.modules:
        try:
            spec = importlib.util.find_spec("mgeconvert")
        except ImportError:  # an import hook refused the name
            spec = None
        if spec is None:
            raise MissingPackageError("{} needs the Python package mgeconvert, which is not "
                                      "installed; {}".format(purpose, INSTALL))
        package = types.ModuleType("mgeconvert")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["mgeconvert"] = package
    return import_optional(name, purpose)
