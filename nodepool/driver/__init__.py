"""The driver API.

A driver is a package under ``nodepool/driver/<name>/`` (or a third-party
package registered in the ``nodepool.drivers`` entry-point group) whose
``Driver`` subclass is instantiated once per process.  From a provider's
YAML it yields a :class:`ProviderConfig`; from that a :class:`Provider`
(the live connection); the launcher then asks the provider for a request
handler per accepted node request.

Cloud drivers stay thin: they implement :class:`nodepool.driver.adapter.Adapter`
(create, delete and list instances, quota, image upload) and the shared
machinery in :mod:`nodepool.driver.adapter_provider` does retries, quota,
ZooKeeper bookkeeping and leak detection once for all of them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from nodepool.driver.quota import QuotaInformation

if TYPE_CHECKING:
    from nodepool.driver.launch_errors import LaunchFailure
    from nodepool.driver.registration import EndpointSpec
    from nodepool.zk import ZooKeeper


class ConfigValue:
    """Equality by public attributes.  Providers are only replaced on a
    config reload when their parsed configuration differs."""

    # Attributes that point back up the tree and must not be compared
    # (they would recurse).
    _NO_COMPARE: ClassVar[frozenset[str]] = frozenset({"provider", "pool"})

    def _compare_dict(self) -> dict[str, Any]:
        return {k: val for k, val in vars(self).items()
                if not k.startswith("_") and k not in self._NO_COMPARE}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, ConfigValue)
        return self._compare_dict() == other._compare_dict()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '')}>"


# The port Zuul connects to for an image's connection type when the image
# does not set one.
CONNECTION_PORTS = {"ssh": 22, "winrm": 5986}


class LabelImage(ConfigValue):
    """How to reach nodes booted from an image: what every driver's
    diskimage and cloud-image settings have in common (the values are
    copied into each node record for Zuul)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.username: str = "zuul"
        self.python_path: str = "auto"
        self.shell_type: str | None = None
        self.connection_type: str = "ssh"
        self.connection_port: int = 22

    def load_connection(self, d: Mapping[str, Any]) -> None:
        """Read the keys an image entry uses to say how Zuul reaches its
        nodes (``connection-type``, ``connection-port``, ``python-path``,
        ``shell-type``): every cloud driver's images have them, with these
        defaults.  A port follows from the connection type unless set."""
        self.python_path = d.get("python-path", "auto")
        self.shell_type = d.get("shell-type")
        self.connection_type = d.get("connection-type", "ssh")
        self.connection_port = d.get("connection-port",
                                     CONNECTION_PORTS.get(self.connection_type, 22))

    @property
    def external_name(self) -> str:
        """What the cloud knows the image as (cloud images)."""
        return self.name


class ProviderDiskImage(LabelImage):
    """A top-level diskimage as one provider uploads it (``diskimages``
    of an image-managing provider); drivers add their own keys."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # Stops uploads of this image to this provider (builds go on).
        self.pause: bool = False
        # Cloud image properties, over the diskimage's ``metadata``.
        self.meta: dict[str, Any] = {}


class ConfigLabel(ConfigValue):
    """A label as offered by one pool.  The settings here are the ones
    the framework reads; drivers add their own."""

    def __init__(self, name: str, pool: ConfigPool | None = None) -> None:
        self.name = name
        self.pool = pool
        # The image a node of this label boots: a diskimage the builder
        # uploads, or an image already in the cloud; neither for drivers
        # without images (static, kubernetes).
        self.diskimage: LabelImage | None = None
        self.cloud_image: LabelImage | None = None
        # Scan the node's SSH host keys before it is ready.
        self.host_key_checking: bool = pool.host_key_checking if pool is not None else True
        # Log the server's console when an attempt fails.
        self.console_log: bool = False

    @property
    def image(self) -> LabelImage | None:
        return self.diskimage or self.cloud_image


class ConfigPool(ConfigValue):
    """A pool: a set of labels with its own limits, served by one
    ``PoolWorker``.  The settings here are the ones the framework reads;
    drivers add their own."""

    def __init__(self, name: str = "", provider: ProviderConfig | None = None) -> None:
        self.name = name
        self.provider = provider
        self.labels: dict[str, ConfigLabel] = {}
        self.max_servers: float = math.inf
        self.max_cores: float = math.inf
        self.max_ram: float = math.inf
        # Limits on other resources, by name (``max-resources``).
        self.max_resources: dict[str, float] = {}
        self.node_attributes: dict[str, Any] | None = None
        self.priority: int | None = None
        self.ignore_provider_quota: bool = False
        self.azs: list[str] | None = None
        self.use_internal_ip: bool = False
        self.host_key_checking: bool = True

    def load_common(self, pool: Mapping[str, Any]) -> None:
        """Keys every driver's pools share."""
        self.name = pool["name"]
        max_servers = pool.get("max-servers")
        self.max_servers = math.inf if max_servers is None else max_servers
        self.node_attributes = pool.get("node-attributes")
        self.priority = pool.get("priority")

    def limits(self) -> QuotaInformation:
        """The pool's own limits (missing resources are unlimited)."""
        return QuotaInformation.for_limits(
            instances=None if self.max_servers == math.inf else self.max_servers,
            cores=None if self.max_cores == math.inf else self.max_cores,
            ram=None if self.max_ram == math.inf else self.max_ram,
            **{k: v for k, v in self.max_resources.items()})

    @property
    def effective_priority(self) -> int:
        if self.priority is not None:
            return self.priority
        return self.provider.priority if self.provider is not None else 100

    @staticmethod
    def schema() -> dict:
        import voluptuous as v
        return {
            v.Required("name"): str,
            "max-servers": int,
            "node-attributes": dict,
            "priority": int,
        }


