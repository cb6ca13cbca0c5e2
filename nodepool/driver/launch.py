"""Launching one node: the framework's side of a launch, for every driver.

A :class:`Launch` is a :class:`~nodepool.driver.runner.Task`: the
provider's step runner advances it in short steps, so a launch holds no
thread while its cloud works.  It owns what is the same for every cloud:
the node record (created ``init``, locked, ``building``), the attempts
(``launch-retries`` in all, each bounded by ``launch-timeout``, each
failed one deleting its half-built server before the next), the host-key
scan (bounded by ``boot-timeout``), the outcome (``ready``, ``failed``, or
``aborted`` when the cloud had no quota: the request then waits, it is not
failed) and its metrics.

``nodepool.launch.*`` metrics are counted as upstream counts them: each
failed attempt once, under its own error kind (three attempts that each
time out count three ``error.servercreatetimeout``); a quota refusal, a
lost ZooKeeper session and a ready node once, when the launch ends.  The
timer runs from the node record's creation, across attempts.

Its progress is stored in the node record (``external_id`` and
``launch_progress``) whenever it changes, so a launcher that takes the
node over after the owner died resumes the launch where it stood:
:meth:`Launch.resume` rebuilds it from the record.  A record that is
ready carries no ``launch_progress`` and looks exactly like upstream's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import KazooException

from nodepool import stats as statsmod
from nodepool.driver import nodescan
from nodepool.driver.adapter import (
    META_NODE_ID,
    META_POOL,
    META_PROVIDER,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
)
from nodepool.driver.runner import Task
from nodepool.exceptions import (
    LaunchError,
    LaunchKeyscanException,
    NotFound,
    QuotaException,
    ServerCreateTimeout,
)
from nodepool.zk import ZKLockException, models
from nodepool.zk.exceptions import LockOutcomeUnknown
from nodepool.zk.models import Node

if TYPE_CHECKING:
    from nodepool.driver.adapter_provider import AdapterProvider

# Outcomes of a launch.
RUNNING = "running"
READY = models.READY
FAILED = models.FAILED
ABORTED = models.ABORTED

# Steps of a launch, as stored in ``launch_progress["step"]``.
STEP_RECORD = "record"
STEP_CREATE = "create"
STEP_SCAN = "scan"
STEP_CLEANUP = "cleanup"

# How long a half-built server may take to go away before the launch
# gives up on it (the leak cleanup finds it later by its metadata).
CLEANUP_TIMEOUT = 600.0
# First pause while waiting on the cloud; doubled up to the adapter's
# poll_interval.
FIRST_POLL = 0.02
# Pause between two host-key scan attempts.
SCAN_RETRY = 1.0
# Progress within a step is stored at most this often (see Launch._save).
PROGRESS_INTERVAL = 1.0
# Pause before a step interrupted by a dropped ZooKeeper connection is
# tried again.
ZK_RETRY = 0.5


class NodeLogger(logging.LoggerAdapter):
    """Prefixes messages with the request and node, as upstream does."""

    def process(self, msg, kwargs):
        extra = self.extra or {}
        prefix = ""
        if extra.get("event_id"):
            prefix += f"[e: {extra['event_id']}] "
        if extra.get("request"):
            prefix += f"[node_request: {extra['request']}] "
        if extra.get("node"):
            prefix += f"[node: {extra['node']}] "
        return prefix + str(msg), kwargs


class LaunchHandle:
    """What a request handler sees of a launch: ``state`` becomes READY,
    FAILED or ABORTED, then ``done`` is set."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.state = RUNNING
        self.error: str | None = None
        self.done = threading.Event()
        # Set once the node record exists (or its creation failed).
        self.record_created = threading.Event()
        if node.id is not None:
            self.record_created.set()
        self.launch: Launch | None = None

    def cancel(self) -> None:
        """Stop advancing the launch and leave the node as it is, for a
        launcher that takes it over (shutdown, session loss)."""
        if self.launch is not None:
            self.launch.abandon()

    @property
    def complete(self) -> bool:
        return self.done.is_set()


