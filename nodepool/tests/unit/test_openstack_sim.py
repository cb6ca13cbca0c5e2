"""The simulated OpenStack cloud, driven by the real openstacksdk over HTTP.

These tests pin down what the OpenStack driver's tests rely on: that
openstacksdk, configured through a clouds.yaml, can authenticate, discover
every service, and see the behaviours (quota errors, failed boots, leaked
ports, image uploads) that the simulator's knobs promise.
"""

from __future__ import annotations

import base64
import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import keystoneauth1.exceptions
import openstack
import openstack.config
import openstack.connection
import pytest
import yaml
from openstack import exceptions

from nodepool.tests.openstack_sim import SimulatedCloud

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

T = TypeVar("T")


def _found(resource: T | None) -> T:
    """What a lookup found; the test fails if it found nothing."""
    assert resource is not None
    return resource


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud(boot_delay=0.05) as cloud:
        yield cloud


@pytest.fixture
def clouds_yaml(sim: SimulatedCloud, tmp_path: Path) -> Path:
    path = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(path)
    return path


@pytest.fixture
def conn(clouds_yaml: Path) -> Iterator[openstack.connection.Connection]:
    config = openstack.config.OpenStackConfig(config_files=[str(clouds_yaml)], vendor_files=[])
    connection = openstack.connection.Connection(config=config.get_one("sim"))
    yield connection
    connection.close()


def _boot(
    conn: openstack.connection.Connection,
    name: str = "np0000000001",
    *,
    flavor: str = "Fake Flavor",
    network: str = "private",
    **attrs: object,
) -> openstack.compute.v2.server.Server:
    return conn.compute.create_server(
        name=name,
        flavor_id=_found(conn.compute.find_flavor(flavor)).id,
        image_id=_found(conn.image.find_image("Fake Precise")).id,
        networks=[{"uuid": _found(conn.network.find_network(network)).id}],
        **attrs,
    )


def _wait(conn: openstack.connection.Connection, server: Any, status: str = "ACTIVE"):
    return conn.compute.wait_for_server(server, status=status, interval=0.02, wait=5)


# -- identity and discovery -------------------------------------------------------------


