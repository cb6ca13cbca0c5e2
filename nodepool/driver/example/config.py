"""Configuration of example-cloud providers.

::

    providers:
      - name: example
        driver: example
        endpoint: http://127.0.0.1:8080
        pools:
          - name: main
            max-servers: 10
            labels:
              - name: small
                flavor: small
                image: debian
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigLabel, ConfigPool, Driver, LabelImage, ProviderConfig
from nodepool.exceptions import ConfigError


class ExampleLabel(ConfigLabel):
    def __init__(self, d: Mapping[str, Any], pool: ExamplePool) -> None:
        super().__init__(d["name"], pool)
        self.flavor: str = d["flavor"]
        # An image that exists in the cloud: the framework copies its
        # connection settings into each node record.
        image = LabelImage(d["image"])
        image.username = d.get("username", "zuul")
        self.cloud_image = image
        self.host_key_checking = d.get("host-key-checking", pool.host_key_checking)


class ExamplePool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: ExampleProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        self.host_key_checking = d.get("host-key-checking", True)
        for label in d.get("labels") or []:
            self.labels[label["name"]] = ExampleLabel(label, self)


def example_schema() -> dict:
    label = {
        v.Required("name"): str,
        v.Required("flavor"): str,
        v.Required("image"): str,
        "username": str,
        "host-key-checking": bool,
    }
    pool = {**ConfigPool.schema(), "host-key-checking": bool, "labels": [label]}
    return {
        v.Required("endpoint"): v.Url(),
        "launch-timeout": int,
        "launch-retries": int,
        "boot-timeout": int,
        "pools": [pool],
    }


class ExampleProviderConfig(ProviderConfig):
    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.endpoint: str = provider["endpoint"].rstrip("/")
        self.cloud = "example"
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = ExamplePool(pool, self)

    def load(self, config: Any) -> None:
        if len(self.pools) != len(self._raw.get("pools") or []):
            raise ConfigError("pool names must be unique within a provider")
        self._register_pools(config)
