"""The explorer's HTTP server: the standard library's ``ThreadingHTTPServer``, nothing more.

Routes: ``GET /`` and ``GET /static/<name>`` serve the packaged page (only the
files listed in :data:`ASSETS`); ``GET /api/limits`` gives the caps;
``POST /api/conv``, ``POST /api/receptive`` and ``POST /api/causal`` (the 1-D
causal view, ``/static/causal.html``) answer the JSON API of
:mod:`dilconv.explore.api`. Every answer carries a Content-Security-Policy that
allows only this server's own scripts and styles, and ``nosniff``. A request
whose ``Host`` header does not name this server is refused (a DNS-rebinding
page cannot talk to it).

A connection that sends nothing for :data:`REQUEST_TIMEOUT` seconds is closed, so is
one whose request is not read and answered within :data:`REQUEST_DEADLINE` seconds
(a client trickling a byte at a time), and at most :data:`MAX_CONNECTIONS` are
served at once: one more is answered 503 and
closed at once, so slow or idle clients cannot hold every thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from dilconv._spec import PADDING_MODES, PADDING_STRINGS
from dilconv.explore import api
from dilconv.explore._causal import causal_view
from dilconv.explore._schema import MAX_BODY_BYTES, ApiError, parse_body

#: The packaged files the server will send, and their types. Nothing else is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "causal.html": "text/html; charset=utf-8",
    "causal.js": "text/javascript; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
ROUTES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "/api/conv": api.conv_view,
    "/api/receptive": api.receptive_view,
    "/api/causal": causal_view,
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Seconds a connection may stay silent (reading a request, or between two) before
#: it is closed.
REQUEST_TIMEOUT = 10.0
#: Seconds one request may take from its first byte awaited to its answer sent.
REQUEST_DEADLINE = 60.0
#: Connections served at once; one more is refused with 503.
MAX_CONNECTIONS = 32
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
    b"Connection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"
)
#: ``name:port`` or ``[ipv6]:port``, nothing else (no user info, no path).
_HOST_HEADER = re.compile(
    r"(?:(?P<name>[A-Za-z0-9.-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\]):(?P<port>\d{1,5})"
)


def asset(name: str) -> bytes:
    """The bytes of one packaged asset (``name`` must be a key of :data:`ASSETS`)."""
    return resources.files("dilconv.explore").joinpath("static").joinpath(name).read_bytes()


def limits() -> dict[str, Any]:
    """What the page needs to build its controls: caps and choices."""
    return {
        "limits": api.LIMITS,
        "padding": list(PADDING_STRINGS),
        "padding_modes": list(PADDING_MODES),
        "fills": list(api.FILLS),
        "defaults": {k: v for k, v in vars(api.Params()).items()},
    }


class Handler(BaseHTTPRequestHandler):
    """One request: check the Host, route, answer JSON or a packaged asset."""

    server: ExplorerServer
    server_version = "dilconv-explore"
    sys_version = ""

    def handle_one_request(self) -> None:
        """One request, its connection shut down if it is still running at the deadline."""
        watchdog = threading.Timer(self.server.request_deadline, self._expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            super().handle_one_request()
        finally:
            watchdog.cancel()

    def _expire(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, allow_nan=False).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, err: ApiError) -> None:
        self._json(err.status, err.payload())

    def _host_ok(self) -> bool:
        host = self.headers.get("Host")
        if not self.server.host_allowed(host):
            self._error(ApiError(421, f"Host {host!r} does not name this server"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, asset("index.html"), ASSETS["index.html"])
        elif path.startswith("/static/") and path[len("/static/") :] in ASSETS:
            name = path[len("/static/") :]
            self._send(200, asset(name), ASSETS[name])
        elif path == "/api/limits":
            self._json(200, limits())
        else:
            self._error(ApiError(404, f"no such page: {path[:80]!r}"))

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        route = ROUTES.get(path)
        try:
            if route is None:
                raise ApiError(404, f"no such API: {path[:80]!r}; POST to {', '.join(ROUTES)}")
            if self.headers.get_content_type() != "application/json":
                raise ApiError(415, "send the request as Content-Type: application/json")
            length_text = self.headers.get("Content-Length")
            if length_text is None or not length_text.isdigit():
                raise ApiError(411, "the request needs a Content-Length header")
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the unread body must not be parsed as a request
                raise ApiError(
                    413, f"the request body has {length} bytes; at most {MAX_BODY_BYTES}"
                )
            self._json(200, route(parse_body(self.rfile.read(length))))
        except ApiError as err:
            self._error(err)
        except Exception as err:  # a bug: say so in JSON, keep the traceback on the console
            traceback.print_exc(file=sys.stderr)
            self._json(500, {"error": {"message": f"internal error ({type(err).__name__})",
                                       "field": None, "nearest": None}})  # fmt: skip

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._error(ApiError(405, f"method {self.command} is not allowed"))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server that knows the Host names it answers to."""

    daemon_threads = True

    def __init__(
        self,
        host: str,
        port: int,
        *,
        quiet: bool = False,
        timeout: float = REQUEST_TIMEOUT,
        deadline: float = REQUEST_DEADLINE,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, got {max_connections!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        super().__init__((host, port), Handler)
        self.quiet = quiet
        self.request_timeout = float(timeout)
        self.request_deadline = float(deadline)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)
        self.host = host
        self.port = int(self.server_address[1])
        self.names = {host, *LOOPBACK} if host in LOOPBACK else {host}
        self.url = f"http://{host}:{self.port}/"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection on a thread if a slot is free, else answer 503 and close."""
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            request.settimeout(self.request_timeout)
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request: socket.socket) -> None:
        body = json.dumps(
            {"error": {"message": f"the server is busy: {self.max_connections} connections "
                       "are open; try again", "field": None, "nearest": None}}
        ).encode()  # fmt: skip
        try:
            request.settimeout(1.0)
            request.sendall(_BUSY % (len(body), body))
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def host_allowed(self, header: str | None) -> bool:
        """Whether a ``Host`` header names this server (the DNS-rebinding defence).

        Its port must be ours and its name one we listen as (on loopback: 127.0.0.1,
        localhost, ::1). A server listening beyond this machine also answers to any IP
        address literal, which no DNS record can rebind.
        """
        match = _HOST_HEADER.fullmatch(header or "")
        if match is None or int(match["port"]) != self.port:
            return False
        name = (match["name"] or match["ipv6"]).lower()
        if name in self.names:
            return True
        if self.host in LOOPBACK:
            return False
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    quiet: bool = False,
    timeout: float = REQUEST_TIMEOUT,
    deadline: float = REQUEST_DEADLINE,
    max_connections: int = MAX_CONNECTIONS,
) -> ExplorerServer:
    """A server bound to ``host:port`` (0: a free port); its ``url`` says where.

    ``timeout``: seconds a connection may stay silent; ``deadline``: seconds one
    request may take; ``max_connections``: served at once (one more is answered 503).

    Examples
    --------
    >>> server = make_server(quiet=True)
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.server_close()
    """
    return ExplorerServer(
        host, port, quiet=quiet, timeout=timeout, deadline=deadline, max_connections=max_connections
    )


def serve(host: str = "127.0.0.1", port: int = 8765, *, quiet: bool = False) -> None:
    """Serve until interrupted, printing the URL; opens no browser."""
    server = make_server(host, port, quiet=quiet)
    print(f"dilconv explore: serving on {server.url} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dilconv explore: stopped", flush=True)
    finally:
        server.server_close()
