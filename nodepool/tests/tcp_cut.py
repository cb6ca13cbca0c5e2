"""A TCP relay on loopback that can cut a connection at a chosen write.

It stands between a client and the real ZooKeeper server.  Armed with
:meth:`CuttingRelay.cut_after_next`, it forwards the client's next write
of at least ``min_bytes`` (a request, not a ping) to the server and then
drops the connection without passing on anything more from the server:
the server acts on the request and the client never sees its reply.  That
is the one fault a client cannot tell from "not sent", and the one that
makes a retried write land twice.  The bytes are relayed as they are
(TLS included); new connections are relayed as before.
"""

from __future__ import annotations

import socket
import threading


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.cut = False

    def close(self) -> None:
        for sock in (self.client, self.server):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class CuttingRelay:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._min_bytes: int | None = None
        self._links: list[_Link] = []
        # Set once an armed cut has happened.
        self.cut_done = threading.Event()
        self._running = True
        threading.Thread(target=self._accept, name="tcp-cut-accept", daemon=True).start()

    def cut_after_next(self, min_bytes: int) -> None:
        """Cut the connection right after relaying the client's next write
        of at least ``min_bytes``."""
        with self._lock:
            self.cut_done.clear()
            self._min_bytes = min_bytes

    def close(self) -> None:
        self._running = False
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._from_client, args=(link,), daemon=True).start()
            threading.Thread(target=self._from_server, args=(link,), daemon=True).start()

    def _from_client(self, link: _Link) -> None:
        try:
            while True:
                data = link.client.recv(65536)
                if not data:
                    break
                with self._lock:
                    cut = self._min_bytes is not None and len(data) >= self._min_bytes
                    if cut:
                        self._min_bytes = None
                        # Nothing more goes back to the client from now on.
                        link.cut = True
                link.server.sendall(data)
                if cut:
                    self.cut_done.set()
                    link.close()
                    return
        except OSError:
            pass
        link.close()

    def _from_server(self, link: _Link) -> None:
        try:
            while True:
                data = link.server.recv(65536)
                if not data or link.cut:
                    break
                link.client.sendall(data)
        except OSError:
            pass
        link.close()
