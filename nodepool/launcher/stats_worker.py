"""Node and request gauges, sent by one launcher at a time.

The launchers elect a leader (``/nodepool/elections/stats``); only it
sends the cluster-wide gauges, at most about once a second and only when
nodes changed, so several launchers do not multiply the numbers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from nodepool import stats as statsmod
from nodepool.zk import models

log = logging.getLogger("nodepool.StatsWorker")

ELECTION_PATH = "/nodepool/elections/stats"


class StatsWorker(threading.Thread):
    def __init__(self, launcher: Any, interval: float = 5.0) -> None:
        super().__init__(name="StatsWorker", daemon=True)
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
                self._election = self.launcher.zk.kazoo.Election(ELECTION_PATH, identifier)
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
        stats = statsmod.get_stats()
        components = self.launcher.pool_components()
        config = self.launcher.config
        providers = {p.provider_name for p in components if p.provider_name}
        providers.update(config.providers)
        labels = {label for p in components for label in (p.supported_labels or [])}
        labels.update(config.labels)
        totals: Counter = Counter()
        by_provider: Counter = Counter()
        by_label: Counter = Counter()
        for node in self.launcher.node_cache.items():
            totals[node.state] += 1
            if node.provider:
                by_provider[(node.provider, node.state)] += 1
            for label in node.type:
                by_label[(label, node.state)] += 1
        unreadable = len(self.launcher.node_cache.unreadable())
        with stats.pipeline() as pipe:
            # Records we keep but cannot read (see NodeCache); not a state.
            pipe.gauge("nodepool.nodes.unreadable", unreadable)
            for state in models.NODE_STATES:
                pipe.gauge(f"nodepool.nodes.{state}", totals[state])
                for provider in providers:
                    pipe.gauge(f"nodepool.provider.{provider}.nodes.{state}",
                               by_provider[(provider, state)])
                for label in labels:
                    pipe.gauge(f"nodepool.label.{statsmod.normalize(label)}.nodes.{state}",
                               by_label[(label, state)])
