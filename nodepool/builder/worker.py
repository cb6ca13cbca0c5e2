"""What the builder's worker threads share: a loop that runs one pass of
work when woken by an event (a ZooKeeper change, a config reload, another
worker finishing) or, as a safety net, when its interval passes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class BuilderWorker(threading.Thread):
    """Base of BuildWorker, UploadWorker and CleanupWorker.

    Subclasses implement ``work()``: one pass over everything the worker
    might do.  Passes never overlap within a worker; a wake-up that
    arrives during a pass causes another pass right after it, so no event
    is lost.
    """

    kind = "Worker"

    def __init__(self, builder: Any, index: int, interval: float) -> None:
        super().__init__(name=f"{self.kind}.{index}", daemon=True)
        self.builder = builder
        self.index = index
        self.interval = interval
        self.log = logging.getLogger(f"nodepool.builder.{self.name}")
        self._wake = threading.Event()
        self._running = True
        # Monotonic time at which the latest completed pass began: the
        # worker has looked at everything ZooKeeper and the config showed
        # then (proof for a debugger, or a test asserting that nothing
        # was done).
        self.last_pass_started = float("-inf")

    @property
    def running(self) -> bool:
        return self._running

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._running = False
        self._wake.set()

    def run(self) -> None:
        while self._running:
            self._wake.clear()
            if self.builder.zk_client is not None and self.builder.zk_client.connected:
                started = time.monotonic()
                try:
                    self.work()
                except Exception:
                    self.log.exception("Error in %s pass", self.name)
                    # Do not spin if every wake-up hits the same error.
                    self._wake.wait(1.0)
                else:
                    self.last_pass_started = started
            if self._running:
                self._wake.wait(self.interval)

    def work(self) -> None:
        raise NotImplementedError
