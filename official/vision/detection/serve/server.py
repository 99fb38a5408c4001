"""Serving the application with uvicorn: where it may listen, and a graceful stop on SIGTERM.

The socket is bound here, before uvicorn starts, so a port in use or a bad address is one
``error:`` line, and port 0 (any free port) can be told to the caller. uvicorn runs on a thread
of its own and the engine on the main thread (MegEngine's models run there only,
engine_worker.py). On SIGTERM (or Ctrl-C) uvicorn stops accepting connections, lets the
requests in flight finish for up to ``shutdown_timeout`` seconds, cancels what remains, and
then the engine's loop ends.
"""
import ctypes
import ipaddress
import os
import signal
import socket
import threading

import megengine as mge
import uvicorn

from ..errors import ConfigError, DetectionError

logger = mge.get_logger(__name__)

TOKEN_VARIABLE = "FCOS_SERVE_TOKEN"  # the token, when not given by --token
# glibc's malloc raises its mmap threshold (up to 32 MB) each time it frees a large block; past
# that, decoded images and network inputs come from per-thread heaps that keep the memory (the
# server's RSS grew 17% over its first 100 requests of mixed image sizes, docs/benchmarks.md).
# A fixed threshold makes every block of 1 MB or more its own mapping, returned when freed.
MMAP_THRESHOLD_BYTES = 1 << 20
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def return_large_blocks_to_the_system():
    """Fix glibc's mmap threshold at MMAP_THRESHOLD_BYTES; False where the C library is not
    glibc (its malloc is left as it is)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def is_loopback(host):
    """Whether ``host`` (an address or "localhost") is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def server_token(token):
    """The token of --token, else of the environment; None without either."""
    return token or os.environ.get(TOKEN_VARIABLE) or None


def check_exposure(host, token):
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise ConfigError("--host {} lets other machines reach the server: give it a token "
                          "(--token or the {} variable), or keep the default --host "
                          "127.0.0.1".format(host, TOKEN_VARIABLE))


def bind(host, port):
    """A listening TCP socket at host:port (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError("cannot listen on {}:{}: {}".format(host, port, error.strerror or
                                                              error)) from None
    return sock


def url_of(sock):
    host, port = sock.getsockname()[:2]
    return "http://{}:{}".format("[{}]".format(host) if ":" in host else host, port)


def run_server(app, sock, shutdown_timeout=30.0, log_level="info"):
    """Serve ``app`` (``create_app``) on the bound socket until SIGTERM or SIGINT, the engine
    on this thread (the main one); returns after a graceful stop. An engine that fails to warm
    up stops the server: DetectionError."""
    worker = app.state.service.worker
    config = uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=False,
                            server_header=False, timeout_graceful_shutdown=shutdown_timeout)
    server = uvicorn.Server(config)

    def serve_http():
        try:
            server.run(sockets=[sock])
        finally:  # also when uvicorn could not start: the engine's loop must end
            worker.stop()

    def stop(signum, frame):
        server.force_exit = server.should_exit and signum == signal.SIGINT  # a second Ctrl-C
        server.should_exit = True

    # uvicorn handles signals on the main thread only, which here runs the engine
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    http = threading.Thread(target=serve_http, name="http")
    http.start()
    try:
        worker.run()
        server.should_exit = True  # when the engine failed; else uvicorn has stopped already
    finally:
        http.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if worker.failure:
        raise DetectionError(worker.failure)
