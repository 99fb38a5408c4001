"""The Ray Serve deployment on a local one-node Ray cluster: two replicas behind Ray's proxy
give the detections of the single-machine server's engine, and its refusals."""
import os
import socket

import numpy as np
import pytest
import ray
from ray import serve

from official.vision.detection.deploy.onnx_export import export_onnx
from official.vision.detection.deploy.onnxruntime_detector import OnnxRuntimeDetector
from official.vision.detection.errors import ConfigError
from official.vision.detection.predictor import Predictor

import cv2
from detection_matching import assert_same_detections
from serving import (
    image_bytes, post_image, request, rows_of, small_config, small_model, wait_until,
    write_config_and_weights
)

from official.vision.detection.serve.ray_deployment import ray_application


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray")
    config, _ = write_config_and_weights(str(folder))
    model = export_onnx(small_model(), str(folder / "small.onnx"))
    # no usage reports to Ray's authors; Ray's own services listen on this machine's address
    # (it replaces 127.0.0.1 by it), its HTTP proxy on loopback
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(ray_application(config, model, "onnxruntime", replicas=2), route_prefix="/")
        url = "http://127.0.0.1:{}".format(port)
        wait_until(lambda: request(url, "GET", "/readyz").status == 200, 60, "readiness")
        yield url, model
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_behind_rays_proxy_give_the_engines_detections(deployed):
    url, model = deployed
    replicas = serve.status().applications["default"].deployments["fcos"].replica_states
    assert replicas == {"RUNNING": 2}
    data = image_bytes(60, 90, ".jpg", seed=4)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    expected = Predictor(OnnxRuntimeDetector(model, small_config())).predict_images([image])[0]
    for _ in range(4):  # Ray's proxy spreads them over the replicas
        answer = post_image(url, data, "image/jpeg")
        assert answer.status == 200
        assert_same_detections(rows_of(answer.json()), expected, box_atol=1e-3,
                               score_atol=1e-5)
    model_facts = request(url, "GET", "/v1/model").json()
    assert (model_facts["engine"], model_facts["weights"]) == ("onnxruntime", "small.onnx")
    refused = post_image(url, b"plain text")
    assert refused.status == 415 and "not a JPEG, PNG, WebP or BMP" in refused.json()["error"]


def test_a_replica_runs_a_dumped_model_on_a_file_engine(tmp_path):
    config, weights = write_config_and_weights(str(tmp_path))
    with pytest.raises(ConfigError, match="runs a dumped model on lite or onnxruntime or "
                                          "openvino, not eager"):
        ray_application(config, weights, "eager")
