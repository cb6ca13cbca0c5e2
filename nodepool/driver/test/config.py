"""Configuration of providers of upstream's ``test`` driver.

Upstream Nodepool ships a minimal driver named ``test`` for its own test
suite (its fixtures, e.g. ``multi_drivers.yaml``, use it); its validator
and loader accept it like any other.  Here it is understood and never
served (see :mod:`nodepool.driver.config_only`).  Its pools list label
names only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nodepool.driver import ConfigLabel, ConfigPool, Driver, ProviderConfig
from nodepool.exceptions import ConfigError


class TestDriverPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: TestDriverProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        for name in d.get("labels") or []:
            self.labels[name] = ConfigLabel(name, self)


def testdriver_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority
    (upstream requires neither ``pools`` nor a pool's ``name`` here)."""
    pool = {key: value for key, value in ConfigPool.schema().items() if key != "name"}
    pool.update({"name": str, "labels": [str]})
    return {"pools": [pool]}


class TestDriverProviderConfig(ProviderConfig):
    manage_images = False

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self._unnamed_pools = 0
        for pool in provider.get("pools") or []:
            if "name" not in pool:
                self._unnamed_pools += 1
                continue
            self.pools[pool["name"]] = TestDriverPool(pool, self)

    def check_environment(self) -> None:
        """Upstream's loader fails on a pool without a name, which its
        validator accepts: the daemons leave the provider out,
        ``config-validate`` warns."""
        if self._unnamed_pools:
            raise ConfigError(f"{self._unnamed_pools} pool(s) without a name; name every pool")

    def load(self, config: Any) -> None:
        self._register_pools(config)
