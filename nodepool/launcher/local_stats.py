"""This launcher's own ZooKeeper backlog, as gauges (statsd and Prometheus).

Unlike the cluster-wide node gauges (sent by one elected launcher), these
describe one process, so every launcher sends them, under
``nodepool.launcher.<hostname>.zk.``, every ``interval`` seconds:

* ``client.connection_queue``: requests waiting to be sent to ZooKeeper;
* ``node_cache``, ``request_cache``, ``image_cache``: ``event_queue``
  (watch events not yet read) and ``playback_queue`` (reads not yet
  applied).

A backlog that keeps growing means the launcher acts on stale data; the
operator's next step is to look at ZooKeeper's latency and this host's
CPU.  The hostname goes into the key as the system reports it, as
upstream does.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.launcher.worker import LauncherWorker

log = logging.getLogger("nodepool.LocalStats")

INTERVAL = 10.0


class LocalStatsWorker(LauncherWorker):
    """Sends this launcher's ZooKeeper queue sizes periodically."""

    def __init__(self, launcher: Any, interval: float = INTERVAL) -> None:
        super().__init__("LocalStatsWorker")
        self.launcher = launcher
        self.interval = interval
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.emit()
            except Exception:
                log.exception("Could not send local stats; will try again")
            self._stop_event.wait(self.interval)

    def emit(self) -> None:
        launcher = self.launcher
        host = launcher.hostname
        caches = (("node_cache", launcher.node_cache),
                  ("request_cache", launcher.request_cache),
                  ("image_cache", launcher.image_cache))
        with statsmod.get_stats().pipeline() as pipe:
            pipe.gauge(metrics.LAUNCHER_ZK_CONNECTION_QUEUE.key(hostname=host),
                       launcher.zk_client.queued_requests())
            for name, cache in caches:
                pipe.gauge(metrics.LAUNCHER_ZK_EVENT_QUEUE.key(hostname=host, cache=name),
                           cache.event_queue_size())
                pipe.gauge(metrics.LAUNCHER_ZK_PLAYBACK_QUEUE.key(hostname=host, cache=name),
                           cache.playback_queue_size())
