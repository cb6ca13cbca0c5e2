"""The ZooKeeper connection shared by a daemon's threads.

Wraps kazoo with what every nodepool process needs: mutual TLS (required,
as upstream), host lists with a chroot, and connection-state listeners so
workers stop acting on locks they may have lost (SUSPENDED: hold writes;
LOST: every lock and ephemeral node is gone) and resume on reconnect.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kazoo.client import KazooState
from kazoo.handlers.threading import KazooTimeoutError, SequentialThreadingHandler
from kazoo.handlers.utils import create_tcp_connection
from kazoo.retry import KazooRetry

from nodepool.zk.exceptions import ZKConnectionError, ZKTLSRequired
from nodepool.zk.watch import WatchingKazooClient

log = logging.getLogger("nodepool.zk.client")

DEFAULT_PORT = 2281
DEFAULT_TIMEOUT = 10.0

# What a listener is told.
CONNECTED = "connected"
SUSPENDED = "suspended"
LOST = "lost"


def build_hosts(servers: Iterable[Mapping[str, Any]]) -> str:
    """Turn ``zookeeper-servers`` entries into kazoo's host string.

    Each entry is ``{host, port, chroot}``; IPv6 literals are bracketed and
    the chroot (if any) is appended once, as kazoo expects it at the end.
    """
    hosts = []
    chroot = None
    for server in servers:
        host = str(server["host"])
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        hosts.append(f"{host}:{server.get('port') or DEFAULT_PORT}")
        if server.get("chroot"):
            chroot = server["chroot"]
    if not hosts:
        raise ZKConnectionError("no zookeeper-servers are configured")
    result = ",".join(hosts)
    if chroot:
        if not chroot.startswith("/"):
            chroot = "/" + chroot
        result += chroot.rstrip("/")
    return result


class PollingHandler(SequentialThreadingHandler):
    """kazoo's threading handler with a cheaper ``select``.

    kazoo's connection thread waits on its socket once per request and
    reply, and its ``select`` builds and tears down an epoll selector each
    time (three system calls and a few objects).  Under load that was a
    tenth of a launcher's CPU; ``poll`` does the same wait with one call.

    It also answers "readable" for a TLS socket that holds decrypted data
    already: TLS reads whole records, and a record carrying several
    ZooKeeper packets leaves the later ones inside the SSL object, where
    no wait on the file descriptor sees them.  kazoo's connection loop
    would then leave a reply unread until the server sends something
    else, up to the next ping seconds later: a request, or the close of
    the session at shutdown, could hang that long.
    """

    def select(self, rlist: list[Any], wlist: list[Any], xlist: list[Any],
               timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        buffered = [obj for obj in rlist if isinstance(obj, ssl.SSLSocket) and obj.pending()]
        if buffered:
            return buffered, [], []
        poller = select.poll()
        wanted: dict[int, int] = {}
        objects: dict[int, list[Any]] = {}
        for objs, mask in ((rlist, select.POLLIN), (wlist, select.POLLOUT)):
            for obj in objs:
                fd = obj if isinstance(obj, int) else obj.fileno()
                wanted[fd] = wanted.get(fd, 0) | mask
                objects.setdefault(fd, []).append(obj)
        for fd, mask in wanted.items():
            poller.register(fd, mask)
        ready = poller.poll(None if timeout is None else max(0.0, timeout) * 1000)
        readable: list[Any] = []
        writable: list[Any] = []
        for fd, events in ready:
            for obj in objects[fd]:
                if obj in rlist and events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    readable.append(obj)
                if obj in wlist and events & (select.POLLOUT | select.POLLHUP | select.POLLERR):
                    writable.append(obj)
        return readable, writable, []

    def create_connection(self, address: tuple[str, int], hostname: str | None = None,
                          timeout: float | None = None, use_ssl: bool = False,
                          ca: str | None = None, certfile: str | None = None,
                          keyfile: str | None = None, keyfile_password: str | None = None,
                          verify_certs: bool = True, check_hostname: bool = False,
                          **kwargs: Any) -> socket.socket:
        """kazoo's connection, but a TLS one trusts the configured CA
        first.

        kazoo also loads the system's CA store for every connection, which
        costs more CPU than the rest of the connection set-up (and most of
        a short ``nodepool list``).  ZooKeeper's certificates are signed
        by the CA of ``zookeeper-tls``; only when the server's certificate
        does not verify against it are the system's CAs added, as kazoo
        (and so upstream) would have trusted them.
        """
        if not use_ssl or not ca or kwargs:
            return create_tcp_connection(
                socket, address, hostname=hostname, timeout=timeout, use_ssl=use_ssl,
                ca=ca, certfile=certfile, keyfile=keyfile,
                keyfile_password=keyfile_password, verify_certs=verify_certs,
                check_hostname=check_hostname, **kwargs)
        settings = (ca, certfile, keyfile, keyfile_password, verify_certs, check_hostname)
        try:
            return _tls_connection(address, hostname, timeout, settings, system_cas=False)
        except ssl.SSLCertVerificationError:
            sock = _tls_connection(address, hostname, timeout, settings, system_cas=True)
            log.warning("ZooKeeper at %s:%s presented a certificate that the CA in "
                        "zookeeper-tls (%s) does not sign; it is trusted through the "
                        "system's CA store.  Set zookeeper-tls ca to the CA that signs "
                        "the servers' certificates", address[0], address[1], ca)
            return sock


def _tls_connection(address: tuple[str, int], hostname: str | None,
                    timeout: float | None, settings: tuple[Any, ...],
                    system_cas: bool) -> ssl.SSLSocket:
    """One TLS connection as kazoo makes it (TLS 1.2 or later, the client
    certificate, no hostname check unless asked), trusting ``ca`` and,
    with ``system_cas``, the system's CA store."""
    ca, certfile, keyfile, password, verify_certs, check_hostname = settings
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if system_cas:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED if verify_certs else ssl.CERT_NONE
    context.load_verify_locations(ca)
    if certfile and keyfile:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile, password=password)
    family = socket.getaddrinfo(address[0], address[1], 0, socket.SOCK_STREAM)[0][0]
    sock = context.wrap_socket(socket.socket(family), server_hostname=hostname)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class ZooKeeperClient:
    """One kazoo session plus state listeners.

    Listeners are called with ``"connected"``, ``"suspended"`` or ``"lost"``
    on a separate thread (never on kazoo's connection thread), in order.
    ``"connected"`` after ``"lost"`` means a new session: ephemeral nodes
    and locks of the old one are gone.
    """

    def __init__(self, hosts: str, tls_cert: str | None = None,
                 tls_key: str | None = None, tls_ca: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, require_tls: bool = True) -> None:
        if require_tls and not (tls_cert and tls_key and tls_ca):
            raise ZKTLSRequired(
                "A TLS ZooKeeper connection is required: set zookeeper-tls "
                "(ca, cert and key) in the configuration")
        self.hosts = hosts
        self.timeout = timeout
        self._tls = dict(certfile=tls_cert, keyfile=tls_key, ca=tls_ca)
        self._use_tls = bool(tls_cert and tls_key and tls_ca)
        self.client: WatchingKazooClient | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._events: list[str] = []
        self._event_cond = threading.Condition()
        self._notifier: threading.Thread | None = None
        self._stopping = False
        self._was_lost = False
        # Incremented on each new session, so holders of locks can tell
        # whether their session is still the one that took them.
        self.session_generation = 0

    # Connection ---------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect, retrying until ``timeout`` (forever when None).

        Raises ZKConnectionError naming the hosts when it gives up.
        """
        if self.client is not None:
            return
        kwargs: dict[str, Any] = {}
        if self._use_tls:
            kwargs.update(use_ssl=True, **self._tls)
        self._stopping = False
        self.client = WatchingKazooClient(
            hosts=self.hosts, timeout=self.timeout, handler=PollingHandler(),
            connection_retry=KazooRetry(max_tries=-1, max_delay=5),
            **kwargs)
        self.client.add_listener(self._on_state)
        self._notifier = threading.Thread(
            target=self._notify_loop, name="ZooKeeperStateNotifier", daemon=True)
        self._notifier.start()
        try:
            self.client.start(timeout=timeout if timeout is not None else 2**31)
        except KazooTimeoutError as e:
            self.disconnect()
            raise ZKConnectionError(
                f"could not connect to ZooKeeper at {self.hosts} within {timeout} s "
                f"(TLS: {'yes' if self._use_tls else 'no'}; hosts and TLS files come "
                "from zookeeper-servers and zookeeper-tls in the configuration)") from e
        except Exception as e:
            self.disconnect()
            raise ZKConnectionError(
                f"could not connect to ZooKeeper at {self.hosts}: {e}") from e
        self.session_generation += 1
        log.info("Connected to ZooKeeper at %s", self.hosts)

    def disconnect(self) -> None:
        client, self.client = self.client, None
        self._stopping = True
        with self._event_cond:
            self._event_cond.notify_all()
        if client is not None:
            try:
                client.stop()
                client.close()
            except Exception:
                log.exception("Error while closing the ZooKeeper connection")
        if self._notifier and self._notifier is not threading.current_thread():
            self._notifier.join(5)
        self._notifier = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.state == KazooState.CONNECTED

    @property
    def kazoo(self) -> WatchingKazooClient:
        if self.client is None:
            raise ZKConnectionError("not connected to ZooKeeper")
        return self.client

    def queued_requests(self) -> int:
        """Requests waiting in kazoo's send queue (0 when not connected).
        A backlog here delays every ZooKeeper read and write of this
        process."""
        client = self.client
        if client is None:
            return 0
        return len(client._queue)

    # State listeners -----------------------------------------------------

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _on_state(self, state: str) -> None:
        # kazoo calls this on its connection thread: record and return.
        if state == KazooState.LOST:
            event = LOST
            self._was_lost = True
        elif state == KazooState.SUSPENDED:
            event = SUSPENDED
        else:
            event = CONNECTED
            if self._was_lost:
                self._was_lost = False
                self.session_generation += 1
        log.info("ZooKeeper connection is %s", event)
        with self._event_cond:
            self._events.append(event)
            self._event_cond.notify_all()

    def _notify_loop(self) -> None:
        while True:
            with self._event_cond:
                while not self._events and not self._stopping:
                    self._event_cond.wait()
                if self._stopping:
                    return
                event = self._events.pop(0)
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception:
                    log.exception("Error in ZooKeeper state listener %r", listener)
