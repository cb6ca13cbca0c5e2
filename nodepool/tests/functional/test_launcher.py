"""The launcher against real ZooKeeper and the fake cloud, with the test
playing Zuul's part of the protocol (WIRE.md)."""

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import fake_config, wait_for
from nodepool.zk import models


def test_request_fulfilled_and_used_node_deleted(zk_info, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    assert node["state"] == "ready"
    assert node["allocated_to"] == request_id
    assert node["provider"] == "fake-provider" and node["pool"] == "main"
    assert node["type"] == ["fake-label"]
    assert node["host_keys"] and node["interface_ip"]
    assert node["resources"] == {"instances": 1, "cores": 4, "ram": 8192}
    cloud = FakeCloud.for_provider("fake-provider")
    [server] = cloud.list_servers()
    assert server.metadata["nodepool_node_id"] == node_id
    assert server.metadata["nodepool_provider_name"] == "fake-provider"
    nodes = zuul.accept(request_id)
    zuul.return_nodes(nodes)
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_for(lambda: not cloud.list_servers(), what="server deleted")
