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

from nodepool.driver import Provider
from nodepool.driver.adapter import (
    Adapter,
)
from nodepool.driver.cloud_quota import CloudQuota
from nodepool.driver.launch import READY, Launch, LaunchHandle
from nodepool.driver.launch_errors import LaunchErrorLog, LaunchFailure
from nodepool.driver.leaks import LeakSweeper
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.quota_ledger import QuotaLedger, Reservation
from nodepool.driver.runner import StepRunner
from nodepool.exceptions import (
    NotFound,
    ProviderStopped,
    RuntimeConfigurationException,
    ServerDeleteTimeout,
)
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.provider")

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
        self._label_quota: dict[str, QuotaInformation] = {}
        self._label_errors: dict[str, str] = {}
        self._label_ready: dict[str, tuple[float, bool]] = {}
        self.quota = QuotaLedger(provider_config.name, self.node_quota)
        self._launches: dict[LaunchHandle, Launch] = {}
        self.cloud_quota = CloudQuota(provider_config.name, lambda: self.adapter,
                                      self._node_known)
        self.leaks: LeakSweeper | None = None
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
        self.leaks = LeakSweeper(self.provider.name, lambda: self.adapter, zk,
                                 self.quota.is_reserved)
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
        self.cloud_quota.invalidate()

    def _node_known(self, node_id: str) -> bool:
        """Whether a server tagged with ``node_id`` is one of our nodes."""
        if self.quota.is_reserved(node_id):
            return True
        if self.node_cache is not None:
            return self.node_cache.get(node_id) is not None
        return self.zk.node_exists(node_id)

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
        return self.cloud_quota.known_limits()

    def reserve(self, pool_name: str, quota: QuotaInformation) -> Reservation:
        return self.quota.reserve(pool_name, quota)

    def release(self, reservation: Reservation | None) -> None:
        self.quota.release(reservation)

    def available_quota(self, pool: Any) -> QuotaInformation:
        """Room for new nodes in ``pool`` right now."""
        pool_room = pool.limits().subtract(self.quota.usage(pool.name))
        if pool.ignore_provider_quota:
            return pool_room
        cloud_room = self.cloud_quota.limits().copy()
        cloud_room.subtract(self.cloud_quota.unmanaged_usage())
        cloud_room.subtract(self.quota.usage())
        return pool_room.min_with(cloud_room)

    def can_ever_fit(self, pool: Any, need: QuotaInformation) -> bool:
        """Whether a request needing ``need`` could fit an empty pool."""
        limits = pool.limits()
        if not pool.ignore_provider_quota:
            limits = limits.min_with(self.cloud_quota.limits())
        return limits.fits(need)

    # Launch and delete ---------------------------------------------------

    def launch(self, node: Node, label: Any, pool: Any, request: Any,
               image_external_id: str | None, on_done: Any = None,
               reservation: Reservation | None = None,
               ready_state: str = READY) -> LaunchHandle:
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
        self.cloud_quota.invalidate_unmanaged()

    # Leaks (see nodepool.driver.leaks) -------------------------------------

    def _sweeper(self) -> LeakSweeper:
        if self.leaks is None:
            raise RuntimeError(f"provider {self.provider.name} is not started")
        return self.leaks

    def cleanup_leaked_resources(self) -> dict[str, int]:
        return self._sweeper().cleanup_resources()

    def vanished_nodes(self, nodes: list[Node]) -> list[str]:
        return self._sweeper().vanished_nodes(nodes)

    def cleanup_leaked_images(self) -> dict[str, int]:
        return self._sweeper().cleanup_images()

    # Images (builder) -----------------------------------------------------

    def upload_image(self, **kwargs: Any) -> str:
        return self.adapter.upload_image(**kwargs)

    def delete_image(self, external_id: str) -> None:
        self.adapter.delete_image(external_id)

    def list_images(self) -> list:
        return self.adapter.list_images()