class ProviderConfig(ConfigValue):
    """A provider's parsed configuration.  The settings here are the ones
    the framework reads; drivers add their own."""

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        self.driver_name = driver.name
        self.name: str = provider["name"]
        self.max_concurrency: int = provider.get("max-concurrency", -1)
        self.priority: int = provider.get("priority", 100)
        self.pools: dict[str, ConfigPool] = {}
        # Launch attempts in all, each bounded by launch_timeout; the host
        # key scan after an attempt is bounded by boot_timeout.
        self.launch_retries: int = provider.get("launch-retries", 3)
        self.launch_timeout: float = provider.get("launch-timeout", 3600)
        self.boot_timeout: float = provider.get("boot-timeout", 60)
        # Cloud server names; ``{node.id}`` and ``{provider.name}`` expand.
        self.hostname_format: str = "np{node.id}"
        # Written into node records (``cloud``, ``region``).
        self.cloud: str | None = None
        self.region_name: str | None = None
        # For the builder (``manage_images`` providers): how uploads are
        # named, bounded and post-processed, and the diskimages uploaded.
        self.diskimages: dict[str, ProviderDiskImage] = {}
        self.image_name_format: str = "{image_name}-{timestamp}"
        self.image_upload_timeout: float = 3600
        self.post_upload_hook: str | None = None
        self._raw = provider

    # Whether the builder uploads diskimages to this provider.
    manage_images: ClassVar[bool] = False

    def load(self, config: Any) -> None:
        """Parse the provider's pools and labels, register every pool with
        ``config.labels[<label>].pools``; raise ConfigError on problems the
        schema cannot express (before registering anything, so a provider
        the loader leaves out leaves no trace in ``config``)."""
        raise NotImplementedError

    def check_environment(self) -> None:
        """Raise ConfigError when something this provider needs outside
        nodepool.yaml is missing (an OpenStack cloud absent from
        clouds.yaml), or for a combination upstream's daemons refuse but
        its validator accepts.  The daemons then leave the provider out;
        ``config-validate`` only warns, because a file is often checked on
        a machine that does not have the launcher's clouds.yaml (and, for
        the rest, to give upstream's verdicts)."""

    def load_warnings(self) -> list[str]:
        """Settings that load but will not do what the operator probably
        meant (one message each, without file or line); called after
        ``load``."""
        return []

    def get_supported_labels(self, pool_name: str | None = None) -> set[str]:
        labels: set[str] = set()
        for pool in self.pools.values():
            if pool_name is None or pool.name == pool_name:
                labels.update(pool.labels)
        return labels

    def diskimage_names(self) -> list[str]:
        """Diskimages the builder must upload to this provider."""
        return []

    def image_format(self, diskimage_name: str) -> str | None:
        """The image format this provider wants for uploads."""
        return None

    def _register_pools(self, config: Any) -> None:
        for pool in self.pools.values():
            for label_name in pool.labels:
                label = config.labels.get(label_name)
                if label is not None:
                    label.pools.append(pool)


