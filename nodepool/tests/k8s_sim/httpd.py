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
import time
import traceback
from urllib.parse import parse_qs, unquote, urlsplit

from nodepool.tests.k8s_sim.api import Api, Request, Response, WatchPlan
from nodepool.tests.k8s_sim.errors import ApiError, internal_error
from nodepool.tests.k8s_sim.state import ClusterState, Obj, WatchEvent
from nodepool.tests.sim_http import (
    HttpFrontEnd,
    LoopbackHandler,
    LoopbackServer,
    take_injected_failure,
)

log = logging.getLogger("nodepool.tests.k8s_sim")


class _Handler(LoopbackHandler):
    sim_log = log
    server: _Server

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
            injected = take_injected_failure(state.request_failures, path)
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


class _Server(LoopbackServer):
    def __init__(self, state: ClusterState, tls: tuple[str, str] | None) -> None:
        super().__init__(_Handler, tls)
        self.state = state
        self.api = Api(state)

    def begin_stop(self) -> None:
        super().begin_stop()
        # Open watches wait on the state's condition; wake them to end.
        with self.state.lock:
            self.state.stopping = True
            self.state.changed.notify_all()


def front_end(state: ClusterState, tls: tuple[str, str] | None) -> HttpFrontEnd:
    """The cluster's API server (not yet serving)."""
    return HttpFrontEnd(_Server(state, tls), "SimulatedKubernetes")
