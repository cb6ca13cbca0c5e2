"""Where every metric goes: statsd when configured, Prometheus always.

statsd metrics are sent only when ``STATSD_HOST`` is set (``STATSD_PORT``
defaults to 8125), exactly as upstream; ``STATSD_PREFIX`` (ours, unset by
default) puts a prefix before every key.  Every metric also lands in the
process's Prometheus registry (:mod:`nodepool.prometheus`), served at
``/metrics`` by the launcher's and the builder's web servers, whether or
not statsd is configured.  Callers never check which is on.

Keys are upstream's; build them from the declarations in
:mod:`nodepool.metrics` (``metrics.PROVIDER_NODES.key(provider=p,
state=s)``) so that the Prometheus labels come from the names themselves
rather than from reading a dotted key back.  Every key is listed in
``doc/source/metrics.rst``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from kazoo.exceptions import SessionExpiredError

from nodepool import metrics
from nodepool.exceptions import LaunchError
from nodepool.prometheus import PrometheusMetrics

log = logging.getLogger("nodepool.stats")

READY = "ready"
ERROR_ZKSESSION = "error.zksession"
ERROR_UNKNOWN = "error.unknown"


def normalize(name: str) -> str:
    """statsd key part: dots and colons would split or break the key.

    Upstream applies this only to the requestor (``nodepool.launch.
    requestor.*``) and the tenant-limit keys; every other name goes into
    keys as written in the configuration, and so do ours, so that existing
    dashboards keep matching.
    """
    return str(name).replace(".", "_").replace(":", "_")


def launch_result_key(error: BaseException | None, *, session_lost: bool = False) -> str:
    """The ``<result>`` of ``nodepool.launch.*`` for a launch (attempt)
    that ended with ``error`` (None: the node is ready).

    The mapping is upstream's, which dashboards and alerts are built on:
    losing the ZooKeeper session (our node lock went with it) is
    ``error.zksession`` whatever was raised; a project exception names
    its own kind in ``statsd_key`` (``error.quota``, ``error.status``,
    ``error.keyscan``, ``error.servercreatetimeout``, ...); anything else
    is ``error.unknown``.
    """
    if session_lost or isinstance(error, SessionExpiredError):
        return ERROR_ZKSESSION
    if error is None:
        return READY
    if isinstance(error, LaunchError):
        return error.statsd_key
    return ERROR_UNKNOWN


class Stats:
    """The process's metric sender: statsd (when configured) and Prometheus.

    Nothing here raises into the caller because of a metric: a failure to
    record one is logged and the daemon carries on.
    """

    def __init__(self) -> None:
        self.client: Any = None
        host = os.environ.get("STATSD_HOST")
        if host:
            import statsd
            port = int(os.environ.get("STATSD_PORT", 8125))
            prefix = os.environ.get("STATSD_PREFIX")
            self.client = statsd.StatsClient(host, port, prefix=prefix)
        self.prometheus = PrometheusMetrics()

    @property
    def statsd_enabled(self) -> bool:
        """Whether statsd is configured (``STATSD_HOST``)."""
        return self.client is not None

    @property
    def enabled(self) -> bool:
        """Whether metrics are recorded at all: always, since the
        Prometheus registry takes them even without statsd.  Kept for the
        call sites that skip computing metrics when nobody reads them."""
        return True

    def incr(self, key: str, count: int = 1) -> None:
        if self.client:
            self.client.incr(key, count)
        self._mirror("incr", key, count)

    def gauge(self, key: str, value: float) -> None:
        if self.client:
            self.client.gauge(key, value)
        self._mirror("gauge", key, value)

    def timing(self, key: str, ms: float) -> None:
        if self.client:
            self.client.timing(key, ms)
        self._mirror("timing", key, ms)

    def _mirror(self, op: str, key: str, value: float) -> None:
        try:
            self.prometheus.record(op, key, value)
        except Exception:
            log.exception("Could not record %s %s for Prometheus", op, key)

    def pipeline(self, *, statsd: bool = True,
                 replace: Iterable[metrics.Metric] = ()) -> Pipeline:
        """A batch (one UDP packet for statsd).

        ``statsd=False`` records the batch for Prometheus only (a launcher
        that is not the elected sender of cluster-wide gauges).
        ``replace`` names gauge families the batch sends in full: label
        sets it does not send leave ``/metrics``.
        """
        return Pipeline(self, to_statsd=statsd, replace=tuple(replace))

    def launch_result(self, *, result: str, provider: str, az: str | None,
                      requestor: str | None, ms: float, label: str | None = None) -> None:
        """``nodepool.launch.<result>``, ``nodepool.launch.provider.<p>.
        <result>``, ``nodepool.launch.provider.<p>.<az>.<result>`` (with an
        availability zone) and ``nodepool.launch.requestor.<r>.<result>``
        (with a requestor), each as a timer and a counter.

        As upstream, only the requestor is normalised (it is free text
        from Zuul); provider and zone go in as named.  For Prometheus the
        four keys are one counter, ``nodepool_launches_total{provider, az,
        requestor, result}``, and the time is observed once in
        ``nodepool_launch_duration_seconds{provider, label, result}``
        (``label``: the node's label; empty when the caller does not say).
        """
        if self.client:
            keys = ["nodepool.launch", f"nodepool.launch.provider.{provider}"]
            if az:
                keys.append(f"nodepool.launch.provider.{provider}.{az}")
            if requestor:
                keys.append(f"nodepool.launch.requestor.{normalize(requestor)}")
            with self.client.pipeline() as pipe:
                for key in keys:
                    pipe.timing(f"{key}.{result}", ms)
                    pipe.incr(f"{key}.{result}")
        try:
            self.prometheus.inc(metrics.LAUNCHES, provider=provider, az=az or "",
                                requestor=requestor or "", result=result)
            self.prometheus.observe(metrics.LAUNCH_DURATION, ms / 1000.0,
                                    provider=provider, label=label or "", result=result)
        except Exception:
            log.exception("Could not record the launch result for Prometheus")

    def request_fulfilled(self, *, provider: str, labels: Iterable[str],
                          seconds: float) -> None:
        """A node request was fulfilled ``seconds`` after it was made
        (Prometheus only: statsd has no such key upstream)."""
        try:
            for label in sorted(set(labels)):
                self.prometheus.observe(metrics.REQUEST_FULFIL_DURATION, seconds,
                                        provider=provider, label=label)
        except Exception:
            log.exception("Could not record the request's wait for Prometheus")


class Pipeline:
    """A batch of statsd calls, mirrored to Prometheus when it ends."""

    def __init__(self, stats: Stats, *, to_statsd: bool,
                 replace: tuple[metrics.Metric, ...]) -> None:
        self.stats = stats
        self.to_statsd = to_statsd
        self.replace = replace
        self.ops: list[tuple[str, str, float]] = []

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        # Like statsd's own pipeline, what was batched is sent even if the
        # batch was cut short; only a complete picture replaces one.
        self.send(complete=exc_type is None)

    def incr(self, key: str, count: int = 1) -> None:
        self.ops.append(("incr", key, count))

    def gauge(self, key: str, value: float) -> None:
        self.ops.append(("gauge", key, value))

    def timing(self, key: str, ms: float) -> None:
        self.ops.append(("timing", key, ms))

    def send(self, complete: bool = True) -> None:
        ops, self.ops = self.ops, []
        stats = self.stats
        if stats.client and self.to_statsd and ops:
            with stats.client.pipeline() as pipe:
                for op, key, value in ops:
                    getattr(pipe, op)(key, value)
        for op, key, value in ops:
            stats._mirror(op, key, value)
        if self.replace and complete:
            try:
                stats.prometheus.replace(self.replace,
                                         [key for op, key, _ in ops if op == "gauge"])
            except Exception:
                log.exception("Could not replace Prometheus gauges")


_stats: Stats | None = None
_stats_lock = threading.Lock()


def get_stats() -> Stats:
    """The process-wide stats sender (environment read on first use)."""
    global _stats
    stats = _stats
    if stats is None:
        with _stats_lock:
            if _stats is None:
                _stats = Stats()
            stats = _stats
    return stats


def reset_stats() -> None:
    """Forget the sender: the next use reads the environment again and
    starts an empty Prometheus registry."""
    global _stats
    _stats = None
