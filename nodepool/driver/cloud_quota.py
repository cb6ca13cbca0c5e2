"""What the cloud allows a provider, and what others take of it.

The account's limits change rarely and asking for them costs an API call,
so they are kept for five minutes; what servers that are not ours use
(other systems, other providers, leaks) is recounted at most once a
minute.  Both are dropped at once when the cloud refuses a launch for
lack of quota: they were wrong.  When the cloud cannot be asked, the last
answer stays in use (an outage of the limits API must not stop launches).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from nodepool.driver.adapter import META_NODE_ID, META_PROVIDER, Adapter
from nodepool.driver.quota import QuotaInformation

log = logging.getLogger("nodepool.driver.provider")

LIMITS_TTL = 300.0
UNMANAGED_TTL = 60.0


class CloudQuota:
    """Cached cloud limits and unmanaged usage of one provider."""

    def __init__(self, provider_name: str, adapter: Callable[[], Adapter],
                 node_known: Callable[[str], bool]) -> None:
        self.provider_name = provider_name
        self._adapter = adapter
        self._node_known = node_known
        self._lock = threading.Lock()
        self._limits: tuple[float, QuotaInformation] | None = None
        self._unmanaged: tuple[float, QuotaInformation] | None = None

    def invalidate(self) -> None:
        """Forget both (the cloud refused for lack of quota)."""
        with self._lock:
            self._limits = None
            self._unmanaged = None

    def invalidate_unmanaged(self) -> None:
        """Forget the unmanaged usage (a server of ours went away)."""
        with self._lock:
            self._unmanaged = None

    def known_limits(self) -> QuotaInformation | None:
        """The limits last read, without asking the cloud (None: never)."""
        with self._lock:
            cached = self._limits
        return cached[1].copy() if cached is not None else None

    def limits(self) -> QuotaInformation:
        """The account's limits (missing resources are unlimited)."""
        now = time.monotonic()
        with self._lock:
            cached = self._limits
        if cached is not None and now - cached[0] < LIMITS_TTL:
            return cached[1]
        try:
            limits = self._adapter().get_quota_limits()
        except Exception:
            log.exception("Could not read quota limits of %s", self.provider_name)
            return cached[1] if cached else QuotaInformation()
        with self._lock:
            self._limits = (now, limits)
        return limits

    def unmanaged_usage(self) -> QuotaInformation:
        """What servers that are not ours (by their metadata and our node
        records) use of the account's quota."""
        now = time.monotonic()
        with self._lock:
            cached = self._unmanaged
        if cached is not None and now - cached[0] < UNMANAGED_TTL:
            return cached[1]
        try:
            instances = self._adapter().list_instances()
        except Exception:
            log.exception("Could not list servers of %s", self.provider_name)
            return cached[1] if cached else QuotaInformation()
        used = QuotaInformation()
        for instance in instances:
            meta = instance.metadata or {}
            node_id = meta.get(META_NODE_ID)
            ours = (meta.get(META_PROVIDER) == self.provider_name
                    and bool(node_id) and self._node_known(str(node_id)))
            if not ours:
                used.add(instance.quota or QuotaInformation(instances=1))
        with self._lock:
            self._unmanaged = (now, used)
        return used
