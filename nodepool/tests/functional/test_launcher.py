"""The launcher against real ZooKeeper and the fake cloud, with the test
playing Zuul's part of the protocol (WIRE.md)."""

import logging
import os
import time

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import (
    NodeRecordWatch,
    assert_request_waits,
    fake_config,
    wait_for,
    wait_for_pass,
)


def test_request_fulfilled_and_used_node_deleted(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    assert node["state"] == "ready"
    assert node["allocated_to"] == request_id
    assert node["provider"] == "fake-provider" and node["pool"] == "main"
    assert node["type"] == ["fake-label"]
    assert node["host_keys"] and node["interface_ip"]
    assert node["resources"] == {"instances": 1, "cores": 4, "ram": 8192}
    cloud = FakeCloud.for_provider("fake-provider")
    [server] = cloud.list_servers()
    assert server.metadata["nodepool_node_id"] == node_id
    assert server.metadata["nodepool_provider_name"] == "fake-provider"
    nodes = zuul.accept(request_id)
    zuul.return_nodes(nodes)
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_for(lambda: not cloud.list_servers(), what="server deleted")


def two_label_config(zk_info, **kw):
    return fake_config(zk_info, labels=[{"name": "fake-label"}, {"name": "other-label"}], **kw)


def test_multinode_request_in_node_types_order(zk_info, zuul, launcher_factory):
    launcher_factory(two_label_config(zk_info))
    labels = ["other-label", "fake-label", "other-label"]
    request_id = zuul.submit(labels)
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    assert [zuul.node(n)["type"] for n in request["nodes"]] == [[lbl] for lbl in labels]
    assert len(set(request["nodes"])) == 3
    # The whole set shares one availability zone.
    assert len({zuul.node(n)["az"] for n in request["nodes"]}) == 1


def test_unknown_label_declined_then_failed(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["no-such-label"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "failed"
    [worker] = launcher.pool_workers.values()
    assert request["declined_by"] == [worker.id]
    assert request["nodes"] == []


def test_request_larger_than_max_servers_fails(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info, max_servers=2))
    request_id = zuul.submit(["fake-label"] * 3)
    assert zuul.wait_request(request_id)["state"] == "failed"


def test_ready_node_reused(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info, labels=[{"name": "fake-label", "min-ready": 1}]))
    cloud = FakeCloud.for_provider("fake-provider")

    def ready_unallocated():
        return [n for n in launcher_nodes(zuul)
                if n["state"] == "ready" and n["allocated_to"] is None]
    [ready] = wait_for(ready_unallocated, what="min-ready node")
    creates = cloud.create_calls
    request_id = zuul.submit(["fake-label"])
    request = zuul.wait_request(request_id)
    assert request["nodes"] == [ready["_id"]]
    # min-ready launches a replacement; reuse itself created nothing.
    wait_for(lambda: len(ready_unallocated()) == 1, what="min-ready replacement")
    assert cloud.create_calls == creates + 1


def launcher_nodes(zuul):
    out = []
    for node_id in zuul.client.get_children("/nodepool/nodes"):
        data = zuul.node(node_id)
        if data is not None:
            data["_id"] = node_id
            out.append(data)
    return out


def test_min_ready_replaces_used_node(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info, labels=[{"name": "fake-label", "min-ready": 2}]))

    def ready_ids():
        return sorted(n["_id"] for n in launcher_nodes(zuul)
                      if n["state"] == "ready" and n["allocated_to"] is None)
    first = wait_for(lambda: len(ready_ids()) == 2 and ready_ids(), what="2 ready")
    request_id = zuul.submit(["fake-label"])
    zuul.wait_request(request_id)
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: len(ready_ids()) == 2 and set(ready_ids()) != set(first),
             what="min-ready refilled")
    # No min-ready requests are left behind.
    wait_for(lambda: not [r for r in zuul.client.get_children("/nodepool/requests")
                          if r.startswith("900-")], what="min-ready requests cleaned")


def test_requests_served_in_priority_order(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info, max_servers=1))
    # Occupy the only slot so the next requests queue up.
    first = zuul.submit(["fake-label"])
    zuul.wait_request(first)
    held = zuul.accept(first)
    low = zuul.submit(["fake-label"], priority="300")
    normal_late = zuul.submit(["fake-label"], priority="200", relative_priority=5)
    normal_early = zuul.submit(["fake-label"], priority="200", relative_priority=1)
    high = zuul.submit(["fake-label"], priority="100")
    order = []
    pending = [low, normal_late, normal_early, high]
    zuul.return_nodes(held)
    while pending:
        done = wait_for(lambda: [r for r in pending
                                 if zuul.request(r)["state"] == "fulfilled"], what="next")
        assert len(done) == 1, done
        order.append(done[0])
        pending.remove(done[0])
        zuul.return_nodes(zuul.accept(done[0]))
    assert order == [high, normal_early, normal_late, low]


