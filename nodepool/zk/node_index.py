"""Sums and subsets of the node records, kept up to date event by event.

A launcher decides, for every request, whether there is room for new nodes
(what the provider's and the pool's nodes use), whether a tenant is over
its limits, and which ready nodes it could hand out.  Recounting those
over every node record for every decision made the launcher's cost grow
with the backlog times the number of nodes.  The node cache feeds every
change to a :class:`NodeIndex`, which adjusts the few numbers and sets a
change touches, so the questions above cost the same however many nodes
and requests there are.

Each node's contribution is remembered, so an event replaces it exactly
(the cache updates lock counts in place: there is no "old" record to
subtract).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from nodepool.zk import models
from nodepool.zk.models import Node

PoolKey = tuple[str | None, str | None]


@dataclass(frozen=True)
class _Contribution:
    provider: str | None
    pool: str | None
    labels: tuple[str, ...]
    # Numeric ``resources`` of the node (None: the record has none, and
    # the provider prices it by its label).
    resources: tuple[tuple[str, float], ...] | None
    tenant: str | None
    allocated_to: str | None
    # Ready, unallocated and unlocked: could be handed out now.
    free: bool
    # Ready and unallocated (locked or not): counts for min-ready.
    ready_unallocated: bool


def _numeric(resources: Any) -> tuple[tuple[str, float], ...] | None:
    if not isinstance(resources, dict):
        return None
    return tuple(sorted((k, v) for k, v in resources.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)))


def _contribution(node: Node) -> _Contribution:
    ready_unallocated = node.state == models.READY and node.allocated_to is None
    return _Contribution(
        provider=node.provider, pool=node.pool,
        # A foreign writer's label that is not text counts by its text (a
        # list or a mapping could not be counted at all).
        labels=tuple(label if isinstance(label, str) else str(label) for label in node.type),
        resources=_numeric(node.resources), tenant=node.tenant_name,
        allocated_to=node.allocated_to,
        free=ready_unallocated and not node.locked,
        ready_unallocated=ready_unallocated)


class NodeIndex:
    """Running totals over node records (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, _Contribution] = {}
        # (provider, pool) -> resource sums of nodes with resources
        self._usage: dict[PoolKey, dict[str, float]] = defaultdict(dict)
        # (provider, pool) -> ids of nodes without resources
        self._unpriced: dict[PoolKey, set[str]] = defaultdict(set)
        # (provider, pool, label) -> ids of nodes that could be handed out
        self._free: dict[tuple[str | None, str | None, str], set[str]] = defaultdict(set)
        self._ready_unallocated: Counter[str] = Counter()
        # label -> node records carrying it, in any state (a label's
        # max-servers); a node with several labels counts for each.
        self._labels: Counter[str] = Counter()
        # label -> bumped whenever a record carrying it goes away (or
        # drops it): room under that label's max-servers, for pools of any
        # provider.
        self._label_freed: Counter[str] = Counter()
        self._tenants: dict[str, dict[str, float]] = defaultdict(dict)
        self._by_request: dict[str, set[str]] = defaultdict(set)
        # provider -> bumped whenever what its pools can do changes (its
        # usage, or the nodes it could hand out): pool workers need not
        # look again for any other node change.
        self._generations: Counter[str | None] = Counter()
        # The highest node id seen: ids are ZooKeeper sequence numbers and
        # events are applied in order, so every node created before it has
        # been seen (or is gone).
        self._max_id = ""

    # Updates (the node cache's playback thread) ---------------------------

    def node_changed(self, key: str, old: Node | None, new: Node | None) -> None:
        """Node-cache listener."""
        contribution = _contribution(new) if new is not None else None
        with self._lock:
            if contribution is not None and key > self._max_id:
                self._max_id = key
            previous = self._nodes.pop(key, None)
            if previous == contribution:
                if contribution is not None:
                    self._nodes[key] = contribution
                return
            if previous is not None:
                self._apply(key, previous, -1)
            if contribution is not None:
                self._nodes[key] = contribution
                self._apply(key, contribution, +1)
            if previous is not None:
                kept = set(contribution.labels) if contribution is not None else set()
                for label in set(previous.labels) - kept:
                    self._label_freed[label] += 1
            if (previous is None or contribution is None
                    or (previous.free, previous.resources)
                    != (contribution.free, contribution.resources)):
                for c in (previous, contribution):
                    if c is not None:
                        self._generations[c.provider] += 1

    def _apply(self, key: str, c: _Contribution, sign: int) -> None:
        pool = (c.provider, c.pool)
        if c.resources is None:
            _toggle(self._unpriced[pool], key, sign)
        else:
            _add(self._usage[pool], c.resources, sign)
        if c.free:
            for label in c.labels:
                _toggle(self._free[(c.provider, c.pool, label)], key, sign)
        if c.ready_unallocated:
            for label in c.labels:
                self._ready_unallocated[label] += sign
        for label in set(c.labels):
            self._labels[label] += sign
            if not self._labels[label]:
                del self._labels[label]
        if c.tenant is not None and c.resources:
            _add(self._tenants[c.tenant], c.resources, sign)
        if c.allocated_to is not None:
            _toggle(self._by_request[c.allocated_to], key, sign)
            if not self._by_request[c.allocated_to]:
                del self._by_request[c.allocated_to]

    # Questions (any thread) ------------------------------------------------

    def seen_past(self, node_id: str) -> bool:
        """Whether the index has seen node ``node_id`` or one created after
        it (so that node is counted, or gone)."""
        with self._lock:
            return len(self._max_id) == len(node_id) and self._max_id >= node_id

    def generation(self, provider: str | None) -> int:
        """Changes so far to what ``provider``'s pools can do (capacity
        used, nodes free to hand out)."""
        with self._lock:
            return self._generations[provider]

    def usage(self, provider: str, pool: str | None = None
              ) -> tuple[dict[str, float], set[str]]:
        """(resource sums, ids of nodes without resources) of the
        provider's nodes (of ``pool``, or all of them), in any state."""
        sums: dict[str, float] = {}
        unpriced: set[str] = set()
        with self._lock:
            for (p, q), usage in self._usage.items():
                if p == provider and (pool is None or q == pool):
                    _add(sums, usage.items(), 1)
            for (p, q), ids in self._unpriced.items():
                if p == provider and (pool is None or q == pool):
                    unpriced |= ids
        return sums, unpriced

    def free(self, provider: str, pool: str, label: str | None = None) -> set[str]:
        """Ids of ready, unallocated, unlocked nodes of the pool (with
        ``label``, or any)."""
        with self._lock:
            if label is not None:
                return set(self._free.get((provider, pool, label), ()))
            out: set[str] = set()
            for (p, q, _), ids in self._free.items():
                if p == provider and q == pool:
                    out |= ids
            return out

    def free_counts(self, provider: str, pool: str) -> Counter[str]:
        """Ready, unallocated, unlocked nodes of the pool per label."""
        with self._lock:
            return Counter({label: len(ids) for (p, q, label), ids in self._free.items()
                            if p == provider and q == pool and ids})

    def ready_unallocated(self, label: str) -> int:
        """Ready nodes of ``label`` not allocated to any request (min-ready)."""
        with self._lock:
            return self._ready_unallocated[label]

    def label_count(self, label: str) -> int:
        """Node records carrying ``label``, in any state, of every
        provider (what a label's ``max-servers`` counts)."""
        with self._lock:
            return self._labels[label]

    def label_generation(self, label: str) -> int:
        """Times a record carrying ``label`` went away (or dropped the
        label): each may have made room under its ``max-servers``."""
        with self._lock:
            return self._label_freed[label]

    def tenant_usage(self, tenant: str) -> dict[str, float]:
        with self._lock:
            return dict(self._tenants.get(tenant, ()))

    def allocated_to(self, request_id: str) -> set[str]:
        """Ids of the nodes allocated to a request."""
        with self._lock:
            return set(self._by_request.get(request_id, ()))


def _add(sums: dict[str, float], values: Any, sign: int) -> None:
    for name, value in values:
        sums[name] = sums.get(name, 0) + sign * value


def _toggle(ids: set[str], key: str, sign: int) -> None:
    if sign > 0:
        ids.add(key)
    else:
        ids.discard(key)
