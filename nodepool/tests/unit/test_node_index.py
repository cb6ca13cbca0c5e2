"""The node index keeps the sums and sets a launcher decides on, event by
event, exactly as a recount would."""

from __future__ import annotations

import random

from nodepool.zk import models
from nodepool.zk.models import Node
from nodepool.zk.node_index import NodeIndex


def node(node_id: str, *, state=models.READY, provider="p", pool="main", labels=("a",),
         resources=None, allocated=None, tenant=None, locks=0) -> Node:
    n = Node(node_id)
    n.state = state
    n.provider, n.pool, n.type = provider, pool, list(labels)
    n.resources = resources if resources is not None else {"instances": 1, "cores": 2}
    n.allocated_to = allocated
    n.tenant_name = tenant
    n.lock_contenders = locks
    return n


def test_usage_free_and_allocation_follow_changes():
    index = NodeIndex()
    a = node("1")
    index.node_changed("1", None, a)
    index.node_changed("2", None, node("2", pool="other", allocated="r1", tenant="t"))
    index.node_changed("3", None, node("3", resources={}, state=models.BUILDING))
    assert index.usage("p") == ({"instances": 2, "cores": 4}, set())
    assert index.usage("p", "main") == ({"instances": 1, "cores": 2}, set())
    assert index.free("p", "main", "a") == {"1"}
    assert index.allocated_to("r1") == {"2"}
    assert index.tenant_usage("t") == {"instances": 1, "cores": 2}
    # Locked in place (the cache changes the same object): not free.
    generation = index.generation("p")
    a.lock_contenders = 1
    index.node_changed("1", a, a)
    assert index.free("p", "main") == set()
    assert index.generation("p") > generation
    # A change that matters to no pool leaves the generation alone.
    generation = index.generation("p")
    index.node_changed("2", None, node("2", pool="other", allocated="r1", tenant="t",
                                       state=models.IN_USE))
    assert index.generation("p") == generation
    index.node_changed("2", None, None)
    assert index.allocated_to("r1") == set() and index.tenant_usage("t") == {
        "instances": 0, "cores": 0}


def test_nodes_without_resources_are_listed_for_pricing():
    index = NodeIndex()
    index.node_changed("1", None, node("1", resources=None))
    bare = node("2")
    bare.resources = None
    index.node_changed("2", None, bare)
    sums, unpriced = index.usage("p")
    assert unpriced == {"2"} and sums == {"instances": 1, "cores": 2}


def test_random_changes_agree_with_a_recount():
    rng = random.Random(7)
    index = NodeIndex()
    nodes: dict[str, Node] = {}
    for _ in range(2000):
        node_id = str(rng.randrange(50))
        if rng.random() < 0.2:
            nodes.pop(node_id, None)
            index.node_changed(node_id, None, None)
            continue
        n = node(node_id, state=rng.choice([models.READY, models.BUILDING, models.USED]),
                 pool=rng.choice(["main", "other"]), labels=(rng.choice("ab"),),
                 resources={"instances": 1, "cores": rng.choice([1, 2, 4])},
                 allocated=rng.choice([None, "r1", "r2"]), locks=rng.choice([0, 1]))
        nodes[node_id] = n
        index.node_changed(node_id, None, n)
    for pool in ("main", "other"):
        expected = {"instances": 0, "cores": 0}
        for n in nodes.values():
            if n.pool == pool:
                expected["instances"] += 1
                expected["cores"] += n.resources["cores"]
        sums, _ = index.usage("p", pool)
        assert {k: sums.get(k, 0) for k in expected} == expected
        for label in "ab":
            assert index.free("p", pool, label) == {
                i for i, n in nodes.items() if n.pool == pool and label in n.type
                and n.state == models.READY and n.allocated_to is None and not n.locked}
    for label in "ab":
        assert index.ready_unallocated(label) == sum(
            1 for n in nodes.values() if label in n.type and n.state == models.READY
            and n.allocated_to is None)
        assert index.label_count(label) == sum(1 for n in nodes.values() if label in n.type)