class Provider:
    """A live provider: one per configured provider in a launcher (and
    one, short-lived, in the CLI for ``delete --now`` and image commands).

    Every method the launcher, the builder and the CLI call on a provider
    is declared here with what it must and must not do.  The defaults suit
    a provider that launches nothing; cloud drivers inherit
    :class:`nodepool.driver.adapter_provider.AdapterProvider`, which
    implements all of them over a thin :class:`~nodepool.driver.adapter.Adapter`.

    Threads: the pool workers, the delete and cleanup workers call in
    concurrently; implementations are thread-safe.  Nothing here writes
    ZooKeeper paths itself: node records are changed through the
    :class:`nodepool.zk.ZooKeeper` facade the provider is started with.
    """

    #: False for providers that only hand out nodes registered in advance
    #: (static hosts): their pools never launch, requests wait for a
    #: registered node to be free, and min-ready does not apply.
    launches_nodes: ClassVar[bool] = True

    #: True for providers whose nodes are endpoints that exist already
    #: (static hosts), each registered as a fixed number of READY records
    #: (slots).  The framework keeps those records (see
    #: :mod:`nodepool.driver.registration`): the launcher runs one
    #: :class:`~nodepool.driver.registrar.Registrar` per such provider,
    #: which calls the endpoint hooks below; the provider itself writes
    #: no records and runs no background work for it.
    registers_endpoints: ClassVar[bool] = False

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider

    # Lifecycle ---------------------------------------------------------

    def start(self, zk: ZooKeeper, node_cache: Any = None, image_cache: Any = None) -> None:
        """Get ready to serve (connect to the cloud lazily: the first API
        call may fail and is retried).  Called once, before anything else.
        ``node_cache`` and ``image_cache`` are the launcher's watch-driven
        caches (None in the CLI and the builder)."""

    def stop(self) -> None:
        """Stop background work promptly (removed from the config, or the
        daemon stops).  Launches in flight are abandoned as their records
        say, for another launcher (or this one, restarted) to resume."""

    def join(self) -> None:
        """Wait (briefly) for background work to end after ``stop()``."""

    # Labels and images -----------------------------------------------------

    def label_ready(self, label: ConfigLabel) -> bool:
        """Whether a node of ``label`` can be launched now (its image is
        uploaded or exists in the cloud).  Called for every request
        decision: answer from a cache."""
        return True

    def label_error(self, label: ConfigLabel) -> str | None:
        """Why ``label`` can never be served as configured (no flavor
        fits...), or None.  Requests for it are declined."""
        return None

    def image_external_id(self, label: ConfigLabel) -> tuple[str | None, str | None]:
        """(the cloud's id of the image to boot, the value for the node's
        ``image_id``); (None, None) when there is none (yet)."""
        return None, None

    def choose_az(self, pool: ConfigPool) -> str | None:
        """The availability zone for a new request's nodes (one per
        request: every node of a request lands in the same zone)."""
        return None

    # Quota ---------------------------------------------------------------------

    def quota_for_label(self, label: ConfigLabel) -> QuotaInformation:
        """What one node of ``label`` uses.  Raises
        RuntimeConfigurationException if the label can never work."""
        return QuotaInformation(instances=1)

    def available_quota(self, pool: ConfigPool) -> QuotaInformation:
        """Room for new nodes in ``pool`` now: pool limits and the cloud's,
        minus what the provider's node records and the launches not yet
        recorded use.  Called for every pool worker pass: answer from
        running totals (the node cache's ``index``) and cached limits,
        never by walking every node or calling the cloud."""
        return QuotaInformation(instances=0)

    def can_ever_fit(self, pool: ConfigPool, need: QuotaInformation) -> bool:
        """Whether a request needing ``need`` could fit ``pool`` if it were
        empty; a request that never can is declined."""
        return True

    def max_nodes_for(self, labels: list[str], pool: ConfigPool) -> int:
        """For providers that do not launch: how many of ``labels`` (one
        node each) ``pool`` could hand out at once; a request for more is
        declined."""
        return 0

    def quota_in_use(self, pool: ConfigPool) -> QuotaInformation | None:
        """What ``pool``'s nodes use, counted the way capacity decisions
        count it (every record of the pool in any state, plus launches
        whose record is not visible yet); None for a provider that keeps
        no such count (the status page then counts the pool's records).
        For the status page: answer from running totals, never ask the
        cloud."""
        return None

    def known_cloud_limits(self) -> QuotaInformation | None:
        """The cloud's own quota limits as last read, or None when they
        were never read (or the provider has none).  For the status page:
        never asks the cloud."""
        return None

    def reserve(self, pool_name: str, quota: QuotaInformation) -> Any:
        """Count a node about to be launched until its record shows (see
        :mod:`nodepool.driver.quota_ledger`); hand the result to
        :meth:`launch`."""
        return None

    def release(self, reservation: Any) -> None:
        """Give back a reservation whose node will not be launched."""

    def invalidate_quota(self) -> None:
        """Forget cached cloud limits and usage (the cloud refused a
        launch for lack of quota, so they were wrong)."""

    # Launching -----------------------------------------------------------------

    def launch(self, node: Any, label: ConfigLabel, pool: ConfigPool, request: Any,
               image_external_id: str | None, on_done: Any = None,
               reservation: Any = None, ready_state: str = "ready") -> Any:
        """Start launching ``node`` (a new record without an id, which the
        launch creates; or one the request's claim stored just before,
        ``init`` and unlocked: the launch locks it) in the background and
        return its
        :class:`~nodepool.driver.launch.LaunchHandle` at once.
        ``on_done(handle)`` is called when it ends.  A launched node is
        stored in ``ready_state`` (still locked by the launch): ``ready``
        for requests, ``testing`` for an image check's node, which no
        request may be handed (``request`` is then None)."""
        raise NotImplementedError(f"provider {self.provider.name} does not launch nodes")

    def resume_launch(self, node: Any, label: ConfigLabel, pool: ConfigPool, request: Any,
                      on_done: Any = None) -> Any:
        """Continue the launch of ``node`` (a locked ``init`` or
        ``building`` record whose launcher died) from the progress stored
        in it; return its LaunchHandle at once."""
        raise NotImplementedError(f"provider {self.provider.name} does not launch nodes")

    def launches_in_flight(self) -> int:
        """Launches started and not ended (for ``max-concurrency``)."""
        return 0

    def hostname_for(self, node: Any) -> str:
        """The name a new server of ``node`` gets in the cloud."""
        return node.hostname or ""

    def recent_launch_errors(self) -> list[LaunchFailure]:
        """The latest launches of this provider that ended without a node
        (failed, or aborted for lack of cloud quota), newest first, a few
        dozen at most.  Kept in memory by this provider object only, for
        the status page."""
        return []

    # Handing out and deleting ----------------------------------------------------

    def check_reusable(self, node: Any) -> bool:
        """Whether the ready, locked ``node`` may be handed out now (static
        hosts check they answer).  May mark the node ``deleting`` (through
        the ZooKeeper facade) when it must not be used again."""
        return True

    @property
    def checks_reusable(self) -> bool:
        """Whether this provider's :meth:`check_reusable` does more than
        say yes.  When it does not, a ready node is locked and allocated
        in one ZooKeeper round trip (nothing to check in between)."""
        return type(self).check_reusable is not Provider.check_reusable

    def delete_node(self, node: Any) -> None:
        """Release the node's cloud resources and wait until they are gone
        (the node is locked and ``deleting``; the caller removes the record
        afterwards).  Called from the delete worker's threads and from
        ``nodepool delete --now``; may block, must not hang (bounded by a
        timeout) and must return early with an error when stopped."""

    def node_deleted(self, node: Any) -> None:
        """The node's record is gone.  May leave follow-up work to the
        provider's background threads.  (Registered endpoints need nothing
        here: the framework refills their slots.)"""

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for background work the provider
        started on its own (such as follow-up work of ``node_deleted``) to
        finish; launches in flight do not count.

        A short-lived caller (``nodepool delete --now``) calls it before
        ``stop()``, which abandons such work.  True when nothing is left.
        """
        return True

    # Registered endpoints (``registers_endpoints`` providers only) ----------------

    def registered_endpoints(self) -> list[EndpointSpec]:
        """Every endpoint of the current configuration, each with its
        slot count.  Called often: answer from the configuration, never
        contact anything."""
        return []

    def endpoint_key(self, node: Any) -> Hashable:
        """The key (``EndpointSpec.key``) of the endpoint a record of this
        provider belongs to; records whose key no endpoint has are
        deregistered when free."""
        raise NotImplementedError(f"provider {self.provider.name} registers no endpoints")

    def endpoint_record(self, spec: EndpointSpec) -> dict[str, Any]:
        """The record fields (``Node`` attribute names) that follow from the
        endpoint's configuration alone: the template of each of its
        records.  The framework adds ``state`` and ``slot`` and the fields
        :meth:`check_endpoint` returns."""
        raise NotImplementedError(f"provider {self.provider.name} registers no endpoints")

    def endpoint_record_current(self, node: Any, spec: EndpointSpec) -> bool:
        """Whether a free record of the endpoint still matches its
        configuration, judged without contacting it.  One that does not is
        rewritten in place after the endpoint's next successful check.
        The default compares the :meth:`endpoint_record` fields."""
        return all(getattr(node, key) == value
                   for key, value in self.endpoint_record(spec).items())

    def check_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        """Contact the endpoint as its configuration asks and return the
        record fields learned from it (host keys, addresses).  Raise
        :class:`~nodepool.driver.registration.EndpointProblem` when it
        must not be offered (its free records are then deregistered and it
        is checked again with a backoff).  Called only when records are to
        be written, from the registrar's threads (several endpoints at
        once); may block up to the endpoint's own timeouts, never more."""
        raise NotImplementedError(f"provider {self.provider.name} registers no endpoints")

    # Housekeeping ----------------------------------------------------------------

    def cleanup_leaked_resources(self) -> dict[str, int]:
        """Delete cloud resources tagged as ours that no record knows,
        once seen on two listings; counts deleted by plural type name.
        Called by the cleanup worker about once a minute."""
        return {}

    def vanished_nodes(self, nodes: list[Any]) -> list[str]:
        """Ids of ready, unallocated nodes whose server is gone from the
        cloud (seen missing on two listings), so they are not handed out."""
        return []

    # Images (the builder; ``manage_images`` providers only) -------------------------

    def upload_image(self, *, image_name: str, filename: str, image_format: str,
                     metadata: dict[str, str], md5: str | None = None,
                     sha256: str | None = None, provider_image: Any = None,
                     timeout: float | None = None) -> str:
        """Upload a disk image file; return its cloud id once usable."""
        raise NotImplementedError(f"provider {self.provider.name} takes no images")

    def delete_image(self, external_id: str) -> None:
        """Delete an uploaded image (NotFound if it is gone already)."""
        raise NotImplementedError(f"provider {self.provider.name} takes no images")

    def list_images(self) -> list[Any]:
        """Images in the cloud (CloudImage objects), for upload cleanup and
        ``nodepool alien-image-list``."""
        return []

    def cleanup_leaked_images(self) -> dict[str, int]:
        """Delete uploaded images tagged as ours that no upload record
        knows, once seen on two listings (the builder calls this)."""
        return {}


