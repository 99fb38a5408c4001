"""The HTTP application: detections as JSON, the model's description, health, metrics, a page.

    POST /v1/detect   an image (raw body, or the multipart field "image") -> detections
    GET  /v1/model    config, classes, engine, precision, defaults and limits
    GET  /livez       200 while the engine thread lives
    GET  /readyz      503 until the engine has warmed up
    GET  /metrics     Prometheus text format
    GET  /            the page (page/), served from this origin

Every refusal is a JSON object with one line in ``error``. With a token, ``/v1/*`` needs
``Authorization: Bearer TOKEN``, compared in constant time. No CORS header is sent unless
origins are given. docs/serving.md describes the API and its limits.
"""
import asyncio
import contextlib
import dataclasses
import hmac
import math
import os
import time

import anyio
import megengine as mge
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..engine.file_inference import detection_dict
from ..postprocess import detect
from ..predictor import process_inputs
from ..utils.machine import usable_cpus
from .engine_worker import EngineWorker, JobDropped, QueueFull
from .metrics import MetricsMiddleware, ServerMetrics
from .uploads import MEDIA_TYPES, RequestRefused, decode_upload

logger = mge.get_logger(__name__)

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/page.js": ("page.js", "text/javascript; charset=utf-8"),
              "/page.css": ("page.css", "text/css; charset=utf-8")}
# the page loads nothing from elsewhere: its own script and style, and the images it is given
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_DETECTIONS_LIMIT = 1000  # of the max_detections query parameter
CLIENT_CLOSED_REQUEST = 499  # the status counted for a request whose client left (nginx's)


@dataclasses.dataclass
class ServeSettings:
    """Limits and security of a server (tools/serve.py's options)."""
    # requests holding a place: read, decoded or waiting for the engine; None: as many as the
    # engine serves within the timeout, from its time at warm-up (engine_worker.queue_capacity)
    max_queue: int = None
    max_batch: int = 1  # images of one padded size per forward (docs/benchmarks.md, serving)
    max_body_bytes: int = 20 * 2 ** 20
    max_pixels: int = 50_000_000  # width x height of an upload, read from its header
    timeout: float = 30.0  # seconds from a request's arrival to its answer, else 504
    token: str = None  # /v1/* need "Authorization: Bearer <token>" when set
    cors_origins: tuple = ()  # origins allowed to call the API from their pages
    warmup_runs: int = 2


class ClientGone(Exception):
    """The client closed the connection before its answer."""


