"""What a provider's nodes use, counting the ones not recorded yet.

A pool worker decides to launch a node before the node's record exists:
the launch creates it a few milliseconds later, and the node cache shows
it a little after that.  Decisions made in between must count that node
too, or two of them could fill the same last slot.  A
:class:`Reservation` stands in for such a node from the decision until
the cache shows its record (or the launch gives up).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nodepool.driver.quota import QuotaInformation
from nodepool.zk.models import Node

# A reservation bound to a record the cache never showed (the record
# vanished at once) is forgotten after this long.
RESERVATION_TTL = 60.0


@dataclass(eq=False)
class Reservation:
    """Capacity promised to one launch in ``pool``."""

    pool: str
    quota: QuotaInformation
    created: float = field(default_factory=time.monotonic)
    # The node record's id, once the launch created it.
    node_id: str | None = None


class QuotaLedger:
    """Usage of one provider: its node records (from the node cache's
    running totals) plus open reservations."""

    def __init__(self, provider_name: str,
                 node_quota: Callable[[Node], QuotaInformation]) -> None:
        self.provider_name = provider_name
        self._node_quota = node_quota
        self._lock = threading.Lock()
        self._reservations: set[Reservation] = set()
        self.node_cache: Any = None

    def reserve(self, pool: str, quota: QuotaInformation) -> Reservation:
        """Count a node about to be launched in ``pool`` until
        :meth:`release`, or until the cache shows its record."""
        reservation = Reservation(pool, quota)
        with self._lock:
            self._reservations.add(reservation)
        return reservation

    def bind(self, reservation: Reservation | None, node_id: str | None) -> None:
        """The reserved node now has a record with this id."""
        if reservation is not None:
            reservation.node_id = node_id
            reservation.created = time.monotonic()

    def release(self, reservation: Reservation | None) -> None:
        """The reserved node will not be launched after all."""
        if reservation is not None:
            with self._lock:
                self._reservations.discard(reservation)

    def is_reserved(self, node_id: str) -> bool:
        """Whether ``node_id`` is a node being launched whose record may
        not be visible yet (so its server is not a leak)."""
        with self._lock:
            return any(r.node_id == node_id for r in self._reservations)

    def usage(self, pool: str | None = None) -> QuotaInformation:
        """What this provider's nodes (of ``pool``, or all) use, plus the
        reservations whose records the cache does not show yet."""
        cache = self.node_cache
        used = QuotaInformation()
        if cache is not None:
            sums, unpriced = cache.index.usage(self.provider_name, pool)
            used.add(QuotaInformation(sums))
            for node_id in unpriced:
                node = cache.get(node_id)
                if node is not None:
                    used.add(self._node_quota(node))
        stale = time.monotonic() - RESERVATION_TTL
        with self._lock:
            # A bound reservation ends when the cache shows its record (or,
            # should the record vanish first, after a while).
            self._reservations = {
                r for r in self._reservations
                if r.node_id is None or (r.created >= stale and (
                    cache is None or cache.get(r.node_id) is None))}
            for reservation in self._reservations:
                if pool is None or reservation.pool == pool:
                    used.add(reservation.quota)
        return used
