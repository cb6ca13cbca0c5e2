"""ZooKeeper session loss and connection drops while the launcher works
(OPERATORS.md row 23): nothing is lost, nothing is allocated twice."""

from kazoo.protocol.connection import _CONNECTION_DROP, _SESSION_EXPIRED

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import fake_config, wait_for


def _inject(launcher, what):
    kazoo = launcher.zk.kazoo
    kazoo._call(what, kazoo.handler.async_result())


def test_session_expiry_mid_launch_request_still_served(zk_info, zuul, launcher_factory,
                                                        monkeypatch):
    from nodepool.launcher import deleter
    monkeypatch.setattr(deleter, "INIT_GRACE", 1.0)
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 1.0
    request_id = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
    generation = launcher.zk_client.session_generation
    _inject(launcher, _SESSION_EXPIRED)
    wait_for(lambda: launcher.zk_client.session_generation > generation
             and launcher.zk_client.connected, timeout=30, what="new session")
    request = zuul.wait_request(request_id, timeout=60)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    assert node["state"] == "ready" and node["allocated_to"] == request_id
    # The abandoned half-built node and its server are cleaned up; only the
    # node handed out remains.
    wait_for(lambda: len(cloud.list_servers()) == 1, timeout=30, what="servers removed")
    try:
        wait_for(lambda: zuul.client.get_children("/nodepool/nodes") == [node_id],
                 timeout=30, what="abandoned records removed")
    except AssertionError:
        left = {n: (zuul.node(n), zuul.client.get_children(f"/nodepool/nodes/{n}"))
                for n in zuul.client.get_children("/nodepool/nodes")}
        raise AssertionError(f"left over: {left}") from None


def test_connection_drop_resumes_without_loss(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 0.5
    first = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(first)["state"] == "pending", what="pending")
    _inject(launcher, _CONNECTION_DROP)
    second = zuul.submit(["fake-label"])
    assert zuul.wait_request(first)["state"] == "fulfilled"
    assert zuul.wait_request(second)["state"] == "fulfilled"
    r1, r2 = zuul.request(first), zuul.request(second)
    assert set(r1["nodes"]).isdisjoint(r2["nodes"])
    assert len(cloud.list_servers()) == 2
