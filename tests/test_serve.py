"""The HTTP service over loopback, in this process: its answers, its queue, its limits and its
security. The engine is the small detector exported to ONNX Runtime, which runs on the
worker's own thread (MegEngine's models run on the main thread only, which pytest holds);
tools/serve.py with the eager model is tested in test_serve_tool.py."""
import socket
import threading

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from official.vision.detection.deploy.onnx_export import export_onnx
from official.vision.detection.deploy.onnxruntime_detector import OnnxRuntimeDetector
from official.vision.detection.predictor import Predictor
from official.vision.detection.serve.app import ServeSettings
from official.vision.detection.serve.server import check_exposure, is_loopback
from official.vision.detection.errors import ConfigError
from official.vision.detection.images import to_bgr

import cv2
from detection_matching import assert_same_detections
from serving import (
    CATEGORIES, GatedEngine, image_bytes, multipart, post_image, request, rows_of, serving,
    small_config, small_model, wait_until
)

SCORE_TOLERANCE, BOX_TOLERANCE = 1e-5, 1e-3


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    path = export_onnx(small_model(), str(tmp_path_factory.mktemp("onnx") / "small.onnx"))
    return OnnxRuntimeDetector(path, small_config())


@pytest.fixture(scope="module")
def server(detector):
    with serving(detector, ServeSettings(max_body_bytes=2 ** 20, max_pixels=300 * 300)) as url:
        yield url


def expected_rows(detector, data, threshold=0.0, count=None):
    """What tools/inference.py finds in an encoded image: Predictor, then the threshold."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rows = Predictor(detector).predict_images([image])[0]
    return rows[rows[:, 4] >= threshold][:count]


def test_an_image_gets_the_detections_of_the_predictor_with_class_names(server, detector):
    url, _ = server
    data = image_bytes(60, 90, ".jpg")
    answer = post_image(url, data, "image/jpeg")
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    found = answer.json()
    assert found["image"] == {"width": 90, "height": 60}
    assert len(found["detections"]) == 100  # the config's test_max_boxes_per_image
    assert_same_detections(rows_of(found), expected_rows(detector, data), BOX_TOLERANCE,
                           SCORE_TOLERANCE)
    for detection in found["detections"]:
        category = CATEGORIES[detection["label"]]
        assert (detection["category_id"], detection["category_name"]) == (category["id"],
                                                                           category["name"])
    assert set(found["timings_ms"]) == {"read", "decode", "preprocess", "queue", "engine",
                                        "postprocess", "total"}


def test_raw_bodies_of_every_format_and_the_form_field_give_the_same_detections(server):
    url, _ = server
    png = image_bytes(50, 70, ".png", seed=3)
    reference = rows_of(post_image(url, png, "image/png").json())
    lossless = {"image/png": png, "image/bmp": image_bytes(50, 70, ".bmp", seed=3),
                "image/webp": image_bytes(50, 70, ".webp", seed=3, params=(
                    cv2.IMWRITE_WEBP_QUALITY, 101)),
                "application/octet-stream": png}  # the bytes decide, not the declared type
    for content_type, data in lossless.items():
        assert_same_detections(rows_of(post_image(url, data, content_type).json()), reference,
                               BOX_TOLERANCE, SCORE_TOLERANCE)
    body, content_type = multipart({"note": (None, b"hello"), "image": ("a.png", png)})
    assert_same_detections(rows_of(post_image(url, body, content_type).json()), reference,
                           BOX_TOLERANCE, SCORE_TOLERANCE)


def test_score_threshold_and_max_detections_select_the_first_detections(server, detector):
    url, _ = server
    data = image_bytes(60, 90, ".png", seed=1)
    everything = expected_rows(detector, data)
    threshold = float(np.median(everything[:, 4]))
    found = post_image(url, data, query="?score_threshold={}&max_detections=7".format(
        threshold)).json()
    assert len(found["detections"]) == 7
    assert_same_detections(rows_of(found), expected_rows(detector, data, threshold, 7),
                           BOX_TOLERANCE, SCORE_TOLERANCE)


def too_large_chunked(url):
    """A chunked body (no Content-Length) growing past the limit: the answer, read while the
    client is still sending."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"\x89PNG" + b"\0" * 65532 + b"\r\n"
        try:
            for _ in range(64):  # 4 MB at most, the limit being 1 MB
                sock.sendall(chunk)
        except OSError:  # the server answered and closed the connection
            pass
        return sock.recv(4096).decode("latin-1")


