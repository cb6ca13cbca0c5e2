"""statsd metrics as existing dashboards read them: a real launcher sends
to a real UDP socket, and the keys and values are upstream's."""

import socket

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import FakeZuul, fake_config, wait_for

PROVIDER = "nodepool.launch.provider.fake-provider"


def counted(statsd, key):
    """How many times the counter ``key`` was sent."""
    return sum(1 for line in list(statsd.lines) if line == f"{key}:1|c")


def wait_key(statsd, key, timeout=60):
    wait_for(lambda: statsd.has(key), timeout, what=f"{key} in {statsd.lines}")


def gauge_after(statsd, mark, key, value, timeout=60):
    """Wait until the gauge ``key`` is sent as ``value`` after line ``mark``."""
    wanted = f"{key}:{value}|g"
    wait_for(lambda: wanted in statsd.lines[mark:], timeout,
             what=f"{wanted} in {statsd.lines[mark:]}")


def test_ready_launch_keys_name_things_as_upstream(zk_info, launcher_factory, statsd):
    # Upstream normalises only the requestor; label and zone names go in
    # as written, dots included.
    FakeCloud.for_provider("fake-provider").azs = ["zone.one"]
    launcher_factory(fake_config(zk_info, labels=[{"name": "ubuntu-22.04"}]))
    zuul = FakeZuul(zk_info, system_id="zuul.example.org:1")
    try:
        request = zuul.wait_request(zuul.submit(["ubuntu-22.04"]))
        assert request["state"] == "fulfilled"
        for key in ("nodepool.launch.ready", f"{PROVIDER}.ready",
                    f"{PROVIDER}.zone.one.ready",
                    "nodepool.launch.requestor.zuul_example_org_1.ready"):
            wait_key(statsd, f"{key}:1|c")
            assert any(line.startswith(f"{key}:") and line.endswith("|ms")
                       for line in statsd.lines), f"no timer {key}"
        wait_key(statsd, "nodepool.label.ubuntu-22.04.nodes.ready:1|g")
        assert statsd.has("nodepool.label.ubuntu-22.04.nodes.building:")
        assert not statsd.has("nodepool.label.ubuntu-22_04.")
        assert statsd.has("nodepool.provider.fake-provider.nodes.ready:1|g")
        assert statsd.has("nodepool.nodes.ready:1|g")
    finally:
        zuul.close()


def test_each_failed_attempt_counts_under_its_kind(zk_info, zuul, launcher_factory, statsd):
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.azs = ["az1"]
    cloud.fail_next_creates(2, status_error=True)
    launcher_factory(fake_config(zk_info, provider_extra="    launch-retries: 3\n"))
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    wait_key(statsd, f"{PROVIDER}.ready:1|c")
    # Two attempts went to ERROR, the third was ready: upstream counts
    # every failed attempt, with the cumulated time, and no final failure.
    assert counted(statsd, f"{PROVIDER}.error.status") == 2
    assert counted(statsd, "nodepool.launch.error.status") == 2
    assert counted(statsd, f"{PROVIDER}.az1.error.status") == 2
    assert counted(statsd, f"{PROVIDER}.ready") == 1
    assert not statsd.has("nodepool.launch.error.unknown")
    assert not any(".attempt:" in line for line in statsd.lines)


def test_api_failure_is_error_unknown(zk_info, zuul, launcher_factory, statsd):
    FakeCloud.for_provider("fake-provider").fail_next_creates(1)
    launcher_factory(fake_config(zk_info, provider_extra="    launch-retries: 2\n"))
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    wait_key(statsd, f"{PROVIDER}.ready:1|c")
    assert counted(statsd, f"{PROVIDER}.error.unknown") == 1


def test_quota_refusal_counts_error_quota_and_the_request_waits(
        zk_info, zuul, launcher_factory, statsd):
    FakeCloud.for_provider("fake-provider").quota_exceeded_next_creates(1)
    launcher_factory(fake_config(zk_info))
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    wait_key(statsd, f"{PROVIDER}.error.quota:1|c")
    wait_key(statsd, f"{PROVIDER}.ready:1|c")
    assert counted(statsd, "nodepool.launch.error.quota") == 1
    assert not statsd.has("nodepool.launch.error.unknown")


