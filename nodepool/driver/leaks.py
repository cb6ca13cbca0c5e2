"""Finding and deleting what a provider leaked into its cloud.

A resource is *ours* when it carries our tags (the provider's name, and a
node id or an upload's build and upload ids); it is *leaked* when the
record that owns it is gone.  Nothing without our tags is ever touched,
and nothing is deleted on one look: two listings of the cloud must show it
leaked, the second requested after the first was answered
(:mod:`nodepool.driver.sightings`), because a listing races with launches,
deletes and record writes happening at the same moment.  The same rule
retires ready nodes whose server is gone from the cloud.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.driver.adapter import (
    META_BUILD_ID,
    META_NODE_ID,
    META_PROVIDER,
    META_UPLOAD_ID,
    Adapter,
    Resource,
)
from nodepool.driver.sightings import Sightings
from nodepool.exceptions import NotFound
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.provider")


class LeakSweeper:
    """One provider's leak cleanup (its sightings survive between passes)."""

    def __init__(self, provider_name: str, adapter: Callable[[], Adapter], zk: Any,
                 is_reserved: Callable[[str], bool]) -> None:
        self.provider_name = provider_name
        self._adapter = adapter
        self.zk = zk
        self._is_reserved = is_reserved
        self._leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._image_leak_sightings: Sightings[tuple[str, str]] = Sightings()
        self._vanished_sightings: Sightings[str] = Sightings()

    @property
    def adapter(self) -> Adapter:
        return self._adapter()

    def cleanup_resources(self) -> dict[str, int]:
        """Delete resources tagged as ours whose records are gone, once
        two listings of the cloud have shown them leaked (see
        :mod:`nodepool.driver.sightings`).

        Uploaded images are left out: the builder owns them and cleans
        their leaks (:meth:`cleanup_images`), so a leaked image is
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
            log.exception("Error in driver cleanup of %s", self.provider_name)
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
                   if n.provider == self.provider_name and n.state == models.READY
                   and n.allocated_to is None and not n.locked
                   and n.external_id is not None
                   and resource_id(n.external_id) not in existing}
        return sorted(self._vanished_sightings.confirm(missing, requested_at, answered_at))

    def cleanup_images(self) -> dict[str, int]:
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
            if meta.get(META_PROVIDER) != self.provider_name:
                continue
            if self._is_leaked(resource.type, meta):
                leaked[(resource.type, resource.id)] = resource
        counts: dict[str, int] = {}
        for key in sorted(sightings.confirm(leaked, requested_at, answered_at)):
            resource = leaked[key]
            log.info("Deleting leaked %s %s (%s) in %s", resource.type, resource.id,
                     resource.name, self.provider_name)
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
            stats.incr(metrics.PROVIDER_LEAKED.key(provider=self.provider_name, type=plural),
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
        if self._is_reserved(node_id):
            return False
        # Ask ZooKeeper, not the cache: a leak verdict must not be stale.
        # A record we cannot read (a newer writer's) still owns its server.
        return not self.zk.node_exists(node_id)

    def _upload_known(self, image_name: str | None, build_id: str, upload_id: str) -> bool:
        images = [image_name] if image_name else self.zk.image_names()
        for image in images:
            if self.zk.get_upload(image, build_id, self.provider_name, upload_id):
                return True
        return False
