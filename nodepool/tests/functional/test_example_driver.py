"""The example driver end to end: a launcher serving Zuul's requests from
the example cloud's stand-in over HTTP.  A new driver's tests look like
these."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nodepool.tests.example_cloud import ExampleCloud
from nodepool.tests.helpers import wait_for


@pytest.fixture
def cloud() -> Iterator[ExampleCloud]:
    with ExampleCloud() as cloud:
        yield cloud


def config(zk_info, cloud: ExampleCloud, max_servers: int = 10) -> str:
    return zk_info.config_yaml() + f"""
labels:
  - name: small
providers:
  - name: example
    driver: example
    endpoint: {cloud.endpoint}
    launch-retries: 2
    pools:
      - name: main
        max-servers: {max_servers}
        host-key-checking: false
        labels:
          - name: small
            flavor: small
            image: debian
            username: debian
"""


def test_request_served_then_nodes_deleted(zk_info, zuul, launcher_factory, cloud):
    launcher_factory(config(zk_info, cloud))
    request_id = zuul.submit(["small", "small"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    servers = {s["id"]: s for s in cloud.servers()}
    for node_id in request["nodes"]:
        node = zuul.node(node_id)
        server = servers[node["external_id"]]
        assert node["state"] == "ready" and server["status"] == "ACTIVE"
        assert node["interface_ip"] == server["ip"]
        assert node["username"] == "debian" and node["cloud"] == "example"
        assert node["resources"] == {"instances": 1, "cores": 2, "ram": 2048}
        assert server["metadata"]["nodepool_node_id"] == node_id
        assert server["metadata"]["nodepool_provider_name"] == "example"
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: not cloud.servers(), what="servers deleted")


def test_failed_attempt_retried(zk_info, zuul, launcher_factory, cloud):
    cloud.state.fail_creates = 1
    launcher_factory(config(zk_info, cloud))
    request = zuul.wait_request(zuul.submit(["small"]))
    assert request["state"] == "fulfilled"
    assert cloud.state.creates == 2
    # The failed attempt's server was deleted before the second one.
    wait_for(lambda: len(cloud.servers()) == 1, what="failed server deleted")


def test_request_waits_for_quota(zk_info, zuul, launcher_factory, cloud):
    cloud.state.limits["instances"] = 1
    launcher_factory(config(zk_info, cloud))
    first = zuul.submit(["small"])
    assert zuul.wait_request(first)["state"] == "fulfilled"
    nodes = zuul.accept(first)
    waiting = zuul.submit(["small"])
    zuul.return_nodes(nodes)
    # Over quota the request waited (it was neither declined nor failed)
    # and was served once the first node's server was gone.
    request = zuul.wait_request(waiting)
    assert request["state"] == "fulfilled" and request["declined_by"] == []
    assert cloud.state.creates == 2


def test_leaked_server_deleted_foreign_left_alone(zk_info, zuul, launcher_factory, cloud):
    leaked = cloud.add_server("np0000009999", {"nodepool_provider_name": "example",
                                               "nodepool_node_id": "0000009999"})
    foreign = cloud.add_server("someone-else")
    launcher = launcher_factory(config(zk_info, cloud))
    cleanup = next(w for w in launcher._workers if w.name == "CleanupWorker")
    wait_for(lambda: leaked not in {s["id"] for s in cloud.servers()},
             what="leaked server deleted")
    # Deleted during the second pass at the earliest: one pass had ended.
    assert cleanup.passes >= 1
    assert foreign in {s["id"] for s in cloud.servers()}
