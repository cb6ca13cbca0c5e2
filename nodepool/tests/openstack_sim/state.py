"""In-memory state of the simulated cloud, independent of HTTP.

Every record is a plain dataclass and every change happens under one lock
(:attr:`CloudState.lock`), so the HTTP handler threads and the test thread
that turns knobs never see half-made changes.  Time-driven transitions
(BUILD -> ACTIVE, a delayed delete finishing, an image leaving ``saving``)
are not driven by timers: :meth:`CloudState.tick` applies whatever is due
whenever state is read, which keeps the simulator deterministic and free of
background threads besides the HTTP server itself.

Addresses are handed out only from 127.0.0.0/8: tests may open TCP
connections to a server's address (ssh host-key scans), and traffic to
private ranges must never leave the machine.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import ipaddress
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PROJECT_ID = "5f1e0c0a2cbd4a5bb2b4f1c4d25c3b11"
PROJECT_NAME = "sim-project"
USER_ID = "8a2f0b6a9f3a4c0e8f5e3d1c2b4a6978"
USER_NAME = "sim-user"
PASSWORD = "sim-password"
DOMAIN_NAME = "Default"
DOMAIN_ID = "default"

LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

# Nova's wording; nodepool recognises an over-quota launch by "quota exceeded".
QUOTA_MESSAGE = (
    "Quota exceeded for {resource}: Requested {requested}, "
    "but already used {used} of {limit} {resource}"
)
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


class ApiError(Exception):
    """A failure the API answers with an HTTP error status.

    Raised by state operations so that the HTTP layer can render it in the
    error format of the service that was called.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def new_id() -> str:
    return str(uuid.uuid4())


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def require_loopback(ip: str) -> str:
    """Refuse any address outside 127.0.0.0/8 (see the module docstring)."""
    if ipaddress.ip_address(ip) not in LOOPBACK:
        raise ValueError(f"{ip} is not a loopback address; the simulator only uses 127.0.0.0/8")
    return ip


@dataclass
class Flavor:
    id: str
    name: str
    ram: int
    vcpus: int
    disk: int
    ephemeral: int = 0
    swap: int = 0
    is_public: bool = True
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass
class Image:
    """A Glance image; ``properties`` are the extra top-level keys."""

    id: str
    name: str
    status: str = "queued"
    visibility: str = "shared"
    disk_format: str | None = None
    container_format: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    min_disk: int = 0
    min_ram: int = 0
    protected: bool = False
    size: int | None = None
    checksum: str | None = None
    os_hash_value: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # When an upload finished and the image sits in "saving" until then.
    active_at: float | None = None


@dataclass
class Subnet:
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str
    pool_start: str
    pool_end: str
    service_types: list[str] = field(default_factory=list)


@dataclass
class Network:
    id: str
    name: str
    external: bool = False
    shared: bool = False
    subnet_ids: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


@dataclass
class Port:
    """A Neutron port; a server's ports carry ``device_id`` = server id."""

    id: str
    network_id: str
    mac_address: str
    fixed_ips: list[dict[str, str]]
    device_id: str = ""
    device_owner: str = ""
    status: str = "ACTIVE"
    name: str = ""
    created_at: float = field(default_factory=time.time)


@dataclass
class FloatingIP:
    """A Neutron floating IP, attached when ``port_id`` is set."""

    id: str
    floating_ip_address: str
    floating_network_id: str
    port_id: str | None = None
    fixed_ip_address: str | None = None
    description: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        return "ACTIVE" if self.port_id else "DOWN"


@dataclass
class Volume:
    """A Cinder volume, created by boot-from-volume."""

    id: str
    name: str
    size: int
    status: str = "available"
    image_id: str | None = None
    server_id: str | None = None
    availability_zone: str = "nova"
    created_at: float = field(default_factory=time.time)


@dataclass
class Keypair:
    name: str
    public_key: str
    fingerprint: str
    type: str = "ssh"
    created_at: float = field(default_factory=time.time)


