"""The launcher's read-only web API.

Serves the same listings as the CLI (``/node-list``, ``/request-list``,
``/label-list``, ``/image-list``, ``/dib-image-list``, ``/image-status``)
as text tables, or as JSON when the client prefers ``application/json``
or the path ends in ``.json``; plus ``/ready`` (200 once the launcher has
finished its first pass, for orchestrators' readiness probes) and
``/health`` (200 while the ZooKeeper session is up, for liveness probes);
``/metrics``, the process's metrics in Prometheus' text format (see
:mod:`nodepool.prometheus`); and, when the launcher hands one in, its HTML
status page on ``/`` (:mod:`nodepool.web.status_page`).

Each answer is kept for one second, so a dashboard polling every few
hundred milliseconds costs one ZooKeeper read per second, and carries
matching ``Cache-Control``/``Expires`` headers and
``Access-Control-Allow-Origin: *`` for browser dashboards.  When the
launcher passes its node and request caches, listings are served from
memory instead of ZooKeeper.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from nodepool import stats as statsmod
from nodepool import status
from nodepool.http_server import AppRequestHandler, ThreadedHttpApp
from nodepool.web.status_page import CONTENT_TYPE as PAGE_CONTENT_TYPE
from nodepool.web.status_page import HEADERS as PAGE_HEADERS
from nodepool.zk import ZooKeeper, listing

log = logging.getLogger("nodepool.WebApp")

CACHE_SECONDS = 1.0

# Offers in upstream's order of preference when the client does not mind.
_OFFERS = ("text/html", "text/plain", "application/json")


def wants_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers JSON over text.

    Same choice as upstream: the highest quality among ``text/html``,
    ``text/plain`` and ``application/json``, ties going to text.
    """
    if not accept:
        return False
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        if not media:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranges.append((media, q))

    def quality(offer: str) -> float:
        kind = offer.split("/")[0]
        best, specificity = 0.0, -1
        for media, q in ranges:
            if media == offer:
                rank = 2
            elif media == f"{kind}/*":
                rank = 1
            elif media == "*/*":
                rank = 0
            else:
                continue
            if rank > specificity:
                best, specificity = q, rank
        return best

    scores = [(quality(offer), -i, offer) for i, offer in enumerate(_OFFERS)]
    q, _, offer = max(scores)
    return q > 0 and offer == "application/json"


class WebApp(ThreadedHttpApp):
    """The HTTP server; ``start()`` binds and serves on a thread,
    ``stop()`` shuts it down.  With ``port=0`` the chosen port is in
    ``.port`` after ``start()``.

    ``config_getter`` returns the launcher's current configuration (image
    pauses set there show in the image listings); ``ready_callable``
    says whether the launcher has finished its first pass.
    """

    def __init__(self, zk: ZooKeeper, config_getter: Callable[[], Any] | None,
                 ready_callable: Callable[[], bool], listen_address: str = "0.0.0.0",
                 port: int = 8005, node_cache: Any = None,
                 request_cache: Any = None, cache_seconds: float = CACHE_SECONDS,
                 status_page: Any = None) -> None:
        super().__init__(_Handler, "WebApp", listen_address, port)
        self.zk = zk
        self.config_getter = config_getter
        self.ready_callable = ready_callable
        self.node_cache = node_cache
        self.request_cache = request_cache
        self.cache_seconds = cache_seconds
        # Anything with ``render() -> str`` (a StatusPage); None: no ``/``.
        self.status_page = status_page
        self._cache: dict[tuple, tuple[float, bytes]] = {}
        self._cache_lock = threading.Lock()

    def _listening(self) -> None:
        log.info("Web API listening on %s:%s", self.listen_address, self.port)

    # Content -------------------------------------------------------------

    def _config_paused(self) -> list[str]:
        config = self.config_getter() if self.config_getter else None
        diskimages = getattr(config, "diskimages", None) or {}
        return [name for name, image in diskimages.items() if getattr(image, "pause", False)]

    def table(self, endpoint: str, params: dict[str, list[str]]) -> status.Table | None:
        """The listing behind ``endpoint``, or None if there is none."""
        zk = self.zk
        if endpoint == "/node-list":
            node_id: str | None = (params.get("node_id") or [""])[0] or None
            if self.node_cache is not None:
                records: Any = self.node_cache.items()
            elif node_id:
                records = listing.read_nodes(zk, node_ids=[node_id])
            else:
                records = listing.iter_nodes(zk)
            return status.node_list(records, node_id=node_id)
        if endpoint == "/request-list":
            if self.request_cache is not None:
                return status.request_list(self.request_cache.items())
            return status.request_list(listing.read_requests(zk))
        if endpoint == "/label-list":
            return status.label_list(listing.read_components(zk, "pool"))
        if endpoint == "/image-list":
            return status.image_list(listing.read_images(zk))
        if endpoint == "/dib-image-list":
            return status.dib_image_list(listing.read_images(zk, with_uploads=False),
                                         self._config_paused())
        if endpoint == "/image-status":
            return status.image_status(listing.read_images(zk, with_uploads=False),
                                       self._config_paused())
        return None

    def render_status_page(self) -> tuple[float, bytes]:
        """(time made, body) of the status page, from the one-second
        cache like the listings (it is rendered from memory, but a
        roomful of browsers should not render it once each)."""
        key = ("/", "", False)
        now = time.time()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit and now < hit[0] + self.cache_seconds:
                return hit
        entry = (now, self.status_page.render().encode("utf8"))
        with self._cache_lock:
            self._cache[key] = entry
        return entry

    def render(self, endpoint: str, query: str, as_json: bool) -> tuple[float, bytes] | None:
        """(time made, body) for a listing, from the one-second cache."""
        key = (endpoint, query, as_json)
        now = time.time()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit and now < hit[0] + self.cache_seconds:
                return hit
        params = parse_qs(query)
        table = self.table(endpoint, params)
        if table is None:
            return None
        if as_json:
            body = status.render_json(table)
        else:
            fields_param = (params.get("fields") or [""])[0]
            fields = [f for f in fields_param.split(",") if f] or None
            body = status.render_text(table, fields, now=now)
        entry = (now, body.encode("utf8"))
        with self._cache_lock:
            self._cache = {k: v for k, v in self._cache.items()
                           if now < v[0] + self.cache_seconds}
            self._cache[key] = entry
        return entry


