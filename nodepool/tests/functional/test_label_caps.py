"""A label's own ``max-servers`` across providers, enforced by a real
launcher serving two fake providers that both offer the label, with the
test playing Zuul."""

from __future__ import annotations

from typing import Any

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.launcher import pool_worker
from nodepool.tests.helpers import (
    NodeRecordWatch,
    assert_request_waits,
    wait_for,
    wait_for_pass,
    wait_for_pool_passes,
)
from nodepool.web.status_snapshot import take_snapshot
from nodepool.zk import models
from nodepool.zk.models import Node

PROVIDERS = ("fake-provider", "fake-provider-2")
LABEL = "fake-label"


def capped_config(zk_info: Any, cap: int | None, *, min_ready: int = 0,
                  pool_max: int = 5, provider_extra: str = "") -> str:
    """Two fake providers with one pool each offering ``fake-label``,
    which may have ``cap`` nodes across both."""
    label = f"  - name: {LABEL}\n    min-ready: {min_ready}\n"
    if cap is not None:
        label += f"    max-servers: {cap}\n"
    providers = "".join(
        f"  - name: {name}\n    cloud: fake\n{provider_extra}"
        "    cloud-images:\n      - name: fake-image\n        image-name: Fake Precise\n"
        f"    pools:\n      - name: main\n        max-servers: {pool_max}\n"
        f"        labels:\n          - name: {LABEL}\n            cloud-image: fake-image\n"
        "            min-ram: 8192\n"
        for name in PROVIDERS)
    return zk_info.config_yaml() + "labels:\n" + label + "providers:\n" + providers


def records(zuul: Any) -> dict[str, dict]:
    out = {}
    for node_id in zuul.client.get_children("/nodepool/nodes"):
        data = zuul.node(node_id)
        if data is not None:
            out[node_id] = data
    return out


def state(zuul: Any, request_id: str) -> str:
    return (zuul.request(request_id) or {}).get("state", "gone")


def min_ready_requests(zuul: Any) -> list[str]:
    return [r for r in zuul.client.get_children("/nodepool/requests") if r.startswith("900-")]


def test_label_cap_holds_across_providers(zk_info, zuul, launcher_factory, statsd):
    watch = NodeRecordWatch(zk_info)
    try:
        launcher = launcher_factory(capped_config(zk_info, cap=2))
        for name in PROVIDERS:
            FakeCloud.for_provider(name).set_hold_in_build(True)
        # One node on each provider, both still building.
        first = [zuul.submit([LABEL], provider=name) for name in PROVIDERS]
        wait_for(lambda: all(state(zuul, r) == "pending" for r in first),
                 what="both requests taken")
        wait_for(lambda: len(records(zuul)) == 2, what="two node records")
        assert sorted(n["provider"] for n in records(zuul).values()) == sorted(PROVIDERS)
        # A burst of requests finds the label at its cap in both pools.
        burst = [zuul.submit([LABEL]) for _ in range(3)]
        for request_id in burst:
            assert_request_waits(zuul, launcher, request_id)
        # The status page says so.
        wait_for(lambda: all(launcher.request_cache.get(r) for r in burst),
                 what="the burst in the launcher's cache")
        snapshot = take_snapshot(launcher)
        assert (snapshot.max_servers, snapshot.label_in_use) == ({LABEL: 2}, {LABEL: 2})
        assert {r.reason for r in snapshot.requests if r.id in burst} == {
            f"waiting for room under max-servers of label {LABEL} (2 of 2 in use)"}
        for name in PROVIDERS:
            FakeCloud.for_provider(name).set_hold_in_build(False)
        for request_id in first:
            assert zuul.wait_request(request_id)["state"] == "fulfilled"
        # Ready and in use, they still count.
        nodes = zuul.accept(first[0])
        for request_id in burst:
            assert_request_waits(zuul, launcher, request_id)
        # One node goes: the first request in line gets its slot, the
        # others keep waiting.
        zuul.return_nodes(nodes)
        assert zuul.wait_request(burst[0])["state"] == "fulfilled"
        for request_id in burst[1:]:
            assert_request_waits(zuul, launcher, request_id)
        assert len(records(zuul)) == 2
        assert watch.most == 2, watch.most
        wait_for(lambda: statsd.has(f"nodepool.label.{LABEL}.max_servers:2|g"),
                 what="the label's max-servers gauge")
    finally:
        watch.close()


