"""The fake cloud's provider: the shared machinery over FakeAdapter."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.fake.adapter import FakeAdapter


class FakeProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        return FakeAdapter(self.provider)