BAD_REQUESTS = [  # (name, body, content type, query, status, error)
    ("text", b"hello, world", "image/png", "", 415, "not a JPEG, PNG, WebP or BMP image"),
    ("gif", b"GIF89a" + b"\0" * 100, "image/gif", "", 415, "not a JPEG, PNG, WebP or BMP"),
    ("empty", b"", "image/jpeg", "", 400, "the image is empty"),
    ("truncated jpeg", image_bytes(60, 90, ".jpg")[:600], "image/jpeg", "", 400,
     "truncated or corrupt JPEG"),
    ("truncated png", image_bytes(60, 90, ".png")[:-20], "image/png", "", 400,
     "truncated or corrupt PNG"),
    ("pixels over the limit", image_bytes(301, 300, ".png"), "image/png", "", 413,
     "the image has 300 x 301 = 90300 pixels, over this server's limit of 90000"),
    ("body over the limit", b"\x89PNG" + b"\0" * (2 ** 20), "image/png", "", 413,
     "the body is over this server's limit of 1 MB"),
    ("form without the field", multipart({"picture": ("a.png", b"x")})[0],
     multipart({})[1], "", 400, "the multipart form has no file field 'image'"),
    ("form field not a file", multipart({"image": (None, b"x")})[0], multipart({})[1], "",
     400, "the multipart form has no file field 'image'"),
    ("form without boundary", b"--x\r\n", "multipart/form-data", "", 400,
     "malformed multipart form"),
    ("threshold out of range", b"", "image/png", "?score_threshold=1.5", 400,
     "score_threshold must be a number in [0.0, 1.0], got '1.5'"),
    ("count not a number", b"", "image/png", "?max_detections=ten", 400,
     "max_detections must be an integer in [1, 1000], got 'ten'"),
]


