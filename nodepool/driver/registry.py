"""Finds drivers by the provider's ``driver:`` name.

Built-in drivers and third-party ones are both found through the
``nodepool.drivers`` entry-point group (ours are declared in setup.cfg);
a source checkout that is not installed falls back to the built-in
packages.  Each driver is instantiated once per process.
"""

from __future__ import annotations

import importlib
import logging
import threading

from nodepool.driver import Driver
from nodepool.exceptions import DriverNotFound

log = logging.getLogger("nodepool.driver.registry")

_BUILTIN = {
    "aws": "nodepool.driver.aws:AwsDriver",
    "azure": "nodepool.driver.azure:AzureDriver",
    "example": "nodepool.driver.example:ExampleDriver",
    "fake": "nodepool.driver.fake:FakeDriver",
    "gce": "nodepool.driver.gce:GceDriver",
    "ibmvpc": "nodepool.driver.ibmvpc:IbmVpcDriver",
    "kubernetes": "nodepool.driver.kubernetes:KubernetesDriver",
    "metastatic": "nodepool.driver.metastatic:MetastaticDriver",
    "openshift": "nodepool.driver.openshift:OpenShiftDriver",
    "openshiftpods": "nodepool.driver.openshiftpods:OpenShiftPodsDriver",
    "openstack": "nodepool.driver.openstack:OpenStackDriver",
    "static": "nodepool.driver.static:StaticDriver",
    "test": "nodepool.driver.test:TestDriver",
}

_drivers: dict[str, Driver] = {}
_lock = threading.Lock()


def _load(spec: str) -> type[Driver]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _entry_points() -> list:
    # importlib.metadata costs a short command (``nodepool list``) more
    # than all of its own modules: imported only when a driver is looked
    # up.
    from importlib.metadata import entry_points
    return list(entry_points(group="nodepool.drivers"))


def available() -> list[str]:
    names = set(_BUILTIN)
    names.update(ep.name for ep in _entry_points())
    return sorted(names)


def get_driver(name: str) -> Driver:
    """The process-wide instance of driver ``name``."""
    with _lock:
        driver = _drivers.get(name)
        if driver is not None:
            return driver
        cls = None
        if name in _BUILTIN:
            cls = _load(_BUILTIN[name])
        else:
            for ep in _entry_points():
                if ep.name == name:
                    cls = ep.load()
                    break
        if cls is None:
            raise DriverNotFound(
                f"unknown driver {name!r}; available drivers: {', '.join(available())}")
        driver = cls()
        _drivers[name] = driver
        return driver


def reset_all() -> None:
    """Call every loaded driver's ``reset()`` (before a config load)."""
    with _lock:
        drivers = list(_drivers.values())
    for driver in drivers:
        try:
            driver.reset()
        except Exception:
            log.exception("Error resetting driver %s", driver.name)
