"""Untagged OpenStack leftovers are deleted only on two sightings."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from nodepool.driver.openstack import leaks

log = logging.getLogger("test")


class FakeNetwork:
    """Just the Neutron calls the cleanups make, counting listings."""

    def __init__(self) -> None:
        self.ports: dict[str, SimpleNamespace] = {}
        self.ips: dict[str, SimpleNamespace] = {}
        self.listings = 0

    def port(self, ident: str, status: str = "DOWN", owner: str = "compute:nova") -> None:
        self.ports[ident] = SimpleNamespace(id=ident, status=status, device_owner=owner)

    def ports_(self, status: str) -> list[SimpleNamespace]:
        self.listings += 1
        return [p for p in self.ports.values() if p.status == status]

    def delete_port(self, ident: str, ignore_missing: bool = True) -> None:
        self.ports.pop(ident, None)

    def ips_(self) -> list[SimpleNamespace]:
        return list(self.ips.values())

    def delete_ip(self, ident: str, ignore_missing: bool = True) -> None:
        self.ips.pop(ident, None)


def conn_for(network: FakeNetwork) -> SimpleNamespace:
    api = SimpleNamespace(ports=network.ports_, delete_port=network.delete_port,
                          ips=network.ips_, delete_ip=network.delete_ip)
    return SimpleNamespace(network=api)


def test_down_ports_listed_once_per_interval_and_deleted_on_the_second_sighting(
        monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(leaks.time, "monotonic", lambda: now[0])
    network = FakeNetwork()
    network.port("old")
    network.port("dhcp", owner="network:dhcp")
    network.port("up", status="ACTIVE")
    cleanup = leaks.PortCleanup(interval=600)
    conn = conn_for(network)
    assert cleanup.run(conn, log) == 0
    network.port("new")
    now[0] += 599
    assert cleanup.run(conn, log) == 0
    assert network.listings == 1  # not listed again within the interval
    now[0] += 1
    assert cleanup.run(conn, log) == 1
    assert set(network.ports) == {"dhcp", "up", "new"}
    now[0] += 600
    assert cleanup.run(conn, log) == 1
    assert set(network.ports) == {"dhcp", "up"}


def test_port_that_came_back_up_is_kept():
    network = FakeNetwork()
    network.port("flapping")
    cleanup = leaks.PortCleanup(interval=0.000001)
    conn = conn_for(network)
    cleanup.run(conn, log)
    network.ports["flapping"].status = "ACTIVE"
    assert cleanup.run(conn, log) == 0
    network.ports["flapping"].status = "DOWN"
    assert cleanup.run(conn, log) == 0  # first sighting again
    assert cleanup.run(conn, log) == 1


def test_floating_ips_deleted_when_unattached_twice():
    network = FakeNetwork()
    network.ips = {"free": SimpleNamespace(id="free", port_id=None),
                   "used": SimpleNamespace(id="used", port_id="p1"),
                   "attaching": SimpleNamespace(id="attaching", port_id=None)}
    cleanup = leaks.FloatingIPCleanup()
    conn = conn_for(network)
    assert cleanup.run(conn, log) == 0
    network.ips["attaching"].port_id = "p2"  # someone attached it meanwhile
    assert cleanup.run(conn, log) == 1
    assert set(network.ips) == {"used", "attaching"}
