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
from collections.abc import Callable
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
