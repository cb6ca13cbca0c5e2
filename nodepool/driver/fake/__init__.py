"""The fake cloud driver: OpenStack provider configuration served by an
in-process simulated cloud, for tests, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Provider, ProviderConfig
from nodepool.driver.openstack import OpenStackDriver
from nodepool.driver.openstack.config import OpenStackProviderConfig


class FakeProviderConfig(OpenStackProviderConfig):
    def image_format(self, diskimage_name: str) -> str | None:
        # The fake cloud takes what clouds.yaml names (upstream's fixtures
        # define fake-vhd etc.), qcow2 otherwise.
        return super().image_format(diskimage_name)

    def check_environment(self) -> None:
        """The fake cloud lives in this process: unlike upstream's fake
        driver, it needs no clouds.yaml entry."""


class FakeDriver(OpenStackDriver):
    name = "fake"

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return FakeProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        from nodepool.driver.fake.provider import FakeProvider
        return FakeProvider(provider_config)
