"""The metastatic adapter: a node is a slot on a backing node that another
provider of this Nodepool launched.

The adapter plays both sides.  As a *user* of Nodepool it asks for
backing nodes as Zuul would (a node request for the backing label),
takes a fulfilled one with a lock that outlives its session, marks it
``in-use``, and hands it back (``used``, lock removed) once it has been
idle for the label's ``grace-time``; the owning provider then deletes it
as any used node.  As a *provider* it gives each metastatic node one slot
of a backing node and copies the backing node's address and connection
settings onto it; deleting the node frees the slot, nothing else.

What it holds is kept in memory (:class:`BackingNode`) and rebuilt from
ZooKeeper on first use (:meth:`MetastaticAdapter.recover`): the backing
node's ``user_data`` says we own it, and its lock must still be ours;
each metastatic node's ``driver_data`` names its backing node and slot.

Launches are advanced from several threads, and the leak cleanup runs in
another: :attr:`MetastaticAdapter._lock` guards the records.  Only one
launcher may serve a metastatic provider (two would hand out the same
slots).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from nodepool.driver import adapter as base
from nodepool.driver.adapter import META_NODE_ID, META_PROVIDER, Instance, LaunchSpec, Resource
from nodepool.driver.metastatic.backing import BackingNode, Holdings, owner_id, slot_of
from nodepool.driver.metastatic.config import MetastaticLabel, MetastaticProviderConfig
from nodepool.driver.metastatic.operations import (
    REQUEST_POLL,
    BackingNodeFailed,
    MetastaticCreate,
    MetastaticDelete,
)
from nodepool.exceptions import LaunchKeyscanException
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import ModelError, Node, NodeRequest

log = logging.getLogger("nodepool.driver.metastatic")

# How long taking the lock of a fulfilled backing node may wait (it is
# normally free at once: the fulfilling launcher has just released it);
# on a timeout the next poll tries again.
CLAIM_TIMEOUT = 2.0


class MetastaticAdapter(base.Adapter):
    """Slots on backing nodes, for one metastatic provider."""

    poll_interval = REQUEST_POLL

    def __init__(self, provider_config: MetastaticProviderConfig, zk: Any,
                 holdings: Holdings | None = None) -> None:
        super().__init__(provider_config)
        self.provider: MetastaticProviderConfig = provider_config
        self.zk = zk
        self.owner = owner_id(provider_config.name)
        self.holdings = holdings if holdings is not None else Holdings()
        # (Both shared with the adapter this one replaces, if any.)
        self._lock = self.holdings.lock
        self._backing = self.holdings.records

    # Servers ------------------------------------------------------------

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> base.CreateOperation:
        return MetastaticCreate(self, spec)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> base.DeleteOperation:
        return MetastaticDelete(self, external_id)

    def launch_attempt_failed(self, external_id: Any, error: Exception) -> None:
        """A node that cannot be reached tells that its backing node cannot
        be either: give it no more nodes and release it once empty."""
        if external_id is None or not isinstance(error, LaunchKeyscanException):
            return
        self.recover()
        with self._lock:
            record = self._holding(str(external_id))
            if record is None or record.failed:
                return
            record.failed = True
            user_data = record.user_data(self.owner)
        log.warning("Host keys of node %s could not be scanned; backing node %s takes no "
                    "more nodes and is released once empty", external_id, record.node_id)
        if record.node_id is not None:
            self._write_backing(record.node_id, user_data=user_data)

    # Leaks and cleanup ----------------------------------------------------

    def list_resources(self) -> list[Resource]:
        """One ``instance`` per allocated slot: the leak cleanup frees a
        slot whose node record is gone, and a ready node whose slot is not
        listed is retired."""
        self.recover()
        with self._lock:
            node_ids = [node_id for record in self._backing for node_id in record.node_ids()]
        return [Resource("instance", node_id, {META_PROVIDER: self.provider.name,
                                               META_NODE_ID: node_id}, name=node_id)
                for node_id in node_ids]

    def delete_resource(self, resource: Resource) -> None:
        self.free(resource.id)

    def cleanup_extra(self, log: logging.Logger) -> dict[str, int]:
        """Take backing requests nobody waits on any more, and release
        idle backing nodes.  Released backing nodes are not leaks, so
        nothing is counted."""
        self.check_requests()
        self.release_idle()
        return {}

    # Slots ----------------------------------------------------------------

    def allocate(self, label: MetastaticLabel, node_id: str) -> tuple[BackingNode, int]:
        """A slot for ``node_id``: on a backing node of ``label`` with one
        free, or on one requested now."""
        self.recover()
        now = time.time()
        with self._lock:
            # A retried attempt: its earlier slot goes first.
            self._free_locked(node_id)
            record = next((r for r in self._backing if r.label == label.name
                           and not self._too_old(r, label, now) and r.has_free_slot()), None)
            if record is None:
                request = NodeRequest()
                request.state = models.REQUESTED
                request.node_types = [label.backing_label]
                request.requestor = self.owner
                self.zk.store_request(request, priority="100", ephemeral=True)
                record = BackingNode(label.name, label.max_parallel_jobs)
                record.request_id = request.id
                self._backing.append(record)
                log.info("Requested a %s backing node for %s (request %s)",
                         label.backing_label, label.name, request.id)
            slot = record.take(node_id)
        log.info("Node %s takes slot %d of backing node %s", node_id, slot,
                 record.node_id or f"(request {record.request_id})")
        return record, slot

    def free(self, node_id: str) -> None:
        """Free the slot of ``node_id`` (if it has one), then release what
        that leaves idle (so a grace-time of 0 releases at once)."""
        self.recover()
        with self._lock:
            freed = self._free_locked(node_id)
        if freed:
            self.release_idle()

    def _free_locked(self, node_id: str) -> bool:
        record = self._holding(node_id)
        if record is None:
            return False
        slot = record.free(node_id)
        log.info("Node %s leaves slot %s of backing node %s", node_id, slot,
                 record.node_id or f"(request {record.request_id})")
        return True

    def _holding(self, node_id: str) -> BackingNode | None:
        return next((r for r in self._backing if r.holds(node_id)), None)

    @staticmethod
    def _too_old(record: BackingNode, label: MetastaticLabel | None, now: float) -> bool:
        """Whether ``record`` is past its label's ``max-age`` (it is then
        failed: its nodes finish, it takes no new ones)."""
        if label is not None and label.max_age and now - record.launched > label.max_age:
            record.failed = True
        return record.failed

    # Backing requests -------------------------------------------------------

    def check_requests(self) -> None:
        """Take the backing nodes of fulfilled backing requests; drop the
        records of failed (or vanished) ones."""
        self.recover()
        with self._lock:
            pending = [(r.request_id, r) for r in self._backing if r.request_id is not None]
        for request_id, record in pending:
            request = self.zk.get_request(request_id)
            if request is not None and request.state not in (models.FULFILLED, models.FAILED):
                continue
            with self._lock:
                if record.request_id != request_id:
                    continue  # another thread took it meanwhile
                if request is not None and request.state == models.FULFILLED and request.nodes:
                    self._claim(record, request)
                else:
                    self._drop_request(record, request)

    def _claim(self, record: BackingNode, request: NodeRequest) -> None:
        """Lock the backing node for good (a lock that outlives our
        session, so a restarted launcher finds it ours), mark it in use
        with our user_data, and delete the request.  Lock held."""
        node_id = request.nodes[0]
        node = Node(node_id)
        try:
            self.zk.lock_node(node, blocking=True, timeout=CLAIM_TIMEOUT,
                              identifier=self.owner, ephemeral=False)
        except ZKLockException as e:
            if self.zk.node_exists(node_id):
                log.info("Backing node %s of request %s not locked yet (%s); trying again",
                         node_id, request.id, e)
                return
            log.error("Backing node %s of request %s is gone", node_id, request.id)
            self._drop_request(record, request)
            return
        except ModelError as e:
            log.error("Backing node %s of request %s cannot be read: %s", node_id,
                      request.id, e)
            self._drop_request(record, request)
            return
        try:
            node.state = models.IN_USE
            node.user_data = record.user_data(self.owner)
            self.zk.store_node(node)
        except Exception:
            # Not ours after all: leave it as it was for the next poll.
            self.zk.unlock_node(node)
            raise
        # The lock stays until the node is released (force_unlock_node).
        node.lock = None
        record.node_id = node_id
        record.request_id = None
        self.zk.delete_request(request)
        log.info("Backing request %s fulfilled: node %s backs %s", request.id, node_id,
                 record.label)

    def _drop_request(self, record: BackingNode, request: NodeRequest | None) -> None:
        """The backing request failed or vanished: its launches fail (and
        retry as the framework decides).  Lock held."""
        log.error("Backing request %s for %s %s", record.request_id, record.label,
                  "failed" if request is not None else "vanished")
        record.failed = True
        self._backing.remove(record)
        record.request_id = None
        if request is not None:
            self.zk.delete_request(request)

    # Releasing backing nodes ------------------------------------------------

    def release_idle(self) -> None:
        """Release each empty backing node that may go: idle longer than
        its label's ``grace-time`` and launched longer than its
        ``min-retention-time`` ago; at once when failed, past ``max-age``
        or of a label no longer configured.  Drop records of backing nodes
        whose record is gone."""
        self.recover()
        now, clock = time.time(), time.monotonic()
        with self._lock:
            owned = [r for r in self._backing if r.node_id is not None]
        for record in owned:
            if not self.zk.node_exists(str(record.node_id)):
                with self._lock:
                    if record in self._backing:
                        log.warning("Backing node %s of %s is gone; forgetting it (nodes "
                                    "on it: %s)", record.node_id, record.label,
                                    record.node_ids() or "none")
                        self._backing.remove(record)
        release = []
        with self._lock:
            for record in owned:
                label = self.provider.label(record.label)
                grace, keep = (label.grace_time, label.min_retention_time) if label else (0, 0)
                if self._too_old(record, label, now):
                    grace = keep = 0
                if (record in self._backing and record.empty
                        and clock - record.last_used > grace and now - record.launched > keep):
                    record.failed = True
                    self._backing.remove(record)
                    release.append(record)
        for record in release:
            self._release(record)

    def _release(self, record: BackingNode) -> None:
        node_id = record.node_id
        assert node_id is not None
        log.info("Releasing backing node %s of %s (idle %.0f s)", node_id, record.label,
                 time.monotonic() - record.last_used)
        try:
            node = self.zk.get_node(node_id)
            if node is not None:
                node.state = models.USED
                self.zk.store_node(node)
                self.zk.force_unlock_node(node)
        except Exception:
            log.exception("Could not release backing node %s; trying again later", node_id)
            with self._lock:
                self._backing.append(record)

    def _write_backing(self, node_id: str, **changes: Any) -> None:
        try:
            node = self.zk.get_node(node_id)
            if node is None:
                return
            for key, value in changes.items():
                setattr(node, key, value)
            self.zk.store_node(node)
        except Exception:
            log.exception("Could not update backing node %s", node_id)

    # The node ---------------------------------------------------------------

    def instance(self, spec: LaunchSpec, record: BackingNode, slot: int) -> Instance:
        """The metastatic node as its backing node makes it."""
        assert record.node_id is not None
        backing = self.zk.get_node(record.node_id)
        if backing is None:
            with self._lock:
                record.failed = True
            raise BackingNodeFailed(f"backing node {record.node_id} is gone")
        node_id = str(spec.metadata[META_NODE_ID])
        # With host-key-checking on, the framework scans the node itself.
        host_keys = None if spec.label.host_key_checking else list(backing.host_keys)
        return Instance(
            external_id=node_id, metadata=dict(spec.metadata),
            interface_ip=backing.interface_ip, public_ipv4=backing.public_ipv4,
            public_ipv6=backing.public_ipv6, private_ipv4=backing.private_ipv4,
            az=backing.az, region=backing.region, cloud=backing.cloud,
            driver_data={"metadata": dict(spec.metadata), "backing_node": backing.id,
                         "slot": slot, "node": node_id},
            slot=slot, username=backing.username, python_path=backing.python_path,
            shell_type=backing.shell_type, connection_type=backing.connection_type,
            connection_port=backing.connection_port, host_keys=host_keys,
            node_attributes=(dict(backing.attributes) if backing.attributes is not None
                             else None))

    # Restart recovery ---------------------------------------------------------

    def recover(self) -> None:
        """Once, before anything else: rebuild the records from ZooKeeper,
        so a restarted launcher neither requests backing nodes for slots
        it has nor loses the ones it holds.  A backing node is ours when
        its user_data says so and its lock is held with our identifier;
        each node of this provider whose driver_data names one of them
        takes its slot again.  Malformed data is skipped."""
        holdings = self.holdings
        with holdings.recover_lock:
            if holdings.recovered:
                return
            nodes = self.zk.get_nodes()
            found: dict[str, BackingNode] = {}
            for node in nodes:
                record = BackingNode.from_user_data(node.id, node.user_data, self.owner)
                if record is None:
                    continue
                if self.zk.node_lock_holder(node.id) != self.owner:
                    log.debug("Node %s names us as owner but its lock is not ours", node.id)
                    continue
                found[node.id] = record
                log.info("Found backing node %s of %s", node.id, record.label)
            for node in nodes:
                if node.provider != self.provider.name:
                    continue
                held = slot_of(node.id, node.driver_data, found)
                if held is None:
                    continue
                record, slot = held
                try:
                    record.take(node.id, slot)
                except ValueError as e:
                    log.debug("Node %s keeps no slot on backing node %s: %s", node.id,
                              record.node_id, e)
                    continue
                log.info("Node %s holds slot %d of backing node %s", node.id, slot,
                         record.node_id)
            with self._lock:
                self._backing.extend(found.values())
            holdings.recovered = True
