"""clouds.yaml lookups shared by the OpenStack and fake drivers.

openstacksdk reads clouds.yaml (and OS_CLIENT_CONFIG_FILE) once per
``OpenStackConfig``; we keep one per process and drop it on
``Driver.reset()`` so a config reload sees an edited clouds.yaml.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("nodepool.driver.openstack")

_loader: Any = None
_lock = threading.Lock()


def loader() -> Any:
    global _loader
    with _lock:
        if _loader is None:
            from openstack.config import loader as os_loader
            _loader = os_loader.OpenStackConfig()
        return _loader


def reset() -> None:
    global _loader
    with _lock:
        _loader = None


def cloud_region(cloud: str, region_name: str | None) -> Any:
    """openstacksdk's CloudRegion for a cloud name from clouds.yaml."""
    return loader().get_one(cloud=cloud, region_name=region_name)


def image_format(cloud: str, region_name: str | None, default: str = "qcow2") -> str:
    """The ``image_format`` clouds.yaml sets for the cloud (upload format)."""
    try:
        region = cloud_region(cloud, region_name)
    except Exception as e:
        log.debug("No clouds.yaml entry for %s (%s); uploads use %s", cloud, e, default)
        return default
    return region.config.get("image_format") or default
