"""The Prometheus side of every metric, decided without a daemon: names
and labels from statsd keys, complete pictures replacing old ones, the
text format, and the mapping table operators read (the daemons are
scraped in tests/functional/test_prometheus.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.launcher.stats_worker import node_gauges
from nodepool.zk import models
from nodepool.zk.components import PoolComponent

DOC = Path(__file__).resolve().parents[3] / "doc" / "source" / "metrics.rst"


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch):
    """A sender with no statsd: Prometheus alone."""
    monkeypatch.delenv("STATSD_HOST", raising=False)
    statsmod.reset_stats()
    yield statsmod.get_stats()
    statsmod.reset_stats()


def samples(stats: statsmod.Stats) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser,
    keyed by (name, sorted labels)."""
    body, content_type = stats.prometheus.render()
    assert content_type.startswith("text/plain")
    text = body.decode()
    found = {}
    count = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            count += 1
    # The parser read every sample line there is.
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert count == len(lines)
    return found


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_statsd_off_still_feeds_prometheus(stats):
    assert not stats.statsd_enabled
    assert stats.enabled
    stats.gauge(metrics.LABEL_NODES.key(label="ubuntu-22.04", state="ready"), 3)
    stats.incr(metrics.PROVIDER_LEAKED.key(provider="cloud.one", type="ports"), 2)
    stats.timing(metrics.IMAGE_UPLOAD.key(image="debian.12", provider="cloud.one"), 1500)
    stats.incr(metrics.IMAGE_UPLOAD.key(image="debian.12", provider="cloud.one"))
    found = samples(stats)
    # Dots in names stay in the label values, not in the metric names.
    assert value(found, "nodepool_label_nodes", label="ubuntu-22.04", state="ready") == 3
    assert value(found, "nodepool_provider_leaked_total", provider="cloud.one",
                 type="ports") == 2
    upload = dict(image="debian.12", provider="cloud.one")
    # The statsd timer and counter of one key are one histogram.
    assert value(found, "nodepool_image_upload_duration_seconds_count", **upload) == 1
    assert value(found, "nodepool_image_upload_duration_seconds_sum", **upload) == 1.5
    assert value(found, "nodepool_image_upload_duration_seconds_bucket", le="5.0",
                 **upload) == 1


def test_structured_keys_are_upstreams_text():
    key = metrics.BUILDER_UPLOAD_STATE.key(hostname="b1.example.org", image="img",
                                           provider="p.1")
    assert key == "nodepool.builder.b1.example.org.image.img.provider.p.1.upload.state"
    assert key.labels == {"hostname": "b1.example.org", "image": "img", "provider": "p.1"}
    with pytest.raises(ValueError):
        metrics.NODES.key(state="ready", provider="x")


def test_plain_keys_of_one_free_name_are_read_back(stats):
    # What the pool workers send as plain strings.
    with stats.pipeline() as pipe:
        pipe.gauge("nodepool.provider.cloud.one.max_servers", math.inf)
        pipe.gauge("nodepool.tenant_limits.tenant_one.cores", 64)
    found = samples(stats)
    assert value(found, "nodepool_provider_max_servers", provider="cloud.one") == math.inf
    assert value(found, "nodepool_tenant_limit", tenant="tenant_one", limit="cores") == 64


def test_ambiguous_or_unknown_plain_keys_are_not_guessed(stats, caplog):
    # "unreadable" could be a state of nodepool.nodes.<state>.
    assert metrics.parse("nodepool.nodes.unreadable") is None
    # Two names that may hold dots: no way to tell where one ends.
    assert metrics.parse("nodepool.builder.h.image.a.b.build.state") is None
    stats.gauge("nodepool.something.new", 1)
    assert "has no Prometheus name" in caplog.text
    assert not any(name.startswith("nodepool_something") for name, _ in samples(stats))


@pytest.mark.parametrize("metric", metrics.METRICS, ids=lambda m: m.name)
def test_every_key_round_trips_when_it_can_be_read_back(metric):
    values = {name: ("ready" if name == "state" else f"{name}-x") for name in metric.labels}
    key = metric.key(**values)
    parsed = metric.parse(str(key))
    if parsed is not None:
        assert parsed.labels == values
    assert metrics.parse(key) is key


