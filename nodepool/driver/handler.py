"""Serving one accepted node request from one pool.

The pool worker locks a request, marks it ``pending`` and hands it to a
handler.  The handler fills the request's slots (one per entry of
``node_types``, in order) with reusable ready nodes or new launches, and
when every launch is over either fulfils the request (all nodes ready) or
declines it (so another pool may try; the last one to decline fails it).
A request that vanishes meanwhile (Zuul cancelled it) is normal: its nodes
go back to the ready pool.  Multi-node requests get all nodes or none.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from nodepool import stats as statsmod
from nodepool.driver.launch import ABORTED, READY, LaunchHandle, NodeLogger
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import Node, NodeRequest

log = logging.getLogger("nodepool.driver.handler")


class NodeRequestHandler:
    """Drives one request; ``poll()`` returns True when it is finished."""

    def __init__(self, worker: Any, request: NodeRequest,
                 reservations: list[Any] | None = None,
                 label_claims: list[Any] | None = None,
                 new_labels: list[str] | None = None) -> None:
        self.worker = worker
        self.zk = worker.zk
        self.request = request
        self.slots: list[Node | None] = [None] * len(request.node_types)
        self.launches: dict[int, LaunchHandle] = {}
        self.az: str | None = None
        self.failed_reason: str | None = None
        self.done = False
        self.waiting = False
        # True while a background thread works on the request (locking and
        # starting it, or fulfilling it); only that thread touches the
        # handler meanwhile.
        self.busy = False
        # Held while the pool worker polls the handler, or a launch's
        # thread finishes the request (see _launch_done).
        self._lock = threading.Lock()
        # Set once the request is locked and its launches started (or it
        # was given up).
        self.started = threading.Event()
        # Capacity the pool worker reserved for the nodes it decided to
        # launch (see nodepool.driver.quota_ledger), used up by launches.
        self.reservations = list(reservations or [])
        # Slots under labels' max-servers taken for the same nodes (see
        # nodepool.launcher.label_caps), used up by launches too.
        self.label_claims = list(label_claims or [])
        # The labels the pool worker decided to launch new nodes for, and
        # the records made for them with the request's claim (see
        # prepare_new_nodes): launches use these instead of making new
        # ones; any left over go when the request does.
        self.new_labels = list(new_labels or [])
        self.precreated: list[Node] = []
        self.log = NodeLogger(logging.getLogger("nodepool.NodeRequestHandler"), {
            "event_id": request.event_id, "request": request.id})

    @property
    def provider(self) -> Any:
        # Looked up each time: a reload may replace the provider object.
        return self.worker.provider

    @property
    def pool(self) -> Any:
        return self.worker.pool

    @property
    def label_caps(self) -> Any:
        return self.worker.label_caps

    # Filling slots ----------------------------------------------------

    def adopt(self, nodes: list[Node]) -> None:
        """Take over a request whose launcher died (the request is locked
        by us, ``pending``): keep its ready nodes, resume the launches of
        its half-built ones; the rest is filled as usual by ``poll()``."""
        self.log.info("Taking over from a launcher that is gone (nodes %s)",
                      sorted(str(n.id) for n in nodes))
        free = list(range(len(self.request.node_types)))
        for cached in sorted(nodes, key=lambda n: n.id or ""):
            node = self.zk.try_lock_node(cached.id, blocking=True, timeout=10)
            if node is None:
                self.log.warning("Could not lock node %s to take it over", cached.id)
                continue
            index = next((i for i in free if self.request.node_types[i] in node.type), None)
            label = self.pool.labels.get(node.type[0]) if node.type else None
            if (node.allocated_to != self.request.id or index is None or label is None
                    or node.state not in (models.READY, models.BUILDING, models.INIT)):
                # Not ours to use (any more): the deleter or the ready pool
                # takes it.
                self._give_back(node)
                continue
            free.remove(index)
            if node.az and self.az is None:
                self.az = node.az
            if node.state == models.READY:
                self.slots[index] = node
                continue
            try:
                self.launches[index] = self.provider.resume_launch(
                    node, label, self.pool, self.request,
                    on_done=self._launch_done)
            except Exception:
                self.log.exception("Could not resume the launch of node %s", node.id)
                node.state = models.FAILED
                self._give_back(node)
                free.append(index)

    def _give_back(self, node: Node) -> None:
        try:
            if node.allocated_to == self.request.id:
                node.allocated_to = None
                if node.state == models.INIT:
                    node.state = models.DELETING
                self.zk.store_node(node)
            elif node.state == models.FAILED:
                self.zk.store_node(node)
        except Exception:
            self.log.exception("Could not release node %s", node.id)
        finally:
            self.zk.unlock_node(node)

    def run(self) -> None:
        """Reuse what we can and start launches for the rest."""
        self.log.info("Accepted by %s for %s", self.worker.id, self.request.node_types)
        if self.request.reuse:
            self._reuse_nodes()
        if self._requeue_if_stuck():
            return
        self._launch_missing()

    def prepare_new_nodes(self) -> list[Node]:
        """Records for the request's claim to create (see
        ZooKeeper.claim_request), saving each launch the round trip that
        creates its record: one per slot, when the pool worker decided to
        launch a new node for every slot (nothing to reuse).  Kept as
        :attr:`precreated`; those the claim did not create have no id."""
        labels = self.request.node_types
        if (not self.provider.launches_nodes or not labels
                or sorted(self.new_labels) != sorted(labels)):
            return []
        try:
            self.precreated = [self._new_node(label, self.provider.image_external_id(label)[1],
                                              self.provider.quota_for_label(label))
                               for label in (self.pool.labels[name] for name in labels)]
        except Exception:
            # The launches will meet (and report) the same problem.
            self.log.debug("No records made ahead", exc_info=True)
            self.precreated = []
        return self.precreated

    def _take_precreated(self, label_name: str) -> Node | None:
        for node in self.precreated:
            if node.id is not None and node.type == [label_name]:
                self.precreated.remove(node)
                return node
        return None

    def _dispose_precreated(self) -> None:
        """Remove the records made with the claim that no launch took."""
        left, self.precreated = [n for n in self.precreated if n.id is not None], []
        for node in left:
            try:
                self.zk.delete_unused_node(node)
            except Exception:
                # An unlocked ``init`` record of a request that is gone:
                # the deleter removes it.
                self.log.exception("Could not remove unused node record %s", node.id)

    def _reuse_nodes(self) -> None:
        spare = [n.type[0] for n in self.precreated if n.id is not None]
        for index, label_name in enumerate(self.request.node_types):
            if self.slots[index] is not None or index in self.launches:
                continue
            if label_name in spare:
                # A record is waiting for this slot's launch.
                spare.remove(label_name)
                continue
            node = self.worker.claim_ready_node(label_name, self.request, self.az)
            if node is None:
                continue
            self.slots[index] = node
            if self.az is None and node.az:
                self.az = node.az
            self.log.info("Reusing ready node %s for %s", node.id, label_name)

    def _launch_missing(self) -> None:
        self.waiting = False
        for index, label_name in enumerate(self.request.node_types):
            if self.slots[index] is not None or index in self.launches:
                continue
            if not self.provider.launches_nodes:
                self.waiting = True
                continue
            label = self.pool.labels[label_name]
            quota = self.provider.quota_for_label(label)
            reservation = self._take_reservation(quota)
            if reservation is None and not self.worker.has_room_for(quota):
                self.waiting = True
                continue
            claim, fits = self._take_label_claim(label_name)
            if not fits:
                # The label is at its max-servers: wait like for quota.
                if reservation is not None:
                    self.reservations.append(reservation)
                self.waiting = True
                continue
            if reservation is None:
                reservation = self.provider.reserve(self.pool.name, quota)
            self._start_launch(index, label, quota, reservation, claim)
        if not self.waiting and self.label_claims:
            # Every slot is filled or launching: slots taken for nodes
            # that were reused instead go back now, not when the request
            # is done.
            self.label_caps.release(self.label_claims)
            self.label_claims = []

    def _take_reservation(self, quota: Any) -> Any:
        """A reservation the pool worker made for a node like this one."""
        for reservation in self.reservations:
            if reservation.quota == quota:
                self.reservations.remove(reservation)
                return reservation
        return None

    def _take_label_claim(self, label_name: str) -> tuple[Any, bool]:
        """(a slot under the label's max-servers for one new node, or None
        for a label without one; whether the node may be launched)."""
        for claim in self.label_claims:
            if claim.label == label_name:
                self.label_claims.remove(claim)
                return claim, True
        claims = self.label_caps.claim([label_name])
        if claims is None:
            return None, False
        return (claims[0] if claims else None), True

    def release_reservations(self) -> None:
        """Give back the capacity reserved for launches that will not
        happen (reused nodes instead, or the request ended), and the
        records made for them."""
        if self.precreated:
            self._dispose_precreated()
        for reservation in self.reservations:
            self.provider.release(reservation)
        self.reservations = []
        if self.label_claims:
            self.label_caps.release(self.label_claims)
            self.label_claims = []

    def _new_node(self, label: Any, image_id: str | None, quota: Any) -> Node:
        """A new ``init`` record of a node of ``label`` for this request."""
        if self.az is None:
            self.az = self.provider.choose_az(self.pool)
        node = Node()
        node.state = models.INIT
        node.type = [label.name]
        node.provider = self.provider.provider.name
        node.pool = self.pool.name
        node.launcher = self.worker.id
        node.allocated_to = self.request.id
        node.tenant_name = self.request.tenant_name
        node.requestor = self.request.requestor
        node.attributes = self.pool.node_attributes
        node.az = self.az
        node.image_id = image_id
        node.cloud = self.provider.provider.cloud
        node.region = self.provider.provider.region_name
        node.resources = quota.to_dict()
        image = label.image
        if image is not None:
            node.username = image.username
            node.python_path = image.python_path
            node.shell_type = image.shell_type
            node.connection_type = image.connection_type
            node.connection_port = image.connection_port
        return node

    def _start_launch(self, index: int, label: Any, quota: Any, reservation: Any,
                      claim: Any = None) -> None:
        image_external_id, image_id = self.provider.image_external_id(label)
        node = self._take_precreated(label.name) or self._new_node(label, image_id, quota)
        # The launch creates (unless the claim did) and locks the record;
        # the reservation (and the label's claim) count the node until the
        # cache shows it.
        try:
            handle = self.provider.launch(
                node, label, self.pool, self.request, image_external_id,
                on_done=self._launch_done, reservation=reservation)
        except Exception:
            if claim is not None:
                self.label_caps.release([claim])
            raise
        if claim is not None:
            self.label_caps.launched(claim, handle)
        self.launches[index] = handle

    # Progress ------------------------------------------------------------

    def _launch_done(self, handle: LaunchHandle) -> None:
        """A launch of this request ended (on the provider's runner
        thread).  When it was the last and every node is ready, the
        request is fulfilled right here, without a hop through the pool
        worker and a finisher thread; the pool worker then only reaps
        the handler.  Anything else is the pool worker's to handle."""
        try:
            if handle.state == READY and self._lock.acquire(blocking=False):
                try:
                    self._fulfil_if_all_ready()
                finally:
                    self._lock.release()
        except Exception:
            self.log.exception("Error fulfilling the request")
        finally:
            self.worker.wake()

    def _fulfil_if_all_ready(self) -> None:
        if self.busy or self.done or self.failed_reason is not None:
            return
        if any(not h.complete or h.state != READY for h in self.launches.values()):
            return
        for index, handle in list(self.launches.items()):
            del self.launches[index]
            self.slots[index] = handle.node
        if any(slot is None for slot in self.slots) or not self._request_exists():
            return
        self._fulfil()

    def poll(self) -> bool:
        """Advance; True when the request is finished (fulfilled,
        declined, or gone)."""
        if not self._lock.acquire(blocking=False):
            # A launch's thread is finishing the request right now.
            return False
        try:
            return self._poll()
        finally:
            self._lock.release()

    def _poll(self) -> bool:
        if self.busy:
            return False
        if self.done:
            return True
        if any(not h.complete for h in self.launches.values()):
            return False
        for index, handle in list(self.launches.items()):
            del self.launches[index]
            if handle.state != READY:
                self.label_caps.launch_ended(handle)
            if handle.state == READY:
                self.slots[index] = handle.node
            elif handle.state == ABORTED:
                # Out of cloud quota: the node is cleaned up; try again when
                # there is room.
                self.zk.unlock_node(handle.node)
                self.waiting = True
            else:
                if handle.node.id is not None:
                    self.slots[index] = handle.node
                self.failed_reason = handle.error or "launch failed"
        if not self._request_exists():
            self.log.info("Request vanished; returning its nodes to the pool")
            self._release_nodes()
            self._unlock_request()
            self.done = True
            return True
        if self.failed_reason is not None:
            self._decline(f"node launch failed: {self.failed_reason}")
            return True
        if any(slot is None for slot in self.slots):
            if self.request.reuse:
                self._reuse_nodes()
            if self._requeue_if_stuck():
                return True
            self._launch_missing()
            return False
        # Three round trips; done in the background so a pool worker with
        # many requests becoming ready at once hands them out in parallel.
        self.busy = True
        if not self.worker.run_in_background(self._fulfil_in_background):
            self.busy = False
            self._fulfil()
            return True
        return False

    def fulfil_if_complete(self) -> None:
        """Fulfil now if every slot holds a ready node and nothing is
        launching (all were reused).  Called by the thread that just
        started the request: a ready node is handed over without a hop
        back through the pool worker and a finisher thread."""
        if (self.done or self.launches or self.failed_reason is not None
                or any(slot is None for slot in self.slots)):
            return
        try:
            self._fulfil()
        except Exception:
            self.log.exception("Error fulfilling the request")
            self.done = True

    def _fulfil_in_background(self) -> None:
        try:
            self._fulfil()
        except Exception:
            self.log.exception("Error fulfilling the request")
            self.done = True
        finally:
            self.busy = False

    def _requeue_if_stuck(self) -> bool:
        """A pool that cannot launch (static hosts) and could not claim a
        node for every slot (a host failed its liveness check, or another
        request took the node first) gives the request back: holding some
        hosts while waiting for others could deadlock two multi-node
        requests, and the pool worker accepts it again as soon as every
        label has a ready node.  True when the request was given back."""
        if self.provider.launches_nodes or all(slot is not None for slot in self.slots):
            return False
        self.log.info("Not every node is free now; returning the request to the queue")
        self._release_nodes()
        self.request.state = models.REQUESTED
        self.request.nodes = []
        try:
            if self._request_exists():
                self.zk.store_request(self.request)
        except Exception:
            # Left pending; the lost-request cleanup resets it.
            self.log.exception("Could not return the request to the queue")
        self._unlock_request()
        self.done = True
        return True

    def _request_exists(self) -> bool:
        # The cache shows a deletion within milliseconds; only its "gone"
        # is confirmed with ZooKeeper.
        if self.worker.launcher.request_cache.get(self.request.id) is not None:
            return True
        return self.zk.request_exists(self.request.id)

    def _fulfil(self) -> None:
        request = self.request
        request.nodes = [str(node.id) for node in self.slots if node is not None]
        request.state = models.FULFILLED
        # Zuul's executor locks the nodes next, so they must be free: in
        # one step with the write when possible.
        if self.zk.store_request_and_unlock(
                request, [node for node in self.slots if node is not None]):
            self.log.info("Fulfilled with nodes %s", request.nodes)
            self._record_wait()
            self.done = True
            return
        self._unlock_nodes()
        try:
            self.zk.store_request(request)
            self.log.info("Fulfilled with nodes %s", request.nodes)
        except Exception:
            self.log.exception("Could not store the fulfilled request")
            self._release_nodes()
        else:
            self._record_wait()
        self._unlock_request()
        self.done = True

    def _record_wait(self) -> None:
        """The request's creation-to-fulfilment time, for Prometheus.

        ``created_time`` is the requestor's clock (Zuul's); a request
        without one (made by a Zuul too old to write it) is not observed
        rather than observed from when we accepted it.
        """
        created = self.request.created_time
        if created is None:
            return
        try:
            statsmod.get_stats().request_fulfilled(
                provider=self.provider.provider.name, labels=self.request.node_types,
                seconds=time.time() - created)
        except Exception:
            self.log.exception("Could not record the request's wait")

    def _decline(self, reason: str) -> None:
        self.log.warning("Declining: %s", reason)
        # Ready nodes go straight back to the pool (the request's
        # ``nodes`` stays empty, so nobody else refers to them); failed
        # ones are unlocked for the deleter.
        self._release_nodes()
        self.worker.decline(self.request, reason)
        self._unlock_request()
        self.done = True

    # Cleanup -------------------------------------------------------------

    def _unlock_nodes(self) -> None:
        for node in self.slots:
            if node is not None and node.lock is not None:
                self.zk.unlock_node(node)

    def _release_nodes(self) -> None:
        """Unallocate ready nodes and unlock everything we hold."""
        for index, node in enumerate(self.slots):
            if node is None:
                continue
            if node.lock is None:
                try:
                    self.zk.lock_node(node, blocking=True, timeout=10)
                except ZKLockException:
                    self.log.warning("Could not lock node %s to release it", node.id)
                    continue
            try:
                if node.state == models.READY and node.allocated_to == self.request.id:
                    node.allocated_to = None
                    self.zk.store_node(node)
                elif node.state not in (models.READY, models.FAILED):
                    # A half-built node: the deleter takes it from here.
                    if node.state in (models.BUILDING, models.INIT):
                        node.state = models.FAILED
                        self.zk.store_node(node)
            except Exception:
                self.log.exception("Could not release node %s", node.id)
            finally:
                self.zk.unlock_node(node)
            self.slots[index] = None

    def _unlock_request(self) -> None:
        self.zk.unlock_request(self.request)

    def abandon(self) -> None:
        """Stop handling (shutdown or session loss): cancel launches and
        release what we can; the request's lost-lock cleanup does the rest."""
        for handle in self.launches.values():
            handle.cancel()
        self.release_reservations()
        self.done = True
