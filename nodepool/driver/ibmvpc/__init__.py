"""The ibmvpc driver (IBM Cloud VPC): configuration only in this build;
its providers are left out (see :mod:`nodepool.driver.config_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ProviderConfig
from nodepool.driver.config_only import ConfigOnlyDriver
from nodepool.driver.ibmvpc.config import IbmVpcProviderConfig, ibmvpc_schema


class IbmVpcDriver(ConfigOnlyDriver):
    name = "ibmvpc"

    def get_schema(self) -> dict:
        return ibmvpc_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return IbmVpcProviderConfig(self, provider)
