"""The public face of the simulator: lifecycle, clouds.yaml, knobs and inspection.

Tests talk to a :class:`SimulatedCloud` in two ways: the code under test
uses the real openstacksdk over HTTP (configured by :meth:`write_clouds_yaml`),
and the test itself turns knobs and inspects state through the methods here,
never through the API, so it cannot disturb what the code under test sees
(request logs, injected faults) by looking.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import openstack
import openstack.config
import openstack.connection
import yaml

from nodepool.tests.openstack_sim import compute, httpd, identity, image, network, volume
from nodepool.tests.openstack_sim.state import (
    DOMAIN_NAME,
    PASSWORD,
    PROJECT_NAME,
    USER_NAME,
    CloudState,
    FloatingIP,
    Image,
    Port,
    Server,
    Volume,
    require_loopback,
)
from nodepool.tests.sim_http import HttpFrontEnd, LoopbackSimulator

SERVICES = [identity.SERVICE, compute.SERVICE, image.SERVICE, network.SERVICE, volume.SERVICE]


class SimulatedCloud(LoopbackSimulator):
    """An OpenStack cloud (Keystone, Nova, Glance, Neutron, Cinder) on loopback.

    The default profile matches nodepool's fake cloud so results compare
    with upstream: flavors ``Fake Flavor`` and ``Unreal Flavor`` (8192 MB,
    4 vCPUs) plus ``Small Flavor`` (1024 MB, 1 vCPU); image ``Fake Precise``;
    networks ``public`` (external, 127.0.10.0/24, floating IPs from
    127.0.30.0/24) and ``private`` (127.0.20.0/24, where servers land when
    they ask for no network); zones ``az1`` and ``az2``; quota 20 instances,
    100 cores, 1,000,000 MB RAM, 100 volumes, 1,000,000 GB.  Servers become
    ACTIVE ``boot_delay`` seconds after creation.

    Usable as a context manager (``with SimulatedCloud() as sim:``), which
    starts and stops the HTTP server.
    """

    sim_kind = "simulated cloud"

    def __init__(self, name: str = "sim", *, boot_delay: float = 0.1) -> None:
        self.name = name
        self._state = CloudState(boot_delay=boot_delay)

    # -- lifecycle -----------------------------------------------------------------

    def _front_end(self) -> HttpFrontEnd:
        return httpd.front_end(self._state, SERVICES)

    @property
    def auth_url(self) -> str:
        """Keystone v3 URL to put in clouds.yaml."""
        return f"{self.url}/identity/v3"

    def clouds_yaml_entry(
        self, region: str = "RegionOne", image_format: str = "qcow2"
    ) -> dict[str, Any]:
        """The ``clouds.<name>`` mapping for this cloud (password auth).

        Adds ``region`` to the regions the catalog advertises: one simulator
        can stand in for several regions, all sharing one state.
        """
        with self._state.lock:
            if region not in self._state.regions:
                self._state.regions.append(region)
        return {
            "auth": {
                "auth_url": self.auth_url,
                "username": USER_NAME,
                "password": PASSWORD,
                "project_name": PROJECT_NAME,
                "user_domain_name": DOMAIN_NAME,
                "project_domain_name": DOMAIN_NAME,
            },
            "auth_type": "password",
            "identity_api_version": "3",
            "region_name": region,
            "image_format": image_format,
        }

    def connect(self, region: str = "RegionOne", **kwargs: Any) -> openstack.connection.Connection:
        """An openstacksdk connection to this cloud without any clouds.yaml.

        For tests of the simulator and quick checks; the driver under test
        should go through :meth:`write_clouds_yaml` like an operator would.
        Extra keyword arguments go to the cloud config (e.g. ``image_format``).
        """
        entry = self.clouds_yaml_entry(region)
        entry.update(kwargs)
        config = openstack.config.OpenStackConfig(load_yaml_config=False, load_envvars=False)
        return openstack.connection.Connection(config=config.get_one(**entry))

    def write_clouds_yaml(
        self,
        path: str | os.PathLike[str],
        cloud_name: str | None = None,
        region: str = "RegionOne",
        image_format: str = "qcow2",
    ) -> None:
        """Add (or replace) this cloud as ``cloud_name`` (default: ``name``) in ``path``.

        Other clouds already in the file are kept so several simulators can
        share one clouds.yaml.
        """
        data: dict[str, Any] = {}
        if os.path.exists(path):
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        clouds = data.setdefault("clouds", {})
        clouds[cloud_name or self.name] = self.clouds_yaml_entry(region, image_format)
        with open(path, "w") as f:
            yaml.safe_dump(data, f, default_flow_style=False)

    # -- knobs -----------------------------------------------------------------------

    def fail_next_creates(self, n: int, kind: str = "error") -> None:
        """Make the next ``n`` server creates fail.

        ``kind="error"``: the create is accepted and the server ends in ERROR
        with a "No valid host" fault once its boot delay passes.
        ``kind="http500"``: ``POST /servers`` itself answers 500.
        """
        if kind not in ("error", "http500"):
            raise ValueError(f"unknown failure kind {kind!r}")
        with self._state.lock:
            self._state.fail_creates_count = n
            self._state.fail_creates_kind = kind

    def quota_exceeded_next_creates(self, n: int) -> None:
        """Answer the next ``n`` server creates with Nova's over-quota 403.

        Creates beyond the real instance/cores/RAM quota get the same 403
        regardless of this knob.
        """
        with self._state.lock:
            self._state.quota_exceeded_count = n

    def set_boot_delay(self, seconds: float) -> None:
        """Seconds from create to ACTIVE for servers created from now on."""
        with self._state.lock:
            self._state.boot_delay = seconds

    def hold_servers_in_build(self, hold: bool = True) -> None:
        """While held, no server leaves BUILD; releasing lets due ones go ACTIVE."""
        with self._state.lock:
            self._state.hold_in_build = hold

    def fail_next_deletes(self, n: int) -> None:
        """Answer the next ``n`` server DELETEs with HTTP 500 (the server stays)."""
        with self._state.lock:
            self._state.fail_deletes_count = n

    def set_delete_delay(self, seconds: float) -> None:
        """Deleted servers linger (task_state ``deleting``) this long, then vanish."""
        with self._state.lock:
            self._state.delete_delay = seconds

    def set_image_upload_delay(self, seconds: float) -> None:
        """Uploaded images stay in ``saving`` this long before turning ``active``."""
        with self._state.lock:
            self._state.image_upload_delay = seconds

    def set_latency(self, seconds: float) -> None:
        """Delay every response by this long (the request is still logged at once)."""
        with self._state.lock:
            self._state.latency = seconds

    def fail_next_requests(
        self, n: int, status: int = 500, path_prefix: str | None = None
    ) -> None:
        """Answer the next ``n`` requests whose path starts with ``path_prefix``
        (any request, including authentication, when None) with ``status``.

        Paths include the service prefix, e.g. ``/compute/v2.1/servers``.
        """
        with self._state.lock:
            self._state.request_failures.append([n, status, path_prefix])

    def set_quota(
        self,
        *,
        instances: int | None = None,
        cores: int | None = None,
        ram: int | None = None,
        volumes: int | None = None,
        gigabytes: int | None = None,
    ) -> None:
        """Change project limits; -1 means unlimited, as in Nova and Cinder."""
        values = {
            "instances": instances,
            "cores": cores,
            "ram": ram,
            "volumes": volumes,
            "gigabytes": gigabytes,
        }
        with self._state.lock:
            for key, value in values.items():
                if value is not None:
                    self._state.quota[key] = value

    def leave_ports_on_delete(self, leave: bool = True) -> None:
        """Make server deletion leave its ports behind, DOWN (a leak to clean up)."""
        with self._state.lock:
            self._state.leave_ports = leave

    @property
    def address_for(self) -> Callable[[Server], str | None] | None:
        """Optional hook choosing the fixed IP of a new server's first port.

        Called with the new :class:`Server` record (under the state lock: do
        not call back into the simulator); returning None means "allocate as
        usual".  Must return a 127.0.0.0/8 address, e.g. of a loopback sshd.
        """
        return self._state.address_for

    @address_for.setter
    def address_for(self, hook: Callable[[Server], str | None] | None) -> None:
        def checked(server: Server) -> str | None:
            assert hook is not None
            ip = hook(server)
            return require_loopback(ip) if ip is not None else None

        with self._state.lock:
            self._state.address_for = checked if hook is not None else None

    # -- direct state changes ---------------------------------------------------------

    def add_server(
        self,
        name: str,
        metadata: dict[str, str] | None = None,
        *,
        flavor: str = "Fake Flavor",
        image: str = "Fake Precise",
        status: str = "ACTIVE",
        network: str | None = "private",
    ) -> str:
        """Put a server straight into state, bypassing quota and injected faults.

        For unmanaged servers (other users' instances) and leaked ones
        (nodepool metadata whose node is gone).  Returns the server id.
        """
        with self._state.lock:
            server = self._state.create_server(
                name=name,
                flavor=self._state.find_flavor(flavor),
                image_id=self._state.find_image(image).id,
                networks=[{"uuid": self._state.find_network(network).id}] if network else [],
                metadata=metadata,
                status=status,
                enforce=False,
            )
            return server.id

    def add_port(
        self,
        *,
        status: str = "DOWN",
        device_owner: str = "compute:nova",
        device_id: str = "",
        network: str = "private",
    ) -> str:
        """Create a port directly, e.g. a DOWN compute port left by a lost server."""
        with self._state.lock:
            port = self._state.create_port(
                self._state.find_network(network),
                status=status,
                device_owner=device_owner,
                device_id=device_id,
            )
            return port.id

    def add_floating_ip(self, port_id: str | None = None, *, network: str = "public") -> str:
        """Allocate a floating IP, attached to ``port_id`` if given."""
        with self._state.lock:
            fip = self._state.create_floating_ip(
                self._state.find_network(network), port_id=port_id
            )
            return fip.id

    def add_image(
        self, name: str, properties: dict[str, Any] | None = None, *, status: str = "active"
    ) -> str:
        """Add an image (active, qcow2/bare by default) with extra properties."""
        with self._state.lock:
            return self._state.add_image(name, properties, status=status).id

    def set_server_address(self, server: str, ip: str, *, network: str | None = None) -> None:
        """Give a server (id or name) a new fixed IP on ``network`` (default: its first port).

        Use it to point a node at a loopback sshd for host-key scanning.
        """
        require_loopback(ip)
        with self._state.lock:
            record = self._state.find_server(server)
            ports = self._state.server_ports(record.id)
            if network is not None:
                net_id = self._state.find_network(network).id
                ports = [p for p in ports if p.network_id == net_id]
            if not ports:
                raise ValueError(f"server {server} has no port on network {network}")
            # Several servers may share one address (e.g. one sshd for all).
            ports[0].fixed_ips[0]["ip_address"] = ip
            for fip in self._state.floating_ips.values():
                if fip.port_id == ports[0].id:
                    fip.fixed_ip_address = ip

    def set_console_log(self, server: str, text: str) -> None:
        """Set what ``os-getConsoleOutput`` returns for a server (id or name)."""
        with self._state.lock:
            self._state.find_server(server).console_log = text

    # -- inspection ---------------------------------------------------------------------

    def servers(self) -> list[Server]:
        """Snapshot of all servers that still exist (copies; safe to keep)."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(list(self._state.servers.values()))

    def images(self) -> list[Image]:
        """Snapshot of all images."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(list(self._state.images.values()))

    def ports(self) -> list[Port]:
        """Snapshot of all ports."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(list(self._state.ports.values()))

    def floating_ips(self) -> list[FloatingIP]:
        """Snapshot of all floating IPs."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(list(self._state.floating_ips.values()))

    def volumes(self) -> list[Volume]:
        """Snapshot of all volumes."""
        with self._state.lock:
            self._state.tick()
            return copy.deepcopy(list(self._state.volumes.values()))

    def most_concurrent(self, method: str, path: str) -> int:
        """The most ``method path`` requests ever being answered at once."""
        with self._state.lock:
            return self._state.most_in_flight.get((method, path), 0)

    @property
    def requests_log(self) -> list[tuple[str, str]]:
        """Every (method, path) served so far, in order; path without query string."""
        with self._state.lock:
            return list(self._state.requests_log)