class Driver:
    """One instance per driver for the life of the process."""

    name: ClassVar[str] = ""

    #: True for a driver whose configuration this build understands (every
    #: key of upstream's schema, its defaults and checks) but which cannot
    #: serve yet: ``config-validate`` accepts its providers with a warning,
    #: the daemons leave them out (as a provider that cannot be loaded, so
    #: the others keep serving), and :meth:`getProvider` raises
    #: :class:`~nodepool.exceptions.ProviderNotImplemented`.  See
    #: :class:`nodepool.driver.config_only.ConfigOnlyDriver`.
    config_only: ClassVar[bool] = False

    #: Whether ``config-validate`` fails on a pool label missing from the
    #: top-level ``labels``.  False where upstream's validator does not
    #: look for that in this driver's providers: it then warns, to keep
    #: upstream's verdict (the daemons still leave such a provider out,
    #: as upstream's loader refuses it).
    undefined_labels_fail_validation: ClassVar[bool] = True

    def reset(self) -> None:
        """Forget process-wide state (e.g. a cached clouds.yaml) before a
        configuration (re)load."""

    def get_schema(self) -> dict:
        """voluptuous schema for the provider keys beyond name, driver,
        max-concurrency and priority."""
        raise NotImplementedError

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        raise NotImplementedError

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        raise NotImplementedError
