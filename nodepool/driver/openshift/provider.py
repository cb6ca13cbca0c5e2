"""The openshift provider: the shared machinery over the openshift adapter."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider


class OpenShiftProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        from nodepool.driver.openshift.adapter import OpenShiftAdapter
        return OpenShiftAdapter(self.provider)
