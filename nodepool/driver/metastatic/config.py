"""Configuration of metastatic providers: every key of upstream Nodepool
11's metastatic driver, with its defaults and checks.

A metastatic label runs up to ``max-parallel-jobs`` nodes at once on one
node of its ``backing-label`` (served by another provider), which is kept
``grace-time`` seconds after its last node ends (see
:mod:`nodepool.driver.metastatic.adapter`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigLabel, ConfigPool, Driver, ProviderConfig
from nodepool.driver import config_shapes as shapes
from nodepool.exceptions import ConfigError


class MetastaticLabel(ConfigLabel):
    """A label whose nodes share a backing node.  It has no image: a
    node's connection settings are its backing node's."""

    def __init__(self, d: Mapping[str, Any], pool: MetastaticPool) -> None:
        super().__init__(d["name"], pool)
        self.pool: MetastaticPool = pool
        self.backing_label: str = d["backing-label"]
        self.max_parallel_jobs: int = d.get("max-parallel-jobs", 1)
        # Seconds an idle backing node is kept for new nodes.
        self.grace_time: int = d.get("grace-time", 60)
        # Seconds a backing node is kept at least, and (None: no limit)
        # after which it takes no new nodes.
        self.min_retention_time: int = d.get("min-retention-time", 0)
        self.max_age: int | None = d.get("max-age")
        self.host_key_checking = d.get("host-key-checking", pool.host_key_checking)

    def backing_settings(self) -> tuple[Any, ...]:
        """What every label on the same backing label must agree on."""
        return (self.backing_label, self.max_parallel_jobs, self.grace_time,
                self.min_retention_time, self.max_age)


class MetastaticPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: MetastaticProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        # The node's address is its backing node's.
        self.use_internal_ip = False
        # Off by default: the backing node's host keys were checked when
        # it was launched; on, they are checked again for each node.
        self.host_key_checking = d.get("host-key-checking", False)
        for label in d.get("labels") or []:
            self.labels[label["name"]] = MetastaticLabel(label, self)


def metastatic_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority."""
    label = {
        v.Required("name"): str,
        v.Required("backing-label"): str,
        "max-parallel-jobs": int,
        "grace-time": int,
        "min-retention-time": int,
        "max-age": int,
        "host-key-checking": bool,
    }
    pool = shapes.pool_schema(label, {"host-key-checking": bool})
    return {
        v.Required("pools"): [pool],
        **shapes.launch_schema(),
    }


class MetastaticProviderConfig(ProviderConfig):
    """A metastatic provider: nodes carved out of other providers' nodes."""

    manage_images = False

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.cloud = "metastatic"
        self.boot_timeout = provider.get("boot-timeout", 120)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = MetastaticPool(pool, self)
        # Backing labels the top-level labels lack (found by ``load``).
        self._unknown_backing: list[str] = []

    def labels(self) -> list[MetastaticLabel]:
        return [label for pool in self.pools.values() for label in pool.labels.values()
                if isinstance(label, MetastaticLabel)]

    def check_environment(self) -> None:
        """What upstream's loader refuses although its validator accepts
        it: the daemons leave the provider out, ``config-validate`` warns.

        Labels sharing a backing label share its nodes, so they must agree
        on how those nodes are used; and a backing node cannot be retired
        (``max-age``) before it may be (``min-retention-time``)."""
        errors = []
        first: dict[str, MetastaticLabel] = {}
        for label in self.labels():
            if label.max_age and label.max_age < label.min_retention_time:
                errors.append(f"label {label.name!r}: max-age {label.max_age} is less than "
                              f"min-retention-time {label.min_retention_time}; raise "
                              "max-age or lower min-retention-time")
            other = first.setdefault(label.backing_label, label)
            if other is not label and other.backing_settings() != label.backing_settings():
                errors.append(
                    f"labels {other.name!r} and {label.name!r} use the same backing-label "
                    f"{label.backing_label!r} with different max-parallel-jobs, grace-time, "
                    "min-retention-time or max-age; labels on one backing label must "
                    "agree on these")
        if errors:
            raise ConfigError("; ".join(errors))

    def load(self, config: Any) -> None:
        self._unknown_backing = sorted({label.backing_label for label in self.labels()
                                        if label.backing_label not in config.labels})
        self._register_pools(config)

    def load_warnings(self) -> list[str]:
        return [f"backing-label {name!r} is not defined under the top-level labels, so no "
                "backing node can be requested for it; define it and offer it in another "
                "provider's pool" for name in self._unknown_backing]

    def label(self, label_name: str) -> MetastaticLabel | None:
        """The metastatic label ``label_name`` as configured (None if no
        pool of this provider offers it)."""
        for pool in self.pools.values():
            label = pool.labels.get(label_name)
            if isinstance(label, MetastaticLabel):
                return label
        return None
