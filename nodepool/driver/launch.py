"""Launching one node through an adapter: retries, timeouts, host keys.

This is the framework's side of a launch, shared by every cloud driver.
The node arrives locked and ``building``; the launch ends with it
``ready``, ``failed`` or ``aborted`` (the cloud had no quota: the request
waits and tries again, it is not failed) and stored in ZooKeeper.  Every
failed attempt deletes its half-built server before the next one.

``nodepool.launch.*`` metrics are counted as upstream counts them: each
failed attempt once, under its own error kind (so three attempts that
each time out count three ``error.servercreatetimeout``); a quota refusal,
a lost ZooKeeper session and a ready node once, when the launch ends.  The
timer measures from the node record's creation, across attempts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException

from nodepool import stats as statsmod
from nodepool.driver.adapter import (
    META_NODE_ID,
    META_POOL,
    META_PROVIDER,
    Adapter,
    Instance,
    LaunchSpec,
)
from nodepool.driver.nodescan import scan_host_keys
from nodepool.exceptions import LaunchError, NotFound, QuotaException
from nodepool.zk import models
from nodepool.zk.models import Node

# Outcomes of a launch.
RUNNING = "running"
READY = models.READY
FAILED = models.FAILED
ABORTED = models.ABORTED


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
    """A launch in progress; ``state`` becomes READY, FAILED or ABORTED."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.state = RUNNING
        self.error: str | None = None
        self.done = threading.Event()
        # Set once the node record exists (or its creation failed).
        self.record_created = threading.Event()
        if node.id is not None:
            self.record_created.set()
        self.spec: LaunchSpec | None = None

    def cancel(self) -> None:
        if self.spec is not None:
            self.spec.cancelled.set()

    @property
    def complete(self) -> bool:
        return self.done.is_set()


