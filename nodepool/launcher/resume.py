"""Taking over requests whose launcher is gone.

A ``pending`` request is held by the launcher serving it through the
request's lock.  When that launcher dies (or its ZooKeeper session
expires) the lock goes with it and the request is *lost*.  Upstream finds
such requests on a periodic pass and starts them over: the nodes already
launched for them are deleted and launched again.

Here the lock's disappearance is an event (the request-lock cache), and a
launcher serving the pool that holds the request's nodes takes the request
over at once: it locks the request and the nodes, keeps the ready ones,
resumes the launches of the others from the progress stored in their
records (:mod:`nodepool.driver.launch`), and carries on as if it had
accepted the request itself.  A request whose nodes belong to no pool that
any running launcher serves, or that has no nodes yet, goes back to
``requested`` for anyone to serve (upstream's behaviour).  The cleanup
worker runs the same check periodically as a safety net.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import ZKLockException, models
from nodepool.zk.cache import READ_TIMEOUT
from nodepool.zk.models import Node, NodeRequest

log = logging.getLogger("nodepool.LostRequests")

_STOP = object()


class LostRequests(LauncherWorker):
    """Event-driven take-over of lost requests (one per launcher)."""

    def __init__(self, launcher: Any) -> None:
        super().__init__("LostRequests")
        self.launcher = launcher
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued: set[str] = set()
        self._queued_lock = threading.Lock()
        self._running = True
        # Requests whose lock lost its last contender while the request
        # cache did not show them pending (yet).
        self._unlocked_early: set[str] = set()
        self._unlocked_lock = threading.Lock()
        # Set once the launcher's pool workers run: before that every
        # lost request would look unserved and be reset.
        self._enabled = threading.Event()

    # Events ------------------------------------------------------------

    def lock_changed(self, request_id: str, old: int | None, new: int | None) -> None:
        """Request-lock cache listener: a lock lost its last contender.

        Only a request that is pending and not served here can be lost
        (``take_over`` checks again): a request fulfilled here releases
        its lock too, and that must not wake this worker every time."""
        with self._unlocked_lock:
            if new is None or new > 0:
                self._unlocked_early.discard(request_id)
                return
            cached = self.launcher.request_cache.get(request_id)
            if cached is None or cached.state == models.REQUESTED:
                # The request cache follows ZooKeeper apart from this one
                # and may not show the claim yet (a launcher that died just
                # after claiming, or our own claim's reply lost with our
                # session): look again if it turns out pending.
                self._unlocked_early.add(request_id)
                return
        if cached.state != models.PENDING or self._handled_here(request_id):
            return
        self.check(request_id)

    def request_changed(self, request_id: str, old: Any, new: Any) -> None:
        """Request-cache listener: a request whose lock went before this
        cache showed it pending (see ``lock_changed``) now shows it."""
        with self._unlocked_lock:
            if not self._unlocked_early:
                return
            if new is not None and new.state == models.REQUESTED:
                return
            if request_id not in self._unlocked_early:
                return
            self._unlocked_early.discard(request_id)
        if new is None or new.state != models.PENDING:
            return
        if self.launcher.request_lock_cache.contenders(request_id) or self._handled_here(
                request_id):
            return
        self.check(request_id)

    def check(self, request_id: str) -> None:
        """Look at ``request_id`` soon (coalesced)."""
        with self._queued_lock:
            if request_id in self._queued:
                return
            self._queued.add(request_id)
        self._queue.put(request_id)

    def check_all(self) -> None:
        """Look at every pending request (start-up, reconnect, cleanup)."""
        for request in self.launcher.request_cache.items():
            if request.state == models.PENDING:
                self.check(request.id)

    def enable(self) -> None:
        """The pool workers run: start taking over (and look at every
        pending request once)."""
        if not self._enabled.is_set():
            self._enabled.set()
            self.check_all()

    def stop(self) -> None:
        self._running = False
        self._enabled.set()
        self._queue.put(_STOP)

    def run(self) -> None:
        self._enabled.wait()
        while self._running:
            item = self._queue.get()
            if item is _STOP:
                return
            with self._queued_lock:
                self._queued.discard(item)
            if not self.launcher.zk_client.connected:
                continue
            try:
                self.take_over(item)
            except Exception:
                log.exception("Error taking over request %s", item)

    # Deciding ---------------------------------------------------------------

    def _handled_here(self, request_id: str) -> bool:
        return any(w.serving(request_id) for w in list(self.launcher.pool_workers.values()))

    def take_over(self, request_id: str) -> str | None:
        """Resume or reset ``request_id`` if it is lost; what was done
        (``resumed``, ``reset``) or None."""
        launcher = self.launcher
        cached = launcher.request_cache.get(request_id)
        if cached is None or cached.state != models.PENDING:
            return None
        if self._handled_here(request_id):
            return None
        locks = launcher.request_lock_cache
        if locks.contenders(request_id):
            return None
        # The claim that made it pending made its lock too, and ZooKeeper
        # sent us that event first: once the lock cache has applied what
        # came so far, it shows that lock unless it is gone.
        locks.barrier(READ_TIMEOUT)
        if locks.contenders(request_id):
            return None
        request = NodeRequest.fromDict(cached.toDict(), cached.id)
        try:
            launcher.zk.lock_request(request, blocking=False)
        except ZKLockException:
            return None
        if request.state != models.PENDING or self._handled_here(request_id):
            launcher.zk.unlock_request(request)
            return None
        nodes = [n for n in launcher.node_cache.items() if n.allocated_to == request_id]
        owners = {(n.provider, n.pool) for n in nodes}
        if len(owners) == 1:
            provider_name, pool_name = owners.pop()
            worker = launcher.pool_workers.get(f"{provider_name}-{pool_name}")
            if worker is not None and worker.adopt(request, nodes):
                log.info("Resumed request %s (nodes %s) in %s", request_id,
                         sorted(n.id for n in nodes), worker.name)
                return "resumed"
            if worker is None and self._served_elsewhere(provider_name, pool_name):
                # The launcher serving that pool takes it over.
                launcher.zk.unlock_request(request)
                return None
        try:
            reset_request(launcher.zk, request, nodes)
            log.info("Reset lost request %s to requested", request_id)
        finally:
            launcher.zk.unlock_request(request)
        return "reset"

    def _served_elsewhere(self, provider_name: str, pool_name: str) -> bool:
        return any(p.provider_name == provider_name and p.name == pool_name
                   for p in self.launcher.pool_components())


def reset_request(zk: Any, request: NodeRequest, nodes: list[Node]) -> None:
    """Put a locked, lost request back to ``requested``: its ready nodes
    go back to the pool, nodes never launched are deleted, half-built ones
    are left to the deleter (unlocked, no longer allocated)."""
    for cached in nodes:
        node = zk.try_lock_node(cached.id)
        if node is None:
            continue
        try:
            if node.allocated_to != request.id:
                continue
            node.allocated_to = None
            if node.state == models.INIT:
                node.state = models.DELETING
            zk.store_node(node)
        finally:
            zk.unlock_node(node)
    request.nodes = []
    request.state = models.REQUESTED
    zk.store_request(request)
