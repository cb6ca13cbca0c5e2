"""Keeping an AWS account's API rate, and slowing down when AWS says so.

EC2 meters each account's API calls per region, mutating calls much more
tightly than read-only ones, and answers ``RequestLimitExceeded`` beyond
its budget: every client of the account (other nodepools, other tools)
then suffers.  The provider's ``rate`` is the mutating calls per second
this provider may make; read-only calls may go ten times as fast (the
same split as upstream's driver).

Launches and deletes never wait here: their steps ask :meth:`ready`
whether a call may go now and are called again when it may.  Other
callers (leak cleanup, quota, image uploads) run on their own threads and
:meth:`wait`.

When AWS throttles us anyway (boto3 has retried already), every interval
is stretched (doubling per throttle, up to :data:`MAX_PENALTY` times) and
shrinks back as calls succeed: the provider slows down, nothing fails.
"""

from __future__ import annotations

import threading
import time

MUTATING = "mutating"
READ = "read"
READ_FACTOR = 10.0
MAX_PENALTY = 32.0
# How much of the extra slowness one successful call takes back.
RECOVERY = 0.9


class ApiRateLimiter:
    def __init__(self, rate: float | None) -> None:
        self._base = {MUTATING: 0.0, READ: 0.0}
        if rate and rate > 0:
            self._base = {MUTATING: 1.0 / rate, READ: 1.0 / (rate * READ_FACTOR)}
        self._next = {MUTATING: 0.0, READ: 0.0}
        self._penalty = 1.0
        self._lock = threading.Lock()

    @property
    def penalty(self) -> float:
        """How many times slower than ``rate`` we go now (1 = not slowed)."""
        return self._penalty

    def interval(self, kind: str) -> float:
        return self._base[kind] * self._penalty

    def ready(self, kind: str = MUTATING) -> float:
        """0 and the slot is taken when a call may go now; otherwise the
        seconds until one may (nothing is taken)."""
        with self._lock:
            now = time.monotonic()
            wait = self._next[kind] - now
            if wait > 0:
                return wait
            self._next[kind] = now + self.interval(kind)
            return 0.0

    def wait(self, kind: str = READ) -> None:
        """Take the next slot, sleeping until it comes."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next[kind])
            self._next[kind] = slot + self.interval(kind)
        if slot > now:
            time.sleep(slot - now)

    def throttled(self) -> float:
        """AWS throttled a call: slow everything down.  Returns how long
        the caller should wait before trying again."""
        with self._lock:
            self._penalty = min(MAX_PENALTY, self._penalty * 2)
            now = time.monotonic()
            for kind in self._next:
                self._next[kind] = max(self._next[kind], now + self.interval(kind))
        return self.pause()

    def pause(self) -> float:
        """How long to wait before trying a throttled step again."""
        return max(1.0, self._base[MUTATING]) * self._penalty

    def succeeded(self) -> None:
        if self._penalty > 1.0:
            with self._lock:
                self._penalty = max(1.0, self._penalty * RECOVERY)
