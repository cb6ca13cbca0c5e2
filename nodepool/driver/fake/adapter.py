"""The adapter between the shared launch machinery and the fake cloud."""

from __future__ import annotations

import time
from typing import Any

from nodepool.driver.adapter import (
    Adapter,
    CloudImage,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
    Resource,
)
from nodepool.driver.fake.cloud import FakeCloud, FakeCloudError, FakeNotFound, FakeQuotaError
from nodepool.driver.openstack.flavors import select_flavor
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import LaunchStatusException, NotFound, QuotaException

# Fake servers are never contacted: the launcher takes these keys instead
# of scanning (unless a test routes a server to a real sshd).
FAKE_HOST_KEYS = ["ssh-rsa FAKEKEY"]


class FakeCreate(CreateOperation):
    """Steps: ``start`` (create the server), ``booting`` (until ACTIVE)."""

    def __init__(self, adapter: FakeAdapter, spec: LaunchSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.spec = spec

    def advance(self) -> Instance | None:
        cloud = self.adapter.cloud
        if self.step == "start":
            label = self.spec.label
            try:
                created = cloud.create_server(
                    self.spec.hostname, self.adapter.flavor(label), self.spec.image_external_id,
                    self.spec.metadata, self.spec.az,
                    volume_gb=label.volume_size if label.boot_from_volume else 0)
            except FakeQuotaError as e:
                raise QuotaException(str(e)) from e
            self.external_id = created.id
            self.step = "booting"
        server = cloud.get_server(self.external_id)
        if server is None:
            raise LaunchStatusException(f"server {self.external_id} vanished while booting")
        self.status = server.status
        if server.status == "ERROR":
            raise LaunchStatusException(f"server {server.id} went to ERROR: {server.fault}")
        if server.status == "ACTIVE":
            return self.adapter.instance(server)
        # The fake cloud knows when the server will be up.
        self.poll_after = (None if cloud.hold_in_build
                           else max(0.001, server.ready_at - time.monotonic()))
        return None


class FakeDelete(DeleteOperation):
    """Steps: ``start`` (ask for the delete), ``deleting`` (until gone)."""

    def __init__(self, adapter: FakeAdapter, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter

    def advance(self) -> bool:
        cloud = self.adapter.cloud
        if self.step == "start":
            try:
                cloud.delete_server(self.external_id)
            except FakeNotFound:
                return True
            self.step = "deleting"
        return cloud.get_server(self.external_id) is None


class FakeAdapter(Adapter):
    # The fake cloud answers from memory: no need to wait long between looks.
    poll_interval = 0.2

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.cloud = FakeCloud.for_provider(provider_config.name)

    def flavor(self, label: Any):
        return select_flavor(self.cloud.flavors, label.min_ram, label.flavor_name)

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> CreateOperation:
        progress = progress or {}
        return FakeCreate(self, spec, step=progress.get("step", "start"),
                          data=progress.get("data"), external_id=external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> DeleteOperation:
        progress = progress or {}
        return FakeDelete(self, step=progress.get("step", "start"),
                          data=progress.get("data"), external_id=external_id)

    def instance(self, server) -> Instance:
        routed = self.cloud.address_for is not None
        return Instance(
            external_id=server.id, metadata=dict(server.metadata),
            interface_ip=server.address, public_ipv4=server.address,
            private_ipv4=server.address, az=server.az, region="fake-region",
            cloud="fake", host_id=f"fake-host-{server.id[:8]}",
            host_keys=None if routed else list(FAKE_HOST_KEYS),
            quota=QuotaInformation(instances=1, cores=server.flavor.vcpus,
                                   ram=server.flavor.ram))

    def list_instances(self) -> list[Instance]:
        return [self.instance(s) for s in self.cloud.list_servers()]

    def get_console_log(self, external_id: Any) -> str | None:
        return self.cloud.console_logs.get(external_id, "fake console log")

    def list_resources(self) -> list[Resource]:
        out = [Resource("instance", s.id, dict(s.metadata), s.name)
               for s in self.cloud.list_servers()]
        out += [Resource("image", i.id, dict(i.metadata), i.name)
                for i in self.cloud.list_images()]
        return out

    def delete_resource(self, resource: Resource) -> None:
        try:
            if resource.type == "instance":
                self.cloud.delete_server(resource.id)
            elif resource.type == "image":
                self.cloud.delete_image(resource.id)
        except FakeNotFound:
            pass

    def get_quota_limits(self) -> QuotaInformation:
        c = self.cloud
        return QuotaInformation(instances=c.max_instances, cores=c.max_cores, ram=c.max_ram)

    def get_quota_for_label(self, label: Any) -> QuotaInformation:
        flavor = self.flavor(label)
        return QuotaInformation(instances=1, cores=flavor.vcpus, ram=flavor.ram)

    def get_azs(self) -> list[str | None]:
        return list(self.cloud.azs)

    def label_ready(self, label: Any) -> bool:
        if label.cloud_image is None:
            return True
        return self.cloud.find_image(label.cloud_image.external_name) is not None

    def upload_image(self, *, image_name: str, filename: str, image_format: str,
                     metadata: dict[str, str], md5: str | None = None,
                     sha256: str | None = None, provider_image: Any = None,
                     timeout: float | None = None) -> str:
        try:
            return self.cloud.upload_image(image_name, filename, image_format, metadata).id
        except FakeCloudError as e:
            raise RuntimeError(f"upload of {image_name} failed: {e}") from e

    def delete_image(self, external_id: str) -> None:
        try:
            self.cloud.delete_image(external_id)
        except FakeNotFound as e:
            raise NotFound(str(e)) from e

    def list_images(self) -> list[CloudImage]:
        return [CloudImage(i.id, i.name, dict(i.metadata)) for i in self.cloud.list_images()]
