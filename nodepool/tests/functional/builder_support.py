"""Shared pieces of the builder tests: configuration builders, a builder
factory fixture, and a recorder of every image record state seen."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool.zk.cache import ImageCache
from nodepool.zk.models import ImageBuild, ImageUpload

FAKE_DIB = str(Path(__file__).resolve().parent.parent / "fake-image-create")


def base_config(zk_info: Any, root: Path, **top: Any) -> dict[str, Any]:
    """A builder configuration with no images or providers yet."""
    host, port = zk_info.host, zk_info.port
    config: dict[str, Any] = {
        "zookeeper-servers": [{"host": host, "port": port, "chroot": zk_info.chroot}],
        "zookeeper-tls": {"ca": zk_info.ca, "cert": zk_info.cert, "key": zk_info.key},
        "images-dir": str(root / "images"),
        "build-log-dir": str(root / "logs"),
        "labels": [],
        "diskimages": [],
        "providers": [],
    }
    config.update(top)
    return config


def diskimage(name: str = "fake-image", **keys: Any) -> dict[str, Any]:
    """A diskimage built by the fake DIB; keyword names use underscores
    for dashes (``rebuild_age=5``)."""
    d: dict[str, Any] = {"name": name, "dib-cmd": FAKE_DIB, "elements": ["fedora", "vm"],
                         "release": 21}
    d.update({k.replace("_", "-"): v for k, v in keys.items()})
    return d


def provider(name: str = "fake-provider", images: tuple[str, ...] = ("fake-image",),
             image_keys: dict[str, dict[str, Any]] | None = None,
             **keys: Any) -> dict[str, Any]:
    """A fake-cloud provider uploading ``images``; ``image_keys`` adds
    provider-diskimage settings (``{"fake-image": {"pause": True}}``)."""
    image_keys = image_keys or {}
    d: dict[str, Any] = {"name": name, "cloud": "fake",
                         "diskimages": [{"name": i, **image_keys.get(i, {})} for i in images]}
    d.update({k.replace("_", "-"): v for k, v in keys.items()})
    return d


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write atomically with a new mtime, so a running builder reloads it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    os.replace(tmp, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


FAST: dict[str, Any] = dict(build_interval=1.0, upload_interval=1.0, cleanup_interval=0.5,
            config_check_interval=0.05, retry_delay=0.5, upload_attempt_delay=0.05,
            min_free_space=0)


@pytest.fixture
def builder_factory(tmp_path: Path, fake_cloud_reset: None) -> Iterator[Any]:
    """start(config, name=..., **kwargs) -> a running NodePoolBuilder (in
    this process, short intervals); all are stopped after the test."""
    from nodepool.builder import NodePoolBuilder

    started: list[NodePoolBuilder] = []

    def start(config: dict[str, Any], name: str = "nodepool.yaml",
              **kwargs: Any) -> NodePoolBuilder:
        path = tmp_path / name
        write_config(path, config)
        options = dict(FAST)
        options.update(kwargs)
        builder = NodePoolBuilder(str(path), **options)
        builder.start()
        started.append(builder)
        return builder

    yield start
    for builder in started:
        builder.stop()


class ImageRecorder:
    """Every (key, state) an image cache saw, in order, so tests can assert
    on states that cleanup removes quickly (``failed``) and count builds."""

    def __init__(self, zk: Any) -> None:
        self.cache = ImageCache(zk)
        self.lock = threading.Lock()
        self.events: list[tuple[tuple, str | None]] = []
        self.cache.add_listener(self._record)
        self.cache.start()
        self.cache.wait_synced(10)

    def _record(self, key: tuple, old: Any, new: Any) -> None:
        with self.lock:
            self.events.append((key, new.state if new is not None else None))

    def states(self, key: tuple) -> list[str | None]:
        with self.lock:
            return [s for k, s in self.events if k == key]

    def build_ids(self, image: str, state: str | None = None) -> set[str]:
        """Ids of builds of ``image`` ever seen (in ``state``)."""
        with self.lock:
            return {k[1] for k, s in self.events
                    if len(k) == 2 and k[0] == image and (state is None or s == state)}

    def upload_keys(self, image: str, provider: str, state: str | None = None) -> set[tuple]:
        with self.lock:
            return {k for k, s in self.events
                    if len(k) == 4 and k[0] == image and k[2] == provider
                    and (state is None or s == state)}

    def builds(self, image: str) -> list[ImageBuild]:
        return self.cache.builds(image)

    def uploads(self, image: str, provider: str) -> list[ImageUpload]:
        return self.cache.uploads(image, provider)

    def stop(self) -> None:
        self.cache.stop()


@pytest.fixture
def images(zk: Any) -> Iterator[ImageRecorder]:
    recorder = ImageRecorder(zk)
    yield recorder
    recorder.stop()
