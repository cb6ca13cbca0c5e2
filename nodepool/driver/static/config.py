"""Configuration of static providers: existing hosts offered as nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigLabel, ConfigPool, ConfigValue, Driver, ProviderConfig
from nodepool.exceptions import ConfigError


class StaticHost(ConfigValue):
    """One host of a static pool."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.name: str = d["name"]
        labels = d["labels"]
        self.labels: list[str] = labels.split() if isinstance(labels, str) else list(labels)
        self.username: str = d.get("username", "zuul")
        self.timeout: int = d.get("timeout", 5)
        self.host_key_checking: bool = d.get("host-key-checking", True)
        keys = d.get("host-key")
        self.host_keys: list[str] = [keys] if isinstance(keys, str) else list(keys or [])
        self.connection_type: str = d.get("connection-type", "ssh")
        self.connection_port: int = d.get("connection-port", d.get("ssh-port", 22))
        self.shell_type: str | None = d.get("shell-type")
        self.python_path: str = d.get("python-path", "auto")
        self.max_parallel_jobs: int = d.get("max-parallel-jobs", 1)

    @property
    def identity(self) -> tuple[str, str, int]:
        """A static node is the same host when these match."""
        return (self.name, self.username, self.connection_port)


class StaticPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: StaticProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        self.nodes: list[StaticHost] = [StaticHost(n) for n in d.get("nodes") or []]
        for host in self.nodes:
            for label in host.labels:
                self.labels.setdefault(label, ConfigLabel(label, self))


def static_schema() -> dict:
    host = {
        v.Required("name"): str,
        v.Required("labels"): v.Any(str, [str]),
        "username": str,
        "timeout": int,
        "host-key-checking": bool,
        "host-key": v.Any(str, [str]),
        "connection-type": str,
        "connection-port": int,
        "ssh-port": int,
        "shell-type": str,
        "python-path": str,
        "max-parallel-jobs": v.All(int, v.Range(min=1)),
    }
    pool = {**ConfigPool.schema(), "nodes": [host]}
    return {"pools": [pool]}


class StaticProviderConfig(ProviderConfig):
    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = StaticPool(pool, self)

    def load(self, config: Any) -> None:
        seen: dict[tuple, str] = {}
        for pool in self.pools.values():
            assert isinstance(pool, StaticPool)
            for host in pool.nodes:
                if host.identity in seen:
                    raise ConfigError(
                        f"static host {host.name} (user {host.username}, port "
                        f"{host.connection_port}) is listed twice (pools "
                        f"{seen[host.identity]!r} and {pool.name!r})")
                seen[host.identity] = pool.name
        self._register_pools(config)
