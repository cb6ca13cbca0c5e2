"""The metastatic driver in one launcher beside a fake provider that
serves its backing label, against real ZooKeeper, with the test playing
Zuul."""

from __future__ import annotations

import json
import time
from collections import Counter

from nodepool.config import load_config
from nodepool.driver.fake.cloud import FakeCloud
from nodepool.driver.metastatic.adapter import MetastaticAdapter
from nodepool.launcher.cleanup import CleanupWorker
from nodepool.tests.helpers import fake_config, rewrite_config, wait_for
from nodepool.zk import models
from nodepool.zk.models import Node

META = "meta-provider"
OWNER = f"NodePool:metastatic:{META}"
USER_DATA_KEYS = {"owner", "label", "slots", "failed", "launched"}
COPIED = ("interface_ip", "public_ipv4", "public_ipv6", "private_ipv4", "az", "region",
          "cloud", "username", "python_path", "shell_type", "connection_type",
          "connection_port", "host_keys")


def meta_config(zk_info, *, provider_extra: str = "", **label_keys) -> str:
    """A fake provider serving ``big`` and a metastatic provider whose
    label ``meta`` (2 slots, grace-time 60) stands on it; ``nowhere`` is
    offered by no pool."""
    text = fake_config(zk_info, labels=[{"name": "big"}, {"name": "meta"},
                                        {"name": "nowhere"}],
                       pools=("      - name: main\n        max-servers: 20\n"
                              "        node-attributes: {zone: a, shared: backing}\n"
                              "        labels:\n"
                              "          - name: big\n"
                              "            cloud-image: fake-image\n"
                              "            min-ram: 8192\n"))
    label = {"backing-label": "big", "max-parallel-jobs": 2, "grace-time": 60, **label_keys}
    keys = "".join(f"            {key}: {json.dumps(value)}\n" for key, value in label.items())
    return (text + f"  - name: {META}\n    driver: metastatic\n" + provider_extra
            + "    pools:\n      - name: main\n        node-attributes: {shared: meta}\n"
            + "        labels:\n"
            + "          - name: meta\n" + keys)


def fulfilled(zuul, labels: list[str] | None = None, count: int = 1) -> list[str]:
    """Submit ``count`` requests at once; the node of each, once all are
    fulfilled."""
    ids = [zuul.submit(labels or ["meta"]) for _ in range(count)]
    nodes = []
    for request_id in ids:
        request = zuul.wait_request(request_id)
        assert request["state"] == "fulfilled", request
        nodes += request["nodes"]
    return nodes


def backing_of(zuul, node_id: str) -> str:
    return zuul.node(node_id)["driver_data"]["backing_node"]


def big_nodes(zuul) -> list[str]:
    return sorted(n for n in zuul.client.get_children("/nodepool/nodes")
                  if "lock" not in n and (zuul.node(n) or {}).get("type") == ["big"])


def lock_holders(zuul, node_id: str) -> list[str]:
    """Contender data of the node's lock, holder first."""
    path = f"/nodepool/nodes/{node_id}/lock"
    if not zuul.client.exists(path):
        return []
    names = sorted(zuul.client.get_children(path), key=lambda c: c[-10:])
    return [zuul.client.get(f"{path}/{name}")[0].decode() for name in names]


def adapter_of(launcher) -> MetastaticAdapter:
    adapter = launcher.providers[META].adapter
    assert isinstance(adapter, MetastaticAdapter)
    return adapter


def held_slots(launcher) -> set[str]:
    return {r.id for r in adapter_of(launcher).list_resources()}


def test_two_nodes_share_one_backing_node(zk_info, zuul, launcher_factory):
    launcher_factory(meta_config(zk_info))
    first, second = fulfilled(zuul, count=2)
    [backing_id] = big_nodes(zuul)
    backing = zuul.node(backing_id)
    # Requested as Zuul would, by the metastatic provider, at priority 100.
    assert backing["requestor"] == OWNER and backing["allocated_to"].startswith("100-")
    assert zuul.request(backing["allocated_to"]) is None
    assert backing["state"] == "in-use"
    user_data = json.loads(backing["user_data"])
    assert set(user_data) == USER_DATA_KEYS
    assert (user_data["owner"], user_data["label"], user_data["slots"],
            user_data["failed"]) == (OWNER, "meta", 2, False)
    assert abs(user_data["launched"] - time.time()) < 600
    assert lock_holders(zuul, backing_id)[0] == OWNER
    nodes = [zuul.node(n) for n in (first, second)]
    for node_id, node in zip((first, second), nodes, strict=True):
        assert node["provider"] == META and node["state"] == "ready"
        assert {k: node[k] for k in COPIED} == {k: backing[k] for k in COPIED}
        assert node["host_keys"] == ["ssh-rsa FAKEKEY"]
        # The backing node's attributes, under the pool's own.
        assert node["attributes"] == {"zone": "a", "shared": "meta"}
        assert node["external_id"] == node_id
        data = node["driver_data"]
        assert set(data) == {"metadata", "backing_node", "slot", "node"}
        assert (data["backing_node"], data["node"], data["slot"]) == (
            backing_id, node_id, node["slot"])
        assert data["metadata"]["nodepool_node_id"] == node_id
    assert {n["slot"] for n in nodes} == {0, 1}


