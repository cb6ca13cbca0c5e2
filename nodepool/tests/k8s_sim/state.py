"""The simulated cluster's state: objects, resourceVersions, watch events,
timers for the controllers, and the knobs tests turn.

Everything is guarded by one lock (``ClusterState.lock``); ``changed`` is a
condition on that lock that watch streams wait on.  Objects are kept as the
plain JSON dicts the API returns, keyed by storage resource (``pods``,
``rolebindings.rbac.authorization.k8s.io``) and ``(namespace, name)``.

Controllers (pod start, token filling, namespace termination) do not run in
threads of their own: they are timers that ``tick()`` fires when due, and
every request, watch loop and inspection calls ``tick()`` first.  So time
moves on exactly when someone looks, and nothing changes behind a test's
back between two of its own calls.
"""

from __future__ import annotations

import base64
import copy
import datetime
import heapq
import itertools
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

# How many watch events are kept; older resourceVersions get 410 Expired.
EVENT_HISTORY = 20000


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    resource: str  # storage key
    namespace: str
    obj: Obj
    prev: Obj | None


@dataclass(order=True)
class Timer:
    due: float
    seq: int
    action: Callable[[ClusterState], None] = field(compare=False)


@dataclass
class Refusal:
    """Answer requests of ``verb`` on ``resource`` with ``status`` (``remaining``
    times, or until cleared when None)."""

    verb: str
    resource: str
    status: int
    remaining: int | None
    message: str | None
    quota: bool = False


class ClusterState:
    """All mutable state of one simulated cluster."""

    def __init__(
        self,
        *,
        openshift: bool,
        pod_start_delay: float,
        token_delay: float,
        namespace_delete_delay: float,
        legacy_sa_token_secrets: bool,
    ) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.openshift = openshift
        self.objects: dict[str, dict[Key, Obj]] = {}
        self.rv = 1000
        self.events: deque[WatchEvent] = deque(maxlen=EVENT_HISTORY)
        self._timers: list[Timer] = []
        self._seq = itertools.count()
        self.stopping = False

        # Identity
        self.admin_token = uuid.uuid4().hex
        self.pki: Any = None  # ClusterPKI, set by the cluster
        self.server_url = ""

        # Controller knobs
        self.pod_start_delay = pod_start_delay
        self.pod_fates: deque[str] = deque()
        self.default_pod_fate = "Running"
        self.pod_delete_delay = 0.0
        self.token_delay = token_delay
        self.hold_tokens = False
        self.held_tokens: list[Obj] = []
        self.pending_pods: list[Obj] = []
        self.namespace_delete_delay = namespace_delete_delay
        self.legacy_sa_token_secrets = legacy_sa_token_secrets
        self.next_pod_ip = 2
        self.node_name = "sim-node-1"
        self.host_ip = "10.0.0.10"

        # Faults
        self.latency = 0.0
        self.request_failures: list[list[Any]] = []  # [remaining, status, path_prefix]
        self.refusals: list[Refusal] = []

        # Accounting
        self.calls: Counter[tuple[str, str]] = Counter()
        self.requests_log: list[tuple[str, str]] = []

    # -- storage ----------------------------------------------------------------------

    def store(self, resource: str) -> dict[Key, Obj]:
        return self.objects.setdefault(resource, {})

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        return self.store(resource).get((namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a resource, in one namespace or all, sorted like etcd keys."""
        store = self.store(resource)
        keys = sorted(k for k in store if namespace is None or k[0] == namespace)
        return [store[k] for k in keys]

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, resource: str, obj: Obj, event: str) -> Obj:
        """Store ``obj`` (new or changed) with a fresh resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        prev = self.store(resource).get(key)
        meta["resourceVersion"] = self._bump()
        self.store(resource)[key] = obj
        self.events.append(WatchEvent(self.rv, event, resource, key[0], copy.deepcopy(obj),
                                      copy.deepcopy(prev) if prev is not None else None))
        self.changed.notify_all()
        return obj

    def remove(self, resource: str, namespace: str, name: str) -> Obj | None:
        obj = self.store(resource).pop((namespace, name), None)
        if obj is None:
            return None
        obj["metadata"]["resourceVersion"] = self._bump()
        self.events.append(WatchEvent(self.rv, "DELETED", resource, namespace,
                                      copy.deepcopy(obj), copy.deepcopy(obj)))
        self.changed.notify_all()
        return obj

    # -- timers -----------------------------------------------------------------------

    def after(self, delay: float, action: Callable[[ClusterState], None]) -> None:
        """Run ``action(state)`` from ``tick()`` once ``delay`` seconds have passed."""
        heapq.heappush(self._timers, Timer(time.monotonic() + delay, next(self._seq), action))

    def next_due(self) -> float | None:
        return self._timers[0].due if self._timers else None

    def tick(self) -> None:
        """Fire every timer that is due, in due order."""
        while self._timers and self._timers[0].due <= time.monotonic():
            timer = heapq.heappop(self._timers)
            timer.action(self)

    # -- faults -----------------------------------------------------------------------

    def take_refusal(self, verb: str, resource: str) -> Refusal | None:
        for refusal in self.refusals:
            if refusal.verb == verb and refusal.resource == resource:
                if refusal.remaining is not None:
                    refusal.remaining -= 1
                    if refusal.remaining <= 0:
                        self.refusals.remove(refusal)
                return refusal
        return None

    def take_pod_fate(self) -> str:
        return self.pod_fates.popleft() if self.pod_fates else self.default_pod_fate

    # -- tokens -----------------------------------------------------------------------

    def token_valid(self, token: str) -> bool:
        """The admin token, or a filled service-account token of a live secret."""
        if token == self.admin_token:
            return True
        for secret in self.store("secrets").values():
            if secret.get("type") != "kubernetes.io/service-account-token":
                continue
            encoded = (secret.get("data") or {}).get("token")
            if encoded and _b64decode(encoded) == token:
                return True
        return False


def _b64decode(value: str) -> str:
    try:
        return base64.b64decode(value).decode()
    except Exception:
        return ""
