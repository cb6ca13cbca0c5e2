"""Configuration of OpenStack providers (also used by the fake cloud)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import (
    ConfigLabel,
    ConfigPool,
    Driver,
    LabelImage,
    ProviderConfig,
)
from nodepool.driver import ProviderDiskImage as BaseProviderDiskImage
from nodepool.driver import config_shapes as shapes
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import ConfigError


class ProviderDiskImage(BaseProviderDiskImage):
    """A diskimage as this provider uses it (uploads)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.pause = d.get("pause", False)
        self.config_drive: bool | None = d.get("config-drive")
        self.meta = d.get("meta") or {}
        self.connection_type = d.get("connection-type", "ssh")
        self.connection_port = d.get(
            "connection-port", 5986 if self.connection_type == "winrm" else 22)
        # username, python_path and shell_type come from the top-level
        # diskimage during load.


class ProviderCloudImage(LabelImage):
    """An image that already exists in the cloud."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.image_id: str | None = d.get("image-id")
        self.image_name: str | None = d.get("image-name")
        self.config_drive: bool | None = d.get("config-drive")
        self.username = d.get("username", "zuul")
        self.load_connection(d)

    @property
    def external_name(self) -> str:
        """What to look the image up by in the cloud (id wins over name)."""
        return self.image_id or self.image_name or self.name


class OpenStackLabel(ConfigLabel):
    def __init__(self, d: Mapping[str, Any], pool: OpenStackPool) -> None:
        super().__init__(d["name"], pool)
        # diskimage (ProviderDiskImage) and cloud_image (ProviderCloudImage)
        # are set during load.
        self.min_ram: int | None = d.get("min-ram")
        self.flavor_name: str | None = d.get("flavor-name")
        self.key_name: str | None = d.get("key-name")
        self.console_log: bool = d.get("console-log", False)
        self.boot_from_volume: bool = d.get("boot-from-volume", False)
        self.volume_size: int = d.get("volume-size", 50)
        self.instance_properties: dict[str, Any] = d.get("instance-properties") or {}
        self.dynamic_instance_properties: dict[str, str] = (
            d.get("dynamic-instance-properties") or {})
        self.userdata: str | None = d.get("userdata")
        self.networks: list[str] = d.get("networks") or list(pool.networks)
        self.host_key_checking: bool = d.get("host-key-checking", pool.host_key_checking)


class OpenStackPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: OpenStackProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        self.max_cores: float = d.get("max-cores", math.inf)
        self.max_ram: float = d.get("max-ram", math.inf)
        self.max_volumes: float = d.get("max-volumes", math.inf)
        self.max_volume_gb: float = d.get("max-volume-gb", math.inf)
        self.ignore_provider_quota: bool = d.get("ignore-provider-quota", False)
        self.azs = d.get("availability-zones")
        self.networks: list[str] = d.get("networks") or []
        self.security_groups: list[str] = d.get("security-groups") or []
        self.auto_floating_ip: bool = d.get("auto-floating-ip", True)
        self.host_key_checking: bool = d.get("host-key-checking", True)
        self.use_internal_ip: bool = d.get("use-internal-ip", False)
        for label in d.get("labels") or []:
            self.labels[label["name"]] = OpenStackLabel(label, self)

    def limits(self) -> QuotaInformation:
        limits = super().limits()
        limits.add(QuotaInformation.for_limits(
            volumes=None if self.max_volumes == math.inf else self.max_volumes,
            **{"volume-gb": None if self.max_volume_gb == math.inf else self.max_volume_gb}))
        return limits


def _label_schema() -> dict:
    return {
        v.Required("name"): str,
        v.Exclusive("diskimage", "label-image"): str,
        v.Exclusive("cloud-image", "label-image"): str,
        "min-ram": int,
        "flavor-name": str,
        "key-name": str,
        "console-log": bool,
        "boot-from-volume": bool,
        "volume-size": int,
        "instance-properties": dict,
        "dynamic-instance-properties": dict,
        "userdata": str,
        "networks": [str],
        "host-key-checking": bool,
    }


def _label_needs_image_and_flavor(label: Mapping[str, Any]) -> Mapping[str, Any]:
    if "diskimage" not in label and "cloud-image" not in label:
        raise v.Invalid("a label needs one of diskimage or cloud-image")
    if "min-ram" not in label and "flavor-name" not in label:
        raise v.Invalid("a label needs min-ram or flavor-name to choose a flavor")
    return label


def openstack_schema() -> dict:
    label = v.All(_label_schema(), _label_needs_image_and_flavor)
    pool = {
        **ConfigPool.schema(),
        "max-cores": int,
        "max-ram": int,
        "max-volumes": int,
        "max-volume-gb": int,
        "ignore-provider-quota": bool,
        "availability-zones": [str],
        "networks": [str],
        "security-groups": [str],
        "auto-floating-ip": bool,
        "host-key-checking": bool,
        "use-internal-ip": bool,
        "labels": [label],
    }
    diskimage = {
        v.Required("name"): str,
        "pause": bool,
        "config-drive": bool,
        "meta": dict,
        "connection-type": str,
        "connection-port": int,
    }
    cloud_image = {
        v.Required("name"): str,
        v.Exclusive("image-id", "cloud-image-name-or-id"): str,
        v.Exclusive("image-name", "cloud-image-name-or-id"): str,
        "config-drive": bool,
        "username": str,
        **shapes.connection_schema(),
    }
    return {
        v.Required("cloud"): str,
        "region-name": str,
        **shapes.launch_schema(),
        "rate": v.Any(int, float),
        "image-upload-timeout": int,
        "image-name-format": str,
        "hostname-format": str,
        "post-upload-hook": str,
        "clean-floating-ips": bool,
        "port-cleanup-interval": int,
        "nodepool-id": str,
        "diskimages": [diskimage],
        "cloud-images": [cloud_image],
        "pools": [pool],
    }


class OpenStackProviderConfig(ProviderConfig):
    manage_images = True

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.cloud: str = provider["cloud"]
        self.region_name: str | None = provider.get("region-name")
        self.boot_timeout: int = provider.get("boot-timeout", 60)
        self.launch_timeout: int = provider.get("launch-timeout", 3600)
        self.launch_retries: int = provider.get("launch-retries", 3)
        self.rate: float = provider.get("rate", 1.0)
        self.image_upload_timeout: int = provider.get("image-upload-timeout", 3600)
        self.image_name_format: str = provider.get(
            "image-name-format", "{image_name}-{timestamp}")
        self.hostname_format: str = provider.get("hostname-format", "np{node.id}")
        self.post_upload_hook: str | None = provider.get("post-upload-hook")
        self.clean_floating_ips: bool = provider.get("clean-floating-ips", False)
        self.port_cleanup_interval: int = provider.get("port-cleanup-interval", 600)
        self.diskimages: dict[str, BaseProviderDiskImage] = shapes.by_name(
            provider.get("diskimages"), ProviderDiskImage)
        self.cloud_images: dict[str, ProviderCloudImage] = shapes.by_name(
            provider.get("cloud-images"), ProviderCloudImage)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = OpenStackPool(pool, self)
        self._load_warnings: list[str] = []

    def load(self, config: Any) -> None:
        errors: list[str] = []
        self._load_warnings = []
        for name in self.diskimages:
            top = config.diskimages.get(name)
            if top is None:
                errors.append(f"diskimage {name!r} is not defined under the top-level "
                              "diskimages")
            elif top.abstract:
                errors.append(f"diskimage {name!r} is abstract (only a parent for other "
                              "diskimages, never built); name a diskimage that inherits "
                              "from it")
        seen_pools: set[str] = set()
        for pool_dict in self._raw.get("pools") or []:
            if pool_dict["name"] in seen_pools:
                errors.append(f"pool {pool_dict['name']!r} is defined more than once")
            seen_pools.add(pool_dict["name"])
        for pool in self.pools.values():
            for label in pool.labels.values():
                assert isinstance(label, OpenStackLabel)
                raw = next(lbl for lbl in (self._pool_raw(pool.name).get("labels") or [])
                           if lbl["name"] == label.name)
                if "diskimage" in raw:
                    self._attach_diskimage(config, pool, label, raw["diskimage"], errors)
                else:
                    cloud_image = self.cloud_images.get(raw["cloud-image"])
                    if cloud_image is None:
                        errors.append(
                            f"pool {pool.name!r} label {label.name!r} uses cloud-image "
                            f"{raw['cloud-image']!r}, which this provider's cloud-images "
                            "do not list")
                    label.cloud_image = cloud_image
        if errors:
            raise ConfigError("; ".join(errors))
        for name, image in self.diskimages.items():
            top = config.diskimages[name]
            image.username = top.username
            image.python_path = top.python_path
            image.shell_type = top.shell_type
            top.image_types.add(self.image_format(name) or "qcow2")
        self._register_pools(config)

    def _attach_diskimage(self, config: Any, pool: ConfigPool, label: OpenStackLabel,
                          name: str, errors: list[str]) -> None:
        """Point a label at its diskimage the way upstream's loader does:
        by the top-level diskimages.  One this provider's ``diskimages``
        do not list loads, but is never uploaded here, so its requests are
        declined ("image not available"): that is worth a warning."""
        top = config.diskimages.get(name)
        if top is None or top.abstract:
            what = "is abstract (never built)" if top is not None else (
                "is not defined under the top-level diskimages")
            errors.append(f"pool {pool.name!r} label {label.name!r} uses diskimage "
                          f"{name!r}, which {what}")
            return
        image = self.diskimages.get(name)
        if image is None:
            image = ProviderDiskImage({"name": name})
            image.username = top.username
            image.python_path = top.python_path
            image.shell_type = top.shell_type
            self._load_warnings.append(
                f"pool {pool.name!r} label {label.name!r} uses diskimage {name!r}, which "
                "this provider's diskimages do not list: it is never uploaded to this "
                f"provider, so requests for {label.name!r} are declined here until "
                f"{name!r} is added to the provider's diskimages")
        label.diskimage = image

    def check_environment(self) -> None:
        """The cloud must be in clouds.yaml (as upstream's loader requires)."""
        from nodepool.driver.openstack import cloud_config
        try:
            cloud_config.cloud_region(self.cloud, self.region_name)
        except Exception as e:
            found = cloud_config.loader().config_filename
            where = (f"the clouds.yaml in use is {found}" if found else
                     "no clouds.yaml was found (OS_CLIENT_CONFIG_FILE, ./clouds.yaml, "
                     "~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml)")
            region = f" region {self.region_name!r}" if self.region_name else ""
            raise ConfigError(
                f"cloud {self.cloud!r}{region} cannot be used: {e} ({where}); add the "
                "cloud to clouds.yaml or fix the provider's cloud/region-name") from e

    def load_warnings(self) -> list[str]:
        return list(self._load_warnings)

    def _pool_raw(self, name: str) -> Mapping[str, Any]:
        for pool in self._raw.get("pools") or []:
            if pool["name"] == name:
                return pool
        return {}

    def diskimage_names(self) -> list[str]:
        return list(self.diskimages)

    def image_format(self, diskimage_name: str) -> str | None:
        from nodepool.driver.openstack import cloud_config
        return cloud_config.image_format(self.cloud, self.region_name)
