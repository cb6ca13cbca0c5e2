"""The HTTP side of the simulator: parsing, routing, latency and injected faults.

A stdlib ``ThreadingHTTPServer`` bound to 127.0.0.1 serves every service on
one port; the first path segment (``/identity``, ``/compute``, ``/image``,
``/network``, ``/volume``) selects the service, as in a devstack-style
deployment behind one proxy.  Each service module contributes a
:class:`Service` with its route table and its own error body format, because
openstacksdk extracts error messages differently per service.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nodepool.tests.openstack_sim.state import ApiError, CloudState
from nodepool.tests.sim_http import (
    HttpFrontEnd,
    LoopbackHandler,
    LoopbackServer,
    take_injected_failure,
)

log = logging.getLogger("nodepool.tests.openstack_sim")

CHUNK = 64 * 1024


class Request:
    """One HTTP request as handlers see it.

    The body is read lazily so that an image upload can be hashed while it
    streams in instead of being held in memory.
    """

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Message,
        rfile: Any,
        base_url: str,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.base_url = base_url
        self._rfile = rfile
        self._body: bytes | None = None
        self._consumed = False

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def iter_body(self) -> Iterator[bytes]:
        """Yield the body in chunks, decoding chunked transfer encoding."""
        if self._consumed:
            if self._body:
                yield self._body
            return
        self._consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self._rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = size
                while remaining:
                    data = self._rfile.read(min(remaining, CHUNK))
                    if not data:
                        return
                    remaining -= len(data)
                    yield data
                self._rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                data = self._rfile.read(min(remaining, CHUNK))
                if not data:
                    return
                remaining -= len(data)
                yield data

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = b"".join(self.iter_body())
        return self._body

    def json(self) -> Any:
        if not self.body:
            raise ApiError(400, "The request body is empty; JSON was expected.")
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"Malformed JSON in request body: {e}") from e

    def drain(self) -> None:
        for _ in self.iter_body():
            pass


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return Response(status, json.dumps(obj).encode(), hdrs)


Handler = Callable[..., Response]


@dataclass
class Route:
    """``pattern`` is matched against the path below the service prefix."""

    method: str
    pattern: str
    handler: Handler
    auth: bool = True
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.regex = re.compile(self.pattern + r"\Z")


@dataclass
class Service:
    """One OpenStack service mounted under ``/<prefix>`` on the shared port."""

    prefix: str
    routes: list[Route]
    error_body: Callable[[int, str], Response]


def check_token(state: CloudState, req: Request) -> None:
    token = req.headers.get("X-Auth-Token")
    with state.lock:
        if not token or token not in state.tokens:
            raise ApiError(401, "The request you have made requires authentication.")


class _Handler(LoopbackHandler):
    sim_log = log
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        req = Request(
            self.command,
            path,
            parse_qs(split.query, keep_blank_values=True),
            self.headers,
            self.rfile,
            self.server.base_url,
        )
        state = self.server.state
        key = (self.command, path)
        with state.lock:
            state.requests_log.append(key)
            state.in_flight[key] = state.in_flight.get(key, 0) + 1
            state.most_in_flight[key] = max(state.most_in_flight.get(key, 0),
                                            state.in_flight[key])
            latency = state.latency
            injected = take_injected_failure(state.request_failures, path)
        if latency:
            # Cut short when the simulator stops: a test may make the cloud
            # go silent for longer than it lasts itself.
            self.server.stopping.wait(latency)

        service = self.server.find_service(path)
        try:
            if injected is not None:
                raise ApiError(injected, "Injected failure from the simulated cloud.")
            response = self._route(service, req)
        except ApiError as e:
            response = self._error(service, e.status, e.message)
        except Exception:
            log.exception("Simulated cloud failed on %s %s", self.command, self.path)
            response = self._error(service, 500, traceback.format_exc(limit=3))
        try:
            req.drain()
        except (OSError, ValueError):
            self.close_connection = True
        with state.lock:
            state.in_flight[key] -= 1
        self._send(response)

    def _route(self, service: Service | None, req: Request) -> Response:
        if service is None:
            raise ApiError(404, f"No simulated service at {req.path}")
        sub = req.path[len(service.prefix) :].rstrip("/")
        allowed = False
        for route in service.routes:
            match = route.regex.match(sub)
            if not match:
                continue
            if route.method != req.method and not (route.method == "GET" and req.method == "HEAD"):
                allowed = True
                continue
            if route.auth:
                check_token(self.server.state, req)
            return route.handler(self.server.state, req, **match.groupdict())
        if allowed:
            raise ApiError(405, f"Method {req.method} is not allowed on {req.path}")
        log.warning("Simulated cloud has no route for %s %s", req.method, req.path)
        raise ApiError(404, f"The resource could not be found: {req.path}")

    def _error(self, service: Service | None, status: int, message: str) -> Response:
        if service is None:
            return json_response(status, {"error": {"code": status, "message": message}})
        return service.error_body(status, message)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        headers = {"x-openstack-request-id": f"req-{uuid.uuid4()}"}
        headers.update(response.headers)
        for key, value in headers.items():
            self.send_header(key, value)
        body = b"" if self.command == "HEAD" or response.status in (204, 304) else response.body
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


class _Server(LoopbackServer):
    def __init__(self, state: CloudState, services: list[Service]) -> None:
        super().__init__(_Handler)
        self.state = state
        self.services = services

    def find_service(self, path: str) -> Service | None:
        for service in self.services:
            if path == service.prefix or path.startswith(service.prefix + "/"):
                return service
        return None


def front_end(state: CloudState, services: list[Service]) -> HttpFrontEnd:
    """The cloud's HTTP server for ``services`` (not yet serving)."""
    return HttpFrontEnd(_Server(state, services), "SimulatedCloud")
