"""Deleting nodes nobody owns any more, as soon as that becomes true.

Rule (WIRE.md): an *unlocked* node in a cleanup state (``used``,
``in-use``, ``building``, ``failed``, ``deleting``, ``deleted``,
``aborted``) belongs to nobody and is deleted: a crashed launcher or Zuul
executor leaves exactly such nodes behind.  Also handled here, because they
are decided from the same node cache:

* ready nodes still allocated to a request that is gone (Zuul hands nodes
  back that way when a build ends early) are unallocated for reuse;
* ready nodes older than their label's ``max-ready-age`` are deleted;
* held nodes past their ``hold_expiration`` or ``max-hold-age`` are deleted;
* ``init`` records left unlocked by a launcher that died (or lost its
  session) between creating and locking them, once their request is no
  longer ``pending``, are deleted after a grace period.

The worker is woken by node-cache events and keeps a slow timer as a
safety net.  Deletions run in parallel; one that fails is retried with a
growing delay, never dropped.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.exceptions import NoNodeError

from nodepool.driver.deletion import delete_locked_node
from nodepool.driver.launch import NodeLogger
from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ModelError, Node

log = logging.getLogger("nodepool.DeletedNodeWorker")

DELETE_THREADS = 16
MAX_BACKOFF = 60.0
# An ``init`` record is normally locked within milliseconds of creation.
INIT_GRACE = 30.0
# How long a worker waits for the node cache to catch up with the events
# received so far before acting on what it shows.
BARRIER_TIMEOUT = 5.0


class DeletedNodeWorker(LauncherWorker):
    def __init__(self, launcher: Any, interval: float = 5.0) -> None:
        super().__init__("DeletedNodeWorker")
        self.launcher = launcher
        self.interval = interval
        self._wake = threading.Event()
        self._running = True
        self._busy: set[str] = set()
        self._busy_lock = threading.Lock()
        # Nodes a pass skipped because work on them was under way.
        self._look_again: set[str] = set()
        # Nodes deleted here that the cache still shows.
        self._gone: set[str] = set()
        self._retry_after: dict[str, tuple[float, float]] = {}
        # Monotonic time at which the latest completed full pass began:
        # every node the cache showed then has been looked at.
        self.last_pass_started = float("-inf")
        # Nodes changed since the last pass: between full passes (which
        # catch what time alone changes: ages, expiries, retries) only
        # these are looked at, so the cost follows the changes, not the
        # number of nodes.
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._next_full = 0.0
        self._executor = ThreadPoolExecutor(DELETE_THREADS,
                                            thread_name_prefix="NodeDeleter")

    def node_changed(self, key: str, old: Node | None, new: Node | None) -> None:
        # Only changes that can make a node ours to act on wake the
        # worker: a locked node is someone's (its unlock is a change too),
        # and a ready node allocated to a request that is still there is
        # being handed out.  (Ages and expiries are for the full passes.)
        if new is None:
            with self._busy_lock:
                self._gone.discard(key)
            return
        if new.locked:
            return
        if new.state == models.READY:
            if new.allocated_to and self.launcher.request_cache.get(
                    new.allocated_to) is not None:
                return
        elif new.state not in models.CLEANUP_STATES and new.state != models.HOLD:
            return
        if (new.state in models.CLEANUP_STATES and self._running
                and self.launcher.zk_client.connected):
            # The common case, a used node Zuul let go: decided here (a
            # few lookups) and handed to a delete thread at once, without
            # waking the worker's thread in between.
            try:
                self._pass([new])
                return
            except Exception:
                log.exception("Error deciding on node %s; leaving it to the worker", key)
        self._mark([key])

    def request_changed(self, key: str, old: Any, new: Any) -> None:
        if new is None:
            # Ready nodes still allocated to it go back to the pool.
            self._mark(self.launcher.node_cache.index.allocated_to(key))

    def _mark(self, node_ids: Any) -> None:
        if not node_ids:
            return
        with self._dirty_lock:
            self._dirty.update(node_ids)
        self._wake.set()

    def reconnected(self) -> None:
        self._next_full = 0.0
        self._wake.set()

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def run(self) -> None:
        while self._running:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._running:
                break
            if not self.launcher.zk_client.connected:
                continue
            started = time.monotonic()
            full = started >= self._next_full
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            cache = self.launcher.node_cache
            if full:
                self._next_full = started + self.interval
                nodes = cache.items()
                with self._busy_lock:
                    self._gone &= {str(n.id) for n in nodes}
            else:
                nodes = [n for n in (cache.get(i) for i in dirty) if n is not None]
            try:
                self._pass(nodes)
            except Exception:
                log.exception("Error in delete pass")
            else:
                if full:
                    self.last_pass_started = started

    # Deciding ----------------------------------------------------------------

    def _pass(self, nodes: list[Node]) -> None:
        now = time.time()
        config = self.launcher.config
        providers = self.launcher.providers
        requests = self.launcher.request_cache
        for node in nodes:
            if node.locked or node.provider not in providers:
                continue
            with self._busy_lock:
                if node.id in self._gone:
                    # Deleted by us; the cache has not shown it yet.
                    continue
                if node.id in self._busy:
                    # Looked at again once that work is over: this change
                    # may need something else done.
                    self._look_again.add(str(node.id))
                    continue
            retry = self._retry_after.get(str(node.id))
            if retry is not None and time.monotonic() < retry[0]:
                continue
            if node.state == models.BUILDING and self._request_state(
                    node.allocated_to) == models.PENDING:
                # Its launcher is gone but its request is not: whoever takes
                # the request over resumes the launch (nodepool.launcher.resume).
                continue
            if node.state in models.CLEANUP_STATES:
                self._submit(self._delete_node, node)
            elif node.state == models.READY:
                if node.allocated_to and requests.get(node.allocated_to) is None:
                    self._submit(self._unallocate, node)
                elif node.allocated_to is None and self._too_old(node, now, config):
                    self._submit(self._delete_node, node, expected=models.READY)
            elif node.state == models.HOLD and self._hold_expired(node, now, config):
                self._submit(self._delete_node, node, expected=models.HOLD)
            elif (node.state == models.INIT and now - node.state_time > INIT_GRACE
                  and self._request_state(node.allocated_to) != models.PENDING):
                self._submit(self._delete_node, node, expected=models.INIT)

    def _request_state(self, request_id: str | None) -> str | None:
        if not request_id:
            return None
        request = self.launcher.request_cache.get(request_id)
        return request.state if request is not None else None

    @staticmethod
    def _too_old(node: Node, now: float, config: Any) -> bool:
        ages = [config.labels[t].max_ready_age for t in node.type if t in config.labels]
        ages = [a for a in ages if a and a > 0]
        return bool(ages) and now - node.state_time > min(ages)

    @staticmethod
    def _hold_expired(node: Node, now: float, config: Any) -> bool:
        limit = config.max_hold_age
        if node.hold_expiration and node.hold_expiration > 0:
            limit = min(limit, node.hold_expiration)
        if limit == math.inf:
            return False
        return now - node.state_time > limit

    def _submit(self, fn: Any, node: Node, **kw: Any) -> None:
        node_id = str(node.id)
        with self._busy_lock:
            if node_id in self._busy:
                return
            self._busy.add(node_id)
        try:
            self._executor.submit(self._run, fn, node, kw)
        except RuntimeError:
            with self._busy_lock:
                self._busy.discard(node_id)

    def _run(self, fn: Any, cached: Node, kw: dict) -> None:
        node_id = str(cached.id)
        try:
            fn(cached, **kw)
            self._retry_after.pop(node_id, None)
        except Exception:
            delay = min(MAX_BACKOFF, self._retry_after.get(node_id, (0, 1.0))[1] * 2)
            self._retry_after[node_id] = (time.monotonic() + delay, delay)
            log.exception("Could not clean up node %s; retrying in %.0f s", cached.id, delay)
        finally:
            with self._busy_lock:
                self._busy.discard(cached.id)
                again = node_id in self._look_again
                self._look_again.discard(node_id)
            if again:
                self._mark([node_id])
            self._wake.set()

    # Acting ----------------------------------------------------------------

    def _lock(self, cached: Node) -> Node | None:
        return self.launcher.zk.try_lock_node(cached.id)

    def _delete_node(self, cached: Node, expected: str | None = None) -> None:
        def mark_deleting(node: Node) -> bool:
            if expected is not None and node.state != expected:
                return False
            if expected is None and node.state not in models.CLEANUP_STATES:
                return False
            node.state = models.DELETING
            return True

        # Locked and marked ``deleting`` in one round trip when the cache
        # is current.
        node = Node.fromDict(cached.toDict(), cached.id)
        node.version = cached.version
        zk = self.launcher.zk
        try:
            if not zk.claim_node(node, mark_deleting):
                return
        except (ZKLockException, ModelError):
            # Locked elsewhere, gone, or rewritten into something we
            # cannot read: not ours to act on now.
            return
        try:
            try:
                delete_node(self.launcher, node)
                with self._busy_lock:
                    self._gone.add(str(node.id))
            except NoNodeError:
                # Another launcher's deleter finished it first.
                log.info("Node %s was deleted meanwhile", node.id)
        finally:
            if node.lock is not None:
                zk.unlock_node(node)

    def _unallocate(self, cached: Node) -> None:
        # The request's deletion may have been applied before the node's
        # latest changes (the caches play back apart): Zuul locks a node
        # and marks it in-use before it deletes the request.  Seeing those
        # first spares a lock attempt on a node that is in use.
        cache = self.launcher.node_cache
        cache.barrier(BARRIER_TIMEOUT)
        latest = cache.get(cached.id)
        if (latest is None or latest.locked or latest.state != models.READY
                or not latest.allocated_to):
            return
        node = self._lock(cached)
        if node is None:
            return
        zk = self.launcher.zk
        try:
            if node.state != models.READY or not node.allocated_to:
                return
            if zk.request_exists(node.allocated_to):
                return
            NodeLogger(log, {"node": node.id}).info(
                "Unallocating node from vanished request %s", node.allocated_to)
            node.allocated_to = None
            zk.store_node(node)
        finally:
            zk.unlock_node(node)


def delete_node(launcher: Any, node: Node) -> None:
    """Delete a locked node through this launcher's provider for it."""
    provider = launcher.providers.get(node.provider)
    if provider is None:
        raise RuntimeError(f"provider {node.provider} is not configured here")
    delete_locked_node(launcher.zk, provider, node, log)
