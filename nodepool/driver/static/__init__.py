"""The static driver: existing hosts, checked over SSH."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.static.config import StaticProviderConfig, static_schema


class StaticDriver(Driver):
    name = "static"

    def get_schema(self) -> dict:
        return static_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return StaticProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.static.provider import StaticProvider
        assert isinstance(provider_config, StaticProviderConfig)
        return StaticProvider(provider_config)
