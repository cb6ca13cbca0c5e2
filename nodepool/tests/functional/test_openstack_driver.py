"""The OpenStack driver against the simulated cloud, with the real openstacksdk.

Every call the driver makes crosses HTTP to :class:`SimulatedCloud`
through a clouds.yaml, as with a real cloud; launches go through the
shared machinery with real node records in the test's ZooKeeper chroot.
"""

from __future__ import annotations

import base64
import logging
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool.config import load_config
from nodepool.driver.adapter import (
    META_BUILD_ID,
    META_NODE_ID,
    META_POOL,
    META_PROVIDER,
    META_UPLOAD_ID,
)
from nodepool.driver.launch import ABORTED, FAILED, READY
from nodepool.driver.openstack import cloud_config
from nodepool.driver.openstack.adapter import OpenStackAdapter
from nodepool.driver.openstack.errors import CloudError
from nodepool.driver.openstack.provider import OpenStackProvider
from nodepool.exceptions import NotFound, RuntimeConfigurationException
from nodepool.tests.helpers import wait_for
from nodepool.tests.openstack_sim import SimulatedCloud
from nodepool.tests.openstack_sim.state import PASSWORD
from nodepool.tests.sshd import LoopbackSshd
from nodepool.zk import models
from nodepool.zk.models import Node, NodeRequest

PROVIDER = "os-provider"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver looks at the cloud once a second; the simulator boots in
    # 50 ms, so look more often here.
    monkeypatch.setattr(OpenStackAdapter, "poll_interval", 0.05)


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud(boot_delay=0.05) as cloud:
        yield cloud