@dataclass
class Server:
    """A Nova server.  Its addresses live on its ports (see ``CloudState.server_ports``).

    ``flavor`` is a copy taken at boot, like Nova's embedded flavor.
    """

    id: str
    name: str
    flavor: Flavor
    image_id: str
    status: str = "BUILD"
    metadata: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None
    availability_zone: str = ""
    security_groups: list[str] = field(default_factory=list)
    # Exactly as sent: base64 text (Nova stores it encoded).
    user_data: str | None = None
    config_drive: bool = False
    host_id: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    # monotonic time at which a BUILD server becomes ACTIVE (or ERROR)
    active_at: float = 0.0
    boot_fault: str | None = None
    fault: dict[str, Any] | None = None
    # monotonic time at which a pending delete completes
    delete_at: float | None = None
    # (volume id, delete_on_termination)
    volumes: list[tuple[str, bool]] = field(default_factory=list)
    console_log: str | None = None
    block_device_mapping: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task_state(self) -> str | None:
        if self.delete_at is not None:
            return "deleting"
        if self.status == "BUILD":
            return "spawning"
        return None


def default_flavors() -> list[Flavor]:
    return [
        Flavor(id=new_id(), name="Fake Flavor", ram=8192, vcpus=4, disk=80),
        Flavor(id=new_id(), name="Unreal Flavor", ram=8192, vcpus=4, disk=80),
        Flavor(id=new_id(), name="Small Flavor", ram=1024, vcpus=1, disk=10),
    ]


# name -> (external, fixed-IP CIDR, floating-IP CIDR or None)
DEFAULT_NETWORKS: dict[str, tuple[bool, str, str | None]] = {
    "public": (True, "127.0.10.0/24", "127.0.30.0/24"),
    "private": (False, "127.0.20.0/24", None),
}


