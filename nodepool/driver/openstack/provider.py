"""The OpenStack provider: the shared machinery over :class:`OpenStackAdapter`."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.openstack.adapter import OpenStackAdapter


class OpenStackProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        return OpenStackAdapter(self.provider)
