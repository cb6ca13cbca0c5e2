"""The requests one pool worker may still act on, in the order it serves them.

A gate reset or a cloud outage can queue thousands of requests.  A pool
worker that re-sorted and re-examined all of them on every event would
spend its time on requests it cannot serve yet.  Instead the queue is kept
in order as request events come (an insertion is a binary search), and
requests the pool has decided to leave to others are *parked*: they are
not looked at again until they change, or until the set of pools changes
(``unpark_all``).  Requests that arrived since the worker last looked are
listed apart, so each gets a first decision promptly even when the worker
stops its scan early for lack of capacity.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator

from nodepool.zk import models
from nodepool.zk.models import NodeRequest

# (labels missing from the pool, priority, id, the request): ids are
# unique, so the request itself is never compared.
Entry = tuple[bool, tuple[str, int, str], str, NodeRequest]


class RequestQueue:
    """Open requests (``requested``, not declined by this pool) in serving
    order: requests whose labels the pool has first, then by priority."""

    def __init__(self, pool_id: str, labels: set[str]) -> None:
        self.pool_id = pool_id
        self._labels = set(labels)
        self._lock = threading.Lock()
        self._order: list[Entry] = []
        self._entries: dict[str, Entry] = {}
        self._parked: dict[str, NodeRequest] = {}
        self._fresh: set[str] = set()

    def _entry(self, request: NodeRequest) -> Entry:
        assert request.id is not None
        missing = not set(request.node_types) <= self._labels
        return (missing, request.sort_key(), request.id, request)

    def _wanted(self, request: NodeRequest | None) -> bool:
        return (request is not None and request.state == models.REQUESTED
                and self.pool_id not in request.declined_by)

    # Events -------------------------------------------------------------

    def update(self, request_id: str, request: NodeRequest | None) -> bool:
        """A request changed (None: it is gone).  True if the pool worker
        should look again (the request is new to it or changed)."""
        with self._lock:
            self._remove(request_id)
            self._parked.pop(request_id, None)
            if not self._wanted(request):
                self._fresh.discard(request_id)
                return False
            assert request is not None
            self._insert(request)
            self._fresh.add(request_id)
            return True

    def _insert(self, request: NodeRequest) -> None:
        entry = self._entry(request)
        bisect.insort(self._order, entry)
        self._entries[entry[2]] = entry

    def _remove(self, request_id: str) -> None:
        entry = self._entries.pop(request_id, None)
        if entry is None:
            return
        index = bisect.bisect_left(self._order, entry)
        if index < len(self._order) and self._order[index][2] == request_id:
            del self._order[index]

    # The worker's side --------------------------------------------------

    def snapshot(self) -> Iterator[NodeRequest]:
        """The open, unparked requests in serving order (as they were
        when called: later changes do not disturb the iteration)."""
        with self._lock:
            order = list(self._order)
        return (entry[3] for entry in order)

    def has_fresh(self) -> bool:
        """Whether some request was added or changed since last asked."""
        with self._lock:
            return any(i in self._entries for i in self._fresh)

    def take_fresh(self) -> list[NodeRequest]:
        """Requests added or changed since last asked (still open and
        unparked), in serving order."""
        with self._lock:
            fresh = [self._entries[i] for i in self._fresh if i in self._entries]
            self._fresh.clear()
        return [entry[3] for entry in sorted(fresh)]

    def park(self, request_id: str) -> None:
        """Leave the request alone until it changes or ``unpark_all``."""
        with self._lock:
            entry = self._entries.get(request_id)
            if entry is None:
                return
            self._remove(request_id)
            self._parked[request_id] = entry[3]
            self._fresh.discard(request_id)

    def unpark_all(self) -> None:
        """Look at every parked request again (the pools changed)."""
        with self._lock:
            parked, self._parked = self._parked, {}
            for request in parked.values():
                self._insert(request)
                self._fresh.add(request.id or "")

    def set_labels(self, labels: set[str]) -> None:
        """The pool's labels changed (a reload): re-sort, look at all."""
        with self._lock:
            if labels == self._labels:
                return
            self._labels = set(labels)
            requests = [e[3] for e in self._order] + list(self._parked.values())
            self._order, self._entries, self._parked = [], {}, {}
            for request in requests:
                self._insert(request)
                self._fresh.add(request.id or "")

    def load(self, requests: list[NodeRequest]) -> None:
        """Fill from a full listing (start-up)."""
        for request in requests:
            if request.id is not None:
                self.update(request.id, request)

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)
