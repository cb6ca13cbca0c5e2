"""Raw snapshots of nodepool's records for listings (CLI and web API).

Listings must show every record, including ones that fail to parse (the
operator needs to see and remove them), so these readers return the raw
bytes and leave parsing to :mod:`nodepool.status`.  They read with
:func:`nodepool.zk.multiread.read_many`: a few round trips for the whole
tree instead of one per znode.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kazoo.exceptions import NoNodeError

from nodepool.zk.multiread import GET_CHILDREN, GET_DATA, iter_many, read_many
from nodepool.zk.zookeeper import (
    COMPONENT_ROOT,
    IMAGE_ROOT,
    NODE_ROOT,
    REQUEST_ROOT,
    ZooKeeper,
    build_path,
    is_lock_child,
    node_lock_path,
    node_path,
    request_path,
    upload_path,
)


class RawRecord(NamedTuple):
    """One znode's id, payload and (for nodes) number of lock contenders."""

    id: str
    data: bytes | None
    lock_contenders: int = 0


@dataclass
class RawBuild:
    image: str
    id: str
    data: bytes | None
    ctime: float = 0.0


@dataclass
class RawUpload:
    image: str
    build_id: str
    provider: str
    id: str
    data: bytes | None


@dataclass
class RawImage:
    """An image's znodes: pause flag, manual build request and builds."""

    name: str
    paused: bool = False
    build_request_time: float | None = None
    build_lock_time: float | None = None
    builds: list[RawBuild] = field(default_factory=list)
    uploads: list[RawUpload] = field(default_factory=list)
    # build id -> providers that have an upload directory for it.
    build_providers: dict[str, list[str]] = field(default_factory=dict)


def _children(zk: ZooKeeper, path: str) -> list[str]:
    # Read like the records (see multiread): kazoo's own getChildren
    # decodes ten thousand node ids at a fraction of the speed.
    got = read_many(zk.kazoo, [(GET_CHILDREN, path)])[0]
    if isinstance(got, NoNodeError):
        return []
    if isinstance(got, Exception):
        raise got
    return got


def _ok(result: Any) -> bool:
    return not isinstance(result, Exception)


def read_nodes(zk: ZooKeeper, with_locks: bool = True,
               node_ids: list[str] | None = None) -> list[RawRecord]:
    """Every node (or those in ``node_ids``) with its lock contender count.

    Nodes that vanish between the listing and the read are left out.
    """
    return list(iter_nodes(zk, with_locks, node_ids))


def iter_nodes(zk: ZooKeeper, with_locks: bool = True,
               node_ids: list[str] | None = None) -> Iterator[RawRecord]:
    """:func:`read_nodes` as records arrive."""
    ids = node_ids if node_ids is not None else [
        c for c in _children(zk, NODE_ROOT) if not is_lock_child(c)]
    ops: list[tuple[int, str]] = []
    for node_id in ids:
        ops.append((GET_DATA, node_path(node_id)))
        if with_locks:
            ops.append((GET_CHILDREN, node_lock_path(node_id)))
    results = iter_many(zk.kazoo, ops, stats=False)
    for node_id in ids:
        got = next(results)
        contenders = 0
        if with_locks:
            lock_children = next(results)
            # Usually an empty list (unlocked), else the contenders' names,
            # or NoNodeError for a node never locked.
            if lock_children.__class__ is list and lock_children:
                contenders = sum(1 for c in lock_children if is_lock_child(c))
        if got.__class__ is tuple:
            yield RawRecord(node_id, got[0], contenders)


def read_requests(zk: ZooKeeper) -> list[RawRecord]:
    """Every node request's raw payload."""
    ids = _children(zk, REQUEST_ROOT)
    results = read_many(zk.kazoo, [(GET_DATA, request_path(i)) for i in ids])
    return [RawRecord(i, got[0]) for i, got in zip(ids, results, strict=True) if _ok(got)]


