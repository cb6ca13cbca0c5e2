"""Configuration shapes the cloud drivers share.

Upstream's cloud drivers describe images, labels, pools and launch bounds
with the same keys.  Each such shape is written once here, as a
voluptuous schema fragment beside the typed object that reads it; a
driver's ``config.py`` composes them with its own keys (the aws, azure,
ibmvpc and gce drivers build on :class:`CloudProviderConfig`; openstack
and metastatic use some of the schemas).  A shape accepts, defaults and
reports exactly what upstream Nodepool 11's drivers do: a change here
changes every driver that uses it, so the upstream fixture verdicts
(``nodepool/tests/unit/test_config_upstream_fixtures.py``) must still
hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import voluptuous as v

from nodepool.driver import ConfigLabel, ConfigPool, LabelImage, ProviderConfig, ProviderDiskImage
from nodepool.exceptions import ConfigError

if TYPE_CHECKING:
    from nodepool.config import Config, DiskImage

T = TypeVar("T")


def by_name(entries: Iterable[Mapping[str, Any]] | None,
            parse: Callable[[Mapping[str, Any]], T]) -> dict[str, T]:
    """A provider's list of named entries (``cloud-images``,
    ``diskimages``), each parsed, by name: a later entry of a name
    replaces an earlier one, as in upstream's loader."""
    return {d["name"]: parse(d) for d in entries or []}


def connection_schema() -> dict:
    """The keys of an image entry that say how Zuul reaches its nodes
    (read by :meth:`nodepool.driver.LabelImage.load_connection`)."""
    return {
        "connection-type": str,
        "connection-port": int,
        "python-path": str,
        "shell-type": str,
    }


def launch_schema() -> dict:
    """A provider's bounds on one launch (read by
    :class:`nodepool.driver.ProviderConfig`)."""
    return {
        "boot-timeout": int,
        "launch-timeout": int,
        "launch-retries": int,
    }


def cloud_image_schema(specs: Mapping[str, Any], extra: Mapping[Any, Any] | None = None) -> Any:
    """A ``cloud-images`` entry (read by :class:`CloudImage`): its name,
    the user Zuul logs in as, exactly one of ``specs`` (each way the
    driver's cloud can name the image to boot, with its schema), the
    connection keys and the driver's ``extra`` keys."""
    names = list(specs)
    if len(names) == 2:
        needs = f'"{names[0]}" or "{names[1]}"'
    else:
        needs = "one of " + ", ".join(f'"{name}"' for name in names)
    return v.All({
        v.Required("name"): str,
        v.Required("username"): str,
        **(extra or {}),
        **{v.Exclusive(name, "spec"): schema for name, schema in specs.items()},
        **connection_schema(),
    }, {
        # The exclusive group refuses two; this refuses none.
        v.Required(v.Any(*names), msg=f"a cloud-image needs {needs}"): object,
        object: object,
    })


def diskimage_schema(extra: Mapping[Any, Any]) -> dict:
    """A provider's ``diskimages`` entry (read by :class:`CloudDiskImage`):
    the diskimage's name, ``pause``, the connection keys and the driver's
    ``extra`` keys."""
    return {
        v.Required("name"): str,
        "pause": bool,
        **connection_schema(),
        **extra,
    }


def label_schema(extra: Mapping[Any, Any], *, one_image: bool = False) -> dict:
    """A pool's ``labels`` entry that boots one of the provider's
    ``cloud-images`` or ``diskimages`` by name (read by
    :class:`ImageLabel`), with the driver's ``extra`` keys.  With
    ``one_image`` (aws) naming both is refused; otherwise (azure, ibmvpc)
    both may be named, as upstream allows."""
    images: dict[Any, Any]
    if one_image:
        images = {v.Exclusive("cloud-image", "image"): str,
                  v.Exclusive("diskimage", "image"): str}
    else:
        images = {"cloud-image": str, "diskimage": str}
    return {v.Required("name"): str, **images, **extra}


