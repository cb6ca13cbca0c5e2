"""Keeping a registering provider's node records in line with its endpoints.

For each endpoint a provider declares (``Provider.registered_endpoints``,
see :mod:`nodepool.driver.registration`) the registrar keeps exactly
``slots`` live records: it registers a READY record in every empty slot
once the endpoint's check passes, rewrites free records (READY,
unallocated, unlocked) whose configuration changed, and marks
``deleting`` the free records of removed endpoints, of slots beyond the
endpoint's count and of endpoints whose check fails.  Records in use are
left alone until they come back.  The deleter removes ``deleting``
records; the node cache then tells the registrar, which refills the slot.

*When* to look: one coordinator thread per provider wakes on start-up, on
a configuration change, when a record of the provider is removed or
marked for deletion, at an endpoint's retry time and once a minute (a
safety net).  Each endpoint is then looked at in a small thread pool, so
an endpoint that takes its whole timeout to fail never delays another.

*No slot filled twice*: several processes may register records for one
provider (launchers sharing it, ``nodepool delete --now``).  The
comparison of records with slots and the writes that follow happen under
the provider's registration lock in ZooKeeper
(:meth:`nodepool.zk.ZooKeeper.lock_registration`), after the node cache
has applied every event received so far (``NodeCache.barrier``).  Every
write another holder made happened before it released the lock, and
ZooKeeper delivers the watch events of those writes to us before the
replies that granted us the lock, so after the barrier the cache shows
them.  Contacting an endpoint (which may take its whole timeout) happens
before, outside the lock; the records are compared again under it.

The launcher keeps one registrar per provider *name*: a provider object
that replaces another on a configuration reload is handed to the same
registrar (:meth:`Registrar.serve`), which keeps its endpoints' health.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from nodepool.driver.registration import (
    EndpointHealth,
    EndpointProblem,
    EndpointSpec,
    SlotView,
    apply_fields,
    is_free,
    new_record,
    slot_view,
)
from nodepool.zk import ZKLockException, models
from nodepool.zk.models import Node

if TYPE_CHECKING:
    from nodepool.driver import Provider
    from nodepool.zk import ZooKeeper

log = logging.getLogger("nodepool.driver.registrar")

# Look at every endpoint this often even without an event (a safety net).
RESYNC_INTERVAL = 60.0
# Retry delay after an unexpected error (ZooKeeper trouble) with one endpoint.
ERROR_RETRY = 5.0
# How long to wait for another process's registration lock, and for the
# node cache to catch up once we hold it.
LOCK_TIMEOUT = 30.0
BARRIER_TIMEOUT = 10.0
ENDPOINT_THREADS = 16


class RegistrationDeferred(Exception):
    """The records could not be compared safely now (the registration
    lock or an up-to-date node cache was not to be had); retried later."""


class Registrar:
    """Registers, updates and deregisters the records of one provider's
    endpoints.  ``node_cache`` is the launcher's (None in the command
    line, which then reads ZooKeeper directly)."""

    def __init__(self, name: str, zk: ZooKeeper, node_cache: Any = None,
                 identifier: str | None = None, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.name = name
        self.zk = zk
        self.node_cache = node_cache
        self.identifier = identifier
        self.lock_timeout = lock_timeout
        self.provider: Provider | None = None
        # The provider's endpoints by key, as of its last pass.
        self._specs: dict[Hashable, EndpointSpec] = {}
        self._health: dict[Hashable, EndpointHealth] = {}
        self._health_lock = threading.Lock()
        # One contender for the ZooKeeper lock per process at a time.
        self._commit_lock = threading.Lock()
        self._running = False
        self._stopped = False
        self._cond = threading.Condition()
        self._requested = True
        self._resync_at = 0.0
        self._retry_at: dict[Any, float] = {}
        self._tasks: dict[Hashable, str] = {}
        self._tasks_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Monotonic times at which the latest completed looks began: at
        # every record (a pass), at one endpoint's records.  Proof that the
        # registrar has looked since a moment, e.g. before asserting that
        # it registered nothing.
        self.last_sync_started = float("-inf")
        self.looked_at: dict[Hashable, float] = {}

    # Lifecycle ---------------------------------------------------------

    def serve(self, provider: Provider) -> None:
        """Work for ``provider`` from now on (the first one, or the one that
        replaced it on a configuration change) and look at every endpoint
        soon."""
        specs = {spec.key: spec for spec in provider.registered_endpoints()}
        with self._cond:
            self.provider, self._specs = provider, specs
            self._requested = True
            self._cond.notify_all()

    def start(self) -> None:
        """Start the background threads (the launcher)."""
        self._running = True
        self._executor = ThreadPoolExecutor(
            ENDPOINT_THREADS, thread_name_prefix=f"Registrar.{self.name}.endpoint")
        if self.node_cache is not None:
            self.node_cache.add_listener(self._on_node_change)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"Registrar.{self.name}")
        self._thread.start()

    def stop(self) -> None:
        """Stop promptly: no record is written after this returns, except
        by a write already under way."""
        self._stopped = True
        self._running = False
        if self.node_cache is not None:
            self.node_cache.remove_listener(self._on_node_change)
        with self._cond:
            self._cond.notify_all()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def request_sync(self) -> None:
        """Look at every endpoint soon (coalesced)."""
        with self._cond:
            self._requested = True
            self._cond.notify_all()

    # What operators see ----------------------------------------

    def health(self, spec: EndpointSpec) -> EndpointHealth:
        with self._health_lock:
            health = self._health.get(spec.key)
            if health is None:
                health = self._health[spec.key] = EndpointHealth(spec.description)
            health.description = spec.description
            return health

    def endpoints(self) -> list[EndpointSpec]:
        """The provider's endpoints as of the latest pass."""
        with self._cond:
            return list(self._specs.values())

    def describe(self) -> list[dict[str, Any]]:
        """Each configured endpoint's pool, description and health."""
        out = []
        for spec in self.endpoints():
            health = self.health(spec)
            out.append({"pool": spec.pool, "endpoint": spec.description,
                        "state": health.state, "reason": health.reason})
        return out

    # Coordinator ---------------------------------------------------------

    def _retry_later(self, key: Any, when: float) -> None:
        with self._cond:
            self._retry_at[key] = min(when, self._retry_at.get(key, when))
            self._cond.notify_all()

    def _on_node_change(self, key: str, old: Node | None, new: Node | None) -> None:
        # A slot frees when one of our records is removed or marked for
        # deletion; nothing else needs a look.
        node = new if new is not None else old
        if node is None or node.provider != self.name:
            return
        if new is None or new.state in (models.DELETING, models.DELETED):
            self.request_sync()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._requested:
                    now = time.monotonic()
                    next_at = min(min(self._retry_at.values(), default=self._resync_at),
                                  self._resync_at)
                    if next_at <= now:
                        break
                    self._cond.wait(next_at - now)
                if not self._running:
                    return
                self._requested = False
                self._retry_at.clear()
                self._resync_at = time.monotonic() + RESYNC_INTERVAL
                provider = self.provider
            try:
                if provider is None:
                    pass
                elif self.zk.zk_client.connected:
                    started = time.monotonic()
                    self._sync(provider)
                    self.last_sync_started = started
                else:
                    self._retry_later("connection", time.monotonic() + 1.0)
            except Exception:
                log.exception("Error registering the nodes of provider %s", self.name)
                self._retry_later("error", time.monotonic() + ERROR_RETRY)

    def _sync(self, provider: Provider) -> None:
        """Deregister free records of removed endpoints; look at every
        endpoint in the thread pool."""
        specs = {spec.key: spec for spec in provider.registered_endpoints()}
        with self._cond:
            if self.provider is not provider:
                return  # replaced meanwhile: a pass for the new one follows
            self._specs = specs
        for node in self._records():
            if node.state == models.READY and provider.endpoint_key(node) not in specs:
                self._deregister(node, "its endpoint was removed from the configuration")
        for key in specs:
            self._schedule(key)

    def _schedule(self, key: Hashable) -> None:
        with self._tasks_lock:
            if key in self._tasks:
                self._tasks[key] = "again"
                return
            self._tasks[key] = "running"
        try:
            assert self._executor is not None
            self._executor.submit(self._run_endpoint, key)
        except RuntimeError:  # shut down meanwhile
            with self._tasks_lock:
                self._tasks.pop(key, None)

    def _run_endpoint(self, key: Hashable) -> None:
        while True:
            with self._cond:
                provider, spec = self.provider, self._specs.get(key)
            if spec is not None and provider is not None and self._running:
                started = time.monotonic()
                try:
                    self.sync_endpoint(provider, spec)
                    self.looked_at[key] = started
                except RegistrationDeferred as e:
                    log.warning("Registration of %s deferred: %s", spec.description, e)
                    self._retry_later(key, time.monotonic() + ERROR_RETRY)
                except Exception:
                    log.exception("Error registering %s", spec.description)
                    self._retry_later(key, time.monotonic() + ERROR_RETRY)
            with self._tasks_lock:
                if self._tasks.get(key) == "again" and self._running:
                    self._tasks[key] = "running"
                    continue
                self._tasks.pop(key, None)
            return

    # One endpoint ------------------------------------------------------

    def sync_endpoint(self, provider: Provider, spec: EndpointSpec) -> None:
        """Bring one endpoint's records in line (synchronously).  The
        endpoint is contacted only when there is something to register or
        rewrite, and when its backoff allows.  Raises RegistrationDeferred
        when the records could not be compared safely."""
        health = self.health(spec)
        # A first look from the cache (it may lag): is there work at all?
        view = self._view(provider, spec)
        free = [n for n in view.records if is_free(n)]
        stale = [n for n in free if not provider.endpoint_record_current(n, spec)]
        if not (view.excess or view.empty or stale):
            return
        learned: dict[str, Any] | None = None
        problem: EndpointProblem | None = None
        if view.empty or stale:
            if health.due():
                try:
                    learned = provider.check_endpoint(spec)
                except EndpointProblem as e:
                    problem = e
                    health.record_problem(e)
                else:
                    health.record_ok()
            if learned is None:
                self._retry_later(spec.key, health.next_try)
        if self._stopped or not view.excess and (problem is None and learned is None
                                                 or problem is not None and not free):
            return
        with self._registration_lock():
            view = self._view(provider, spec)
            for node in view.excess:
                self._deregister(node, f"more records than its {spec.slots} slot(s)")
            if problem is not None:
                for node in view.records:
                    self._deregister(node, f"not offered ({problem.kind})")
            elif learned is not None:
                fields = {**provider.endpoint_record(spec), **learned}
                for slot in view.empty:
                    if self._stopped:
                        return
                    self._register(spec, slot, fields)
                for node in view.records:
                    self._rewrite(node, spec, fields)

    @contextlib.contextmanager
    def _registration_lock(self) -> Iterator[None]:
        """Hold the provider's registration lock, with the node cache up to
        date (see the module docstring)."""
        with self._commit_lock:
            try:
                lock = self.zk.lock_registration(self.name, timeout=self.lock_timeout,
                                                 identifier=self.identifier)
            except ZKLockException as e:
                raise RegistrationDeferred(
                    f"registration lock of provider {self.name} not taken: {e}") from e
            try:
                if self.node_cache is not None and not self.node_cache.barrier(
                        BARRIER_TIMEOUT):
                    raise RegistrationDeferred(
                        f"the node cache did not catch up within {BARRIER_TIMEOUT:g} s")
                yield
            finally:
                self.zk.unlock(lock)

    def _records(self) -> list[Node]:
        """This provider's records (from the cache when there is one)."""
        if self.node_cache is not None:
            nodes = self.node_cache.items()
        else:
            nodes = self.zk.get_nodes(with_locks=True)
        return [n for n in nodes if n.provider == self.name]

    def _view(self, provider: Provider, spec: EndpointSpec) -> SlotView:
        mine = [n for n in self._records() if provider.endpoint_key(n) == spec.key]
        return slot_view(spec.slots, mine)

    def _register(self, spec: EndpointSpec, slot: int, fields: dict[str, Any]) -> None:
        node = new_record(fields, slot)
        self.zk.store_node(node)
        log.info("Registered node %s: %s slot %d (provider %s)", node.id,
                 spec.description, slot, self.name)

    def _rewrite(self, cached: Node, spec: EndpointSpec, fields: dict[str, Any]) -> None:
        if not is_free(cached) or self._stopped:
            return
        probe = Node.fromDict(cached.toDict(), cached.id)
        if not apply_fields(probe, fields):
            return
        node = self.zk.try_lock_node(str(cached.id))
        if node is None:
            return
        try:
            if node.state != models.READY or node.allocated_to:
                return
            if apply_fields(node, fields):
                self.zk.store_node(node)
                log.info("Updated node %s (%s) to the current configuration",
                         node.id, spec.description)
        finally:
            self.zk.unlock_node(node)

    def _deregister(self, cached: Node, reason: str) -> bool:
        """Mark a free record ``deleting`` (the deleter removes it);
        records in use are left to come back."""
        if not is_free(cached) or self._stopped:
            return False
        node = self.zk.try_lock_node(str(cached.id))
        if node is None:
            return False
        try:
            if node.state != models.READY or node.allocated_to:
                return False
            node.state = models.DELETING
            self.zk.store_node(node)
        finally:
            self.zk.unlock_node(node)
        log.info("Deregistered node %s (%s slot %s, provider %s): %s", node.id,
                 node.hostname, node.slot, self.name, reason)
        return True


def refill_after_delete(zk: ZooKeeper, provider: Provider, node: Node,
                        timeout: float) -> bool:
    """Register the slot ``node`` (just deleted) held again, from a process
    that runs no registrar (``nodepool delete --now``).  An endpoint whose
    check fails is left for a launcher.  False when the records could not
    be compared safely within ``timeout`` (the registration lock is held
    elsewhere); a launcher serving the provider then does it."""
    key = provider.endpoint_key(node)
    spec = next((s for s in provider.registered_endpoints() if s.key == key), None)
    if spec is None:
        return True
    registrar = Registrar(provider.provider.name, zk, lock_timeout=timeout)
    registrar.serve(provider)
    try:
        registrar.sync_endpoint(provider, spec)
    except RegistrationDeferred as e:
        log.warning("Slot of node %s not registered again: %s", node.id, e)
        return False
    except Exception:
        log.exception("Error registering the slot of node %s again", node.id)
        return False
    return True
