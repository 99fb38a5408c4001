"""The application of app.py deployed with Ray Serve, for more than one machine: replicas, each
with its own engine and bounded queue, behind Ray's HTTP proxy, which keeps queue limits of its
own (``max_ongoing_requests`` per replica, ``max_queued_requests`` before it answers 503).

An optional extra (requirements-ray.txt): the single-machine server never imports Ray. A replica
runs a dumped model (tools/dump.py) on a file engine (lite, onnxruntime or openvino): Ray calls
a replica's code on a thread other than its process's main one, where MegEngine's runtime does
not run (engine_worker.py), so the model is exported before it is deployed. The config and the
model travel to the replicas through Ray's object store: the nodes need this package installed,
not the files. From the shell (docs/serving.md):

    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos.onnx
    ray start --head
    serve run official.vision.detection.serve.ray_deployment:build config=CONFIG \
        model=fcos.onnx engine=onnxruntime replicas=2
"""
import dataclasses
import os
import tempfile

from ray import serve

from ..deploy.detector import FILE_ENGINES, file_detector
from ..engine.file_inference import label_categories
from ..errors import ConfigError
from ..utils.config_file import load_config_module
from .app import ServeSettings, create_app
from .server import return_large_blocks_to_the_system, server_token

# requests Ray's proxy lets wait for a busy deployment before it answers 503 itself
DEFAULT_MAX_QUEUED = 64
# requests a replica takes at once (its queue's capacity): Ray needs the number when deploying,
# before a replica has timed its engine, so it is not chosen from the engine's time here
DEFAULT_REPLICA_QUEUE = 16


class DetectionReplica:
    """One replica: ``files`` ({name: bytes}: the config file, the model and, for an OpenVINO
    IR, its .bin) written to a folder of its own, the model run by ``engine`` and served by the
    application of app.py."""

    def __init__(self, files, config_name, model_name, engine, precision, categories,
                 settings):
        return_large_blocks_to_the_system()
        self.folder = tempfile.TemporaryDirectory(prefix="fcos-replica-")
        for name, data in files.items():
            with open(os.path.join(self.folder.name, name), "wb") as f:
                f.write(data)
        config_module = load_config_module(os.path.join(self.folder.name, config_name))
        detector = file_detector(config_module, engine, os.path.join(self.folder.name,
                                                                     model_name),
                                 precision=precision, spin=False)  # as tools/serve.py
        description = {"config": config_name, "weights": model_name, "engine": engine,
                       "precision": precision}
        self.asgi_app = create_app(detector, categories, description, settings)
        self.worker = self.asgi_app.state.service.worker
        self.worker.start()

    def __serve_build_asgi_app__(self):
        return self.asgi_app

    def check_health(self):
        """Ray replaces a replica whose engine failed."""
        if self.worker.failure:
            raise RuntimeError(self.worker.failure)


def ray_application(config_file, model, engine, precision="fp32", weights=None, dataset_dir="",
                    settings=None, replicas=1, max_queued=DEFAULT_MAX_QUEUED):
    """The bound Ray Serve application of a dumped ``model`` on ``engine`` (a file engine):
    ``replicas`` copies, each taking as many requests at once as its own queue holds
    (``settings.max_queue``). ``weights`` (a training checkpoint) or ``dataset_dir`` name the
    classes, as for tools/serve.py."""
    if engine not in FILE_ENGINES:
        raise ConfigError("a Ray Serve replica runs a dumped model on {}, not {}: write one "
                          "with tools/dump.py".format(" or ".join(FILE_ENGINES), engine))
    files = {name: _read(path) for name, path in _model_files(model).items()}
    config_name = "fcos_config_{}".format(os.path.basename(config_file))
    files[config_name] = _read(config_file)
    categories = label_categories(load_config_module(config_file).Cfg(), weights, dataset_dir)
    settings = settings or ServeSettings()
    if settings.max_queue is None:
        settings = dataclasses.replace(settings, max_queue=DEFAULT_REPLICA_QUEUE)
    deployment = serve.deployment(serve.ingress()(DetectionReplica), name="fcos",
                                  num_replicas=replicas,
                                  max_ongoing_requests=settings.max_queue,
                                  max_queued_requests=max_queued)
    return deployment.bind(files, config_name, os.path.basename(model), engine, precision,
                           categories, settings)


def build(args):
    """``serve run official.vision.detection.serve.ray_deployment:build key=value ...``: the
    keys config, model, engine, and optionally precision, weights, dataset_dir, replicas,
    max_queue, max_queued, token (default: the FCOS_SERVE_TOKEN variable)."""
    settings = ServeSettings(max_queue=int(args.get("max_queue", DEFAULT_REPLICA_QUEUE)),
                             token=server_token(args.get("token")))
    return ray_application(args["config"], args["model"], args["engine"],
                           args.get("precision", "fp32"), args.get("weights"),
                           args.get("dataset_dir", ""), settings,
                           int(args.get("replicas", 1)),
                           int(args.get("max_queued", DEFAULT_MAX_QUEUED)))


def _model_files(model):
    """{name: path} of a dumped model: an OpenVINO IR's weights are in the .bin beside it."""
    files = {os.path.basename(model): model}
    if model.endswith(".xml"):
        weights = os.path.splitext(model)[0] + ".bin"
        files[os.path.basename(weights)] = weights
    return files


def _read(path):
    with open(path, "rb") as f:
        return f.read()
