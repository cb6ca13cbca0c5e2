"""Persistent recursive watches (ZooKeeper >= 3.6) for kazoo.

kazoo 2.x only knows one-shot watches, which would force a cache of 10,000
nodes to re-list a whole directory on every change.  ZooKeeper's ``addWatch``
operation (opcode 106) registers one watch that reports every create, change
and delete below a path until the connection drops.  kazoo does not send it,
so this module adds the request type and a connection handler that routes
the resulting events.

Like kazoo's own watches these do not survive a connection loss: the caller
re-adds them after every reconnect (the caches do a full resync then anyway,
because events during the outage are lost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient, TransactionRequest, _prefix_root
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.handlers.utils import AsyncResult
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import (
    GetData,
    SetData,
    Transaction,
    Watch,
    int_struct,
    write_string,
)
from kazoo.protocol.states import EventType, WatchedEvent

log = logging.getLogger("nodepool.zk.watch")

PERSISTENT_RECURSIVE = 1

_EVENT_TYPES = {
    1: EventType.CREATED,
    2: EventType.DELETED,
    3: EventType.CHANGED,
    4: EventType.CHILD,
}


class AddWatch:
    """The ``addWatch`` request: a path and a mode, an empty reply."""

    type = 106

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.mode = mode

    def serialize(self) -> bytearray:
        b = bytearray()
        b.extend(write_string(self.path))
        b.extend(int_struct.pack(self.mode))
        return b

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> bool:
        return True

    def __repr__(self) -> str:
        return f"AddWatch({self.path!r}, {self.mode})"


# reply_hook(value, exception): exactly one of them is set (value may be
# None for an empty reply).
ReplyHook = Callable[[Any, BaseException | None], None]


class ReplyHookResult(AsyncResult):
    """A pending result that calls ``hook`` the moment the reply is read:
    on kazoo's connection thread, before any later event or reply is
    handled (or on whichever thread fails the request, when it never goes
    out).  Knowing exactly where in the session's stream of events a
    write landed is what lets a cache take its own writes without
    reading them back (:meth:`nodepool.zk.cache.TreeCache.own_write_started`)."""

    def __init__(self, handler: Any, hook: ReplyHook) -> None:
        super().__init__(handler, threading.Condition, KazooTimeoutError)
        self._hook: ReplyHook | None = hook
        self._hook_lock = threading.Lock()

    def set(self, value: Any = None) -> None:
        self.run_hook(value, None)
        super().set(value)

    def set_exception(self, exception: BaseException) -> None:
        self.run_hook(None, exception)
        super().set_exception(exception)

    def run_hook(self, value: Any, exception: BaseException | None) -> None:
        """Call the hook unless it already ran (it runs once)."""
        with self._hook_lock:
            hook, self._hook = self._hook, None
        if hook is None:
            return
        try:
            hook(value, exception)
        except Exception:
            log.exception("Error in a reply hook")

    def wait_reply(self) -> Any:
        """The reply (raising its error); if none came, as when waiting
        was interrupted, the hook is told the write failed."""
        try:
            return self.get()
        finally:
            self.run_hook(None, RuntimeError("no reply"))


class _Connection(ConnectionHandler):
    """Routes watch events to persistent recursive watchers as well, and
    lets their callbacks send reads at once (:meth:`read_now`)."""

    def read_now(self, path: str) -> Any:
        """Send a read of ``path`` (as the server names it, chroot
        included) and return its pending result.  Only on the connection
        thread, from a watch callback: the request goes out on the socket
        at once, as the connection thread sends queued ones, instead of
        being queued for this thread by another (which must wake it)."""
        client = self.client
        result = client.handler.async_result()
        request = GetData(path, None)
        # (As kazoo numbers the requests it sends.)
        self._xid = (self._xid % 2147483647) + 1  # type: ignore[has-type]
        xid = self._xid
        self._submit(request, client._session_timeout / 1000.0, xid)
        client._pending.append((request, result, xid))
        return result

    def _read_watch_event(self, buffer, offset):
        client = self.client
        watchers = client._recursive_watchers
        if watchers:
            watch, _ = Watch.deserialize(buffer, offset)
            matching = []
            with client._recursive_lock:
                for root, callbacks in watchers.items():
                    if watch.path == root or watch.path.startswith(root + "/"):
                        matching.extend(callbacks)
            if matching and not client._stopped.is_set():
                ev = ServerWatchedEvent(
                    _EVENT_TYPES.get(watch.type, EventType.NONE),
                    client._state, client.unchroot(watch.path))
                ev.server_path = watch.path
                for callback in matching:
                    _dispatch(client, callback, ev)
        # One-shot watchers on the same path still fire the usual way.
        super()._read_watch_event(buffer, offset)


class ServerWatchedEvent(WatchedEvent):
    """A persistent watch's event; ``server_path`` is the path as the
    server names it (chroot included), for :meth:`_Connection.read_now`."""

    server_path: str = ""


def _dispatch(client: KazooClient, callback: Callable, event: WatchedEvent) -> None:
    # Called on kazoo's connection thread: never block it.  The callback is
    # expected to only queue the event.
    try:
        callback(event)
    except Exception:
        log.exception("Error in persistent watch callback for %s", event.path)


class WatchingKazooClient(KazooClient):
    """A KazooClient that can add persistent recursive watches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recursive_watchers: dict[str, list[Callable]] = {}
        self._recursive_lock = threading.Lock()
        # Same arguments kazoo used for its own handler; it has not started.
        old: ConnectionHandler = self._connection  # type: ignore[has-type]
        self._connection = _Connection(
            self, old.retry_sleeper, logger=self.logger,
            sasl_options=old.sasl_options)

    def add_recursive_watch(self, path: str, callback: Callable[[WatchedEvent], None],
                            timeout: float = 10.0) -> None:
        """Register ``callback`` for every change at or below ``path``.

        The callback runs on kazoo's connection thread and must only hand
        the event to another thread.  Raises kazoo errors if the server
        cannot register the watch.
        """
        # Events carry the server-side (chrooted) path; key on that.
        full = self.chroot + path if self.chroot else path
        with self._recursive_lock:
            callbacks = self._recursive_watchers.setdefault(full, [])
            if callback not in callbacks:
                callbacks.append(callback)
        result = self.handler.async_result()
        self._call(AddWatch(full, PERSISTENT_RECURSIVE), result)
        result.get(timeout=timeout)

    def read_now(self, event: WatchedEvent) -> Any:
        """From a persistent watch's callback (on the connection thread):
        read the path of ``event`` at once; the pending result."""
        if not self.on_connection_thread():
            raise RuntimeError("read_now is only for watch callbacks")
        return self._connection.read_now(event.server_path)  # type: ignore[attr-defined]

    def read_now_at(self, path: str) -> Any:
        """As :meth:`read_now`, for ``path`` (as this client names it)."""
        if not self.on_connection_thread():
            raise RuntimeError("read_now_at is only for the connection thread")
        return self._connection.read_now(  # type: ignore[attr-defined]
            _prefix_root(self.chroot, path))

    def on_connection_thread(self) -> bool:
        """Whether this is kazoo's connection thread (where replies and
        events are read)."""
        return threading.current_thread() is getattr(
            self._connection, "_connection_routine", None)

    def set_with_reply_hook(self, path: str, value: bytes, version: int,
                            hook: ReplyHook) -> ReplyHookResult:
        """``set_async`` whose result calls ``hook`` as the reply is read."""
        result = ReplyHookResult(self.handler, hook)
        self._submit_hooked(SetData(_prefix_root(self.chroot, path), value, version), result)
        return result

    def commit_with_reply_hook(self, transaction: TransactionRequest,
                               hook: ReplyHook) -> ReplyHookResult:
        """``transaction.commit_async()`` whose result calls ``hook`` as
        the reply (the list of results) is read."""
        transaction._check_tx_state()
        transaction.committed = True
        result = ReplyHookResult(self.handler, hook)
        self._submit_hooked(Transaction(transaction.operations), result)
        return result

    def _submit_hooked(self, request: Any, result: ReplyHookResult) -> None:
        try:
            self._call(request, result)
        except BaseException as e:
            result.run_hook(None, e)
            raise

    def remove_recursive_watch(self, path: str, callback: Callable) -> None:
        """Stop routing events to ``callback`` (the server-side watch ends
        with the connection)."""
        full = self.chroot + path if self.chroot else path
        with self._recursive_lock:
            callbacks = self._recursive_watchers.get(full, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._recursive_watchers.pop(full, None)
