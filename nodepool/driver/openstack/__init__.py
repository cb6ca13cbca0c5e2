"""The OpenStack driver (openstacksdk)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.openstack import cloud_config
from nodepool.driver.openstack.config import OpenStackProviderConfig, openstack_schema


class OpenStackDriver(Driver):
    name = "openstack"

    def reset(self) -> None:
        cloud_config.reset()

    def get_schema(self) -> dict:
        return openstack_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return OpenStackProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.openstack.provider import OpenStackProvider
        return OpenStackProvider(provider_config)