class Launch(Task):
    """One node's launch, advanced by the provider's step runner."""

    def __init__(self, *, provider: AdapterProvider, node: Node, label: Any, pool: Any,
                 request: Any, image_external_id: str | None, handle: LaunchHandle,
                 on_done: Callable[[LaunchHandle], None] | None = None,
                 reservation: Any = None, ready_state: str = models.READY) -> None:
        self.provider = provider
        self.adapter = provider.adapter
        self.zk = provider.zk
        self.node = node
        self.label = label
        self.pool = pool
        self.request = request
        self.image_external_id = image_external_id
        self.handle = handle
        handle.launch = self
        self.on_done = on_done
        self.reservation = reservation
        # The state a launched node is stored in: ``ready`` for requests;
        # ``testing`` for a node nobody may be handed (an image check's).
        self.ready_state = ready_state
        settings = provider.provider
        self.retries = max(1, settings.launch_retries)
        self.launch_timeout = float(settings.launch_timeout)
        self.boot_timeout = float(settings.boot_timeout)
        self.session_generation = self.zk.zk_client.session_generation
        self.log_context: dict[str, Any] = {
            "event_id": request.event_id if request is not None else None,
            "request": request.id if request is not None else None,
            "node": node.id}
        self.log = NodeLogger(logging.getLogger("nodepool.NodeLauncher"), self.log_context)
        # A node with an id is either stored and locked by the caller (the
        # launch starts at the cloud) or was stored unlocked in ``init``
        # for this launch just before (see NodeRequestHandler.
        # prepare_new_nodes): the launch locks it first.
        self._lock_new_record = node.id is not None and node.lock is None
        self.step_name = STEP_RECORD if node.id is None or self._lock_new_record else STEP_CREATE
        # Whether the reservation counts the record (see _record_created).
        self._bound = False
        self.attempt = 1
        # Wall-clock start of the current attempt or scan (stored, so a
        # launcher resuming the launch keeps the same deadlines).
        self.started = time.time()
        self.create_op: CreateOperation | None = None
        self.delete_op: DeleteOperation | None = None
        self.instance: Instance | None = None
        # What to do once the half-built server is gone: try again, or
        # end with this outcome.
        self.after_cleanup: str | None = None
        # The metric a launch aborted for lack of quota (or capacity) counts.
        self._abort_stat = QuotaException.statsd_key
        self._scan: Future | None = None
        self._poll = FIRST_POLL
        self._saved: Any = None
        self._saved_at = time.monotonic()
        self._abandoned = False
        # The lock of a locking write whose reply was lost (_lock_again).
        self._unconfirmed_lock: Any = None
        self._clock = time.monotonic()
        if self._lock_new_record:
            # The record exists already: the ledger counts it by its id.
            self._record_created()

    def __repr__(self) -> str:
        return f"<Launch node {self.node.id} {self.step_name}>"

    # Resuming ---------------------------------------------------------------

    def resume_from_record(self) -> None:
        """Continue from the progress stored in the (locked) node record."""
        if self.node.state == models.INIT:
            # Created, never locked: the launch had not begun.
            self.node.state = models.BUILDING
            self.node.hostname = self.provider.hostname_for(self.node)
            self._save(force=True)
        progress = self.node.launch_progress or {}
        step = progress.get("step")
        self.attempt = int(progress.get("attempt") or 1)
        self.started = float(progress.get("started") or time.time())
        op = progress.get("op")
        if step == STEP_SCAN and self.node.interface_ip:
            # A fresh boot-timeout window: the host may have been up for a
            # while, or the scan may have been cut short by the crash.
            self.step_name = STEP_SCAN
            self.started = time.time()
        elif step == STEP_CLEANUP and self.node.external_id is not None:
            self.step_name = STEP_CLEANUP
            self.after_cleanup = progress.get("after") or "retry"
            self.delete_op = self.adapter.delete(self.node.external_id, op)
        elif self.node.external_id is not None and op:
            self.step_name = STEP_CREATE
            self.create_op = self.adapter.create(self._spec(), op, self.node.external_id)
        else:
            # The create call may have been made without its answer being
            # stored: a server carrying this node's id is deleted first.
            self.step_name = STEP_CREATE
            orphan = self._find_orphan()
            if orphan is not None:
                self.node.external_id = orphan
                self._begin_cleanup("retry", self.attempt - 1)
        self.log.info("Resuming launch at step %s (attempt %d/%d)",
                      self.step_name, self.attempt, self.retries)

    def _find_orphan(self) -> Any:
        try:
            for instance in self.adapter.list_instances():
                meta = instance.metadata or {}
                if (meta.get(META_NODE_ID) == self.node.id
                        and meta.get(META_PROVIDER) == self.provider.provider.name):
                    return instance.external_id
        except Exception:
            self.log.exception("Could not look for a server of this node")
        return None

    # The task ---------------------------------------------------------------

    def abandon(self) -> None:
        """Stop here without touching the record (see LaunchHandle.cancel)."""
        self._abandoned = True
        self.provider.runner.wake(self)

    def abandon_now(self) -> None:
        """End without touching the record, from outside the runner (used
        once the runner is stopped and no step of this launch runs)."""
        self._abandoned = True
        self._end(FAILED, "launch abandoned (provider stopped)", store=False)

    def step(self) -> float | None:
        if self._abandoned or self._session_lost():
            self._end(FAILED, "launch abandoned (shutdown or ZooKeeper session lost)",
                      store=False, stat=statsmod.ERROR_ZKSESSION
                      if self._session_lost() else None)
            return None
        try:
            if self.step_name == STEP_RECORD:
                return self._create_record()
            if self.step_name == STEP_CREATE:
                return self._create()
            if self.step_name == STEP_SCAN:
                return self._scan_keys()
            return self._cleanup()
        except QuotaException as e:
            self.log.info("Cloud is out of quota: %s", e)
            self.provider.invalidate_quota()
            self._abort_stat = e.statsd_key
            self._fail_attempt(e, ABORTED)
        except Exception as e:
            if self._session_lost():
                self.log.warning("Launch interrupted: ZooKeeper session lost (%s)", e)
                self._end(FAILED, f"ZooKeeper session lost during launch: {e}",
                          store=False, stat=statsmod.launch_result_key(e, session_lost=True))
                return None
            if isinstance(e, KazooException):
                # The connection dropped; the session (and our locks) may
                # well survive.  Try the step again once it is back (a
                # write that did land is written again, which is harmless).
                self.log.info("ZooKeeper unavailable during launch (%s); retrying", e)
                return ZK_RETRY
            self._fail_attempt(e, None)
        return 0.0 if self.step_name else None

    def crashed(self, error: BaseException) -> None:
        self._end(FAILED, f"internal error: {error}")

    # Steps ------------------------------------------------------------------

    def _create_record(self) -> float | None:
        """Store a new node: created unlocked in ``init`` (not a cleanup
        state), then locked and ``building`` in one transaction, so no
        deleter can take it."""
        node = self.node
        if self._lock_new_record:
            # Stored for us, unlocked: lock it (one round trip).
            self._lock_new_record = False
            try:
                self.zk.lock_new_node(node, self._begin_building)
            except ZKLockException:
                # Touched meanwhile: lock it as any record.
                return self._lock_record()
            except LockOutcomeUnknown as e:
                self._lock_again(e)
                raise
            self._saved = (node.external_id, node.launch_progress)
            self.log.info("Launching node (%s) in %s", ",".join(node.type), node.az)
            return 0.0
        if node.id is not None:
            # A retry after a dropped connection: the record exists.
            return self._lock_record()
        try:
            self.zk.create_locked_node(node, self._begin_building)
        except Exception as e:
            if node.id is not None:
                # Created, maybe not locked (the connection dropped): lock
                # it on the next step.
                self._record_created()
                if isinstance(e, LockOutcomeUnknown):
                    self._lock_again(e)
                raise
            self.handle.error = f"could not create node record: {e}"
            self.handle.record_created.set()
            self.provider.quota.release(self.reservation)
            # A dropped connection is transient: the request waits and
            # launches again (like a quota refusal), it is not declined.
            outcome = ABORTED if isinstance(e, KazooException) else FAILED
            self.log.warning("Could not create the node record: %s", e)
            # No launch began, so none is counted (as upstream, whose
            # handler makes the record).
            self._end(outcome, self.handle.error, store=False)
            return None
        self._record_created()
        self._saved = (node.external_id, node.launch_progress)
        self.log.info("Launching node (%s) in %s", ",".join(node.type), node.az)
        return 0.0

    def _record_created(self) -> None:
        if self._bound:
            return
        self._bound = True
        self.handle.record_created.set()
        self._clock = time.monotonic()
        self.provider.quota.bind(self.reservation, self.node.id)
        self.log_context["node"] = self.node.id

    def _begin_building(self, node: Node) -> None:
        node.state = models.BUILDING
        node.hostname = self.provider.hostname_for(node)
        self.step_name = STEP_CREATE
        self.started = time.time()
        node.launch_progress = self._progress()

    def _lock_again(self, unknown: LockOutcomeUnknown) -> None:
        """The transaction that locks the new record and marks it
        ``building`` may have landed without its reply: the step is tried
        again with the same lock, which finds its contender if so (another
        would wait behind ours for good).  Until then the record is not
        ours, whatever the preparation for the write set."""
        self.step_name = STEP_RECORD
        self._unconfirmed_lock = unknown.lock

    def _lock_record(self) -> float | None:
        node = self.node
        if node.lock is None:
            self.zk.lock_node(node, blocking=True, timeout=30, lock=self._unconfirmed_lock)
            self._unconfirmed_lock = None
        self._begin_building(node)
        self._save(force=True)
        self.log.info("Launching node (%s) in %s", ",".join(node.type), node.az)
        return 0.0

    def _spec(self) -> LaunchSpec:
        return LaunchSpec(
            hostname=self.provider.hostname_for(self.node), label=self.label, pool=self.pool,
            image_external_id=self.image_external_id, metadata={
                META_PROVIDER: self.provider.provider.name,
                META_POOL: self.pool.name,
                META_NODE_ID: str(self.node.id),
            }, az=self.node.az, request=self.request, log=self.log)

    def _create(self) -> float:
        if self.create_op is None:
            self.create_op = self.adapter.create(self._spec())
            self.started = time.time()
            self._poll = FIRST_POLL
        op = self.create_op
        if time.time() - self.started > self.launch_timeout:
            raise ServerCreateTimeout(
                f"server {op.external_id} not active within the launch-timeout of "
                f"{self.launch_timeout:.0f} s (step {op.step}, status {op.status or 'unknown'})")
        instance = op.advance()
        if op.external_id is not None and op.external_id != self.node.external_id:
            self.node.external_id = op.external_id
        if instance is None:
            self._save()
            return self._next_poll(op.poll_after)
        self.instance = instance
        self._apply_instance(instance)
        self.create_op = None
        self.step_name = STEP_SCAN
        self.started = time.time()
        if instance.host_keys is None and self.label.host_key_checking:
            # A scan ahead: record that the server is up (and where).
            self._save(force=True)
        return 0.0

    def _next_poll(self, wanted: float | None) -> float:
        if wanted is not None:
            return wanted
        delay = self._poll
        self._poll = min(self._poll * 2, self.adapter.poll_interval)
        return delay

    def _apply_instance(self, instance: Instance) -> None:
        node = self.node
        node.external_id = instance.external_id
        node.public_ipv4 = instance.public_ipv4
        node.private_ipv4 = instance.private_ipv4
        node.public_ipv6 = instance.public_ipv6
        interface_ip = instance.interface_ip
        if self.pool.use_internal_ip and instance.private_ipv4:
            interface_ip = instance.private_ipv4
        node.interface_ip = interface_ip
        node.az = instance.az or node.az
        node.region = instance.region
        node.cloud = instance.cloud
        node.host_id = instance.host_id
        node.driver_data = instance.driver_data
        if instance.slot is not None:
            node.slot = instance.slot
        if instance.node_properties is not None:
            node.node_properties = instance.node_properties
        if instance.node_attributes is not None:
            node.attributes = {**instance.node_attributes, **(node.attributes or {})}
        if instance.username is not None:
            node.username = instance.username
        if instance.python_path is not None:
            node.python_path = instance.python_path
        if instance.shell_type is not None:
            node.shell_type = instance.shell_type
        if instance.connection_type is not None:
            node.connection_type = instance.connection_type
        if instance.connection_port is not None:
            node.connection_port = instance.connection_port
        if instance.quota is not None:
            node.resources = instance.quota.to_dict()
        if instance.host_keys is not None:
            node.host_keys = list(instance.host_keys)

    def _scan_keys(self) -> float | None:
        node = self.node
        instance = self.instance
        if instance is not None and instance.host_keys is not None:
            return self._ready()
        if not self.label.host_key_checking:
            node.host_keys = []
            return self._ready()
        if not node.interface_ip:
            raise LaunchError("the server has no IP address to connect to")
        remaining = self.started + self.boot_timeout - time.time()
        if self._scan is None:
            if remaining <= 0:
                raise LaunchKeyscanException(
                    f"could not get host keys from {node.interface_ip} within "
                    f"{self.boot_timeout:.0f} s")
            self._scan = nodescan.scan_once_async(
                node.interface_ip, int(node.connection_port or 22),
                node.connection_type or "ssh", min(nodescan.ATTEMPT_TIMEOUT, remaining))
            self._scan.add_done_callback(lambda f: self.provider.runner.wake(self))
            return nodescan.ATTEMPT_TIMEOUT + 1
        if not self._scan.done():
            return 1.0
        future, self._scan = self._scan, None
        try:
            node.host_keys = future.result()
        except Exception as e:
            if remaining <= 0:
                raise LaunchKeyscanException(
                    f"could not get host keys from {node.interface_ip}:"
                    f"{node.connection_port} within {self.boot_timeout:.0f} s ({e})") from e
            return min(SCAN_RETRY, max(0.0, remaining))
        return self._ready()

    def _ready(self) -> float | None:
        self.node.state = self.ready_state
        self.node.launch_progress = None
        self._store()
        self.log.info("Node is %s (%s) after %d attempt(s)", self.ready_state,
                      self.node.interface_ip, self.attempt)
        self._end(READY, None, stat=statsmod.READY)
        return None

    def _cleanup(self) -> float | None:
        op = self.delete_op
        if op is None:
            return self._after_cleanup()
        if time.time() - self.started > CLEANUP_TIMEOUT:
            self.log.error("Half-built server %s still there after %.0f s; leaving it "
                           "to the leak cleanup", op.external_id, CLEANUP_TIMEOUT)
            return self._after_cleanup()
        try:
            gone = op.advance()
        except NotFound:
            gone = True
        except Exception as e:
            self.log.warning("Deleting half-built server %s: %s", op.external_id, e)
            return self._next_poll(None)
        if not gone:
            self._save()
            return self._next_poll(op.poll_after)
        return self._after_cleanup()

    def _after_cleanup(self) -> float | None:
        self.delete_op = None
        self.node.external_id = None
        outcome, self.after_cleanup = self.after_cleanup, None
        if outcome and outcome != "retry":
            self._end(outcome, self.handle.error,
                      stat=self._abort_stat if outcome == ABORTED else None)
            return None
        self.attempt += 1
        self.step_name = STEP_CREATE
        self.started = time.time()
        self._save(force=True)
        return 0.0

    # Failures -----------------------------------------------------------------

    def _fail_attempt(self, error: Exception, outcome: str | None) -> None:
        """An attempt failed: delete its server, then retry or end."""
        self.handle.error = str(error)
        if outcome is None:
            self._count(statsmod.launch_result_key(error))
            self._console_log()
            final = self.attempt >= self.retries
            (self.log.error if final else self.log.warning)(
                "Launch attempt %d/%d failed: %s", self.attempt, self.retries, error)
            outcome = FAILED if final else "retry"
        if self.create_op is not None and self.create_op.external_id is not None:
            self.node.external_id = self.create_op.external_id
        self.create_op = None
        self._scan = None
        try:
            self.adapter.launch_attempt_failed(self.node.external_id, error)
        except Exception:
            self.log.exception("Error telling the adapter of the failed attempt")
        self._begin_cleanup(outcome, self.attempt)

    def _begin_cleanup(self, outcome: str, attempt: int) -> None:
        self.attempt = max(attempt, 0)
        self.after_cleanup = outcome
        self.step_name = STEP_CLEANUP
        self.started = time.time()
        external_id = self.node.external_id
        self.delete_op = self.adapter.delete(external_id) if external_id is not None else None
        self._poll = FIRST_POLL
        try:
            self._save(force=True)
        except Exception:
            self.log.exception("Could not record the failed attempt")

    def _console_log(self) -> None:
        if not self.label.console_log or self.node.external_id is None:
            return
        try:
            text = self.adapter.get_console_log(self.node.external_id)
        except Exception as e:
            text = f"(console log unavailable: {e})"
        self.log.info("Console log of %s:\n%s", self.node.external_id, text)

    # Records ---------------------------------------------------------------------

    def _session_lost(self) -> bool:
        return self.zk.zk_client.session_generation != self.session_generation

    def _progress(self) -> dict[str, Any]:
        progress: dict[str, Any] = {"step": self.step_name, "attempt": self.attempt,
                                    "started": self.started}
        op = self.create_op if self.step_name == STEP_CREATE else (
            self.delete_op if self.step_name == STEP_CLEANUP else None)
        if op is not None:
            progress["op"] = op.progress()
        if self.step_name == STEP_CLEANUP:
            progress["after"] = self.after_cleanup
        return progress

    def _save(self, force: bool = False) -> None:
        """Store the launch's progress if it changed since last stored.

        Changes inside one step (an operation's progress, the external
        id) are stored at most every PROGRESS_INTERVAL: a launch that dies
        before is resumed from the step's start, and a server it made
        meanwhile is found by its metadata (see resume_from_record), so a
        fast cloud costs no extra writes.
        """
        progress = self._progress()
        snapshot = (self.node.external_id, progress)
        if not force and snapshot == self._saved:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < PROGRESS_INTERVAL:
            # (The next poll of the cloud stores it.)
            return
        self.node.launch_progress = progress
        self._store()
        self._saved = snapshot
        self._saved_at = now

    def _store(self) -> None:
        if self._session_lost():
            # Our lock went with the old session; someone else may be
            # acting on this node.  Writing now could resurrect it.
            raise LaunchError("ZooKeeper session lost during launch")
        self.zk.store_node(self.node)

    def _count(self, key: str) -> None:
        """Send ``nodepool.launch.*.<key>`` (timer and counter)."""
        try:
            statsmod.get_stats().launch_result(
                result=key, provider=self.provider.provider.name, az=self.node.az,
                requestor=self.request.requestor if self.request is not None else None,
                ms=(time.monotonic() - self._clock) * 1000, label=self.label.name)
        except Exception:
            self.log.exception("Could not send launch metrics")

    def _end(self, outcome: str, error: str | None, store: bool = True,
             stat: str | None = None) -> None:
        """Finish with ``outcome``; ``stat`` is the metric key to count
        now (None when the failure was counted per attempt)."""
        if self.handle.complete:
            return
        self.step_name = ""
        node = self.node
        if outcome != READY:
            # The node counts through its record while that lasts.  Kept,
            # the reservation would count it, and shield its cloud
            # resources from the leak cleanup, for up to RESERVATION_TTL
            # after the record is gone, unless a quota check happened to
            # see the record in between.
            self.provider.quota.release(self.reservation)
        if outcome != READY and store and node.id is not None:
            try:
                node.state = outcome
                node.launch_progress = None
                self._store()
            except Exception:
                self.log.exception("Could not record launch result %s", outcome)
        if outcome != READY and not store and node.lock is not None and self._session_lost():
            # A lock taken in the new session would never be released.
            try:
                self.zk.unlock_node(node)
            except Exception:
                self.log.exception("Could not release node lock")
        if stat is not None:
            self._count(stat)
        self.handle.error = error if outcome != READY else None
        self.handle.state = outcome
        self.handle.done.set()
        self.provider.launch_finished(self.handle)
        if self.on_done is not None:
            try:
                self.on_done(self.handle)
            except Exception:
                self.log.exception("Error in launch completion callback")