class DetectionService:
    """The routes' state: the engine worker, the classes, the settings and the metrics."""

    def __init__(self, detector, categories, description, settings):
        self.metrics = ServerMetrics()
        self.settings = settings
        self.worker = EngineWorker(detector, settings.timeout, settings.max_queue,
                                   settings.max_batch, self.metrics, settings.warmup_runs)
        self.cfg = self.worker.cfg
        self.categories = categories
        self.description = dict(description, **self._model_facts())
        self.cpu_limiter = None  # threads decoding and post-processing; made in the loop

    def _model_facts(self):
        cfg, settings = self.cfg, self.settings
        return {
            "classes": [{"label": label, "category_id": c["id"], "name": c["name"]}
                        for label, c in enumerate(self.categories)],
            "input": {"short_size": cfg.test_image_short_size,
                      "max_size": cfg.test_image_max_size},
            "defaults": {"score_threshold": cfg.test_vis_threshold,
                         "max_detections": cfg.test_max_boxes_per_image},
            "limits": {"max_body_bytes": settings.max_body_bytes,
                       "max_pixels": settings.max_pixels, "max_batch": settings.max_batch,
                       "timeout_s": settings.timeout, "max_detections": MAX_DETECTIONS_LIMIT},
            "media_types": sorted(MEDIA_TYPES.values()),
            "token_required": bool(settings.token),
        }

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """The worker's ``run`` is started by the server (server.py) or ``start`` (a file
        engine on a thread of its own); it stops after the HTTP server."""
        self.cpu_limiter = anyio.CapacityLimiter(usable_cpus())
        yield
        await anyio.to_thread.run_sync(self.worker.stop, self.settings.timeout)

    # routes

    async def detect(self, request):
        arrived, started = time.monotonic(), time.perf_counter()
        self.authorize(request)
        self.require_ready()
        score_threshold, max_detections = self.detection_options(request.query_params)
        declared_length(request.headers, self.settings.max_body_bytes)
        loop, answer = asyncio.get_running_loop(), asyncio.get_running_loop().create_future()
        try:
            job = self.worker.admit(arrived + self.settings.timeout,
                                    lambda outcome: loop.call_soon_threadsafe(
                                        _settle, answer, outcome))
        except QueueFull:
            raise RequestRefused(503, "the queue is full ({} requests): retry later".format(
                self.worker.capacity), self.retry_after()) from None
        try:
            return await self._detect(request, job, answer, arrived, started, score_threshold,
                                      max_detections)
        except ClientDisconnect:
            return self._client_gone(job)
        finally:
            self.worker.withdraw(job)

    async def _detect(self, request, job, answer, arrived, started, score_threshold,
                      max_detections):
        timings = {}
        body = await read_image_bytes(request, self.settings.max_body_bytes,
                                      arrived + self.settings.timeout - time.monotonic())
        timings["read"] = _ms_since(started)
        (height, width), data, im_info, timings["decode"], timings["preprocess"] = \
            await anyio.to_thread.run_sync(self.prepare, body, limiter=self.cpu_limiter)
        del body  # the network's input is all a queued request keeps
        self.worker.submit(job, data, im_info)
        waited = time.perf_counter()
        try:
            scores, boxes, engine_seconds, batch_size = await self.wait_for_engine(
                request, answer, arrived + self.settings.timeout)
        except ClientGone:
            return self._client_gone(job)
        timings["engine"] = engine_seconds * 1000
        timings["queue"] = max(_ms_since(waited) - timings["engine"], 0.0)
        post = time.perf_counter()
        rows = await anyio.to_thread.run_sync(
            lambda: detect(scores, boxes, self.cfg.test_cls_threshold, self.cfg.test_nms,
                           max_detections), limiter=self.cpu_limiter)
        rows = rows[rows[:, 4] >= score_threshold]
        timings["postprocess"] = _ms_since(post)
        timings["total"] = _ms_since(started)
        return JSONResponse({
            "image": {"width": width, "height": height},
            "detections": [self.detection_json(row) for row in rows],
            "timings_ms": {key: round(value, 3) for key, value in timings.items()},
            "batch_size": batch_size,
        }, headers=API_HEADERS)

    def prepare(self, body):
        """((height, width), network input, im_info, decode ms, preprocess ms) of an
        upload."""
        started = time.perf_counter()
        image = decode_upload(body, self.settings.max_pixels)
        decoded = time.perf_counter()
        data, im_info = process_inputs(image, self.cfg.test_image_short_size,
                                       self.cfg.test_image_max_size)
        return image.shape[:2], data, im_info, (decoded - started) * 1000, _ms_since(decoded)

    async def wait_for_engine(self, request, answer, deadline):
        """The engine's outcome for this request; ClientGone when the client leaves first,
        RequestRefused(504) past the deadline."""
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            done, _ = await asyncio.wait({answer, gone}, timeout=max(
                deadline - time.monotonic(), 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if answer in done:
            outcome = answer.result()
            if isinstance(outcome, JobDropped) and outcome.reason == "shutdown":
                raise RequestRefused(503, "the server is shutting down", self.retry_after())
            if not isinstance(outcome, JobDropped):
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
        elif gone in done:
            raise ClientGone()
        raise RequestRefused(504, "no answer within the server's deadline of {:g} s: the "
                             "queue is longer than that; retry later".format(
                                 self.settings.timeout), self.retry_after())

    def _client_gone(self, job):
        if self.worker.withdraw(job):
            self.metrics.dropped.labels("client_gone").inc()
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def model(self, request):
        self.authorize(request)
        # the queue's capacity in use: chosen at warm-up unless given (null until then)
        limits = dict(self.description["limits"], max_queue=self.worker.capacity)
        return JSONResponse(dict(self.description, limits=limits), headers=API_HEADERS)

    async def livez(self, request):
        if self.worker.failure:
            return error_response(503, self.worker.failure)
        return JSONResponse({"status": "alive"}, headers=API_HEADERS)

    async def readyz(self, request):
        if self.worker.failure:
            return error_response(503, self.worker.failure)
        if not self.worker.ready.is_set():
            return JSONResponse({"status": "warming up"}, 503, headers=API_HEADERS)
        return JSONResponse({"status": "ready"}, headers=API_HEADERS)

    async def prometheus(self, request):
        body, content_type = self.metrics.exposition()
        return Response(body, headers={"Content-Type": content_type, **API_HEADERS})

    async def page(self, request):
        name, media_type = PAGE_FILES[request.url.path]
        with open(os.path.join(PAGE_DIR, name), "rb") as f:
            return Response(f.read(), media_type=media_type, headers=PAGE_HEADERS)

    # checks

    def authorize(self, request):
        token = self.settings.token
        if not token:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode())):
            raise RequestRefused(401, "this server needs the header 'Authorization: Bearer "
                                 "TOKEN' with its token", {"WWW-Authenticate": "Bearer"})

    def require_ready(self):
        if self.worker.failure:
            raise RequestRefused(503, self.worker.failure)
        if not self.worker.ready.is_set():
            raise RequestRefused(503, "the engine is warming up: retry in a moment",
                                 {"Retry-After": "1"})

    def detection_options(self, query):
        """(score_threshold, max_detections) of the query, the config's by default (those of
        tools/inference.py)."""
        score = _number(query, "score_threshold", float, self.cfg.test_vis_threshold, 0.0, 1.0)
        count = _number(query, "max_detections", int, self.cfg.test_max_boxes_per_image, 1,
                        MAX_DETECTIONS_LIMIT)
        return score, count

    def retry_after(self):
        return {"Retry-After": str(max(1, math.ceil(self.worker.expected_wait())))}

    def detection_json(self, row):
        found = detection_dict(row, self.categories)
        found["category_name"] = found.pop("class")
        return found


