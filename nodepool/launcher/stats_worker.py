"""Node and request gauges, sent by one launcher at a time.

The launchers elect a leader (``/nodepool/elections/stats``); only it
sends the cluster-wide gauges (node states, and each pool's addressable
requests), at most about once a second, when nodes changed and at least
every ``interval`` seconds, so several launchers do not multiply the
numbers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from nodepool import stats as statsmod
from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import models

log = logging.getLogger("nodepool.StatsWorker")



class StatsWorker(LauncherWorker):
    def __init__(self, launcher: Any, interval: float = 5.0) -> None:
        super().__init__("StatsWorker")
        self.launcher = launcher
        self.interval = interval
        self._running = True
        self._dirty = threading.Event()
        self._election: Any = None

    def node_changed(self, key: str, old: Any, new: Any) -> None:
        self._dirty.set()

    def stop(self) -> None:
        self._running = False
        self._dirty.set()
        if self._election is not None:
            try:
                self._election.cancel()
            except Exception:
                pass

    def run(self) -> None:
        stats = statsmod.get_stats()
        if not stats.enabled:
            return
        identifier = f"{self.launcher.hostname}-{os.getpid()}"
        while self._running:
            try:
                self._election = self.launcher.zk.election("stats", identifier)
                self._election.run(self._lead)
            except Exception:
                if self._running:
                    log.exception("Stats election failed; retrying")
                    time.sleep(5)

    def _lead(self) -> None:
        while self._running and self.launcher.zk_client.connected:
            self._dirty.wait(self.interval)
            self._dirty.clear()
            try:
                self.emit()
            except Exception:
                log.exception("Could not send stats")
            time.sleep(1.0)

    def emit(self) -> None:
        components = self.launcher.pool_components()
        gauges = node_gauges(components, self.launcher.node_cache.items())
        gauges.update(addressable_requests(components, self.launcher.request_cache.items()))
        # Records we keep but cannot read (see NodeCache); not a state.
        gauges["nodepool.nodes.unreadable"] = len(self.launcher.node_cache.unreadable())
        with statsmod.get_stats().pipeline() as pipe:
            for key, value in gauges.items():
                pipe.gauge(key, value)


def node_gauges(components: Iterable[Any], nodes: Iterable[Any]) -> dict[str, int]:
    """``nodepool.nodes.<state>``, ``nodepool.provider.<provider>.nodes.
    <state>`` and ``nodepool.label.<label>.nodes.<state>``.

    As upstream: every state of every provider and label that a
    registered pool offers is sent, zero included, so a dashboard line
    drops to 0 instead of stopping; providers and labels that only
    nodes still name (a pool since removed) are sent while such nodes
    exist.  Names go into the keys as configured, not normalised.
    """
    components = list(components)
    providers = {p.provider_name for p in components if p.provider_name}
    labels = {label for p in components for label in (p.supported_labels or [])}
    gauges: dict[str, int] = {}
    for state in models.NODE_STATES:
        gauges[f"nodepool.nodes.{state}"] = 0
        for provider in sorted(providers):
            gauges[f"nodepool.provider.{provider}.nodes.{state}"] = 0
    for label in sorted(labels):
        for state in models.NODE_STATES:
            gauges[f"nodepool.label.{label}.nodes.{state}"] = 0
    counts: Counter = Counter()
    for node in nodes:
        counts[f"nodepool.nodes.{node.state}"] += 1
        for label in node.type:
            counts[f"nodepool.label.{label}.nodes.{node.state}"] += 1
        if node.provider:
            counts[f"nodepool.provider.{node.provider}.nodes.{node.state}"] += 1
    gauges.update(counts)
    return gauges


def addressable_requests(components: Iterable[Any],
                         requests: Iterable[Any]) -> dict[str, int]:
    """``nodepool.provider.<provider>.pool.<pool>.addressable_requests``:
    for every registered pool, the node requests in ZooKeeper (whatever
    their state, as upstream counts them) all of whose labels the pool
    offers, i.e. the demand that pool could serve."""
    pools: dict[tuple[str, str], set[str]] = {}
    for component in components:
        if component.name is None or component.provider_name is None:
            continue
        pools[(component.provider_name, component.name)] = set(
            component.supported_labels or [])
    counts = dict.fromkeys(pools, 0)
    for request in requests:
        wanted = set(request.node_types)
        for pool, supported in pools.items():
            if wanted <= supported:
                counts[pool] += 1
    return {f"nodepool.provider.{provider}.pool.{pool}.addressable_requests": count
            for (provider, pool), count in counts.items()}
