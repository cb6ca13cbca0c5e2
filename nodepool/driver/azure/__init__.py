"""The azure driver (Microsoft Azure): configuration only in this build;
its providers are left out (see :mod:`nodepool.driver.config_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ProviderConfig
from nodepool.driver.azure.config import AzureProviderConfig, azure_schema
from nodepool.driver.config_only import ConfigOnlyDriver


class AzureDriver(ConfigOnlyDriver):
    name = "azure"

    def get_schema(self) -> dict:
        return azure_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return AzureProviderConfig(self, provider)