def create_app(detector, categories, description, settings):
    """The Starlette application of ``detector`` (any engine), with ``categories``
    (``label_categories``) naming its labels; ``description`` (config, weights, engine,
    precision) is what GET /v1/model adds to the model's facts."""
    service = DetectionService(detector, categories, description, settings)
    routes = [Route("/v1/detect", service.detect, methods=["POST"]),
              Route("/v1/model", service.model, methods=["GET"]),
              Route("/livez", service.livez, methods=["GET"]),
              Route("/readyz", service.readyz, methods=["GET"]),
              Route("/metrics", service.prometheus, methods=["GET"])]
    routes += [Route(path, service.page, methods=["GET"]) for path in PAGE_FILES]
    middleware = [Middleware(MetricsMiddleware, metrics=service.metrics,
                             routes=[route.path for route in routes])]
    if settings.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=service.lifespan,
                    exception_handlers={RequestRefused: _refused, HTTPException: _http_error,
                                        Exception: _internal_error})
    app.state.service = service
    return app


async def read_image_bytes(request, limit, seconds):
    """The uploaded file's bytes: the raw body, or the multipart form's field "image". Reading
    stops at ``limit`` bytes (413) and after ``seconds`` (408)."""
    limited = Request(request.scope, _limited_receive(request.receive, limit))
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
    try:
        with anyio.fail_after(max(seconds, 0)):
            if not multipart:
                return await limited.body()
            return await _form_image(limited)
    except TimeoutError:
        raise RequestRefused(408, "the body did not arrive within the server's deadline") \
            from None


async def _form_image(request):
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as error:  # python-multipart's complaint, as Starlette gives it
        raise RequestRefused(400, "malformed multipart form: {}".format(error.detail)) from None
    try:
        field = form.get("image")
        if field is None or isinstance(field, str):
            raise RequestRefused(400, "the multipart form has no file field 'image'")
        return await field.read()
    finally:
        await form.close()


def declared_length(headers, limit):
    """The body's Content-Length, refused (413) before reading when it is over ``limit``."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise RequestRefused(400, "Content-Length is not a number")
    if int(value) > limit:
        raise RequestRefused(413, _too_large(limit))
    return int(value)


def _too_large(limit):
    return "the body is over this server's limit of {:g} MB (--max-body-mb)".format(
        limit / 2 ** 20)


def _limited_receive(receive, limit):
    """``receive`` that refuses (413) a body growing past ``limit`` bytes, so a body sent
    without Content-Length (chunked) is not read past it either."""
    received = 0

    async def receive_within_limit():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise RequestRefused(413, _too_large(limit))
        return message
    return receive_within_limit


async def _disconnected(receive):
    """Returns when the client has closed the connection (after the body was read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _settle(answer, outcome):
    if not answer.done():
        answer.set_result(outcome)


def _number(query, name, kind, default, low, high):
    text = query.get(name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # NaN fails too
        raise RequestRefused(400, "{} must be {} in [{}, {}], got {!r}".format(
            name, "a number" if kind is float else "an integer", low, high, text))
    return value


def _ms_since(start):
    return (time.perf_counter() - start) * 1000


def error_response(status, message, headers=None):
    return JSONResponse({"error": " ".join(str(message).split())}, status,
                        headers={**API_HEADERS, **(headers or {})})


async def _refused(request, error):
    return error_response(error.status, error, error.headers)


async def _http_error(request, error):
    return error_response(error.status_code, error.detail, error.headers)


async def _internal_error(request, error):
    logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal error ({}): see the server's log".format(
        type(error).__name__))
