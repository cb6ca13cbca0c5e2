"""What this builder is doing right now, per image and provider, for the
``nodepool.builder.<host>.image.<image>...state`` gauges."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator

IDLE = 0
BUILDING = 1
UPLOADING = 2
PAUSED = 3


class BuilderStatus:
    """Thread-safe counters the workers update and the gauges read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._building: Counter[str] = Counter()
        self._uploading: Counter[tuple[str, str]] = Counter()
        self._builds_paused: set[str] = set()
        self._uploads_paused: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def building(self, image: str) -> Iterator[None]:
        with self._lock:
            self._building[image] += 1
        try:
            yield
        finally:
            with self._lock:
                self._building[image] -= 1

    @contextlib.contextmanager
    def uploading(self, image: str, provider: str) -> Iterator[None]:
        with self._lock:
            self._uploading[(image, provider)] += 1
        try:
            yield
        finally:
            with self._lock:
                self._uploading[(image, provider)] -= 1

    def set_build_paused(self, image: str, paused: bool) -> None:
        with self._lock:
            (self._builds_paused.add if paused else self._builds_paused.discard)(image)

    def set_upload_paused(self, image: str, provider: str, paused: bool) -> None:
        with self._lock:
            key = (image, provider)
            (self._uploads_paused.add if paused else self._uploads_paused.discard)(key)

    def build_state(self, image: str) -> int:
        with self._lock:
            if self._building[image] > 0:
                return BUILDING
            return PAUSED if image in self._builds_paused else IDLE

    def upload_state(self, image: str, provider: str) -> int:
        with self._lock:
            if self._uploading[(image, provider)] > 0:
                return UPLOADING
            return PAUSED if (image, provider) in self._uploads_paused else IDLE

    def builds_in_progress(self) -> int:
        with self._lock:
            return sum(self._building.values())
