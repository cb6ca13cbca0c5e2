"""The openshiftpods provider: the shared machinery over its adapter."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider


class OpenShiftPodsProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        from nodepool.driver.openshiftpods.adapter import OpenShiftPodsAdapter
        return OpenShiftPodsAdapter(self.provider)
