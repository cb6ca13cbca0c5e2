"""The latest launches of one provider that ended without a node.

An operator looking at a struggling provider first wants to know what the
cloud said when the latest launches failed.  The logs have it, but spread
over thousands of lines; the status page shows these few instead.  They
are kept in memory only (a restart, or a configuration change that
replaces the provider, starts an empty list) and bounded, so a cloud that
fails every launch costs a fixed amount of memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

# Failures kept per provider.
DEFAULT_KEEP = 20


@dataclass(frozen=True)
class LaunchFailure:
    """One launch that ended ``failed`` (every attempt failed) or
    ``aborted`` (the cloud had no quota; the request waits)."""

    #: Wall-clock time the launch ended.
    time: float
    node_id: str | None
    labels: tuple[str, ...]
    pool: str | None
    #: ``failed`` or ``aborted``.
    outcome: str
    #: The last error the launch met, as logged.
    error: str
    request_id: str | None


class LaunchErrorLog:
    """A bounded, thread-safe record of the latest :class:`LaunchFailure`
    of one provider (launches end on the provider's step-runner thread;
    the web server reads from its own threads)."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        self._failures: deque[LaunchFailure] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def record(self, failure: LaunchFailure) -> None:
        with self._lock:
            self._failures.append(failure)

    def add(self, *, node_id: str | None, labels: list[str] | tuple[str, ...],
            pool: str | None, outcome: str, error: str | None,
            request_id: str | None, when: float | None = None) -> LaunchFailure:
        """Record one ended launch; returns the entry."""
        failure = LaunchFailure(
            time=time.time() if when is None else when, node_id=node_id,
            labels=tuple(labels), pool=pool, outcome=outcome,
            error=error or "(no error message)", request_id=request_id)
        self.record(failure)
        return failure

    def latest(self) -> list[LaunchFailure]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._failures))
