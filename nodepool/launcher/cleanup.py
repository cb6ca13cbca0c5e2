"""Periodic housekeeping that is not tied to a single event.

Each task is isolated: one failing is logged and the others still run.

* request locks of vanished requests, once older than 8 hours;
* *lost* requests: ``pending`` with nobody holding the lock (a launcher
  died or lost its session while handling them) are taken over or reset
  (normally at once, on the lock's disappearance; this is the safety net);
* leaked cloud resources of each provider (tagged as ours, no record,
  seen on two passes), and the reverse: ready nodes whose server is gone
  from the cloud (seen on two passes) are deleted instead of handed out;
* empty node znodes with no lock contender (a lock taken on a node being
  deleted leaves one behind), removed after two sightings.  Node records
  we cannot *read* (not JSON, an unknown ``state``: a newer writer's) are
  never removed here: the node cache reports them and an operator removes
  them with ``nodepool delete``;
* node requests whose data is not a request at all (not JSON, not an
  object, ``node_types`` not a list of labels), seen on two passes: they
  are rewritten as ``failed`` with every key Zuul reads, so the requestor
  learns of it instead of waiting forever;
* node records of providers that no running launcher serves any more
  (after a grace period): only the record goes, since no launcher can
  reach the cloud; tagged servers left behind are found by the leak
  cleanup of a launcher that serves the provider again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import models
from nodepool.zk.models import NodeRequest

log = logging.getLogger("nodepool.CleanupWorker")

REQUEST_LOCK_MAX_AGE = 8 * 3600
ORPHAN_GRACE = 600.0


class CleanupWorker(LauncherWorker):
    def __init__(self, launcher: Any, interval: float = 60.0,
                 orphan_grace: float = ORPHAN_GRACE) -> None:
        super().__init__("CleanupWorker")
        self.launcher = launcher
        self.interval = interval
        self.orphan_grace = orphan_grace
        self._wake = threading.Event()
        self._running = True
        # Completed passes over every task (operators and tests can tell
        # from it that the cleanup looked).
        self.passes = 0
        self._empty_seen: set[str] = set()
        self._bad_requests_seen: dict[str, int] = {}
        self._orphans: dict[str, float] = {}

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
                         self.cleanup_leaked_resources, self.cleanup_empty_nodes,
                         self.fail_malformed_requests, self.cleanup_orphaned_nodes):
                if not self._running:
                    break
                try:
                    task()
                except Exception:
                    log.exception("Error in cleanup task %s", task.__name__)
            else:
                self.passes += 1

    def cleanup_request_locks(self) -> None:
        removed = self.launcher.zk.delete_stale_request_locks(REQUEST_LOCK_MAX_AGE)
        if removed:
            log.info("Removed %d stale request locks", len(removed))

    def reset_lost_requests(self) -> None:
        """The safety net behind the event-driven take-over of requests
        whose launcher is gone (see :mod:`nodepool.launcher.resume`)."""
        self.launcher.lost_requests.check_all()

    def cleanup_leaked_resources(self) -> None:
        for name, provider in list(self.launcher.providers.items()):
            try:
                counts = provider.cleanup_leaked_resources()
            except Exception:
                log.exception("Leak cleanup of provider %s failed", name)
                continue
            if counts:
                log.info("Provider %s: deleted leaked %s", name, counts)
            try:
                for node_id in provider.vanished_nodes(self.launcher.node_cache.items()):
                    self._retire_vanished(node_id)
            except Exception:
                log.exception("Could not check provider %s for vanished servers", name)

    def _retire_vanished(self, node_id: str) -> None:
        zk = self.launcher.zk
        node = zk.try_lock_node(node_id)
        if node is None:
            return
        try:
            if node.state == models.READY and node.allocated_to is None:
                log.warning("Server %s of ready node %s is gone from the cloud; "
                            "deleting the node", node.external_id, node.id)
                node.state = models.DELETING
                zk.store_node(node)
        finally:
            zk.unlock_node(node)

    def cleanup_empty_nodes(self) -> None:
        """Remove node znodes with no data and no lock contender, seen so on
        two passes.  Anything with data stays, readable or not."""
        zk = self.launcher.zk
        cache = self.launcher.node_cache
        cached = set(cache.keys())
        cached.update(record.id for record in cache.unreadable())
        empty = set()
        for node_id in zk.node_ids():
            if node_id in cached:
                continue
            if not zk.node_is_empty(node_id) or zk.node_lock_contenders(node_id):
                continue
            empty.add(node_id)
            if node_id in self._empty_seen:
                log.info("Removing empty node znode %s", node_id)
                zk.delete_raw_node(node_id)
        self._empty_seen = empty

    def fail_malformed_requests(self) -> None:
        zk = self.launcher.zk
        cached = set(self.launcher.request_cache.keys())
        seen: dict[str, int] = {}
        for request_id in zk.request_ids():
            if request_id in cached:
                continue
            got = zk.get_raw_request(request_id)
            if got is None:
                continue
            data, stat = got
            reason = _malformed_reason(data)
            if reason is None:
                continue
            seen[request_id] = stat.version
            if self._bad_requests_seen.get(request_id) != stat.version:
                continue
            failed = NodeRequest(request_id)
            failed.state = models.FAILED
            failed.created_time = time.time()
            if zk.replace_request_if_version(failed, stat.version):
                log.warning("Failed malformed node request %s: %s", request_id, reason)
        self._bad_requests_seen = seen

    def cleanup_orphaned_nodes(self) -> None:
        """Drop records of nodes whose provider no launcher serves."""
        zk = self.launcher.zk
        served = {p.provider_name for p in self.launcher.pool_components(fresh=True)}
        served.update(self.launcher.config.providers)
        now = time.monotonic()
        orphans: dict[str, float] = {}
        for node in self.launcher.node_cache.items():
            if node.provider in served or node.locked:
                continue
            if node.state in (models.HOLD, models.IN_USE) or (
                    node.state == models.READY and node.allocated_to):
                continue
            first = self._orphans.get(node.id, now)
            orphans[node.id] = first
            if now - first < self.orphan_grace:
                continue
            fresh = zk.try_lock_node(node.id)
            if fresh is None:
                continue
            log.warning("Removing record of node %s: provider %s is not served by any "
                        "launcher (its cloud resources, if any, were not deleted)",
                        node.id, node.provider)
            zk.delete_node(fresh)
            orphans.pop(node.id, None)
        self._orphans = orphans


def _malformed_reason(data: bytes) -> str | None:
    """Why a request znode cannot be a request at all, or None.

    Only structural problems count; records that merely have unknown keys
    or state values written by a newer Zuul are left alone.
    """
    try:
        d = json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, ValueError):
        return "not valid JSON"
    if not isinstance(d, dict):
        return "not a JSON object"
    node_types = d.get("node_types")
    if not isinstance(node_types, list) or not all(isinstance(t, str) for t in node_types):
        return "node_types is not a list of labels"
    return None