@pytest.mark.parametrize("name, body, content_type, query, status, error", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_input_gets_its_status_and_a_one_line_error(server, name, body, content_type,
                                                         query, status, error):
    url, service = server
    answer = post_image(url, body, content_type, query)
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["error"] and "\n" not in answer.json()["error"]
    assert error in answer.json()["error"]
    assert service.worker.places_taken == 0  # its place in the queue was given back
    assert post_image(url, image_bytes(20, 30)).status == 200  # and the next one is served


def test_a_chunked_body_is_refused_413_once_over_the_limit_before_it_ends(server):
    url, _ = server
    answer = too_large_chunked(url)
    assert answer.startswith("HTTP/1.1 413")
    assert "the body is over this server's limit of 1 MB" in answer
    assert post_image(url, image_bytes(20, 30)).status == 200


def test_wrong_methods_and_paths_get_json_errors(server):
    url, _ = server
    assert request(url, "GET", "/v1/detect").status == 405
    missing = request(url, "GET", "/v2/nothing")
    assert missing.status == 404 and missing.json() == {"error": "Not Found"}


def test_model_health_and_page_routes(server):
    url, _ = server
    model = request(url, "GET", "/v1/model").json()
    assert model["classes"] == [{"label": i, "category_id": c["id"], "name": c["name"]}
                                for i, c in enumerate(CATEGORIES)]
    assert (model["engine"], model["precision"]) == ("onnxruntime", "fp32")
    assert model["defaults"] == {"score_threshold": 0.0, "max_detections": 100}
    assert model["limits"]["max_pixels"] == 90000 and not model["token_required"]
    assert request(url, "GET", "/livez").json() == {"status": "alive"}
    assert request(url, "GET", "/readyz").json() == {"status": "ready"}
    page = request(url, "GET", "/")
    assert page.status == 200 and b'<script src="page.js"' in page.body
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert request(url, "GET", "/page.js").status == 200


def metric_values(url):
    """{(name, labels as a sorted tuple): value} of /metrics."""
    text = request(url, "GET", "/metrics").body.decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_responses_inferences_and_batches(detector):
    with serving(detector, ServeSettings()) as (url, _):
        for _ in range(3):
            assert post_image(url, image_bytes(20, 30)).status == 200
        assert post_image(url, b"nope").status == 415
        values = metric_values(url)
    assert values[("fcos_responses_total", (("route", "/v1/detect"), ("status", "200")))] == 3
    assert values[("fcos_responses_total", (("route", "/v1/detect"), ("status", "415")))] == 1
    assert values[("fcos_request_duration_seconds_count", (("route", "/v1/detect"),
                                                           ("status", "200")))] == 3
    assert values[("fcos_request_duration_seconds_count", (("route", "/v1/detect"),
                                                           ("status", "415")))] == 1
    assert values[("fcos_inferences_total", ())] == 3
    assert values[("fcos_batch_size_count", ())] == 3
    assert values[("fcos_batch_size_bucket", (("le", "1.0"),))] == 3
    assert values[("fcos_engine_duration_seconds_count", ())] == 3
    assert values[("fcos_queue_depth", ())] == 0


def in_threads(calls):
    """Start each call on a thread; a function that joins them and returns their results."""
    results = [None] * len(calls)

    def run(index, call):
        results[index] = call()
    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()

    def join():
        for thread in threads:
            thread.join(60)
        return results
    return join


def test_readyz_is_503_until_the_engine_has_warmed_up(detector):
    gated = GatedEngine(detector)
    with serving(gated, ServeSettings(), wait_ready=False) as (url, _):
        wait_until(lambda: gated.calls == 1, what="the warm-up's first forward")
        assert request(url, "GET", "/readyz").status == 503
        assert request(url, "GET", "/livez").status == 200
        refused = post_image(url, image_bytes(20, 30))
        assert refused.status == 503 and refused.headers["retry-after"] == "1"
        gated.gate.set()
        wait_until(lambda: request(url, "GET", "/readyz").status == 200, what="readiness")
        assert post_image(url, image_bytes(20, 30)).status == 200


def hold_engine(gated, url, first_calls):
    """Send one request and wait until the engine is busy with it (the gate closed)."""
    gated.gate.clear()
    join = in_threads([lambda: post_image(url, image_bytes(20, 30, seed=9))])
    wait_until(lambda: gated.calls == first_calls + 1, what="the engine's start on a request")
    return join


def warmed_gated_server(detector, settings, delay=0.0):
    gated = GatedEngine(detector, delay)
    gated.gate.set()
    return gated, serving(gated, settings)


def test_a_full_queue_answers_503_with_retry_after_at_once(detector):
    gated, server = warmed_gated_server(detector, ServeSettings(max_queue=2))
    with server as (url, service):
        running = hold_engine(gated, url, gated.calls)
        queued = in_threads([lambda: post_image(url, image_bytes(20, 30))] * 2)
        wait_until(lambda: service.worker.places_taken == 2, what="two queued requests")
        refused = post_image(url, image_bytes(20, 30))  # answered with the gate still closed
        assert refused.status == 503 and int(refused.headers["retry-after"]) >= 1
        assert "the queue is full (2 requests)" in refused.json()["error"]
        gated.gate.set()
        assert [a.status for a in running() + queued()] == [200, 200, 200]


SLOW_FORWARD_SECONDS, SHORT_DEADLINE = 0.3, 2.0


def all_at_once(url, count):
    """The statuses of ``count`` requests sent at once."""
    return [answer.status for answer in in_threads(
        [lambda: post_image(url, image_bytes(20, 30))] * count)()]


def test_the_queue_chosen_at_warm_up_is_served_within_the_deadline(detector):
    _, server = warmed_gated_server(detector, ServeSettings(timeout=SHORT_DEADLINE),
                                    SLOW_FORWARD_SECONDS)
    with server as (url, service):
        capacity = service.worker.capacity
        assert request(url, "GET", "/v1/model").json()["limits"]["max_queue"] == capacity
        # 0.75 x 2 s holds 4 forwards of over 0.3 s: the one running, the capacity - 1 ahead
        # of the last request admitted and its own
        assert 1 <= capacity <= 3
        statuses = all_at_once(url, capacity + 4)
    assert statuses.count(200) >= capacity and set(statuses) <= {200, 503}


def test_a_queue_given_larger_is_kept_and_its_last_requests_pass_the_deadline(detector):
    _, server = warmed_gated_server(detector, ServeSettings(timeout=SHORT_DEADLINE,
                                                            max_queue=10), SLOW_FORWARD_SECONDS)
    with server as (url, service):
        assert request(url, "GET", "/v1/model").json()["limits"]["max_queue"] == 10
        statuses = all_at_once(url, 10)  # 10 x 0.3 s of forwards, 2 s to answer them
    assert 503 not in statuses and 200 in statuses and 504 in statuses


def test_a_client_gone_before_its_turn_has_its_work_dropped(detector):
    gated, server = warmed_gated_server(detector, ServeSettings())
    with server as (url, service):
        calls = gated.calls
        running = hold_engine(gated, url, calls)
        host, port = url.split("//")[1].split(":")
        body = image_bytes(20, 30)
        with socket.create_connection((host, int(port))) as leaving:
            leaving.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                            b"Content-Length: %d\r\n\r\n" % len(body) + body)
            wait_until(lambda: service.worker.places_taken == 1, what="the queued request")
        wait_until(lambda: service.worker.places_taken == 0, what="the dropped request")
        gated.gate.set()
        assert running()[0].status == 200
        assert post_image(url, image_bytes(20, 30)).status == 200
        values = metric_values(url)
    assert gated.calls == calls + 2  # the request that stayed and the one after it
    assert values[("fcos_dropped_jobs_total", (("reason", "client_gone"),))] == 1


