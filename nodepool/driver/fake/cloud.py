"""An in-process simulated cloud for tests, demos and benchmarks.

Its default profile matches upstream's fake cloud (BENCHMARKS.md) so speed
figures compare like for like: image ``Fake Precise``; flavors ``Fake
Flavor`` and ``Unreal Flavor`` (8192 MB, 4 vCPUs); 20 instances, 100 cores,
1,000,000 MB RAM; servers ACTIVE 0.1 s after creation; instant deletes.

One cloud exists per provider name in a process (``FakeCloud.for_provider``),
so a test can reach the cloud its launcher uses and inject faults.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar


class FakeCloudError(Exception):
    """A generic API failure (like an HTTP 500)."""


class FakeQuotaError(FakeCloudError):
    """The cloud refuses for lack of quota (like Nova's 403)."""


class FakeNotFound(FakeCloudError):
    pass


@dataclass
class FakeFlavor:
    id: str
    name: str
    ram: int
    vcpus: int
    disk: int = 80


@dataclass
class FakeServer:
    id: str
    name: str
    flavor: FakeFlavor
    image: str | None
    metadata: dict[str, Any]
    az: str | None
    address: str
    created: float
    ready_at: float
    status: str = "BUILD"
    fault: str | None = None
    volume_gb: int = 0
    # When a server being deleted disappears (monotonic), None if it is not.
    gone_at: float | None = None

    def current_status(self, hold: bool) -> str:
        if self.status == "BUILD" and not hold and time.monotonic() >= self.ready_at:
            self.status = "ACTIVE"
        return self.status


@dataclass
class FakeImage:
    id: str
    name: str
    status: str = "active"
    metadata: dict[str, Any] = field(default_factory=dict)
    disk_format: str = "qcow2"
    size: int = 0


class FakeCloud:
    """A small stateful cloud with fault-injection knobs."""

    _clouds: ClassVar[dict[str, FakeCloud]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()
    _addresses: ClassVar[itertools.count] = itertools.count(1)

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.lock = threading.Condition()
        self.flavors = [FakeFlavor("f1", "Fake Flavor", 8192, 4),
                        FakeFlavor("f2", "Unreal Flavor", 8192, 4)]
        self.images: dict[str, FakeImage] = {
            "fake-image-id": FakeImage("fake-image-id", "Fake Precise")}
        self.servers: dict[str, FakeServer] = {}
        self.azs = ["az1", "az2"]
        self.max_instances = 20
        self.max_cores = 100
        self.max_ram = 1_000_000
        self.max_volumes = 100
        self.max_volume_gb = 1_000_000
        self.boot_delay = 0.1
        self.delete_delay = 0.0
        self.hold_in_build = False
        self._fail_creates = 0
        self._error_creates = 0
        self._quota_creates = 0
        self._fail_deletes = 0
        self._fail_uploads = 0
        self.create_calls = 0
        self.delete_calls = 0
        self.console_logs: dict[str, str] = {}
        # Tests may point servers at a local sshd: fn(server) -> address.
        self.address_for: Any = None

    # Registry -----------------------------------------------------------

    @classmethod
    def for_provider(cls, provider_name: str) -> FakeCloud:
        with cls._registry_lock:
            cloud = cls._clouds.get(provider_name)
            if cloud is None:
                cloud = cls._clouds[provider_name] = FakeCloud(provider_name)
            return cloud

    @classmethod
    def reset_all(cls) -> None:
        with cls._registry_lock:
            cls._clouds.clear()

    # Fault injection ---------------------------------------------------

    def fail_next_creates(self, count: int, status_error: bool = False) -> None:
        """The next ``count`` creates fail: with an API error, or (with
        ``status_error``) by the server going to ERROR."""
        with self.lock:
            if status_error:
                self._error_creates = count
            else:
                self._fail_creates = count

    def quota_exceeded_next_creates(self, count: int) -> None:
        with self.lock:
            self._quota_creates = count

    def fail_next_deletes(self, count: int) -> None:
        with self.lock:
            self._fail_deletes = count

    def fail_next_uploads(self, count: int) -> None:
        with self.lock:
            self._fail_uploads = count

    def set_hold_in_build(self, hold: bool) -> None:
        """While held, servers stay in BUILD (to test launch timeouts)."""
        with self.lock:
            self.hold_in_build = hold
            self.lock.notify_all()

    # Servers -------------------------------------------------------------

    def _usage(self) -> tuple[int, int, int]:
        servers = list(self.servers.values())
        return (len(servers), sum(s.flavor.vcpus for s in servers),
                sum(s.flavor.ram for s in servers))

    def flavor(self, name_or_id: str) -> FakeFlavor:
        for flavor in self.flavors:
            if name_or_id in (flavor.id, flavor.name):
                return flavor
        raise FakeNotFound(f"no flavor {name_or_id}")

    def create_server(self, name: str, flavor: FakeFlavor, image: str | None,
                      metadata: dict[str, Any], az: str | None = None,
                      volume_gb: int = 0) -> FakeServer:
        with self.lock:
            self.create_calls += 1
            if self._fail_creates > 0:
                self._fail_creates -= 1
                raise FakeCloudError("Injected failure creating server")
            if self._quota_creates > 0:
                self._quota_creates -= 1
                raise FakeQuotaError("Quota exceeded for instances: injected")
            instances, cores, ram = self._usage()
            if instances + 1 > self.max_instances:
                raise FakeQuotaError(
                    f"Quota exceeded for instances: Requested 1, but already used "
                    f"{instances} of {self.max_instances} instances")
            if cores + flavor.vcpus > self.max_cores:
                raise FakeQuotaError("Quota exceeded for cores")
            if ram + flavor.ram > self.max_ram:
                raise FakeQuotaError("Quota exceeded for ram")
            now = time.monotonic()
            server = FakeServer(
                id=uuid.uuid4().hex, name=name, flavor=flavor, image=image,
                metadata=dict(metadata), az=az or self.azs[0],
                address=self._next_address(), created=now,
                ready_at=now + self.boot_delay, volume_gb=volume_gb)
            if self.address_for is not None:
                server.address = self.address_for(server)
            if self._error_creates > 0:
                self._error_creates -= 1
                server.status = "ERROR"
                server.fault = "Injected boot failure"
            self.servers[server.id] = server
            return server

    def _next_address(self) -> str:
        # Loopback space: nothing outside this machine is ever addressed.
        n = next(self._addresses)
        return f"127.{100 + (n >> 16) % 100}.{(n >> 8) % 256}.{n % 256}"

    def get_server(self, server_id: str) -> FakeServer | None:
        """The server (its status brought up to date), None once gone."""
        with self.lock:
            self._prune()
            server = self.servers.get(server_id)
            if server is not None:
                server.current_status(self.hold_in_build)
            return server

    def delete_server(self, server_id: str) -> None:
        """Start deleting a server; it is gone ``delete_delay`` seconds
        later (at once by default)."""
        with self.lock:
            self.delete_calls += 1
            if self._fail_deletes > 0:
                self._fail_deletes -= 1
                raise FakeCloudError("Injected failure deleting server")
            self._prune()
            server = self.servers.get(server_id)
            if server is None:
                raise FakeNotFound(server_id)
            if self.delete_delay:
                server.status = "DELETED"
                server.gone_at = time.monotonic() + self.delete_delay
            else:
                del self.servers[server_id]

    def _prune(self) -> None:
        now = time.monotonic()
        for server_id in [s.id for s in self.servers.values()
                          if s.gone_at is not None and s.gone_at <= now]:
            del self.servers[server_id]

    def list_servers(self) -> list[FakeServer]:
        with self.lock:
            self._prune()
            for server in self.servers.values():
                server.current_status(self.hold_in_build)
            return list(self.servers.values())

    def add_server(self, name: str, metadata: dict[str, Any] | None = None,
                   flavor: str = "Fake Flavor", status: str = "ACTIVE") -> FakeServer:
        """Put a server into the cloud directly (unmanaged or leaked)."""
        with self.lock:
            now = time.monotonic()
            server = FakeServer(
                id=uuid.uuid4().hex, name=name, flavor=self.flavor(flavor), image=None,
                metadata=dict(metadata or {}), az=self.azs[0],
                address=self._next_address(), created=now, ready_at=now, status=status)
            self.servers[server.id] = server
            return server

    # Images --------------------------------------------------------------

    def upload_image(self, name: str, filename: str, disk_format: str,
                     metadata: dict[str, Any]) -> FakeImage:
        with self.lock:
            if self._fail_uploads > 0 or metadata.get("SHOULD_FAIL") == "true":
                if self._fail_uploads > 0:
                    self._fail_uploads -= 1
                raise FakeCloudError("Injected failure uploading image")
            try:
                import os
                size = os.path.getsize(filename)
            except OSError:
                size = 0
            image = FakeImage(uuid.uuid4().hex, name, "active", dict(metadata),
                              disk_format, size)
            self.images[image.id] = image
            return image

    def delete_image(self, image_id: str) -> None:
        with self.lock:
            if self.images.pop(image_id, None) is None:
                raise FakeNotFound(image_id)

    def find_image(self, name_or_id: str) -> FakeImage | None:
        with self.lock:
            if name_or_id in self.images:
                return self.images[name_or_id]
            for image in self.images.values():
                if image.name == name_or_id:
                    return image
            return None

    def list_images(self) -> list[FakeImage]:
        with self.lock:
            return list(self.images.values())
