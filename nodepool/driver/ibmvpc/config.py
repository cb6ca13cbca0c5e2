"""Configuration of IBM Cloud VPC providers: every key of upstream
Nodepool 11's ibmvpc driver, with its defaults and checks.

This build does not launch on IBM Cloud yet (see
:mod:`nodepool.driver.config_only`); the classes here are what that
driver will read.  ``zone``, ``subnet``, ``public-ipv4``,
``use-internal-ip`` and ``host-key-checking`` may be set on the provider
as defaults for its pools; every pool must end up with a zone and a
subnet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import voluptuous as v

from nodepool.driver import ConfigPool, Driver, ProviderDiskImage
from nodepool.driver import config_shapes as shapes
from nodepool.exceptions import ConfigError


class IbmVpcCloudImage(shapes.CloudImage):
    """An image that already exists, by href, id, name or filter."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d)
        # Names of SSH keys (in the VPC) authorized on the instance.
        self.keys: list[str] | None = d.get("keys")
        self.image_href: str | None = d.get("image-href")
        self.image_id: str | None = d.get("image-id")
        self.image_name: str | None = d.get("image-name")
        self.image_filter: dict[str, Any] | None = d.get("image-filter")

    @property
    def external_name(self) -> str:
        return self.image_name or self.image_href or self.image_id or self.name


class IbmVpcDiskImage(shapes.CloudDiskImage):
    """A diskimage as this provider imports it (through object storage)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d)
        # The IBM operating-system name the imported image is declared as.
        self.operating_system: str = d["operating-system"]


class IbmVpcLabel(shapes.ImageLabel):
    def __init__(self, d: Mapping[str, Any], pool: IbmVpcPool) -> None:
        super().__init__(d, pool)
        self.pool: IbmVpcPool = pool
        self.cloud_image: IbmVpcCloudImage | None = None
        self.diskimage: IbmVpcDiskImage | None = None
        # The instance profile (size), such as cx2-2x4.
        self.profile: str = d["profile"]
        self.user_data: str | None = d.get("user-data")


class IbmVpcPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: IbmVpcProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        # Required by upstream's loader although its schema does not say
        # so (see IbmVpcProviderConfig.check_environment).
        self.has_max_servers = "max-servers" in d
        self.public_ipv4: bool = d.get("public-ipv4", provider.public_ipv4)
        self.use_internal_ip = d.get("use-internal-ip", provider.use_internal_ip)
        self.host_key_checking = d.get("host-key-checking", provider.host_key_checking)
        self.zone: str | None = d.get("zone", provider.zone)
        self.azs = [self.zone] if self.zone else None
        self.subnet: str | None = d.get("subnet", provider.subnet)
        for label in d.get("labels") or []:
            self.labels[label["name"]] = IbmVpcLabel(label, self)


def _cloud_image_schema() -> Any:
    image_filter = {
        "operating-system": {
            "architecture": str,
            "dedicated-host-only": bool,
            "display-name": str,
            "family": str,
            "href": str,
            "name": str,
            "vendor": str,
            "version": str,
        },
        "owner-type": str,
        "status": str,
    }
    # The ways a cloud image names what to boot; exactly one is required.
    specs = {
        "image-href": str,
        "image-id": str,
        "image-name": str,
        "image-filter": image_filter,
    }
    return shapes.cloud_image_schema(specs, {"keys": [str]})


# Settings of a pool that its provider may set for all its pools.
_POOL_DEFAULTS = {
    "zone": str,
    "subnet": str,
    "public-ipv4": bool,
    "use-internal-ip": bool,
    "host-key-checking": bool,
}


def ibmvpc_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority.

    Upstream's driver declares provider names without underscores, but
    its validator lets the common ``name: str`` win, so such a name is
    accepted (with a warning here, see ``load_warnings``)."""
    label = shapes.label_schema({v.Required("profile"): str, "user-data": str})
    pool = shapes.pool_schema(label, {
        # As upstream: only a leading underscore is refused.
        v.Required("name"): v.Match(r"[^_]+"),
        **_POOL_DEFAULTS,
    })
    return {
        v.Required("pools"): [pool],
        v.Required("vpc"): str,
        v.Required("region"): str,
        "cloud-images": [_cloud_image_schema()],
        "diskimages": [shapes.diskimage_schema({v.Required("operating-system"): str})],
        "quota": {
            "instances": int,
            "cores": int,
            "ram": int,
        },
        **_POOL_DEFAULTS,
        "post-upload-hook": str,
        "rate": v.Coerce(float),
        **shapes.launch_schema(),
        "credentials-file": str,
        "object-storage": {
            v.Required("instance-name"): str,
            v.Required("endpoint"): str,
            v.Required("bucket-name"): str,
        },
    }


