"""Configuration of Azure providers: every key of upstream Nodepool 11's
azure driver, with its defaults and checks.

This build does not launch on Azure yet (see
:mod:`nodepool.driver.config_only`); the classes here are what that
driver will read.  ``ipv4``, ``ipv6``, ``public-ipv4``, ``public-ipv6``,
``use-internal-ip`` and ``host-key-checking`` may be set on the provider
as defaults for its pools.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigPool, Driver, ProviderDiskImage
from nodepool.driver import config_shapes as shapes
from nodepool.exceptions import ConfigError


class AzureCloudImage(shapes.CloudImage):
    """An image that already exists: a marketplace ``image-reference``, an
    ``image-id``, the newest match of ``image-filter``, or a gallery image."""

    def __init__(self, d: Mapping[str, Any], zuul_public_key: str | None) -> None:
        super().__init__(d)
        self.password: str | None = d.get("password")
        self.generate_password: bool = d.get("generate-password", False)
        # The SSH public key authorized for ``username`` (the provider's
        # deprecated ``zuul-public-key`` when unset).
        self.key: str | None = d.get("key", zuul_public_key)
        self.image_reference: dict[str, str] | None = d.get("image-reference")
        self.image_filter: dict[str, Any] | None = d.get("image-filter")
        self.image_id: str | None = d.get("image-id")
        self.shared_gallery_image: dict[str, str] | None = d.get("shared-gallery-image")
        self.community_gallery_image: dict[str, str] | None = d.get("community-gallery-image")

    @property
    def external_name(self) -> str:
        if self.image_id:
            return self.image_id
        if self.image_reference or self.image_filter:
            return str(self.image_reference or self.image_filter)
        return self.name


class AzureDiskImage(shapes.CloudDiskImage):
    """A diskimage as this provider takes it (uploaded as a VHD)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d)
        self._username = d.get("username")
        self.key: str | None = d.get("key")
        # Tags of the uploaded image.
        self.meta = dict(d.get("tags") or {})


def _encode(text: str | None) -> str | None:
    """Azure wants user-data and custom-data base64-encoded."""
    if not text:
        return None
    return base64.b64encode(text.encode("utf8")).decode("utf8")


class AzureLabel(shapes.ImageLabel):
    def __init__(self, d: Mapping[str, Any], pool: AzurePool) -> None:
        super().__init__(d, pool)
        self.pool: AzurePool = pool
        self.cloud_image: AzureCloudImage | None = None
        self.diskimage: AzureDiskImage | None = None
        # {"vm-size": ...}
        self.hardware_profile: dict[str, str] = dict(d["hardware-profile"])
        self.tags: dict[str, Any] = dict(d.get("tags") or {})
        self.dynamic_tags: dict[str, str] = dict(d.get("dynamic-tags") or {})
        # Base64-encoded, as the API takes them.
        self.user_data: str | None = _encode(d.get("user-data"))
        self.custom_data: str | None = _encode(d.get("custom-data"))
        # GB of the OS disk (None: the image's size).
        self.volume_size: int | None = d.get("volume-size")


class AzurePool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: AzureProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        # Required by upstream's loader although its schema does not say
        # so (see AzureProviderConfig.check_environment).
        self.has_max_servers = "max-servers" in d
        self.public_ipv4: bool = d.get("public-ipv4", provider.public_ipv4)
        self.public_ipv6: bool = d.get("public-ipv6", provider.public_ipv6)
        ipv4 = d.get("ipv4", provider.ipv4)
        ipv6 = d.get("ipv6", provider.ipv6)
        # A public address implies the address family; IPv4 when neither.
        self.ipv4: bool = bool(ipv4 or self.public_ipv4)
        self.ipv6: bool = bool(ipv6 or self.public_ipv6)
        if not (self.ipv4 or self.ipv6):
            self.ipv4 = True
        self.use_internal_ip = d.get("use-internal-ip", provider.use_internal_ip)
        self.host_key_checking = d.get("host-key-checking", provider.host_key_checking)
        for label in d.get("labels") or []:
            self.labels[label["name"]] = AzureLabel(label, self)


