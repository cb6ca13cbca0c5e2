"""The threaded HTTP server behind the daemons' small web endpoints.

The launcher's web API (:mod:`nodepool.webapp`) and the builder's
``/metrics``/``/health`` server (:mod:`nodepool.builder.webapp`) differ in
what they answer, not in how they serve: a ``ThreadingHTTPServer`` on a
daemon thread that ``start()`` binds and ``stop()`` shuts down, whose
handlers reach the application object as ``self.webapp``.  That part lives
here once.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class AppRequestHandler(BaseHTTPRequestHandler):
    """Base for a web app's request handler.

    Subclasses set ``access_log`` (the app's logger; requests are logged
    there at debug level) and implement ``_answer``; ``webapp`` is the
    :class:`ThreadedHttpApp` serving them.
    """

    webapp: Any
    access_log: logging.Logger

    def log_message(self, format: str, *args: Any) -> None:
        self.access_log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        raise NotImplementedError


class ThreadedHttpApp:
    """``start()`` binds and serves on a daemon thread, ``stop()`` shuts it
    down; with ``port=0`` the chosen port is in ``.port`` after ``start()``.

    ``handler_class`` answers the requests; ``thread_name`` names the
    serving thread.  Subclasses say where they listen in :meth:`_listening`
    (operators look for that line).
    """

    def __init__(self, handler_class: type[AppRequestHandler], thread_name: str,
                 listen_address: str, port: int) -> None:
        self.handler_class = handler_class
        self.thread_name = thread_name
        self.listen_address = listen_address
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # A handler class per server, so handlers find this app as ``self.webapp``.
        handler = type(self.handler_class.__name__, (self.handler_class,), {"webapp": self})
        self._server = ThreadingHTTPServer((self.listen_address, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        self._listening()

    def _listening(self) -> None:
        """Log where the server listens (called once it serves)."""

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