class IbmVpcProviderConfig(shapes.CloudProviderConfig):
    """An IBM Cloud VPC provider: one VPC in one region."""

    manage_images = True

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        self.cloud = "IBM"
        self.vpc: str = provider["vpc"]
        self.region: str = provider["region"]
        self.region_name = self.region
        self.zone: str | None = provider.get("zone")
        self.subnet: str | None = provider.get("subnet")
        # Limits the provider applies on top of the account's
        # (instances, cores, ram).
        self.quota: dict[str, int] = dict(provider.get("quota") or {})
        self.credentials_file: str | None = provider.get("credentials-file")
        # {instance-name, endpoint, bucket-name}: where uploads are staged.
        self.object_storage: dict[str, str] | None = provider.get("object-storage")
        # Mutating API calls per second.
        self.rate: float = provider.get("rate", 1)
        self.boot_timeout = provider.get("boot-timeout", 120)
        # Upstream's loader has an ``image-format`` key its schema refuses:
        # uploads are always qcow2.  (Not yet added to the diskimages'
        # builds: this build cannot upload to IBM Cloud.)
        self.image_type = "qcow2"
        self.image_name_format = "npimage{upload_id}"
        self.post_upload_hook = provider.get("post-upload-hook")
        # Defaults for the pools.
        self.public_ipv4: bool = provider.get("public-ipv4", False)
        self.use_internal_ip = provider.get("use-internal-ip", False)
        self.host_key_checking: bool = provider.get("host-key-checking", True)
        self.cloud_images: dict[str, IbmVpcCloudImage] = shapes.by_name(
            provider.get("cloud-images"), IbmVpcCloudImage)
        self.diskimages: dict[str, ProviderDiskImage] = shapes.by_name(
            provider.get("diskimages"), IbmVpcDiskImage)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = IbmVpcPool(pool, self)

    def check_environment(self) -> None:
        """What upstream's loader refuses although its validator accepts
        it (a pool without max-servers, zone or subnet): the daemons leave
        the provider out, ``config-validate`` warns."""
        errors = []
        for pool in self.pools.values():
            assert isinstance(pool, IbmVpcPool)
            if not pool.has_max_servers:
                errors.append(f"pool {pool.name!r}: max-servers is required for IBM VPC "
                              "pools; set it")
            if not pool.zone:
                errors.append(f"pool {pool.name!r}: no zone; set zone on the pool or the "
                              "provider")
            if not pool.subnet:
                errors.append(f"pool {pool.name!r}: no subnet; set subnet on the pool or "
                              "the provider")
        if errors:
            raise ConfigError("; ".join(errors))

    def load_warnings(self) -> list[str]:
        """Upstream's schema lets underscores through in most provider and
        pool names, but its driver refuses to launch with them: they
        separate the parts of its resource group names
        (``np_<provider>_<pool>``)."""
        names = [f"provider name {self.name!r}"] if "_" in self.name else []
        names += [f"pool name {pool.name!r}" for pool in self.pools.values()
                  if "_" in pool.name]
        return [f"{name} contains an underscore, which separates the parts of IBM VPC "
                "resource group names (np_<provider>_<pool>): nodes cannot be launched "
                "with it; rename it" for name in names]
