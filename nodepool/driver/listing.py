"""One listing of a cloud's servers, shared by everything that waits on it.

Every launch waits for its server to become active and every delete for it
to disappear; asking the cloud about each server separately is what melts
an API when hundreds of launches are in flight (OPERATORS.md row 6).
Instead they all read one listing, refreshed at most every ``ttl`` seconds
by whichever reader finds it stale, while the others wait for that answer
instead of sending their own (single flight).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SharedListing(Generic[T]):
    """Items by id from one list call, at most ``ttl`` seconds old.

    Two times are kept per listing.  Its age counts from when it arrived,
    so a listing that took longer than ``ttl`` to come (a slow API with
    many servers) still serves everyone who queued for it instead of each
    of them asking again in turn.  What it proves counts from when it was
    requested: an item created before then is certainly in it.
    """

    def __init__(self, fetch: Callable[[], Iterable[T]], key: Callable[[T], Any],
                 ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._key = key
        self.ttl = ttl
        # Listing times are given in this clock's terms (wall-clock time
        # lets a resumed operation compare them with times it stored).
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[Any, T] = {}
        self._requested_at = float("-inf")
        self._answered_at = float("-inf")
        # A failed listing is reported to every reader for ``ttl`` too:
        # with the cloud down, each would otherwise wait out its own API
        # timeout in turn behind the lock.
        self._error: Exception | None = None
        self._failed_at = float("-inf")

    def get(self, requested_after: float | None = None) -> tuple[dict[Any, T], float]:
        """(items by id, time the listing was requested), refreshed first
        when the cached listing arrived ``ttl`` ago or, with
        ``requested_after`` (in this listing's clock), was requested
        before that time.

        A caller that needs the cloud as it is now passes the time of its
        call: a listing another thread started fetching since then serves
        it too, without a request of its own.
        """
        with self._lock:
            now = self._clock()
            if self._fresh(self._answered_at, self._requested_at, now, requested_after):
                return self._items, self._requested_at
            if self._error is not None and self._fresh(self._failed_at, self._failed_at,
                                                       now, requested_after):
                raise self._error
            try:
                items = {self._key(item): item for item in self._fetch()}
            except Exception as e:
                self._error, self._failed_at = e, self._clock()
                raise
            self._items, self._error = items, None
            self._requested_at, self._answered_at = now, self._clock()
            return self._items, self._requested_at

    def _fresh(self, answered_at: float, requested_at: float, now: float,
               requested_after: float | None) -> bool:
        if now - answered_at >= self.ttl:
            return False
        return requested_after is None or requested_at >= requested_after

    def next_refresh(self) -> float:
        """Seconds until the cached listing may be refreshed."""
        return max(0.0, self._answered_at + self.ttl - self._clock())

    def invalidate(self) -> None:
        with self._lock:
            self._answered_at = float("-inf")
