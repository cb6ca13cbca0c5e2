"""The builder's small web server: ``/metrics`` and ``/health``.

Upstream's builder has no web API; this one is off unless the
configuration has a ``builder-webapp`` section.  ``/metrics`` serves the
process's metrics in Prometheus' text format (OpenMetrics when the
scraper asks for it); ``/health`` answers 200 while the builder's
ZooKeeper session is up and 503 otherwise, for liveness probes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from nodepool import stats as statsmod

log = logging.getLogger("nodepool.builder.WebApp")

TEXT = "text/plain; charset=UTF-8"


class BuilderWebApp:
    """``start()`` binds and serves on a thread, ``stop()`` shuts it down;
    with ``port=0`` the chosen port is in ``.port`` after ``start()``.

    ``connected`` says whether the ZooKeeper session is up.
    """

    def __init__(self, connected: Callable[[], bool], listen_address: str = "0.0.0.0",
                 port: int = 8006) -> None:
        self.connected = connected
        self.listen_address = listen_address
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        app = self

        class Handler(_Handler):
            webapp = app

        self._server = ThreadingHTTPServer((self.listen_address, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="BuilderWebApp", daemon=True)
        self._thread.start()
        log.info("Builder web server (/metrics, /health) listening on %s:%s",
                 self.listen_address, self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    webapp: BuilderWebApp
    server_version = "nodepool-builder"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        try:
            if path == "/metrics":
                body, content_type = statsmod.get_stats().prometheus.render(
                    self.headers.get("Accept"))
                self._send(200, body, content_type, send_body)
            elif path == "/health":
                if self.webapp.connected():
                    self._send(200, b"OK", TEXT, send_body)
                else:
                    self._send(503, b"Service Unavailable: not connected to ZooKeeper",
                               TEXT, send_body)
            else:
                self._send(404, b"Not Found: the builder serves /metrics and /health",
                           TEXT, send_body)
        except Exception:
            log.exception("Error answering %s", self.path)
            self._send(500, b"Internal Server Error", TEXT, send_body)

    def _send(self, code: int, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if send_body:
            self.wfile.write(body)
