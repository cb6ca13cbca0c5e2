"""The openshiftpods driver: a pod per node, in projects that exist already."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.openshiftpods.config import (
    OpenShiftPodsProviderConfig,
    openshiftpods_schema,
)


class OpenShiftPodsDriver(Driver):
    name = "openshiftpods"

    def get_schema(self) -> dict:
        return openshiftpods_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return OpenShiftPodsProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.openshiftpods.provider import OpenShiftPodsProvider
        return OpenShiftPodsProvider(provider_config)
