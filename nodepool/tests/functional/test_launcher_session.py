"""ZooKeeper session loss and connection drops while the launcher works
(OPERATORS.md row 23): nothing is lost, nothing is allocated twice."""

import json
import logging
import threading

from kazoo.recipe.lock import Lock

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import drop_connection, expire_session, fake_config, wait_for


def test_session_expiry_mid_launch_request_still_served(zk_info, zuul, launcher_factory,
                                                        monkeypatch, caplog):
    from nodepool.launcher import deleter
    monkeypatch.setattr(deleter, "INIT_GRACE", 1.0)
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 1.0
    request_id = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
    expire_session(launcher.zk_client)
    request = zuul.wait_request(request_id, timeout=60)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    assert node["state"] == "ready" and node["allocated_to"] == request_id
    # The abandoned half-built node and its server are cleaned up; only the
    # node handed out remains.
    wait_for(lambda: len(cloud.list_servers()) == 1, timeout=60, what="servers removed")
    try:
        wait_for(lambda: zuul.client.get_children("/nodepool/nodes") == [node_id],
                 timeout=30, what="abandoned records removed")
    except AssertionError:
        left = {n: (zuul.node(n), zuul.client.get_children(f"/nodepool/nodes/{n}"))
                for n in zuul.client.get_children("/nodepool/nodes")}
        raise AssertionError(f"left over: {left}") from None
    # A session loss is routine: nothing is logged as an error for it.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_lost_request_seen_late_by_a_lagging_cache_is_taken_over(zk_info, zuul,
                                                                  launcher_factory):
    """Our request lock goes with our session while the request cache is
    still behind (as when the claim's reply was lost with the session):
    the lock cache has nothing more to report once the request cache
    catches up, yet the request is taken over then, not on the next
    cleanup pass (an hour away here)."""
    launcher = launcher_factory(fake_config(zk_info), cleanup_interval=3600)
    FakeCloud.for_provider("fake-provider").boot_delay = 1.0
    release = threading.Event()

    def lag(key, old, new):
        # Hold the request cache's playback at the request's first sight,
        # after the launcher's own listeners have heard of it.
        if old is None and new is not None:
            release.wait(60)

    launcher.request_cache.add_listener(lag)
    try:
        request_id = zuul.submit(["fake-label"])
        wait_for(lambda: zuul.request(request_id)["state"] == "pending", what="pending")
        lock_dir = f"/nodepool/requests-lock/{request_id}"
        old_session = launcher.zk.kazoo.client_id[0]
        expire_session(launcher.zk_client)
        # The server ends the old session's lock, as when it times out.
        for child in zuul.client.get_children(lock_dir):
            stat = zuul.client.exists(f"{lock_dir}/{child}")
            if stat is not None and stat.ephemeralOwner == old_session:
                zuul.client.delete(f"{lock_dir}/{child}")
        wait_for(lambda: launcher.request_lock_cache.contenders(request_id) == 0
                 and not zuul.client.get_children(lock_dir), what="lock gone")
        assert launcher.request_cache.get(request_id).state == "requested"
    finally:
        release.set()
    request = zuul.wait_request(request_id, timeout=60)
    assert request["state"] == "fulfilled"


def test_request_whose_launcher_died_before_our_cache_saw_it_claimed(zk_info, zuul,
                                                                     launcher_factory):
    """Another launcher claims a request and dies while our request cache
    is behind: our lock cache reports the lock gone while the request
    still looks ``requested`` to us.  When the cache catches up, the
    request is taken over then, not on the next cleanup pass (an hour
    away here)."""
    launcher = launcher_factory(fake_config(zk_info), cleanup_interval=3600)
    release = threading.Event()

    def lag(key, old, new):
        if old is None and new is not None:
            release.wait(60)

    # Ahead of the launcher's own listeners: it hears of nothing meanwhile.
    launcher.request_cache._listeners.insert(0, lag)
    try:
        request_id = zuul.submit(["fake-label"])
        wait_for(lambda: launcher.request_cache.get(request_id) is not None, what="seen")
        # The other launcher: lock, mark pending, die.
        lock = Lock(zuul.client, f"/nodepool/requests-lock/{request_id}")
        assert lock.acquire(blocking=False)
        wait_for(lambda: launcher.request_lock_cache.contenders(request_id) == 1,
                 what="lock seen")
        data = zuul.request(request_id)
        data["state"] = "pending"
        zuul.client.set(f"/nodepool/requests/{request_id}", json.dumps(data).encode())
        lock.release()
        wait_for(lambda: launcher.request_lock_cache.contenders(request_id) == 0,
                 what="lock gone")
        assert launcher.request_cache.get(request_id).state == "requested"
    finally:
        release.set()
    request = zuul.wait_request(request_id, timeout=60)
    assert request["state"] == "fulfilled"


def test_connection_drop_resumes_without_loss(zk_info, zuul, launcher_factory):
    launcher = launcher_factory(fake_config(zk_info))
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.boot_delay = 0.5
    first = zuul.submit(["fake-label"])
    wait_for(lambda: zuul.request(first)["state"] == "pending", what="pending")
    drop_connection(launcher.zk_client)
    second = zuul.submit(["fake-label"])
    assert zuul.wait_request(first)["state"] == "fulfilled"
    assert zuul.wait_request(second)["state"] == "fulfilled"
    r1, r2 = zuul.request(first), zuul.request(second)
    assert set(r1["nodes"]).isdisjoint(r2["nodes"])
    assert len(cloud.list_servers()) == 2
