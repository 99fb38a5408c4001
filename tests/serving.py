"""What the server's tests share: a small detector's config file and weights, images, a server
in this process or as tools/serve.py, and HTTP requests over loopback (the standard library's
client, so a test sends exactly the bytes it means to)."""
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import cv2
import megengine as mge
import numpy as np
import uvicorn

from official.vision.detection.models import FCOS
from official.vision.detection.serve.app import create_app
from official.vision.detection.serve.server import bind, url_of

from conftest import PROJECT_ROOT, tiny_config, with_distinct_outputs

# the tiny detector at a small test size, every detection shown (score threshold 0)
SMALL_TEST_SIZE = dict(test_image_short_size=64, test_image_max_size=96, test_vis_threshold=0.0)
CONFIG_FILE = '''
from official.vision.detection.models import FCOS, FCOSConfig


class Cfg(FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(backbone="resnet18", fpn_in_channels=[128, 256, 512], fpn_out_channels=64,
                    fpn_top_in_channel=64, num_classes=3, test_image_short_size=64,
                    test_image_max_size=96, test_vis_threshold=0.0)


Net = FCOS
'''
CATEGORIES = [{"id": 4, "name": "circle"}, {"id": 7, "name": "square"},
              {"id": 9, "name": "triangle"}]
STARTUP_SECONDS = 120


def small_config():
    return tiny_config().update(backbone_norm="FrozenBN", **SMALL_TEST_SIZE)


def small_model():
    """The tiny FrozenBN detector of CONFIG_FILE with weights that give distinct scores."""
    return with_distinct_outputs(lambda: FCOS(small_config()), seed=0)


def write_config_and_weights(folder):
    """(config file, weight file) of small_model in ``folder``."""
    config, weights = os.path.join(folder, "small_fcos.py"), os.path.join(folder, "small.pkl")
    with open(config, "w") as f:
        f.write(CONFIG_FILE)
    mge.save(small_model().state_dict(), weights)
    return config, weights


def image_bytes(height, width, ext=".png", seed=0, params=()):
    """A random-noise image with a few filled rectangles, encoded as ``ext``."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, (height, width, 3)).astype(np.uint8)
    for _ in range(3):
        y, x = rng.randint(0, height // 2), rng.randint(0, width // 2)
        image[y:y + height // 3, x:x + width // 3] = rng.randint(0, 255, 3)
    ok, encoded = cv2.imencode(ext, image, list(params))
    assert ok
    return encoded.tobytes()


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def request(url, method, path, body=None, headers=None, timeout=60):
    """One HTTP request on a new connection; an Answer (headers lower-cased)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()


def post_image(url, data, content_type="image/png", query="", headers=None):
    return request(url, "POST", "/v1/detect" + query, data,
                   dict({"Content-Type": content_type}, **(headers or {})))


def multipart(fields):
    """(body, content type) of a multipart form: {name: (filename or None, bytes)}."""
    boundary = "fcos-test-boundary"
    parts = []
    for name, (filename, data) in fields.items():
        disposition = 'form-data; name="{}"'.format(name)
        if filename:
            disposition += '; filename="{}"'.format(filename)
        parts.append("--{}\r\nContent-Disposition: {}\r\n\r\n".format(
            boundary, disposition).encode() + data + b"\r\n")
    body = b"".join(parts) + "--{}--\r\n".format(boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def wait_until(condition, seconds=30, what="the condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("{} did not hold within {} s".format(what, seconds))
        time.sleep(0.01)


def is_ready(url):
    try:
        return request(url, "GET", "/readyz", timeout=5).status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serving(detector, settings, categories=CATEGORIES, wait_ready=True):
    """(url, service) of the application of a file engine (its worker on a thread of its
    own) served by uvicorn on a thread, on a free loopback port."""
    app = create_app(detector, categories, {"config": "small_fcos.py", "weights": "small.onnx",
                                            "engine": "onnxruntime", "precision": "fp32"},
                     settings)
    service = app.state.service
    service.worker.start()
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = url_of(sock)
    wait_until(lambda: server.started, what="uvicorn's start")
    if wait_ready:
        wait_until(lambda: is_ready(url), what="readiness")
    try:
        yield url, service
    finally:
        server.should_exit = True
        thread.join(30)
        service.worker.stop(5)


class GatedEngine:
    """A detector whose forwards wait until the test opens ``gate``: a test holds the engine
    busy to fill the queue, outlive a deadline or leave before its turn. ``calls`` counts the
    forwards begun. With ``delay``, each forward takes that many seconds more: an engine as
    slow as a large model's."""

    def __init__(self, detector, delay=0.0):
        self.detector, self.cfg = detector, detector.cfg
        self.gate = threading.Event()
        self.delay = delay
        self.calls = 0

    def inference(self, image, im_info):
        self.calls += 1
        assert self.gate.wait(60), "the test never opened the gate"
        time.sleep(self.delay)
        return self.detector.inference(image, im_info)


@contextlib.contextmanager
def serve_tool(*args):
    """(url, process) of tools/serve.py on a free loopback port, once ready; its log (stderr)
    goes to a file, ``process.log()`` reads it."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        [sys.executable, os.path.join(PROJECT_ROOT, "tools", "serve.py"), "--port", "0",
         *[str(a) for a in args]], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log,
        text=True)
    process.log = lambda: (log.seek(0), log.read())[1]
    try:
        line = process.stdout.readline()
        if not line.startswith("serving on "):
            process.wait(30)
            raise AssertionError("tools/serve.py did not start:\n" + process.log()[-3000:])
        url = line.split()[2]
        wait_until(lambda: is_ready(url), STARTUP_SECONDS, "readiness of tools/serve.py")
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        log.close()


def rows_of(answer):
    """[K, 6] rows (x1, y1, x2, y2, score, label) of a /v1/detect answer."""
    return np.array([d["bbox"] + [d["score"], d["label"]] for d in answer["detections"]],
                    np.float64).reshape(-1, 6)
