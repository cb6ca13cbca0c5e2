"""The status page's snapshot and rendering, from records in memory (the
page in a browser against a running launcher is in
functional/test_status_page.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from nodepool.config import Config, Label
from nodepool.driver import ConfigPool, Driver, Provider, ProviderConfig
from nodepool.driver.launch_errors import LaunchErrorLog
from nodepool.web import status_snapshot as snap_mod
from nodepool.web.status_page import human_age, render_page
from nodepool.web.status_snapshot import (
    CAPACITY,
    DECLINED,
    NO_POOL,
    SERVED,
    reason_code,
    reason_text,
    take_snapshot,
)
from nodepool.zk.components import PoolComponent
from nodepool.zk.models import Node, NodeRequest
from nodepool.zk.node_index import NodeIndex

NOW = 1_800_000_000.0


class Cache:
    """Stands in for the launcher's caches: what the page reads of them."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items
        self.paused: set[str] = set()
        self.build_requests: set[str] = set()
        # The node cache's running totals, fed as the cache feeds them.
        self.index = NodeIndex()
        for item in items:
            if isinstance(item, Node):
                self.index.node_changed(str(item.id), None, item)

    def items(self) -> list[Any]:
        return list(self._items)

    def unreadable(self) -> list[Any]:
        return []


def node(node_id: str, state: str = "ready", labels: tuple[str, ...] = ("small",),
         age: float = 0.0) -> Node:
    return Node.fromDict({"state": state, "state_time": NOW - age, "type": list(labels),
                          "provider": "cloud", "pool": "main"}, node_id)


def request(request_id: str, labels: tuple[str, ...] = ("small",), state: str = "requested",
            declined_by: tuple[str, ...] = ()) -> NodeRequest:
    return NodeRequest.fromDict({"state": state, "node_types": list(labels),
                                 "declined_by": list(declined_by), "created_time": NOW - 5,
                                 "state_time": NOW - 5}, request_id)


def pool(labels: list[str]) -> PoolComponent:
    component = PoolComponent("host")
    component.supported_labels = labels
    return component


def launcher(nodes: Sequence[Node] = (), requests: Sequence[NodeRequest] = (),
             components: Sequence[PoolComponent] = (), config: Config | None = None) -> Any:
    return SimpleNamespace(
        hostname="launcher-1", config=config, ready=True,
        zk_client=SimpleNamespace(connected=True), node_cache=Cache(list(nodes)),
        request_cache=Cache(list(requests)), image_cache=Cache([]),
        component_cache=Cache(list(components)), providers={}, pool_workers={},
        label_caps=None)


def test_why_a_request_waits():
    offered = [{"small", "large"}, {"gpu"}]
    assert reason_code(request("1", ("small", "gpu")), offered) == NO_POOL
    assert reason_code(request("1", ("small",)), []) == NO_POOL
    assert reason_code(request("1", ("small",), declined_by=("p1",)), offered) == DECLINED
    assert reason_code(request("1", ("small", "large")), offered) == CAPACITY
    assert reason_code(request("1", state="pending"), offered) == SERVED
    assert reason_code(request("1", state="fulfilled"), offered) == "fulfilled"
    assert reason_code(request("1", state="failed"), offered) == "failed"
    assert reason_text(request("1", declined_by=("a", "b")), DECLINED, []) == (
        "declined by 2 pools; waiting for the others")


def test_a_request_being_served_names_the_pool_serving_it():
    class Worker:
        provider_name, pool_name = "cloud", "main"

        def __init__(self, serves: str) -> None:
            self.serves = serves

        def serving(self, request_id: str) -> bool:
            return request_id == self.serves

    pending = request("100-1", state="pending")
    assert reason_text(pending, SERVED, [Worker("100-2"), Worker("100-1")]) == (
        "being served here by cloud/main")
    assert reason_text(pending, SERVED, [Worker("100-2")]) == (
        "being served by another launcher")


def test_names_from_records_are_escaped():
    hostile = '<script>alert("x")</script>'
    snap = take_snapshot(launcher(
        nodes=[node('"><img src=x onerror=alert(1)>', labels=(hostile,))],
        requests=[request("100-1", (hostile,))]), now=NOW)
    page = render_page(snap)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'data-node-id="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page


