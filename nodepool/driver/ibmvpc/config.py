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

from nodepool.driver import (
    ConfigLabel,
    ConfigPool,
    Driver,
    LabelImage,
    ProviderConfig,
    ProviderDiskImage,
)
from nodepool.exceptions import ConfigError

# Ports Zuul connects to when an image names only its connection type.
DEFAULT_PORTS = {"ssh": 22, "winrm": 5986}
# The ways a cloud image names what to boot; exactly one is required.
IMAGE_SPECS = ("image-href", "image-id", "image-name", "image-filter")


def _port(d: Mapping[str, Any], connection_type: str) -> int:
    return d.get("connection-port", DEFAULT_PORTS.get(connection_type, 22))


class IbmVpcCloudImage(LabelImage):
    """An image that already exists, by href, id, name or filter."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.username = d["username"]
        # Names of SSH keys (in the VPC) authorized on the instance.
        self.keys: list[str] | None = d.get("keys")
        self.image_href: str | None = d.get("image-href")
        self.image_id: str | None = d.get("image-id")
        self.image_name: str | None = d.get("image-name")
        self.image_filter: dict[str, Any] | None = d.get("image-filter")
        self.python_path = d.get("python-path", "auto")
        self.shell_type = d.get("shell-type")
        self.connection_type = d.get("connection-type", "ssh")
        self.connection_port = _port(d, self.connection_type)

    @property
    def external_name(self) -> str:
        return self.image_name or self.image_href or self.image_id or self.name


class IbmVpcDiskImage(ProviderDiskImage):
    """A diskimage as this provider imports it (through object storage)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.pause = bool(d.get("pause", False))
        self.python_path = d.get("python-path", "auto")
        self.shell_type = d.get("shell-type")
        self.connection_type = d.get("connection-type", "ssh")
        self.connection_port = _port(d, self.connection_type)
        # The IBM operating-system name the imported image is declared as.
        self.operating_system: str = d["operating-system"]


class IbmVpcLabel(ConfigLabel):
    def __init__(self, d: Mapping[str, Any], pool: IbmVpcPool) -> None:
        super().__init__(d["name"], pool)
        self.pool: IbmVpcPool = pool
        self.cloud_image_name: str | None = d.get("cloud-image")
        self.diskimage_name: str | None = d.get("diskimage")
        self.cloud_image: IbmVpcCloudImage | None = None
        self.diskimage: IbmVpcDiskImage | None = None
        # The instance profile (size), such as cx2-2x4.
        self.profile: str = d["profile"]
        self.user_data: str | None = d.get("user-data")
        self.host_key_checking = pool.host_key_checking


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
    return v.All({
        v.Required("name"): str,
        v.Required("username"): str,
        "keys": [str],
        v.Exclusive("image-href", "spec"): str,
        v.Exclusive("image-id", "spec"): str,
        v.Exclusive("image-name", "spec"): str,
        v.Exclusive("image-filter", "spec"): image_filter,
        "connection-type": str,
        "connection-port": int,
        "python-path": str,
        "shell-type": str,
    }, {
        v.Required(v.Any(*IMAGE_SPECS),
                   msg="a cloud-image needs one of " + ", ".join(
                       f'"{spec}"' for spec in IMAGE_SPECS)): object,
        object: object,
    })


def _diskimage_schema() -> dict:
    return {
        v.Required("name"): str,
        v.Required("operating-system"): str,
        "pause": bool,
        "connection-type": str,
        "connection-port": int,
        "python-path": str,
        "shell-type": str,
    }


def _label_schema() -> dict:
    return {
        v.Required("name"): str,
        "cloud-image": str,
        "diskimage": str,
        v.Required("profile"): str,
        "user-data": str,
    }


