"""Static driver logic that needs no daemon: capacity, slots, staleness."""

from __future__ import annotations

import pytest

from nodepool.driver.static import records
from nodepool.driver.static.capacity import max_assignable
from nodepool.driver.static.config import StaticHost
from nodepool.driver.static.hosts import KEY_MISMATCH, UNREACHABLE, HostHealth, HostProblem
from nodepool.zk import models
from nodepool.zk.models import Node


@pytest.mark.parametrize(("labels", "hosts", "expected"), [
    (["a"], [(["a"], 1)], 1),
    (["a", "a"], [(["a"], 1)], 1),
    (["a", "a"], [(["a"], 2)], 2),
    (["a", "b"], [(["a", "b"], 1)], 1),
    (["a", "b"], [(["a", "b"], 1), (["a"], 1)], 2),  # needs moving "a" over
    (["a", "b", "c"], [(["a", "b"], 1), (["b", "c"], 1), (["a"], 1)], 3),
    (["c"], [(["a", "b"], 5)], 0),
    ([], [(["a"], 1)], 0),
])
def test_max_assignable_matches_labels_to_distinct_slots(labels, hosts, expected):
    assert max_assignable(labels, hosts) == expected


class Pool:
    name = "main"
    node_attributes = {"executor-zone": "z"}


def make_host(**keys) -> StaticHost:
    return StaticHost({"name": "127.0.0.9", "labels": "a b", **keys})


def make_record(host: StaticHost, slot, state=models.READY, created=1.0, node_id="1") -> Node:
    node = records.new_record("p", Pool(), host, slot, ["ssh-ed25519 AAA"], ("127.0.0.9", None))
    node.id = node_id
    node.state = state
    node.created_time = created
    return node


def test_slot_view_keeps_slots_and_reports_excess():
    host = make_host(**{"max-parallel-jobs": 2})
    nodes = [make_record(host, 0, node_id="1"), make_record(host, 0, created=2, node_id="2"),
             make_record(host, 5, node_id="3"), make_record(host, None, node_id="4"),
             make_record(host, 1, state=models.DELETING, node_id="5")]
    view = records.slot_view(host, nodes)
    assert [n.id for n in view.slots] == ["1", "4"]
    assert sorted(n.id for n in view.excess) == ["2", "3"]
    assert view.empty == []


def test_staleness_follows_configuration_and_pinned_keys():
    host = make_host()
    node = make_record(host, 0)
    assert not records.is_stale(node, Pool(), host)
    assert records.is_stale(node, Pool(), make_host(labels="a"))
    assert records.is_stale(node, Pool(), make_host(**{"shell-type": "cmd"}))
    assert records.is_stale(node, Pool(), make_host(**{"host-key": "ssh-rsa BBB"}))
    assert not records.is_stale(node, Pool(), make_host(**{"host-key": "ssh-ed25519 AAA c"}))


def test_record_fields_follow_upstream_static_nodes():
    node = make_record(make_host(username="ci"), 0)
    assert (node.launcher, node.hostname, node.interface_ip, node.external_id) == (
        "static driver", "127.0.0.9", "127.0.0.9", "127.0.0.9")
    assert (node.type, node.username, node.python_path, node.slot) == (
        ["a", "b"], "ci", "auto", 0)
    assert node.attributes == {"executor-zone": "z"} and node.resources is None


def test_health_logs_once_per_state_change(caplog):
    health = HostHealth("h")
    caplog.set_level("INFO", logger="nodepool.driver.static")
    for _ in range(3):
        health.record_problem(HostProblem(UNREACHABLE, "refused"))
    health.record_problem(HostProblem(KEY_MISMATCH, "wrong key"))
    health.record_ok()
    health.record_ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "refused" in messages[0] and "wrong key" in messages[1]
    assert "answers again" in messages[2]
    assert health.due()


def test_health_backs_off_up_to_the_maximum():
    health = HostHealth("h")
    delays = []
    for _ in range(8):
        health.record_problem(HostProblem(UNREACHABLE, "refused"))
        delays.append(health.backoff)
    assert delays[0] == 1.0 and delays[1] == 2.0
    assert delays[-1] == 30.0 and not health.due()
