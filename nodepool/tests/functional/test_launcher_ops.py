"""Launcher operability: metrics, limits, ages, lost requests, reloads."""

import json
import os
import time

from nodepool.tests.helpers import assert_request_waits, fake_config, wait_for, wait_for_pass
from nodepool.zk import models


def nodes(zuul):
    out = {}
    if not zuul.client.exists("/nodepool/nodes"):
        return out
    for node_id in zuul.client.get_children("/nodepool/nodes"):
        data = zuul.node(node_id)
        if data is not None:
            out[node_id] = data
    return out


def test_launch_and_node_metrics(zk_info, zuul, launcher_factory, statsd):
    launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    wait_for(lambda: statsd.has("nodepool.launch.ready:1|c"), what="launch counter")
    assert statsd.has("nodepool.launch.provider.fake-provider.ready:")
    assert statsd.has(f"nodepool.launch.requestor.{zuul.system_id}.ready:")
    wait_for(lambda: statsd.has("nodepool.nodes.ready:1|g"), timeout=60, what="node gauges")
    assert statsd.has("nodepool.provider.fake-provider.nodes.ready:")
    assert statsd.has("nodepool.label.fake-label.nodes.ready:")
    wait_for(lambda: statsd.has("nodepool.provider.fake-provider.max_servers:20|g"),
             what="max_servers gauge")
    assert statsd.has("nodepool.provider.fake-provider.pool.main.addressable_requests:")


def test_tenant_resource_limits_make_requests_wait(zk_info, zuul, launcher_factory):
    extra = ("tenant-resource-limits:\n  - tenant-name: tenant-one\n"
             "    max-servers: 1\n")
    launcher = launcher_factory(fake_config(zk_info, extra=extra))
    first = zuul.submit(["fake-label"])
    zuul.wait_request(first)
    used = zuul.accept(first)
    second = zuul.submit(["fake-label"])
    other_tenant = zuul.submit(["fake-label"], tenant="tenant-two")
    assert zuul.wait_request(other_tenant)["state"] == "fulfilled"
    assert_request_waits(zuul, launcher, second)
    zuul.return_nodes(used)
    assert zuul.wait_request(second)["state"] == "fulfilled"


def test_max_ready_age_deletes_stale_ready_nodes(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(
        zk_info, labels=[{"name": "fake-label", "min-ready": 1, "max-ready-age": 1}]))
    first = wait_for(lambda: [i for i, n in nodes(zuul).items() if n["state"] == "ready"],
                     what="min-ready node")
    wait_for(lambda: first[0] not in nodes(zuul), timeout=60, what="stale node deleted")


def test_lost_pending_request_is_reset_and_served(zk_info, zuul, launcher_factory):
    # A request some launcher accepted and then died with.
    zuul.client.create("/nodepool/requests/200-0000000000", json.dumps({
        "state": "pending", "state_time": time.time(), "node_types": ["fake-label"],
        "declined_by": [], "nodes": [], "reuse": True, "requestor": zuul.system_id,
        "requestor_data": None, "provider": None, "relative_priority": 0,
        "event_id": "e", "created_time": time.time(), "tenant_name": None,
    }).encode(), makepath=True)
    launcher_factory(fake_config(zk_info))
    assert zuul.wait_request("200-0000000000")["state"] == "fulfilled"


def test_provider_preference(zk_info, zuul, launcher_factory):
    config = fake_config(zk_info, name="fake-a")
    second = fake_config(zk_info, name="fake-b").split("providers:\n", 1)[1]
    launcher_factory(config + second)
    for preferred in ("fake-a", "fake-b", "fake-b"):
        request_id = zuul.submit(["fake-label"], provider=preferred)
        request = zuul.wait_request(request_id)
        assert zuul.node(request["nodes"][0])["provider"] == preferred


def test_provider_removed_on_reload(zk_info, zuul, launcher_factory, tmp_path):
    config = fake_config(zk_info, name="fake-a")
    second = fake_config(zk_info, name="fake-b").split("providers:\n", 1)[1]
    launcher = launcher_factory(config + second)
    wait_for(lambda: len(launcher.pool_workers) == 2, what="two pool workers")
    path = tmp_path / "nodepool.yaml"
    path.write_text(config)
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: list(launcher.providers) == ["fake-a"], what="provider removed")
    wait_for(lambda: len(launcher.pool_components(fresh=True)) == 1,
             what="pool unregistered")
    request = zuul.wait_request(zuul.submit(["fake-label"], provider="fake-b"))
    assert zuul.node(request["nodes"][0])["provider"] == "fake-a"