def read_images(zk: ZooKeeper, with_uploads: bool = True) -> list[RawImage]:
    """Every image with its flags, builds and (optionally) uploads, read
    level by level (five round trips whatever the number of images)."""
    names = sorted(_children(zk, IMAGE_ROOT))
    images = [RawImage(n) for n in names]
    level = read_many(zk.kazoo, [(GET_CHILDREN, f"{IMAGE_ROOT}/{n}") for n in names])
    ops: list[tuple[int, str]] = []
    wanted: list[tuple[str, RawImage]] = []
    for image, kids in zip(images, level, strict=True):
        if not _ok(kids):
            continue
        image.paused = "pause" in kids
        if "request-build" in kids:
            ops.append((GET_DATA, f"{IMAGE_ROOT}/{image.name}/request-build"))
            wanted.append(("request", image))
        if "builds" in kids:
            ops.append((GET_CHILDREN, build_path(image.name)))
            wanted.append(("builds", image))
            ops.append((GET_CHILDREN, f"{build_path(image.name)}/lock"))
            wanted.append(("lock", image))
    build_ids: dict[str, list[str]] = {}
    lock_holders: dict[str, str] = {}
    for (what, image), got in zip(wanted, read_many(zk.kazoo, ops), strict=True):
        if not _ok(got):
            continue
        if what == "request":
            image.build_request_time = got[1].created
        elif what == "builds":
            build_ids[image.name] = [b for b in got if b != "lock" and not is_lock_child(b)]
        else:
            contenders = sorted((c for c in got if is_lock_child(c)),
                                key=lambda c: c.rsplit("__lock__", 1)[1])
            if contenders:
                lock_holders[image.name] = contenders[0]

    # Build records, the holder of each image's build lock (its creation
    # time tells a waiting build request from a running build), and the
    # providers each build was uploaded to.
    ops = []
    wanted2: list[tuple[str, RawImage, str]] = []
    for image in images:
        for build_id in build_ids.get(image.name, []):
            ops.append((GET_DATA, build_path(image.name, build_id)))
            wanted2.append(("build", image, build_id))
            if with_uploads:
                ops.append((GET_CHILDREN, f"{build_path(image.name, build_id)}/providers"))
                wanted2.append(("providers", image, build_id))
        holder = lock_holders.get(image.name)
        if holder:
            ops.append((GET_DATA, f"{build_path(image.name)}/lock/{holder}"))
            wanted2.append(("lock", image, ""))
    providers: list[tuple[RawImage, str, str]] = []
    for (what, image, build_id), got in zip(wanted2, read_many(zk.kazoo, ops), strict=True):
        if not _ok(got):
            continue
        if what == "build":
            image.builds.append(RawBuild(image.name, build_id, got[0], got[1].created))
        elif what == "providers":
            image.build_providers[build_id] = sorted(got)
            providers.extend((image, build_id, p) for p in sorted(got))
        else:
            image.build_lock_time = got[1].created
    if not with_uploads or not providers:
        return images

    listing = read_many(zk.kazoo, [(GET_CHILDREN, upload_path(i.name, b, p))
                                   for i, b, p in providers])
    ops = []
    wanted3: list[tuple[RawImage, str, str, str]] = []
    for (image, build_id, provider), kids in zip(providers, listing, strict=True):
        if not _ok(kids):
            continue
        for upload_id in kids:
            if upload_id == "lock" or is_lock_child(upload_id):
                continue
            ops.append((GET_DATA, upload_path(image.name, build_id, provider, upload_id)))
            wanted3.append((image, build_id, provider, upload_id))
    for (image, build_id, provider, upload_id), got in zip(
            wanted3, read_many(zk.kazoo, ops), strict=True):
        if _ok(got):
            image.uploads.append(RawUpload(image.name, build_id, provider, upload_id, got[0]))
    return images


def read_components(zk: ZooKeeper, kind: str) -> list[RawRecord]:
    """Registered components of one kind (``launcher``, ``pool``, ``builder``)."""
    root = f"{COMPONENT_ROOT}/{kind}"
    names = _children(zk, root)
    results = read_many(zk.kazoo, [(GET_DATA, f"{root}/{n}") for n in names])
    return [RawRecord(n, got[0]) for n, got in zip(names, results, strict=True) if _ok(got)]
