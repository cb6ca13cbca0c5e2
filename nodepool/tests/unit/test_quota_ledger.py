"""Reservations count a launch until the node cache has seen its record."""

from __future__ import annotations

from nodepool.driver.quota import QuotaInformation
from nodepool.driver.quota_ledger import QuotaLedger
from nodepool.zk import models
from nodepool.zk.models import Node
from nodepool.zk.node_index import NodeIndex


class Cache:
    """What the ledger reads of a node cache: its index, and records."""

    def __init__(self) -> None:
        self.index = NodeIndex()
        self.nodes: dict[str, Node] = {}

    def get(self, node_id: str) -> Node | None:
        return self.nodes.get(node_id)

    def put(self, node_id: str, node: Node | None) -> None:
        if node is None:
            self.nodes.pop(node_id, None)
        else:
            self.nodes[node_id] = node
        self.index.node_changed(node_id, None, node)


def node(node_id: str) -> Node:
    n = Node(node_id)
    n.state, n.provider, n.pool, n.type = models.READY, "p", "main", ["a"]
    n.resources = {"instances": 1}
    return n


def test_reservation_counts_until_its_record_is_seen():
    cache = Cache()
    ledger = QuotaLedger("p", lambda n: QuotaInformation(instances=1))
    ledger.node_cache = cache
    one = ledger.reserve("main", QuotaInformation(instances=1))
    assert ledger.usage("main").get("instances") == 1
    ledger.bind(one, "0000000001")
    assert ledger.usage("main").get("instances") == 1
    cache.put("0000000001", node("0000000001"))
    # Counted once: as the record, no longer as the reservation.
    assert ledger.usage("main").get("instances") == 1
    assert not ledger.is_reserved("0000000001")


def test_reservation_of_a_node_already_gone_stops_counting():
    # A fast cloud: the node was created, used and deleted before anyone
    # asked for the usage.  Its reservation must not count for a minute.
    cache = Cache()
    ledger = QuotaLedger("p", lambda n: QuotaInformation(instances=1))
    ledger.node_cache = cache
    reservation = ledger.reserve("main", QuotaInformation(instances=1))
    ledger.bind(reservation, "0000000007")
    cache.put("0000000007", node("0000000007"))
    cache.put("0000000007", None)
    assert ledger.usage("main").get("instances", 0) == 0


def test_unbound_reservations_count_until_released():
    cache = Cache()
    ledger = QuotaLedger("p", lambda n: QuotaInformation(instances=1))
    ledger.node_cache = cache
    reservation = ledger.reserve("main", QuotaInformation(instances=1))
    cache.put("0000000009", node("0000000009"))
    assert ledger.usage("main").get("instances") == 2
    ledger.release(reservation)
    assert ledger.usage("main").get("instances") == 1
