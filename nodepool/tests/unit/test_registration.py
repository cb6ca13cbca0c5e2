"""The framework's bookkeeping for registered endpoints (static hosts)
that needs no daemon: slots and health."""

from __future__ import annotations

from nodepool.driver.registration import (
    EndpointHealth,
    EndpointProblem,
    apply_fields,
    new_record,
    slot_view,
)
from nodepool.zk import models
from nodepool.zk.models import Node


def record(slot, node_id: str, state=models.READY, created=1.0) -> Node:
    node = new_record({"hostname": "h"}, slot)
    node.id = node_id
    node.state = state
    node.created_time = created
    return node


def test_slot_view_keeps_slots_and_reports_excess():
    nodes = [record(0, "1"), record(0, "2", created=2), record(5, "3"), record(None, "4"),
             record(1, "5", state=models.DELETING)]
    view = slot_view(2, nodes)
    assert [n.id for n in view.slots] == ["1", "4"]
    assert sorted(n.id for n in view.excess) == ["2", "3"]
    assert view.empty == []


def test_slot_view_is_the_same_whatever_the_order_seen():
    nodes = [record(0, "7", created=3), record(0, "2", created=1), record(0, "5", created=2)]
    first = slot_view(1, nodes)
    second = slot_view(1, list(reversed(nodes)))
    assert [n.id for n in first.slots] == [n.id for n in second.slots] == ["2"]
    assert [n.id for n in first.excess] == [n.id for n in second.excess] == ["5", "7"]


def test_deleting_records_free_their_slot():
    view = slot_view(2, [record(0, "1", state=models.DELETING), record(1, "2")])
    assert view.empty == [0] and [n.id for n in view.records] == ["2"]


def test_apply_fields_reports_changes_only():
    node = record(0, "1")
    assert not apply_fields(node, {"hostname": "h", "slot": 0})
    assert apply_fields(node, {"type": ["a"]}) and node.type == ["a"]


def test_health_logs_once_per_state_change(caplog):
    health = EndpointHealth("Static host h")
    caplog.set_level("INFO", logger="nodepool.driver.registration")
    for _ in range(3):
        health.record_problem(EndpointProblem("unreachable", "refused"))
    health.record_problem(EndpointProblem("host-key-mismatch", "wrong key"))
    health.record_ok()
    health.record_ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0].startswith("Static host h is not offered: refused")
    assert "wrong key" in messages[1]
    assert "answers again" in messages[2]
    assert health.due()


def test_health_backs_off_up_to_the_maximum():
    health = EndpointHealth("h")
    delays = []
    for _ in range(8):
        health.record_problem(EndpointProblem("unreachable", "refused"))
        delays.append(health.backoff)
    assert delays[0] == 1.0 and delays[1] == 2.0
    assert delays[-1] == 30.0 and not health.due()