def test_clouds_yaml_connects_and_lists_default_profile(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    flavors = {f.name: f for f in conn.compute.flavors()}
    assert set(flavors) == {"Fake Flavor", "Unreal Flavor", "Small Flavor"}
    assert (flavors["Unreal Flavor"].ram, flavors["Unreal Flavor"].vcpus) == (8192, 4)
    assert (flavors["Small Flavor"].ram, flavors["Small Flavor"].vcpus) == (1024, 1)
    assert [i.name for i in conn.image.images()] == ["Fake Precise"]
    networks = {n.name: n for n in conn.network.networks()}
    assert networks["public"].is_router_external
    assert not networks["private"].is_router_external
    assert ("POST", "/identity/v3/auth/tokens") in sim.requests_log
    assert sim.auth_url.startswith("http://127.0.0.1:")


def test_compute_microversion_is_negotiated(conn: openstack.connection.Connection) -> None:
    data = _found(conn.compute.get_endpoint_data())
    assert str(data.max_microversion) in ("(2, 79)", "2.79")
    server = _wait(conn, _boot(conn))
    # Embedded flavor (2.47+) because openstacksdk asks for the highest version.
    assert server.flavor.original_name == "Fake Flavor"
    assert server.flavor.vcpus == 4
    # A raw request without a microversion gets 2.1 semantics: a flavor reference.
    raw = conn.compute.get(f"/servers/{server.id}").json()["server"]
    assert set(raw["flavor"]) == {"id", "links"}


def test_wrong_password_is_rejected(sim: SimulatedCloud, tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(path)
    data = yaml.safe_load(path.read_text())
    data["clouds"]["sim"]["auth"]["password"] = "wrong"
    path.write_text(yaml.safe_dump(data))
    config = openstack.config.OpenStackConfig(config_files=[str(path)], vendor_files=[])
    connection = openstack.connection.Connection(config=config.get_one("sim"))
    with pytest.raises(Exception, match="(?i)auth|401"):
        list(connection.compute.flavors())


def test_clouds_yaml_keeps_other_clouds_and_serves_new_regions(
    sim: SimulatedCloud, tmp_path: Path
) -> None:
    path = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(path, cloud_name="one")
    sim.write_clouds_yaml(path, cloud_name="two", region="RegionTwo", image_format="raw")
    clouds = yaml.safe_load(path.read_text())["clouds"]
    assert set(clouds) == {"one", "two"}
    assert clouds["two"]["image_format"] == "raw"
    assert clouds["one"]["image_format"] == "qcow2"
    config = openstack.config.OpenStackConfig(config_files=[str(path)], vendor_files=[])
    connection = openstack.connection.Connection(config=config.get_one("two"))
    assert connection.config.get_region_name() == "RegionTwo"
    assert len(list(connection.compute.flavors())) == 3
    connection.close()


# -- servers ----------------------------------------------------------------------------


def test_server_boots_active_with_metadata_and_loopback_address(
    conn: openstack.connection.Connection, sim: SimulatedCloud,
) -> None:
    # Held in BUILD until the test has seen it there, however slow it is.
    sim.hold_servers_in_build()
    created = _boot(
        conn,
        metadata={"nodepool_node_id": "0000000001", "nodepool_provider_name": "sim"},
        key_name="zuul",
        availability_zone="az2",
        config_drive=True,
        user_data=base64.b64encode(b"#!/bin/sh\n").decode(),
        security_groups=[{"name": "default"}],
    )
    assert conn.compute.get_server(created.id).status == "BUILD"
    sim.hold_servers_in_build(False)
    server = _wait(conn, created)
    assert server.metadata == {"nodepool_node_id": "0000000001", "nodepool_provider_name": "sim"}
    assert server.availability_zone == "az2"
    assert server.key_name == "zuul"
    assert server.image.id == _found(conn.image.find_image("Fake Precise")).id
    (entry,) = server.addresses["private"]
    assert entry["OS-EXT-IPS:type"] == "fixed"
    assert entry["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e:")
    assert ipaddress.ip_address(entry["addr"]) in ipaddress.ip_network("127.0.20.0/24")
    (port,) = conn.network.ports(device_id=server.id)
    assert port.fixed_ips[0]["ip_address"] == entry["addr"]
    listed = [s for s in conn.compute.servers(details=True) if s.id == server.id]
    assert listed[0].metadata["nodepool_node_id"] == "0000000001"


def test_server_on_public_network_gets_public_loopback_address(
    conn: openstack.connection.Connection,
) -> None:
    server = _wait(conn, _boot(conn, network="public"))
    addr = server.addresses["public"][0]["addr"]
    assert ipaddress.ip_address(addr) in ipaddress.ip_network("127.0.10.0/24")


def test_server_list_filters_by_name_regex_and_pages(
    conn: openstack.connection.Connection,
) -> None:
    for name in ("np1", "np2", "other"):
        _boot(conn, name)
    assert sorted(s.name for s in conn.compute.servers(name="^np")) == ["np1", "np2"]
    paged = list(conn.compute.servers(details=True, limit=2))
    assert sorted(s.name for s in paged) == ["np1", "np2", "other"]


def test_limits_reflect_usage_including_unmanaged_servers(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.add_server("someone-elses", {"owner": "not nodepool"}, flavor="Small Flavor")
    _boot(conn)
    limits = conn.compute.get_limits().absolute
    assert (limits.instances, limits.total_cores, limits.total_ram) == (20, 100, 1_000_000)
    assert (limits.instances_used, limits.total_cores_used, limits.total_ram_used) == (
        2,
        5,
        9216,
    )
    assert {s.name for s in conn.compute.servers()} == {"someone-elses", "np0000000001"}


def test_create_beyond_quota_is_nova_403(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.set_quota(instances=1)
    _boot(conn)
    with pytest.raises(exceptions.HttpException) as info:
        _boot(conn, "np2")
    assert info.value.status_code == 403
    assert "Quota exceeded for instances" in str(info.value)

    sim.set_quota(instances=-1, cores=5)
    with pytest.raises(exceptions.HttpException, match="Quota exceeded for cores"):
        _boot(conn, "np3")


def test_injected_quota_exceeded_is_nova_403(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.quota_exceeded_next_creates(1)
    with pytest.raises(exceptions.HttpException) as info:
        _boot(conn)
    assert info.value.status_code == 403
    assert "Quota exceeded for instances: Requested 1, but already used 20 of 20 instances" in str(
        info.value
    )
    _boot(conn)  # only the next create was affected


def test_failed_boot_ends_in_error_with_fault(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.fail_next_creates(1)
    created = _boot(conn)
    with pytest.raises(exceptions.ResourceFailure):
        _wait(conn, created)
    server = conn.compute.get_server(created.id)
    assert server.status == "ERROR"
    assert "No valid host" in server.fault["message"]
    assert server.addresses == {}
    # An ERROR server still counts against quota until it is deleted.
    assert conn.compute.get_limits().absolute.instances_used == 1


def test_injected_create_http_500(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.fail_next_creates(1, kind="http500")
    with pytest.raises(exceptions.HttpException) as info:
        _boot(conn)
    assert info.value.status_code == 500
    assert sim.servers() == []


def test_invalid_create_requests_are_400(conn: openstack.connection.Connection) -> None:
    with pytest.raises(exceptions.BadRequestException, match="availability zone"):
        _boot(conn, availability_zone="nowhere")
    with pytest.raises(exceptions.BadRequestException, match="metadata"):
        _boot(conn, metadata={"count": 3})
    with pytest.raises(exceptions.BadRequestException, match="user_data"):
        _boot(conn, user_data="not base64!")
    with pytest.raises(exceptions.BadRequestException, match="networks"):
        conn.compute.create_server(
            name="x",
            flavor_id=_found(conn.compute.find_flavor("Fake Flavor")).id,
            image_id=_found(conn.image.find_image("Fake Precise")).id,
        )


def test_delete_removes_server_and_ports(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    server = _wait(conn, _boot(conn))
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.02, wait=5)
    assert conn.compute.find_server(server.id) is None
    assert list(conn.network.ports(device_id=server.id)) == []
    assert conn.compute.get_limits().absolute.instances_used == 0


def test_delayed_and_failing_deletes(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    server = _wait(conn, _boot(conn))
    sim.fail_next_deletes(1)
    with pytest.raises(exceptions.HttpException) as info:
        conn.compute.delete_server(server)
    assert info.value.status_code == 500
    # Far longer than the test: the server is certainly still there.
    sim.set_delete_delay(600)
    conn.compute.delete_server(server)
    lingering = conn.compute.get_server(server.id)
    assert lingering.task_state == "deleting"
    # A short delay runs out, and the server is gone.
    other = _wait(conn, _boot(conn, "np0000000002"))
    sim.set_delete_delay(0.2)
    conn.compute.delete_server(other)
    conn.compute.wait_for_delete(other, interval=0.05, wait=10)
    with pytest.raises(exceptions.NotFoundException):
        conn.compute.get_server(other.id)
    assert conn.compute.get_server(server.id).task_state == "deleting"


def test_deleted_server_can_leave_down_port_for_cleanup(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.leave_ports_on_delete(True)
    server = _wait(conn, _boot(conn))
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.02, wait=5)
    extra = sim.add_port()
    down = list(conn.network.ports(status="DOWN", device_owner="compute:az1"))
    assert [p.device_id for p in down] == [server.id]
    assert {p.id for p in conn.network.ports(status="DOWN")} == {down[0].id, extra}
    conn.network.delete_port(down[0])
    conn.network.delete_port(extra)
    assert list(conn.network.ports(status="DOWN")) == []


def test_hold_in_build_until_released(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    # No boot delay: only the hold keeps the server in BUILD when it is
    # looked at (each request applies every transition due by then).
    sim.set_boot_delay(0)
    sim.hold_servers_in_build(True)
    created = _boot(conn)
    assert conn.compute.get_server(created.id).status == "BUILD"
    sim.hold_servers_in_build(False)
    assert conn.compute.get_server(created.id).status == "ACTIVE"


def test_server_address_can_point_at_a_chosen_loopback_host(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.address_for = lambda server: "127.0.0.5" if server.name == "np-ssh" else None
    server = _wait(conn, _boot(conn, "np-ssh"))
    assert server.addresses["private"][0]["addr"] == "127.0.0.5"
    sim.set_server_address("np-ssh", "127.0.0.6")
    assert conn.compute.get_server(server.id).addresses["private"][0]["addr"] == "127.0.0.6"
    with pytest.raises(ValueError, match="loopback"):
        sim.set_server_address("np-ssh", "10.0.0.1")


def test_console_output(sim: SimulatedCloud, conn: openstack.connection.Connection) -> None:
    server = _wait(conn, _boot(conn))
    default = conn.compute.get_server_console_output(server)["output"]
    assert server.name in default
    sim.set_console_log(server.id, "line1\nline2\nline3\n")
    assert conn.compute.get_server_console_output(server, length=2)["output"] == "line2\nline3\n"
    assert conn.get_server_console(server.id) == "line1\nline2\nline3\n"


def test_boot_from_volume_creates_and_cleans_up_volume(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    image = _found(conn.image.find_image("Fake Precise"))
    created = conn.compute.create_server(
        name="np-bfv",
        flavor_id=_found(conn.compute.find_flavor("Fake Flavor")).id,
        networks=[{"uuid": _found(conn.network.find_network("private")).id}],
        block_device_mapping=[
            {
                "boot_index": 0,
                "uuid": image.id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": 20,
                "delete_on_termination": True,
            }
        ],
    )
    server = _wait(conn, created)
    assert not server.image  # Nova shows "" for a server booted from a volume
    (volume,) = conn.block_storage.volumes()
    assert (volume.size, volume.status, volume.is_bootable) == (20, "in-use", True)
    assert [a.id for a in server.attached_volumes] == [volume.id]
    limits = conn.block_storage.get_limits().absolute
    assert (limits.total_volumes_used, limits.total_gigabytes_used) == (1, 20)
    assert (limits.max_total_volumes, limits.max_total_volume_gigabytes) == (100, 1_000_000)
    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, interval=0.02, wait=5)
    assert list(conn.block_storage.volumes()) == []


def test_availability_zones(conn: openstack.connection.Connection) -> None:
    assert conn.list_availability_zone_names() == ["az1", "az2"]
    assert [z.name for z in conn.compute.availability_zones()] == ["az1", "az2"]


def test_keypairs(conn: openstack.connection.Connection) -> None:
    imported = conn.compute.create_keypair(
        name="imported", public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKYm test"
    )
    assert imported.fingerprint.count(":") == 15
    generated = conn.compute.create_keypair(name="generated")
    assert "PRIVATE KEY" in generated.private_key
    assert {k.name for k in conn.compute.keypairs()} == {"imported", "generated"}
    conn.compute.delete_keypair("generated")
    assert [k.name for k in conn.compute.keypairs()] == ["imported"]


# -- floating IPs -----------------------------------------------------------------------


def test_floating_ip_create_attach_detach_delete(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    server = _wait(conn, _boot(conn))
    public = _found(conn.network.find_network("public"))
    fip = conn.network.create_ip(floating_network_id=public.id)
    assert ipaddress.ip_address(fip.floating_ip_address) in ipaddress.ip_network("127.0.30.0/24")
    assert fip.status == "DOWN"
    (port,) = conn.network.ports(device_id=server.id)
    fip = conn.network.update_ip(fip, port_id=port.id)
    assert (fip.status, fip.fixed_ip_address) == ("ACTIVE", port.fixed_ips[0]["ip_address"])
    addresses = conn.compute.get_server(server.id).addresses["private"]
    assert [a["OS-EXT-IPS:type"] for a in addresses] == ["fixed", "floating"]
    assert addresses[1]["addr"] == fip.floating_ip_address
    assert [f.id for f in conn.network.ips(port_id=port.id)] == [fip.id]
    conn.network.update_ip(fip, port_id=None)
    assert len(conn.compute.get_server(server.id).addresses["private"]) == 1
    conn.network.delete_ip(fip)
    assert list(conn.network.ips()) == []


def test_cloud_layer_boot_with_auto_floating_ip(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    # The way upstream nodepool's adapter uses the cloud layer.
    sim.set_boot_delay(0)
    created = conn.create_server(
        "np-auto",
        image=conn.get_image("Fake Precise"),
        flavor=conn.get_flavor("Fake Flavor"),
        nics=[{"net-id": _found(conn.get_network("private")).id}],
        meta={"nodepool_node_id": "0000000002"},
        wait=False,
    )
    server = _found(conn.get_server_by_id(created.id))
    assert server.status == "ACTIVE"
    assert conn._needs_floating_ip(server=server, nat_destination=None)
    fip = conn.create_floating_ip(server=server, wait=True)
    server = _found(conn.get_server(created.id))
    assert server.public_v4 == fip["floating_ip_address"]
    assert server.interface_ip == server.public_v4
    assert server.private_v4.startswith("127.0.20.")
    conn.delete_floating_ip(fip["id"], retry=0)
    sim.add_floating_ip()
    assert conn.delete_unattached_floating_ips() == 1
    assert sim.floating_ips() == []


# -- images ------------------------------------------------------------------------------


def test_image_upload_ends_active_with_properties_listed(
    sim: SimulatedCloud, conn: openstack.connection.Connection, tmp_path: Path
) -> None:
    data = tmp_path / "fake-image.qcow2"
    data.write_bytes(b"\0" * 200_000)
    image = conn.image.create_image(
        name="fake-image-0000000001",
        filename=str(data),
        disk_format="qcow2",
        container_format="bare",
        nodepool_build_id="0000000001",
        nodepool_upload_id="0000000002",
    )
    # openstacksdk returns the record from before the upload; fetch it again.
    assert image.status == "queued"
    image = conn.image.get_image(image.id)
    assert image.status == "active"
    assert image.size == 200_000
    assert image.checksum
    listed = {i.name: i for i in conn.image.images()}
    props = listed["fake-image-0000000001"].properties
    assert (props["nodepool_build_id"], props["nodepool_upload_id"]) == (
        "0000000001",
        "0000000002",
    )
    (record,) = [i for i in sim.images() if i.name == "fake-image-0000000001"]
    assert record.disk_format == "qcow2"
    assert ("PUT", f"/image/v2/images/{image.id}/file") in sim.requests_log
    conn.image.delete_image(image.id)
    assert conn.image.find_image("fake-image-0000000001") is None


def test_cloud_layer_create_image_as_upstream_nodepool_calls_it(
    sim: SimulatedCloud, conn: openstack.connection.Connection, tmp_path: Path
) -> None:
    data = tmp_path / "img.raw"
    data.write_bytes(b"x" * 1000)
    image = _found(conn.create_image(
        name="np-image",
        filename=str(data),
        is_public=False,
        wait=True,
        timeout=5,
        disk_format="raw",
        nodepool_build_id="0000000003",
    ))
    assert image.status == "active"
    found = _found(conn.get_image("np-image", filters={"status": "active"}))
    assert (found.id, found.visibility) == (image.id, "private")


def test_uploaded_image_stays_saving_for_the_upload_delay(
    sim: SimulatedCloud, conn: openstack.connection.Connection, tmp_path: Path
) -> None:
    sim.set_image_upload_delay(0.1)
    data = tmp_path / "img.raw"
    data.write_bytes(b"x" * 1000)
    image = conn.image.create_image(name="slow", filename=str(data), disk_format="raw")
    assert conn.image.get_image(image.id).status == "saving"
    image = conn.image.wait_for_status(image, "active", interval=0.02, wait=5)
    assert image.size == 1000


def test_image_properties_can_be_patched(conn: openstack.connection.Connection) -> None:
    image = conn.image.create_image(name="empty", disk_format="raw", container_format="bare")
    assert image.status == "queued"
    conn.image.update_image(image.id, nodepool_upload_id="7")
    assert conn.image.get_image(image.id).properties["nodepool_upload_id"] == "7"


def test_image_listing_pages_past_glance_default_limit(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    for n in range(30):
        sim.add_image(f"image-{n:02d}", {"nodepool_build_id": str(n)})
    before = len(sim.requests_log)
    names = [i.name for i in conn.image.images()]
    assert len(names) == 31 and len(set(names)) == 31
    pages = [r for r in sim.requests_log[before:] if r == ("GET", "/image/v2/images")]
    assert len(pages) == 2


# -- latency and generic faults ------------------------------------------------------------


def test_injected_request_failures_and_latency(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    list(conn.compute.flavors())  # authenticate and discover first
    sim.fail_next_requests(1, status=503, path_prefix="/compute/v2.1/flavors")
    with pytest.raises(exceptions.HttpException) as info:
        list(conn.compute.flavors())
    assert info.value.status_code == 503
    assert len(list(conn.compute.flavors())) == 3

    sim.set_latency(0.2)
    start = time.monotonic()
    list(conn.network.networks())
    assert time.monotonic() - start >= 0.2


def test_inspection_returns_snapshots(sim: SimulatedCloud) -> None:
    server_id = sim.add_server("leaked", {"nodepool_node_id": "gone"}, status="ERROR")
    (server,) = sim.servers()
    assert (server.id, server.status, server.fault is not None) == (server_id, "ERROR", True)
    server.metadata["changed"] = "locally"
    assert "changed" not in sim.servers()[0].metadata
    assert [p.device_id for p in sim.ports()] == [server_id]


def test_concurrent_creates_never_exceed_quota(
    sim: SimulatedCloud, conn: openstack.connection.Connection
) -> None:
    sim.set_quota(instances=4)
    flavor = _found(conn.compute.find_flavor("Small Flavor")).id
    image = _found(conn.image.find_image("Fake Precise")).id
    network = _found(conn.network.find_network("private")).id
    outcomes: list[str] = []

    def create(n: int) -> None:
        try:
            conn.compute.create_server(
                name=f"np{n}", flavor_id=flavor, image_id=image, networks=[{"uuid": network}]
            )
            outcomes.append("created")
        except exceptions.HttpException as e:
            outcomes.append(str(e.status_code))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["403"] * 6 + ["created"] * 4
    addresses = [p.fixed_ips[0]["ip_address"] for p in sim.ports()]
    assert len(set(addresses)) == 4


def test_env_var_clouds_yaml_and_stop_with_open_connection(
    sim: SimulatedCloud, clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml))
    connection = openstack.connect(cloud="sim")
    assert len(list(connection.network.networks())) == 2
    # The keep-alive connection stays open; stopping must not wait for it
    # (it would for ever: this connection is only closed below).
    sim.stop()
    with pytest.raises(keystoneauth1.exceptions.ConnectFailure):
        list(connection.network.networks())
    connection.close()
