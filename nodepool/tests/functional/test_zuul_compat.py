"""End to end with the released Zuul 14.3.0 client code.

Zuul's own ``ZooKeeperNodepool`` and ``Nodepool`` classes (from a
virtualenv of their own, installed on first use) submit requests to a
running launcher, accept, use and return nodes.  Marked slow: the first
run installs Zuul (about 30 s).
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

from nodepool.tests.helpers import fake_config, wait_for

DRIVER = pathlib.Path(__file__).resolve().parent.parent / "zuul_compat" / "drive_zuul.py"

pytestmark = pytest.mark.slow


def drive(zuul_python, zk_info, scenario: str, label: str = "fake-label") -> dict:
    """Run a scenario of drive_zuul.py: Zuul asks for two ``label`` nodes."""
    result = subprocess.run(
        [str(zuul_python), str(DRIVER), zk_info.hosts, zk_info.ca, zk_info.cert,
         zk_info.key, scenario, label], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_zuul_request_fulfilled_used_and_returned(zuul_python, zk_info, zuul,
                                                  launcher_factory):
    launcher_factory(fake_config(zk_info))
    result = drive(zuul_python, zk_info, "fulfil")
    assert result["state"] == "fulfilled"
    assert ["%s" % result["request_id"], "fulfilled"] in result["events"]
    assert result["provider"] == "fake-provider"
    assert result["request_exists_after_accept"] is False
    assert len(result["node_data"]) == 2
    for node in result["node_data"]:
        assert node["locked"] and node["allocated_to"] == result["request_id"]
        assert node["interface_ip"] and node["host_keys"]
        assert node["connection_type"] == "ssh" and node["connection_port"] == 22
    assert result["in_use"] == ["in-use", "in-use"]
    # Used nodes are deleted by the launcher.
    for node in result["node_data"]:
        wait_for(lambda n=node: zuul.node(n["id"]) is None, what=f"node {node['id']} deleted")


def test_fake_zuul_writes_nodes_as_zuul_does(zuul_python, zk_info, zuul, launcher_factory):
    # The other tests play Zuul with FakeZuul: its node writes must be
    # Zuul's, keys and state_time included.
    launcher_factory(fake_config(zk_info))
    result = drive(zuul_python, zk_info, "fulfil")
    request_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    [node_id] = zuul.request(request_id)["nodes"]
    before = zuul.node(node_id)
    zuul.accept(request_id)
    in_use = zuul.node(node_id)
    for zuul_before, zuul_in_use in zip(result["before_use"], result["in_use_records"],
                                        strict=True):
        assert set(in_use) == set(zuul_in_use)
        # Zuul stamps state_time whenever it sets a state; so does FakeZuul.
        assert zuul_in_use["state_time"] > zuul_before["state_time"]
    assert in_use["state_time"] > before["state_time"]
    zuul.return_nodes([node_id])


def test_zuul_sees_failed_request(zuul_python, zk_info, launcher_factory):
    launcher_factory(fake_config(zk_info))
    result = drive(zuul_python, zk_info, "fail")
    assert result["state"] == "failed"
    assert result["nodes"] == [] and result["declined_by"]


def test_zuul_early_return_nodes_are_reused(zuul_python, zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    result = drive(zuul_python, zk_info, "early-return")
    ids = [n["id"] for n in result["node_data"]]

    def unallocated_ready():
        return all((zuul.node(i) or {}).get("state") == "ready"
                   and (zuul.node(i) or {}).get("allocated_to") is None for i in ids)
    wait_for(unallocated_ready, what="nodes back in the pool")
    request = zuul.wait_request(zuul.submit(["fake-label", "fake-label"]))
    assert sorted(request["nodes"]) == sorted(ids)


def test_zuul_uses_metastatic_nodes_on_one_backing_node(zuul_python, zk_info, zuul,
                                                        launcher_factory):
    """Zuul takes two metastatic nodes (two slots of one backing node),
    uses and returns them; the slots are freed and the backing node,
    idle within its grace-time, stays held for the next job."""
    from nodepool.tests.functional.test_metastatic_driver import OWNER, big_nodes, meta_config

    launcher = launcher_factory(meta_config(zk_info))
    result = drive(zuul_python, zk_info, "fulfil", "meta")
    assert result["state"] == "fulfilled" and result["provider"] == "meta-provider"
    [backing_id] = big_nodes(zuul)
    backing = zuul.node(backing_id)
    for node in result["node_data"]:
        assert node["locked"] and node["label"] == "meta"
        assert (node["interface_ip"], node["host_keys"]) == (backing["interface_ip"],
                                                             backing["host_keys"])
    assert result["in_use"] == ["in-use", "in-use"]
    for node in result["node_data"]:
        wait_for(lambda n=node: zuul.node(n["id"]) is None, what=f"node {node['id']} deleted")
    adapter = launcher.providers["meta-provider"].adapter
    wait_for(lambda: adapter.list_resources() == [], what="slots freed")
    assert zuul.node(backing_id)["state"] == "in-use"
    assert json.loads(zuul.node(backing_id)["user_data"])["owner"] == OWNER
