"""Periodic housekeeping that is not tied to a single event.

Each task is isolated: one failing is logged and the others still run.

* request locks of vanished requests, once older than 8 hours;
* *lost* requests: ``pending`` with nobody holding the lock (a launcher
  died or lost its session while handling them) go back to ``requested``
  after their nodes are released, so any launcher can serve them again;
* leaked cloud resources of each provider (tagged as ours, no record,
  seen on two passes);
* node znodes that are empty or unparsable (left by a lock taken on a node
  being deleted), removed after two sightings.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ModelError, NodeRequest

log = logging.getLogger("nodepool.CleanupWorker")

REQUEST_LOCK_MAX_AGE = 8 * 3600


class CleanupWorker(threading.Thread):
    def __init__(self, launcher: Any, interval: float = 60.0) -> None:
        super().__init__(name="CleanupWorker", daemon=True)
        self.launcher = launcher
        self.interval = interval
        self._wake = threading.Event()
        self._running = True
        self._broken_seen: set[str] = set()

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    def reconnected(self) -> None:
        # After a session loss our own requests may be the lost ones.
        self._wake.set()

    def run(self) -> None:
        first = True
        while self._running:
            if not first:
                self._wake.wait(self.interval)
                self._wake.clear()
            first = False
            if not self._running:
                break
            if not self.launcher.zk_client.connected:
                continue
            for task in (self.cleanup_request_locks, self.reset_lost_requests,
                         self.cleanup_leaked_resources, self.cleanup_broken_nodes):
                if not self._running:
                    break
                try:
                    task()
                except Exception:
                    log.exception("Error in cleanup task %s", task.__name__)

    def cleanup_request_locks(self) -> None:
        removed = self.launcher.zk.delete_stale_request_locks(REQUEST_LOCK_MAX_AGE)
        if removed:
            log.info("Removed %d stale request locks", len(removed))

    def reset_lost_requests(self) -> None:
        zk = self.launcher.zk
        handled = {h.request.id for w in list(self.launcher.pool_workers.values())
                   for h in w.handlers}
        for cached in self.launcher.request_cache.items():
            if cached.state != models.PENDING or cached.id in handled:
                continue
            request = NodeRequest.fromDict(cached.toDict(), cached.id)
            try:
                zk.lock_request(request, blocking=False)
            except ZKLockException:
                continue
            try:
                if request.state != models.PENDING:
                    continue
                self._release_request_nodes(request)
                request.nodes = []
                request.state = models.REQUESTED
                zk.store_request(request)
                log.info("Reset lost request %s to requested", request.id)
            finally:
                zk.unlock_request(request)

    def _release_request_nodes(self, request: NodeRequest) -> None:
        zk = self.launcher.zk
        for node in self.launcher.node_cache.items():
            if node.allocated_to != request.id:
                continue
            fresh = zk.get_node(node.id)
            if fresh is None:
                continue
            try:
                zk.lock_node(fresh, blocking=False)
            except ZKLockException:
                continue
            try:
                if fresh.allocated_to != request.id:
                    continue
                fresh.allocated_to = None
                if fresh.state == models.INIT:
                    fresh.state = models.DELETING
                zk.store_node(fresh)
            finally:
                zk.unlock_node(fresh)

    def cleanup_leaked_resources(self) -> None:
        for name, provider in list(self.launcher.providers.items()):
            try:
                counts = provider.cleanup_leaked_resources()
            except Exception:
                log.exception("Leak cleanup of provider %s failed", name)
                continue
            if counts:
                log.info("Provider %s: deleted leaked %s", name, counts)

    def cleanup_broken_nodes(self) -> None:
        zk = self.launcher.zk
        cached = set(self.launcher.node_cache.keys())
        broken = set()
        for node_id in zk.node_ids():
            if node_id in cached:
                continue
            got = zk._get(f"/nodepool/nodes/{node_id}")
            if got is None:
                continue
            try:
                models.Node.deserialize(got[0], node_id)
                continue
            except ModelError:
                pass
            if zk.node_lock_contenders(node_id):
                continue
            broken.add(node_id)
            if node_id in self._broken_seen:
                log.warning("Removing broken node znode %s", node_id)
                zk.delete_raw_node(node_id)
        self._broken_seen = broken