def ibmvpc_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority.

    Upstream's driver declares provider names without underscores, but
    its validator lets the common ``name: str`` win, so such a name is
    accepted (with a warning here, see ``load_warnings``)."""
    pool = {
        **ConfigPool.schema(),
        # As upstream: only a leading underscore is refused.
        v.Required("name"): v.Match(r"[^_]+"),
        v.Required("labels"): [_label_schema()],
        "zone": str,
        "subnet": str,
        "public-ipv4": bool,
        "use-internal-ip": bool,
        "host-key-checking": bool,
    }
    return {
        v.Required("pools"): [pool],
        v.Required("vpc"): str,
        v.Required("region"): str,
        "zone": str,
        "subnet": str,
        "cloud-images": [_cloud_image_schema()],
        "diskimages": [_diskimage_schema()],
        "quota": {
            "instances": int,
            "cores": int,
            "ram": int,
        },
        "public-ipv4": bool,
        "use-internal-ip": bool,
        "host-key-checking": bool,
        "post-upload-hook": str,
        "rate": v.Coerce(float),
        "boot-timeout": int,
        "launch-timeout": int,
        "launch-retries": int,
        "credentials-file": str,
        "object-storage": {
            v.Required("instance-name"): str,
            v.Required("endpoint"): str,
            v.Required("bucket-name"): str,
        },
    }


class IbmVpcProviderConfig(ProviderConfig):
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
        self.launch_retries = provider.get("launch-retries", 3)
        self.launch_timeout = provider.get("launch-timeout", 3600)
        self.boot_timeout = provider.get("boot-timeout", 120)
        # Upstream's loader has an ``image-format`` key its schema refuses:
        # uploads are always qcow2.
        self.image_type = "qcow2"
        self.image_name_format = "npimage{upload_id}"
        self.post_upload_hook = provider.get("post-upload-hook")
        # Defaults for the pools.
        self.public_ipv4: bool = provider.get("public-ipv4", False)
        self.use_internal_ip = provider.get("use-internal-ip", False)
        self.host_key_checking: bool = provider.get("host-key-checking", True)
        self.cloud_images: dict[str, IbmVpcCloudImage] = {
            d["name"]: IbmVpcCloudImage(d) for d in provider.get("cloud-images") or []}
        self.diskimages: dict[str, ProviderDiskImage] = {
            d["name"]: IbmVpcDiskImage(d) for d in provider.get("diskimages") or []}
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

    def load(self, config: Any) -> None:
        errors: list[str] = []
        for name, image in self.diskimages.items():
            top = config.diskimages.get(name)
            if top is None:
                errors.append(f"diskimage {name!r} is not defined under the top-level "
                              "diskimages")
                continue
            image.username = top.username
            # (qcow2 is added to the diskimage's builds once this build
            # can upload to IBM Cloud.)
        for pool in self.pools.values():
            for label in pool.labels.values():
                assert isinstance(label, IbmVpcLabel)
                errors.extend(self._bind_image(pool, label))
        if errors:
            raise ConfigError("; ".join(errors))
        self._register_pools(config)

    def _bind_image(self, pool: ConfigPool, label: IbmVpcLabel) -> list[str]:
        if label.cloud_image_name:
            label.cloud_image = self.cloud_images.get(label.cloud_image_name)
            if label.cloud_image is None:
                return [f"pool {pool.name!r} label {label.name!r} uses cloud-image "
                        f"{label.cloud_image_name!r}, which this provider's cloud-images "
                        "do not list"]
        if label.diskimage_name:
            image = self.diskimages.get(label.diskimage_name)
            label.diskimage = image if isinstance(image, IbmVpcDiskImage) else None
            if label.diskimage is None:
                return [f"pool {pool.name!r} label {label.name!r} uses diskimage "
                        f"{label.diskimage_name!r}, which this provider's diskimages "
                        "do not list"]
        return []

    def diskimage_names(self) -> list[str]:
        return list(self.diskimages)

    def image_format(self, diskimage_name: str) -> str | None:
        return self.image_type
