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

from nodepool.driver import ConfigLabel, ConfigPool, Driver, LabelImage, ProviderConfig
from nodepool.exceptions import ConfigError

# Ports Zuul connects to when an image names only its connection type.
DEFAULT_PORTS = {"ssh": 22, "winrm": 5986}


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
        self.python_path = d.get("python-path", "auto")
        self.shell_type = d.get("shell-type")
        self.connection_type = d.get("connection-type", "ssh")
        self.connection_port = d.get("connection-port",
                                     DEFAULT_PORTS.get(self.connection_type, 22))

    @property
    def external_name(self) -> str:
        return self.image_id or self.name


class GceLabel(ConfigLabel):
    def __init__(self, d: Mapping[str, Any], pool: GcePool) -> None:
        super().__init__(d["name"], pool)
        self.pool: GcePool = pool
        self.cloud_image_name: str = d["cloud-image"]
        self.cloud_image: GceCloudImage | None = None
        self.instance_type: str = d["instance-type"]
        self.volume_type: str = d.get("volume-type", "pd-standard")
        # GB of the boot disk.
        self.volume_size: int = d.get("volume-size", 10)
        self.host_key_checking = pool.host_key_checking


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
    pool = {
        **ConfigPool.schema(),
        v.Required("labels"): [label],
        "use-internal-ip": bool,
    }
    cloud_image = {
        "name": str,
        "connection-type": str,
        "connection-port": int,
        "shell-type": str,
        "image-id": str,
        "image-project": str,
        "image-family": str,
        "username": str,
        "key": str,
        "python-path": str,
    }
    return {
        v.Required("pools"): [pool],
        v.Required("region"): str,
        v.Required("project"): str,
        v.Required("zone"): str,
        "cloud-images": [cloud_image],
        "boot-timeout": int,
        "launch-timeout": int,
        "launch-retries": int,
        "rate-limit": int,
    }


class GceProviderConfig(ProviderConfig):
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
        self.launch_retries = provider.get("launch-retries", 3)
        self.launch_timeout = provider.get("launch-timeout", 3600)
        self.boot_timeout = provider.get("boot-timeout", 60)
        self.cloud_images: dict[str, GceCloudImage] = {}
        for d in provider.get("cloud-images") or []:
            image = GceCloudImage(d)
            self.cloud_images[image.name] = image
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = GcePool(pool, self)

    def load(self, config: Any) -> None:
        errors: list[str] = []
        for pool in self.pools.values():
            for label in pool.labels.values():
                assert isinstance(label, GceLabel)
                label.cloud_image = self.cloud_images.get(label.cloud_image_name)
                if label.cloud_image is None:
                    errors.append(f"pool {pool.name!r} label {label.name!r} uses cloud-image "
                                  f"{label.cloud_image_name!r}, which this provider's "
                                  "cloud-images do not list")
        if errors:
            raise ConfigError("; ".join(errors))
        self._register_pools(config)
