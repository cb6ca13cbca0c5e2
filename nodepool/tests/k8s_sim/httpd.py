"""The HTTP side: TLS or plain HTTP on 127.0.0.1, bearer tokens, latency,
injected request failures, and watch streams.

A stdlib ``ThreadingHTTPServer`` serves each connection in its own thread
(HTTP/1.1 keep-alive, as the client's urllib3 pool expects).  Every request
is authenticated (401 ``Status`` without a valid bearer token), logged,
optionally delayed, and then handled by :class:`~.api.Api` under the state
lock.  Watches stream newline-delimited JSON events with chunked transfer
encoding until ``timeoutSeconds`` pass or the server stops.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import ssl
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nodepool.tests.k8s_sim.api import Api, Request, Response, WatchPlan
from nodepool.tests.k8s_sim.errors import ApiError, internal_error
from nodepool.tests.k8s_sim.state import ClusterState, Obj, WatchEvent

log = logging.getLogger("nodepool.tests.k8s_sim")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without this the body
    # waits for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        body = self._read_body()
        req = Request(self.command, path, parse_qs(split.query, keep_blank_values=True),
                      {k.lower(): v for k, v in self.headers.items()}, body)
        state = self.server.state
        with state.lock:
            state.requests_log.append((self.command, path))
            latency = state.latency
            injected = None
            for failure in state.request_failures:
                if failure[0] > 0 and (failure[2] is None or path.startswith(failure[2])):
                    failure[0] -= 1
                    injected = failure[1]
                    break
            state.request_failures = [f for f in state.request_failures if f[0] > 0]
        if latency:
            time.sleep(latency)
        try:
            self._authenticate(req)
            if injected is not None:
                raise ApiError(injected, "injected failure from the simulated cluster")
            with state.lock:
                result = self.server.api.handle(req)
        except ApiError as e:
            result = Response(e.code, e.status_body(), list(e.headers.items()))
        except Exception:
            log.exception("Simulated cluster failed on %s %s", self.command, self.path)
            result = Response(500, internal_error(traceback.format_exc(limit=3)).status_body())
        if isinstance(result, WatchPlan):
            self._stream(result)
        else:
            self._send(result)

    def _authenticate(self, req: Request) -> None:
        auth = req.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        with self.server.state.lock:
            ok = scheme.lower() == "bearer" and self.server.state.token_valid(token.strip())
        if not ok:
            raise ApiError(401, "Unauthorized")

    def _send(self, response: Response) -> None:
        body = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in response.headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # -- watch -----------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, plan: WatchPlan) -> None:
        state = self.server.state
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        deadline = time.monotonic() + plan.timeout
        try:
            with state.lock:
                first, cursor = self._watch_start(plan)
            for event in first:
                self._chunk(json.dumps(event).encode() + b"\n")
            while cursor is not None:
                with state.lock:
                    state.tick()
                    events, cursor = self._events_after(plan, cursor)
                    if not events:
                        now = time.monotonic()
                        if state.stopping or now >= deadline:
                            break
                        due = state.next_due()
                        wake = deadline if due is None else min(deadline, max(due, now))
                        state.changed.wait(max(0.0, wake - now))
                        continue
                for event in events:
                    self._chunk(json.dumps(event).encode() + b"\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _watch_start(self, plan: WatchPlan) -> tuple[list[Obj], int | None]:
        state = self.server.state
        state.tick()
        if plan.since is None:
            api = self.server.api
            added = []
            for stored in state.items(plan.rtype.storage_key, plan.namespace):
                obj = api.view(plan.rtype, stored)
                if plan.labels(obj["metadata"].get("labels") or {}) and plan.fields(obj):
                    added.append({"type": "ADDED", "object": obj})
            return added, state.rv
        oldest = state.events[0].rv if state.events else state.rv + 1
        if plan.since + 1 < oldest:
            status = ApiError(410, f"too old resource version: {plan.since} ({oldest - 1})",
                              reason="Expired").status_body()
            return [{"type": "ERROR", "object": status}], None
        return [], plan.since

    def _events_after(self, plan: WatchPlan, cursor: int) -> tuple[list[Obj], int]:
        state = self.server.state
        if not state.events or state.events[-1].rv <= cursor:
            return [], cursor
        start = max(0, cursor - state.events[0].rv + 1)
        out = []
        for event in itertools.islice(state.events, start, None):
            cursor = event.rv
            translated = self._translate(plan, event)
            if translated is not None:
                out.append(translated)
        return out, cursor

    def _translate(self, plan: WatchPlan, event: WatchEvent) -> Obj | None:
        """One stored change as the watcher sees it: objects entering or
        leaving the selector are ADDED or DELETED, as in the watch cache."""
        rtype = plan.rtype
        if event.resource != rtype.storage_key:
            return None
        if plan.namespace is not None and event.namespace != plan.namespace:
            return None
        api = self.server.api

        def matches(stored: Obj | None) -> tuple[bool, Obj | None]:
            if stored is None:
                return False, None
            obj = api.view(rtype, stored)
            return plan.labels(obj["metadata"].get("labels") or {}) and plan.fields(obj), obj

        now, obj = matches(event.obj)
        before, _ = matches(event.prev)
        if event.type == "DELETED":
            kind = "DELETED" if before else None
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:
            kind = "DELETED"
        else:
            kind = None
        return {"type": kind, "object": obj} if kind else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, state: ClusterState, tls: tuple[str, str] | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.api = Api(state)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self._tls is not None:
            # The handshake happens in the connection's own thread (on first read).
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client refusing our certificate or hanging up mid-request is
        # the client's business; keep it out of the test output.
        log.debug("Connection from %s failed: %s", client_address,
                  traceback.format_exc(limit=2))

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HttpFrontEnd:
    """Owns the listening socket and the thread that accepts on it."""

    def __init__(self, state: ClusterState, tls: tuple[str, str] | None) -> None:
        self._server = _Server(state, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"SimulatedKubernetes-{self._server.server_address[1]}", daemon=True)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        state = self._server.state
        with state.lock:
            state.stopping = True
            state.changed.notify_all()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
