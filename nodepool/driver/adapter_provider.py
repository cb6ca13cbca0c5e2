"""The Provider every adapter-based cloud driver shares.

It owns what is the same for every cloud: a thread pool of launches, the
quota arithmetic (cloud limits minus what others use, pool limits, what
our own nodes use), image availability, node deletion, and leak cleanup
with two sightings in two listings (:mod:`nodepool.driver.sightings`).
Drivers supply only an :class:`Adapter`.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nodepool import stats as statsmod
from nodepool.driver import Provider
from nodepool.driver.adapter import (
    META_BUILD_ID,
    META_NODE_ID,
    META_PROVIDER,
    META_UPLOAD_ID,
    Adapter,
    Resource,
)
from nodepool.driver.launch import LaunchHandle, NodeLauncher
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.sightings import Sightings
from nodepool.exceptions import NotFound, RuntimeConfigurationException
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.provider")

QUOTA_CACHE_SECONDS = 300
UNMANAGED_CACHE_SECONDS = 60
LABEL_READY_CACHE_SECONDS = 300


class AdapterProvider(Provider):
    """A Provider driven by an Adapter."""

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self._adapter: Adapter | None = None
        self.zk: Any = None
        self.node_cache: Any = None
        self.image_cache: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._limits: tuple[float, QuotaInformation] | None = None
        self._unmanaged: tuple[float, QuotaInformation] | None = None
        self._label_quota: dict[str, QuotaInformation] = {}
        self._label_errors: dict[str, str] = {}
        self._label_ready: dict[str, tuple[float, bool]] = {}
        # Capacity promised to launches whose node records the node cache
        # does not show yet: token -> [pool name, quota, when, node id].
        # Entries expire in case a record vanished before the cache ever
        # showed it.
        self._pending: dict[int, list] = {}
        self._tokens = itertools.count()
        self._leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._image_leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._launches: set[LaunchHandle] = set()
        self._vanished_sightings: Sightings[str] = Sightings()
        self.running = False

    # Lifecycle ----------------------------------------------------------

    @property
    def adapter(self) -> Adapter:
        if self._adapter is None:
            raise RuntimeError(f"provider {self.provider.name} is not started")
        return self._adapter

    def make_adapter(self) -> Adapter:
        raise NotImplementedError

    def start(self, zk: Any, node_cache: Any = None, image_cache: Any = None) -> None:
        self.zk = zk
        self.node_cache = node_cache
        self.image_cache = image_cache
        self._adapter = self.make_adapter()
        concurrency = self.provider.max_concurrency
        workers = concurrency if concurrency and concurrency > 0 else 256
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"Launch.{self.provider.name}")
        self.running = True

    def stop(self) -> None:
        self.running = False
        for handle in list(self._launches):
            handle.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=False)
        if self._adapter is not None:
            try:
                self._adapter.stop()
            except Exception:
                log.exception("Error stopping adapter of %s", self.provider.name)

    def join(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    @property
    def can_launch(self) -> bool:
        return True

    def launches_in_flight(self) -> int:
        return len(self._launches)

    def check_reusable(self, node: Node) -> bool:
        """Whether a ready node may be handed out again (static hosts
        check liveness here)."""
        return True

    # Labels and images ----------------------------------------------------

    def hostname_for(self, node: Node) -> str:
        fmt = getattr(self.provider, "hostname_format", None) or "np{node.id}"
        try:
            return fmt.format(node=node, provider=self.provider)
        except (KeyError, AttributeError, IndexError):
            return f"np{node.id}"

    def quota_for_label(self, label: Any) -> QuotaInformation:
        """What one node of ``label`` uses (cached; flavors rarely change).
        Raises RuntimeConfigurationException for a label that cannot work."""
        name = label.name
        if name in self._label_errors:
            raise RuntimeConfigurationException(self._label_errors[name])
        quota = self._label_quota.get(name)
        if quota is None:
            try:
                quota = self.adapter.get_quota_for_label(label)
            except RuntimeConfigurationException as e:
                self._label_errors[name] = str(e)
                raise
            self._label_quota[name] = quota
        return quota

    def label_error(self, label: Any) -> str | None:
        """Why a label can never be served, or None."""
        try:
            self.quota_for_label(label)
        except RuntimeConfigurationException as e:
            return str(e)
        except Exception:
            log.exception("Error computing quota of label %s", label.name)
            return None
        return None

    def image_external_id(self, label: Any) -> tuple[str | None, str | None]:
        """(cloud image id to boot, value for the node's ``image_id``);
        (None, None) when the image is not available."""
        if getattr(label, "diskimage", None) is not None:
            upload = None
            if self.image_cache is not None:
                upload = self.image_cache.latest_upload(label.diskimage.name,
                                                        self.provider.name)
            elif self.zk is not None:
                upload = self.zk.most_recent_upload(label.diskimage.name,
                                                    self.provider.name)
            if upload is None or not upload.external_id:
                return None, None
            return upload.external_id, upload.path
        cloud_image = getattr(label, "cloud_image", None)
        if cloud_image is not None:
            return cloud_image.external_name, cloud_image.name
        return None, None

    def label_ready(self, label: Any) -> bool:
        if getattr(label, "diskimage", None) is not None:
            return self.image_external_id(label)[0] is not None
        cached = self._label_ready.get(label.name)
        now = time.monotonic()
        if cached is not None and (cached[1] or now - cached[0] < LABEL_READY_CACHE_SECONDS):
            return cached[1]
        try:
            ready = self.adapter.label_ready(label)
        except Exception:
            log.exception("Could not check image of label %s", label.name)
            ready = cached[1] if cached else True
        self._label_ready[label.name] = (now, ready)
        return ready

    def get_azs(self) -> list[str | None]:
        try:
            return self.adapter.get_azs() or [None]
        except Exception:
            log.exception("Could not list availability zones of %s", self.provider.name)
            return [None]

    def choose_az(self, pool: Any) -> str | None:
        azs = pool.azs or self.get_azs()
        return random.choice(azs) if azs else None

    # Quota --------------------------------------------------------------

    def invalidate_quota(self) -> None:
        with self._lock:
            self._limits = None
            self._unmanaged = None

    def _cloud_limits(self) -> QuotaInformation:
        now = time.monotonic()
        with self._lock:
            cached = self._limits
        if cached is not None and now - cached[0] < QUOTA_CACHE_SECONDS:
            return cached[1]
        try:
            limits = self.adapter.get_quota_limits()
        except Exception:
            log.exception("Could not read quota limits of %s", self.provider.name)
            return cached[1] if cached else QuotaInformation()
        with self._lock:
            self._limits = (now, limits)
        return limits

    def _unmanaged_usage(self) -> QuotaInformation:
        """What servers that are not ours (by metadata and ZooKeeper) use."""
        now = time.monotonic()
        with self._lock:
            cached = self._unmanaged
        if cached is not None and now - cached[0] < UNMANAGED_CACHE_SECONDS:
            return cached[1]
        try:
            instances = self.adapter.list_instances()
        except Exception:
            log.exception("Could not list servers of %s", self.provider.name)
            return cached[1] if cached else QuotaInformation()
        used = QuotaInformation()
        for instance in instances:
            meta = instance.metadata or {}
            ours = (meta.get(META_PROVIDER) == self.provider.name
                    and self._node_known(meta.get(META_NODE_ID)))
            if not ours:
                used.add(instance.quota or QuotaInformation(instances=1))
        with self._lock:
            self._unmanaged = (now, used)
        return used

    def _node_known(self, node_id: str | None) -> bool:
        if not node_id:
            return False
        if self._pending_node(node_id):
            return True
        if self.node_cache is not None:
            return self.node_cache.get(node_id) is not None
        return self.zk.get_node(node_id) is not None

    def _pending_node(self, node_id: str) -> bool:
        with self._lock:
            return any(entry[3] == node_id for entry in self._pending.values())

    def node_quota(self, node: Node) -> QuotaInformation:
        if node.resources:
            return QuotaInformation({k: v for k, v in node.resources.items()
                                     if isinstance(v, (int, float))})
        for pool in self.provider.pools.values():
            for label_name in node.type:
                label = pool.labels.get(label_name)
                if label is not None:
                    try:
                        return self.quota_for_label(label)
                    except Exception:
                        break
        return QuotaInformation(instances=1)

    def reserve(self, pool_name: str, quota: QuotaInformation) -> int:
        """Count a node about to be created until the node cache shows it;
        returns a token for :meth:`bind`."""
        token = next(self._tokens)
        with self._lock:
            self._pending[token] = [pool_name, quota, time.monotonic(), None]
        return token

    def bind(self, token: int, node_id: str) -> None:
        """The reserved node now has a record with this id."""
        with self._lock:
            entry = self._pending.get(token)
            if entry is not None:
                entry[3] = node_id

    def unreserve(self, token: int) -> None:
        with self._lock:
            self._pending.pop(token, None)


    def _usage(self, nodes: list[Node], pool: Any | None) -> QuotaInformation:
        used = QuotaInformation()
        seen = set()
        for node in nodes:
            if node.provider != self.provider.name:
                continue
            if pool is not None and node.pool != pool.name:
                continue
            seen.add(node.id)
            used.add(self.node_quota(node))
        with self._lock:
            stale = time.monotonic() - 60
            for token in [t for t, e in self._pending.items()
                          if e[3] in seen or e[2] < stale]:
                del self._pending[token]
            for pool_name, quota, _, _ in self._pending.values():
                if pool is None or pool_name == pool.name:
                    used.add(quota)
        return used

    def pool_limits(self, pool: Any) -> QuotaInformation:
        return QuotaInformation.for_limits(
            instances=pool.max_servers if pool.max_servers != math.inf else None,
            cores=getattr(pool, "max_cores", math.inf),
            ram=getattr(pool, "max_ram", math.inf),
            volumes=getattr(pool, "max_volumes", math.inf),
            **{"volume-gb": getattr(pool, "max_volume_gb", math.inf)})

    def available_quota(self, pool: Any, nodes: list[Node]) -> QuotaInformation:
        """Room for new nodes in ``pool`` right now."""
        pool_room = self.pool_limits(pool).subtract(self._usage(nodes, pool))
        if pool.ignore_provider_quota:
            return pool_room
        cloud_room = self._cloud_limits().copy()
        cloud_room.subtract(self._unmanaged_usage())
        cloud_room.subtract(self._usage(nodes, None))
        return pool_room.min_with(cloud_room)

    def can_ever_fit(self, pool: Any, need: QuotaInformation) -> bool:
        """Whether a request needing ``need`` could fit an empty pool."""
        limits = self.pool_limits(pool)
        if not pool.ignore_provider_quota:
            limits = limits.min_with(self._cloud_limits())
        return limits.fits(need)

    # Launch and delete ---------------------------------------------------

    def launch(self, node: Node, label: Any, pool: Any, request: Any,
               image_external_id: str | None, on_done: Any = None,
               reservation: int | None = None) -> LaunchHandle:
        """Start launching a node in the background.

        ``node`` is either a locked ``building`` record, or a new one
        without an id: its record is then created (``init``, locked,
        ``building``) by the launch thread, so the caller does not wait
        for those round trips.
        """
        handle = LaunchHandle(node)
        self._launches.add(handle)

        def done(h: LaunchHandle) -> None:
            self._launches.discard(h)
            if on_done is not None:
                on_done(h)

        launcher = NodeLauncher(
            provider=self, adapter=self.adapter, zk=self.zk, node=node, label=label,
            pool=pool, request=request, image_external_id=image_external_id,
            handle=handle, retries=getattr(self.provider, "launch_retries", 3),
            launch_timeout=getattr(self.provider, "launch_timeout", 3600),
            boot_timeout=getattr(self.provider, "boot_timeout", 60),
            session_generation=self.zk.zk_client.session_generation, on_done=done,
            reservation=reservation)
        assert self._executor is not None
        self._executor.submit(launcher.run)
        return handle

    def delete_node(self, node: Node) -> None:
        """Delete the node's server (if any) and wait until it is gone."""
        if node.external_id is None:
            return
        try:
            self.adapter.delete_instance(node.external_id, log)
        except NotFound:
            pass
        self.invalidate_unmanaged()

    def invalidate_unmanaged(self) -> None:
        with self._lock:
            self._unmanaged = None

    # Leaks --------------------------------------------------------------

    def cleanup_leaked_resources(self) -> dict[str, int]:
        """Delete resources tagged as ours whose records are gone, once
        two listings of the cloud have shown them leaked (see
        :mod:`nodepool.driver.sightings`).

        Uploaded images are left out: the builder owns them and cleans
        their leaks (:meth:`cleanup_leaked_images`), so a leaked image is
        only ever deleted by one kind of daemon.
        """
        listing, requested_at, answered_at = self._leak_sightings.look(
            self.adapter.list_resources)
        resources = [r for r in listing if r.type != "image"]
        counts = self._delete_leaked(resources, self._leak_sightings,
                                     requested_at, answered_at)
        try:
            for plural, count in self.adapter.cleanup_extra(log).items():
                counts[plural] = counts.get(plural, 0) + count
        except Exception:
            log.exception("Error in driver cleanup of %s", self.provider.name)
        self._report_leaks(counts)
        return counts

    def vanished_nodes(self, nodes: list[Node]) -> list[str]:
        """Ids of ready, unallocated nodes of this provider whose server is
        gone from the cloud (deleted behind our back), missing from two
        listings of the cloud, so they are not handed out dead.

        The listing is the leak sweep's (:meth:`Adapter.list_resources`),
        which is never served from a cache, rather than
        :meth:`Adapter.list_instances`, which may be.
        """
        listing, requested_at, answered_at = self._vanished_sightings.look(
            self.adapter.list_resources)
        existing = {str(r.id) for r in listing if r.type == "instance"}
        missing = {str(n.id) for n in nodes
                   if n.provider == self.provider.name and n.state == models.READY
                   and n.allocated_to is None and not n.locked
                   and n.external_id is not None and str(n.external_id) not in existing}
        return sorted(self._vanished_sightings.confirm(missing, requested_at, answered_at))

    def cleanup_leaked_images(self) -> dict[str, int]:
        """Delete cloud images tagged with our build and upload ids whose
        upload records are gone, once two listings have shown them
        leaked (the builder calls this for the providers it uploads to)."""
        images, requested_at, answered_at = self._image_leak_sightings.look(
            self.adapter.list_images)
        resources = [Resource("image", i.id, dict(i.metadata or {}), i.name) for i in images]
        counts = self._delete_leaked(resources, self._image_leak_sightings,
                                     requested_at, answered_at)
        self._report_leaks(counts)
        return counts

    def _delete_leaked(self, resources: list[Resource],
                       sightings: Sightings[tuple[str, str]],
                       requested_at: float, answered_at: float) -> dict[str, int]:
        """Record which of ``resources`` (one listing, requested and
        answered at those monotonic times) are leaked, and delete those
        an earlier listing showed leaked too; returns the counts deleted
        by plural type name."""
        leaked: dict[tuple[str, str], Resource] = {}
        for resource in resources:
            meta = resource.metadata or {}
            if meta.get(META_PROVIDER) != self.provider.name:
                continue
            if self._is_leaked(resource.type, meta):
                leaked[(resource.type, resource.id)] = resource
        counts: dict[str, int] = {}
        for key in sorted(sightings.confirm(leaked, requested_at, answered_at)):
            resource = leaked[key]
            log.info("Deleting leaked %s %s (%s) in %s", resource.type, resource.id,
                     resource.name, self.provider.name)
            try:
                if resource.type == "image":
                    self._delete_image_quietly(resource.id)
                else:
                    self.adapter.delete_resource(resource)
                counts[resource.plural] = counts.get(resource.plural, 0) + 1
            except Exception:
                log.exception("Could not delete leaked %s %s", resource.type, resource.id)
        return counts

    def _delete_image_quietly(self, external_id: str) -> None:
        try:
            self.adapter.delete_image(external_id)
        except NotFound:
            pass

    def _report_leaks(self, counts: dict[str, int]) -> None:
        stats = statsmod.get_stats()
        for plural, count in counts.items():
            stats.incr(f"nodepool.provider.{self.provider.name}.leaked.{plural}", count)

    def _is_leaked(self, rtype: str, meta: dict[str, Any]) -> bool:
        if rtype == "image":
            build_id, upload_id = meta.get(META_BUILD_ID), meta.get(META_UPLOAD_ID)
            if not build_id or not upload_id:
                return False
            return not self._upload_known(meta.get("nodepool_image_name"),
                                          build_id, upload_id)
        node_id = meta.get(META_NODE_ID)
        if not node_id:
            return False
        if self._pending_node(node_id):
            return False
        # Ask ZooKeeper, not the cache: a leak verdict must not be stale.
        return self.zk.get_node(node_id) is None

    def _upload_known(self, image_name: str | None, build_id: str, upload_id: str) -> bool:
        images = [image_name] if image_name else self.zk.image_names()
        for image in images:
            if self.zk.get_upload(image, build_id, self.provider.name, upload_id):
                return True
        return False

    # Images (builder) -----------------------------------------------------

    def upload_image(self, **kwargs: Any) -> str:
        return self.adapter.upload_image(**kwargs)

    def delete_image(self, external_id: str) -> None:
        self.adapter.delete_image(external_id)

    def list_images(self) -> list:
        return self.adapter.list_images()
