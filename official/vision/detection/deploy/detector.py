"""A config's detector run by one engine: the eager model, its traced graph, or MegEngine Lite.

Every one has ``cfg`` and ``inference(image, im_info)``, so ``DetEvaluator``, the COCO evaluation
and the inference over image files take any of them.
"""
import os
import tempfile

from ..errors import ConfigError
from ..weights import build_model
from .compile import TracedDetector, dump_inference
from .fold import fold_frozen_bn
from .lite import DEFAULT_THREADS, LiteDetector

ENGINES = ("eager", "traced", "lite")


def build_detector(config_module, weights=None, engine="eager", model_path=None,
                   threads=DEFAULT_THREADS, profile_path=None):
    """The detector of a config module on ``engine``.

    With ``model_path`` (a .mge from ``dump_inference``, lite engine only) ``weights`` are not
    used. Otherwise the model gets ``weights`` (random without them) and the lite engine runs it
    from a temporary dump in the layout ``dump_inference`` chooses for this CPU. ``threads`` and ``profile_path`` are Lite's (see
    ``LiteDetector``).
    """
    if engine not in ENGINES:
        raise ConfigError("engine must be one of {}, got {!r}".format(ENGINES, engine))
    if model_path is not None:
        if engine != "lite":
            raise ConfigError("a dumped model (--model) runs on the lite engine: add --engine lite")
        return LiteDetector(model_path, config_module.Cfg(), threads, profile_path)
    model = build_model(config_module, weights)
    if engine == "eager":
        return model
    if engine == "traced":
        return TracedDetector(fold_frozen_bn(model))
    # Lite reads the whole file when it loads it
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.mge")
        dump_inference(model, path)
        return LiteDetector(path, model.cfg, threads, profile_path)
