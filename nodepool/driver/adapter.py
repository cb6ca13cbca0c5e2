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
from dataclasses import dataclass, field
from typing import Any, ClassVar

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
    # The node's ``attributes`` before the pool's ``node-attributes``,
    # which win (a metastatic node takes its backing node's).
    node_attributes: dict[str, Any] | None = None
    # Overrides of what the label's image config says (None = keep).
    username: str | None = None
    python_path: str | None = None
    shell_type: str | None = None
    connection_type: str | None = None
    # A port for SSH-like connections; drivers whose nodes are reached
    # through an API (kubernetes) put a dict of credentials here, as
    # upstream does and Zuul's executor expects.
    connection_port: Any = None
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
    """What one launch asks of the cloud, handed to :meth:`Adapter.create`.

    ``hostname`` names the server; ``metadata`` must be stored on it (tags,
    properties, labels: whatever the cloud offers) so that leaked servers
    can be found; ``label`` and ``pool`` are the driver's own config
    objects; ``request`` is the node request being served (None for a
    resumed launch whose request is not at hand).
    """

    def __init__(self, *, hostname: str, label: Any, pool: Any, image_external_id: str | None,
                 metadata: dict[str, str], az: str | None, request: Any,
                 log: logging.Logger | logging.LoggerAdapter) -> None:
        self.hostname = hostname
        self.label = label
        self.pool = pool
        self.image_external_id = image_external_id
        self.metadata = metadata
        self.az = az
        self.request = request
        self.log = log


class Operation:
    """One cloud operation (creating or deleting a server), advanced by the
    framework in short steps.

    The framework calls :meth:`advance` repeatedly, from one thread at a
    time, until it reports completion or raises.  Each call does at most a
    few quick API calls and returns; waiting (for a server to boot, for a
    delete to finish) is the framework's job: it calls again later, with
    growing pauses up to :attr:`Adapter.poll_interval`, and enforces the
    timeouts.  Set :attr:`poll_after` to ask for a specific pause.

    Progress is kept in :attr:`step` (a short name) and :attr:`data` (a
    JSON-serialisable dict), and the external id in :attr:`external_id`
    as soon as the cloud names the server.  The framework stores all three
    in the node's ZooKeeper record whenever they change, and a launcher
    that takes over the node (after a crash or restart) rebuilds the
    operation from them with :meth:`Adapter.create` / :meth:`Adapter.delete`,
    so keep in them everything a later step needs.
    """

    def __init__(self, step: str = "start", data: dict[str, Any] | None = None,
                 external_id: Any = None) -> None:
        self.step = step
        self.data: dict[str, Any] = dict(data or {})
        self.external_id = external_id
        # Seconds until the next call wanted by the operation (None: the
        # framework's own back-off).
        self.poll_after: float | None = None
        # The last status the cloud reported (for messages, e.g. timeouts).
        self.status: str | None = None

    def progress(self) -> dict[str, Any]:
        """What the framework stores to resume this operation."""
        return {"step": self.step, "data": dict(self.data)}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.external_id} {self.step}>"


class CreateOperation(Operation):
    """Creating one server (one launch attempt)."""

    def advance(self) -> Instance | None:
        """Move the creation on; return the :class:`Instance` once the
        server is usable (active, addressed), None while it is not yet.

        Raise :class:`~nodepool.exceptions.QuotaException` if the cloud
        refused for lack of quota, a
        :class:`~nodepool.exceptions.LaunchError` subclass naming the
        failure (server went to error, vanished...), or any exception for
        a failure a new attempt may cure.  Never sleep here.
        """
        raise NotImplementedError


class DeleteOperation(Operation):
    """Deleting one server and waiting until it is gone."""

    def advance(self) -> bool:
        """Move the deletion on; True once the server is gone (a server
        that did not exist at all is gone too).  Never sleep here."""
        raise NotImplementedError


class Adapter:
    """Base class of cloud adapters; defaults suit a cloud without quota
    and without images."""

    def __init__(self, provider_config: Any) -> None:
        self.provider = provider_config

    # How long the framework waits at most between two calls to an
    # operation's advance() while the cloud works (and the lifetime of a
    # shared listing, see :class:`nodepool.driver.listing.SharedListing`).
    poll_interval: ClassVar[float] = 1.0

    # The Resource type of an uploaded image (what list_images lists):
    # the launcher's leak cleanup leaves those to the builder, and leaked
    # ones are counted as ``leaked.<type>s``.
    image_resource_type: ClassVar[str] = "image"

    # Servers ------------------------------------------------------------

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> CreateOperation:
        """A new creation of a server for ``spec`` (``progress`` None), or
        the continuation of one started earlier, possibly by another
        process: ``progress`` is what :meth:`Operation.progress` returned
        then and ``external_id`` the server's id if it was known."""
        raise NotImplementedError

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> DeleteOperation:
        """Delete server ``external_id`` (or continue a deletion from its
        ``progress``)."""
        raise NotImplementedError

    def list_instances(self) -> list[Instance]:
        """Every server visible to this account (for unmanaged quota).
        May come from a short-lived cache."""
        return []

    def get_console_log(self, external_id: Any) -> str | None:
        return None

    def launch_attempt_failed(self, external_id: Any, error: Exception) -> None:
        """A launch attempt on server ``external_id`` (None if the cloud
        never named one) failed with ``error``; called before the server
        is deleted.  For adapters that learn from a failure something
        about what the server stood on (a metastatic backing node that
        cannot be reached is given no more nodes).  The default does
        nothing; errors raised here are logged and do not change the
        launch's course."""

    # Leaks --------------------------------------------------------------

    def list_resources(self) -> list[Resource]:
        """Resources carrying nodepool metadata (servers, images, ...), as
        the cloud shows them at the time of the call.  One carrying an
        upload's tags (``nodepool_build_id`` and ``nodepool_upload_id``,
        e.g. the snapshot under an image) is leaked when that upload's
        record is gone; any other when its node's record is.

        Never answer from a listing taken before the call: leak cleanup
        deletes what two calls show leaked (:mod:`nodepool.driver.sightings`),
        and two answers from one cached listing are one look at the cloud.
        """
        return []

    def node_resource_id(self, external_id: Any) -> str:
        """The id under which :meth:`list_resources` shows the server of a
        node with this ``external_id`` (an ``instance`` resource); used to
        notice servers deleted behind our back."""
        return str(external_id)

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
