"""The builder's small web server: ``/metrics`` and ``/health``.

Upstream's builder has no web API; this one is off unless the
configuration has a ``builder-webapp`` section.  ``/metrics`` serves the
process's metrics in Prometheus' text format (OpenMetrics when the
scraper asks for it); ``/health`` answers 200 while the builder's
ZooKeeper session is up and 503 otherwise, for liveness probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from nodepool import stats as statsmod
from nodepool.http_server import AppRequestHandler, ThreadedHttpApp

log = logging.getLogger("nodepool.builder.WebApp")

TEXT = "text/plain; charset=UTF-8"


class BuilderWebApp(ThreadedHttpApp):
    """``start()`` binds and serves on a thread, ``stop()`` shuts it down;
    with ``port=0`` the chosen port is in ``.port`` after ``start()``.

    ``connected`` says whether the ZooKeeper session is up.
    """

    def __init__(self, connected: Callable[[], bool], listen_address: str = "0.0.0.0",
                 port: int = 8006) -> None:
        super().__init__(_Handler, "BuilderWebApp", listen_address, port)
        self.connected = connected

    def _listening(self) -> None:
        log.info("Builder web server (/metrics, /health) listening on %s:%s",
                 self.listen_address, self.port)


class _Handler(AppRequestHandler):
    webapp: BuilderWebApp
    access_log = log
    server_version = "nodepool-builder"

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
