"""Keeping a static provider's node records in line with its hosts.

One coordinator thread per provider decides *when* to look (start-up, a
record of ours freed or deleted, a host's retry time, a periodic
re-check); each host is then looked at in a small thread pool, so a host
that takes its whole ``timeout`` to fail never delays another.

For each configured host the registrar keeps exactly ``max-parallel-jobs``
live records: it registers a READY record in every empty slot once the
host answers (and offers the pinned ``host-key``), rewrites READY records
whose configuration changed, and marks ``deleting`` the READY, unlocked
records of removed hosts, of slots beyond ``max-parallel-jobs`` and of
hosts found unreachable; records in use are left alone until they come
back.  The deleter removes ``deleting`` records and calls back
``node_deleted``, which wakes the registrar to refill the slot.

Records are read from the launcher's node cache.  The cache lags our own
writes by a little, so the records registered lately are remembered (and
read back directly) until the cache shows them; that, and a per-host
lock shared with the provider object that replaces this one on a
configuration change, is what keeps a slot from being filled twice.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nodepool.driver.static import records
from nodepool.driver.static.hosts import HostHealth, HostProblem, check_host
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.static")

# Look at every host this often even without an event (a safety net, and
# how records deleted behind our back are noticed without a cache).
RESYNC_INTERVAL = 60.0
# How long a record we registered is looked up directly if the cache
# does not show it yet.
RECENT_TTL = 60.0
# Retry delay after an unexpected error (ZooKeeper trouble) with one host.
ERROR_RETRY = 5.0
HOST_THREADS = 16

Identity = tuple[str, str, int]


class SharedState:
    """What outlives one provider object: the launcher replaces a static
    provider when its configuration changes, and the new one must carry on
    from the records, health and locks of the old one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._host_locks: dict[Identity, threading.Lock] = {}
        self._health: dict[Identity, HostHealth] = {}
        # (identity, slot) -> (node id, when registered)
        self._recent: dict[tuple[Identity, int], tuple[str, float]] = {}
        # The registrar allowed to write; a newer one takes over.
        self.owner: Any = None

    def host_lock(self, identity: Identity) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault(identity, threading.Lock())

    def health(self, identity: Identity, label: str) -> HostHealth:
        with self._lock:
            health = self._health.get(identity)
            if health is None:
                health = self._health[identity] = HostHealth(label)
            return health

    def remember(self, identity: Identity, slot: int, node_id: str) -> None:
        """Note a record just registered (the cache may not show it yet)."""
        with self._lock:
            self._recent[(identity, slot)] = (node_id, time.monotonic())

    def recalled(self, identity: Identity, slot: int) -> str | None:
        """The record lately registered for a slot, if recent enough."""
        with self._lock:
            entry = self._recent.get((identity, slot))
            if entry is not None and time.monotonic() - entry[1] < RECENT_TTL:
                return entry[0]
            self._recent.pop((identity, slot), None)
            return None

    def forget(self, identity: Identity, slot: int) -> None:
        with self._lock:
            self._recent.pop((identity, slot), None)

    def forget_node(self, node_id: str) -> None:
        with self._lock:
            for key in [k for k, v in self._recent.items() if v[0] == node_id]:
                del self._recent[key]


# One SharedState per (ZooKeeper connection, provider name): two launchers
# in one process (tests) do not share, successive providers of one do.
_shared: weakref.WeakKeyDictionary[Any, dict[str, SharedState]] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def shared_state(zk: Any, provider_name: str) -> SharedState:
    with _shared_lock:
        per_zk = _shared.setdefault(zk, {})
        return per_zk.setdefault(provider_name, SharedState())


def host_label(host: Any) -> str:
    return f"{host.name} port {host.connection_port} (user {host.username})"


