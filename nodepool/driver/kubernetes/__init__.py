"""The kubernetes driver: a namespace per node, or a pod in one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.kubernetes.config import KubernetesProviderConfig, kubernetes_schema


class KubernetesDriver(Driver):
    name = "kubernetes"

    def get_schema(self) -> dict:
        return kubernetes_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return KubernetesProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.kubernetes.provider import KubernetesProvider
        return KubernetesProvider(provider_config)
