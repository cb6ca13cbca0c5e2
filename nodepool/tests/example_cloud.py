"""The example cloud: the toy REST API the example driver talks to.

A stand-in served over HTTP on loopback, with its own state and a few
fault switches, exactly as a real cloud's stand-in would be (see
``nodepool/driver/example/adapter.py`` for the API).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FLAVORS: list[dict[str, Any]] = [{"name": "small", "cores": 2, "ram": 2048},
                                 {"name": "large", "cores": 8, "ram": 8192}]


@dataclass
class Server:
    id: str
    name: str
    flavor: str
    image: str
    metadata: dict[str, Any]
    ip: str
    active_at: float
    status: str = "BUILDING"
    fail: bool = False

    def view(self, hold: bool) -> dict[str, Any]:
        if self.status == "BUILDING" and not hold and time.monotonic() >= self.active_at:
            self.status = "ERROR" if self.fail else "ACTIVE"
        return {"id": self.id, "name": self.name, "flavor": self.flavor, "image": self.image,
                "metadata": self.metadata, "ip": self.ip, "status": self.status}


@dataclass
class State:
    limits: dict[str, int] = field(default_factory=lambda: {"instances": 20, "cores": 100})
    servers: dict[str, Server] = field(default_factory=dict)
    boot_delay: float = 0.05
    hold_in_build: bool = False
    fail_creates: int = 0
    creates: int = 0


class ExampleCloud:
    """Run with ``with ExampleCloud() as cloud:``; ``cloud.endpoint`` is its URL."""

    def __init__(self) -> None:
        self.state = State()
        self.lock = threading.Lock()
        self._addresses = itertools.count(1)
        cloud = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                status, body = cloud.get(self.path)
                self._reply(status, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, body = cloud.post(self.path, json.loads(self.rfile.read(length)))
                self._reply(status, body)

            def do_DELETE(self) -> None:
                status, body = cloud.delete(self.path)
                self._reply(status, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ExampleCloud:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # The API ---------------------------------------------------------------

    def get(self, path: str) -> tuple[int, Any]:
        with self.lock:
            if path == "/v1/limits":
                return 200, dict(self.state.limits)
            if path == "/v1/flavors":
                return 200, FLAVORS
            if path == "/v1/servers":
                return 200, [s.view(self.state.hold_in_build)
                             for s in self.state.servers.values()]
        return 404, {"error": "not found"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path != "/v1/servers":
            return 404, {"error": "not found"}
        with self.lock:
            state = self.state
            flavor = next((f for f in FLAVORS if f["name"] == body.get("flavor")), None)
            if flavor is None:
                return 400, {"error": f"no flavor {body.get('flavor')!r}"}
            servers = list(state.servers.values())
            cores = sum(next(f["cores"] for f in FLAVORS if f["name"] == s.flavor)
                        for s in servers)
            if (len(servers) + 1 > state.limits["instances"]
                    or cores + flavor["cores"] > state.limits["cores"]):
                return 403, {"error": "quota exceeded"}
            state.creates += 1
            n = next(self._addresses)
            server = Server(
                id=uuid.uuid4().hex, name=body["name"], flavor=flavor["name"],
                image=body.get("image", ""), metadata=dict(body.get("metadata") or {}),
                ip=f"127.210.{n // 256 % 256}.{n % 256}",
                active_at=time.monotonic() + state.boot_delay, fail=state.fail_creates > 0)
            state.fail_creates = max(0, state.fail_creates - 1)
            state.servers[server.id] = server
            return 202, server.view(state.hold_in_build)

    def delete(self, path: str) -> tuple[int, Any]:
        prefix = "/v1/servers/"
        with self.lock:
            gone = self.state.servers.pop(path[len(prefix):], None) \
                if path.startswith(prefix) else None
            if gone is not None:
                return 204, None
        return 404, {"error": "not found"}

    # For tests -------------------------------------------------------------

    def servers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [s.view(self.state.hold_in_build) for s in self.state.servers.values()]

    def add_server(self, name: str, metadata: dict[str, Any] | None = None) -> str:
        """A server nodepool did not create (or a leaked one)."""
        status, body = self.post("/v1/servers", {"name": name, "flavor": "small",
                                                 "metadata": metadata or {}})
        assert status == 202, body
        with self.lock:
            self.state.creates -= 1
        return body["id"]