def test_third_node_takes_a_second_backing_node(zk_info, zuul, launcher_factory):
    launcher_factory(meta_config(zk_info))
    nodes = fulfilled(zuul, count=3)
    backings = big_nodes(zuul)
    assert len(backings) == 2
    assert sorted(Counter(backing_of(zuul, n) for n in nodes).values()) == [1, 2]
    assert {backing_of(zuul, n) for n in nodes} == set(backings)


def test_returned_nodes_release_the_backing_node(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(meta_config(zk_info, **{"grace-time": 1}))
    ids = [zuul.submit(["meta"]) for _ in range(2)]
    nodes = []
    for request_id in ids:
        assert zuul.wait_request(request_id)["state"] == "fulfilled"
        nodes += zuul.accept(request_id)
    [backing_id] = big_nodes(zuul)
    cloud = FakeCloud.for_provider("fake-provider")
    [server] = cloud.list_servers()
    zuul.return_nodes(nodes)
    wait_for(lambda: all(zuul.node(n) is None for n in nodes), what="nodes deleted")
    assert held_slots(launcher) == set()
    # Released after the grace time: used, unlocked, deleted by its provider.
    wait_for(lambda: zuul.node(backing_id) is None, what="backing node deleted")
    wait_for(lambda: cloud.get_server(server.id) is None, what="backing server deleted")
    [node_id] = fulfilled(zuul)
    assert backing_of(zuul, node_id) != backing_id
    assert big_nodes(zuul) == [backing_of(zuul, node_id)]


def test_restarted_launcher_keeps_its_backing_node(zk_info, zuul, launcher_factory):
    text = meta_config(zk_info)
    first = launcher_factory(text)
    request_id = zuul.submit(["meta"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    [in_use] = zuul.accept(request_id)
    [backing_id] = big_nodes(zuul)
    first.stop()
    # The lock outlives the launcher's session.
    assert lock_holders(zuul, backing_id) == [OWNER]
    second = launcher_factory(text, name="second.yaml")
    assert held_slots(second) == {in_use}
    [node_id] = fulfilled(zuul)
    assert backing_of(zuul, node_id) == backing_id
    assert {zuul.node(node_id)["slot"], zuul.node(in_use)["slot"]} == {0, 1}
    assert big_nodes(zuul) == [backing_id]
    zuul.return_nodes([in_use])
    wait_for(lambda: zuul.node(in_use) is None, what="in-use node deleted")
    assert held_slots(second) == {node_id}


def test_ready_node_kept_and_slot_of_vanished_record_freed(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(meta_config(zk_info))
    [node_id] = fulfilled(zuul)
    [worker] = [w for w in launcher._workers if isinstance(w, CleanupWorker)]
    # Enough passes for the vanished-server check to retire it, were its
    # slot not listed.
    passes = worker.passes
    wait_for(lambda: worker.passes >= passes + 3, what="three cleanup passes")
    assert zuul.node(node_id)["state"] == "ready"
    zuul.client.delete(f"/nodepool/nodes/{node_id}", recursive=True)
    # (A new request makes the pool count its usage again, which ends the
    # reservation that shields a freshly launched node from the leak
    # cleanup.)
    [other] = fulfilled(zuul)
    wait_for(lambda: held_slots(launcher) == {other}, what="the leaked slot freed")


def test_replaced_provider_keeps_slots_of_launches_in_flight(zk_info, zuul, launcher_factory,
                                                             tmp_path):
    launcher = launcher_factory(meta_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.set_hold_in_build(True)
    request_id = zuul.submit(["meta"])
    wait_for(lambda: cloud.list_servers(), what="the backing server building")
    old = launcher.providers[META]
    rewrite_config(tmp_path, launcher, meta_config(zk_info, **{"grace-time": 0}))
    wait_for(lambda: launcher.providers[META] is not old, what="the provider replaced")
    # The new provider knows the slot of the launch the old one runs.
    [slot_holder] = held_slots(launcher)
    cloud.set_hold_in_build(False)
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    [node_id] = zuul.accept(request_id)
    assert node_id == slot_holder
    backing_id = backing_of(zuul, node_id)
    zuul.return_nodes([node_id])
    # Freed through the new provider, whose grace time is 0.
    wait_for(lambda: zuul.node(backing_id) is None, what="backing node released")


def test_failed_backing_request_fails_the_request(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(meta_config(zk_info, provider_extra="    launch-retries: 2\n",
                                            **{"backing-label": "nowhere"}))
    request = zuul.wait_request(zuul.submit(["meta"]))
    assert request["state"] == "failed"
    assert not adapter_of(launcher)._backing
    # Each attempt asked for a backing node; no request is left behind,
    # and the failed node goes.
    requests = zuul.client.get_children("/nodepool/requests")
    assert [zuul.request(r)["requestor"] for r in requests] == [zuul.system_id]
    wait_for(lambda: not zuul.client.get_children("/nodepool/nodes"), what="no nodes")


def test_cloud_refusing_the_backing_node_fails_the_request(zk_info, zuul, launcher_factory):
    FakeCloud.for_provider("fake-provider").fail_next_creates(3)
    launcher = launcher_factory(meta_config(zk_info, provider_extra="    launch-retries: 1\n"))
    request = zuul.wait_request(zuul.submit(["meta"]))
    assert request["state"] == "failed"
    assert not adapter_of(launcher)._backing
    wait_for(lambda: not zuul.client.get_children("/nodepool/nodes"), what="no nodes")


def test_backing_node_past_max_age_takes_no_new_nodes(zk_info, zuul, launcher_factory):
    launcher_factory(meta_config(zk_info, **{"max-age": 1}))
    request_id = zuul.submit(["meta"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    [old_node] = zuul.accept(request_id)
    old_backing = backing_of(zuul, old_node)
    launched = json.loads(zuul.node(old_backing)["user_data"])["launched"]
    wait_for(lambda: time.time() - launched > 1, what="the backing node past max-age")
    [new_node] = fulfilled(zuul)
    assert backing_of(zuul, new_node) != old_backing
    # Released as soon as its last node is gone, whatever the grace time.
    zuul.return_nodes([old_node])
    wait_for(lambda: zuul.node(old_backing) is None, what="old backing node deleted")


def test_unscannable_node_fails_its_backing_node(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(meta_config(
        zk_info, provider_extra="    launch-retries: 1\n    boot-timeout: 1\n",
        **{"host-key-checking": True}))
    request = zuul.wait_request(zuul.submit(["meta"]))
    assert request["state"] == "failed"
    # Marked failed, so released at once despite a grace time of 60 s.
    wait_for(lambda: not big_nodes(zuul), what="backing node released and deleted")
    assert not adapter_of(launcher)._backing


# Recovery from malformed records ---------------------------------------------


def store(zk, *, provider: str = "fake-provider", user_data=None, driver_data=None,
          lock_as: str | None = None) -> str:
    node = Node()
    node.state = models.IN_USE if user_data is not None else models.READY
    node.provider = provider
    node.type = ["big"] if provider != META else ["meta"]
    node.user_data = user_data
    node.driver_data = driver_data
    zk.store_node(node)
    if lock_as is not None:
        locked = Node(node.id)
        zk.lock_node(locked, identifier=lock_as, ephemeral=False)
    return str(node.id)


def test_recovery_skips_malformed_records(zk_info, zk, tmp_path):
    path = tmp_path / "nodepool.yaml"
    path.write_text(meta_config(zk_info))
    provider = load_config(str(path)).providers[META]
    good = json.dumps({"owner": OWNER, "label": "meta", "slots": 2, "failed": False,
                       "launched": time.time()})
    backing = store(zk, user_data=good, lock_as=OWNER)
    store(zk, user_data="not json", lock_as=OWNER)
    store(zk, user_data=json.dumps({"owner": OWNER, "label": 5, "slots": "two"}),
          lock_as=OWNER)
    store(zk, user_data=json.dumps(["a", "list"]), lock_as=OWNER)
    # Says it is ours, but the lock is someone else's, or nobody's.
    not_ours = store(zk, user_data=good, lock_as="someone else")
    store(zk, user_data=good)
    holder = store(zk, provider=META, driver_data={"backing_node": backing, "slot": 1})
    # A second claim on the same slot: one of the two keeps it.
    rival = store(zk, provider=META, driver_data={"backing_node": backing, "slot": 1})
    for bad in ("garbage", ["list"], {"backing_node": backing, "slot": "one"},
                {"backing_node": backing, "slot": 7}, {"backing_node": backing},
                {"backing_node": not_ours, "slot": 0}, {"backing_node": 3, "slot": 0}):
        store(zk, provider=META, driver_data=bad)
    adapter = MetastaticAdapter(provider, zk)
    adapter.recover()
    [record] = adapter._backing
    assert (record.node_id, record.label, record.slots) == (backing, "meta", 2)
    assert record.allocated[0] is None and record.allocated[1] in {holder, rival}
    assert {r.id for r in adapter.list_resources()} == {record.allocated[1]}
