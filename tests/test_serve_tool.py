"""tools/serve.py as a user runs it: the eager model on the main thread, the detections of
tools/inference.py, refusals before the model loads, a graceful stop on SIGTERM."""
import json
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from detection_matching import assert_same_detections
from conftest import PROJECT_ROOT, run_tool
from without_packages import run_without
from serving import (
    image_bytes, post_image, request, rows_of, serve_tool, wait_until, write_config_and_weights
)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return write_config_and_weights(str(tmp_path_factory.mktemp("model")))


def test_served_detections_are_those_of_tools_inference(model_files, tmp_path):
    config, weights = model_files
    images = {"wide.jpg": image_bytes(60, 90, ".jpg", seed=1),
              "tall.png": image_bytes(90, 50, ".png", seed=2)}
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    result = run_tool("inference.py", "-f", config, "-w", weights, "-i", tmp_path, "-o",
                      tmp_path / "out")
    assert result.returncode == 0, result.stderr
    expected = {record["file"].rsplit("/", 1)[-1]: record for record in json.loads(
        (tmp_path / "out" / "detections.json").read_text())}
    with serve_tool("-f", config, "-w", weights, "--engine", "eager") as (url, process):
        capacity = request(url, "GET", "/v1/model").json()["limits"]["max_queue"]
        assert "queue capacity {} (chosen from the engine's time)".format(capacity) in \
            process.log()
        for name, data in images.items():
            found = post_image(url, data, "image/jpeg" if name.endswith("jpg") else "image/png")
            assert found.status == 200
            record = expected[name]
            assert found.json()["image"] == {"width": record["width"],
                                             "height": record["height"]}
            assert len(record["detections"]) == 100
            assert_same_detections(
                rows_of(found.json()),
                np.array([[*d["bbox"], d["score"], d["label"]] for d in record["detections"]]),
                box_atol=1e-3, score_atol=1e-5, min_iou=0.99)


def queue_depth(url):
    for line in request(url, "GET", "/metrics").body.decode().splitlines():
        if line.startswith("fcos_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no fcos_queue_depth in /metrics")


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(model_files):
    config, weights = model_files
    body = image_bytes(60, 90)
    head = b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n" \
        b"Content-Length: %d\r\n\r\n" % len(body)
    with serve_tool("-f", config, "-w", weights, "--engine", "eager", "--max-queue", 3) as (
            url, process):
        assert request(url, "GET", "/v1/model").json()["limits"]["max_queue"] == 3
        host, port = url.split("//")[1].split(":")
        clients = [socket.create_connection((host, int(port)), timeout=60) for _ in range(3)]
        for client in clients:  # three requests in flight: their bodies half sent
            client.sendall(head + body[:len(body) // 2])
        wait_until(lambda: queue_depth(url) == 3, what="three requests taken in")
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: not is_listening(url), what="the listening socket closed")
        answers = []
        for client in clients:
            client.sendall(body[len(body) // 2:])
            answers.append(client.makefile("rb").readline())
            client.close()
        assert answers == [b"HTTP/1.1 200 OK\r\n"] * 3
        assert process.wait(60) == 0, process.log()[-3000:]


def is_listening(url):
    try:
        request(url, "GET", "/livez", timeout=5)
        return True
    except OSError:
        return False


def test_a_host_beyond_loopback_without_a_token_is_refused_before_loading(model_files):
    config, weights = model_files
    result = run_tool("serve.py", "-f", config, "-w", weights, "--host", "0.0.0.0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --host 0.0.0.0 lets other machines reach the server: give it a token (--token "
        "or the FCOS_SERVE_TOKEN variable), or keep the default --host 127.0.0.1")


def test_a_port_in_use_is_one_line(model_files):
    config, weights = model_files
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tool("serve.py", "-f", config, "-w", weights, "--port", port)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: cannot listen on 127.0.0.1:{}: Address already in use".format(port))


def test_the_server_without_ray_never_imports_it(model_files):
    """Ray is an optional extra: tools/serve.py and the application import without it."""
    code = ("import sys, runpy; sys.argv = ['serve.py', '--help']\n"
            "try:\n    runpy.run_path('tools/serve.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "import official.vision.detection.serve.app\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'ray'], 'ray imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("package", ["starlette", "uvicorn", "prometheus_client"])
def test_serving_without_its_packages_is_a_one_line_error_naming_them(model_files, package):
    """`make demo` installs requirements.txt only; the server's packages come with make setup."""
    config, weights = model_files
    result = run_without(package, "serve.py", "-f", config, "-w", weights)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: serving needs the Python package {} (".format(package))
    assert "pip install -r requirements-serve.txt" in result.stderr
