"""The metastatic driver (nodes sharing a node of another provider):
configuration only in this build; its providers are left out (see
:mod:`nodepool.driver.config_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ProviderConfig
from nodepool.driver.config_only import ConfigOnlyDriver
from nodepool.driver.metastatic.config import MetastaticProviderConfig, metastatic_schema


class MetastaticDriver(ConfigOnlyDriver):
    name = "metastatic"

    def get_schema(self) -> dict:
        return metastatic_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return MetastaticProviderConfig(self, provider)
