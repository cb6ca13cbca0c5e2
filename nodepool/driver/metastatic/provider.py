"""The metastatic provider: the shared machinery over MetastaticAdapter,
which reaches ZooKeeper through the provider's connection."""

from __future__ import annotations

import threading
import weakref
from typing import Any

from nodepool.driver.adapter import Adapter
from nodepool.driver.adapter_provider import AdapterProvider
from nodepool.driver.metastatic.adapter import MetastaticAdapter
from nodepool.driver.metastatic.backing import Holdings
from nodepool.driver.metastatic.config import MetastaticProviderConfig

# The holdings of each metastatic provider, by the ZooKeeper connection
# (one per launcher) and provider name: a provider replaced after a
# configuration change passes them on (see Holdings).  A new launcher has
# a new connection, so it rebuilds its holdings from ZooKeeper.
_holdings: weakref.WeakKeyDictionary[Any, dict[str, Holdings]] = weakref.WeakKeyDictionary()
_holdings_lock = threading.Lock()


def holdings_for(zk: Any, provider_name: str) -> Holdings:
    with _holdings_lock:
        return _holdings.setdefault(zk, {}).setdefault(provider_name, Holdings())


class MetastaticProvider(AdapterProvider):
    def make_adapter(self) -> Adapter:
        assert isinstance(self.provider, MetastaticProviderConfig)
        return MetastaticAdapter(self.provider, self.zk,
                                 holdings_for(self.zk, self.provider.name))