def test_room_under_label_cap_wakes_pools_of_every_provider(
        zk_info, zk, zuul, launcher_factory, monkeypatch):
    # Without the safety-net timer, only the events a pool is told about
    # make it look again.
    monkeypatch.setattr(pool_worker, "SAFETY_INTERVAL", 3600.0)
    # A node of the label in a provider no pool here serves (another
    # launcher's): it counts against the cap all the same.
    foreign = Node()
    foreign.state, foreign.type = models.IN_USE, [LABEL]
    foreign.provider, foreign.pool = "another-cloud", "main"
    zk.store_node(foreign)
    launcher = launcher_factory(capped_config(zk_info, cap=1))
    request_id = zuul.submit([LABEL])
    assert_request_waits(zuul, launcher, request_id)
    # It goes: the pools of both providers here may serve now, though
    # neither provider's own nodes changed.
    zuul.client.delete(f"/nodepool/nodes/{foreign.id}", recursive=True)
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"


def test_min_ready_never_exceeds_label_cap(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(capped_config(zk_info, cap=2, min_ready=5))

    def ready() -> set[str]:
        return {i for i, n in records(zuul).items()
                if n["state"] == models.READY and n["allocated_to"] is None}
    wait_for(lambda: len(ready()) == 2, what="two ready nodes")
    ready_ids = ready()
    wait_for(lambda: not min_ready_requests(zuul), what="min-ready requests done")
    wait_for(lambda: ready_ids <= set(launcher.node_cache.keys()),
             what="ready nodes in the launcher's cache")
    # The min-ready check has looked at the full label and asked for
    # nothing more (three short of min-ready).
    wait_for_pass(launcher)
    assert not min_ready_requests(zuul)
    assert set(records(zuul)) == ready_ids


def test_ready_node_reused_at_label_cap(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(capped_config(zk_info, cap=2, min_ready=2))

    def ready() -> set[str]:
        return {i for i, n in records(zuul).items()
                if n["state"] == models.READY and n["allocated_to"] is None}
    wait_for(lambda: len(ready()) == 2, what="two ready nodes")
    ready_ids = ready()
    wait_for(lambda: ready_ids <= set(launcher.node_cache.keys()),
             what="ready nodes in the launcher's cache")
    # At the cap, a request is served from the ready nodes.
    request_id = zuul.submit([LABEL])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    assert set(request["nodes"]) <= ready_ids
    zuul.accept(request_id)
    # No replacement for min-ready: the label is at its cap.
    wait_for(lambda: not min_ready_requests(zuul), what="min-ready requests done")
    wait_for_pass(launcher)
    wait_for_pool_passes(launcher)
    assert not min_ready_requests(zuul)
    assert set(records(zuul)) == ready_ids


def test_request_larger_than_label_cap_fails(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(capped_config(zk_info, cap=2))
    request = zuul.wait_request(zuul.submit([LABEL] * 3))
    assert request["state"] == "failed"
    assert sorted(request["declined_by"]) == sorted(
        w.id for w in launcher.pool_workers.values())
    assert not records(zuul)
    # Within the cap it is served.
    assert zuul.wait_request(zuul.submit([LABEL] * 2))["state"] == "fulfilled"


def test_failed_launch_gives_its_slot_to_the_next_pool(zk_info, zuul, launcher_factory):
    watch = NodeRecordWatch(zk_info)
    try:
        launcher_factory(capped_config(zk_info, cap=1,
                                       provider_extra="    launch-retries: 1\n"))
        FakeCloud.for_provider(PROVIDERS[0]).fail_next_creates(1)
        request_id = zuul.submit([LABEL], provider=PROVIDERS[0])
        # The first provider's launch fails and it declines; the other
        # launches once the failed node is gone.
        request = zuul.wait_request(request_id)
        assert request["state"] == "fulfilled"
        [node_id] = request["nodes"]
        assert zuul.node(node_id)["provider"] == PROVIDERS[1]
        assert watch.most == 1, watch.most
        # Nothing is left holding the slot once that node goes.
        zuul.return_nodes(zuul.accept(request_id))
        assert zuul.wait_request(zuul.submit([LABEL]))["state"] == "fulfilled"
        assert watch.most == 1, watch.most
    finally:
        watch.close()


def test_cloud_quota_refusal_relaunches_within_label_cap(zk_info, zuul, launcher_factory):
    watch = NodeRecordWatch(zk_info)
    try:
        launcher_factory(capped_config(zk_info, cap=1))
        for name in PROVIDERS:
            FakeCloud.for_provider(name).quota_exceeded_next_creates(2)
        request = zuul.wait_request(zuul.submit([LABEL]))
        assert request["state"] == "fulfilled"
        assert request["declined_by"] == []
        # Each aborted node was gone before the next launch began.
        assert watch.most == 1, watch.most
    finally:
        watch.close()


def test_labels_without_a_cap_are_not_limited(zk_info, zuul, launcher_factory):
    launcher_factory(capped_config(zk_info, cap=None, pool_max=2))
    requests = [zuul.submit([LABEL]) for _ in range(4)]
    for request_id in requests:
        assert zuul.wait_request(request_id)["state"] == "fulfilled"