def test_a_complete_picture_replaces_the_last_one(stats):
    def emit(labels: list[str]) -> None:
        components = [pool("p1", labels)]
        gauges = node_gauges(components, [node(models.READY, [labels[0]])])
        with stats.pipeline(replace=(metrics.NODES, metrics.PROVIDER_NODES,
                                     metrics.LABEL_NODES)) as pipe:
            for key, count in gauges.items():
                pipe.gauge(key, count)

    emit(["old-label", "kept"])
    found = samples(stats)
    assert value(found, "nodepool_label_nodes", label="old-label", state="ready") == 1
    emit(["kept"])
    found = samples(stats)
    assert value(found, "nodepool_label_nodes", label="kept", state="ready") == 1
    # The label left the configuration: its series leave /metrics.
    assert not any(dict(labels).get("label") == "old-label" for _, labels in found)
    # A batch cut short by an error replaces nothing.
    with pytest.raises(RuntimeError):
        with stats.pipeline(replace=(metrics.LABEL_NODES,)) as pipe:
            pipe.gauge(metrics.LABEL_NODES.key(label="other", state="ready"), 1)
            raise RuntimeError("cut short")
    found = samples(stats)
    assert value(found, "nodepool_label_nodes", label="kept", state="ready") == 1
    assert value(found, "nodepool_label_nodes", label="other", state="ready") == 1


def test_launch_result_is_one_counter_and_a_histogram_per_label(stats):
    stats.launch_result(result="error.status", provider="p1", az="zone.one",
                        requestor="zuul.example.org:1", ms=2000, label="ubuntu-22.04")
    stats.launch_result(result="ready", provider="p1", az=None, requestor=None, ms=4000,
                        label="ubuntu-22.04")
    found = samples(stats)
    # Labels are raw (statsd normalises the requestor; Prometheus needs not).
    assert value(found, "nodepool_launches_total", provider="p1", az="zone.one",
                 requestor="zuul.example.org:1", result="error.status") == 1
    assert value(found, "nodepool_launches_total", provider="p1", az="", requestor="",
                 result="ready") == 1
    assert value(found, "nodepool_launch_duration_seconds_sum", provider="p1",
                 label="ubuntu-22.04", result="ready") == 4.0


def test_request_wait_counts_each_distinct_label(stats):
    stats.request_fulfilled(provider="p1", labels=["a", "a", "b.c"], seconds=12.0)
    found = samples(stats)
    assert value(found, "nodepool_request_fulfil_duration_seconds_count",
                 provider="p1", label="a") == 1
    assert value(found, "nodepool_request_fulfil_duration_seconds_sum",
                 provider="p1", label="b.c") == 12.0


def test_openmetrics_when_the_scraper_asks(stats):
    body, content_type = stats.prometheus.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().rstrip().endswith("# EOF")


def test_the_operators_table_lists_every_metric():
    text = DOC.read_text()
    table = text[text.index("Prometheus names"):]
    for metric in metrics.METRICS:
        statsd = re.sub(r"\{(\w+)\}", r"<\1>", metric.pattern)
        assert f"``{statsd}``" in table, f"{statsd} is not in the table of metrics.rst"
        assert f"``{metric.exposed_name}" in table, metric.exposed_name
    for family in metrics.FAMILIES:
        assert f"``{family.exposed_name}" in table, family.exposed_name
    for pattern in metrics.LAUNCH_KEYS:
        assert "``" + re.sub(r"\{(\w+)\}", r"<\1>", pattern) + "``" in table, pattern


def pool(provider: str, labels: list[str]) -> PoolComponent:
    component = PoolComponent("host")
    component.provider_name, component.name, component.supported_labels = (
        provider, "main", labels)
    return component


def node(state: str, labels: list[str], provider: str = "p1") -> models.Node:
    n = models.Node("0000000001")
    n.state, n.type, n.provider = state, labels, provider
    return n
