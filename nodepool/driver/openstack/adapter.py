"""The OpenStack adapter: nodepool's calls translated to openstacksdk.

Thin on purpose: retries, launch and boot timeouts, host-key scans, quota
arithmetic and leak bookkeeping live in the shared machinery
(:mod:`nodepool.driver.adapter_provider`, :mod:`nodepool.driver.launch`).
What is here is OpenStack's side only: which calls to make, what the
answers mean (:mod:`.errors`), and not making more calls than needed
(:mod:`.caches`: flavors, zones, networks and images are looked up once;
waiting launches and deletes share one server listing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import keystoneauth1.exceptions as ksa_exc
import openstack.connection

from nodepool import stats as statsmod
from nodepool.driver.adapter import (
    META_PROVIDER,
    Adapter,
    CloudImage,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
    Resource,
)
from nodepool.driver.listing import SharedListing
from nodepool.driver.openstack import cloud_config, quota
from nodepool.driver.openstack.caches import Memo, NameCache
from nodepool.driver.openstack.errors import (
    http_status,
    is_quota_message,
    translate,
)
from nodepool.driver.openstack.flavors import select_flavor
from nodepool.driver.openstack.launch_args import server_create_args
from nodepool.driver.openstack.leaks import FloatingIPCleanup, PortCleanup
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import (
    BuilderError,
    ImageNotAvailable,
    LaunchStatusException,
    NotFound,
    QuotaException,
    RuntimeConfigurationException,
)
from nodepool.version import version_string

T = TypeVar("T")

# Per-request socket timeout when clouds.yaml sets no ``api_timeout``: a
# cloud that stops answering must not hang a launch or a delete for ever.
DEFAULT_API_TIMEOUT = 60
# Services that ``rate`` throttles (each separately).
RATE_LIMITED_SERVICES = ("compute", "network", "image", "block-storage", "identity")
IMAGE_FAILED_STATES = ("killed", "deleted", "pending_delete")
GLANCE_INT_ATTRIBUTES = ("min_disk", "min_ram")


def connect(provider: Any) -> openstack.connection.Connection:
    """An openstacksdk connection for the provider's ``cloud`` and
    ``region-name`` in clouds.yaml, throttled by ``rate`` (seconds between
    calls to each service; 0 = unthrottled) and with a bounded API timeout.
    Nothing is sent until the first call.

    Each API call's time is recorded for Prometheus under the provider's
    name through openstacksdk's own Prometheus hooks: the cloud region
    hands every service proxy it makes the (counter, histogram) pair that
    :meth:`nodepool.prometheus.PrometheusMetrics.openstack_reporters`
    gives for this provider, instead of openstacksdk's own histogram
    (labelled by URL, so one series per server).  openstacksdk's loader
    cannot be given them, hence the attributes set on the region."""
    region = cloud_config.cloud_region(provider.cloud, provider.region_name)
    counter, histogram = statsmod.get_stats().prometheus.openstack_reporters(provider.name)
    region.get_prometheus_counter = lambda: counter
    region.get_prometheus_histogram = lambda: histogram
    config = region.config
    if not config.get("api_timeout"):
        config["api_timeout"] = DEFAULT_API_TIMEOUT
    if provider.rate and provider.rate > 0:
        # openstacksdk ignores Connection(rate_limit=...) when handed a
        # CloudRegion; the per-service config is what it reads.
        config["rate_limit"] = {s: 1.0 / provider.rate for s in RATE_LIMITED_SERVICES}
    return openstack.connection.Connection(
        config=region, app_name="nodepool", app_version=version_string)


class OpenStackCreate(CreateOperation):
    """Steps: ``start`` (ask for the server), ``booting`` (until the
    shared listing shows it ACTIVE), ``floating-ip`` (until the attached
    address shows on the server)."""

    def __init__(self, adapter: OpenStackAdapter, spec: LaunchSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.spec = spec
        # When we asked for the server (monotonic; None for a launch
        # resumed from another process, where any listing is new enough).
        self.created_at: float | None = None

    def advance(self) -> Instance | None:
        adapter = self.adapter
        label = self.spec.label
        if self.step == "start":
            self.created_at = time.monotonic()
            self.external_id = adapter.start_server(self.spec)
            self.step = "booting"
            return None
        if self.step == "booting":
            status, fault = adapter.server_status(self.external_id, self.created_at)
            self.status = status
            if status == "MISSING":
                raise LaunchStatusException(f"server {self.external_id} vanished while booting")
            if status == "ERROR":
                fault = fault or "no fault reported"
                if is_quota_message(fault):
                    raise QuotaException(f"server {self.external_id} failed for lack of "
                                         f"quota: {fault}")
                raise LaunchStatusException(f"server {self.external_id} went to ERROR: {fault}")
            if status != "ACTIVE":
                self.poll_after = max(0.01, adapter.servers.next_refresh())
                return None
            if adapter.floating_ip_needed(self.external_id, label):
                self.data["floating_ip"] = adapter.add_floating_ip(self.external_id,
                                                                   self.spec.log)
                self.step = "floating-ip"
                return None
            return adapter.finished_server(self.external_id, label)
        # floating-ip
        if not adapter.has_address(self.external_id, self.data["floating_ip"]):
            return None
        return adapter.finished_server(self.external_id, label)


class OpenStackDelete(DeleteOperation):
    """Steps: ``start`` (ask for the delete), ``deleting`` (until a
    listing made after the request no longer shows the server)."""

    def __init__(self, adapter: OpenStackAdapter, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.deleted_at: float | None = None

    def advance(self) -> bool:
        if self.step == "start":
            try:
                self.adapter.request_delete(self.external_id, self.adapter.log)
            except NotFound:
                return True
            self.deleted_at = time.monotonic()
            self.step = "deleting"
            return False
        status, _ = self.adapter.server_status(self.external_id, self.deleted_at)
        self.status = status
        if status in ("MISSING", "DELETED"):
            return True
        self.poll_after = max(0.01, self.adapter.servers.next_refresh())
        return False


class OpenStackAdapter(Adapter):
    """One provider's view of one OpenStack cloud region."""

    # Seconds between looks at the cloud while waiting (the shared server
    # listing's lifetime, image and floating IP polls).  Tests shorten it.
    poll_interval: ClassVar[float] = 1.0

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.log = logging.getLogger(f"nodepool.driver.openstack.{provider_config.name}")
        self.conn = connect(provider_config)
        self.cloud = provider_config.cloud
        self.servers: SharedListing[Any] = SharedListing(
            lambda: self.conn.compute.servers(details=True), lambda s: s.id, self.poll_interval)
        self._flavors = Memo(lambda: list(self.conn.compute.flavors(details=True)))
        self._azs = Memo(lambda: [z.name for z in self.conn.compute.availability_zones()
                                  if (z.state or {}).get("available", True)])
        self._image_ids = NameCache(self._active_image_id)
        self._network_ids = NameCache(self._network_id)
        self._ports = PortCleanup(provider_config.port_cleanup_interval)
        self._floating_ips = FloatingIPCleanup()

    def stop(self) -> None:
        self.conn.close()

    # Cloud calls ----------------------------------------------------------

    def _call(self, what: str, call: Callable[[], T]) -> T:
        """Make an API call (``call``, which should reach for ``self.conn``'s
        services itself: the first use of a service authenticates and
        discovers it, and may fail too), raising the project exception
        for a failure."""
        try:
            return call()
        except Exception as e:
            if http_status(e) == 400:
                # Usually a cached flavor, image, network or zone that no
                # longer exists: look them up afresh next time.
                self.log.info("Clearing cached names of %s after: %s", self.cloud, e)
                for cache in (self._flavors, self._azs, self._image_ids, self._network_ids):
                    cache.clear()
            raise translate(e, what, self.cloud) from e

    def _find(self, what: str, find: Callable[[], Any]) -> Any:
        """A find_* call (by id, else by name) made with
        ``ignore_missing=False``; None when there is none."""
        try:
            return self._call(what, find)
        except NotFound:
            return None

    def _active_image_id(self, name_or_id: str) -> str | None:
        image = self._find(f"looking up image {name_or_id}", lambda: self.conn.image.find_image(
            name_or_id, ignore_missing=False))
        return image.id if image is not None and image.status == "active" else None

    def _network_id(self, name_or_id: str) -> str | None:
        network = self._find(f"looking up network {name_or_id}",
                             lambda: self.conn.network.find_network(
                                 name_or_id, ignore_missing=False))
        return network.id if network is not None else None

    def _flavor(self, label: Any) -> Any:
        flavors = self._call("listing flavors", self._flavors.get)
        return select_flavor(flavors, label.min_ram, label.flavor_name)

    def _cloud_server(self, server_id: str) -> Any:
        """The server through openstacksdk's cloud layer, which works out
        its public and private addresses."""
        server = self._call(f"reading server {server_id}",
                            lambda: self.conn.get_server_by_id(server_id))
        if server is None:
            raise LaunchStatusException(f"server {server_id} disappeared")
        return server

    def _listing(self, requested_after: float | None = None) -> tuple[dict[str, Any], float]:
        """The shared server listing (see :mod:`nodepool.driver.listing`)."""
        try:
            return self.servers.get(requested_after)
        except Exception as e:
            raise translate(e, "listing servers", self.cloud) from e

    # Servers ----------------------------------------------------------------

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> CreateOperation:
        progress = progress or {}
        return OpenStackCreate(self, spec, step=progress.get("step", "start"),
                               data=progress.get("data"), external_id=external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> DeleteOperation:
        progress = progress or {}
        return OpenStackDelete(self, step=progress.get("step", "start"),
                               data=progress.get("data"), external_id=external_id)

    def start_server(self, spec: LaunchSpec) -> str:
        """Ask for the server; its id."""
        label = spec.label
        flavor = self._flavor(label)
        args = server_create_args(
            spec=spec, provider_name=self.provider.name, flavor_id=flavor.id,
            image_id=self._image_ref(spec),
            network_ids=[self._required_network_id(n) for n in label.networks])
        created = self._call(f"creating server {spec.hostname}",
                             lambda: self.conn.compute.create_server(**args))
        return created.id

    def finished_server(self, server_id: str, label: Any) -> Instance:
        server = self._cloud_server(server_id)
        return self._instance(server, quota.label_quota(label, self._flavor(label)))

    def _image_ref(self, spec: LaunchSpec) -> str:
        cloud_image = spec.label.cloud_image
        if cloud_image is None:
            if not spec.image_external_id:
                raise ImageNotAvailable(f"no upload of diskimage {spec.label.diskimage.name}")
            return spec.image_external_id
        if cloud_image.image_id:
            return cloud_image.image_id
        image_id = self._image_ids.get(cloud_image.external_name)
        if image_id is None:
            raise ImageNotAvailable(f"cloud image {cloud_image.external_name!r} is not "
                                    f"active in cloud {self.cloud}")
        return image_id

    def _required_network_id(self, name_or_id: str) -> str:
        network_id = self._network_ids.get(name_or_id)
        if network_id is None:
            raise RuntimeConfigurationException(
                f"network {name_or_id!r} does not exist in cloud {self.cloud}; "
                "fix the pool's or label's networks")
        return network_id

    def server_status(self, server_id: str, since: float | None) -> tuple[str, str | None]:
        """(status, fault message) of a server from the shared listing;
        status ``MISSING`` when a listing requested after ``since`` (a
        monotonic time, or None for "any listing") does not show it, and
        ``UNKNOWN`` while only older listings were seen."""
        servers, listed_at = self._listing()
        server = servers.get(server_id)
        if server is None:
            if since is None or listed_at > since:
                return "MISSING", None
            return "UNKNOWN", None
        fault = (server.fault or {}).get("message") if server.status == "ERROR" else None
        return server.status, fault

    def _needs_floating_ip(self, server: Any) -> bool:
        # openstacksdk knows whether the server already has a public
        # address and whether the cloud hands out floating IPs at all.
        return self._call("checking the need for a floating IP",
                          lambda: self.conn._needs_floating_ip(server=server,
                                                               nat_destination=None))

    def floating_ip_needed(self, server_id: str, label: Any) -> bool:
        if not label.pool.auto_floating_ip:
            return False
        server = self._cloud_server(server_id)
        return self._needs_floating_ip(server)

    def add_floating_ip(self, server_id: str, log: Any) -> str:
        """Attach a floating IP (without waiting); its address."""
        server = self._cloud_server(server_id)
        fip = self._call(f"adding a floating IP to server {server_id}",
                         lambda: self.conn.create_floating_ip(server=server, wait=False))
        address = fip["floating_ip_address"]
        log.info("Attached floating IP %s to server %s", address, server_id)
        return address

    def has_address(self, server_id: str, address: str) -> bool:
        server = self._cloud_server(server_id)
        return address in (server.public_v4, server.public_v6)

    def _instance(self, server: Any, used: QuotaInformation) -> Instance:
        public_v4 = server.public_v4 or None
        public_v6 = server.public_v6 or None
        private_v4 = server.private_v4 or None
        return Instance(
            external_id=server.id, metadata=dict(server.metadata or {}),
            interface_ip=public_v4 or public_v6 or private_v4,
            public_ipv4=public_v4, public_ipv6=public_v6,
            # As upstream: a node with only a public address reports it as
            # its private one too.
            private_ipv4=private_v4 or public_v4,
            az=server.availability_zone or None,
            region=self.conn.config.region_name or self.provider.region_name,
            cloud=self.cloud, host_id=server.host_id or None, quota=used)

    def request_delete(self, server_id: str, log: Any) -> None:
        """Ask for a server's deletion (releasing its floating IPs
        first); NotFound if it does not exist."""
        self._delete_floating_ips(server_id, log)
        self._call(f"deleting server {server_id}", lambda: self.conn.compute.delete_server(
            server_id, ignore_missing=False))

    def _delete_floating_ips(self, server_id: str, log: Any) -> None:
        """Floating IPs outlive their server's ports; release them first.
        Skipped (no API calls) where no pool attaches floating IPs."""
        if not (any(p.auto_floating_ip for p in self.provider.pools.values())
                and self.conn._has_floating_ips()):
            return
        try:
            for port in self.conn.network.ports(device_id=server_id):
                for fip in self.conn.network.ips(port_id=port.id):
                    log.info("Deleting floating IP %s of server %s",
                             fip.floating_ip_address, server_id)
                    self.conn.network.delete_ip(fip, ignore_missing=True)
        except Exception:
            # Leak cleanup (clean-floating-ips) can still catch it.
            log.exception("Could not release the floating IPs of server %s", server_id)

    def list_instances(self) -> list[Instance]:
        servers = list(self.servers.get()[0].values())
        volume_sizes = self._volume_sizes() if any(
            s.attached_volumes for s in servers) else {}
        return [Instance(external_id=s.id, metadata=dict(s.metadata or {}),
                         az=s.availability_zone or None,
                         quota=quota.server_quota(s, self._flavors.get, volume_sizes))
                for s in servers if s.status != "DELETED"]

    def _volume_sizes(self) -> dict[str, int]:
        try:
            return {v.id: v.size or 0 for v in self.conn.block_storage.volumes(details=True)}
        except ksa_exc.EndpointNotFound:
            return {}
        except Exception:
            self.log.exception("Could not list volumes of %s", self.provider.name)
            return {}

    def get_console_log(self, external_id: Any) -> str | None:
        output = self._call(f"reading the console of server {external_id}",
                            lambda: self.conn.compute.get_server_console_output(external_id))
        return (output or {}).get("output")

    # Leaks ----------------------------------------------------------------

    def list_resources(self) -> list[Resource]:
        """Our servers, from a listing requested since this call (shared
        with waiting launches, as any other).  Uploaded images are the
        builder's to clean up; it finds them through :meth:`list_images`."""
        servers, _ = self.servers.get(requested_after=time.monotonic())
        return [Resource("instance", s.id, dict(s.metadata), s.name)
                for s in servers.values()
                if META_PROVIDER in (s.metadata or {})]

    def delete_resource(self, resource: Resource) -> None:
        # Only servers are listed as resources (see list_resources).
        self._delete_floating_ips(resource.id, self.log)
        self._call(f"deleting leaked server {resource.id}",
                   lambda: self.conn.compute.delete_server(resource.id))

    def cleanup_extra(self, log: logging.Logger) -> dict[str, int]:
        counts = {"ports": self._ports.run(self.conn, log)}
        if self.provider.clean_floating_ips:
            counts["floatingips"] = self._floating_ips.run(self.conn, log)
        return {k: v for k, v in counts.items() if v}

    # Quota ----------------------------------------------------------------

    def get_quota_limits(self) -> QuotaInformation:
        compute = self._call("reading compute limits", lambda: self.conn.compute.get_limits())
        volume = None
        if any(label.boot_from_volume for pool in self.provider.pools.values()
               for label in pool.labels.values()):
            volume = self._call("reading volume limits",
                                lambda: self.conn.block_storage.get_limits())
        return quota.limits(compute.absolute, volume.absolute if volume else None)

    def get_quota_for_label(self, label: Any) -> QuotaInformation:
        return quota.label_quota(label, self._flavor(label))

    def get_azs(self) -> list[str | None]:
        return list(self._call("listing availability zones", self._azs.get)) or [None]

    def label_ready(self, label: Any) -> bool:
        if label.cloud_image is None:
            return True
        if self._image_ids.get(label.cloud_image.external_name) is not None:
            return True
        self.log.warning("Cloud image %r of label %s is not active in cloud %s",
                         label.cloud_image.external_name, label.name, self.cloud)
        return False

    # Images ---------------------------------------------------------------

    def upload_image(self, *, image_name: str, filename: str, image_format: str,
                     metadata: dict[str, str], md5: str | None = None,
                     sha256: str | None = None, provider_image: Any = None,
                     timeout: float | None = None) -> str:
        timeout = self.provider.image_upload_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        # Glance properties are strings (but for its integer attributes).
        # They go in ``meta``, not as keyword arguments, so that a key such
        # as "timeout" or "tags" cannot turn into an argument of the call.
        properties: dict[str, Any] = {
            str(k): int(v) if k in GLANCE_INT_ATTRIBUTES else str(v)
            for k, v in (metadata or {}).items()}
        image = self._call(f"uploading image {image_name}", lambda: self.conn.image.create_image(
            name=image_name, filename=filename, disk_format=image_format,
            container_format="bare", visibility="private", md5=md5, sha256=sha256,
            wait=False, meta=properties))
        image_id = image.id
        try:
            while True:
                # openstacksdk hands back the record from before the upload.
                image = self._call(f"reading image {image_id}",
                                   lambda: self.conn.image.get_image(image_id))
                if image.status == "active":
                    return image_id
                if image.status in IMAGE_FAILED_STATES:
                    raise BuilderError(f"image {image_name} ({image_id}) ended "
                                       f"{image.status} in cloud {self.cloud}")
                if time.monotonic() >= deadline:
                    raise BuilderError(f"image {image_name} ({image_id}) not active within "
                                       f"{timeout:.0f} s (status {image.status})")
                time.sleep(self.poll_interval)
        except Exception:
            self._discard_image(image_id)
            raise

    def _discard_image(self, image_id: str) -> None:
        try:
            self.conn.image.delete_image(image_id, ignore_missing=True)
        except Exception:
            self.log.exception("Could not delete failed upload %s; leak cleanup will retry",
                               image_id)

    def delete_image(self, external_id: str) -> None:
        self._call(f"deleting image {external_id}", lambda: self.conn.image.delete_image(
            external_id, ignore_missing=False))

    def list_images(self) -> list[CloudImage]:
        images: list[Any] = self._call("listing images",
                                       lambda: list(self.conn.image.images()))
        return [CloudImage(i.id, i.name, dict(i.properties or {})) for i in images]
