"""What a cloud driver implements: a thin adapter over its cloud API.

Everything that is the same for every cloud (retries, timeouts, quota
bookkeeping, ZooKeeper records, host-key scanning, leak detection with two
sightings, statsd) lives once in :mod:`nodepool.driver.adapter_provider`.
An adapter only talks to its cloud.  Its methods are called from worker
threads and may block; they must be thread-safe.

Errors: raise :class:`nodepool.exceptions.QuotaException` when the cloud
refuses for lack of quota (the request then waits instead of failing),
:class:`nodepool.exceptions.NotFound` when a resource is already gone,
:class:`nodepool.exceptions.RuntimeConfigurationException` when a label can
never work (no such flavor), and any other exception for failures that a
retry may cure.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodepool.driver.quota import QuotaInformation

# Metadata keys put on every cloud resource nodepool creates, so leaked
# resources can be found (and nothing without them is ever touched).
META_PROVIDER = "nodepool_provider_name"
META_NODE_ID = "nodepool_node_id"
META_POOL = "nodepool_pool_name"
META_BUILD_ID = "nodepool_build_id"
META_UPLOAD_ID = "nodepool_upload_id"


@dataclass
class Instance:
    """A server as the cloud reports it."""

    external_id: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    interface_ip: str | None = None
    public_ipv4: str | None = None
    public_ipv6: str | None = None
    private_ipv4: str | None = None
    private_ipv6: str | None = None
    az: str | None = None
    region: str | None = None
    cloud: str | None = None
    host_id: str | None = None
    driver_data: Any = None
    slot: int | None = None
    node_properties: dict[str, Any] | None = None
    # Overrides of what the label's image config says (None = keep).
    username: str | None = None
    python_path: str | None = None
    shell_type: str | None = None
    connection_type: str | None = None
    connection_port: int | None = None
    host_keys: list[str] | None = None
    # Resources the instance uses (for unmanaged-quota accounting).
    quota: QuotaInformation | None = None


@dataclass
class Resource:
    """A leakable cloud resource that carries our metadata tags."""

    type: str  # "instance", "image", "port", "floatingip", "volume", ...
    id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def plural(self) -> str:
        """Name used in ``nodepool.provider.<p>.leaked.<plural>`` metrics."""
        return self.type + "s"


@dataclass
class CloudImage:
    """An image in the cloud (for alien-image-list and upload cleanup)."""

    id: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)


class LaunchSpec:
    """What to launch, handed to :meth:`Adapter.create_instance`.

    ``deadline`` (monotonic) is when the launch times out; the adapter
    should give up (raise) when it passes.  ``report_external_id`` must be
    called as soon as the cloud names the server, so a failed or abandoned
    launch can still be cleaned up.
    """

    def __init__(self, *, hostname: str, label: Any, image_external_id: str | None,
                 metadata: dict[str, str], az: str | None, request: Any,
                 deadline: float, log: logging.Logger | logging.LoggerAdapter,
                 report_external_id: Callable[[Any], None]) -> None:
        self.hostname = hostname
        self.label = label
        self.image_external_id = image_external_id
        self.metadata = metadata
        self.az = az
        self.request = request
        self.deadline = deadline
        self.log = log
        self._report = report_external_id
        self.cancelled = threading.Event()

    def report_external_id(self, external_id: Any) -> None:
        self._report(external_id)

    @property
    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline or self.cancelled.is_set()


class Adapter:
    """Base class of cloud adapters; defaults suit a cloud without quota
    and without images."""

    def __init__(self, provider_config: Any) -> None:
        self.provider = provider_config

    # Servers ------------------------------------------------------------

    def create_instance(self, spec: LaunchSpec) -> Instance:
        """Create a server and wait until it is active; return it."""
        raise NotImplementedError

    def delete_instance(self, external_id: Any,
                        log: logging.Logger | logging.LoggerAdapter | None = None) -> None:
        """Delete a server and wait until it is gone.  Raise NotFound if it
        does not exist."""
        raise NotImplementedError

    def list_instances(self) -> list[Instance]:
        """Every server visible to this account (for unmanaged quota).
        May come from a short-lived cache."""
        return []

    def get_console_log(self, external_id: Any) -> str | None:
        return None

    # Leaks --------------------------------------------------------------

    def list_resources(self) -> list[Resource]:
        """Resources carrying nodepool metadata (servers, images, ...), as
        the cloud shows them at the time of the call.

        Never answer from a listing taken before the call: leak cleanup
        deletes what two calls show leaked (:mod:`nodepool.driver.sightings`),
        and two answers from one cached listing are one look at the cloud.
        """
        return []

    def delete_resource(self, resource: Resource) -> None:
        raise NotImplementedError

    def cleanup_extra(self, log: logging.Logger) -> dict[str, int]:
        """Driver-specific cleanup (e.g. DOWN ports); returns counts of
        deleted things by plural type name for metrics."""
        return {}

    # Quota --------------------------------------------------------------

    def get_quota_limits(self) -> QuotaInformation:
        """The account's limits (missing keys are unlimited)."""
        return QuotaInformation()

    def get_quota_for_label(self, label: Any) -> QuotaInformation:
        """What one node of ``label`` uses."""
        return QuotaInformation(instances=1)

    def get_azs(self) -> list[str | None]:
        return [None]

    def label_ready(self, label: Any) -> bool:
        """Whether the label's cloud image exists (diskimage labels are
        checked against ZooKeeper by the framework)."""
        return True

    # Images -------------------------------------------------------------

    def upload_image(self, *, image_name: str, filename: str, image_format: str,
                     metadata: dict[str, str], md5: str | None = None,
                     sha256: str | None = None, provider_image: Any = None,
                     timeout: float | None = None) -> str:
        """Upload a disk image file; return its cloud id once usable."""
        raise NotImplementedError

    def delete_image(self, external_id: str) -> None:
        """Delete an uploaded image; raise NotFound if it is gone."""
        raise NotImplementedError

    def list_images(self) -> list[CloudImage]:
        """Every image of this account, as the cloud shows them at the time
        of the call (never cached: see :meth:`list_resources`)."""
        return []

    def stop(self) -> None:
        """Release connections and threads."""
