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
    """Items by id from one list call, at most ``ttl`` seconds old."""

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
        # When the cached listing was *requested*: an item created before
        # then is certainly in it.
        self._fetched_at = float("-inf")
        # A failed listing is reported to every reader for ``ttl`` too:
        # with the cloud down, each would otherwise wait out its own API
        # timeout in turn behind the lock.
        self._error: Exception | None = None
        self._failed_at = float("-inf")

    def get(self, newer_than: float | None = None) -> tuple[dict[Any, T], float]:
        """(items by id, time the listing was requested).

        Refreshed first when the cached listing is ``ttl`` old, or was
        requested at or before ``newer_than`` (in the same clock): a caller
        that must not see the same listing twice passes the time of the
        one it saw last.
        """
        with self._lock:
            now = self._clock()
            stale = now - self._fetched_at >= self.ttl
            if newer_than is not None and self._fetched_at <= newer_than:
                stale = True
            if stale:
                if (newer_than is None and self._error is not None
                        and now - self._failed_at < self.ttl):
                    raise self._error
                try:
                    items = {self._key(item): item for item in self._fetch()}
                except Exception as e:
                    self._error, self._failed_at = e, self._clock()
                    raise
                self._items, self._fetched_at, self._error = items, now, None
            return self._items, self._fetched_at

    def next_refresh(self) -> float:
        """Seconds until the cached listing may be refreshed."""
        return max(0.0, self._fetched_at + self.ttl - self._clock())

    def invalidate(self) -> None:
        with self._lock:
            self._fetched_at = float("-inf")