class NodeLauncher:
    """Runs one node's launch (in a worker thread of the provider)."""

    def __init__(self, *, provider: Any, adapter: Adapter, zk: Any, node: Node,
                 label: Any, pool: Any, request: Any, image_external_id: str | None,
                 handle: LaunchHandle, retries: int, launch_timeout: float,
                 boot_timeout: float, session_generation: int,
                 on_done: Callable[[LaunchHandle], None] | None = None,
                 reservation: int | None = None) -> None:
        self.provider = provider
        self.adapter = adapter
        self.zk = zk
        self.node = node
        self.label = label
        self.pool = pool
        self.request = request
        self.image_external_id = image_external_id
        self.handle = handle
        self.retries = max(1, retries)
        self.launch_timeout = launch_timeout
        self.boot_timeout = boot_timeout
        self.session_generation = session_generation
        self.on_done = on_done
        self.reservation = reservation
        self.log_context: dict[str, Any] = {
            "event_id": getattr(request, "event_id", None),
            "request": getattr(request, "id", None), "node": node.id}
        self.log = NodeLogger(logging.getLogger("nodepool.NodeLauncher"), self.log_context)
        # When the launch proper began (the node record exists) and the
        # result still to be counted when it ends (None: nothing, e.g. the
        # failed attempt was counted already).
        self._started: float | None = None
        self._result_key: str | None = None

    # Helpers ------------------------------------------------------------

    def _session_lost(self) -> bool:
        client = self.zk.zk_client
        return client.session_generation != self.session_generation

    def _store(self) -> None:
        if self._session_lost():
            # Our lock went with the old session; someone else may be
            # deleting this node.  Writing now could resurrect it.
            raise LaunchError("ZooKeeper session lost during launch")
        self.zk.store_node(self.node)

    def _metadata(self) -> dict[str, str]:
        return {
            META_PROVIDER: self.provider.provider.name,
            META_POOL: self.pool.name,
            META_NODE_ID: self.node.id,
        }

    def _report_external_id(self, external_id: Any) -> None:
        self.node.external_id = external_id
        try:
            self._store()
        except Exception:
            self.log.exception("Could not record external id %s", external_id)

    def _delete_half_built(self) -> None:
        external_id = self.node.external_id
        if external_id is None:
            return
        try:
            self.adapter.delete_instance(external_id, self.log)
        except NotFound:
            pass
        except Exception:
            # The leak cleanup finds it later by its metadata.
            self.log.exception("Could not delete half-built server %s", external_id)
        self.node.external_id = None

    # The launch --------------------------------------------------------

    def _create_record(self) -> None:
        """Store a new node: created unlocked in ``init`` (not a cleanup
        state), locked, then ``building`` — so no deleter can take it."""
        node = self.node
        node.state = models.INIT
        try:
            self.zk.store_node(node)
        finally:
            self.handle.record_created.set()
        if self.reservation is not None:
            self.provider.bind(self.reservation, node.id)
        self.log_context["node"] = node.id
        self.zk.lock_node(node, blocking=True, timeout=30)
        node.state = models.BUILDING
        node.hostname = self.provider.hostname_for(node)
        self._store()
        self.log.info("Launching node (%s) in %s", ",".join(node.type), node.az)

    def run(self) -> None:
        result = FAILED
        try:
            if self.node.id is None:
                try:
                    self._create_record()
                except Exception as e:
                    self.handle.error = f"could not create node record: {e}"
                    if self.reservation is not None:
                        self.provider.unreserve(self.reservation)
                    # A dropped connection is transient: the request waits
                    # and launches again (like a quota refusal), it is not
                    # declined.  A record half made is cleaned up by the
                    # deleter.  No launch began, so none is counted (as
                    # upstream, whose handler makes the record).
                    outcome = (ABORTED if isinstance(e, KazooException)
                               and not self._session_lost() else FAILED)
                    self.log.warning("Could not create the node record: %s", e,
                                     exc_info=outcome == FAILED)
                    self._finish(outcome, store=self.node.id is not None)
                    return
            self._started = time.monotonic()
            result = self._launch()
        except Exception as e:
            self.log.exception("Launch failed")
            self.handle.error = str(e)
            self._result_key = statsmod.launch_result_key(
                e, session_lost=self._session_lost())
        finally:
            self._finish(result)

    def _launch(self) -> str:
        for attempt in range(1, self.retries + 1):
            if self.handle.spec is not None and self.handle.spec.cancelled.is_set():
                return FAILED
            spec = LaunchSpec(
                hostname=self.provider.hostname_for(self.node), label=self.label,
                image_external_id=self.image_external_id, metadata=self._metadata(),
                az=self.node.az, request=self.request,
                deadline=time.monotonic() + self.launch_timeout, log=self.log,
                report_external_id=self._report_external_id)
            self.handle.spec = spec
            try:
                instance = self.adapter.create_instance(spec)
                self._apply_instance(instance)
                self._scan_host_keys(instance)
                self.node.state = models.READY
                self._store()
                self.log.info("Node is ready (%s) after %d attempt(s)",
                              self.node.interface_ip, attempt)
                self._result_key = statsmod.launch_result_key(None)
                return READY
            except QuotaException as e:
                self.log.info("Cloud is out of quota: %s", e)
                self.handle.error = str(e)
                self._result_key = statsmod.launch_result_key(e)
                self.provider.invalidate_quota()
                self._delete_half_built()
                return ABORTED
            except Exception as e:
                self.handle.error = str(e)
                if self._session_lost():
                    self.log.warning("Lost ZooKeeper session during launch: %s", e)
                    self._result_key = statsmod.launch_result_key(e, session_lost=True)
                    self._delete_half_built()
                    return FAILED
                self._record_result(statsmod.launch_result_key(e))
                self._console_log()
                if attempt < self.retries:
                    self.log.warning("Launch attempt %d/%d failed: %s",
                                     attempt, self.retries, e)
                else:
                    self.log.error("Launch attempt %d/%d failed: %s",
                                   attempt, self.retries, e)
                self._delete_half_built()
                if attempt < self.retries:
                    try:
                        self._store()
                    except Exception:
                        return FAILED
        return FAILED

    def _record_result(self, key: str) -> None:
        """Send ``nodepool.launch.*.<key>`` (timer and counter)."""
        started = self._started if self._started is not None else time.monotonic()
        try:
            statsmod.get_stats().launch_result(
                result=key, provider=self.provider.provider.name, az=self.node.az,
                requestor=getattr(self.request, "requestor", None),
                ms=(time.monotonic() - started) * 1000)
        except Exception:
            self.log.exception("Could not send launch metrics")

    def _console_log(self) -> None:
        if not getattr(self.label, "console_log", False) or self.node.external_id is None:
            return
        try:
            text = self.adapter.get_console_log(self.node.external_id)
        except Exception as e:
            text = f"(console log unavailable: {e})"
        self.log.info("Console log of %s:\n%s", self.node.external_id, text)

    def _apply_instance(self, instance: Instance) -> None:
        node = self.node
        node.external_id = instance.external_id
        node.public_ipv4 = instance.public_ipv4
        node.private_ipv4 = instance.private_ipv4
        node.public_ipv6 = instance.public_ipv6
        interface_ip = instance.interface_ip
        if getattr(self.pool, "use_internal_ip", False) and instance.private_ipv4:
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
        for attr in ("username", "python_path", "shell_type", "connection_type",
                     "connection_port"):
            value = getattr(instance, attr)
            if value is not None:
                setattr(node, attr, value)
        if instance.quota is not None:
            node.resources = instance.quota.to_dict()
        self._store()

    def _scan_host_keys(self, instance: Instance) -> None:
        node = self.node
        if instance.host_keys is not None:
            node.host_keys = list(instance.host_keys)
            return
        if not getattr(self.label, "host_key_checking", True):
            node.host_keys = []
            return
        if not node.interface_ip:
            raise LaunchError("the server has no IP address to connect to")
        node.host_keys = scan_host_keys(
            node.interface_ip, int(node.connection_port or 22),
            timeout=self.boot_timeout,
            connection_type=node.connection_type or "ssh")

    def _finish(self, result: str, store: bool = True) -> None:
        node = self.node
        if result != READY and store:
            try:
                node.state = result
                if not self._session_lost():
                    self.zk.store_node(node)
            except Exception:
                self.log.exception("Could not record launch result %s", result)
        if self._session_lost() and node.lock is not None:
            # The handler that owned this node was abandoned with the old
            # session; a lock taken since then (in the new session) would
            # never be released, and the deleter could never clean up.
            try:
                self.zk.unlock_node(node)
            except Exception:
                self.log.exception("Could not release node lock")
        if self._result_key is not None:
            self._record_result(self._result_key)
        self.handle.state = result
        self.handle.done.set()
        if self.on_done is not None:
            try:
                self.on_done(self.handle)
            except Exception:
                self.log.exception("Error in launch completion callback")
