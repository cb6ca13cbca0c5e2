"""Configuration of AWS providers: the keys of upstream Nodepool 11's AWS
driver, parsed into typed objects the adapter reads.

Limits (``max-servers``, ``max-cores``, ``max-ram``, ``max-resources``) may
be set on the provider and on each pool; a pool inherits the provider's
unless it sets its own (``max-resources`` merges key by key).  So do
``public-ipv4`` and ``public-ipv6``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import voluptuous as v

from nodepool.driver import ConfigPool, Driver, ProviderDiskImage
from nodepool.driver import config_shapes as shapes
from nodepool.exceptions import ConfigError

if TYPE_CHECKING:
    from nodepool.config import DiskImage

IMPORT_METHODS = ("snapshot", "ebs-direct", "image")
IMAGE_FORMATS = ("ova", "vhd", "vhdx", "vmdk", "raw")
FLEET_ALLOCATION_STRATEGIES = ("prioritized", "price-capacity-optimized",
                               "capacity-optimized", "diversified", "lowest-price")


class AwsCloudImage(shapes.CloudImage):
    """An AMI that already exists: by ``image-id``, or the newest one that
    matches ``image-filters`` (looked up at launch time)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d)
        self.image_id: str | None = d.get("image-id")
        # EC2 wants "Name"/"Values"; upstream accepts either spelling.
        filters = d.get("image-filters")
        self.image_filters: list[dict[str, Any]] | None = (
            None if filters is None
            else [{k.capitalize(): val for k, val in f.items()} for f in filters])

    @property
    def external_name(self) -> str:
        return self.image_id or self.name


