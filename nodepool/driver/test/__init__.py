"""Upstream's internal ``test`` driver: configuration only (its providers
are left out, see :mod:`nodepool.driver.config_only`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ProviderConfig
from nodepool.driver.config_only import ConfigOnlyDriver
from nodepool.driver.test.config import TestDriverProviderConfig, testdriver_schema


class TestDriver(ConfigOnlyDriver):
    name = "test"

    def get_schema(self) -> dict:
        return testdriver_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return TestDriverProviderConfig(self, provider)
