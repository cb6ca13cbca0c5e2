"""Node and request gauges of the whole cluster.

For statsd, the launchers elect a leader (``/nodepool/elections/stats``,
only among launchers with statsd configured, as upstream); only it sends
the cluster-wide gauges (node states, and each pool's addressable
requests), at most about once a second, when nodes changed and at least
every ``interval`` seconds, so several launchers do not multiply the
numbers.

For Prometheus every launcher records the same gauges from its own view
of ZooKeeper, elected or not: a scrape of any launcher shows the whole
cluster, a failover leaves no stale numbers behind, and a launcher
without statsd does not take part in (and so cannot win) the statsd
election.  Dashboards aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.launcher.worker import LauncherWorker
from nodepool.zk import models

log = logging.getLogger("nodepool.StatsWorker")

# The families emit() sends in full, every time.
CLUSTER_GAUGES = (metrics.NODES, metrics.NODES_UNREADABLE, metrics.PROVIDER_NODES,
                  metrics.LABEL_NODES, metrics.ADDRESSABLE_REQUESTS)


class StatsWorker(LauncherWorker):
    def __init__(self, launcher: Any, interval: float = 5.0) -> None:
        super().__init__("StatsWorker")
        self.launcher = launcher
        self.interval = interval
        self._running = True
        self._dirty = threading.Event()
        self._stopped = threading.Event()
        self._election: Any = None
        # Set while this launcher is the elected statsd sender.
        self._leading = threading.Event()

    def node_changed(self, key: str, old: Any, new: Any) -> None:
        self._dirty.set()

    def stop(self) -> None:
        self._running = False
        self._stopped.set()
        self._dirty.set()
        if self._election is not None:
            try:
                self._election.cancel()
            except Exception:
                pass

    def run(self) -> None:
        if statsmod.get_stats().statsd_enabled:
            threading.Thread(target=self._campaign, name="StatsElection",
                             daemon=True).start()
        while self._running:
            self._dirty.wait(self.interval)
            self._dirty.clear()
            if not self._running:
                break
            try:
                self.emit(to_statsd=self._leading.is_set())
            except Exception:
                log.exception("Could not record node stats")
            self._stopped.wait(1.0)

    def _campaign(self) -> None:
        identifier = f"{self.launcher.hostname}-{os.getpid()}"
        while self._running:
            try:
                self._election = self.launcher.zk.election("stats", identifier)
                self._election.run(self._lead)
            except Exception:
                if self._running:
                    log.exception("Stats election failed; retrying")
                    self._stopped.wait(5)

    def _lead(self) -> None:
        log.info("Elected to send the cluster's node gauges to statsd")
        self._leading.set()
        self._dirty.set()
        try:
            # Leadership goes with the session: give it up when the
            # connection drops, and stand again.
            while self._running and self.launcher.zk_client.connected:
                self._stopped.wait(1.0)
        finally:
            self._leading.clear()

    def emit(self, to_statsd: bool = True) -> None:
        """Record the cluster-wide gauges (for statsd too if ``to_statsd``)."""
        components = self.launcher.pool_components()
        gauges = node_gauges(components, self.launcher.node_cache.items())
        gauges.update(addressable_requests(components, self.launcher.request_cache.items()))
        # Records we keep but cannot read (see NodeCache); not a state.
        gauges[metrics.NODES_UNREADABLE.key()] = len(self.launcher.node_cache.unreadable())
        with statsmod.get_stats().pipeline(statsd=to_statsd,
                                           replace=CLUSTER_GAUGES) as pipe:
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
        gauges[metrics.NODES.key(state=state)] = 0
        for provider in sorted(providers):
            gauges[metrics.PROVIDER_NODES.key(provider=provider, state=state)] = 0
    for label in sorted(labels):
        for state in models.NODE_STATES:
            gauges[metrics.LABEL_NODES.key(label=label, state=state)] = 0
    counts: Counter = Counter()
    for node in nodes:
        state = node.state
        counts[(None, None, state)] += 1
        for label in node.type:
            counts[("label", label, state)] += 1
        if node.provider:
            counts[("provider", node.provider, state)] += 1
    for (kind, name, state), count in counts.items():
        if kind is None:
            gauges[metrics.NODES.key(state=state)] = count
        elif kind == "label":
            gauges[metrics.LABEL_NODES.key(label=name, state=state)] = count
        else:
            gauges[metrics.PROVIDER_NODES.key(provider=name, state=state)] = count
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
    return {metrics.ADDRESSABLE_REQUESTS.key(provider=provider, pool=pool): count
            for (provider, pool), count in counts.items()}
