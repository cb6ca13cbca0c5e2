"""The static provider: existing hosts offered as READY nodes.

It never launches anything.  Each configured host is an endpoint with
``max-parallel-jobs`` slots; the framework keeps one READY record per
slot (:mod:`nodepool.driver.registrar`, started by the launcher) through
the endpoint hooks here: the hosts as endpoints, the record template of a
host slot, and the host check (TCP, SSH host-key scan and comparison).
The pool worker hands the records out by reuse; after a job the deleter
removes the used record and the registrar registers the slot again.

The quota-style methods the launcher calls on every provider answer as
for a pool that is always full: requests wait for a free host instead of
launching, and are declined only when no combination of the configured
hosts could ever serve them.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable
from typing import Any, ClassVar

from nodepool.driver import ConfigPool, Provider
from nodepool.driver.quota import QuotaInformation
from nodepool.driver.registration import EndpointSpec
from nodepool.driver.static import records
from nodepool.driver.static.capacity import max_assignable
from nodepool.driver.static.config import StaticHost, StaticPool, StaticProviderConfig
from nodepool.driver.static.hosts import HostProblem, check_host, tcp_check
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.static")


def host_label(host: StaticHost) -> str:
    return f"{host.name} port {host.connection_port} (user {host.username})"


class StaticProvider(Provider):
    """A live static provider: its hosts as endpoints, and their checks."""

    launches_nodes: ClassVar[bool] = False
    registers_endpoints: ClassVar[bool] = True

    provider: StaticProviderConfig

    def __init__(self, provider_config: StaticProviderConfig) -> None:
        super().__init__(provider_config)
        self.zk: Any = None

    def start(self, zk: Any, node_cache: Any = None, image_cache: Any = None) -> None:
        self.zk = zk

    def _pools(self) -> list[StaticPool]:
        return [pool for pool in self.provider.pools.values() if isinstance(pool, StaticPool)]

    # Endpoints (called by the framework's registrar) ----------------------------

    def registered_endpoints(self) -> list[EndpointSpec]:
        return [EndpointSpec(key=host.identity, pool=pool.name, slots=host.max_parallel_jobs,
                             description=f"Static host {host_label(host)}", config=host)
                for pool in self._pools() for host in pool.nodes]

    def endpoint_key(self, node: Node) -> Hashable:
        return records.identity_of(node)

    def _pool_and_host(self, spec: EndpointSpec) -> tuple[StaticPool, StaticHost]:
        pool = self.provider.pools[spec.pool]
        assert isinstance(pool, StaticPool) and isinstance(spec.config, StaticHost)
        return pool, spec.config

    def endpoint_record(self, spec: EndpointSpec) -> dict[str, Any]:
        pool, host = self._pool_and_host(spec)
        return records.config_fields(self.provider.name, pool, host)

    def endpoint_record_current(self, node: Node, spec: EndpointSpec) -> bool:
        return records.is_current(node, *self._pool_and_host(spec))

    def check_endpoint(self, spec: EndpointSpec) -> dict[str, Any]:
        """Contact the host as configured (see ``hosts.check_host``);
        raises HostProblem.  Returns the host keys to record and the
        addresses the name resolves to."""
        _, host = self._pool_and_host(spec)
        keys = check_host(host)
        return records.checked_fields(keys, records.resolve(host.name))

    # Handing out ----------------------------------------------------------------

    def host_for(self, node: Node) -> StaticHost | None:
        """The configured host a record belongs to, or None."""
        identity = records.identity_of(node)
        for pool in self._pools():
            for host in pool.nodes:
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
                reason = str(problem)
        log.warning("Static node %s (%s) is not handed out: %s", node.id,
                    node.hostname, reason)
        try:
            node.state = models.DELETING
            self.zk.store_node(node)
        except Exception:
            log.exception("Could not deregister static node %s", node.id)
        return False

    def delete_node(self, node: Node) -> None:
        """Nothing to release: the host stays, only its record goes."""

    # What the pool worker asks -----------------------------------------------

    def max_nodes_for(self, labels: Iterable[str], pool: ConfigPool | None = None) -> int:
        """How many of ``labels`` (one node each) the configured hosts of
        ``pool`` (all pools if None) could serve at the same time; a
        request asking for more can never be served and is declined.

        Unreachable hosts count: they may come back.
        """
        pools = self._pools() if pool is None else [
            p for p in (pool,) if isinstance(p, StaticPool)]
        hosts = [(host.labels, host.max_parallel_jobs) for p in pools for host in p.nodes]
        served = max_assignable(labels, hosts)
        limits = [p.max_servers for p in pools]
        return int(min(served, sum(limits))) if limits else served

    def available_quota(self, pool: ConfigPool) -> QuotaInformation:
        """Never room for a new node: static pools only reuse."""
        return QuotaInformation(instances=0)

    def can_ever_fit(self, pool: ConfigPool, need: QuotaInformation) -> bool:
        slots = sum(host.max_parallel_jobs for host in pool.nodes) \
            if isinstance(pool, StaticPool) else 0
        return need.get("instances") <= slots
