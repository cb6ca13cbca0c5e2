"""statsd metrics with upstream's key names.

Metrics are sent only when ``STATSD_HOST`` is set (``STATSD_PORT``
defaults to 8125), exactly as upstream.  Without it every call is a no-op,
so callers never check.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("nodepool.stats")


def normalize(name: str) -> str:
    """statsd key part: dots and colons would split or break the key."""
    return str(name).replace(".", "_").replace(":", "_")


class Stats:
    """A thin wrapper so disabled statsd costs nothing."""

    def __init__(self) -> None:
        self.client: Any = None
        host = os.environ.get("STATSD_HOST")
        if host:
            import statsd
            port = int(os.environ.get("STATSD_PORT", 8125))
            prefix = os.environ.get("STATSD_PREFIX")
            self.client = statsd.StatsClient(host, port, prefix=prefix)

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def incr(self, key: str, count: int = 1) -> None:
        if self.client:
            self.client.incr(key, count)

    def gauge(self, key: str, value: float) -> None:
        if self.client:
            self.client.gauge(key, value)

    def timing(self, key: str, ms: float) -> None:
        if self.client:
            self.client.timing(key, ms)

    def pipeline(self) -> Any:
        """A pipeline (one UDP packet per batch) or a no-op stand-in."""
        if self.client:
            return self.client.pipeline()
        return _NullPipeline()

    def launch_attempt_error(self, provider: str, key: str) -> None:
        """One failed attempt of a launch that may still succeed."""
        self.incr(f"nodepool.launch.provider.{provider}.{key}.attempt")

    def launch_result(self, *, result: str, provider: str, az: str | None,
                      requestor: str | None, ms: float) -> None:
        """``nodepool.launch[.provider.<p>[.<az>]][.requestor.<r>].<result>``
        as a timer and a counter each."""
        if not self.client:
            return
        keys = ["nodepool.launch", f"nodepool.launch.provider.{provider}"]
        if az:
            keys.append(f"nodepool.launch.provider.{provider}.{normalize(az)}")
        if requestor:
            keys.append(f"nodepool.launch.requestor.{normalize(requestor)}")
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.timing(f"{key}.{result}", ms)
                pipe.incr(f"{key}.{result}")


class _NullPipeline:
    def __enter__(self) -> _NullPipeline:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def incr(self, *a: Any, **k: Any) -> None:
        pass

    def gauge(self, *a: Any, **k: Any) -> None:
        pass

    def timing(self, *a: Any, **k: Any) -> None:
        pass


_stats: Stats | None = None


def get_stats() -> Stats:
    """The process-wide stats sender (environment read on first use)."""
    global _stats
    if _stats is None:
        _stats = Stats()
    return _stats


def reset_stats() -> None:
    global _stats
    _stats = None
