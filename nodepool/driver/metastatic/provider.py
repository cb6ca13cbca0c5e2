"""The metastatic provider: the shared machinery over MetastaticAdapter,
which reaches ZooKeeper through the provider's connection."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.metastatic.adapter import MetastaticAdapter
from nodepool.driver.metastatic.config import MetastaticProviderConfig


class MetastaticProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        assert isinstance(self.provider, MetastaticProviderConfig)
        return MetastaticAdapter(self.provider, self.zk)
