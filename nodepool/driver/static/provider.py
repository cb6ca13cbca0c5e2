"""The static provider: existing hosts offered as READY nodes.

It never launches anything.  Its hosts are registered as READY node
records in the background (:mod:`nodepool.driver.static.registrar`), the
pool worker hands those out by reuse, and after a job the deleter removes
the used record and calls :meth:`StaticProvider.node_deleted`, which
registers a fresh record for the same slot once the host answers again.

The quota-style methods the launcher calls on every provider answer as
for a pool that is always full: requests wait for a free host instead of
launching, and are declined only when no combination of the configured
hosts could ever serve them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, ClassVar

from nodepool.driver import Provider
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.static import records
from nodepool.driver.static.capacity import max_assignable
from nodepool.driver.static.hosts import HostProblem, tcp_check
from nodepool.driver.static.registrar import Registrar, host_label
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.static")


class StaticProvider(Provider):
    """A live static provider: registers its hosts and checks them."""

    launches_nodes: ClassVar[bool] = False

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.zk: Any = None
        self.registrar: Registrar | None = None

    # Lifecycle -----------------------------------------------------------

    def start(self, zk: Any, node_cache: Any = None, image_cache: Any = None) -> None:
        self.zk = zk
        self.registrar = Registrar(self, zk, node_cache)
        self.registrar.start()

    def stop(self) -> None:
        if self.registrar is not None:
            self.registrar.stop()

    def join(self) -> None:
        if self.registrar is not None:
            self.registrar.join(10)

    # Hosts ----------------------------------------------------------------

    def host_for(self, node: Node) -> Any:
        """The configured host a record belongs to, or None."""
        identity = records.identity_of(node)
        for pool in self.provider.pools.values():
            for host in getattr(pool, "nodes", []):
                if host.identity == identity:
                    return host
        return None

    def check_reusable(self, node: Node) -> bool:
        """Whether a ready record may be handed out: its host is still
        configured and accepts a TCP connection within its ``timeout``.

        ``node`` is locked by the caller.  A dead host's record is marked
        ``deleting`` here (the deleter removes it and the registrar
        registers the slot again once the host answers), so the request
        waits for another host instead of getting a node Zuul cannot use.
        """
        host = self.host_for(node)
        if host is None:
            reason = "its host is no longer configured"
        elif not host.host_key_checking:
            # No contact wanted (the launcher may not reach the host).
            return True
        else:
            try:
                tcp_check(host)
                return True
            except HostProblem as problem:
                if self.registrar is not None:
                    self.registrar.health(host).record_problem(problem)
                reason = str(problem)
        log.warning("Static node %s (%s) is not handed out: %s", node.id,
                    node.hostname, reason)
        try:
            node.state = models.DELETING
            self.zk.store_node(node)
        except Exception:
            log.exception("Could not deregister static node %s", node.id)
        if self.registrar is not None:
            self.registrar.request_sync()
        return False

    def node_deleted(self, node: Node) -> None:
        """A record of ours is gone: refill its slot (in the background,
        after checking the host)."""
        if self.registrar is not None:
            self.registrar.shared.forget_node(str(node.id))
            self.registrar.request_sync()

    def delete_node(self, node: Node) -> None:
        """Nothing to release: the host stays, only its record goes."""

    def settle(self, timeout: float) -> bool:
        """Wait for the registrar's pending looks (a slot freed by
        ``node_deleted`` registered again, or its host found unreachable
        and left for a later retry)."""
        if self.registrar is None:
            return True
        return self.registrar.settle(timeout)

    # What the pool worker asks -----------------------------------------------

    def max_nodes_for(self, labels: Iterable[str], pool: Any = None) -> int:
        """How many of ``labels`` (one node each) the configured hosts of
        ``pool`` (all pools if None) could serve at the same time; a
        request asking for more can never be served and is declined.

        Unreachable hosts count: they may come back.
        """
        pools = [pool] if pool is not None else list(self.provider.pools.values())
        hosts = [(host.labels, host.max_parallel_jobs)
                 for p in pools for host in getattr(p, "nodes", [])]
        served = max_assignable(labels, hosts)
        limits = [p.max_servers for p in pools]
        return int(min(served, sum(limits))) if limits else served

    def label_ready(self, label: Any) -> bool:
        return True

    def label_error(self, label: Any) -> str | None:
        return None

    def quota_for_label(self, label: Any) -> QuotaInformation:
        return QuotaInformation(instances=1)

    def available_quota(self, pool: Any) -> QuotaInformation:
        """Never room for a new node: static pools only reuse."""
        return QuotaInformation(instances=0)

    def can_ever_fit(self, pool: Any, need: QuotaInformation) -> bool:
        slots = sum(host.max_parallel_jobs for host in getattr(pool, "nodes", []))
        return need.get("instances") <= slots

    def image_external_id(self, label: Any) -> tuple[str | None, str | None]:
        return None, None

    def choose_az(self, pool: Any) -> str | None:
        return None

    def cleanup_leaked_resources(self) -> dict[str, int]:
        """No cloud to leak into; use the periodic pass to re-check hosts
        (records deleted behind our back, hosts that came back)."""
        if self.registrar is not None:
            self.registrar.request_sync()
        return {}

    def describe_hosts(self) -> list[dict[str, Any]]:
        """Each host's health, for operators and tests."""
        out: list[dict[str, Any]] = []
        if self.registrar is None:
            return out
        for pool, host in self.registrar.configured().values():
            health = self.registrar.health(host)
            out.append({"pool": pool.name, "host": host_label(host), "state": health.state,
                        "reason": health.reason})
        return out
