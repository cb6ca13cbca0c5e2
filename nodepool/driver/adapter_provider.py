"""The Provider every adapter-based cloud driver shares.

It owns what is the same for every cloud: launches advanced in short steps
on one small pool of threads (:mod:`nodepool.driver.launch`), the quota
arithmetic (cloud limits minus what others use, pool limits, what
our own nodes use), image availability, node deletion, and leak cleanup
with two sightings in two listings (:mod:`nodepool.driver.sightings`).
Drivers supply only an :class:`Adapter`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from nodepool import metrics
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
from nodepool.driver.launch import READY, Launch, LaunchHandle
from nodepool.driver.launch_errors import LaunchErrorLog, LaunchFailure
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.quota_ledger import QuotaLedger, Reservation
from nodepool.driver.runner import StepRunner
from nodepool.driver.sightings import Sightings
from nodepool.exceptions import (
    NotFound,
    ProviderStopped,
    RuntimeConfigurationException,
    ServerDeleteTimeout,
)
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.provider")

QUOTA_CACHE_SECONDS = 300
UNMANAGED_CACHE_SECONDS = 60
LABEL_READY_CACHE_SECONDS = 300
# How long a deleted server may take to disappear.
DELETE_TIMEOUT = 600.0


class AdapterProvider(Provider):
    """A Provider driven by an Adapter."""

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self._adapter: Adapter | None = None
        self.zk: Any = None
        self.node_cache: Any = None
        self.image_cache: Any = None
        self._runner: StepRunner | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._limits: tuple[float, QuotaInformation] | None = None
        self._unmanaged: tuple[float, QuotaInformation] | None = None
        self._label_quota: dict[str, QuotaInformation] = {}
        self._label_errors: dict[str, str] = {}
        self._label_ready: dict[str, tuple[float, bool]] = {}
        self.quota = QuotaLedger(provider_config.name, self.node_quota)
        self._leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._image_leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._launches: dict[LaunchHandle, Launch] = {}
        self._vanished_sightings: Sightings[str] = Sightings()
        self._launch_errors = LaunchErrorLog()
        self.running = False

    # Lifecycle ----------------------------------------------------------

    @property
    def adapter(self) -> Adapter:
        if self._adapter is None:
            raise RuntimeError(f"provider {self.provider.name} is not started")
        return self._adapter

    @property
    def runner(self) -> StepRunner:
        if self._runner is None:
            raise RuntimeError(f"provider {self.provider.name} is not started")
        return self._runner

    def make_adapter(self) -> Adapter:
        """The driver's adapter for this provider's configuration."""
        raise NotImplementedError

    def start(self, zk: Any, node_cache: Any = None, image_cache: Any = None) -> None:
        self.zk = zk
        self.node_cache = node_cache
        self.quota.node_cache = node_cache
        self.image_cache = image_cache
        self._adapter = self.make_adapter()
        self._runner = StepRunner(self.provider.name)
        self.running = True

    def stop(self) -> None:
        """Stop launching: launches in flight are left as their records
        say, for whichever launcher takes their nodes over."""
        self.running = False
        self._stopped.set()
        if self._runner is not None:
            self._runner.stop()
        if self._adapter is not None:
            try:
                self._adapter.stop()
            except Exception:
                log.exception("Error stopping adapter of %s", self.provider.name)

    def join(self) -> None:
        if self._runner is not None:
            self._runner.join(10)
        with self._lock:
            left = list(self._launches.values())
        for launch in left:
            launch.abandon_now()

    def launches_in_flight(self) -> int:
        with self._lock:
            return len(self._launches)

    def launch_finished(self, handle: LaunchHandle) -> None:
        """Called by a launch when it ends, whatever the outcome."""
        with self._lock:
            launch = self._launches.pop(handle, None)
        if handle.state != READY:
            # Bookkeeping for operators must never break the launch's end.
            try:
                self._record_failure(handle, launch or handle.launch)
            except Exception:
                log.exception("Could not record the failed launch of node %s",
                              handle.node.id)

    def _record_failure(self, handle: LaunchHandle, launch: Launch | None) -> None:
        node = handle.node
        request = launch.request if launch is not None else None
        self._launch_errors.add(
            node_id=node.id, labels=list(node.type), pool=node.pool, outcome=handle.state,
            error=handle.error, request_id=request.id if request is not None else None)

    def recent_launch_errors(self) -> list[LaunchFailure]:
        return self._launch_errors.latest()

    def check_reusable(self, node: Node) -> bool:
        return True

    # Labels and images ----------------------------------------------------

    def hostname_for(self, node: Node) -> str:
        fmt = self.provider.hostname_format
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
        if label.diskimage is not None:
            upload = None
            # An upload awaiting its check (or failing it) is never
            # booted for a request: the one before it serves meanwhile.
            if self.image_cache is not None:
                upload = self.image_cache.serving_upload(label.diskimage.name,
                                                         self.provider.name)
            elif self.zk is not None:
                upload = self.zk.serving_upload(label.diskimage.name, self.provider.name)
            if upload is None or not upload.external_id:
                return None, None
            return upload.external_id, upload.path
        cloud_image = label.cloud_image
        if cloud_image is not None:
            return cloud_image.external_name, cloud_image.name
        return None, None

    def label_ready(self, label: Any) -> bool:
        if label.diskimage is not None:
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
        if self.quota.is_reserved(node_id):
            return True
        if self.node_cache is not None:
            return self.node_cache.get(node_id) is not None
        return self.zk.get_node(node_id) is not None

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

    def quota_in_use(self, pool: Any) -> QuotaInformation:
        return self.quota.usage(pool.name)

    def known_cloud_limits(self) -> QuotaInformation | None:
        with self._lock:
            cached = self._limits
        return cached[1].copy() if cached is not None else None

    def reserve(self, pool_name: str, quota: QuotaInformation) -> Reservation:
        return self.quota.reserve(pool_name, quota)

    def release(self, reservation: Reservation | None) -> None:
        self.quota.release(reservation)

    def available_quota(self, pool: Any) -> QuotaInformation:
        """Room for new nodes in ``pool`` right now."""
        pool_room = pool.limits().subtract(self.quota.usage(pool.name))
        if pool.ignore_provider_quota:
            return pool_room
        cloud_room = self._cloud_limits().copy()
        cloud_room.subtract(self._unmanaged_usage())
        cloud_room.subtract(self.quota.usage())
        return pool_room.min_with(cloud_room)

    def can_ever_fit(self, pool: Any, need: QuotaInformation) -> bool:
        """Whether a request needing ``need`` could fit an empty pool."""
        limits = pool.limits()
        if not pool.ignore_provider_quota:
            limits = limits.min_with(self._cloud_limits())
        return limits.fits(need)

    # Launch and delete ---------------------------------------------------

    def launch(self, node: Node, label: Any, pool: Any, request: Any,
               image_external_id: str | None, on_done: Any = None,
               reservation: Reservation | None = None,
               ready_state: str = models.READY) -> LaunchHandle:
        handle = LaunchHandle(node)
        launch = Launch(provider=self, node=node, label=label, pool=pool, request=request,
                        image_external_id=image_external_id, handle=handle,
                        on_done=on_done, reservation=reservation, ready_state=ready_state)
        self._start(handle, launch)
        return handle

    def resume_launch(self, node: Node, label: Any, pool: Any, request: Any,
                      on_done: Any = None) -> LaunchHandle:
        handle = LaunchHandle(node)
        image_external_id = None
        if node.launch_progress is None or not node.external_id:
            image_external_id = self.image_external_id(label)[0]
        launch = Launch(provider=self, node=node, label=label, pool=pool, request=request,
                        image_external_id=image_external_id, handle=handle, on_done=on_done)
        launch.resume_from_record()
        self._start(handle, launch)
        return handle

    def _start(self, handle: LaunchHandle, launch: Launch) -> None:
        with self._lock:
            self._launches[handle] = launch
        try:
            self.runner.add(launch)
        except RuntimeError:
            launch.abandon_now()

    def delete_node(self, node: Node) -> None:
        """Delete the node's server (if any) and wait until it is gone."""
        if node.external_id is None:
            return
        op = self.adapter.delete(node.external_id)
        deadline = time.monotonic() + DELETE_TIMEOUT
        pause = 0.02
        while True:
            try:
                if op.advance():
                    break
            except NotFound:
                break
            if time.monotonic() >= deadline:
                raise ServerDeleteTimeout(f"server {node.external_id} still exists "
                                          f"{DELETE_TIMEOUT:.0f} s after deleting it")
            wait = op.poll_after if op.poll_after is not None else pause
            pause = min(pause * 2, self.adapter.poll_interval)
            if self._stopped.wait(wait):
                raise ProviderStopped(f"provider {self.provider.name} stopped while "
                                      f"deleting server {node.external_id}")
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
        image_type = self.adapter.image_resource_type
        resources = [r for r in listing if r.type != image_type]
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
        resource_id = self.adapter.node_resource_id
        missing = {str(n.id) for n in nodes
                   if n.provider == self.provider.name and n.state == models.READY
                   and n.allocated_to is None and not n.locked
                   and n.external_id is not None
                   and resource_id(n.external_id) not in existing}
        return sorted(self._vanished_sightings.confirm(missing, requested_at, answered_at))

    def cleanup_leaked_images(self) -> dict[str, int]:
        """Delete cloud images tagged with our build and upload ids whose
        upload records are gone, once two listings have shown them
        leaked (the builder calls this for the providers it uploads to)."""
        images, requested_at, answered_at = self._image_leak_sightings.look(
            self.adapter.list_images)
        image_type = self.adapter.image_resource_type
        resources = [Resource(image_type, i.id, dict(i.metadata or {}), i.name)
                     for i in images]
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
                if resource.type == self.adapter.image_resource_type:
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
            stats.incr(metrics.PROVIDER_LEAKED.key(provider=self.provider.name, type=plural),
                       count)

    def _is_leaked(self, rtype: str, meta: dict[str, Any]) -> bool:
        build_id, upload_id = meta.get(META_BUILD_ID), meta.get(META_UPLOAD_ID)
        if rtype == self.adapter.image_resource_type or (
                build_id and upload_id and not meta.get(META_NODE_ID)):
            # An image, or what an upload left beside it (its snapshot,
            # the object it was imported from): leaked when the upload's
            # record is gone.
            if not build_id or not upload_id:
                return False
            return not self._upload_known(meta.get("nodepool_image_name"),
                                          build_id, upload_id)
        node_id = meta.get(META_NODE_ID)
        if not node_id:
            return False
        if self.quota.is_reserved(node_id):
            return False
        # Ask ZooKeeper, not the cache: a leak verdict must not be stale.
        # A record we cannot read (a newer writer's) still owns its server.
        return not self.zk.node_exists(node_id)

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