def _cloud_image_schema() -> Any:
    image_reference = {
        v.Required("sku"): str,
        v.Required("publisher"): str,
        v.Required("version"): str,
        v.Required("offer"): str,
    }
    image_filter = {
        "location": str,
        "name": str,
        "tags": dict,
    }
    gallery_image = {
        v.Required("gallery-name"): str,
        v.Required("name"): str,
        "version": str,
    }
    # The ways a cloud image names what to boot; exactly one is required.
    specs = {
        "image-reference": image_reference,
        "image-id": str,
        "image-filter": image_filter,
        "community-gallery-image": gallery_image,
        "shared-gallery-image": gallery_image,
    }
    return shapes.cloud_image_schema(specs, {
        "password": str,
        "generate-password": bool,
        "key": str,
    })


def _label_schema() -> dict:
    return shapes.label_schema({
        v.Required("hardware-profile"): {v.Required("vm-size"): str},
        "tags": dict,
        "dynamic-tags": dict,
        "user-data": str,
        "custom-data": str,
        "volume-size": int,
    })


# Settings of a pool that its provider may set for all its pools.
_POOL_DEFAULTS = {
    "ipv4": bool,
    "ipv6": bool,
    "public-ipv4": bool,
    "public-ipv6": bool,
    "use-internal-ip": bool,
    "host-key-checking": bool,
}


def azure_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority."""
    pool = shapes.pool_schema(_label_schema(), _POOL_DEFAULTS)
    return {
        v.Required("pools"): [pool],
        v.Required("location"): str,
        v.Required("resource-group"): str,
        v.Required("resource-group-location"): str,
        "subnet-id": str,
        "network": v.Any(str, {
            "resource-group": str,
            "network": str,
            "subnet": str,
        }),
        "cloud-images": [_cloud_image_schema()],
        "diskimages": [shapes.diskimage_schema({"username": str, "key": str, "tags": dict})],
        v.Required("auth-path"): str,
        **_POOL_DEFAULTS,
        "post-upload-hook": str,
        "rate": v.Coerce(float),
        **shapes.launch_schema(),
        # Deprecated upstream: the default ``key`` of cloud images.
        "zuul-public-key": str,
    }


class AzureProviderConfig(shapes.CloudProviderConfig):
    """An Azure provider: one subscription (``auth-path``), VMs in one
    resource group and location."""

    manage_images = True

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.cloud = "Azure"
        self.location: str = provider["location"]
        self.region_name = self.location
        self.resource_group: str = provider["resource-group"]
        self.resource_group_location: str = provider["resource-group-location"]
        # The credentials file (``az ad sp create-for-rbac --sdk-auth``).
        self.auth_path: str = provider["auth-path"]
        self.subnet_id: str | None = provider.get("subnet-id")
        # A network name, or {resource-group, network, subnet}.
        self.network: str | dict[str, str] | None = provider.get("network")
        self.zuul_public_key: str | None = provider.get("zuul-public-key")
        # Mutating API calls per second.
        self.rate: float = provider.get("rate", 1)
        self.boot_timeout = provider.get("boot-timeout", 120)
        # (Not yet added to the diskimages' builds: this build cannot
        # upload to Azure.)
        self.image_type = "vhd"
        self.post_upload_hook = provider.get("post-upload-hook")
        # Defaults for the pools.
        self.public_ipv4: bool = provider.get("public-ipv4", True)
        self.public_ipv6: bool = provider.get("public-ipv6", False)
        self.ipv4: bool | None = provider.get("ipv4")
        self.ipv6: bool | None = provider.get("ipv6")
        self.use_internal_ip = provider.get("use-internal-ip", False)
        self.host_key_checking: bool = provider.get("host-key-checking", True)
        self.cloud_images: dict[str, AzureCloudImage] = shapes.by_name(
            provider.get("cloud-images"), lambda d: AzureCloudImage(d, self.zuul_public_key))
        self.diskimages: dict[str, ProviderDiskImage] = shapes.by_name(
            provider.get("diskimages"), AzureDiskImage)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = AzurePool(pool, self)

    def check_environment(self) -> None:
        """Upstream's loader refuses a pool without ``max-servers``, which
        its validator accepts: the daemons leave the provider out,
        ``config-validate`` warns."""
        missing = [pool.name for pool in self.pools.values()
                   if isinstance(pool, AzurePool) and not pool.has_max_servers]
        if missing:
            raise ConfigError(f"pool(s) {', '.join(map(repr, missing))}: max-servers is "
                              "required for Azure pools; set it")
