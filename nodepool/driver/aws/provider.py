"""The AWS provider: the shared machinery over :class:`AwsAdapter`."""

from __future__ import annotations

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.aws.adapter import AwsAdapter


class AwsProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        return AwsAdapter(self.provider)