def test_server_never_active_counts_error_servercreatetimeout(
        zk_info, zuul, launcher_factory, statsd):
    cloud = FakeCloud.for_provider("fake-provider")
    cloud.set_hold_in_build(True)
    launcher_factory(fake_config(
        zk_info, provider_extra="    launch-retries: 1\n    launch-timeout: 1\n"))
    request_id = zuul.submit(["fake-label"])
    wait_key(statsd, f"{PROVIDER}.error.servercreatetimeout:1|c")
    assert zuul.wait_request(request_id)["state"] == "failed"
    cloud.set_hold_in_build(False)
    assert counted(statsd, "nodepool.launch.error.servercreatetimeout") == 1
    assert not statsd.has("nodepool.launch.error.unknown")


def test_node_without_ssh_counts_error_keyscan(zk_info, zuul, launcher_factory, statsd):
    # A port nobody listens on: the host-key scan fails at boot-timeout.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    FakeCloud.for_provider("fake-provider").address_for = lambda server: "127.0.0.1"
    config = fake_config(zk_info, provider_extra=(
        "    launch-retries: 1\n    boot-timeout: 1\n")).replace(
        "image-name: Fake Precise\n",
        f"image-name: Fake Precise\n        connection-port: {closed_port}\n")
    launcher_factory(config)
    request_id = zuul.submit(["fake-label"])
    wait_key(statsd, f"{PROVIDER}.error.keyscan:1|c")
    assert zuul.wait_request(request_id)["state"] == "failed"
    assert counted(statsd, "nodepool.launch.error.keyscan") == 1


def test_launcher_sends_its_zookeeper_queue_gauges(zk_info, launcher_factory, statsd):
    launcher = launcher_factory(fake_config(zk_info))
    root = f"nodepool.launcher.{socket.gethostname()}.zk"
    assert launcher.hostname == socket.gethostname()
    keys = [f"{root}.client.connection_queue"] + [
        f"{root}.{cache}.{queue}"
        for cache in ("node_cache", "request_cache", "image_cache")
        for queue in ("event_queue", "playback_queue")]
    for key in keys:
        wait_key(statsd, f"{key}:")
    # Sizes of queues, never negative, idle when nothing happens.
    for key in keys:
        values = [int(line.split(":", 1)[1].split("|")[0])
                  for line in statsd.lines if line.startswith(f"{key}:")]
        assert all(v >= 0 for v in values), (key, values)


def test_addressable_requests_counts_requests_each_pool_could_serve(
        zk_info, zuul, launcher_factory, statsd):
    pools = ("      - name: main\n        max-servers: 5\n        labels:\n"
             "          - name: small\n            cloud-image: fake-image\n"
             "            min-ram: 8192\n"
             "      - name: second\n        max-servers: 5\n        labels:\n"
             "          - name: large\n            cloud-image: fake-image\n"
             "            min-ram: 8192\n")
    launcher_factory(fake_config(zk_info, labels=[{"name": "small"}, {"name": "large"}],
                                 pools=pools))
    small = zuul.submit(["small"])
    large = zuul.submit(["large"])
    both = zuul.submit(["small", "large"])
    assert zuul.wait_request(small)["state"] == "fulfilled"
    assert zuul.wait_request(large)["state"] == "fulfilled"
    # No single pool offers both labels.
    assert zuul.wait_request(both)["state"] == "failed"
    main = "nodepool.provider.fake-provider.pool.main.addressable_requests"
    second = "nodepool.provider.fake-provider.pool.second.addressable_requests"
    # Upstream counts every request in ZooKeeper whose labels the pool
    # offers, whatever its state: the fulfilled one not yet taken counts.
    mark = len(statsd.lines)
    gauge_after(statsd, mark, main, 1)
    gauge_after(statsd, mark, second, 1)
    zuul.accept(small)
    mark = len(statsd.lines)
    gauge_after(statsd, mark, main, 0)
    gauge_after(statsd, mark, second, 1)