def test_a_request_past_its_deadline_is_504_and_the_server_goes_on(detector):
    gated, server = warmed_gated_server(detector, ServeSettings(timeout=1.0))
    with server as (url, service):
        running = hold_engine(gated, url, gated.calls)
        late = post_image(url, image_bytes(20, 30))
        assert late.status == 504 and "deadline of 1 s" in late.json()["error"]
        assert running()[0].status == 504
        assert service.worker.places_taken == 0
        gated.gate.set()
        assert post_image(url, image_bytes(20, 30)).status == 200


def test_queued_images_of_one_padded_size_run_as_one_batch_with_the_same_detections(detector):
    gated, server = warmed_gated_server(detector, ServeSettings(max_batch=4))
    images = [image_bytes(60, 90, seed=s) for s in range(3)] + [image_bytes(90, 60, seed=3)]
    with server as (url, service):
        running = hold_engine(gated, url, gated.calls)
        queued = in_threads([lambda data=data: post_image(url, data) for data in images])
        wait_until(lambda: service.worker.places_taken == 4, what="four queued requests")
        gated.gate.set()
        answers = [answer.json() for answer in queued()]
        running()
    assert [answer["batch_size"] for answer in answers] == [3, 3, 3, 1]
    for data, answer in zip(images, answers):
        assert_same_detections(rows_of(answer), expected_rows(detector, data), BOX_TOLERANCE,
                               SCORE_TOLERANCE)


def test_with_a_token_v1_needs_the_bearer_header(detector):
    with serving(detector, ServeSettings(token="s3cret")) as (url, _):
        data = image_bytes(20, 30)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}):
            refused = post_image(url, data, headers=headers)
            assert refused.status == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer TOKEN" in refused.json()["error"]
        assert request(url, "GET", "/v1/model").status == 401
        allowed = {"Authorization": "Bearer s3cret"}
        assert post_image(url, data, headers=allowed).status == 200
        assert request(url, "GET", "/v1/model", headers=allowed).json()["token_required"]
        for path in ("/livez", "/readyz", "/metrics", "/"):
            assert request(url, "GET", path).status == 200


def cors_headers(url):
    preflight = request(url, "OPTIONS", "/v1/detect", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
    simple = request(url, "GET", "/v1/model", headers={"Origin": "http://app.example"})
    return (preflight.headers.get("access-control-allow-origin"),
            simple.headers.get("access-control-allow-origin"))


def test_no_cors_unless_origins_are_given(detector):
    with serving(detector, ServeSettings()) as (url, _):
        assert cors_headers(url) == (None, None)
    with serving(detector, ServeSettings(cors_origins=("http://app.example",))) as (url, _):
        assert cors_headers(url) == ("http://app.example", "http://app.example")


def test_only_loopback_listens_without_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert not is_loopback("myhost")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "s3cret")
    with pytest.raises(ConfigError, match="lets other machines reach the server"):
        check_exposure("0.0.0.0", None)
