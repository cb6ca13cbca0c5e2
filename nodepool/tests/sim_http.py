"""Loopback HTTP plumbing shared by the simulated clouds (``openstack_sim``, ``k8s_sim``).

Each simulator is a real REST server on an ephemeral port of 127.0.0.1 that
the code under test reaches through its ordinary client library.  What
differs between them is the API; what is the same lives here: a threaded
HTTP/1.1 server that remembers its client connections so that stopping it
really cuts keep-alive clients off, optional TLS, the thread that serves
it, and the start/stop/context-manager lifecycle of the simulator itself.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

log = logging.getLogger("nodepool.tests.sim_http")


def take_injected_failure(failures: list[list[Any]], path: str) -> int | None:
    """The status to answer ``path`` with, if a ``fail_next_requests`` entry applies.

    ``failures`` holds ``[remaining, status, path_prefix]`` entries (a None
    prefix matches every path); the first that matches is used up by one,
    and spent entries are dropped.  Call it under the simulator's lock.
    """
    injected = None
    for failure in failures:
        if failure[0] > 0 and (failure[2] is None or path.startswith(failure[2])):
            failure[0] -= 1
            injected = failure[1]
            break
    failures[:] = [f for f in failures if f[0] > 0]
    return injected


class LoopbackHandler(BaseHTTPRequestHandler):
    """Keep-alive request handler that registers its connection with the server.

    Subclasses set ``sim_log`` (their simulator's logger, which gets the
    access log at debug level) and implement the ``do_*`` methods.
    """

    # HTTP/1.1 keeps connections alive, as a real API endpoint does (and as
    # the clients' connection pools expect); every response must carry a
    # Content-Length or be chunked.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body
    # waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True
    sim_log: logging.Logger
    server: LoopbackServer

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
            # The client (or stop()) closed the connection under us.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        self.sim_log.debug("%s " + format, self.address_string(), *args)


class LoopbackServer(ThreadingHTTPServer):
    """A threaded server on an ephemeral port of 127.0.0.1, plain or TLS.

    ``tls`` is a (certificate file, key file) pair; the files are read here
    and not needed afterwards.
    """

    daemon_threads = True
    # Keep-alive handler threads may idle in readline(); stop() closes their
    # sockets instead of joining them.
    block_on_close = False

    def __init__(self, handler: type[LoopbackHandler],
                 tls: tuple[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        # Set when the simulator stops, so handlers can cut waits short.
        self.stopping = threading.Event()
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
        # the client's business; keep it out of the test output.  Anything
        # else is a fault of the stand-in and is printed.
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("Connection from %s failed: %s", client_address, error)
            return
        super().handle_error(request, client_address)

    def begin_stop(self) -> None:
        """Tell in-flight handlers the server is stopping (before shutdown).

        Subclasses that wait on something else (a condition variable) extend
        this to wake those waits too.
        """
        self.stopping.set()

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HttpFrontEnd:
    """Owns a :class:`LoopbackServer` and the daemon thread that accepts on it."""

    def __init__(self, server: LoopbackServer, thread_prefix: str) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{thread_prefix}-{server.server_address[1]}",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, end streams and close client connections."""
        self._server.begin_stop()
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)


class LoopbackSimulator:
    """Lifecycle of a simulator served by an :class:`HttpFrontEnd`.

    Usable as a context manager, which starts and stops the server; the
    simulator's state outlives :meth:`stop` so tests can inspect it.
    Subclasses say what they are (``sim_kind``, for error messages) and
    build their front end in :meth:`_front_end`.
    """

    sim_kind = "simulator"
    _http: HttpFrontEnd | None = None

    def _front_end(self) -> HttpFrontEnd:
        raise NotImplementedError

    def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1 and serve in daemon threads."""
        if self._http is not None:
            raise RuntimeError(f"{self.sim_kind} already started")
        self._http = self._front_end()
        self._http.start()

    def stop(self) -> None:
        """Stop serving and close client connections; state stays inspectable."""
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:40123``."""
        if self._http is None:
            raise RuntimeError(f"{self.sim_kind} is not started")
        return self._http.base_url
