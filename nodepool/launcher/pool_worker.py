"""One thread per provider pool: takes node requests it can serve.

Woken by ZooKeeper watch events (a new or changed request, a node freed or
deleted) and by launch completions, with a timer only as a safety net.
Each pass it polls its active handlers, then walks the open requests in
priority order and, for each, decides: leave it to a better pool, decline
it, wait (no capacity now), or accept it.

Capacity is checked *before* a request is locked, so a request that does
not fit now stays open for any other pool that has room, instead of being
held while this pool waits.  Requests that wait reserve what they need,
so a large request is not starved by a stream of small ones behind it.

The cost of a pass does not grow with the backlog: the open requests are
kept in serving order as events come (:mod:`nodepool.launcher.request_queue`),
requests left to other pools are parked until something changes, the scan
stops once no capacity is left, and capacity, ready nodes and tenant usage
are read from the node cache's running totals, never recounted.
"""

from __future__ import annotations

import logging
import math
import queue
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nodepool import metrics
from nodepool import stats as statsmod
from nodepool.driver.handler import NodeRequestHandler
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import RuntimeConfigurationException
from nodepool.launcher.request_queue import RequestQueue
from nodepool.zk import ZKLockException, models
from nodepool.zk.components import PoolComponent
from nodepool.zk.models import Node, NodeRequest

log = logging.getLogger("nodepool.PoolWorker")

# Safety-net wake-up; normally events wake the worker at once.
SAFETY_INTERVAL = 5.0
# Nodes claimed for reuse are skipped until the cache shows a newer
# version of them than the claim saw or wrote (at most this long).
CLAIM_MEMORY = 10.0
# Requests being locked and started at once per pool.
STARTER_THREADS = 16
# Requests being fulfilled (or given back) at once per pool: apart from the
# starters, so a queue of requests to start never delays a hand-off.
FINISHER_THREADS = 8
# Pool gauges are sent at most this often.
STATS_INTERVAL = 10.0