@pytest.fixture
def clouds_yaml(sim: SimulatedCloud, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(path, image_format="raw")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    cloud_config.reset()
    yield path
    cloud_config.reset()


def provider_yaml(*, pool: str = "", labels: str = "", provider: str = "",
                  cloud_image: str = "", floating_ip: bool = False) -> str:
    """A provider of cloud ``sim`` with one pool ``main``; ``pool`` adds
    pool keys, ``labels`` extra labels, ``provider`` provider keys and
    ``cloud_image`` keys of the ``precise`` cloud image (all as YAML text
    indented to their place)."""
    return f"""
  - name: {PROVIDER}
    cloud: sim
    rate: 0.0001
    boot-timeout: 10
    launch-retries: 2
{provider}
    diskimages:
      - name: dib-image
        meta:
          purpose: testing
    cloud-images:
      - name: precise
        image-name: Fake Precise
        config-drive: true
{cloud_image}
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        networks: [private]
        auto-floating-ip: {str(floating_ip).lower()}
{pool}
        labels:
          - name: small
            cloud-image: precise
            min-ram: 1000
{labels}
"""


# Every label name any test's provider offers.
LABELS = ("small", "tagged", "bfv", "dib", "public", "no-flavor", "scanned")


def config_text(zk_info: Any, providers: str) -> str:
    return (zk_info.config_yaml()
            + "labels:\n" + "".join(f"  - name: {n}\n" for n in LABELS)
            + "diskimages:\n  - name: dib-image\n    metadata:\n      os: debian\n"
            + "providers:" + providers)


@pytest.fixture
def make_provider(clouds_yaml: Path, tmp_path: Path, zk_info: Any,
                  zk: Any) -> Iterator[Any]:
    """Start an OpenStackProvider on provider_yaml(**kwargs); stopped after
    the test."""
    started: list[OpenStackProvider] = []

    def make(**kwargs: Any) -> OpenStackProvider:
        path = tmp_path / f"nodepool-{len(started)}.yaml"
        path.write_text(config_text(zk_info, provider_yaml(**kwargs)))
        config = load_config(str(path))
        provider = OpenStackProvider(config.providers[PROVIDER])
        provider.start(zk)
        started.append(provider)
        return provider

    yield make
    for provider in started:
        provider.stop()
        provider.join()


def make_request(labels: list[str]) -> NodeRequest:
    request = NodeRequest("200-0000000042")
    request.node_types = labels
    request.requestor = "zuul-system-1"
    request.tenant_name = "tenant-one"
    request.event_id = "event-7"
    request.requestor_data = {"job_name": "unit-tests"}
    return request


def launch(provider: OpenStackProvider, zk: Any, label_name: str,
           timeout: float = 30) -> tuple[Any, Node]:
    """Launch one node the way the request handler does: a record that is
    ``building`` and locked, then the provider's launch."""
    pool = provider.provider.pools["main"]
    label = pool.labels[label_name]
    external_id, image_id = provider.image_external_id(label)
    node = Node()
    node.state = models.BUILDING
    node.type = [label_name]
    node.provider = PROVIDER
    node.pool = pool.name
    node.az = provider.choose_az(pool)
    node.image_id = image_id
    assert label.image is not None
    node.connection_type = label.image.connection_type
    node.connection_port = label.image.connection_port
    zk.store_node(node)
    zk.lock_node(node)
    node.hostname = provider.hostname_for(node)
    zk.store_node(node)
    handle = provider.launch(node, label, pool, make_request([label_name]), external_id)
    assert handle.done.wait(timeout), "launch did not finish"
    return handle, node


def delete(provider: OpenStackProvider, zk: Any, node: Node) -> None:
    provider.delete_node(node)
    zk.delete_node(node)


def stored(zk: Any, node: Node) -> Node:
    record = zk.get_node(node.id)
    assert record is not None
    return record


TAGGED_LABEL = """          - name: tagged
            cloud-image: precise
            flavor-name: Unreal Flavor
            key-name: zuul-key
            userdata: "#cloud-config\\n"
            instance-properties:
              team: infra
              weight: 3
            dynamic-instance-properties:
              job: "{request.requestor_data[job_name]}"
              tenant: "{request.tenant_name}"
              request: "{request.id}"
              broken: "{request.no_such_attribute}"
              sneaky: "{request.__class__}"
"""


# -- launch and delete ------------------------------------------------------------------


def test_launch_tags_server_and_delete_removes_it(sim, make_provider, zk):
    provider = make_provider(pool="        security-groups: [default, web]",
                             labels=TAGGED_LABEL)
    handle, node = launch(provider, zk, "tagged")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [server] = sim.servers()
    assert record.state == models.READY
    assert record.external_id == server.id
    assert record.hostname == server.name == f"np{node.id}"
    assert record.interface_ip == record.private_ipv4
    assert record.interface_ip.startswith("127.0.20.")
    assert record.public_ipv4 is None
    assert record.az == server.availability_zone and record.az in ("az1", "az2")
    assert record.region == "RegionOne" and record.cloud == "sim"
    assert record.host_id == server.host_id
    assert record.resources == {"instances": 1, "cores": 4, "ram": 8192}
    assert server.flavor.name == "Unreal Flavor"
    assert server.key_name == "zuul-key"
    assert server.security_groups == ["default", "web"]
    assert base64.b64decode(server.user_data) == b"#cloud-config\n"
    assert server.config_drive
    assert server.metadata == {
        "groups": f"{PROVIDER},precise,tagged",
        "team": "infra", "weight": "3",
        "job": "unit-tests", "tenant": "tenant-one", "request": "200-0000000042",
        "nodepool_provider_name": PROVIDER, "nodepool_pool_name": "main",
        "nodepool_node_id": node.id,
    }

    delete(provider, zk, node)
    assert sim.servers() == []
    assert sim.ports() == []




def test_waiting_launches_share_one_server_listing(sim, make_provider, zk):
    provider = make_provider()
    sim.set_boot_delay(0.5)
    # Every answer takes longer than a listing's lifetime (0.05 s).
    sim.set_latency(0.1)
    results: list[tuple[Any, Node]] = []
    threads = [threading.Thread(target=lambda: results.append(launch(provider, zk, "small")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [handle.state for handle, _ in results] == [READY] * 4
    # One listing at a time for all four launches together (that each
    # listing serves every launch waiting for it, however slow, is
    # test_openstack_caches' business), and no per-server polling.
    assert sim.most_concurrent("GET", "/compute/v2.1/servers/detail") == 1
    log = sim.requests_log
    server_gets = [path for method, path in log
                   if method == "GET" and path.startswith("/compute/v2.1/servers/")
                   and path != "/compute/v2.1/servers/detail"]
    # One read per launch once ACTIVE (for its addresses).
    assert len(server_gets) == 4, server_gets
    for _, node in results:
        delete(provider, zk, node)
    assert sim.servers() == []


def test_transient_listing_error_does_not_fail_the_launch(sim, make_provider, zk):
    provider = make_provider()
    sim.fail_next_requests(2, status=503, path_prefix="/compute/v2.1/servers/detail")
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    assert len(sim.servers()) == 1


def test_boot_failure_is_retried_then_succeeds(sim, make_provider, zk):
    provider = make_provider()
    sim.fail_next_creates(1)
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    assert sim.requests_log.count(("POST", "/compute/v2.1/servers")) == 2
    # The server that went to ERROR was deleted before the retry.
    [server] = sim.servers()
    assert server.status == "ACTIVE" and stored(zk, node).external_id == server.id


def test_boot_failure_on_every_attempt_fails_the_node(sim, make_provider, zk):
    provider = make_provider()
    sim.fail_next_creates(2)
    handle, node = launch(provider, zk, "small")
    assert handle.state == FAILED
    assert "No valid host" in handle.error
    assert stored(zk, node).state == models.FAILED
    assert sim.servers() == []  # each failed attempt deleted its server


def test_over_quota_create_aborts_the_node(sim, make_provider, zk):
    provider = make_provider()
    sim.quota_exceeded_next_creates(1)
    handle, node = launch(provider, zk, "small")
    assert handle.state == ABORTED
    assert "Quota exceeded" in handle.error
    assert stored(zk, node).state == models.ABORTED
    assert sim.servers() == []
    # Only one attempt: a quota error is not retried, the request waits.
    assert sim.requests_log.count(("POST", "/compute/v2.1/servers")) == 1


def test_launch_timeout_while_servers_stay_in_build(sim, make_provider, zk):
    provider = make_provider(provider="    launch-timeout: 1\n    launch-retries: 1")
    sim.hold_servers_in_build()
    handle, node = launch(provider, zk, "small")
    assert handle.state == FAILED
    assert "not active within the launch-timeout" in handle.error
    assert "BUILD" in handle.error
    # The half-built server is deleted, not left behind.
    assert sim.servers() == []


def test_floating_ip_attached_and_released_on_delete(sim, make_provider, zk):
    provider = make_provider(floating_ip=True)
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [fip] = sim.floating_ips()
    assert fip.port_id is not None
    assert record.public_ipv4 == fip.floating_ip_address
    assert record.interface_ip == fip.floating_ip_address
    assert record.public_ipv4.startswith("127.0.30.")
    assert record.private_ipv4.startswith("127.0.20.")
    delete(provider, zk, node)
    assert sim.floating_ips() == []
    assert sim.servers() == []


def test_server_on_external_network_needs_no_floating_ip(sim, make_provider, zk):
    provider = make_provider(floating_ip=True, labels="""          - name: public
            cloud-image: precise
            min-ram: 1000
            networks: [public]
""")
    handle, node = launch(provider, zk, "public")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    assert record.interface_ip == record.public_ipv4
    assert record.public_ipv4.startswith("127.0.10.")
    assert sim.floating_ips() == []


BFV_LABEL = """          - name: bfv
            cloud-image: precise
            min-ram: 1000
            boot-from-volume: true
            volume-size: 20
"""


def test_boot_from_volume_counts_volume_quota(sim, make_provider, zk):
    provider = make_provider(labels=BFV_LABEL)
    sim.set_quota(volumes=5, gigabytes=-1)
    limits = provider.adapter.get_quota_limits()
    assert limits.get("volumes") == 5 and limits.get("volume-gb") == math.inf
    handle, node = launch(provider, zk, "bfv")
    assert handle.state == READY, handle.error
    [volume] = sim.volumes()
    [server] = sim.servers()
    assert (volume.size, volume.server_id) == (20, server.id)
    assert server.image_id == ""  # Nova shows no image for a volume-backed server
    assert stored(zk, node).resources == {
        "instances": 1, "cores": 1, "ram": 1024, "volumes": 1, "volume-gb": 20}
    # Servers seen in the cloud count their attached volumes too.
    [instance] = provider.adapter.list_instances()
    assert instance.quota.get("volume-gb") == 20 and instance.quota.get("volumes") == 1
    delete(provider, zk, node)
    assert sim.volumes() == []


def test_boot_from_volume_refused_by_volume_quota_aborts(sim, make_provider, zk):
    provider = make_provider(labels=BFV_LABEL)
    sim.set_quota(volumes=0)
    handle, node = launch(provider, zk, "bfv")
    assert handle.state == ABORTED, handle.error
    assert sim.servers() == []


def test_unknown_network_fails_the_launch_with_the_fix(sim, make_provider, zk):
    provider = make_provider(labels="""          - name: public
            cloud-image: precise
            min-ram: 1000
            networks: [no-such-net]
""")
    handle, node = launch(provider, zk, "public")
    assert handle.state == FAILED
    assert "network 'no-such-net' does not exist" in handle.error
    assert ("POST", "/compute/v2.1/servers") not in sim.requests_log


# -- quota ------------------------------------------------------------------------------


def test_quota_limits_and_label_quota_come_from_the_cloud(sim, make_provider):
    provider = make_provider()
    sim.set_quota(instances=7, cores=-1, ram=4096)
    limits = provider.adapter.get_quota_limits()
    assert limits.resources == {"instances": 7, "cores": math.inf, "ram": 4096}
    # No label boots from a volume: volume limits are not even asked for.
    assert not any(path.startswith("/volume/") for _, path in sim.requests_log)
    label = provider.provider.pools["main"].labels["small"]
    assert provider.quota_for_label(label).resources == {
        "instances": 1, "cores": 1, "ram": 1024}


def test_unmanaged_servers_count_against_quota(sim, make_provider, zk):
    provider = make_provider()
    sim.set_quota(instances=5)
    sim.add_server("someone-elses", flavor="Fake Flavor")
    [instance] = provider.adapter.list_instances()
    assert instance.quota.resources == {"instances": 1, "cores": 4, "ram": 8192}
    pool = provider.provider.pools["main"]
    room = provider.available_quota(pool)
    assert (room.get("instances"), room.get("cores")) == (4, 96)


def test_label_with_unknown_flavor_cannot_be_served(sim, make_provider):
    provider = make_provider(labels="""          - name: no-flavor
            cloud-image: precise
            flavor-name: No Such Flavor
""")
    label = provider.provider.pools["main"].labels["no-flavor"]
    with pytest.raises(RuntimeConfigurationException, match="No Such Flavor"):
        provider.adapter.get_quota_for_label(label)
    assert "No Such Flavor" in provider.label_error(label)
    # Flavors are listed once, not once per question.
    provider.adapter.get_quota_for_label(provider.provider.pools["main"].labels["small"])
    assert sim.requests_log.count(("GET", "/compute/v2.1/flavors/detail")) == 1


def test_cloud_image_readiness_is_checked_until_it_exists(sim, make_provider):
    provider = make_provider()
    label = provider.provider.pools["main"].labels["small"]
    assert provider.adapter.label_ready(label)
    label.cloud_image.image_name = "Uploaded Later"
    assert not provider.adapter.label_ready(label)
    sim.add_image("Uploaded Later", status="active")
    # Misses are not cached: the image is found as soon as it is there.
    assert provider.adapter.label_ready(label)
    finds = len(sim.requests_log)
    assert provider.adapter.label_ready(label)
    assert len(sim.requests_log) == finds  # hits are


def test_console_log_and_availability_zones(sim, make_provider, zk):
    provider = make_provider()
    assert provider.get_azs() == ["az1", "az2"]
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    sim.set_console_log(node.external_id, "boot messages\nlogin: ")
    assert provider.adapter.get_console_log(node.external_id) == "boot messages\nlogin: "
    # Zones are listed once.
    provider.get_azs()
    assert sim.requests_log.count(("GET", "/compute/v2.1/os-availability-zone")) == 1


# -- host keys --------------------------------------------------------------------------


def test_host_keys_scanned_from_a_real_sshd(sim, make_provider, zk, tmp_path):
    sshd = LoopbackSshd(tmp_path / "sshd", address="127.0.0.5")
    sshd.start()
    try:
        provider = make_provider(cloud_image=f"        connection-port: {sshd.port}",
                                 labels="""          - name: scanned
            cloud-image: precise
            min-ram: 1000
            host-key-checking: true
""")
        sim.address_for = lambda server: sshd.address
        handle, node = launch(provider, zk, "scanned")
        assert handle.state == READY, handle.error
        record = stored(zk, node)
        assert record.interface_ip == sshd.address
        assert record.connection_port == sshd.port
        assert record.host_keys == [sshd.host_key]
    finally:
        sshd.stop()


# -- leaks ------------------------------------------------------------------------------


def test_leaked_servers_deleted_on_the_second_pass(sim, make_provider, zk):
    provider = make_provider()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    leaked = sim.add_server("np0000009999", {META_PROVIDER: PROVIDER, META_POOL: "main",
                                             META_NODE_ID: "0000009999"})
    others = {
        sim.add_server("other-provider", {META_PROVIDER: "elsewhere",
                                          META_NODE_ID: "0000009998"}),
        sim.add_server("untagged", {}),
        node.external_id,
    }
    assert provider.cleanup_leaked_resources() == {}
    assert {s.id for s in sim.servers()} == others | {leaked}
    assert provider.cleanup_leaked_resources() == {"instances": 1}
    assert {s.id for s in sim.servers()} == others


def test_leak_passes_each_list_the_cloud(sim, make_provider, zk):
    # The server listing that waiting launches share must not stand in
    # for a pass's own look at the cloud: two passes, two listings.
    provider = make_provider()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    listings = sim.requests_log.count(("GET", "/compute/v2.1/servers/detail"))
    provider.cleanup_leaked_resources()
    provider.cleanup_leaked_resources()
    assert sim.requests_log.count(("GET", "/compute/v2.1/servers/detail")) == listings + 2


def test_ready_node_whose_server_vanished_is_reported_on_the_second_listing(
        sim, make_provider, zk):
    provider = make_provider()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    assert provider.vanished_nodes([record]) == []
    # Someone else deletes the server, right after our launch listed it.
    sim.connect().compute.delete_server(record.external_id)
    wait_for(lambda: not sim.servers(), what="server gone")
    assert provider.vanished_nodes([record]) == []  # seen missing once
    assert provider.vanished_nodes([record]) == [record.id]


def test_leaked_images_deleted_but_known_uploads_kept(sim, make_provider, zk):
    provider = make_provider()
    build = models.ImageBuild()
    build.state = models.READY
    build_id = zk.store_build("dib-image", build)
    upload = models.ImageUpload()
    upload.state = models.READY
    upload_id = zk.store_upload("dib-image", build_id, PROVIDER, upload)

    def image(name: str, upload: str, provider: str = PROVIDER) -> str:
        return sim.add_image(name, {META_PROVIDER: provider, META_BUILD_ID: build_id,
                                    META_UPLOAD_ID: upload,
                                    "nodepool_image_name": "dib-image"}, status="active")
    known = image("dib-image-known", upload_id)
    leaked = image("dib-image-leaked", "0000000999")
    foreign = image("dib-image-foreign", "0000000999", provider="elsewhere")
    assert provider.cleanup_leaked_images() == {}
    # The launcher's cleanup leaves images to the builder.
    assert provider.cleanup_leaked_resources() == {}
    assert provider.cleanup_leaked_images() == {"images": 1}
    remaining = {i.id for i in sim.images()}
    assert leaked not in remaining
    assert {known, foreign} <= remaining
    assert "Fake Precise" in {i.name for i in sim.images()}


def test_down_compute_ports_deleted_after_the_interval(sim, make_provider):
    provider = make_provider(provider="    port-cleanup-interval: 1")
    down = sim.add_port(status="DOWN", device_owner="compute:az1")
    kept = {sim.add_port(status="DOWN", device_owner="network:dhcp"),
            sim.add_port(status="ACTIVE", device_owner="compute:az1")}
    assert provider.cleanup_leaked_resources() == {}
    late = sim.add_port(status="DOWN", device_owner="compute:az2")
    # (test_openstack_leaks shows that passes within the interval do not
    # list ports at all.)
    wait_for(lambda: provider.cleanup_leaked_resources().get("ports"), 60,
             interval=0.2, what="port cleanup pass")
    remaining = {p.id for p in sim.ports()}
    assert down not in remaining
    # Seen DOWN only once so far: kept until the next listing.
    assert remaining == kept | {late}


def test_port_cleanup_disabled_by_zero_interval(sim, make_provider):
    provider = make_provider(provider="    port-cleanup-interval: 0")
    sim.add_port(status="DOWN", device_owner="compute:az1")
    provider.cleanup_leaked_resources()
    provider.cleanup_leaked_resources()
    assert len(sim.ports()) == 1
    assert ("GET", "/network/v2.0/ports") not in sim.requests_log


def test_unattached_floating_ips_deleted_only_when_enabled(sim, make_provider):
    unattached = sim.add_floating_ip()
    attached = sim.add_floating_ip(sim.add_port(status="ACTIVE", device_owner="compute:az1"))
    disabled = make_provider()
    disabled.cleanup_leaked_resources()
    disabled.cleanup_leaked_resources()
    assert {f.id for f in sim.floating_ips()} == {unattached, attached}
    assert ("GET", "/network/v2.0/floatingips") not in sim.requests_log

    enabled = make_provider(provider="    clean-floating-ips: true")
    assert enabled.cleanup_leaked_resources() == {}
    assert enabled.cleanup_leaked_resources() == {"floatingips": 1}
    assert {f.id for f in sim.floating_ips()} == {attached}


# -- images -----------------------------------------------------------------------------


DIB_LABEL = """          - name: dib
            diskimage: dib-image
            min-ram: 1000
"""


def upload_metadata(build_id: str, upload_id: str) -> dict[str, Any]:
    return {META_PROVIDER: PROVIDER, META_BUILD_ID: build_id, META_UPLOAD_ID: upload_id,
            "nodepool_image_name": "dib-image", "purpose": "testing",
            # Keys that are also names of openstacksdk's arguments, and a
            # Glance integer attribute.
            "timeout": 5, "container": "c1", "min_ram": "512"}


def test_image_upload_boot_list_and_delete(sim, make_provider, zk, tmp_path):
    provider = make_provider(labels=DIB_LABEL)
    label = provider.provider.pools["main"].labels["dib"]
    assert provider.provider.image_format("dib-image") == "raw"  # from clouds.yaml
    assert not provider.label_ready(label)  # nothing uploaded yet
    image_file = tmp_path / "dib-image.raw"
    image_file.write_bytes(b"\0" * 4096)
    sim.set_image_upload_delay(0.2)
    build = models.ImageBuild()
    build.state = models.READY
    build_id = zk.store_build("dib-image", build)
    upload = models.ImageUpload()
    upload.state = models.UPLOADING
    upload_id = zk.store_upload("dib-image", build_id, PROVIDER, upload)

    image_id = provider.upload_image(
        image_name="dib-image-1700000000", filename=str(image_file), image_format="raw",
        metadata=upload_metadata(build_id, upload_id))
    [record] = [i for i in sim.images() if i.id == image_id]
    assert record.status == "active" and record.size == 4096
    assert (record.disk_format, record.container_format) == ("raw", "bare")
    assert record.visibility == "private"
    assert record.properties[META_PROVIDER] == PROVIDER
    assert record.properties[META_UPLOAD_ID] == upload_id
    assert record.properties["purpose"] == "testing"
    assert (record.properties["timeout"], record.properties["container"]) == ("5", "c1")
    assert record.min_ram == 512

    upload.external_id = image_id
    upload.external_name = "dib-image-1700000000"
    upload.state = models.READY
    zk.store_upload("dib-image", build_id, PROVIDER, upload)
    assert provider.label_ready(label)
    handle, node = launch(provider, zk, "dib")
    assert handle.state == READY, handle.error
    [server] = sim.servers()
    assert server.image_id == image_id
    assert server.metadata["groups"] == f"{PROVIDER},dib-image,dib"

    listed = {i.id: i for i in provider.list_images()}
    assert listed[image_id].name == "dib-image-1700000000"
    assert listed[image_id].metadata[META_BUILD_ID] == build_id
    assert "Fake Precise" in {i.name for i in listed.values()}

    delete(provider, zk, node)
    provider.delete_image(image_id)
    assert image_id not in {i.id for i in sim.images()}
    with pytest.raises(NotFound):
        provider.delete_image(image_id)


def test_image_upload_timeout_removes_the_image(sim, make_provider, tmp_path):
    provider = make_provider()
    image_file = tmp_path / "slow.raw"
    image_file.write_bytes(b"\0" * 1024)
    sim.set_image_upload_delay(30)
    with pytest.raises(Exception, match="not active within"):
        provider.upload_image(image_name="slow", filename=str(image_file),
                              image_format="raw", metadata=upload_metadata("b", "u"),
                              timeout=0.3)
    assert "slow" not in {i.name for i in sim.images()}


# -- connection -------------------------------------------------------------------------


def test_rate_throttles_calls_to_each_service(sim, make_provider):
    provider = make_provider(provider="    rate: 0.2")
    conn = provider.adapter.conn
    assert conn.config.get_rate_limit("compute") == pytest.approx(5.0)
    assert conn.config.get_rate_limit("network") == pytest.approx(5.0)
    assert conn.session.timeout == 60  # clouds.yaml sets no api_timeout
    start = time.monotonic()
    for _ in range(3):
        provider.adapter.get_quota_limits()
    assert time.monotonic() - start >= 0.4


def test_api_timeout_from_clouds_yaml_bounds_a_silent_cloud(sim, make_provider,
                                                            clouds_yaml):
    data = yaml.safe_load(clouds_yaml.read_text())
    data["clouds"]["sim"]["api_timeout"] = 0.3
    clouds_yaml.write_text(yaml.safe_dump(data))
    cloud_config.reset()
    provider = make_provider()
    # Silent for longer than the test may run (pytest's timeout): only the
    # API timeout can end the call; the answer would be a success.
    sim.set_latency(600)
    with pytest.raises(CloudError) as info:
        provider.adapter.get_quota_limits()
    assert info.value.kind == "transient"


# -- credentials ------------------------------------------------------------------------


def test_credentials_never_reach_the_logs(sim, make_provider, zk, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("keystoneauth", "openstack", "urllib3", "nodepool"):
        caplog.set_level(logging.DEBUG, logger=name)
    provider = make_provider(floating_ip=True)
    provider.adapter.get_quota_limits()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    delete(provider, zk, node)
    token = provider.adapter.conn.session.get_token()
    assert token
    assert any(r.name.startswith("keystoneauth") for r in caplog.records)
    assert PASSWORD not in caplog.text
    assert token not in caplog.text


# -- the launcher -----------------------------------------------------------------------


def test_launcher_fulfils_a_request_through_openstack(sim, clouds_yaml, zk_info, zuul,
                                                      launcher_factory):
    launcher_factory(config_text(zk_info, provider_yaml(floating_ip=True)))
    request_id = zuul.submit(["small"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    [server] = sim.servers()
    assert node["external_id"] == server.id
    assert node["provider"] == PROVIDER and node["cloud"] == "sim"
    assert node["interface_ip"].startswith("127.0.30.")
    assert node["resources"] == {"instances": 1, "cores": 1, "ram": 1024}
    assert server.metadata["nodepool_node_id"] == node_id
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_for(lambda: not sim.servers() and not sim.floating_ips(),
             what="server and floating IP deleted")
