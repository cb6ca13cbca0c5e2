"""What the launcher's background workers have in common."""

from __future__ import annotations

import threading
from typing import Any


class LauncherWorker(threading.Thread):
    """A daemon thread of the launcher (deleting, cleanup, stats...).

    The launcher tells every worker about node changes and reconnections
    through these methods; a worker overrides the ones it needs.  They are
    called on the caches' and the connection's threads: they must only
    note the event (set a flag, wake the thread), never block.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)

    def node_changed(self, key: str, old: Any, new: Any) -> None:
        """A node record changed (``old``/``new`` None when created/removed)."""

    def request_changed(self, key: str, old: Any, new: Any) -> None:
        """A request changed (``old``/``new`` None when created/removed)."""

    def image_changed(self, key: Any, old: Any, new: Any) -> None:
        """An image build or upload record changed (``old``/``new`` None
        when created/removed)."""

    def reconnected(self) -> None:
        """The ZooKeeper connection is back (possibly with a new session)."""

    def stop(self) -> None:
        """Finish the current pass and end the thread."""
        raise NotImplementedError
