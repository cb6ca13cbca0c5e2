"""The kubernetes provider: the shared machinery over the kubernetes adapter."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider


class KubernetesProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        from nodepool.driver.kubernetes.adapter import KubernetesAdapter
        return KubernetesAdapter(self.provider)
