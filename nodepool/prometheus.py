"""The process's Prometheus registry, fed by :mod:`nodepool.stats`.

Every statsd gauge, counter and timer we send also lands here, under the
names :mod:`nodepool.metrics` declares, whether or not statsd is
configured: operators who run Prometheus have no statsd.  The launcher's
and the builder's web servers serve :meth:`PrometheusMetrics.render` at
``/metrics``.

The registry is our own (not prometheus_client's global one), so nothing
a library registers globally ends up in our output by accident; it also
carries the process and platform collectors (CPU, memory, open files,
Python version).

Gauges that a worker sends as a complete picture (all node states, all
images) can be *replaced* as a whole: label sets the worker no longer
sends (a label removed from the configuration, an image deleted) leave
``/metrics`` instead of showing their last value for ever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

from nodepool import metrics
from nodepool.metrics import COUNTER, GAUGE, TIMER, Family, Key, Metric

log = logging.getLogger("nodepool.prometheus")

# Every counter and histogram would carry a ``_created`` series beside it
# (in the text format, a gauge of its own per label set): twice the series
# for no query anyone writes.  The switch is prometheus_client's, for the
# whole process.
disable_created_metrics()


def _family(spec: Metric | Family, registry: CollectorRegistry) -> Any:
    if spec.kind == GAUGE:
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == COUNTER:
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == TIMER:
        return Histogram(spec.name, spec.help, spec.labels, registry=registry,
                         buckets=spec.buckets or Histogram.DEFAULT_BUCKETS)
    raise ValueError(f"unknown metric kind {spec.kind!r}")


class PrometheusMetrics:
    """One registry with a family for every declared metric."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._families: dict[str, Any] = {}
        specs: list[Metric | Family] = [*metrics.METRICS, *metrics.FAMILIES]
        for spec in specs:
            self._families[spec.name] = _family(spec, self.registry)
        # Label sets each gauge family has, for replace().
        self._series: dict[str, set[tuple[str, ...]]] = {}
        self._lock = threading.Lock()
        self._unmapped: set[str] = set()

    # Feeding ---------------------------------------------------------------

    def family(self, spec: Metric | Family) -> Any:
        return self._families[spec.name]

    def record(self, op: str, key: str, value: float) -> None:
        """Mirror one statsd call (``gauge``, ``incr`` or ``timing``, the
        value in the statsd unit: milliseconds for timings)."""
        parsed = metrics.parse(key)
        if parsed is None:
            self._note_unmapped(key)
            return
        metric = parsed.metric
        values = parsed.label_values()
        family = self._families[metric.name]
        if op == "gauge" and metric.kind == GAUGE:
            if values:
                family.labels(*values).set(value)
                with self._lock:
                    self._series.setdefault(metric.name, set()).add(values)
            else:
                family.set(value)
        elif op == "incr" and metric.kind == COUNTER:
            (family.labels(*values) if values else family).inc(value)
        elif op == "incr" and metric.kind == TIMER:
            # The statsd counter beside a timer is the histogram's _count.
            pass
        elif op == "timing" and metric.kind == TIMER:
            (family.labels(*values) if values else family).observe(value / 1000.0)
        else:
            log.warning("statsd %s of %s does not fit its Prometheus %s %s", op, key,
                        metric.kind, metric.name)

    def _note_unmapped(self, key: str) -> None:
        with self._lock:
            if key in self._unmapped or len(self._unmapped) > 1000:
                return
            self._unmapped.add(key)
        log.warning("statsd key %s has no Prometheus name (build it from "
                    "nodepool.metrics so it maps)", key)

    def replace(self, specs: Iterable[Metric], sent: Iterable[str]) -> None:
        """Drop the label sets of the gauge families ``specs`` that
        ``sent`` (the keys of a complete picture) does not have."""
        keep: dict[str, set[tuple[str, ...]]] = {spec.name: set() for spec in specs}
        for key in sent:
            if isinstance(key, Key) and key.metric.name in keep:
                keep[key.metric.name].add(key.label_values())
        with self._lock:
            stale = {name: self._series.get(name, set()) - wanted
                     for name, wanted in keep.items()}
            for name in keep:
                self._series[name] = self._series.get(name, set()) - stale[name]
        for name, label_sets in stale.items():
            family = self._families[name]
            for values in label_sets:
                try:
                    family.remove(*values)
                except KeyError:
                    pass

    def observe(self, spec: Family, seconds: float, **labels: str) -> None:
        self._families[spec.name].labels(**labels).observe(max(0.0, seconds))

    def inc(self, spec: Family, **labels: str) -> None:
        self._families[spec.name].labels(**labels).inc()

    # Serving ---------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) for a scrape: Prometheus' text format, or
        OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # openstacksdk ----------------------------------------------------------

    def openstack_reporters(self, provider: str) -> tuple[Any, Any]:
        """A (counter, histogram) pair for openstacksdk's Prometheus hooks
        that records its API calls under ``provider``.

        openstacksdk labels its own histogram with each call's full URL,
        resource ids included: one new series per server deleted, which
        grows without bound in a launcher.  These stand-ins take what
        openstacksdk reports and keep the service, method and status only.
        """
        return _NullCounter(), _ApiHistogram(self, provider)


class _ApiHistogram:
    """What openstacksdk's proxies call on a Prometheus histogram."""

    def __init__(self, sink: PrometheusMetrics, provider: str) -> None:
        self.sink = sink
        self.provider = provider

    def labels(self, **labels: Any) -> Any:
        return self.sink.family(metrics.CLOUD_API_DURATION).labels(
            provider=self.provider, service=str(labels.get("service_type") or ""),
            method=str(labels.get("method") or ""),
            status=str(labels.get("status_code") or ""))


class _NullCounter:
    """openstacksdk counts calls beside its histogram; ours has _count."""

    def labels(self, **labels: Any) -> _NullCounter:
        return self

    def inc(self, amount: float = 1) -> None:
        pass