class PoolWorker(threading.Thread):
    """Serves requests for one ``<provider>-<pool>``."""

    def __init__(self, launcher: Any, provider_name: str, pool_name: str) -> None:
        super().__init__(name=f"PoolWorker.{provider_name}-{pool_name}", daemon=True)
        self.launcher = launcher
        self.zk = launcher.zk
        self.provider_name = provider_name
        self.pool_name = pool_name
        self.id = (f"{socket.getfqdn()}-PoolWorker.{provider_name}-{pool_name}-"
                   f"{uuid.uuid4().hex}")
        self.handlers: list[NodeRequestHandler] = []
        # Requests taken over from a launcher that is gone, handed in by
        # another thread; the worker adds them to its handlers.
        self._adopted: queue.SimpleQueue[NodeRequestHandler] = queue.SimpleQueue()
        self._adopting: set[str] = set()
        self._wake = threading.Event()
        self._running = True
        # node id -> (when claimed, record version the claim saw or wrote)
        self._claimed: dict[str, tuple[float, int | None]] = {}
        self._finisher = ThreadPoolExecutor(
            max_workers=FINISHER_THREADS,
            thread_name_prefix=f"RequestFinisher.{provider_name}-{pool_name}")
        self._starter = ThreadPoolExecutor(
            max_workers=STARTER_THREADS,
            thread_name_prefix=f"RequestStarter.{provider_name}-{pool_name}")
        self._stop_deadline = 0.0
        self._last_stats = 0.0
        # Monotonic time at which the latest completed pass began: the
        # worker has looked at every request (and node) its caches showed
        # then.  Proof for whoever must know it has looked (a debugger, a
        # test asserting that a request is left waiting).
        self.last_pass_started = float("-inf")
        self.queue = RequestQueue(self.id, set(self.pool.labels))
        self._components_seen = -1
        self.component = PoolComponent(launcher.hostname)
        self.component.id = self.id
        self.component.name = pool_name
        self.component.provider_name = provider_name
        self.log = logging.getLogger(f"nodepool.PoolWorker.{provider_name}-{pool_name}")

    # Current configuration (re-read every pass: reloads take effect) ----

    @property
    def provider(self) -> Any:
        return self.launcher.providers[self.provider_name]

    @property
    def provider_config(self) -> Any:
        return self.launcher.config.providers[self.provider_name]

    @property
    def pool(self) -> Any:
        return self.provider_config.pools[self.pool_name]

    @property
    def label_caps(self) -> Any:
        """The launcher's :class:`~nodepool.launcher.label_caps.LabelCaps`."""
        return self.launcher.label_caps

    # Thread --------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def request_changed(self, request_id: str, request: NodeRequest | None) -> None:
        """Request-cache listener (called by the launcher for every
        request event): keep the queue in order; wake only if this pool
        has something to do about it."""
        if self.queue.update(request_id, request) or (
                request is None and self.serving(request_id)):
            # (A request this worker serves that vanished: its handler
            # gives the nodes back.)
            self._wake.set()

    def stop(self, grace: float = 0.0) -> None:
        """Stop taking requests; let handlers finish for up to ``grace``
        seconds, then abandon the rest."""
        self._stop_deadline = time.monotonic() + grace
        self._running = False
        self._wake.set()

    def register(self) -> None:
        try:
            self._update_component(register=True)
        except Exception:
            self.log.exception("Could not register pool component")

    def run(self) -> None:
        if self.component.path is None:
            self.register()
        self.queue.load(self.launcher.request_cache.items())
        while self._running:
            self._wake.wait(SAFETY_INTERVAL)
            self._wake.clear()
            if not self._running:
                break
            if not self.zk.zk_client.connected:
                continue
            started = time.monotonic()
            try:
                self._pass()
            except Exception:
                self.log.exception("Error in pool worker pass")
                time.sleep(0.5)
            else:
                self.last_pass_started = started
        self._starter.shutdown(wait=True)
        self._finisher.shutdown(wait=True)
        # Draining: no new requests, but let accepted ones finish.
        while (any(h.launches for h in self.handlers)
               and time.monotonic() < self._stop_deadline):
            self._wake.wait(0.1)
            self._wake.clear()
            try:
                self._poll_handlers()
            except Exception:
                self.log.exception("Error polling handlers while stopping")
        for handler in self.handlers:
            handler.log.warning("Abandoning request at shutdown")
            handler.abandon()
        self.component.unregister()

    def _update_component(self, register: bool = False) -> None:
        pool = self.pool
        labels = sorted(pool.labels)
        priority = pool.effective_priority
        paused = any(h.waiting for h in self.handlers)
        if register:
            self.component.supported_labels = labels
            self.component.priority = priority
            self.component.paused = paused
            self.component.register(self.zk)
            return
        c = self.component
        if (c.supported_labels, c.priority, c.paused) != (labels, priority, paused):
            self.component.update(supported_labels=labels, priority=priority, paused=paused)

    def adopt(self, request: NodeRequest, nodes: list[Node]) -> bool:
        """Take over ``request`` (locked by the caller, ``pending``) from a
        launcher that is gone; its ``nodes`` are in this pool.  False if
        this worker is stopping (the caller then resets the request)."""
        if not self._running:
            return False
        self._adopting.add(str(request.id))
        try:
            handler = NodeRequestHandler(self, request)
            handler.adopt(nodes)
            self._adopted.put(handler)
        finally:
            self._adopting.discard(str(request.id))
        self.wake()
        return True

    def serving(self, request_id: str) -> bool:
        """Whether this worker is handling ``request_id`` (any thread)."""
        return request_id in self._adopting or any(
            h.request.id == request_id and not h.done for h in list(self.handlers))

    def session_lost(self) -> None:
        """Our session expired: every lock we held is gone."""
        for handler in self.handlers:
            handler.abandon()
        self.handlers = []
        self.wake()

    # A pass ------------------------------------------------------------------

    def _pass(self) -> None:
        self._poll_handlers()
        self.queue.set_labels(set(self.pool.labels))
        generation = self.launcher.components_generation
        if generation != self._components_seen:
            # Pools came or went: decisions to leave requests to others
            # may no longer hold.
            self._components_seen = generation
            self.queue.unpark_all()
        peers = self.launcher.pool_peers(self)
        if self.provider.provider.max_concurrency != 0 and not (
                peers and self._nothing_to_decide()):
            with self.launcher.pool_coordination(self, peers) as coordinated:
                accepted = self._assign_requests()
                if coordinated:
                    # Other launchers decide next: our new nodes must be in
                    # ZooKeeper before they look.
                    self._wait_for_records(accepted)
        self._poll_handlers()
        self._update_component()
        self._emit_stats()

    def _nothing_to_decide(self) -> bool:
        """True when a pass could neither accept nor decide anything, so
        (with other launchers serving this pool) it need not wait for their
        passes, nor they for it: every open request had its first
        decision, and there is no free ready node and no room for a new
        one.  Any change that makes room wakes the worker again."""
        if self.queue.has_fresh():
            return False
        if not len(self.queue):
            return True
        room = (self.provider.available_quota(self.pool)
                if self.provider.launches_nodes else None)
        return self._exhausted(room, self._ready_counts(),
                               self.provider.launches_in_flight(),
                               self.provider.provider.max_concurrency)

    def _wait_for_records(self, handlers: list[NodeRequestHandler],
                          timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for handler in handlers:
            handler.started.wait(max(0.0, deadline - time.monotonic()))
            for handle in list(handler.launches.values()):
                handle.record_created.wait(max(0.0, deadline - time.monotonic()))

    def _emit_stats(self) -> None:
        """The provider's ``max_servers`` and every tenant's limits, as
        upstream's pool workers send them (``addressable_requests`` is
        the stats leader's, see :mod:`nodepool.launcher.stats_worker`),
        and the ``max-servers`` of capped labels the pool offers."""
        stats = statsmod.get_stats()
        now = time.monotonic()
        if now - self._last_stats < STATS_INTERVAL:
            return
        self._last_stats = now
        provider = self.provider_config
        # Unlimited pools make the sum infinite, sent as ``inf`` (upstream).
        max_servers = sum(p.max_servers for p in provider.pools.values())
        with stats.pipeline() as pipe:
            pipe.gauge(metrics.PROVIDER_MAX_SERVERS.key(provider=provider.name), max_servers)
            # Labels' own caps (ours), for the capped labels this pool offers.
            offered = self.pool.labels
            for label, cap in self.label_caps.capped().items():
                if label in offered:
                    pipe.gauge(metrics.LABEL_MAX_SERVERS.key(label=label), cap)
            for tenant, limits in self.launcher.config.tenant_resource_limits.items():
                # Upstream always sends these three, ``inf`` when unset.
                unset = float("inf")
                limits = {"cores": unset, "instances": unset, "ram": unset, **limits}
                for key, value in limits.items():
                    pipe.gauge(metrics.TENANT_LIMIT.key(tenant=statsmod.normalize(tenant),
                                                        limit=statsmod.normalize(key)), value)

    def _poll_handlers(self) -> None:
        while True:
            try:
                self.handlers.append(self._adopted.get_nowait())
            except queue.Empty:
                break
        active = []
        for handler in self.handlers:
            try:
                finished = handler.poll()
            except Exception:
                handler.log.exception("Error polling request handler")
                finished = False
            if finished:
                handler.release_reservations()
            else:
                active.append(handler)
        self.handlers = active

    # Capacity ------------------------------------------------------------

    @property
    def _index(self) -> Any:
        return self.launcher.node_cache.index

    def has_room_for(self, need: QuotaInformation) -> bool:
        """Used by handlers to relaunch (e.g. after a quota abort)."""
        return self.provider.available_quota(self.pool).fits(need)

    def _claim_fresh(self, node: Node, now: float) -> bool:
        """Whether ``node`` was claimed lately and the cache does not show
        a newer version of it than the claim saw or wrote."""
        claimed = self._claimed.get(str(node.id))
        return claimed is not None and now - claimed[0] < CLAIM_MEMORY and (
            node.version is None or claimed[1] is None or node.version <= claimed[1])

    def _reusable(self, label: str | None, az: str | None = None) -> list[Node]:
        """Ready, free nodes of this pool (of ``label``, or all), oldest
        first."""
        now = time.monotonic()
        cache = self.launcher.node_cache
        out = []
        for node_id in self._index.free(self.provider_name, self.pool_name, label):
            node = cache.get(node_id)
            if node is None or self._claim_fresh(node, now):
                continue
            if az is not None and node.az is not None and node.az != az:
                continue
            out.append(node)
        return sorted(out, key=lambda n: n.state_time)

    def claim_ready_node(self, label: str, request: NodeRequest,
                         az: str | None) -> Node | None:
        """Lock and allocate a ready node of this pool for ``request``."""
        def allocate(node: Node) -> bool:
            if node.state != models.READY or node.allocated_to is not None:
                return False
            node.allocated_to = request.id
            node.tenant_name = request.tenant_name
            node.requestor = request.requestor
            return True

        for cached in self._reusable(label, az):
            node = Node.fromDict(cached.toDict(), cached.id)
            if not self.provider.checks_reusable:
                # Nothing to check between lock and write: one round trip
                # when the cache is current.
                node.version = cached.version
                try:
                    taken = self.zk.claim_node(node, allocate)
                except ZKLockException:
                    continue
                except Exception:
                    self.log.exception("Could not allocate node %s", node.id)
                    continue
                self._remember_claim(node)
                if taken:
                    return node
                continue
            try:
                self.zk.lock_node(node, blocking=False)
            except ZKLockException:
                continue
            self._remember_claim(node)
            if (node.state != models.READY or node.allocated_to is not None
                    or not self.provider.check_reusable(node)):
                # (A failed liveness check may have rewritten the node.)
                self._remember_claim(node)
                self.zk.unlock_node(node)
                continue
            allocate(node)
            try:
                self.zk.store_node(node)
            except Exception:
                self.log.exception("Could not allocate node %s", node.id)
                self.zk.unlock_node(node)
                continue
            self._remember_claim(node)
            return node
        return None

    def _remember_claim(self, node: Node) -> None:
        now = time.monotonic()
        if len(self._claimed) > 1000:
            self._claimed = {k: v for k, v in self._claimed.items()
                             if now - v[0] < CLAIM_MEMORY}
        self._claimed[str(node.id)] = (now, node.version)

    def _tenant_room(self, tenant: str | None, need: QuotaInformation) -> bool:
        limits = self.launcher.config.tenant_resource_limits.get(tenant or "")
        if not limits:
            return True
        used = QuotaInformation(self._index.tenant_usage(tenant or ""))
        room = QuotaInformation(dict(limits)).subtract(used)
        return room.fits(need)

    # Routing ---------------------------------------------------------------

    def _candidates(self, request: NodeRequest, pools: list[Any]) -> list[Any]:
        """Other registered pools that could serve the whole request."""
        wanted = set(request.node_types)
        return [p for p in pools
                if p.id != self.id and p.id not in request.declined_by
                and wanted <= set(p.supported_labels or [])]

    def _decline_reason(self, request: NodeRequest) -> str | None:
        pool = self.pool
        if pool.max_servers <= 0:
            return "pool is disabled by max-servers"
        missing = sorted(set(request.node_types) - set(pool.labels))
        if missing:
            return f"node type(s) {missing} not available"
        too_large = self.label_caps.too_large(request.node_types)
        if too_large:
            return too_large
        for label_name in set(request.node_types):
            label = pool.labels[label_name]
            error = self.provider.label_error(label)
            if error:
                return f"label {label_name} cannot be served: {error}"
            if not self.provider.label_ready(label):
                return f"image of label {label_name} is not available"
        if self.provider.launches_nodes:
            need = self._quota_of(request.node_types)
            if need is not None and not self.provider.can_ever_fit(pool, need):
                return "it would exceed quota"
        elif not request.reuse:
            # Only min-ready asks for new nodes; a pool that cannot launch
            # leaves those to pools that can.
            return "the pool cannot launch new nodes (it only hands out existing ones)"
        elif len(request.node_types) > self.provider.max_nodes_for(request.node_types,
                                                                   pool=pool):
            return "it would exceed quota"
        return None

    def _quota_of(self, labels: list[str]) -> QuotaInformation | None:
        total = QuotaInformation()
        for label_name in labels:
            try:
                total.add(self.provider.quota_for_label(self.pool.labels[label_name]))
            except RuntimeConfigurationException:
                return None
        return total

    def _assign_requests(self) -> list[NodeRequestHandler]:
        """Decide on the open requests in serving order; returns the
        handlers started.

        The scan stops as soon as no capacity is left (no room for a new
        node and no free ready node): the requests after that point could
        only wait.  Requests that arrived since the last pass still get a
        first decision (to decline them, or park them for other pools).

        A label's ``max-servers`` is checked last, when taking its slots
        (:meth:`LabelCaps.claim`), so that slots are only taken for a
        request that is accepted.  A request that waits for a label holds
        its slots for the rest of the pass, as one waiting for quota
        holds its room: later requests for that label wait behind it.
        """
        accepted: list[NodeRequestHandler] = []
        pools = self.launcher.pool_components()
        fresh = self.queue.take_fresh()
        ready = self._ready_counts()
        active = {h.request.id for h in self.handlers}
        room: QuotaInformation | None = None
        max_concurrency = self.provider.provider.max_concurrency
        launches = self.provider.launches_in_flight()
        decided: set[str] = set()
        caps = self.label_caps
        # Slots of capped labels spoken for by requests waiting for them.
        held: Counter[str] = Counter()
        for request in self.queue.snapshot():
            if not self._running:
                return accepted
            if request.id in active:
                continue
            decided.add(str(request.id))
            decision = self._route(request, pools)
            if decision == "skip":
                self.queue.park(str(request.id))
                continue
            if decision == "decline":
                self._lock_and_decline(request, self._decline_reason(request) or "declined")
                continue
            # Accept if it fits now; otherwise reserve what it needs and
            # let it wait.
            new_labels = self._new_nodes_needed(request, ready)
            if new_labels and not self.provider.launches_nodes:
                if self._exhausted(room, ready, launches, max_concurrency):
                    break
                continue
            need = self._quota_of(new_labels) or QuotaInformation()
            if new_labels:
                if room is None:
                    room = self.provider.available_quota(self.pool)
                if not room.fits(need):
                    room.subtract(need)
                    if self._exhausted(room, ready, launches, max_concurrency):
                        break
                    continue
                if not self._tenant_room(request.tenant_name, need):
                    continue
                if max_concurrency > 0 and launches + len(new_labels) > max_concurrency:
                    if self._exhausted(room, ready, launches, max_concurrency):
                        break
                    continue
            claims = caps.claim(new_labels, held)
            if claims is None:
                held.update(new_labels)
                continue
            handler = self._accept(request, new_labels, claims)
            if handler is not None:
                self._take_reused(request, ready, new_labels)
                if new_labels and room is not None:
                    room.subtract(need)
                launches += len(new_labels)
                active.add(request.id)
                accepted.append(handler)
        # Requests beyond where the scan stopped still get their first
        # decision: declined at once, or parked for other pools.
        for request in fresh:
            if request.id in decided or request.id in active or not self._running:
                continue
            decision = self._route(request, pools)
            if decision == "skip":
                self.queue.park(str(request.id))
            elif decision == "decline":
                self._lock_and_decline(request, self._decline_reason(request) or "declined")
        return accepted

    def _exhausted(self, room: QuotaInformation | None, ready: Counter[str],
                   launches: int, max_concurrency: int) -> bool:
        """Nothing more can be accepted now: no free ready node, and no
        room (or no concurrency) for a new one."""
        if any(count > 0 for count in ready.values()):
            return False
        if not self.provider.launches_nodes:
            return True
        if max_concurrency > 0 and launches >= max_concurrency:
            return True
        return room is not None and room.get("instances", math.inf) < 1

    def _route(self, request: NodeRequest, pools: list[Any]) -> str:
        """``skip`` (leave it to another pool or later), ``decline`` or
        ``accept`` (subject to capacity)."""
        pool = self.pool
        candidates = self._candidates(request, pools)
        if request.provider and request.provider != self.provider_name:
            if any(p.provider_name == request.provider for p in candidates):
                return "skip"
        if not set(request.node_types) <= set(pool.labels):
            return "skip" if candidates else "decline"
        my_priority = pool.effective_priority
        if any(not p.paused and (p.priority if p.priority is not None else 100) < my_priority
               for p in candidates):
            return "skip"
        if self._decline_reason(request) is not None:
            return "decline"
        return "accept"

    def _ready_counts(self) -> Counter[str]:
        """Free ready nodes per label, counted once per pass (from the
        node cache's running totals, less the ones claimed lately)."""
        counts = self._index.free_counts(self.provider_name, self.pool_name)
        if self._claimed:
            now = time.monotonic()
            cache = self.launcher.node_cache
            for node_id in list(self._claimed):
                node = cache.get(node_id)
                if (node is not None and node.state == models.READY
                        and node.allocated_to is None and not node.locked
                        and node.provider == self.provider_name
                        and node.pool == self.pool_name and self._claim_fresh(node, now)):
                    counts.subtract(set(node.type))
        return +counts

    @staticmethod
    def _new_nodes_needed(request: NodeRequest, ready: Counter[str]) -> list[str]:
        """Labels of the request no free ready node covers; the ones it
        would reuse are taken off ``ready`` once it is accepted."""
        if not request.reuse:
            return list(request.node_types)
        needed = []
        left = Counter({label: ready[label] for label in request.node_types})
        for label in request.node_types:
            if left[label] > 0:
                left[label] -= 1
            else:
                needed.append(label)
        return needed

    @staticmethod
    def _take_reused(request: NodeRequest, ready: Counter[str], new: list[str]) -> None:
        if request.reuse:
            reused = Counter(request.node_types)
            reused.subtract(Counter(new))
            ready.subtract(reused)

    # Decisions ---------------------------------------------------------------

    def _lock_request(self, request: NodeRequest) -> NodeRequest | None:
        fresh = NodeRequest.fromDict(request.toDict(), request.id)
        try:
            self.zk.lock_request(fresh, blocking=False)
        except ZKLockException:
            return None
        if fresh.state != models.REQUESTED or self.id in fresh.declined_by:
            self.zk.unlock_request(fresh)
            return None
        return fresh

    def _lock_and_decline(self, request: NodeRequest, reason: str) -> None:
        fresh = self._lock_request(request)
        if fresh is None:
            return
        try:
            self.decline(fresh, reason)
        finally:
            self.zk.unlock_request(fresh)

    def decline(self, request: NodeRequest, reason: str) -> None:
        """Add our id to ``declined_by``; fail the request when every
        registered pool has declined it.  The request must be locked."""
        if self.id not in request.declined_by:
            request.declined_by.append(self.id)
        registered = {p.id for p in self.launcher.pool_components(fresh=True)}
        registered.add(self.id)
        if registered <= set(request.declined_by):
            request.state = models.FAILED
            request.nodes = []
            self.log.info("Request %s failed: declined by every pool (%s)",
                          request.id, reason)
        else:
            request.state = models.REQUESTED
            self.log.info("Declined request %s: %s", request.id, reason)
        try:
            self.zk.store_request(request)
        except Exception:
            self.log.exception("Could not store declined request %s", request.id)

    def _accept(self, request: NodeRequest, new_labels: list[str],
                label_claims: list[Any]) -> NodeRequestHandler | None:
        """Take the request: its handler locks it, marks it pending and
        starts filling it on a starter thread, so a queue of requests is
        taken in parallel rather than one ZooKeeper round trip at a time.
        The decision was made here, and so is the capacity reservation for
        the nodes it will launch (and ``label_claims``, their slots under
        labels' max-servers): the next pass counts them at once."""
        reservations = []
        for label_name in new_labels:
            quota = self.provider.quota_for_label(self.pool.labels[label_name])
            reservations.append(self.provider.reserve(self.pool.name, quota))
        handler = NodeRequestHandler(self, request, reservations, label_claims, new_labels)
        handler.busy = True
        self.handlers.append(handler)
        try:
            self._starter.submit(self._start_handler, handler)
        except RuntimeError:  # shutting down
            handler.busy = False
            handler.started.set()
            handler.release_reservations()
            handler.done = True
            return None
        return handler

    def run_in_background(self, fn: Any) -> bool:
        """Run ``fn`` on a finisher thread, then wake the worker; False when
        shutting down (the caller then runs it itself)."""
        def work() -> None:
            try:
                fn()
            finally:
                self.wake()
        try:
            self._finisher.submit(work)
        except RuntimeError:
            return False
        return True

    def _start_handler(self, handler: NodeRequestHandler) -> None:
        try:
            if handler.done:  # abandoned before it started
                handler.release_reservations()
                return
            fresh = NodeRequest.fromDict(handler.request.toDict(), handler.request.id)
            fresh.version = handler.request.version

            def to_pending(request: NodeRequest) -> bool:
                if request.state != models.REQUESTED or self.id in request.declined_by:
                    return False
                request.state = models.PENDING
                return True

            try:
                # Lock and mark pending, in one round trip when the cache
                # is current.
                # The records of the nodes to launch are made by the same
                # transaction when it can (one round trip less per node).
                taken = self.zk.claim_request(fresh, to_pending,
                                              new_nodes=handler.prepare_new_nodes())
            except ZKLockException:
                taken = False
            except Exception:
                self.log.exception("Could not mark request %s pending", fresh.id)
                taken = False
            if not taken:
                handler.release_reservations()
                handler.done = True
                # Our cache was behind: the request may be pending with no
                # launcher left (its lock events came while this handler
                # still counted as serving it).
                self.launcher.lost_requests.check(fresh.id)
                return
            handler.request = fresh
            try:
                handler.run()
            except Exception:
                handler.log.exception("Error starting request handler")
                handler.failed_reason = "internal error starting the request"
            else:
                handler.fulfil_if_complete()
        finally:
            handler.busy = False
            handler.started.set()
            self.wake()