class Registrar:
    """Registers, updates and deregisters one static provider's records."""

    def __init__(self, provider: Any, zk: Any, node_cache: Any = None) -> None:
        self.provider = provider
        self.zk = zk
        self.node_cache = node_cache
        self.name: str = provider.provider.name
        self.shared = shared_state(zk, self.name)
        self.running = False
        self._cond = threading.Condition()
        self._requested = True
        self._resync_at = 0.0
        self._retry_at: dict[Any, float] = {}
        self._tasks: dict[Identity, str] = {}
        self._tasks_lock = threading.Lock()
        # The coordinator is in a sync() pass (for settle()).
        self._syncing = False
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Monotonic times at which the latest completed look began: at
        # every record (sync), at one host's records.  Proof that the
        # registrar has looked since a moment, e.g. before asserting that
        # it registered nothing.
        self.last_sync_started = float("-inf")
        self.host_looked_at: dict[Identity, float] = {}

    # Lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.shared.owner = self
        self.running = True
        self._executor = ThreadPoolExecutor(
            HOST_THREADS, thread_name_prefix=f"StaticHost.{self.name}")
        if self.node_cache is not None:
            self.node_cache.add_listener(self._on_node_change)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"StaticRegistrar.{self.name}")
        self._thread.start()

    def stop(self) -> None:
        self.running = False
        if self.node_cache is not None:
            self.node_cache.remove_listener(self._on_node_change)
        with self._cond:
            self._cond.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def request_sync(self) -> None:
        """Look at every host soon (coalesced)."""
        with self._cond:
            self._requested = True
            self._cond.notify_all()

    def settle(self, timeout: float) -> bool:
        """Wait until every look asked for so far has been done: no sync
        pending or running and no host being looked at.  Hosts waiting
        for a retry (unreachable ones) do not count.  True if settled."""
        with self._cond:
            return self._cond.wait_for(self._settled, timeout)

    def _settled(self) -> bool:
        if not self.running:
            return True
        with self._tasks_lock:
            busy = bool(self._tasks)
        return not (self._requested or self._syncing or busy)

    def _retry_later(self, key: Any, when: float) -> None:
        with self._cond:
            self._retry_at[key] = min(when, self._retry_at.get(key, when))
            self._cond.notify_all()

    def _on_node_change(self, key: str, old: Node | None, new: Node | None) -> None:
        # A slot frees when one of our records is removed or marked for
        # deletion; nothing else needs a look.
        node = new if new is not None else old
        if node is None or node.provider != self.name:
            return
        if new is None or new.state in records.FREEING_STATES:
            self.request_sync()

    @property
    def _owner(self) -> bool:
        return self.running and self.shared.owner is self

    # Coordinator ---------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self.running and not self._requested:
                    now = time.monotonic()
                    next_at = min(self._retry_at.values(), default=self._resync_at)
                    next_at = min(next_at, self._resync_at)
                    if next_at <= now:
                        break
                    self._cond.wait(next_at - now)
                if not self.running:
                    return
                self._requested = False
                self._syncing = True
                self._retry_at.clear()
                self._resync_at = time.monotonic() + RESYNC_INTERVAL
            try:
                if self.zk.zk_client.connected:
                    started = time.monotonic()
                    self.sync()
                    self.last_sync_started = started
                else:
                    self._retry_later("connection", time.monotonic() + 1.0)
            except Exception:
                log.exception("Error synchronising static provider %s", self.name)
                self._retry_later("error", time.monotonic() + ERROR_RETRY)
            finally:
                with self._cond:
                    self._syncing = False
                    self._cond.notify_all()

    def configured(self) -> dict[Identity, tuple[Any, Any]]:
        """identity -> (pool, host) of the current configuration."""
        out = {}
        for pool in self.provider.provider.pools.values():
            for host in pool.nodes:
                out[host.identity] = (pool, host)
        return out

    def nodes(self) -> list[Node]:
        """Our provider's records (from the cache when there is one)."""
        if self.node_cache is not None:
            nodes = self.node_cache.items()
        else:
            nodes = self.zk.get_nodes(with_locks=True)
        return [n for n in nodes if n.provider == self.name]

    def sync(self) -> None:
        """Deregister records of removed hosts; look at every host."""
        hosts = self.configured()
        for node in self.nodes():
            identity = records.identity_of(node)
            if identity not in hosts and node.state == models.READY:
                with self.shared.host_lock(identity):  # type: ignore[arg-type]
                    self.deregister(node, "host removed from the configuration")
        for identity in hosts:
            self._schedule(identity)

    def _schedule(self, identity: Identity) -> None:
        with self._tasks_lock:
            if identity in self._tasks:
                self._tasks[identity] = "again"
                return
            self._tasks[identity] = "running"
        try:
            assert self._executor is not None
            self._executor.submit(self._run_host, identity)
        except RuntimeError:  # shut down meanwhile
            with self._tasks_lock:
                self._tasks.pop(identity, None)
            with self._cond:
                self._cond.notify_all()

    def _run_host(self, identity: Identity) -> None:
        while True:
            entry = self.configured().get(identity)
            if entry is not None and self.running:
                started = time.monotonic()
                try:
                    self.sync_host(*entry)
                    self.host_looked_at[identity] = started
                except Exception:
                    log.exception("Error registering static host %s",
                                  host_label(entry[1]))
                    self._retry_later(identity, time.monotonic() + ERROR_RETRY)
            with self._tasks_lock:
                if self._tasks.get(identity) == "again" and self.running:
                    self._tasks[identity] = "running"
                    continue
                self._tasks.pop(identity, None)
            with self._cond:
                self._cond.notify_all()
            return

    # One host ----------------------------------------------------------

    def health(self, host: Any) -> HostHealth:
        return self.shared.health(host.identity, host_label(host))

    def sync_host(self, pool: Any, host: Any) -> None:
        """Bring one host's records in line; contacts the host only when
        there is something to register or rewrite."""
        health = self.health(host)
        with self.shared.host_lock(host.identity):
            if not self._owner:
                return
            view = self._host_view(host)
            for node in view.excess:
                self.deregister(node, "more records than max-parallel-jobs slots")
            free = [n for n in view.records
                    if n.state == models.READY and not n.allocated_to and not n.locked]
            stale = [n for n in free if records.is_stale(n, pool, host)]
            if not view.empty and not stale:
                return
            if not health.due():
                self._retry_later(host.identity, health.next_try)
                return
            try:
                keys = check_host(host)
            except HostProblem as problem:
                health.record_problem(problem)
                for node in free:
                    self.deregister(node, f"host not offered ({problem.kind})")
                self._retry_later(host.identity, health.next_try)
                return
            health.record_ok()
            addresses = records.resolve(host.name)
            for slot in view.empty:
                if not self._owner:
                    return
                self._register(pool, host, slot, keys, addresses)
            for node in free:
                probe = Node.fromDict(node.toDict(), node.id)
                if records.rewrite(probe, self.name, pool, host, keys, addresses):
                    self._rewrite(node, pool, host, keys, addresses)

    def _host_view(self, host: Any) -> records.SlotView:
        mine = [n for n in self.nodes() if records.identity_of(n) == host.identity]
        known = {n.id for n in mine}
        view = records.slot_view(host, mine)
        for slot in view.empty:
            node_id = self.shared.recalled(host.identity, slot)
            if node_id is None:
                continue
            fresh = None if node_id in known else self.zk.get_node(node_id)
            if fresh is None or fresh.state in records.FREEING_STATES:
                self.shared.forget(host.identity, slot)
                continue
            view.slots[slot] = fresh
        return view

    def _register(self, pool: Any, host: Any, slot: int, keys: list[str],
                  addresses: tuple[str | None, str | None]) -> None:
        node = records.new_record(self.name, pool, host, slot, keys, addresses)
        self.zk.store_node(node)
        self.shared.remember(host.identity, slot, str(node.id))
        log.info("Registered static node %s: %s slot %d, labels %s", node.id,
                 host_label(host), slot, ",".join(host.labels))

    def _rewrite(self, cached: Node, pool: Any, host: Any, keys: list[str],
                 addresses: tuple[str | None, str | None]) -> None:
        node = Node.fromDict(cached.toDict(), cached.id)
        try:
            self.zk.lock_node(node, blocking=False)
        except ZKLockException:
            return
        try:
            if node.state != models.READY or node.allocated_to:
                return
            if records.rewrite(node, self.name, pool, host, keys, addresses):
                self.zk.store_node(node)
                log.info("Updated static node %s (%s) to the current configuration",
                         node.id, host_label(host))
        finally:
            self.zk.unlock_node(node)

    def deregister(self, cached: Node, reason: str) -> bool:
        """Mark a READY, unallocated, unlocked record ``deleting`` (the
        deleter removes it); records in use are left to come back."""
        if (not self._owner or cached.state != models.READY or cached.allocated_to
                or cached.locked):
            return False
        node = Node.fromDict(cached.toDict(), cached.id)
        try:
            self.zk.lock_node(node, blocking=False)
        except ZKLockException:
            return False
        try:
            if node.state != models.READY or node.allocated_to:
                return False
            node.state = models.DELETING
            self.zk.store_node(node)
        finally:
            self.zk.unlock_node(node)
        self.shared.forget_node(str(node.id))
        log.info("Deregistered static node %s (%s slot %s): %s", node.id,
                 node.hostname, node.slot, reason)
        return True