def test_quota_wait_then_resume_when_node_deleted(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.max_instances = 2
    a = zuul.submit(["fake-label", "fake-label"])
    zuul.wait_request(a)
    nodes = zuul.accept(a)
    waiting = zuul.submit(["fake-label"])
    # At quota: the request waits, it is neither failed nor declined.
    assert_request_waits(zuul, launcher, waiting)
    zuul.return_nodes(nodes)
    assert zuul.wait_request(waiting)["state"] == "fulfilled"


def test_launch_retry_then_success(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.fail_next_creates(1, status_error=True)
    cloud.fail_next_creates(1)
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "fulfilled"
    # Failed attempts' servers were deleted; only the good one remains.
    wait_for(lambda: len(cloud.list_servers()) == 1, what="half-built server removed")


def test_launch_failure_fails_request_and_cleans_up(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info, provider_extra="    launch-retries: 2\n"))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.fail_next_creates(5, status_error=True)
    request = zuul.wait_request(zuul.submit(["fake-label", "fake-label"]))
    assert request["state"] == "failed"
    wait_for(lambda: not launcher_nodes(zuul), what="failed nodes deleted")
    wait_for(lambda: not cloud.list_servers(), what="servers deleted")


def test_launch_timeout(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(
        zk_info, provider_extra="    launch-retries: 1\n    launch-timeout: 1\n"))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.set_hold_in_build(True)
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "failed"
    cloud.set_hold_in_build(False)
    wait_for(lambda: not cloud.list_servers(), what="timed-out server deleted")


def test_cloud_over_quota_error_waits_not_fails(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.quota_exceeded_next_creates(2)
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "fulfilled"
    assert request["declined_by"] == []


def test_held_node_untouched_until_expiry(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    zuul.wait_request(request_id)
    [node_id] = zuul.accept(request_id)
    zuul.write_node(node_id, state="hold", hold_job="t p j r", comment="debug",
                    hold_expiration=3600)
    zuul.unlock_node(node_id)
    wait_for(lambda: launcher.node_cache.get(node_id).state == "hold"
             and not launcher.node_cache.get(node_id).locked, what="hold in the cache")
    [deleter] = [w for w in launcher._workers if w.name == "DeletedNodeWorker"]
    wait_for_pass(deleter)
    assert zuul.node(node_id)["state"] == "hold"
    # Its expiry counts from when it was held (Zuul stamps state_time).
    held_at = zuul.node(node_id)["state_time"]
    zuul.write_node(node_id, hold_expiration=1)
    wait_for(lambda: zuul.node(node_id) is None, timeout=60, what="expired hold deleted")
    assert time.time() > held_at + 1


def test_vanished_request_returns_nodes_to_pool(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 0.5
    request_id = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
    zuul.delete_request(request_id)
    wait_for(lambda: [n for n in launcher_nodes(zuul)
                      if n["state"] == "ready" and n["allocated_to"] is None],
             what="node back in the ready pool")


def test_in_use_node_of_dead_executor_reclaimed(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    zuul.wait_request(request_id)
    [node_id] = zuul.accept(request_id)
    # The executor dies: its lock goes away while the node is in-use.
    zuul.unlock_node(node_id)
    wait_for(lambda: zuul.node(node_id) is None, what="orphaned in-use node deleted")


def test_leaked_instance_deleted_after_two_passes(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    leaked = cloud.add_server("np9999999999", {"nodepool_provider_name": "fake-provider",
                                               "nodepool_node_id": "9999999999"})
    foreign = cloud.add_server("someone-else", {"owner": "not-nodepool"})
    other = cloud.add_server("other-provider", {"nodepool_provider_name": "elsewhere",
                                                "nodepool_node_id": "1"})
    wait_for(lambda: leaked.id not in {s.id for s in cloud.list_servers()},
             timeout=15, what="leaked server deleted")
    ids = {s.id for s in cloud.list_servers()}
    assert foreign.id in ids and other.id in ids


def test_config_reload_adds_label(zk_info, zuul, launcher_factory, tmp_path):
    launcher = launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["other-label"])
    assert zuul.wait_request(request_id)["state"] == "failed"
    path = tmp_path / "nodepool.yaml"
    path.write_text(two_label_config(zk_info))
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: "other-label" in launcher.config.labels, what="reload")
    request_id = zuul.submit(["other-label"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"


def test_bad_config_reload_keeps_running(zk_info, zuul, launcher_factory, tmp_path,
                                        caplog):
    launcher = launcher_factory(fake_config(zk_info))
    caplog.set_level(logging.INFO, logger="nodepool")
    path = tmp_path / "nodepool.yaml"
    path.write_text("labels: [oops\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: any("keeping the previous one" in r.getMessage()
                         for r in caplog.records), what="the bad config noticed")
    wait_for_pass(launcher)
    assert launcher.is_alive()
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"


def test_malformed_request_is_failed_and_launcher_lives(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    garbage = zuul.client.create("/nodepool/requests/200-", b"{garbage", sequence=True)
    bad_types = zuul.client.create("/nodepool/requests/200-",
                                   b'{"state": "requested", "node_types": 5}', sequence=True)
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    assert launcher.is_alive()
    for path in (garbage, bad_types):
        request = zuul.wait_request(path.rsplit("/", 1)[1], timeout=60)
        assert request["state"] == "failed"
        assert "requestor_data" in request and "event_id" in request


def test_two_launchers_one_provider(zk_info, zuul, launcher_factory):
    """Two launchers with the same provider pool share it: both launch
    nodes for requests, max-servers holds for the two together at every
    moment, and no node is ever given to two requests."""
    config = fake_config(zk_info, max_servers=4)
    watch = NodeRecordWatch(zk_info)
    try:
        launchers = [launcher_factory(config, name="a.yaml", hostname="launcher-a"),
                     launcher_factory(config, name="b.yaml", hostname="launcher-b")]
        pools = {next(iter(launcher.pool_workers.values())).id for launcher in launchers}
        launched_by: dict[str, str] = {}  # node id -> pool worker id
        given: dict[str, str] = {}  # node id -> request id
        served = 0
        # Rounds of ten requests until each launcher has served some (the
        # first to look might take a whole round; never all of ten).
        for _ in range(10):
            pending = [zuul.submit(["fake-label"]) for _ in range(10)]
            while pending:
                done = wait_for(lambda p=pending: [r for r in p if zuul.request(r)["state"]
                                                   in ("fulfilled", "failed")], 60,
                                what="a request answered")
                for request_id in done:
                    request = zuul.request(request_id)
                    assert request["state"] == "fulfilled", request
                    [node_id] = request["nodes"]
                    assert node_id not in given, (
                        f"node {node_id} given to {given[node_id]} and {request_id}")
                    given[node_id] = request_id
                    launched_by[node_id] = zuul.node(node_id)["launcher"]
                    zuul.return_nodes(zuul.accept(request_id))
                    pending.remove(request_id)
                    served += 1
            if set(launched_by.values()) == pools:
                break
        assert set(launched_by.values()) == pools, (
            f"only {set(launched_by.values())} launched nodes in {served} requests")
        assert all(launcher.is_alive() for launcher in launchers)
        wait_for(lambda: not watch.live, what="all nodes deleted")
        # Watched throughout: never more records than max-servers, and
        # each node allocated to one request only.
        assert 0 < watch.most <= 4, watch.most
        assert {n: {r} for n, r in given.items()} == watch.allocations
    finally:
        watch.close()


def test_stop_finishes_launch_in_flight(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 1.0
    request_id = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
    launcher.stop(grace=10)
    request = zuul.request(request_id)
    assert request["state"] == "fulfilled"
    # Nothing is left locked by the stopped launcher.
    node_id = request["nodes"][0]
    assert not zuul.client.get_children(f"/nodepool/nodes/{node_id}/lock")


def test_pool_change_replaces_provider_without_dropping_requests(
        zk_info, zuul, launcher_factory, tmp_path):
    launcher = launcher_factory(fake_config(zk_info, max_servers=5))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 1.0
    [worker] = launcher.pool_workers.values()
    old_provider = launcher.providers["fake-provider"]
    request_id = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
    path = tmp_path / "nodepool.yaml"
    path.write_text(fake_config(zk_info, max_servers=6))
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: launcher.providers["fake-provider"] is not old_provider, what="replaced")
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    # The same pool worker (same id in declined_by/components) kept running.
    assert list(launcher.pool_workers.values()) == [worker]
    assert launcher.pool_workers and worker.pool.max_servers == 6
