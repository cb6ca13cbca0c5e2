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
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
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


class ConfigLabel(ConfigValue):
    """A label as offered by one pool (drivers add their own keys)."""

    def __init__(self, name: str, pool: ConfigPool | None = None) -> None:
        self.name = name
        self.pool = pool


class ConfigPool(ConfigValue):
    """A pool: a set of labels with its own limits, served by one
    ``PoolWorker``."""

    def __init__(self, name: str = "", provider: ProviderConfig | None = None) -> None:
        self.name = name
        self.provider = provider
        self.labels: dict[str, ConfigLabel] = {}
        self.max_servers: float = math.inf
        self.node_attributes: dict[str, Any] | None = None
        self.priority: int | None = None
        self.ignore_provider_quota: bool = False
        self.azs: list[str] | None = None

    def load_common(self, pool: Mapping[str, Any]) -> None:
        """Keys every driver's pools share."""
        self.name = pool["name"]
        max_servers = pool.get("max-servers")
        self.max_servers = math.inf if max_servers is None else max_servers
        self.node_attributes = pool.get("node-attributes")
        self.priority = pool.get("priority")

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
    """A provider's parsed configuration."""

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        self.driver_name = driver.name
        self.name: str = provider["name"]
        self.max_concurrency: int = provider.get("max-concurrency", -1)
        self.priority: int = provider.get("priority", 100)
        self.pools: dict[str, ConfigPool] = {}
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
        clouds.yaml).  The daemons then leave the provider out;
        ``config-validate`` only warns, because a file is often checked on
        a machine that does not have the launcher's clouds.yaml."""

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
    """A live provider: one per configured provider in a launcher.

    Subclasses implement what the launcher needs; the defaults suit a
    provider that launches nothing.
    """

    # Whether a pool waits (pauses) when at quota; static pools never do.
    PAUSE_AT_QUOTA: ClassVar[bool] = True

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider

    def start(self, zk: ZooKeeper) -> None:
        """Connect to the cloud; called once before any other method."""

    def stop(self) -> None:
        """Stop background work (called when removed from the config)."""

    def idle(self) -> None:
        """Stop work that would conflict with a replacement provider."""

    def join(self) -> None:
        """Wait for background work to end after ``stop()``."""

    def label_ready(self, label: ConfigLabel) -> bool:
        """Whether the label's image is available in this provider."""
        return True

    def delete_node(self, node: Any) -> None:
        """Release the node's cloud resources (the node is locked and
        ``deleting``); the caller removes the record afterwards."""

    def node_deleted(self, node: Any) -> None:
        """Called after a node's record is gone (static hosts re-register
        here)."""

    def launches_in_flight(self) -> int:
        return 0

    def cleanup_leaked_resources(self) -> dict[str, int]:
        """Delete cloud resources tagged as ours that no record knows."""
        return {}


class Driver:
    """One instance per driver for the life of the process."""

    name: ClassVar[str] = ""

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
