"""Load benchmark of tools/serve.py over loopback (a benchmark, not a test: its figures are in
docs/benchmarks.md, "Serving").

    .venv/bin/python benchmarks/serve_load.py -i ../shared/data/cat.jpg \
        -f official/vision/detection/configs/fcos_res18_synthetic_demo.py

Starts tools/serve.py (random weights unless -w is given; its queue's capacity chosen at
warm-up unless --max-queue is given, and read from GET /v1/model) on a free loopback port, then:
1. the engine alone, in this process: the same detector (the same engine, which "auto" chose
   and remembered) on the same image, after the server has warmed up and while it idles. The
   engine's latency is its whole prediction of the image (resize, network, NMS:
   Predictor.predict_images, what tools/benchmark.py times as its total), which is what the
   server wraps; the server's own work is HTTP, reading and decoding the upload, and JSON. The
   network alone is timed beside it. Then --requests / 2 pairs, in turn: one prediction in
   this process by the engine as the server runs it (onnxruntime's threads not spinning after
   a run, which would take the cores from the other side), one POST of the image to the idle
   server (one client): the server's added time at concurrency 1 is the median of the pairs'
   differences, so a drift of the machine's speed between phases (5-10% over minutes here) is
   not counted as the server's. "The engine's best" is the faster of the two p50s;
2. POST /v1/detect of that image at each concurrency of --levels, each client on its own
   keep-alive connection, --requests per level at most and --seconds per level at most:
   latency p50/p90/p99, throughput, status counts, the server's RSS;
3. over the queue limit: 2 x the capacity clients, each retrying at once, from one selectors
   loop over raw sockets: how fast 503 comes, from each request's send to the first byte of
   its answer by the kernel's receive timestamp (so the client's own delays do not count), and
   by the server's histogram of its 503s;
4. --mixed requests of images of mixed sizes and formats: the server's RSS after them against
   its RSS after warm-up;
5. --fuzz malformed requests (random bytes, truncated files, bombs, wrong types, broken forms):
   each must be answered 4xx, with /readyz 200 after each.
Every phase is bounded in requests and time; the server is stopped (SIGTERM) at the end. The
targets of issue 33 are printed with each figure.
"""
import argparse
import http.client
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

import cv2
import megengine as mge
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from official.vision.detection.deploy.detector import build_detector, engine_of
from official.vision.detection.engine.checkpoint import resolve_weights
from official.vision.detection.predictor import Predictor, as_engine, process_inputs
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.weights import build_model

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"
TARGET_ADDED_FRACTION, TARGET_ADDED_MS = 0.05, 30.0
TARGET_THROUGHPUT_FRACTION, TARGET_503_MS, TARGET_RSS_FRACTION = 0.95, 50.0, 0.10
ENGINE_RUNS = 20
# Linux's number for SO_TIMESTAMPNS (the socket module does not name it): each read returns the
# time its data reached the socket (SCM_TIMESTAMPNS, a struct timespec)
SO_TIMESTAMPNS = 35
TIMESPEC = struct.Struct("qq")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", default=DEFAULT_CONFIG)
    parser.add_argument("-w", "--weights", help="a weight file or training output folder; "
                        "default: random weights (timing only)")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("-i", "--image", required=True, help="the image of phases 1-3")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=200, help="per level, at most")
    parser.add_argument("--seconds", type=float, default=60, help="per level, at most")
    parser.add_argument("--max-queue", type=int, help="the server's queue capacity "
                        "(default: the server's own choice at warm-up)")
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--overload-requests", type=int, default=400)
    parser.add_argument("--mixed", type=int, default=1000)
    parser.add_argument("--mixed-concurrency", type=int, default=4)
    parser.add_argument("--fuzz", type=int, default=500)
    parser.add_argument("--json", help="write every figure to this file too")
    return parser.parse_args()


