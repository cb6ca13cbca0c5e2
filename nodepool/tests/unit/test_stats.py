"""Metric keys decided without a daemon: launch results, node and request
gauges (the functional side is tests/functional/test_metrics.py)."""

from __future__ import annotations

import openstack.exceptions as sdk_exc
import pytest
from kazoo.exceptions import ConnectionLoss, SessionExpiredError

from nodepool import exceptions
from nodepool.driver.openstack.errors import translate
from nodepool.launcher.stats_worker import addressable_requests, node_gauges
from nodepool.stats import launch_result_key
from nodepool.zk import models
from nodepool.zk.components import PoolComponent


def http(status: int, message: str = "") -> sdk_exc.HttpException:
    return sdk_exc.HttpException(message=message, details=message, http_status=status)


@pytest.mark.parametrize("error, key", [
    (None, "ready"),
    (exceptions.QuotaException("no room"), "error.quota"),
    (exceptions.LaunchStatusException("ERROR"), "error.status"),
    (exceptions.LaunchKeyscanException("no ssh"), "error.keyscan"),
    (exceptions.ServerCreateTimeout("BUILD"), "error.servercreatetimeout"),
    (exceptions.LaunchNetworkException("no fip"), "error.network"),
    (exceptions.CapacityException("none left"), "error.capacity"),
    (exceptions.ImageNotAvailable("no upload"), "error.nodepool"),
    (exceptions.LaunchError("something"), "error.unknown"),
    (RuntimeError("a bug"), "error.unknown"),
    (ConnectionLoss(), "error.unknown"),
    (SessionExpiredError(), "error.zksession"),
    # Cloud errors: quota is upstream's QuotaException, the rest unknown.
    (translate(http(403, "Quota exceeded for cores"), "creating a server", "c"),
     "error.quota"),
    (translate(http(500, "oops"), "creating a server", "c"), "error.unknown"),
    (translate(http(400, "bad flavor"), "creating a server", "c"), "error.unknown"),
])
def test_launch_result_key_is_upstreams(error, key):
    assert launch_result_key(error) == key


def test_lost_session_wins_over_the_error_raised():
    error = exceptions.LaunchStatusException("ERROR")
    assert launch_result_key(error, session_lost=True) == "error.zksession"


def pool(provider: str, name: str | None, labels: list[str]) -> PoolComponent:
    component = PoolComponent("host")
    component.provider_name, component.name, component.supported_labels = (
        provider, name, labels)
    return component


def node(state: str, labels: list[str], provider: str = "p1") -> models.Node:
    n = models.Node("0000000001")
    n.state, n.type, n.provider = state, labels, provider
    return n


def request(labels: list[str], state: str = models.REQUESTED) -> models.NodeRequest:
    r = models.NodeRequest("200-0000000001")
    r.node_types, r.state = labels, state
    return r


def test_node_gauges_zero_fill_registered_names_and_keep_them_raw():
    gauges = node_gauges([pool("p1", "main", ["ubuntu:22.04"])],
                         [node(models.READY, ["ubuntu:22.04"]),
                          node(models.USED, ["gone.label"], provider="old")])
    assert gauges["nodepool.label.ubuntu:22.04.nodes.ready"] == 1
    assert gauges["nodepool.label.ubuntu:22.04.nodes.deleting"] == 0
    assert gauges["nodepool.provider.p1.nodes.ready"] == 1
    assert gauges["nodepool.provider.p1.nodes.hold"] == 0
    assert gauges["nodepool.nodes.used"] == 1
    assert gauges["nodepool.nodes.failed"] == 0
    # Names only nodes still carry are counted, not zero-filled.
    assert gauges["nodepool.label.gone.label.nodes.used"] == 1
    assert "nodepool.label.gone.label.nodes.ready" not in gauges
    assert gauges["nodepool.provider.old.nodes.used"] == 1
    assert len([k for k in gauges if k.startswith("nodepool.nodes.")]) == len(
        models.NODE_STATES)


def test_addressable_requests_per_registered_pool():
    pools = [pool("p1", "main", ["a", "b"]), pool("p1", "other", ["c"]),
             pool("p2", "main", ["a"]), pool("p3", None, ["a"])]
    requests = [request(["a"]), request(["a", "b"], models.FULFILLED),
                request(["c"], models.PENDING), request(["a", "c"]), request(["x"])]
    assert addressable_requests(pools, requests) == {
        "nodepool.provider.p1.pool.main.addressable_requests": 2,
        "nodepool.provider.p1.pool.other.addressable_requests": 1,
        "nodepool.provider.p2.pool.main.addressable_requests": 1,
    }
