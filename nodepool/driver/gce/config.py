"""Configuration of Google Compute Engine providers: every key of upstream
Nodepool 11's gce driver, with its defaults and checks.

This build does not launch on GCE yet (see
:mod:`nodepool.driver.config_only`); the classes here are what that
driver will read.  Upstream's gce driver manages no images: labels boot
``cloud-images`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigPool, Driver, LabelImage
from nodepool.driver import config_shapes as shapes


class GceCloudImage(LabelImage):
    """An image that already exists: ``image-id``, or the latest of
    ``image-family`` in ``image-project``."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        # Upstream's schema does not require the name, but labels can only
        # refer to a named image.
        super().__init__(d.get("name") or "")
        self.image_id: str | None = d.get("image-id")
        self.image_project: str | None = d.get("image-project")
        self.image_family: str | None = d.get("image-family")
        # Upstream has no default here (None in node records, where Zuul
        # then uses its own), unlike every other driver's "zuul".
        self.username = d.get("username")  # type: ignore[assignment]
        # An SSH public key put into the instance's metadata.
        self.key: str | None = d.get("key")
        self.load_connection(d)

    @property
    def external_name(self) -> str:
        return self.image_id or self.name


class GceLabel(shapes.ImageLabel):
    def __init__(self, d: Mapping[str, Any], pool: GcePool) -> None:
        super().__init__(d, pool)
        self.pool: GcePool = pool
        # Required, and looked up even when empty (as upstream does): a
        # cloud image may have no name.
        self.cloud_image_name: str = d["cloud-image"]
        # Upstream's gce labels boot cloud images only (a ``diskimage``
        # key is not in their schema).
        self.diskimage_name = None
        self.cloud_image: GceCloudImage | None = None
        self.instance_type: str = d["instance-type"]
        self.volume_type: str = d.get("volume-type", "pd-standard")
        # GB of the boot disk.
        self.volume_size: int = d.get("volume-size", 10)


class GcePool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: GceProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        # Upstream's loader reads host-key-checking here but its schema
        # refuses the key, so it is always on.
        self.host_key_checking = True
        self.use_internal_ip = bool(d.get("use-internal-ip", False))
        for label in d.get("labels") or []:
            self.labels[label["name"]] = GceLabel(label, self)


def gce_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority."""
    label = {
        v.Required("name"): str,
        v.Required("cloud-image"): str,
        v.Required("instance-type"): str,
        "volume-type": str,
        "volume-size": int,
    }
    pool = shapes.pool_schema(label, {"use-internal-ip": bool})
    cloud_image = {
        "name": str,
        "image-id": str,
        "image-project": str,
        "image-family": str,
        "username": str,
        "key": str,
        **shapes.connection_schema(),
    }
    return {
        v.Required("pools"): [pool],
        v.Required("region"): str,
        v.Required("project"): str,
        v.Required("zone"): str,
        "cloud-images": [cloud_image],
        **shapes.launch_schema(),
        "rate-limit": int,
    }


class GceProviderConfig(shapes.CloudProviderConfig):
    """A GCE provider: one project, instances in one zone."""

    manage_images = False

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.cloud = "Google"
        self.project: str = provider["project"]
        self.region: str = provider["region"]
        self.region_name = self.region
        self.zone: str = provider["zone"]
        # API calls per second.
        self.rate_limit: int = provider.get("rate-limit", 1)
        self.cloud_images: dict[str, GceCloudImage] = {}
        for d in provider.get("cloud-images") or []:
            image = GceCloudImage(d)
            self.cloud_images[image.name] = image
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = GcePool(pool, self)