class Server:
    """tools/serve.py in a child process, its log in a temporary file."""

    def __init__(self, args, weights):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        command = [sys.executable, os.path.join(PROJECT_ROOT, "tools", "serve.py"), "-f",
                   args.file, "-w", weights, "--engine", args.engine, "--precision",
                   args.precision, "--port", "0", "--max-batch", str(args.max_batch)]
        if args.max_queue is not None:
            command += ["--max-queue", str(args.max_queue)]
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                        stderr=self.log, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("serving on "):
            self.process.wait(60)
            sys.exit("tools/serve.py did not start; its log: " + self.log.name)
        self.url = line.split()[2]
        self.host, self.port = self.url.split("//")[1].split(":")
        self.port = int(self.port)
        deadline = time.monotonic() + 900
        while self.get("/readyz")[0] != 200:
            if time.monotonic() > deadline or self.process.poll() is not None:
                sys.exit("tools/serve.py did not get ready; its log: " + self.log.name)
            time.sleep(0.2)
        self.capacity = json.loads(self.get("/v1/model")[1])["limits"]["max_queue"]

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=600)

    def get(self, path):
        try:
            connection = self.connection()
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        except OSError:
            return None, b""

    def rss_mb(self):
        with open("/proc/{}/status".format(self.process.pid)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)


def post(connection, body, content_type, path="/v1/detect"):
    """(status, seconds, answer) of one POST on a kept-alive connection."""
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    data = response.read()
    return response.status, time.perf_counter() - started, data


def drive(server, bodies, concurrency, max_requests, max_seconds):
    """Send ``bodies`` ((body, content type), cycled) from ``concurrency`` clients until
    ``max_requests`` are answered or ``max_seconds`` pass: [(status, seconds, answer)] and
    the wall time."""
    results, lock, taken = [], threading.Lock(), [0]
    deadline = time.monotonic() + max_seconds

    def client():
        connection = server.connection()
        while time.monotonic() < deadline:
            with lock:
                if taken[0] >= max_requests:
                    return
                index = taken[0]
                taken[0] += 1
            body, content_type = bodies[index % len(bodies)]
            try:
                result = post(connection, body, content_type)
            except (OSError, http.client.HTTPException) as error:
                result = ("error: " + type(error).__name__, 0.0, b"")
                connection.close()
                connection = server.connection()
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - started


def percentiles_ms(seconds):
    if not seconds:
        return {"p50": None, "p90": None, "p99": None}
    values = np.percentile(np.array(seconds) * 1000, [50, 90, 99])
    return {"p50": round(values[0], 1), "p90": round(values[1], 1), "p99": round(values[2], 1)}


def status_counts(results):
    counts = {}
    for status, _, _ in results:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return dict(sorted(counts.items()))


