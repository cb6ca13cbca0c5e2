"""Keeping ``min-ready`` ready nodes per label.

For each label short of ready, unallocated nodes, the launcher submits
requests like Zuul's (one node each, priority ``900`` so real work comes
first, ``reuse: false``, ephemeral so they vanish with the launcher).  When
one is fulfilled its nodes are unallocated and the request deleted, which
leaves ready nodes in the pool.

Several launchers must not each top up the same label: the label is
assigned to one of the pools that serve it by rendezvous hashing over the
registered pool ids, and only that pool's launcher submits for it.
Adding or losing a launcher reassigns labels without coordination.

A label's ``max-servers`` bounds the top-up: no request is submitted for
a node that would take the label over its cap (counting the nodes of the
label, the launches not recorded yet and the min-ready requests still
waiting), so min-ready never asks for more than the cap allows.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any

from nodepool.zk import ZKLockException, models
from nodepool.zk.models import NodeRequest

log = logging.getLogger("nodepool.MinReady")


def _score(label: str, pool_id: str) -> bytes:
    return hashlib.sha256(f"{label}\0{pool_id}".encode()).digest()


def owner_pool(label: str, pool_ids: list[str]) -> str | None:
    """The pool responsible for topping up ``label`` (rendezvous hash)."""
    if not pool_ids:
        return None
    return max(pool_ids, key=lambda pool_id: _score(label, pool_id))


class MinReady:
    REQUESTOR = "NodePool:min-ready"
    PRIORITY = "900"

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher

    def run(self) -> None:
        launcher = self.launcher
        requests = [r for r in launcher.request_cache.items()
                    if r.requestor == self.REQUESTOR]
        for request in requests:
            if request.state in (models.FULFILLED, models.FAILED):
                self._finish(request)
        # Fulfilled ones count too until their nodes are unallocated (their
        # nodes are not "ready and unallocated" yet).
        outstanding: Counter[str] = Counter()
        # Not accepted yet: no node or slot counts them.
        waiting: Counter[str] = Counter()
        for request in requests:
            if request.state in (models.REQUESTED, models.PENDING, models.FULFILLED):
                outstanding.update(request.node_types)
            if request.state == models.REQUESTED:
                waiting.update(request.node_types)
        index = launcher.node_cache.index
        our_pools = {w.id: w for w in launcher.pool_workers.values()}
        # Pools that cannot launch (static hosts) have all their nodes
        # ready already; a min-ready request would only wait there.
        reuse_only = {w.id for w in our_pools.values() if not _can_launch(w)}
        components = launcher.pool_components()
        for label in launcher.config.labels.values():
            if label.min_ready <= 0:
                continue
            deficit = (label.min_ready - index.ready_unallocated(label.name)
                       - outstanding[label.name])
            if deficit <= 0:
                continue
            room = launcher.label_caps.room(label.name) - waiting[label.name]
            if room < deficit:
                if room <= 0:
                    continue
                deficit = int(room)
            serving = [p.id for p in components
                       if label.name in (p.supported_labels or [])
                       and p.id not in reuse_only]
            owner = owner_pool(label.name, serving)
            if owner not in our_pools:
                continue
            if not self._label_available(label.name):
                continue
            for _ in range(deficit):
                self._submit(label.name)

    def concerns(self, node: Any) -> bool:
        """Whether a change of ``node`` may call for a top-up (one of its
        labels has a min-ready)."""
        labels = self.launcher.config.labels
        return node is not None and any(
            (label := labels.get(name)) is not None and label.min_ready > 0
            for name in node.type)

    def _label_available(self, label_name: str) -> bool:
        for worker in self.launcher.pool_workers.values():
            try:
                pool = worker.pool
                label = pool.labels.get(label_name)
                if (label is not None and _can_launch(worker)
                        and worker.provider.label_ready(label)):
                    return True
            except Exception:
                log.exception("Could not check label %s", label_name)
        return False

    def _submit(self, label_name: str) -> None:
        request = NodeRequest()
        request.state = models.REQUESTED
        request.node_types = [label_name]
        request.requestor = self.REQUESTOR
        request.reuse = False
        try:
            self.launcher.zk.store_request(request, priority=self.PRIORITY, ephemeral=True)
            log.info("Requested a %s node to keep min-ready (request %s)",
                     label_name, request.id)
        except Exception:
            log.exception("Could not submit min-ready request for %s", label_name)

    def _finish(self, cached: NodeRequest) -> bool:
        """Hand a fulfilled request's nodes to the ready pool; drop it.
        True when done here."""
        zk = self.launcher.zk
        request = NodeRequest.fromDict(cached.toDict(), cached.id)
        try:
            zk.lock_request(request, blocking=False)
        except ZKLockException:
            return False
        try:
            if request.state == models.FULFILLED:
                for node_id in request.nodes:
                    node = zk.try_lock_node(node_id, blocking=True, timeout=10)
                    if node is None:
                        log.warning("Could not lock node %s to unallocate it", node_id)
                        continue
                    try:
                        if node.allocated_to == request.id:
                            node.allocated_to = None
                            zk.store_node(node)
                    finally:
                        zk.unlock_node(node)
            zk.delete_request(request)
        finally:
            zk.unlock_request(request)
        return True


def _can_launch(worker: Any) -> bool:
    try:
        return worker.provider.launches_nodes
    except KeyError:  # provider being replaced or removed
        return False