def test_min_ready_not_duplicated_by_two_launchers(zk_info, zuul, launcher_factory):
    config = fake_config(zk_info, labels=[{"name": "fake-label", "min-ready": 3}])
    launchers = [launcher_factory(config, name="a.yaml", hostname="a"),
                 launcher_factory(config, name="b.yaml", hostname="b")]

    def ready():
        return {i for i, n in nodes(zuul).items()
                if n["state"] == models.READY and n["allocated_to"] is None}
    wait_for(lambda: len(ready()) >= 3, what="min-ready filled")
    ready_ids = ready()

    def min_ready_requests():
        return [r for r in zuul.client.get_children("/nodepool/requests")
                if r.startswith("900-")]
    # Each launcher's min-ready check has looked at the three ready nodes
    # (in its own cache) and asked for nothing more; nor is anything
    # still being built for an earlier request.
    for launcher in launchers:
        wait_for(lambda cache=launcher.node_cache: ready_ids <= set(cache.keys()),
                 what="ready nodes in the launcher's cache")
        wait_for(lambda: not min_ready_requests(), what="min-ready requests done")
        wait_for_pass(launcher)
    assert not min_ready_requests()
    assert len([n for n in nodes(zuul).values() if n["state"] != "deleting"]) == 3


def test_registers_launcher_and_pool_components(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    [worker] = launcher.pool_workers.values()
    pools = zuul.client.get_children("/nodepool/components/pool")
    [data] = [json.loads(zuul.client.get(f"/nodepool/components/pool/{p}")[0])
              for p in pools]
    assert data["id"] == worker.id
    assert data["supported_labels"] == ["fake-label"]
    assert data["provider_name"] == "fake-provider" and data["name"] == "main"
    assert "-PoolWorker.fake-provider-main-" in worker.id
    launchers = zuul.client.get_children("/nodepool/components/launcher")
    assert len(launchers) == 1


def test_records_of_unserved_provider_removed_after_grace(zk_info, zuul, launcher_factory):
    from nodepool.zk import ZooKeeper
    from nodepool.zk.models import Node
    client = zk_info.client()
    client.connect(10)
    zk = ZooKeeper(client)
    try:
        ids = {}
        for state in ("ready", "used", "hold"):
            node = Node()
            node.state = state
            node.type = ["fake-label"]
            node.provider = "retired-provider"
            zk.store_node(node)
            ids[state] = node.id
        launcher_factory(fake_config(zk_info), orphan_grace=1.0)
        wait_for(lambda: ids["ready"] not in nodes(zuul) and ids["used"] not in nodes(zuul),
                 timeout=15, what="orphaned records removed")
        assert ids["hold"] in nodes(zuul)
    finally:
        client.disconnect()


def test_ready_node_whose_server_vanished_is_deleted(zk_info, zuul, launcher_factory):
    from nodepool.driver.fake.cloud import FakeCloud
    launcher_factory(fake_config(zk_info, labels=[{"name": "fake-label", "min-ready": 1}]))
    cloud = FakeCloud.for_provider("fake-provider")
    [first] = wait_for(lambda: [i for i, n in nodes(zuul).items() if n["state"] == "ready"],
                       what="min-ready node")
    # Someone deletes the server behind nodepool's back.
    cloud.delete_server(nodes(zuul)[first]["external_id"])
    wait_for(lambda: first not in nodes(zuul), timeout=60, what="dead node removed")
    # min-ready replaces it with a live one.
    wait_for(lambda: [i for i, n in nodes(zuul).items() if n["state"] == "ready"],
             what="replacement")


def test_unmanaged_servers_count_against_quota(zk_info, zuul, launcher_factory):
    from nodepool.driver.fake.cloud import FakeCloud
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.max_instances = 2
    cloud.add_server("someone-elses-server", {"owner": "other"})
    launcher = launcher_factory(fake_config(zk_info))
    first = zuul.submit(["fake-label"])
    assert zuul.wait_request(first)["state"] == "fulfilled"
    used = zuul.accept(first)
    second = zuul.submit(["fake-label"])
    # One slot is taken by a server that is not ours: the request waits.
    assert_request_waits(zuul, launcher, second)
    assert not cloud.create_calls > 1
    zuul.return_nodes(used)
    assert zuul.wait_request(second)["state"] == "fulfilled"
    assert launcher.is_alive()


def test_failed_cloud_delete_is_retried(zk_info, zuul, launcher_factory):
    from nodepool.driver.fake.cloud import FakeCloud
    launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    request_id = zuul.submit(["fake-label"])
    zuul.wait_request(request_id)
    [node_id] = zuul.accept(request_id)
    cloud.fail_next_deletes(2)
    zuul.return_nodes([node_id])
    wait_for(lambda: zuul.node(node_id) is None, timeout=60, what="node deleted after retries")
    assert not cloud.list_servers()
    assert cloud.delete_calls >= 3
