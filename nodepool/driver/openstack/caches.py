"""Caches that keep the OpenStack driver from asking the cloud twice.

Operators' clouds have been brought down by nodepool's API traffic
(OPERATORS.md row 6).  Most of it is avoidable: flavors, zones, networks
and image names rarely change, and the state of every server in flight can
be read from one listing.  Every cache here is single-flight: when it must
be filled, one caller asks the cloud while the others wait for its answer
instead of sending their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any


class Memo:
    """One value, fetched on first use and kept until cleared."""

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch = fetch
        # Re-entrant: a failed fetch may clear the cache it is filling.
        self._lock = threading.RLock()
        self._value: Any = None
        self._set = False

    def get(self) -> Any:
        with self._lock:
            if not self._set:
                self._value, self._set = self._fetch(), True
            return self._value

    def clear(self) -> None:
        with self._lock:
            self._set = False


class NameCache:
    """Ids looked up by name.  Only hits are kept: a name that is missing
    now (an image not yet uploaded) is looked up again next time."""

    def __init__(self, find: Callable[[str], str | None]) -> None:
        self._find = find
        # Re-entrant: a failed lookup may clear the cache it is filling.
        self._lock = threading.RLock()
        self._ids: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        with self._lock:
            if name not in self._ids:
                found = self._find(name)
                if found is None:
                    return None
                self._ids[name] = found
            return self._ids[name]

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


class ServerListCache:
    """The project's servers from one ``GET /servers/detail``, at most
    ``ttl`` seconds old.

    Every launch waits for its server to become ACTIVE and every delete
    for it to disappear; polling ``GET /servers/<id>`` per server is what
    melts an API when a hundred launches are in flight.  Instead all of
    them read this listing, refreshed by whichever waiter finds it stale.

    Two times are kept per listing.  Its age counts from when it arrived,
    so a listing that took longer than ``ttl`` to come (a slow API with
    many servers) still serves everyone who queued for it instead of each
    of them asking again in turn.  What it proves counts from when it was
    requested: a server created before then is certainly in it.
    """

    def __init__(self, fetch: Callable[[], Iterable[Any]], ttl: float) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self._lock = threading.Lock()
        self._servers: dict[str, Any] = {}
        self._requested_at = float("-inf")
        self._answered_at = float("-inf")
        # A failed listing is reported to every waiter for ``ttl`` too:
        # with the cloud down, each would otherwise wait out its own
        # API timeout in turn behind the lock.
        self._error: Exception | None = None
        self._failed_at = float("-inf")

    def get(self, requested_after: float | None = None) -> tuple[dict[str, Any], float]:
        """(servers by id, monotonic time the listing was requested),
        refreshed first when the cached listing arrived ``ttl`` ago or,
        with ``requested_after``, was requested before that monotonic time.

        A caller that needs the cloud as it is now passes the time of its
        call: a listing another thread started fetching since then serves
        it too, without a request of its own.
        """
        with self._lock:
            now = time.monotonic()
            if self._fresh(self._answered_at, self._requested_at, now, requested_after):
                return self._servers, self._requested_at
            if self._error is not None and self._fresh(self._failed_at, self._failed_at,
                                                       now, requested_after):
                raise self._error
            try:
                servers = {s.id: s for s in self._fetch()}
            except Exception as e:
                self._error, self._failed_at = e, time.monotonic()
                raise
            self._servers, self._error = servers, None
            self._requested_at, self._answered_at = now, time.monotonic()
            return self._servers, self._requested_at

    def _fresh(self, answered_at: float, requested_at: float, now: float,
               requested_after: float | None) -> bool:
        if now - answered_at >= self.ttl:
            return False
        return requested_after is None or requested_at >= requested_after

    def next_refresh(self) -> float:
        """Seconds until the cached listing may be refreshed."""
        return max(0.0, self._answered_at + self.ttl - time.monotonic())
