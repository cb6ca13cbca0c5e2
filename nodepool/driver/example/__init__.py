"""The example driver: a complete, minimal cloud driver to copy.

It drives the "example cloud", a toy REST API with servers, flavors and
limits (the test stand-in is ``nodepool/tests/example_cloud.py``), and
shows everything a real driver needs and nothing more:

* ``config.py``: the provider's keys as a voluptuous schema next to the
  typed config classes the framework reads;
* ``adapter.py``: the cloud calls, as short steps the framework advances;
* this module: the ``Driver`` the registry instantiates once per process.

The provider is the framework's :class:`AdapterProvider` with this
driver's adapter; retries, timeouts, quota, node records, host-key scans,
leak cleanup and metrics all come from the framework.  See "Writing a
driver" in the developer documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import Driver, Provider, ProviderConfig
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.example.config import ExampleProviderConfig, example_schema


class ExampleProvider(AdapterProvider):
    def make_adapter(self):
        from nodepool.driver.example.adapter import ExampleAdapter
        return ExampleAdapter(self.provider)


class ExampleDriver(Driver):
    name = "example"

    def get_schema(self) -> dict:
        return example_schema()

    def getProviderConfig(self, provider: Mapping[str, Any]) -> ProviderConfig:
        return ExampleProviderConfig(self, provider)

    def getProvider(self, provider_config: ProviderConfig) -> Provider:
        return ExampleProvider(provider_config)
