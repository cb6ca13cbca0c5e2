"""Drivers whose configuration is understood but which cannot serve yet.

Upstream Nodepool has drivers this build does not implement (gce, azure,
ibmvpc, and upstream's internal ``test`` driver).  Their
configuration layer is here already, so ``nodepool config-validate`` gives
upstream's verdict on files that use them and the drivers, when they come,
build on typed, checked configuration.  Until then such a provider is
treated as one that cannot be loaded: the daemons leave it out with one
clear message and keep serving the others (see ``nodepool.config``).
"""

from __future__ import annotations

from typing import NoReturn

from nodepool.driver import Driver, ProviderConfig
from nodepool.exceptions import ProviderNotImplemented


class ConfigOnlyDriver(Driver):
    """Base of the drivers that only parse and check their configuration
    (``config_only``); subclasses provide ``name``, ``get_schema`` and
    ``getProviderConfig``."""

    config_only = True
    undefined_labels_fail_validation = False

    def getProvider(self, provider_config: ProviderConfig) -> NoReturn:
        raise ProviderNotImplemented(provider_config.name, self.name)
