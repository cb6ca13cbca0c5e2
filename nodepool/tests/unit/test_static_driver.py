"""Static driver logic that needs no daemon: capacity, record fields,
staleness."""

from __future__ import annotations

import pytest

from nodepool.driver.registration import new_record
from nodepool.driver.static import StaticDriver, records
from nodepool.driver.static.capacity import max_assignable
from nodepool.driver.static.config import StaticHost, StaticPool, StaticProviderConfig
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


def make_host(**keys) -> StaticHost:
    return StaticHost({"name": "127.0.0.9", "labels": "a b", **keys})


POOL = StaticPool({"name": "main", "node-attributes": {"executor-zone": "z"}},
                  StaticProviderConfig(StaticDriver(), {"name": "p", "driver": "static"}))


def make_record(host: StaticHost, slot) -> Node:
    fields = {**records.config_fields("p", POOL, host),
              **records.checked_fields(["ssh-ed25519 AAA"], ("127.0.0.9", None))}
    node = new_record(fields, slot)
    node.id = "1"
    return node


def test_staleness_follows_configuration_and_pinned_keys():
    host = make_host()
    node = make_record(host, 0)
    assert records.is_current(node, POOL, host)
    for changed in (make_host(labels="a"), make_host(**{"shell-type": "cmd"}),
                    make_host(**{"host-key": "ssh-rsa BBB"})):
        assert not records.is_current(node, POOL, changed)
    pinned_with_comment = make_host(**{"host-key": "ssh-ed25519 AAA c"})
    assert records.is_current(node, POOL, pinned_with_comment)


def test_record_fields_follow_upstream_static_nodes():
    node = make_record(make_host(username="ci"), 0)
    assert node.state == models.READY
    assert (node.launcher, node.hostname, node.interface_ip, node.external_id) == (
        "static driver", "127.0.0.9", "127.0.0.9", "127.0.0.9")
    assert (node.type, node.username, node.python_path, node.slot) == (
        ["a", "b"], "ci", "auto", 0)
    assert node.attributes == {"executor-zone": "z"} and node.resources is None
    assert (node.public_ipv4, node.host_keys, node.node_properties) == (
        "127.0.0.9", ["ssh-ed25519 AAA"], {})