class AwsDiskImage(shapes.CloudDiskImage):
    """A diskimage as this provider imports it (see the builder)."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d)
        self._username = d.get("username")
        # Tags of the uploaded AMI, snapshot and object (the builder reads
        # ``meta`` for every driver).
        self.meta: dict[str, Any] = dict(d.get("tags") or {})
        self.architecture: str = d.get("architecture", "x86_64")
        self.ena_support: bool = d.get("ena-support", True)
        self.volume_size: int | None = d.get("volume-size")
        self.volume_type: str = d.get("volume-type", "gp3")
        self.import_method: str = d.get("import-method", "snapshot")
        self.imds_support: str | None = d.get("imds-support")
        self.iops: int | None = d.get("iops")
        self.throughput: int | None = d.get("throughput")


class AwsLabel(shapes.ImageLabel):
    def __init__(self, d: Mapping[str, Any], pool: AwsPool) -> None:
        super().__init__(d, pool)
        self.pool: AwsPool = pool
        self.diskimage: AwsDiskImage | None = None
        self.cloud_image: AwsCloudImage | None = None
        self.instance_type: str | None = d.get("instance-type")
        # {"instance-types": [...], "allocation-strategy": ...} for EC2 Fleet.
        self.fleet: dict[str, Any] | None = d.get("fleet")
        self.key_name: str = d["key-name"]
        self.ebs_optimized: bool = bool(d.get("ebs-optimized", False))
        self.volume_type: str | None = d.get("volume-type")
        self.volume_size: int | None = d.get("volume-size")
        self.iops: int | None = d.get("iops")
        self.throughput: int | None = d.get("throughput")
        self.userdata: str | None = d.get("userdata")
        self.iam_instance_profile: dict[str, str] | None = d.get("iam-instance-profile")
        self.tags: dict[str, Any] = dict(d.get("tags") or {})
        self.dynamic_tags: dict[str, str] = dict(d.get("dynamic-tags") or {})
        self.use_spot: bool = bool(d.get("use-spot", False))
        self.imdsv2: str | None = d.get("imdsv2")
        self.dedicated_host: bool = bool(d.get("dedicated-host", False))

    def instance_types(self) -> list[str]:
        """Every instance type a node of this label may get."""
        if self.instance_type:
            return [self.instance_type]
        if self.fleet:
            return list(self.fleet.get("instance-types") or [])
        return []


class AwsPool(ConfigPool):
    def __init__(self, d: Mapping[str, Any], provider: AwsProviderConfig) -> None:
        super().__init__(provider=provider)
        self.load_common(d)
        self.max_servers = d.get("max-servers", provider.max_servers)
        self.max_cores = d.get("max-cores", provider.max_cores)
        self.max_ram = d.get("max-ram", provider.max_ram)
        self.max_resources = dict(provider.max_resources)
        self.max_resources.update(d.get("max-resources") or {})
        self.security_group_id: str | None = d.get("security-group-id")
        self.subnet_id: str | None = d.get("subnet-id")
        self.public_ipv4: bool = d.get("public-ipv4", provider.public_ipv4)
        # The older spelling wins, as upstream's does.
        self.public_ipv4 = d.get("public-ip-address", self.public_ipv4)
        self.public_ipv6: bool = d.get("public-ipv6", provider.public_ipv6)
        self.host_key_checking = d.get("host-key-checking", provider.host_key_checking)
        self.az: str | None = d.get("availability-zone")
        self.azs = [self.az] if self.az else None
        for label in d.get("labels") or []:
            self.labels[label["name"]] = AwsLabel(label, self)


def _cloud_image_schema() -> Any:
    image_filter = {
        v.Any("Name", "name"): str,
        v.Any("Values", "values"): [str],
    }
    return shapes.cloud_image_schema({"image-id": str, "image-filters": [image_filter]})


def _diskimage_schema() -> dict:
    return shapes.diskimage_schema({
        "username": str,
        "architecture": str,
        "ena-support": bool,
        "volume-size": int,
        "volume-type": str,
        "import-method": v.Any(*IMPORT_METHODS),
        "imds-support": v.Any("v2.0", None),
        "iops": int,
        "throughput": int,
        "tags": dict,
    })


def _label_schema() -> dict:
    return shapes.label_schema({
        v.Exclusive("instance-type", "instance"): str,
        v.Exclusive("fleet", "instance"): {
            v.Required("instance-types"): list,
            v.Required("allocation-strategy"): v.Any(*FLEET_ALLOCATION_STRATEGIES),
        },
        v.Required("key-name"): str,
        "ebs-optimized": bool,
        "volume-type": str,
        "volume-size": int,
        "iops": int,
        "throughput": int,
        "userdata": str,
        "iam-instance-profile": {
            v.Exclusive("name", "iam_instance_profile_id"): str,
            v.Exclusive("arn", "iam_instance_profile_id"): str,
        },
        "tags": dict,
        "dynamic-tags": dict,
        "use-spot": bool,
        "imdsv2": v.Any(None, "required", "optional"),
        "dedicated-host": bool,
    }, one_image=True)


def aws_schema() -> dict:
    """The provider keys beyond name, driver, max-concurrency and priority."""
    pool = shapes.pool_schema(_label_schema(), {
        "security-group-id": str,
        "subnet-id": str,
        "public-ip-address": bool,
        "public-ipv4": bool,
        "public-ipv6": bool,
        "host-key-checking": bool,
        "max-cores": int,
        "max-ram": int,
        "max-resources": {str: int},
        "availability-zone": str,
    })
    return {
        v.Required("pools"): [pool],
        v.Required("region-name"): str,
        "rate": v.Any(int, float),
        "profile-name": str,
        "cloud-images": [_cloud_image_schema()],
        "diskimages": [_diskimage_schema()],
        **shapes.launch_schema(),
        "object-storage": {v.Required("bucket-name"): str},
        "image-format": v.Any(*IMAGE_FORMATS),
        "image-import-timeout": int,
        "max-servers": int,
        "max-cores": int,
        "max-ram": int,
        "max-resources": {str: int},
        "post-upload-hook": str,
    }


class AwsProviderConfig(shapes.CloudProviderConfig):
    """An AWS provider: one account (``profile-name`` or the standard
    credential chain) in one region."""

    manage_images = True

    def __init__(self, driver: Driver, provider: Mapping[str, Any]) -> None:
        super().__init__(driver, provider)
        # What the node records say, as upstream's driver writes them.
        self.cloud = "AWS"
        self.region_name: str = provider["region-name"]
        self.profile_name: str | None = provider.get("profile-name")
        # Mutating API calls per second (read-only ones may go ten times
        # as fast).
        self.rate: float = provider.get("rate", 2)
        self.boot_timeout = provider.get("boot-timeout", 180)
        # Not settable in upstream's schema either; kept for its defaults.
        self.use_internal_ip = False
        self.host_key_checking = True
        self.public_ipv4 = True
        self.public_ipv6 = False
        self.object_storage: dict[str, str] | None = provider.get("object-storage")
        self.image_type: str = provider.get("image-format", "raw")
        self.image_import_timeout: int | None = provider.get("image-import-timeout")
        self.post_upload_hook: str | None = provider.get("post-upload-hook")
        self.max_servers: float = provider.get("max-servers", math.inf)
        self.max_cores: float = provider.get("max-cores", math.inf)
        self.max_ram: float = provider.get("max-ram", math.inf)
        self.max_resources: dict[str, float] = dict(provider.get("max-resources") or {})
        self.cloud_images: dict[str, AwsCloudImage] = shapes.by_name(
            provider.get("cloud-images"), AwsCloudImage)
        self.diskimages: dict[str, ProviderDiskImage] = shapes.by_name(
            provider.get("diskimages"), AwsDiskImage)
        for pool in provider.get("pools") or []:
            self.pools[pool["name"]] = AwsPool(pool, self)

    @property
    def bucket_name(self) -> str | None:
        return (self.object_storage or {}).get("bucket-name")

    def check_environment(self) -> None:
        """What upstream's loader refuses although its validator accepts
        it: the daemons leave the provider out, ``config-validate`` warns."""
        for name, image in self.diskimages.items():
            if (isinstance(image, AwsDiskImage) and image.imds_support == "v2.0"
                    and image.import_method == "image"):
                raise ConfigError(
                    f"diskimage {name!r}: imds-support v2.0 needs import-method snapshot "
                    "or ebs-direct (an image import cannot require IMDSv2)")

    def adopt_diskimage(self, image: ProviderDiskImage, top: DiskImage) -> None:
        super().adopt_diskimage(image, top)
        top.image_types.add(self.image_type)

    def label_errors(self, label: shapes.ImageLabel) -> list[str]:
        assert isinstance(label, AwsLabel)
        pool = label.pool
        errors = []
        if label.dedicated_host and label.use_spot:
            errors.append(f"pool {pool.name!r} label {label.name!r}: spot instances "
                          "cannot run on dedicated hosts; drop use-spot or dedicated-host")
        if label.dedicated_host and not pool.az:
            errors.append(f"pool {pool.name!r} label {label.name!r}: a dedicated "
                          "host needs the pool's availability-zone")
        return errors

    def fleet_labels(self) -> list[AwsLabel]:
        return [label for pool in self.pools.values() for label in pool.labels.values()
                if isinstance(label, AwsLabel) and label.fleet]
