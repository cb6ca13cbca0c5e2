"""The metastatic driver: nodes that are slots on a node of another
provider of the same Nodepool (see :mod:`nodepool.driver.metastatic.adapter`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.metastatic.config import MetastaticProviderConfig, metastatic_schema


class MetastaticDriver(Driver):
    name = "metastatic"
    undefined_labels_fail_validation = False

    def get_schema(self) -> dict:
        return metastatic_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return MetastaticProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.metastatic.provider import MetastaticProvider
        assert isinstance(provider_config, MetastaticProviderConfig)
        return MetastaticProvider(provider_config)
