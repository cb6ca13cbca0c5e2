"""The openshift driver: a project per node, or a pod in one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.openshift.config import OpenShiftProviderConfig, openshift_schema


class OpenShiftDriver(Driver):
    name = "openshift"

    def get_schema(self) -> dict:
        return openshift_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return OpenShiftProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.openshift.provider import OpenShiftProvider
        return OpenShiftProvider(provider_config)
