"""What the status page shows, gathered from a running launcher's memory.

A page view must cost nothing outside the process, however often browsers
refresh it and however many nodes there are: no ZooKeeper round trips and
no cloud calls.  Everything here comes from what the launcher keeps
anyway: its watch-driven caches (nodes, requests, images, registered
pools), its configuration, its pool workers, and its providers' in-memory
accounting (``quota_in_use``, ``known_cloud_limits`` and
``recent_launch_errors`` on :class:`nodepool.driver.Provider`).  Cached
records are shared snapshots: they are read here, never changed.

Why a request waits is not recorded anywhere (a pool that leaves a
request open writes nothing), so it is derived from what is known:

* ``served``: a launcher has it (``pending``);
* ``no-pool``: no registered pool offers all of its labels;
* ``declined``: some pools declined it, the others have not decided yet;
* ``capacity``: pools that can serve it are waiting for room (quota,
  ``max-servers``, a free static host, or a label at its own
  ``max-servers``, which the reason names);
* ``fulfilled``/``failed``: done, Zuul has not collected it yet.

Lists are bounded (the newest nodes, the first requests in the order
pools serve them); counts always cover everything.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodepool.driver.launch_errors import LaunchFailure
from nodepool.driver.quota import QuotaInformation
from nodepool.status import validation_text
from nodepool.zk import models
from nodepool.zk.models import ImageBuild, ImageUpload, Node, NodeRequest

# Rows listed at most (counts are never bounded).
NODE_ROWS = 250
REQUEST_ROWS = 500

# Resources listed first, in this order; others follow by name.
RESOURCE_ORDER = ("instances", "cores", "ram")

# Why a request is where it is (``RequestRow.reason_code``).
SERVED = "served"
NO_POOL = "no-pool"
DECLINED = "declined"
CAPACITY = "capacity"
FULFILLED = "fulfilled"
FAILED = "failed"
REASON_ORDER = (CAPACITY, DECLINED, NO_POOL, SERVED, FULFILLED, FAILED)


class PoolWorkerView(Protocol):
    """What the page reads from a pool worker."""

    provider_name: str
    pool_name: str

    def is_alive(self) -> bool: ...

    def serving(self, request_id: str) -> bool: ...


class LauncherView(Protocol):
    """What the page reads from a launcher (:class:`nodepool.launcher.NodePool`):
    nothing here may go to ZooKeeper or a cloud."""

    hostname: str
    config: Any
    ready: bool
    zk_client: Any
    node_cache: Any
    request_cache: Any
    image_cache: Any
    component_cache: Any
    providers: dict[str, Any]
    pool_workers: Any
    #: :class:`nodepool.launcher.label_caps.LabelCaps` (None before the
    #: launcher connects).
    label_caps: Any


@dataclass
class ResourceUse:
    """One resource of a pool: what its nodes use against its limits
    (None: no limit, or the cloud's is not known yet)."""

    name: str
    used: float
    pool_limit: float | None
    cloud_limit: float | None


@dataclass
class PoolStatus:
    provider: str
    name: str
    labels: list[str]
    #: ``serving``, ``starting``, ``stopped`` or ``provider not started``.
    state: str
    resources: list[ResourceUse]
    #: Whether the cloud's own quota counts (``ignore-provider-quota`` off).
    cloud_quota_applies: bool


@dataclass
class ProviderStatus:
    name: str
    driver: str
    started: bool
    launches_in_flight: int
    pools: list[PoolStatus]
    errors: list[LaunchFailure]


@dataclass
class NodeRow:
    id: str
    labels: list[str]
    provider: str | None
    pool: str | None
    state: str
    state_time: float
    allocated_to: str | None
    locked: bool
    az: str | None


@dataclass
class RequestRow:
    id: str
    state: str
    labels: list[str]
    #: When Zuul made it (``created_time``, else when its state last
    #: changed).
    since: float
    priority: str
    relative_priority: int
    requestor: str | None
    nodes: list[str]
    declined_by: int
    reason_code: str
    reason: str


@dataclass
class BuildRow:
    image: str
    build_id: str
    state: str
    state_time: float
    formats: list[str]
    builder: str | None


@dataclass
class UploadRow:
    image: str
    build_id: str
    provider: str
    upload_id: str
    state: str
    state_time: float
    external_name: str | None
    external_id: str | None
    #: The check before service, in words (None: the upload has none).
    validation: str | None = None
    #: Its state alone (``pending``, ``checking``, ``passed``...), or None.
    validation_state: str | None = None


@dataclass
class StatusSnapshot:
    """Everything one page view shows; plain data, no live objects."""

    hostname: str
    taken_at: float
    ready: bool
    connected: bool
    providers: list[ProviderStatus] = field(default_factory=list)
    registered_pools: int = 0
    node_total: int = 0
    node_states: Counter[str] = field(default_factory=Counter)
    #: label -> state -> count; configured labels appear with no nodes.
    label_states: dict[str, Counter[str]] = field(default_factory=dict)
    #: label -> ``min-ready`` of the configuration.
    min_ready: dict[str, int] = field(default_factory=dict)
    #: label -> its own ``max-servers``, for labels that set one.
    max_servers: dict[str, float] = field(default_factory=dict)
    #: label -> nodes counted against its ``max-servers`` (records in any
    #: state, and launches not recorded yet), for the same labels.
    label_in_use: dict[str, int] = field(default_factory=dict)
    nodes: list[NodeRow] = field(default_factory=list)
    unreadable_nodes: int = 0
    request_total: int = 0
    request_reasons: Counter[str] = field(default_factory=Counter)
    requests: list[RequestRow] = field(default_factory=list)
    builds: list[BuildRow] = field(default_factory=list)
    uploads: list[UploadRow] = field(default_factory=list)
    paused_images: list[str] = field(default_factory=list)
    build_requests: list[str] = field(default_factory=list)


def take_snapshot(launcher: LauncherView, now: float | None = None) -> StatusSnapshot:
    """Gather the page's data from ``launcher``'s memory."""
    now = time.time() if now is None else now
    zk_client = launcher.zk_client
    snapshot = StatusSnapshot(
        hostname=launcher.hostname, taken_at=now, ready=bool(launcher.ready),
        connected=bool(zk_client is not None and zk_client.connected))
    config = launcher.config
    nodes: list[Node] = _items(launcher.node_cache)
    components = _items(launcher.component_cache)
    snapshot.registered_pools = len(components)
    _count_nodes(snapshot, config, nodes)
    _label_caps(snapshot, launcher.label_caps)
    if launcher.node_cache is not None:
        snapshot.unreadable_nodes = len(launcher.node_cache.unreadable())
    snapshot.nodes = [_node_row(n) for n in heapq.nlargest(
        NODE_ROWS, nodes, key=lambda n: n.state_time or 0.0)]
    workers = list(dict(launcher.pool_workers or {}).values())
    if config is not None:
        snapshot.providers = _providers(launcher, config, workers)
    _requests(snapshot, _items(launcher.request_cache), components, workers,
              full_labels(snapshot))
    if launcher.image_cache is not None:
        _images(snapshot, launcher.image_cache)
    return snapshot


def _items(cache: Any) -> list[Any]:
    return cache.items() if cache is not None else []


# Providers and pools -------------------------------------------------------


def _providers(launcher: LauncherView, config: Any,
               workers: list[PoolWorkerView]) -> list[ProviderStatus]:
    worker_of = {(w.provider_name, w.pool_name): w for w in workers}
    out = []
    for name in sorted(config.providers):
        provider_config = config.providers[name]
        live = launcher.providers.get(name)
        pools = []
        for pool_name in sorted(provider_config.pools):
            pool = provider_config.pools[pool_name]
            worker = worker_of.get((name, pool_name))
            if live is None:
                state = "provider not started"
            elif worker is None:
                state = "starting"
            elif not worker.is_alive():
                state = "stopped"
            else:
                state = "serving"
            pools.append(PoolStatus(
                provider=name, name=pool_name, labels=sorted(pool.labels), state=state,
                resources=(_resources(live, pool, launcher.node_cache)
                           if live is not None else []),
                cloud_quota_applies=not pool.ignore_provider_quota))
        out.append(ProviderStatus(
            name=name, driver=provider_config.driver_name, started=live is not None,
            launches_in_flight=live.launches_in_flight() if live is not None else 0,
            pools=pools,
            errors=list(live.recent_launch_errors()) if live is not None else []))
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or value == math.inf else value


def _records_usage(node_cache: Any, provider: str, pool: str) -> QuotaInformation:
    """What the pool's records use by the node cache's running totals (a
    record without ``resources`` counts as one instance)."""
    if node_cache is None:
        return QuotaInformation()
    sums, unpriced = node_cache.index.usage(provider, pool)
    used = QuotaInformation(sums)
    if unpriced:
        used.add(QuotaInformation(instances=len(unpriced)))
    return used


def _resources(live: Any, pool: Any, node_cache: Any) -> list[ResourceUse]:
    quota = live.quota_in_use(pool)
    if quota is None:
        quota = _records_usage(node_cache, live.provider.name, pool.name)
    used = quota.resources
    limits = pool.limits().resources
    cloud = live.known_cloud_limits() if not pool.ignore_provider_quota else None
    cloud_limits = cloud.resources if cloud is not None else {}
    names = {"instances"} | set(used)
    names |= {k for k, v in limits.items() if _finite(v) is not None}
    names |= {k for k, v in cloud_limits.items() if _finite(v) is not None}
    ordered = [n for n in RESOURCE_ORDER if n in names] + sorted(names - set(RESOURCE_ORDER))
    return [ResourceUse(name, used.get(name, 0), _finite(limits.get(name)),
                        _finite(cloud_limits.get(name))) for name in ordered]


# Nodes ---------------------------------------------------------------------


def _count_nodes(snapshot: StatusSnapshot, config: Any, nodes: Iterable[Node]) -> None:
    labels: dict[str, Counter[str]] = {}
    if config is not None:
        for name, label in config.labels.items():
            labels[name] = Counter()
            snapshot.min_ready[name] = label.min_ready
    states: Counter[str] = Counter()
    total = 0
    for node in nodes:
        total += 1
        state = node.state or "unknown"
        states[state] += 1
        for label in node.type:
            if not isinstance(label, str):
                label = str(label)  # a foreign writer's record: still counted
            counts = labels.get(label)
            if counts is None:
                counts = labels[label] = Counter()
            counts[state] += 1
    snapshot.node_total = total
    snapshot.node_states = states
    snapshot.label_states = {k: labels[k] for k in sorted(labels, key=str)}


def _label_caps(snapshot: StatusSnapshot, label_caps: Any) -> None:
    if label_caps is None:
        return
    for label, cap in sorted(label_caps.capped().items()):
        snapshot.max_servers[label] = cap
        snapshot.label_in_use[label] = label_caps.in_use(label)


def full_labels(snapshot: StatusSnapshot) -> dict[str, tuple[int, float]]:
    """Labels at (or over) their own ``max-servers``: label -> (in use,
    cap)."""
    return {label: (snapshot.label_in_use.get(label, 0), cap)
            for label, cap in snapshot.max_servers.items()
            if snapshot.label_in_use.get(label, 0) >= cap}


def _node_row(node: Node) -> NodeRow:
    return NodeRow(id=str(node.id), labels=[str(t) for t in node.type],
                   provider=node.provider, pool=node.pool, state=node.state or "unknown",
                   state_time=node.state_time or 0.0, allocated_to=node.allocated_to,
                   locked=node.locked, az=node.az)


# Requests ------------------------------------------------------------------


def reason_code(request: NodeRequest, offered: list[set[str]]) -> str:
    """Why ``request`` is where it is (see the module's docstring);
    ``offered`` holds each registered pool's labels."""
    state = request.state
    if state == models.PENDING:
        return SERVED
    if state == models.FULFILLED:
        return FULFILLED
    if state == models.FAILED:
        return FAILED
    wanted = set(request.node_types)
    if not any(wanted <= labels for labels in offered):
        return NO_POOL
    if request.declined_by:
        return DECLINED
    return CAPACITY


def reason_text(request: NodeRequest, code: str, workers: list[PoolWorkerView],
                full: dict[str, tuple[int, float]] | None = None) -> str:
    """The words for ``code``; for a request being served, by whom; for
    one waiting, the labels of it that are at their own ``max-servers``
    (``full``, see :func:`full_labels`)."""
    if code == SERVED:
        for worker in workers:
            if worker.serving(str(request.id)):
                return f"being served here by {worker.provider_name}/{worker.pool_name}"
        return "being served by another launcher"
    if code == NO_POOL:
        return "no pool offers all of its labels"
    if code == DECLINED:
        count = len(request.declined_by)
        return (f"declined by {count} pool{'s' if count != 1 else ''}; "
                "waiting for the others")
    if code == CAPACITY:
        at_cap = full or {}
        capped = [label for label in dict.fromkeys(request.node_types) if label in at_cap]
        if capped:
            return "waiting for room under max-servers of label " + ", ".join(
                f"{label} ({at_cap[label][0]:,} of {at_cap[label][1]:g} in use)"
                for label in capped)
        return "waiting for capacity (quota)"
    if code == FULFILLED:
        return "fulfilled; Zuul has not taken its nodes yet"
    return "failed; Zuul has not collected it yet"


def _requests(snapshot: StatusSnapshot, requests: list[NodeRequest],
              components: list[Any], workers: list[PoolWorkerView],
              full: dict[str, tuple[int, float]]) -> None:
    offered = [set(c.supported_labels or []) for c in components]
    coded = [(reason_code(r, offered), r) for r in requests]
    snapshot.request_total = len(coded)
    snapshot.request_reasons = Counter(code for code, _ in coded)
    # Open requests first, in the order pools serve them; then done ones.
    done = (FULFILLED, FAILED)
    coded.sort(key=lambda cr: (cr[0] in done, cr[1].sort_key()))
    rows = []
    for code, request in coded[:REQUEST_ROWS]:
        rows.append(RequestRow(
            id=str(request.id), state=request.state or "unknown",
            labels=[str(t) for t in request.node_types],
            since=request.created_time or request.state_time or 0.0,
            priority=request.priority, relative_priority=request.relative_priority,
            requestor=request.requestor, nodes=list(request.nodes),
            declined_by=len(request.declined_by), reason_code=code,
            reason=reason_text(request, code, workers, full)))
    snapshot.requests = rows


# Images --------------------------------------------------------------------


def _images(snapshot: StatusSnapshot, image_cache: Any) -> None:
    builds, uploads = [], []
    for record in image_cache.items():
        if isinstance(record, ImageBuild):
            builds.append(BuildRow(
                image=str(record.image_name), build_id=str(record.id),
                state=record.state or "unknown", state_time=record.state_time or 0.0,
                formats=[str(f) for f in record.formats], builder=record.builder))
        elif isinstance(record, ImageUpload):
            uploads.append(UploadRow(
                image=str(record.image_name), build_id=str(record.build_id),
                provider=str(record.provider_name), upload_id=str(record.id),
                state=record.state or "unknown", state_time=record.state_time or 0.0,
                external_name=record.external_name,
                external_id=(str(record.external_id)
                             if record.external_id is not None else None),
                validation=(validation_text(record.validation)
                            if record.validation is not None else None),
                validation_state=record.validation_state))
    builds.sort(key=lambda b: (b.image, -b.state_time))
    uploads.sort(key=lambda u: (u.image, u.provider, -u.state_time))
    snapshot.builds = builds
    snapshot.uploads = uploads
    snapshot.paused_images = sorted(image_cache.paused)
    snapshot.build_requests = sorted(image_cache.build_requests)
