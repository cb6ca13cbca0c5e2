"""The two-sightings rule of leak cleanup, kept in one place.

Nodepool deletes cloud resources that no record claims, and retires ready
nodes whose server is gone.  One look at the cloud is not enough evidence
for either: a listing races with launches, deletes and record writes
happening at the same moment (a server listed just before its node record
was stored looks leaked; a node stored just after a listing was taken
looks vanished).  So a thing is acted on only when two listings show it.

The two listings must be two real looks at the cloud, not one listing
read twice: a listing served from a cache is the same evidence as the
first.  The rule here therefore compares times, not pass numbers: a
sighting confirms an earlier one only when its listing was *requested*
after the earlier listing was *answered*.  The adapter's side of the
bargain (written on :meth:`nodepool.driver.adapter.Adapter.list_resources`)
is that a listing reflects the cloud at the time of the call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Sightings(Generic[K]):
    """Keys (resource ids, node ids) seen suspicious in cloud listings.

    Not thread-safe: each instance belongs to one cleanup loop.
    """

    def __init__(self) -> None:
        # key -> monotonic time the listing that first showed it was answered
        self._first: dict[K, float] = {}

    def look(self, listing: Callable[[], T]) -> tuple[T, float, float]:
        """Call ``listing`` and return (its result, monotonic time it was
        requested, monotonic time it was answered), the stamps
        :meth:`confirm` wants."""
        requested_at = time.monotonic()
        result = listing()
        return result, requested_at, time.monotonic()

    def confirm(self, seen: Iterable[K], requested_at: float,
                answered_at: float) -> set[K]:
        """Record the keys a listing showed and return those an earlier
        listing showed too (answered before this one was requested).

        Keys missing from this listing are forgotten: a resource that
        comes back later starts again from its first sighting.
        """
        seen = set(seen)
        confirmed = {k for k in seen if self._first.get(k, math.inf) <= requested_at}
        self._first = {k: self._first.get(k, answered_at) for k in seen}
        return confirmed

    def __len__(self) -> int:
        return len(self._first)