def test_page_is_self_contained():
    page = render_page(take_snapshot(launcher(nodes=[node("1")]), now=NOW))
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<meta http-equiv="refresh" content="10">' in page
    # Nothing to fetch: no scripts, stylesheets, images or absolute URLs.
    assert not re.search(r"<script|<link|<img|src=|https?://|url\(", page)


def test_lists_are_bounded_but_counts_are_not(monkeypatch):
    monkeypatch.setattr(snap_mod, "NODE_ROWS", 10)
    monkeypatch.setattr(snap_mod, "REQUEST_ROWS", 10)
    config = Config()
    config.labels = {"small": Label("small", min_ready=2), "idle": Label("idle")}
    nodes = [node(f"{i:010d}", "ready" if i % 2 else "in-use", age=i) for i in range(30)]
    requests = ([request(f"100-{i:010d}", state="fulfilled") for i in range(20)]
                + [request(f"200-{i:010d}") for i in range(20)])
    snap = take_snapshot(launcher(nodes, requests, [pool(["small"])], config), now=NOW)
    assert snap.node_total == 30
    assert snap.node_states == {"ready": 15, "in-use": 15}
    assert snap.label_states == {"idle": {}, "small": {"ready": 15, "in-use": 15}}
    assert snap.min_ready == {"small": 2, "idle": 0}
    # The most recently changed nodes.
    assert [n.id for n in snap.nodes] == [f"{i:010d}" for i in range(10)]
    assert snap.request_total == 40
    assert snap.request_reasons == {"fulfilled": 20, CAPACITY: 20}
    # Open requests first (though of a lower precedence), in serving order.
    assert [r.id for r in snap.requests] == [f"200-{i:010d}" for i in range(10)]
    assert all(r.reason == "waiting for capacity (quota)" for r in snap.requests)


def test_human_age():
    assert [human_age(s) for s in (0, 59, 60, 187, 3600 * 2 + 300, 86400 * 4 + 3 * 3600,
                                   -5)] == ["0s", "59s", "1m 00s", "3m 07s", "2h 05m",
                                            "4d 03h", "0s"]


def test_launch_error_log_keeps_the_newest():
    log = LaunchErrorLog(keep=3)
    for i in range(5):
        log.add(node_id=str(i), labels=["small"], pool="main", outcome="failed",
                error=f"boom {i}", request_id=None, when=NOW + i)
    assert [f.error for f in log.latest()] == ["boom 4", "boom 3", "boom 2"]
    assert log.add(node_id=None, labels=[], pool=None, outcome="aborted", error=None,
                   request_id=None).error == "(no error message)"


def test_pool_quota_from_records_when_the_provider_keeps_no_count():
    class PlainDriver(Driver):
        name = "plain"

    provider_config = ProviderConfig(PlainDriver(), {"name": "cloud"})
    main = ConfigPool("main", provider_config)
    main.max_servers = 5
    main.max_cores = 16
    provider_config.pools = {"main": main}
    config = Config()
    config.providers = {"cloud": provider_config}
    records = [node("1"), node("2"), Node.fromDict(
        {"state": "ready", "provider": "cloud", "pool": "main",
         "resources": {"instances": 1, "cores": 4, "ram": 8192}}, "3"),
        Node.fromDict({"state": "ready", "provider": "cloud", "pool": "other"}, "4"),
        Node.fromDict({"state": "ready", "provider": "elsewhere", "pool": "main"}, "5")]
    view = launcher(records, config=config)
    view.providers = {"cloud": Provider(provider_config)}
    [provider] = take_snapshot(view, now=NOW).providers
    assert provider.started and provider.errors == []
    [pool_status] = provider.pools
    assert pool_status.state == "starting"  # no pool worker yet
    assert [(r.name, r.used, r.pool_limit, r.cloud_limit)
            for r in pool_status.resources] == [
        ("instances", 3, 5, None), ("cores", 4, 16, None), ("ram", 8192, None, None)]
    page = render_page(take_snapshot(view, now=NOW))
    assert ('<li data-resource="instances" data-used="3" data-limit="5">'
            in page)
