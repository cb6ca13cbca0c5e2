"""The gce driver (Google Compute Engine): configuration only in this
build; its providers are left out (see :mod:`nodepool.driver.config_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ProviderConfig
from nodepool.driver.config_only import ConfigOnlyDriver
from nodepool.driver.gce.config import GceProviderConfig, gce_schema


class GceDriver(ConfigOnlyDriver):
    name = "gce"

    def get_schema(self) -> dict:
        return gce_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return GceProviderConfig(self, provider)