def pool_schema(label: Any, extra: Mapping[Any, Any] | None = None) -> dict:
    """A ``pools`` entry: every pool's keys (:meth:`ConfigPool.schema`),
    its required ``labels`` (each of schema ``label``) and the driver's
    ``extra`` keys (which may replace a common key's schema)."""
    return {
        **ConfigPool.schema(),
        v.Required("labels"): [label],
        **(extra or {}),
    }


class CloudImage(LabelImage):
    """A ``cloud-images`` entry of :func:`cloud_image_schema`: an image
    that already exists in the cloud.  Drivers read how it is named."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.username = d["username"]
        self.load_connection(d)


class CloudDiskImage(ProviderDiskImage):
    """A provider's ``diskimages`` entry of :func:`diskimage_schema`: a
    diskimage the builder builds, as this provider takes it."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        super().__init__(d["name"])
        self.pause = bool(d.get("pause", False))
        self.load_connection(d)
        # The username of the top-level diskimage is taken during load
        # unless this is set (from the entry, by drivers whose schema has
        # ``username``).
        self._username: str | None = None


class ImageLabel(ConfigLabel):
    """A label of :func:`label_schema`: it boots the provider's cloud
    image or diskimage of the name it gives (bound by
    :meth:`CloudProviderConfig.load`)."""

    def __init__(self, d: Mapping[str, Any], pool: ConfigPool) -> None:
        super().__init__(d["name"], pool)
        # An empty name names no image: upstream's drivers test the value.
        self.cloud_image_name: str | None = d.get("cloud-image") or None
        self.diskimage_name: str | None = d.get("diskimage") or None


class CloudProviderConfig(ProviderConfig):
    """A provider whose labels (:class:`ImageLabel`) boot its own
    ``cloud-images`` or ``diskimages``, named in each label: ``load``
    checks every name and points the labels at their images."""

    # Filled by the driver (its own CloudImage subclass).
    cloud_images: Mapping[str, LabelImage]
    # The format the builder makes of diskimages for this provider.
    image_type: str | None = None

    def load(self, config: Config) -> None:
        errors: list[str] = []
        for name, image in self.diskimages.items():
            top = config.diskimages.get(name)
            if top is None:
                errors.append(f"diskimage {name!r} is not defined under the top-level "
                              "diskimages")
                continue
            self.adopt_diskimage(image, top)
        for pool in self.pools.values():
            for label in pool.labels.values():
                assert isinstance(label, ImageLabel)
                errors.extend(self._bind_image(pool, label))
                errors.extend(self.label_errors(label))
        if errors:
            raise ConfigError("; ".join(errors))
        self._register_pools(config)

    def adopt_diskimage(self, image: ProviderDiskImage, top: DiskImage) -> None:
        """Complete this provider's entry for a diskimage from the
        top-level diskimage of its name (called by ``load``)."""
        assert isinstance(image, CloudDiskImage)
        image.username = image._username or top.username

    def label_errors(self, label: ImageLabel) -> list[str]:
        """What the schema cannot refuse in one label of this provider
        (called by ``load`` once its image is bound)."""
        return []

    def _bind_image(self, pool: ConfigPool, label: ImageLabel) -> list[str]:
        def unlisted(key: str, name: str) -> list[str]:
            return [f"pool {pool.name!r} label {label.name!r} uses {key} {name!r}, which "
                    f"this provider's {key}s do not list"]

        if label.cloud_image_name is not None:
            label.cloud_image = self.cloud_images.get(label.cloud_image_name)
            if label.cloud_image is None:
                return unlisted("cloud-image", label.cloud_image_name)
        if label.diskimage_name is not None:
            label.diskimage = self.diskimages.get(label.diskimage_name)
            if label.diskimage is None:
                return unlisted("diskimage", label.diskimage_name)
        return []

    def diskimage_names(self) -> list[str]:
        return list(self.diskimages)

    def image_format(self, diskimage_name: str) -> str | None:
        return self.image_type