class CloudState:
    """All resources of one simulated project plus the fault-injection knobs.

    Attributes named ``*_count`` or ``*_delay`` are knobs; change them only
    while holding :attr:`lock` (the :class:`SimulatedCloud` facade does).
    """

    def __init__(self, *, boot_delay: float = 0.1) -> None:
        self.lock = threading.RLock()
        self.flavors: dict[str, Flavor] = {f.id: f for f in default_flavors()}
        self.images: dict[str, Image] = {}
        self.networks: dict[str, Network] = {}
        self.subnets: dict[str, Subnet] = {}
        self.ports: dict[str, Port] = {}
        self.floating_ips: dict[str, FloatingIP] = {}
        self.servers: dict[str, Server] = {}
        self.volumes: dict[str, Volume] = {}
        self.keypairs: dict[str, Keypair] = {}
        self.availability_zones: list[str] = ["az1", "az2"]
        self.tokens: set[str] = set()
        # Regions published in the catalog; every one serves the same state.
        self.regions: list[str] = ["RegionOne"]
        self.requests_log: list[tuple[str, str]] = []
        # (method, path) -> requests being answered now / most ever at once
        self.in_flight: dict[tuple[str, str], int] = {}
        self.most_in_flight: dict[tuple[str, str], int] = {}

        self.quota: dict[str, int] = {
            "instances": 20,
            "cores": 100,
            "ram": 1_000_000,
            "volumes": 100,
            "gigabytes": 1_000_000,
        }
        self.default_networks: list[str] = ["private"]
        self.boot_delay = boot_delay
        self.hold_in_build = False
        self.delete_delay = 0.0
        self.image_upload_delay = 0.0
        self.latency = 0.0
        self.leave_ports = False
        self.fail_creates_count = 0
        self.fail_creates_kind = "error"
        self.quota_exceeded_count = 0
        self.fail_deletes_count = 0
        # [remaining, status, path prefix or None]
        self.request_failures: list[list[Any]] = []
        self.address_for: Callable[[Server], str | None] | None = None

        for name, (external, cidr, fip_cidr) in DEFAULT_NETWORKS.items():
            self.add_network(name, cidr, external=external, floating_cidr=fip_cidr)
        self.add_image("Fake Precise", status="active", size=1024)

    # -- networks and addresses -------------------------------------------

    def add_network(
        self, name: str, cidr: str, *, external: bool = False, floating_cidr: str | None = None
    ) -> Network:
        net = Network(id=new_id(), name=name, external=external, shared=external)
        self.networks[net.id] = net
        self._add_subnet(net, f"{name}-subnet", cidr, [])
        if floating_cidr:
            self._add_subnet(net, f"{name}-floating", floating_cidr, ["network:floatingip"])
        return net

    def _add_subnet(self, net: Network, name: str, cidr: str, service_types: list[str]) -> None:
        network = ipaddress.IPv4Network(cidr)
        if not network.subnet_of(LOOPBACK):
            raise ValueError(f"{cidr} is outside 127.0.0.0/8")
        hosts = list(network.hosts())
        subnet = Subnet(
            id=new_id(),
            name=name,
            network_id=net.id,
            cidr=cidr,
            gateway_ip=str(hosts[0]),
            pool_start=str(hosts[1]),
            pool_end=str(hosts[-1]),
            service_types=service_types,
        )
        self.subnets[subnet.id] = subnet
        net.subnet_ids.append(subnet.id)

    def find_network(self, name_or_id: str) -> Network:
        if name_or_id in self.networks:
            return self.networks[name_or_id]
        for net in self.networks.values():
            if net.name == name_or_id:
                return net
        raise ApiError(404, f"Network {name_or_id} could not be found.")

    def _used_ips(self) -> set[str]:
        used = {ip["ip_address"] for p in self.ports.values() for ip in p.fixed_ips}
        used.update(f.floating_ip_address for f in self.floating_ips.values())
        return used

    def _allocate_ip(self, subnet: Subnet) -> str:
        used = self._used_ips()
        start = ipaddress.IPv4Address(subnet.pool_start)
        end = ipaddress.IPv4Address(subnet.pool_end)
        ip = start
        while ip <= end:
            if str(ip) not in used:
                return str(ip)
            ip += 1
        raise ApiError(409, f"No more IP addresses available on subnet {subnet.id}.")

    def fixed_subnet(self, net: Network) -> Subnet:
        for sid in net.subnet_ids:
            if "network:floatingip" not in self.subnets[sid].service_types:
                return self.subnets[sid]
        raise ApiError(400, f"Network {net.id} has no subnet for ports.")

    def create_port(
        self,
        network: Network,
        *,
        device_id: str = "",
        device_owner: str = "",
        status: str = "ACTIVE",
        ip: str | None = None,
        name: str = "",
    ) -> Port:
        subnet = self.fixed_subnet(network)
        if ip is None:
            ip = self._allocate_ip(subnet)
        else:
            require_loopback(ip)
        mac = "fa:16:3e:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        port = Port(
            id=new_id(),
            network_id=network.id,
            mac_address=mac,
            fixed_ips=[{"subnet_id": subnet.id, "ip_address": ip}],
            device_id=device_id,
            device_owner=device_owner,
            status=status,
            name=name,
        )
        self.ports[port.id] = port
        return port

    def delete_port(self, port_id: str) -> None:
        if self.ports.pop(port_id, None) is None:
            raise ApiError(404, f"Port {port_id} could not be found.")
        # Neutron disassociates floating IPs whose port goes away.
        for fip in self.floating_ips.values():
            if fip.port_id == port_id:
                fip.port_id = None
                fip.fixed_ip_address = None

    def create_floating_ip(
        self, network: Network, *, port_id: str | None = None, description: str = ""
    ) -> FloatingIP:
        if not network.external:
            raise ApiError(400, f"Network {network.id} is not a valid external network.")
        subnets = [self.subnets[s] for s in network.subnet_ids]
        pool = [s for s in subnets if "network:floatingip" in s.service_types] or subnets
        fip = FloatingIP(
            id=new_id(),
            floating_ip_address=self._allocate_ip(pool[0]),
            floating_network_id=network.id,
            description=description,
        )
        self.floating_ips[fip.id] = fip
        if port_id:
            self.associate_floating_ip(fip, port_id)
        return fip

    def associate_floating_ip(self, fip: FloatingIP, port_id: str | None) -> None:
        if port_id is None:
            fip.port_id = None
            fip.fixed_ip_address = None
            return
        port = self.ports.get(port_id)
        if port is None:
            raise ApiError(404, f"Port {port_id} could not be found.")
        for other in self.floating_ips.values():
            if other.port_id == port_id and other.id != fip.id:
                raise ApiError(
                    409,
                    f"Cannot associate floating IP {fip.floating_ip_address} with port "
                    f"{port_id}: it already has floating IP {other.floating_ip_address}.",
                )
        fip.port_id = port.id
        fip.fixed_ip_address = port.fixed_ips[0]["ip_address"]

    def server_ports(self, server_id: str) -> list[Port]:
        ports = [p for p in self.ports.values() if p.device_id == server_id]
        return sorted(ports, key=lambda p: p.created_at)

    # -- images -------------------------------------------------------------

    def add_image(
        self,
        name: str,
        properties: dict[str, Any] | None = None,
        *,
        status: str = "queued",
        size: int | None = None,
        **attrs: Any,
    ) -> Image:
        image = Image(id=new_id(), name=name, status=status, properties=dict(properties or {}))
        for key, value in attrs.items():
            setattr(image, key, value)
        if status == "active":
            image.size = size if size is not None else 0
            image.checksum = hashlib.md5(name.encode()).hexdigest()
            image.os_hash_value = hashlib.sha512(name.encode()).hexdigest()
            image.disk_format = image.disk_format or "qcow2"
            image.container_format = image.container_format or "bare"
        self.images[image.id] = image
        return image

    def find_image(self, name_or_id: str) -> Image:
        if name_or_id in self.images:
            return self.images[name_or_id]
        for image in self.images.values():
            if image.name == name_or_id:
                return image
        raise ApiError(404, f"Image {name_or_id} could not be found.")

    # -- servers ------------------------------------------------------------

    def find_flavor(self, name_or_id: str) -> Flavor:
        if name_or_id in self.flavors:
            return self.flavors[name_or_id]
        for flavor in self.flavors.values():
            if flavor.name == name_or_id:
                return flavor
        raise ApiError(404, f"Flavor {name_or_id} could not be found.")

    def find_server(self, name_or_id: str) -> Server:
        self.tick()
        if name_or_id in self.servers:
            return self.servers[name_or_id]
        matches = [s for s in self.servers.values() if s.name == name_or_id]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValueError(f"more than one server is named {name_or_id}")
        raise ApiError(404, f"Instance {name_or_id} could not be found.")

    def usage(self) -> dict[str, int]:
        """Resources counted against quota: every server until it is gone."""
        self.tick()
        servers = list(self.servers.values())
        volumes = list(self.volumes.values())
        return {
            "instances": len(servers),
            "cores": sum(s.flavor.vcpus for s in servers),
            "ram": sum(s.flavor.ram for s in servers),
            "volumes": len(volumes),
            "gigabytes": sum(v.size for v in volumes),
        }

    def check_compute_quota(self, flavor: Flavor) -> None:
        used = self.usage()
        wanted = {"instances": 1, "cores": flavor.vcpus, "ram": flavor.ram}
        for resource, requested in wanted.items():
            limit = self.quota[resource]
            if limit >= 0 and used[resource] + requested > limit:
                raise ApiError(
                    403,
                    QUOTA_MESSAGE.format(
                        resource=resource, requested=requested, used=used[resource], limit=limit
                    ),
                )

    def create_server(
        self,
        *,
        name: str,
        flavor: Flavor,
        image_id: str,
        networks: list[dict[str, str]] | None,
        metadata: dict[str, str] | None = None,
        key_name: str | None = None,
        availability_zone: str | None = None,
        security_groups: list[str] | None = None,
        user_data: str | None = None,
        config_drive: bool = False,
        block_device_mapping: list[dict[str, Any]] | None = None,
        status: str | None = None,
        enforce: bool = True,
    ) -> Server:
        """Create a server the way Nova's API would, or directly (``enforce=False``).

        ``networks`` is Nova's list (``[{"uuid": ...}]`` or ``[{"port": ...}]``);
        None means "auto": the cloud's default networks.  ``status`` forces
        the state for servers added by tests behind the API's back.
        """
        self.tick()
        if availability_zone is None:
            availability_zone = self.availability_zones[0] if self.availability_zones else "nova"
        elif availability_zone not in self.availability_zones:
            raise ApiError(400, "The requested availability zone is not available")
        if user_data is not None:
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError) as e:
                raise ApiError(400, "Invalid input for field/attribute user_data.") from e

        boot_fault = None
        if enforce:
            if self.quota_exceeded_count > 0:
                self.quota_exceeded_count -= 1
                used = self.usage()["instances"]
                limit = self.quota["instances"]
                raise ApiError(
                    403,
                    QUOTA_MESSAGE.format(
                        resource="instances", requested=1, used=max(used, limit), limit=limit
                    ),
                )
            self.check_compute_quota(flavor)
            if self.fail_creates_count > 0:
                self.fail_creates_count -= 1
                if self.fail_creates_kind == "http500":
                    raise ApiError(500, "Unexpected API Error. Please report this.")
                boot_fault = NO_VALID_HOST

        nets: list[tuple[Network | None, Port | None]] = []
        for entry in (
            networks
            if networks is not None
            else [{"uuid": self.find_network(n).id} for n in self.default_networks]
        ):
            if entry.get("port"):
                port = self.ports.get(entry["port"])
                if port is None:
                    raise ApiError(400, f"Port {entry['port']} could not be found.")
                if port.device_id:
                    raise ApiError(409, f"Port {port.id} is still in use.")
                nets.append((None, port))
            elif entry.get("uuid"):
                if entry["uuid"] not in self.networks:
                    raise ApiError(400, f"Network {entry['uuid']} could not be found.")
                nets.append((self.networks[entry["uuid"]], None))
            else:
                raise ApiError(400, "Bad networks format: network uuid is not in proper format")

        server = Server(
            id=new_id(),
            name=name,
            flavor=dataclasses.replace(flavor, extra_specs=dict(flavor.extra_specs)),
            image_id=image_id,
            metadata=dict(metadata or {}),
            key_name=key_name,
            availability_zone=availability_zone,
            security_groups=list(security_groups or []),
            user_data=user_data,
            config_drive=config_drive,
            host_id=hashlib.sha224(f"{PROJECT_ID}{availability_zone}".encode()).hexdigest(),
            active_at=time.monotonic() + self.boot_delay,
            boot_fault=boot_fault,
            block_device_mapping=list(block_device_mapping or []),
        )

        for bdm in block_device_mapping or []:
            self._attach_boot_volume(server, bdm)

        first_ip = self.address_for(server) if self.address_for else None
        for index, (net, port) in enumerate(nets):
            if port is not None:
                port.device_id = server.id
                port.device_owner = f"compute:{availability_zone}"
                port.status = "ACTIVE"
            else:
                assert net is not None
                self.create_port(
                    net,
                    device_id=server.id,
                    device_owner=f"compute:{availability_zone}",
                    ip=first_ip if index == 0 else None,
                )

        if status is not None:
            server.status = status
            if status == "ERROR":
                server.fault = self._fault(NO_VALID_HOST)
        self.servers[server.id] = server
        return server

    def _attach_boot_volume(self, server: Server, bdm: dict[str, Any]) -> None:
        if bdm.get("destination_type") != "volume":
            return
        if bdm.get("source_type") == "volume":
            volume = self.volumes.get(bdm.get("uuid", ""))
            if volume is None:
                raise ApiError(400, f"Volume {bdm.get('uuid')} could not be found.")
        else:
            size = int(bdm.get("volume_size") or server.flavor.disk)
            used = self.usage()
            for resource, requested in (("volumes", 1), ("gigabytes", size)):
                limit = self.quota[resource]
                if limit >= 0 and used[resource] + requested > limit and not server.boot_fault:
                    # Nova learns this from Cinder while building.
                    server.boot_fault = (
                        f"Build of instance {server.id} aborted: VolumeSizeExceedsAvailableQuota"
                        f" or VolumeLimitExceeded: Maximum number of volumes allowed"
                        f" ({self.quota['volumes']}) exceeded for quota '{resource}'."
                    )
                    return
            volume = Volume(
                id=new_id(),
                name="",
                size=size,
                image_id=bdm.get("uuid") if bdm.get("source_type") == "image" else None,
                availability_zone=server.availability_zone,
            )
            self.volumes[volume.id] = volume
        volume.status = "in-use"
        volume.server_id = server.id
        server.volumes.append((volume.id, bool(bdm.get("delete_on_termination", False))))

    @staticmethod
    def _fault(message: str) -> dict[str, Any]:
        return {
            "code": 500,
            "created": iso(time.time()),
            "message": message,
            "details": "Traceback (most recent call last): simulated",
        }

    def delete_server(self, server: Server) -> None:
        if self.fail_deletes_count > 0:
            self.fail_deletes_count -= 1
            raise ApiError(500, "Unexpected API Error. Please report this.")
        if server.delete_at is None:
            server.delete_at = time.monotonic() + self.delete_delay
        self.tick()

    def _finish_delete(self, server: Server) -> None:
        del self.servers[server.id]
        for port in self.server_ports(server.id):
            if self.leave_ports:
                port.status = "DOWN"
            else:
                self.delete_port(port.id)
        for volume_id, delete_on_termination in server.volumes:
            volume = self.volumes.get(volume_id)
            if volume is None:
                continue
            if delete_on_termination:
                del self.volumes[volume_id]
            else:
                volume.status = "available"
                volume.server_id = None

    def tick(self) -> None:
        """Apply every time-driven transition that is due by now."""
        now = time.monotonic()
        for server in list(self.servers.values()):
            if server.delete_at is not None and server.delete_at <= now:
                self._finish_delete(server)
                continue
            if server.status == "BUILD" and not self.hold_in_build and server.active_at <= now:
                server.updated = time.time()
                if server.boot_fault:
                    server.status = "ERROR"
                    server.fault = self._fault(server.boot_fault)
                    # Nova deallocates the network of a server that failed to build.
                    for port in self.server_ports(server.id):
                        self.delete_port(port.id)
                else:
                    server.status = "ACTIVE"
        for image in self.images.values():
            if image.status == "saving" and image.active_at is not None and image.active_at <= now:
                image.status = "active"
                image.updated_at = time.time()

    # -- keypairs -------------------------------------------------------------

    def add_keypair(self, name: str, public_key: str) -> Keypair:
        if name in self.keypairs:
            raise ApiError(409, f"Key pair '{name}' already exists.")
        try:
            blob = base64.b64decode(public_key.split()[1])
            digest = hashlib.md5(blob).hexdigest()
        except (IndexError, binascii.Error, ValueError):
            digest = hashlib.md5(public_key.encode()).hexdigest()
        fingerprint = ":".join(digest[i : i + 2] for i in range(0, 32, 2))
        keypair = Keypair(name=name, public_key=public_key, fingerprint=fingerprint)
        self.keypairs[name] = keypair
        return keypair