class _Handler(AppRequestHandler):
    webapp: WebApp
    access_log = log
    server_version = "nodepool"

    # Upstream answers any method the same way.
    do_POST = AppRequestHandler.do_GET

    def _answer(self, send_body: bool) -> None:
        app = self.webapp
        parts = urlsplit(self.path)
        endpoint = parts.path
        as_json = wants_json(self.headers.get("Accept"))
        if endpoint.endswith(".json"):
            endpoint, as_json = endpoint[:-len(".json")], True
        try:
            if parts.path == "/metrics":
                body, content_type = statsmod.get_stats().prometheus.render(
                    self.headers.get("Accept"))
                self._send(200, body, content_type, None, send_body)
                return
            if endpoint == "/ready":
                if app.ready_callable():
                    self._send(200, b"OK", "text/plain; charset=UTF-8", time.time(), send_body)
                else:
                    self._send(503, b"Service Unavailable: the launcher is starting",
                               "text/plain; charset=UTF-8", None, send_body)
                return
            if endpoint == "/health":
                if app.zk.zk_client.connected:
                    self._send(200, b"OK", "text/plain; charset=UTF-8", None, send_body)
                else:
                    self._send(503, b"Service Unavailable: not connected to ZooKeeper",
                               "text/plain; charset=UTF-8", None, send_body)
                return
            headers: dict[str, str] = {}
            if endpoint == "/" and app.status_page is not None:
                result: tuple[float, bytes] | None = app.render_status_page()
                content_type, headers = PAGE_CONTENT_TYPE, PAGE_HEADERS
            else:
                result = app.render(endpoint, parts.query, as_json)
                content_type = "application/json" if as_json else "text/plain; charset=UTF-8"
        except Exception:
            log.exception("Error answering %s", self.path)
            self._send(500, b"Internal Server Error", "text/plain; charset=UTF-8", None,
                       send_body)
            return
        if result is None:
            self._send(404, b"Not Found", "text/plain; charset=UTF-8", None, send_body)
            return
        made, body = result
        since = self.headers.get("If-Modified-Since")
        if since and _not_modified(since, made):
            self._send(304, b"", None, made, False)
            return
        self._send(200, body, content_type, made, send_body, headers)

    def _send(self, code: int, body: bytes, content_type: str | None,
              last_modified: float | None, send_body: bool,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        if last_modified is not None:
            seconds = self.webapp.cache_seconds
            self.send_header("Cache-Control", f"max-age={seconds:g}, public")
            self.send_header("Last-Modified",
                             email.utils.formatdate(last_modified, usegmt=True))
            self.send_header("Expires",
                             email.utils.formatdate(last_modified + seconds, usegmt=True))
        else:
            self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)


def _not_modified(header: str, made: float) -> bool:
    try:
        since = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError):
        return False
    # HTTP dates have whole seconds.
    return int(made) <= since
