"""Watch-driven in-memory copies of nodes, requests and images.

A daemon that polled ZooKeeper for 10,000 nodes every second would spend
its time re-reading unchanged data.  Instead each cache sets one
persistent recursive watch on its root and applies events as they come:

* the watch callback (kazoo's connection thread) turns each event into a
  read sent at once on the socket (or a removal) and queues that, in
  event order: no other thread wakes to do it;
* the *playback* thread waits for each read in order and applies it, then
  tells listeners;
* the *issuer* thread resyncs: after every (re)connect it re-adds the
  watch first and then reads a full snapshot.  Events that come
  meanwhile are held back, then read (by this thread) and queued behind
  the snapshot; only once those reads are answered do events go the
  direct way again, so no read of an event is sent ahead of an older one.

Because ZooKeeper answers one session's requests in order, applying the
answers in queue order gives the latest state, and nothing that changed
during an outage is missed.

Records this process writes itself are not read back.  ZooKeeper sends a
session the event of a change before the reply to the write that made it,
and the events of later changes after that reply.  So while one of our
writes to a path is in flight (:meth:`TreeCache.own_write_started`), the
events for that path take a place in the playback queue without a read;
the reply (read on kazoo's connection thread, at its place in the stream)
fills those places with the data we wrote and the version it got: the
state of the record at that point.  A write that failed fills them with a
read sent right then instead.  Cached records are shared snapshots: callers must not change them;
to act on a record, read or lock a fresh copy.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.protocol.states import EventType

from nodepool.zk import client as zkclient
from nodepool.zk.models import (
    ImageBuild,
    ImageUpload,
    ModelError,
    Node,
    NodeRequest,
    Record,
    UnreadableNode,
    is_empty_znode,
)
from nodepool.zk.node_index import NodeIndex
from nodepool.zk.zookeeper import (
    COMPONENT_ROOT,
    IMAGE_ROOT,
    NODE_ROOT,
    REQUEST_LOCK_ROOT,
    REQUEST_ROOT,
    ZooKeeper,
    is_lock_child,
)

log = logging.getLogger("nodepool.zk.cache")

R = TypeVar("R", bound=Record)
# (key, old, new): the key is a node or request id, or a tuple of path
# parts for the image tree.
Listener = Callable[[Any, Any, Any], None]

_STOP = object()
# Reads in flight at once while a cache reads its full snapshot.
SNAPSHOT_BATCH = 500
_RESYNC = object()
# How long a resync waits for the reads of events held back meanwhile.
READ_TIMEOUT = 30.0


class _OwnWrite:
    """A place in the playback queue for an event caused (or overtaken)
    by a write of ours in flight; filled when its reply is read."""

    __slots__ = ("filled", "data", "stat", "read")

    def __init__(self) -> None:
        self.filled = threading.Event()
        # What we wrote and the stat it got, or a read of the path (a
        # failed write), or neither (a later place holds the state).
        self.data: bytes | None = None
        self.stat: Any = None
        self.read: Any = None


def _contender_changed(names: dict[str, set[str]], key: str, contender: str,
                       present: bool) -> int | None:
    """Record that lock ``contender`` of ``key`` is (or is no longer)
    there; the new count of ``key``'s contenders, or None when that was
    known already (an event seen twice)."""
    known = names.get(key, set())
    if (contender in known) == present:
        return None
    known = known | {contender} if present else known - {contender}
    if known:
        names[key] = known
    else:
        names.pop(key, None)
    return len(known)


class TreeCache(Generic[R]):
    """Base class: event plumbing, listeners, resync.  Subclasses map paths
    to records."""

    root: str = ""
    name: str = "cache"

    def __init__(self, zk: ZooKeeper) -> None:
        self.zk = zk
        self._items: dict[Any, R] = {}
        self._lock = threading.RLock()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._playback: queue.SimpleQueue = queue.SimpleQueue()
        self._listeners: list[Listener] = []
        self._synced = threading.Event()
        self._running = False
        self._threads: list[threading.Thread] = []
        # Held while an event (or barrier) takes its place in the playback
        # queue, so places follow the order events came in.
        self._issue_lock = threading.Lock()
        # While a resync runs (and until the first), events and barriers
        # wait here.
        self._resyncing = True
        self._held: list[Any] = []
        # Our writes in flight by path, and the places in the playback
        # queue of events for those paths (see own_write_started).
        self._own: dict[str, int] = {}
        self._absorbed: dict[str, list[_OwnWrite]] = {}

    # Lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._threads = [
            threading.Thread(target=self._issue_loop, name=f"{self.name}-events",
                             daemon=True),
            threading.Thread(target=self._playback_loop, name=f"{self.name}-playback",
                             daemon=True),
        ]
        for t in self._threads:
            t.start()
        self.zk.add_write_observer(self)
        self.zk.zk_client.add_listener(self._on_connection)
        if self.zk.zk_client.connected:
            self._events.put(_RESYNC)

    def stop(self) -> None:
        self._running = False
        self.zk.remove_write_observer(self)
        self.zk.zk_client.remove_listener(self._on_connection)
        try:
            self.zk.kazoo.remove_recursive_watch(self.root, self._on_event)
        except Exception:
            pass
        self._events.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5)

    def barrier(self, timeout: float | None = None) -> bool:
        """Wait until every event received so far has been applied.

        Callers use it after a ZooKeeper round trip (such as taking a lock)
        that happened after someone else's change, to be sure the cache
        shows that change.
        """
        done = threading.Event()
        with self._issue_lock:
            if self._resyncing:
                self._held.append(("barrier", done))
            else:
                self._playback.put(("barrier", None, done))
        return done.wait(timeout)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until the first full snapshot has been applied."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def add_listener(self, listener: Listener) -> None:
        """``listener(key, old, new)``: called on the playback thread after
        each change; ``old``/``new`` are None for creations/removals.  Must
        be quick (set an event, queue work)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # Reading -----------------------------------------------------------

    def get(self, key: Any) -> R | None:
        return self._items.get(key)

    def items(self) -> list[R]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> list[Any]:
        with self._lock:
            return list(self._items.keys())

    def __len__(self) -> int:
        return len(self._items)

    # Our own writes ---------------------------------------------------------

    def observes(self, path: str) -> bool:
        """Whether this cache keeps the data of ``path``."""
        return path.startswith(self.root + "/") and self._wants_data(path)

    def own_write_started(self, path: str) -> None:
        """A write of ours to ``path`` (one this cache :meth:`observes`) is
        about to be sent.  Must be followed by exactly one
        :meth:`own_write_replied` for it, called as its reply is read."""
        with self._issue_lock:
            self._own[path] = self._own.get(path, 0) + 1

    def own_write_replied(self, path: str, data: bytes | None, stat: Any) -> None:
        """The reply to one of our writes to ``path``: ``data`` as written
        and its ``stat`` if it succeeded, None if it failed (or its
        outcome is unknown)."""
        with self._issue_lock:
            left = self._own.get(path, 0) - 1
            if left > 0:
                self._own[path] = left
            else:
                self._own.pop(path, None)
            places = self._absorbed.pop(path, None)
            if not places:
                return
            last = places[-1]
            if data is not None:
                last.data, last.stat = data, stat
            else:
                last.read = self._read_back(path)
        for place in places:
            place.filled.set()

    def _read_back(self, path: str) -> Any:
        """A read of ``path`` sent at once (on the connection thread, so
        at this place in the session's stream), or None after asking for
        a resync when that cannot be done."""
        try:
            kazoo = self.zk.kazoo
            if kazoo.on_connection_thread():
                return kazoo.read_now_at(path)
        except Exception:
            log.debug("%s: could not read %s back", self.name, path, exc_info=True)
        # The write never went out, or the connection is gone (a resync
        # follows the reconnect): resync to be sure.
        if self._running:
            self._events.put(_RESYNC)
        return None

    # Backlog (for the ``nodepool.launcher.<host>.zk.*`` gauges) ----------

    def event_queue_size(self) -> int:
        """Watch events received but not yet turned into reads: those
        held back while a resync reads its snapshot."""
        return len(self._held)

    def playback_queue_size(self) -> int:
        """Reads issued but not yet applied.  A growing number means the
        cache (and so every decision made from it) lags behind
        ZooKeeper."""
        return self._playback.qsize()

    # Event plumbing -----------------------------------------------------

    def _on_connection(self, event: str) -> None:
        if event == zkclient.CONNECTED:
            self._events.put(_RESYNC)

    def _on_event(self, event) -> None:
        # kazoo's connection thread: send the read, queue it, never wait.
        try:
            with self._issue_lock:
                if self._resyncing:
                    self._held.append(event)
                elif (self._own and event.path in self._own
                      and event.type in (EventType.CREATED, EventType.CHANGED)):
                    # Filled by the reply to our write in flight.
                    place = _OwnWrite()
                    self._absorbed.setdefault(event.path, []).append(place)
                    self._playback.put(("own", event.path, place))
                else:
                    self._issue_event(event, self.zk.kazoo.read_now)
        except Exception:
            if self._running and self.zk.zk_client.connected:
                log.exception("%s: error handling %r; resyncing", self.name, event)
                self._events.put(_RESYNC)

    def _issue_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is _STOP:
                self._playback.put((_STOP, None, None))
                return
            try:
                self._issue_resync()
            except Exception:
                if self._running and self.zk.zk_client.connected:
                    log.exception("%s: error resyncing; trying again", self.name)
                    self._events.put(_RESYNC)

    def _issue_resync(self) -> None:
        if not self.zk.zk_client.connected:
            return
        with self._issue_lock:
            self._resyncing = True
        kazoo = self.zk.kazoo
        kazoo.ensure_path(self.root)
        # Watch first: anything after this point arrives as an event held
        # back, then queued behind the snapshot we are about to read.  (A
        # resync that fails keeps holding them, for the next one.)
        kazoo.add_recursive_watch(self.root, self._on_event)
        self._playback.put(("snapshot", self._read_snapshot(), None))
        while True:
            with self._issue_lock:
                held, self._held = self._held, []
                if not held:
                    # Every read queued by this thread is answered: the
                    # reads the connection thread sends from now on are
                    # sent after them.
                    self._resyncing = False
                    return
            reads = []
            for item in held:
                if isinstance(item, tuple) and item[0] == "barrier":
                    self._playback.put(("barrier", None, item[1]))
                else:
                    reads.append(self._issue_event(
                        item, lambda event: kazoo.get_async(event.path)))
            for read in reads:
                if read is not None:
                    try:
                        read.get(READ_TIMEOUT)
                    except NoNodeError:
                        pass

    def _issue_event(self, event, read: Callable[[Any], Any]) -> Any:
        """Queue ``event``'s place in the playback queue; the read sent
        for it (``read(event)``), if any."""
        path = event.path
        if event.type == EventType.DELETED:
            self._playback.put(("deleted", path, None))
        elif event.type in (EventType.CREATED, EventType.CHANGED):
            if self._wants_data(path):
                result = read(event)
                self._playback.put(("data", path, result))
                return result
            self._playback.put(("created", path, None))
        return None

    def _playback_loop(self) -> None:
        while True:
            kind, arg, result = self._playback.get()
            if kind is _STOP:
                return
            if kind == "barrier":
                result.set()
                continue
            try:
                if kind == "snapshot":
                    self._apply_snapshot(arg)
                    self._synced.set()
                elif kind == "deleted":
                    self._on_deleted(arg)
                elif kind == "created":
                    self._on_created(arg)
                elif kind == "data":
                    self._apply_read(arg, result)
                elif kind == "own":
                    if not self._wait_filled(result):
                        return
                    if result.read is not None:
                        self._apply_read(arg, result.read)
                    elif result.data is not None:
                        self._on_data(arg, result.data, result.stat)
            except Exception:
                log.exception("%s: error applying %s %s", self.name, kind, arg)

    def _apply_read(self, path: str, result: Any) -> None:
        try:
            data, stat = result.get()
        except NoNodeError:
            self._on_deleted(path)
        except (ConnectionLoss, SessionExpiredError, ConnectionClosedError):
            # The connection went before the answer came: the resync after
            # the reconnect reads the whole tree again.
            log.debug("%s: read of %s lost with the connection", self.name, path)
        else:
            self._on_data(path, data, stat)

    def _wait_filled(self, place: _OwnWrite) -> bool:
        """Wait for the reply that fills ``place``; False when the cache
        stopped meanwhile."""
        waited = 0.0
        while not place.filled.wait(1.0):
            waited += 1.0
            if not self._running:
                return False
            if waited >= READ_TIMEOUT:
                log.warning("%s: no reply to our write in %.0f s; resyncing",
                            self.name, READ_TIMEOUT)
                self._events.put(_RESYNC)
                break
        return True

    def _notify(self, key: Any, old: Any, new: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(key, old, new)
            except Exception:
                log.exception("%s: error in listener %r", self.name, listener)

    def _set(self, key: Any, new: R) -> None:
        with self._lock:
            old = self._items.get(key)
            self._items[key] = new
        self._notify(key, old, new)

    def _remove(self, key: Any) -> None:
        with self._lock:
            old = self._items.pop(key, None)
        if old is not None:
            self._notify(key, old, None)

    def _replace_all(self, fresh: dict[Any, R]) -> None:
        with self._lock:
            old_items = self._items
            self._items = fresh
        for key, old in old_items.items():
            if key not in fresh:
                self._notify(key, old, None)
        for key, new in fresh.items():
            self._notify(key, old_items.get(key), new)

    # Subclass hooks -------------------------------------------------------

    def _relative(self, path: str) -> list[str]:
        if not path.startswith(self.root + "/"):
            return []
        return path[len(self.root) + 1:].split("/")

    def _wants_data(self, path: str) -> bool:
        raise NotImplementedError

    def _read_snapshot(self) -> Any:
        raise NotImplementedError

    def _apply_snapshot(self, snapshot: Any) -> None:
        raise NotImplementedError

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        raise NotImplementedError

    def _on_deleted(self, path: str) -> None:
        raise NotImplementedError

    def _on_created(self, path: str) -> None:
        pass


class NodeCache(TreeCache[Node]):
    """Nodes by id, with how many contenders each node's lock dir has.

    Records this version cannot read (:class:`UnreadableNode`) are not
    among the nodes: nothing that works from the cache can hand them out,
    count them or delete them.  They are kept aside for reporting, and
    each is logged once when it is first seen.  Empty znodes are not
    records at all and are left out silently (the cleanup worker removes
    them).
    """

    root = NODE_ROOT
    name = "NodeCache"

    def __init__(self, zk: ZooKeeper) -> None:
        super().__init__(zk)
        self._unreadable: dict[str, UnreadableNode] = {}
        # Unreadable records already reported.  Kept apart from
        # ``_unreadable``, which changes only when a read is applied: a
        # record may be read twice before that (a resync's snapshot and
        # an event, two snapshots), and must be reported once.
        self._reported: set[str] = set()
        # The contender znode names of each locked node (as for request
        # locks: an event a resync's snapshot already shows may come
        # again); a node's ``lock_contenders`` is their count.
        self._lock_names: dict[str, set[str]] = {}
        # Sums and subsets of the nodes for the launcher's decisions,
        # updated as the first listener: current before anyone else hears.
        self.index = NodeIndex()
        self.add_listener(self.index.node_changed)

    def unreadable(self) -> list[UnreadableNode]:
        """The node records this version cannot read, by id."""
        with self._lock:
            return [self._unreadable[k] for k in sorted(self._unreadable)]

    def _read(self, node_id: str, data: bytes, stat: Any) -> Node | UnreadableNode | None:
        """The node, the record we cannot read, or None for an empty
        znode."""
        if is_empty_znode(data):
            return None
        try:
            return self.zk.parse_node(node_id, data, stat)
        except ModelError as e:
            with self._lock:
                first = node_id not in self._reported
                self._reported.add(node_id)
            if first:
                log.warning("Node record %s cannot be read by this version (%s); it is "
                            "kept, never used, and counted in nodepool.nodes.unreadable "
                            "until an operator removes it with 'nodepool delete %s'",
                            node_id, e, node_id)
            return UnreadableNode(node_id, data, str(e))

    def _wants_data(self, path: str) -> bool:
        return len(self._relative(path)) == 1

    def _read_snapshot(self) -> Any:
        """Every node, parsed (reads pipelined a batch at a time, so tens
        of thousands of records never sit in memory twice: as raw replies
        and as records).  Runs on the issue thread, so the reads of events
        queued meanwhile are only sent after these."""
        kazoo = self.zk.kazoo
        ids = [i for i in kazoo.get_children(self.root) if not is_lock_child(i)]
        fresh: dict[str, Node] = {}
        unreadable: dict[str, UnreadableNode] = {}
        lock_names: dict[str, set[str]] = {}
        for start in range(0, len(ids), SNAPSHOT_BATCH):
            batch = [(i, kazoo.get_async(f"{self.root}/{i}"),
                      kazoo.get_children_async(f"{self.root}/{i}/lock"))
                     for i in ids[start:start + SNAPSHOT_BATCH]]
            for node_id, data_result, lock_result in batch:
                try:
                    data, stat = data_result.get()
                except NoNodeError:
                    continue
                node = self._read(node_id, data, stat)
                if isinstance(node, UnreadableNode):
                    unreadable[node_id] = node
                if not isinstance(node, Node):
                    continue
                try:
                    names = {c for c in lock_result.get() if is_lock_child(c)}
                except NoNodeError:
                    names = set()
                if names:
                    lock_names[node_id] = names
                node.lock_contenders = len(names)
                fresh[node_id] = node
        return fresh, unreadable, lock_names

    def _apply_snapshot(self, snapshot: Any) -> None:
        fresh, unreadable, lock_names = snapshot
        with self._lock:
            self._unreadable = unreadable
            self._reported &= set(unreadable)
            self._lock_names = lock_names
        self._replace_all(fresh)

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        node_id = self._relative(path)[0]
        node = self._read(node_id, data, stat)
        with self._lock:
            if isinstance(node, UnreadableNode):
                self._unreadable[node_id] = node
            else:
                self._unreadable.pop(node_id, None)
                self._reported.discard(node_id)
        if not isinstance(node, Node):
            self._remove(node_id)
            return
        node.lock_contenders = len(self._lock_names.get(node_id, ()))
        self._set(node_id, node)

    def _on_deleted(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 1:
            with self._lock:
                self._unreadable.pop(parts[0], None)
                self._reported.discard(parts[0])
                self._lock_names.pop(parts[0], None)
            self._remove(parts[0])
        elif len(parts) == 3 and parts[1] == "lock" and is_lock_child(parts[2]):
            self._lock_change(parts[0], parts[2], False)

    def _on_created(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 3 and parts[1] == "lock" and is_lock_child(parts[2]):
            self._lock_change(parts[0], parts[2], True)

    def _lock_change(self, node_id: str, contender: str, present: bool) -> None:
        node = self._items.get(node_id)
        if node is None:
            return
        with self._lock:
            count = _contender_changed(self._lock_names, node_id, contender, present)
            if count is None:
                return
            node.lock_contenders = count
        self._notify(node_id, node, node)


class RequestCache(TreeCache[NodeRequest]):
    """Node requests by id."""

    root = REQUEST_ROOT
    name = "RequestCache"

    def _wants_data(self, path: str) -> bool:
        return len(self._relative(path)) == 1

    def _read_snapshot(self) -> Any:
        kazoo = self.zk.kazoo
        ids = kazoo.get_children(self.root)
        return [(i, kazoo.get_async(f"{self.root}/{i}")) for i in ids]

    def _apply_snapshot(self, snapshot: Any) -> None:
        fresh: dict[str, NodeRequest] = {}
        for request_id, result in snapshot:
            try:
                data, stat = result.get()
            except NoNodeError:
                continue
            request = self.zk._parse_request(request_id, data, stat)
            if request is not None:
                fresh[request_id] = request
        self._replace_all(fresh)

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        request_id = self._relative(path)[0]
        request = self.zk._parse_request(request_id, data, stat)
        if request is None:
            self._remove(request_id)
        else:
            self._set(request_id, request)

    def _on_deleted(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 1:
            self._remove(parts[0])


class RequestLockCache(TreeCache[Any]):
    """How many contenders each request's lock has, by request id.

    A ``pending`` request whose lock has no contender lost its launcher
    (it died, or its session expired): the launcher that takes it over
    listens here to act the moment the lock goes, instead of finding it
    on a periodic pass.  No data is read: the cache keeps the names of
    each lock's contender znodes, so an event that a resync's snapshot
    already shows (events held back meanwhile are applied after it) is
    applied twice without miscounting.
    """

    root = REQUEST_LOCK_ROOT
    name = "RequestLockCache"

    def __init__(self, zk: ZooKeeper) -> None:
        super().__init__(zk)
        # Contender znode names by request id; ``_items`` holds their
        # counts (what listeners are told).
        self._contenders: dict[str, set[str]] = {}

    def _wants_data(self, path: str) -> bool:
        return False

    def _read_snapshot(self) -> Any:
        kazoo = self.zk.kazoo
        ids = kazoo.get_children(self.root)
        return [(i, kazoo.get_children_async(f"{self.root}/{i}")) for i in ids]

    def _apply_snapshot(self, snapshot: Any) -> None:
        fresh: dict[str, set[str]] = {}
        for request_id, result in snapshot:
            try:
                fresh[request_id] = {c for c in result.get() if is_lock_child(c)}
            except NoNodeError:
                continue
        with self._lock:
            self._contenders = fresh
        self._replace_all({request_id: len(names) for request_id, names in fresh.items()})

    def _on_created(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 1:
            with self._lock:
                known = parts[0] in self._items
                if not known:
                    self._items[parts[0]] = 0
            if not known:
                self._notify(parts[0], None, 0)
        elif len(parts) == 2 and is_lock_child(parts[1]):
            self._change(parts[0], parts[1], True)

    def _on_deleted(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 1:
            with self._lock:
                self._contenders.pop(parts[0], None)
            self._remove(parts[0])
        elif len(parts) == 2 and is_lock_child(parts[1]):
            self._change(parts[0], parts[1], False)

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        pass

    def _change(self, request_id: str, contender: str, present: bool) -> None:
        with self._lock:
            new = _contender_changed(self._contenders, request_id, contender, present)
            if new is None:
                return
            old = self._items.get(request_id, 0)
            self._items[request_id] = new
        self._notify(request_id, old, new)

    def contenders(self, request_id: str) -> int:
        return self._items.get(request_id, 0)


class ImageCache(TreeCache[Record]):
    """Builds (key ``(image, build)``) and uploads (key ``(image, build,
    provider, upload)``), plus the images' ``pause`` and ``request-build``
    flags."""

    root = IMAGE_ROOT
    name = "ImageCache"
    FLAGS = ("pause", "request-build")

    def __init__(self, zk: ZooKeeper) -> None:
        super().__init__(zk)
        self.paused: set[str] = set()
        self.build_requests: set[str] = set()
        self._flag_listeners: list[Callable[[str, str], None]] = []

    def add_flag_listener(self, listener: Callable[[str, str], None]) -> None:
        """``listener(image, flag)``: called on the playback thread when an
        image's ``pause`` or ``request-build`` znode appears or goes (the
        builder wakes on these).  Must be quick."""
        self._flag_listeners.append(listener)

    def _flag_set(self, flag: str) -> set[str]:
        return self.paused if flag == "pause" else self.build_requests

    def _flag_changed(self, image: str, flag: str) -> None:
        for listener in list(self._flag_listeners):
            try:
                listener(image, flag)
            except Exception:
                log.exception("%s: error in flag listener %r", self.name, listener)

    @staticmethod
    def _key(parts: list[str]) -> tuple | None:
        # <image>/builds/<build>  or
        # <image>/builds/<build>/providers/<provider>/images/<upload>
        if len(parts) == 3 and parts[1] == "builds" and parts[2] != "lock":
            return (parts[0], parts[2])
        if (len(parts) == 7 and parts[1] == "builds" and parts[3] == "providers"
                and parts[5] == "images" and parts[6] != "lock"
                and not is_lock_child(parts[6])):
            return (parts[0], parts[2], parts[4], parts[6])
        return None

    def _wants_data(self, path: str) -> bool:
        return self._key(self._relative(path)) is not None

    def _parse(self, key: tuple, data: bytes, stat: Any) -> Record | None:
        if len(key) == 2:
            return self.zk._parse_build(key[0], key[1], data, stat)
        image, build_id, provider, upload_id = key
        return self.zk._parse_upload(image, build_id, provider, upload_id, data, stat)

    def _read_snapshot(self) -> Any:
        # The image tree is small (a few builds and uploads per image), so
        # a recursive walk is cheap.
        kazoo = self.zk.kazoo
        out: list[tuple[tuple, Any]] = []
        flags: dict[str, set[str]] = {flag: set() for flag in self.FLAGS}
        for image in kazoo.get_children(self.root):
            try:
                children = kazoo.get_children(f"{self.root}/{image}")
            except NoNodeError:
                continue
            for flag in self.FLAGS:
                if flag in children:
                    flags[flag].add(image)
            for build_id in self._kids(f"{self.root}/{image}/builds"):
                bpath = f"{self.root}/{image}/builds/{build_id}"
                out.append(((image, build_id), kazoo.get_async(bpath)))
                for provider in self._kids(f"{bpath}/providers"):
                    ipath = f"{bpath}/providers/{provider}/images"
                    for upload_id in self._kids(ipath):
                        out.append(((image, build_id, provider, upload_id),
                                    kazoo.get_async(f"{ipath}/{upload_id}")))
        return flags, out

    def _kids(self, path: str) -> list[str]:
        try:
            return [c for c in self.zk.kazoo.get_children(path)
                    if c != "lock" and not is_lock_child(c)]
        except NoNodeError:
            return []

    def _apply_snapshot(self, snapshot: Any) -> None:
        flags, entries = snapshot
        fresh: dict[Any, Record] = {}
        for key, result in entries:
            try:
                data, stat = result.get()
            except NoNodeError:
                continue
            record = self._parse(key, data, stat)
            if record is not None:
                fresh[key] = record
        changed = []
        for flag, images in flags.items():
            old = self._flag_set(flag)
            changed += [(image, flag) for image in old ^ images]
        self.paused, self.build_requests = flags["pause"], flags["request-build"]
        self._replace_all(fresh)
        for image, flag in changed:
            self._flag_changed(image, flag)

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        key = self._key(self._relative(path))
        if key is None:
            return
        record = self._parse(key, data, stat)
        if record is None:
            self._remove(key)
        else:
            self._set(key, record)

    def _on_created(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 2 and parts[1] in self.FLAGS:
            self._flag_set(parts[1]).add(parts[0])
            self._flag_changed(parts[0], parts[1])

    def _on_deleted(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 2 and parts[1] in self.FLAGS:
            self._flag_set(parts[1]).discard(parts[0])
            self._flag_changed(parts[0], parts[1])
            return
        key = self._key(parts)
        if key is not None:
            self._remove(key)
        elif len(parts) == 1:
            # A whole image removed (erase): drop everything under it.
            for k in [k for k in self.keys() if k[0] == parts[0]]:
                self._remove(k)
            for flag in self.FLAGS:
                if parts[0] in self._flag_set(flag):
                    self._flag_set(flag).discard(parts[0])
                    self._flag_changed(parts[0], flag)

    # Queries --------------------------------------------------------------

    def builds(self, image: str) -> list[ImageBuild]:
        return [r for k, r in list(self._items.items())
                if len(k) == 2 and k[0] == image and isinstance(r, ImageBuild)]

    def uploads(self, image: str | None = None,
                provider: str | None = None) -> list[ImageUpload]:
        return [r for k, r in list(self._items.items())
                if len(k) == 4 and isinstance(r, ImageUpload)
                and (image is None or k[0] == image)
                and (provider is None or k[2] == provider)]

    def latest_upload(self, image: str, provider: str,
                      state: str = "ready") -> ImageUpload | None:
        """The newest upload of ``image`` in ``provider`` (by state_time)."""
        best = None
        for upload in self.uploads(image, provider):
            if upload.state == state and (best is None or upload.state_time > best.state_time):
                best = upload
        return best

    def serving_upload(self, image: str, provider: str) -> ImageUpload | None:
        """The newest upload of ``image`` in ``provider`` that nodes may
        boot from: ready, and not awaiting or failing a check (see
        :attr:`ImageUpload.in_service`)."""
        best = None
        for upload in self.uploads(image, provider):
            if upload.in_service and (best is None or upload.state_time > best.state_time):
                best = upload
        return best


class PoolComponentCache(TreeCache[Any]):
    """Registered pool components by znode name (routing decisions read
    these on every pass, so they come from a watch, not a poll)."""

    root = f"{COMPONENT_ROOT}/pool"
    name = "PoolComponentCache"

    def _wants_data(self, path: str) -> bool:
        return len(self._relative(path)) == 1

    def _parse(self, name: str, data: bytes) -> Any:
        from nodepool.zk.components import PoolComponent, parse_component
        return parse_component(PoolComponent, f"{self.root}/{name}", data)

    def _read_snapshot(self) -> Any:
        kazoo = self.zk.kazoo
        return [(n, kazoo.get_async(f"{self.root}/{n}")) for n in kazoo.get_children(self.root)]

    def _apply_snapshot(self, snapshot: Any) -> None:
        fresh = {}
        for name, result in snapshot:
            try:
                data, _ = result.get()
            except NoNodeError:
                continue
            component = self._parse(name, data)
            if component is not None:
                fresh[name] = component
        self._replace_all(fresh)

    def _on_data(self, path: str, data: bytes, stat: Any) -> None:
        name = self._relative(path)[0]
        component = self._parse(name, data)
        if component is None:
            self._remove(name)
        else:
            self._set(name, component)

    def _on_deleted(self, path: str) -> None:
        parts = self._relative(path)
        if len(parts) == 1:
            self._remove(parts[0])