def engine_alone(args, weights, image, server, body, content_type):
    """The engine's latency on ``image``, in this process: its whole prediction (resize,
    network, NMS), and the network alone beside it; then predictions and POSTs of ``body``
    to ``server`` in turn (see the module's text)."""
    detector = build_detector(load_config_module(args.file), weights, args.engine,
                              precision=args.precision)
    engine = as_engine(detector)
    cfg = engine.cfg
    data, im_info = process_inputs(image, cfg.test_image_short_size, cfg.test_image_max_size)
    predictor = Predictor(engine)
    for _ in range(3):
        predictor.predict_images([image])
    network, prediction = [], []
    for _ in range(ENGINE_RUNS):
        started = time.perf_counter()
        engine.inference(data, im_info)
        network.append(time.perf_counter() - started)
        started = time.perf_counter()
        predictor.predict_images([image])
        prediction.append(time.perf_counter() - started)
    return {"engine": engine_of(detector), "input": list(data.shape[2:]),
            "prediction_ms": percentiles_ms(prediction),
            "network_alone_ms": percentiles_ms(network),
            "paired": paired(Predictor(as_engine(build_detector(
                load_config_module(args.file), weights, engine_of(detector),
                precision=args.precision, spin=False))), image, server, body, content_type,
                max(1, args.requests // 2))}


def paired(predictor, image, server, body, content_type, pairs):
    """Medians of ``pairs`` predictions and POSTs taken in turn, and of their differences."""
    connection = server.connection()
    predictions, requests = [], []
    for _ in range(pairs):
        started = time.perf_counter()
        predictor.predict_images([image])
        predictions.append(time.perf_counter() - started)
        status, seconds, _ = post(connection, body, content_type)
        if status != 200:
            sys.exit("the idle server answered {} to the image".format(status))
        requests.append(seconds)
    connection.close()
    return {"pairs": pairs, "prediction_ms_p50": round(1000 * np.median(predictions), 1),
            "request_ms_p50": round(1000 * np.median(requests), 1),
            "added_ms_p50": round(1000 * np.median(np.subtract(requests, predictions)), 1)}


def load_levels(server, args, body, content_type):
    levels = []
    for concurrency in args.levels:
        results, wall = drive(server, [(body, content_type)], concurrency,
                              max(args.requests, concurrency), args.seconds)
        ok = [seconds for status, seconds, _ in results if status == 200]
        network_ms = [json.loads(answer)["timings_ms"]["engine"] for status, _, answer
                      in results if status == 200]  # the server's "engine": its forwards
        levels.append({"concurrency": concurrency, "requests": len(results),
                       "latency_ms": percentiles_ms(ok),
                       "throughput_per_s": round(len(ok) / wall, 2),
                       "network_ms_in_server_p50": round(float(np.median(network_ms)), 1)
                       if network_ms else None,
                       "statuses": status_counts(results), "rss_mb": round(server.rss_mb())})
        print(json.dumps(levels[-1]), flush=True)
    return levels


def refusal_counts(server):
    """{upper bound in seconds: cumulative count} of the 503 answers of /v1/detect, from
    /metrics (the server's own clock, from arrival to response)."""
    text = server.get("/metrics")[1].decode()
    return {float(sample.labels["le"]): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "fcos_request_duration_seconds_bucket"
            and sample.labels["route"] == "/v1/detect" and sample.labels["status"] == "503"}


def histogram_summary(before, after):
    """The 503s of a phase by the server's histogram (``after`` less ``before``): their count,
    the share within the target and the bucket bounds holding their p50, p99 and max."""
    counts = {bound: count - before.get(bound, 0) for bound, count in sorted(after.items())}
    total = counts.get(float("inf"), 0)

    def bound_of(share):
        bound = next((b for b, count in counts.items() if count >= share * total), None)
        return None if not total or bound is None else bound * 1000

    return {"count": int(total), "within_50_ms": round(counts.get(TARGET_503_MS / 1000, 0)
                                                  / max(total, 1), 4),
            "p50_at_most_ms": bound_of(0.5), "p99_at_most_ms": bound_of(0.99),
            "max_at_most_ms": bound_of(1.0),
            "buckets": {str(bound): count for bound, count in counts.items()}}


class RawExchange:
    """One keep-alive connection of the overload client, sending ``request`` whole and reading
    each answer to its end. ``sent_ns`` is taken just before the request's first byte is
    written; the answer's first byte is read alone, with the time the kernel received it."""

    def __init__(self, server, selector):
        self.sock = socket.create_connection((server.host, server.port))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)
        self.selector = selector
        self.selector.register(self.sock, selectors.EVENT_READ, self)

    def begin(self, request):
        self.out, self.answer, self.outcome = memoryview(request), b"", None
        self.first_byte_ns = self.first_read_ns = None
        self.sent_ns = time.time_ns()
        self.write()

    def step(self, events):
        """Write or read as ``events`` allow: (status, keep-alive) once the request is sent
        and its answer is whole (the answer may come first: a 503 is sent at arrival), else
        None. A connection error is a status of its own, and the connection is not kept."""
        try:
            if events & selectors.EVENT_WRITE:
                self.write()
            if events & selectors.EVENT_READ and self.outcome is None:
                self.outcome = self.read()
        except OSError as error:  # ConnectionError included
            return "error: " + type(error).__name__, False
        return None if self.out else self.outcome

    def write(self):
        """Write what the socket takes; wait for it to take the rest."""
        if self.out:
            self.out = self.out[self.sock.send(self.out):]
        self.selector.modify(self.sock, selectors.EVENT_READ | (
            selectors.EVENT_WRITE if self.out else 0), self)

    def read(self):
        """Read what has come: (status, keep-alive) once the answer is whole, else None.
        ConnectionError when the server closed the connection before."""
        if self.first_byte_ns is None:
            data, ancillary, _, _ = self.sock.recvmsg(1, socket.CMSG_SPACE(TIMESPEC.size))
            self.first_read_ns = time.time_ns()
            stamps = [TIMESPEC.unpack(raw[:TIMESPEC.size]) for level, kind, raw in ancillary
                      if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
            self.first_byte_ns = (stamps[0][0] * 10 ** 9 + stamps[0][1] if stamps
                                  else self.first_read_ns)
        else:
            data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.answer += data
        head, separator, body = self.answer.partition(b"\r\n\r\n")
        if not separator:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        if len(body) < int(headers.get("content-length", 0)):
            return None
        return int(lines[0].split()[1]), headers.get("connection") != "close"

    def result(self, status):
        """(status, seconds to the first byte by the kernel's clock, as this loop read it)."""
        return (status, (self.first_byte_ns - self.sent_ns) / 1e9,
                (self.first_read_ns - self.sent_ns) / 1e9)

    def close(self):
        self.selector.unregister(self.sock)
        self.sock.close()


def raw_drive(server, body, content_type, concurrency, max_requests, max_seconds):
    """POST ``body`` from ``concurrency`` connections of one selectors loop, each sending its
    next request as soon as its answer is whole, until ``max_requests`` are answered or
    ``max_seconds`` pass: [RawExchange.result]."""
    request = ("POST /v1/detect HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {}\r\n"
               "Content-Length: {}\r\n\r\n".format(server.host, server.port, content_type,
                                                    len(body))).encode() + body
    selector, results = selectors.DefaultSelector(), []
    deadline = time.monotonic() + max_seconds
    begun = min(concurrency, max_requests)
    for _ in range(begun):
        RawExchange(server, selector).begin(request)
    while selector.get_map() and time.monotonic() < deadline:
        for key, events in selector.select(timeout=1):
            exchange = key.data
            outcome = exchange.step(events)
            if outcome is None:
                continue
            status, keep_alive = outcome
            results.append(exchange.result(status) if isinstance(status, int)
                           else (status, None, None))
            if not keep_alive or begun == max_requests:
                exchange.close()
            if begun < max_requests:
                (exchange if keep_alive else RawExchange(server, selector)).begin(request)
                begun += 1
    for key in list(selector.get_map().values()):  # the unanswered, past max_seconds
        key.data.close()
    return results


def overload(server, args, body, content_type):
    """Over the queue limit: 2 x the capacity clients. The 503s' times from send to the first
    byte of the answer (by the kernel's receive time, and as the loop read it), and by the
    server's histogram."""
    concurrency = 2 * server.capacity
    before = refusal_counts(server)
    results = raw_drive(server, body, content_type, concurrency, args.overload_requests,
                        args.seconds)
    refused = [result for result in results if result[0] == 503]
    first_byte = [seconds for _, seconds, _ in refused]
    return {"concurrency": concurrency, "requests": len(results),
            "statuses": status_counts(results), "503_first_byte_ms": percentiles_ms(first_byte),
            "503_first_byte_max_ms": round(max(first_byte) * 1000, 1) if refused else None,
            "503_as_read_ms": percentiles_ms([seconds for _, _, seconds in refused]),
            "503_server": histogram_summary(before, refusal_counts(server))}


def mixed_images(count, seed=0):
    """``count`` distinct images of mixed sizes (short sides 32-2000, aspect 1:3 to 3:1) and
    formats, (body, content type) each: gradients with a block of colour, which compress as
    photographs do (noise would make 2000 x 6000 PNGs larger than the body limit)."""
    rng = np.random.RandomState(seed)
    images = []
    for _ in range(count):
        short = int(rng.choice([32, 64, 100, 200, 480, 720, 1080, 1500, 2000]))
        long_side = int(short * rng.uniform(1, 3))
        height, width = (short, long_side) if rng.rand() < 0.5 else (long_side, short)
        y, x = np.mgrid[0:height, 0:width]
        image = np.stack([x * 255 // width, y * 255 // height,
                          (x + y) * 127 // (height + width)], axis=-1).astype(np.uint8)
        image[height // 4:height // 2, width // 4:width // 2] = rng.randint(0, 255, 3)
        ext = [".jpg", ".png"][rng.randint(2)]
        images.append((cv2.imencode(ext, image)[1].tobytes(),
                       "image/jpeg" if ext == ".jpg" else "image/png"))
    return images


def memory_under_mixed_sizes(server, args, warm_rss):
    bodies = mixed_images(min(args.mixed, 60))
    results, wall = drive(server, bodies, args.mixed_concurrency, args.mixed, 3600)
    rss = server.rss_mb()
    return {"requests": len(results), "statuses": status_counts(results),
            "seconds": round(wall, 1), "rss_after_warmup_mb": round(warm_rss),
            "rss_after_mb": round(rss), "growth": round(rss / warm_rss - 1, 4)}


def png_with_size(width, height, data=b"\0" * 256):
    def chunk(kind, content):
        return struct.pack(">I", len(content)) + kind + content + struct.pack(
            ">I", zlib.crc32(kind + content) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


def malformed_requests(image_body, count, seed=0):
    """``count`` (kind, body, content type) that a server must refuse with 4xx."""
    rng = np.random.RandomState(seed)
    magic = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b"BM"]
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(image_body, np.uint8), 1))[1].tobytes()
    jpeg = image_body
    kinds = {
        "random bytes": lambda: (rng.bytes(rng.randint(1, 5000)), "image/jpeg"),
        "an image's magic, then random bytes": lambda: (
            magic[rng.randint(4)] + rng.bytes(rng.randint(0, 5000)), "image/png"),
        "truncated JPEG": lambda: (jpeg[:rng.randint(1, len(jpeg) - 2)], "image/jpeg"),
        "truncated PNG": lambda: (png[:rng.randint(8, len(png) - 2)], "image/png"),
        "PNG bomb": lambda: (png_with_size(int(rng.randint(20000, 2 ** 31 - 1)),
                                           int(rng.randint(20000, 2 ** 31 - 1))), "image/png"),
        "wrong type": lambda: ([b"GIF89a" + rng.bytes(100), b"%PDF-1.4\n" + rng.bytes(100),
                                b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                b"II*\0" + rng.bytes(100)][rng.randint(4)], "image/png"),
        "empty body": lambda: (b"", "image/jpeg"),
        "form without its field": lambda: (
            b"--b\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nx\r\n--b--\r\n",
            "multipart/form-data; boundary=b"),
        "broken form": lambda: (rng.bytes(200), "multipart/form-data; boundary=b"),
    }
    names = list(kinds)
    return [(name, *kinds[name]()) for name in (names[i % len(names)] for i in range(count))]


def fuzz(server, args, image_body):
    answered, not_4xx, not_ready = {}, [], 0
    connection = server.connection()
    for kind, body, content_type in malformed_requests(image_body, args.fuzz):
        try:
            status, _, answer = post(connection, body, content_type)
        except (OSError, http.client.HTTPException) as error:
            status, answer = "error: " + type(error).__name__, b""
            connection.close()
            connection = server.connection()
        answered[str(status)] = answered.get(str(status), 0) + 1
        if not (isinstance(status, int) and 400 <= status < 500):
            not_4xx.append((kind, status, answer[:200].decode("latin-1")))
        if server.get("/readyz")[0] != 200:
            not_ready += 1
    return {"requests": args.fuzz, "statuses": dict(sorted(answered.items())),
            "not_4xx": not_4xx[:10], "not_4xx_count": len(not_4xx),
            "readyz_not_200": not_ready}


def cpu_description():
    fields = dict(line.split(":", 1) for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines() if ":" in line)
    return "{}, cpu family {}, model {}".format(*(fields.get(key, "?").strip() for key in (
        "Model name", "CPU family", "Model")))


def verdict(met):
    return "met" if met else "NOT met"


def targets(report):
    alone, pairs = report["engine_alone"], report["engine_alone"]["paired"]
    engine, network = alone["prediction_ms"]["p50"], alone["network_alone_ms"]["p50"]
    added, paired_engine = pairs["added_ms_p50"], pairs["prediction_ms_p50"]
    lines = ["server adds {:.1f} ms ({:+.1%}) to the engine's p50 {:.1f} ms (its whole "
             "prediction: resize, network, NMS; median of {} predictions and requests taken in "
             "turn at concurrency 1; the network alone {:.1f} ms): target <= 5% or <= 30 ms: "
             "{}".format(added, added / paired_engine, paired_engine, pairs["pairs"], network,
                         verdict(added <= max(TARGET_ADDED_FRACTION * paired_engine,
                                              TARGET_ADDED_MS)))]
    eight = [level for level in report["levels"] if level["concurrency"] == 8]
    if eight:
        best = min(engine, paired_engine)  # the faster of its two measurements
        ratio = eight[0]["throughput_per_s"] * best / 1000
        lines.append("throughput at concurrency 8: {:.2f}/s = {:.2f}x the engine's best {:.2f}/s "
                     "(1 / its whole prediction; 1 / the network alone: {:.2f}/s): target >= "
                     "0.95x: {}".format(eight[0]["throughput_per_s"], ratio, 1000 / best,
                                        1000 / network,
                                        verdict(ratio >= TARGET_THROUGHPUT_FRACTION)))
    capacity = report["max_queue"]
    below = [level for level in report["levels"] if level["concurrency"] <= capacity]
    errors = sum(count for level in below for status, count in level["statuses"].items()
                 if not status.startswith(("2", "4")))
    lines.append("5xx or errors at concurrency <= the queue's capacity {}: {}: target 0: "
                 "{}".format(capacity, errors, verdict(errors == 0)))
    above = [level["statuses"] for level in report["levels"] if level["concurrency"] > capacity]
    if above:
        lines.append("at concurrency over it: {} refused (503), {} other 5xx or errors".format(
            sum(statuses.get("503", 0) for statuses in above),
            sum(count for statuses in above for status, count in statuses.items()
                if status != "503" and not status.startswith(("2", "4")))))
    lines.append(overload_target(report["overload"]))
    mixed = report["mixed"]
    lines.append("RSS after {} mixed-size requests {} MB vs {} MB after warm-up ({:+.1%}): "
                 "target within 10%: {}".format(
                     mixed["requests"], mixed["rss_after_mb"], mixed["rss_after_warmup_mb"],
                     mixed["growth"], verdict(abs(mixed["growth"]) <= TARGET_RSS_FRACTION)))
    fuzzed = report["fuzz"]
    lines.append("{} malformed requests: {} not 4xx, /readyz not 200 {} times: target 0 and 0: "
                 "{}".format(fuzzed["requests"], fuzzed["not_4xx_count"],
                             fuzzed["readyz_not_200"], verdict(fuzzed["not_4xx_count"] == 0
                                                               and fuzzed["readyz_not_200"] == 0)))
    return lines


def overload_target(over):
    client, server = over["503_first_byte_ms"], over["503_server"]
    at_client = over["503_first_byte_max_ms"] is not None and \
        over["503_first_byte_max_ms"] <= TARGET_503_MS
    at_server = server["count"] > 0 and server["within_50_ms"] == 1
    return ("over the limit ({} clients): {} of {} answered 503, from send to first byte p50 "
            "{} ms, p99 {} ms, max {} ms (p99 {} ms as the client's loop read them); by the "
            "server's clock {:.1%} within 50 ms, p99 <= {} ms: target <= 50 ms: {}".format(
                over["concurrency"], over["statuses"].get("503", 0), over["requests"],
                client["p50"], client["p99"],
                over["503_first_byte_max_ms"], over["503_as_read_ms"]["p99"],
                server["within_50_ms"], server["p99_at_most_ms"],
                "met" if at_client and at_server else "met by the server's clock only"
                if at_server else "NOT met"))


def random_weights(config_file, folder):
    path = os.path.join(folder, "random_weights.pkl")
    mge.save(build_model(load_config_module(config_file), None).state_dict(), path)
    return path


def main():
    args = parse_args()
    image_body = open(args.image, "rb").read()
    image = cv2.imread(args.image, cv2.IMREAD_COLOR)
    content_type = "image/png" if args.image.lower().endswith(".png") else "image/jpeg"
    with tempfile.TemporaryDirectory() as folder:
        weights = resolve_weights(args.weights) if args.weights else random_weights(args.file,
                                                                                 folder)
        server = Server(args, weights)
        report = {"cpu": cpu_description(), "config": args.file, "image": args.image,
                  "image_size": list(image.shape[:2]), "max_queue": server.capacity,
                  "max_queue_given": args.max_queue is not None,
                  "max_batch": args.max_batch, "rss_after_warmup_mb": round(server.rss_mb())}
        print(json.dumps(report), flush=True)
        try:
            report["engine_alone"] = engine_alone(args, weights, image, server, image_body,
                                                  content_type)
            print(json.dumps(report["engine_alone"]), flush=True)
            report["levels"] = load_levels(server, args, image_body, content_type)
            report["overload"] = overload(server, args, image_body, content_type)
            print(json.dumps(report["overload"]), flush=True)
            report["mixed"] = memory_under_mixed_sizes(server, args,
                                                       report["rss_after_warmup_mb"])
            print(json.dumps(report["mixed"]), flush=True)
            report["fuzz"] = fuzz(server, args, image_body)
            print(json.dumps(report["fuzz"]), flush=True)
        finally:
            report["exit_status_after_sigterm"] = server.stop()
    report["targets"] = targets(report)
    print("\n".join(["", report["cpu"]] + report["targets"]
                    + ["server exit status after SIGTERM: {}".format(
                        report["exit_status_after_sigterm"])]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
