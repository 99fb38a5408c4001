"""Weight files: the hub download cache, checkpoint formats, loading by name and shape.

``pretrained`` is ``megengine.hub.pretrained`` with three additions: an offline machine gets one
error naming the URL and the cache path to fill by hand; keyword arguments of the factory
override config fields; and when an override changes a tensor's shape (``num_classes=3``), the
matching tensors load and the rest keep their fresh initialization, with a report.
"""
import functools
import hashlib
import os
from urllib.parse import urlparse

import numpy as np
import megengine as mge
from megengine import hub
from megengine.utils.http_download import download_from_url

from .errors import WeightsUnavailableError
from .utils.files import atomic_target

logger = mge.get_logger(__name__)


def megengine_home():
    """MGE_HOME as megengine.hub resolves it (XDG_CACHE_HOME/megengine by default)."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return os.path.expanduser(os.getenv("MGE_HOME", os.path.join(cache, "megengine")))


def weight_cache_path(url):
    """Where megengine.hub keeps the download of ``url``: MGE_HOME/serialized/<sha256[:6]>_<name>."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:6]
    name = os.path.basename(urlparse(url).path)
    return os.path.join(megengine_home(), "serialized", "{}_{}".format(digest, name))


def _read(path):
    try:
        return mge.load(path, map_location="cpu0")
    except Exception as error:  # pylint: disable=broad-except
        raise WeightsUnavailableError(
            "cannot read weight file {} ({}: {}); it may be truncated or not a MegEngine "
            "pickle: replace it".format(path, type(error).__name__, error)
        ) from None


def load_weight_file(source):
    """Load a local weight file, or a URL through the hub cache (downloading it once)."""
    if os.path.exists(source):
        return _read(source)
    if "://" not in source:
        raise WeightsUnavailableError("weight file not found: {}".format(source))
    cached = weight_cache_path(source)
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            with atomic_target(cached) as partial:
                download_from_url(source, partial)
        except Exception as error:  # pylint: disable=broad-except
            raise WeightsUnavailableError(
                "could not download {} ({}); download it by hand and save it as {}".format(
                    source, type(error).__name__, cached)
            ) from None
    return _read(cached)


def state_dict_of(checkpoint):
    """The model tensors of a plain state_dict or of a training checkpoint."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint["state_dict"]
    if isinstance(checkpoint, dict) and all(isinstance(k, str) for k in checkpoint):
        return checkpoint
    raise WeightsUnavailableError(
        "expected a state_dict or a checkpoint with a 'state_dict' entry, got {}".format(
            type(checkpoint).__name__)
    )


class LoadReport:
    """Which model tensors came from a file and which did not."""

    def __init__(self, loaded, reinitialized, unused):
        self.loaded = loaded  # names
        self.reinitialized = reinitialized  # name -> reason
        self.unused = unused  # file names the model does not have

    @property
    def complete(self):
        return not self.reinitialized and not self.unused

    def table(self):
        """Counts per module (first two name parts), then the names that did not load."""
        counts = {}
        for column, names in enumerate([self.loaded, sorted(self.reinitialized), self.unused]):
            for name in names:
                counts.setdefault(".".join(name.split(".")[:2]), [0, 0, 0])[column] += 1
        width = max([len("module")] + [len(group) for group in counts])
        lines = ["{:<{w}}  {:>6}  {:>14}  {:>6}".format(
            "module", "loaded", "re-initialized", "unused", w=width)]
        lines += ["{:<{w}}  {:>6}  {:>14}  {:>6}".format(group, *row, w=width)
                  for group, row in sorted(counts.items())]
        lines += ["re-initialized: {} ({})".format(k, v)
                  for k, v in sorted(self.reinitialized.items())]
        lines += ["unused: {}".format(k) for k in self.unused]
        return "\n".join(lines)


def same_numbers_shape(file_shape, model_shape):
    """Whether a tensor of ``file_shape`` holds the model's tensor: the shapes are equal or
    differ only in size-1 dimensions, as MegEngine's own loader accepts for norm layers (files
    of MegEngine 1.0 store BatchNorm tensors as [C], later ones as [1, C, 1, 1])."""
    return [n for n in file_shape if n != 1] == [n for n in model_shape if n != 1]


def load_matching_weights(model, state_dict):
    """Copy every tensor whose name matches and whose shape holds the model's (see
    ``same_numbers_shape``) into ``model``; report the rest."""
    current = model.state_dict()
    own = {k: tuple(v.shape) for k, v in current.items()}
    matching, reinitialized = {}, {}
    for name, shape in own.items():
        if name not in state_dict:
            reinitialized[name] = "missing from the file"
        elif not same_numbers_shape(tuple(state_dict[name].shape), shape):
            reinitialized[name] = "shape {} in the file, {} in the model".format(
                tuple(state_dict[name].shape), shape)
        else:
            value = state_dict[name]
            matching[name] = (value.numpy() if hasattr(value, "numpy") else
                              np.asarray(value)).reshape(shape)
    model.load_state_dict(dict(current, **matching))  # the others keep their current values
    unused = sorted(set(state_dict) - set(own))
    return LoadReport(sorted(matching), reinitialized, unused)


def load_model_weights(model, source):
    """Load a weight file or URL that must fit ``model`` exactly (names and shapes)."""
    report = load_matching_weights(model, state_dict_of(load_weight_file(source)))
    if not report.complete:
        raise WeightsUnavailableError("{} does not fit the {} model: {}".format(
            source, type(model).__name__, report.table()))


class pretrained(hub.pretrained):  # pylint: disable=invalid-name
    """``@pretrained(URL)`` on a factory ``f(**config_overrides) -> model``."""

    def __call__(self, func):
        url = self.url

        @functools.wraps(func)
        def factory(pretrained=False, **overrides):  # pylint: disable=redefined-outer-name
            model = func(**overrides)
            if pretrained and not overrides:
                load_model_weights(model, url)
            elif pretrained:
                report = load_matching_weights(model, state_dict_of(load_weight_file(url)))
                logger.info("%s from %s\n%s", func.__name__, url, report.table())
            return model

        factory.url = url
        return factory


def build_model(config_module, weights=None):
    """``Net(Cfg())`` of a config module in eval mode, with the tensors of ``weights`` (a
    state_dict or training checkpoint, as a path or URL), which must fit it exactly; without
    ``weights`` the model keeps its random initialization."""
    model = config_module.Net(config_module.Cfg())
    if weights is not None:
        load_model_weights(model, weights)
    model.eval()
    return model
