"""statsd metrics with upstream's key names.

Metrics are sent only when ``STATSD_HOST`` is set (``STATSD_PORT``
defaults to 8125), exactly as upstream; ``STATSD_PREFIX`` (ours, unset by
default) puts a prefix before every key.  Without ``STATSD_HOST`` every
call is a no-op, so callers never check.  Every key is listed in
``doc/source/metrics.rst``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from kazoo.exceptions import SessionExpiredError

from nodepool.exceptions import LaunchError

log = logging.getLogger("nodepool.stats")

READY = "ready"
ERROR_ZKSESSION = "error.zksession"
ERROR_UNKNOWN = "error.unknown"


def normalize(name: str) -> str:
    """statsd key part: dots and colons would split or break the key.

    Upstream applies this only to the requestor (``nodepool.launch.
    requestor.*``) and the tenant-limit keys; every other name goes into
    keys as written in the configuration, and so do ours, so that existing
    dashboards keep matching.
    """
    return str(name).replace(".", "_").replace(":", "_")


def launch_result_key(error: BaseException | None, *, session_lost: bool = False) -> str:
    """The ``<result>`` of ``nodepool.launch.*`` for a launch (attempt)
    that ended with ``error`` (None: the node is ready).

    The mapping is upstream's, which dashboards and alerts are built on:
    losing the ZooKeeper session (our node lock went with it) is
    ``error.zksession`` whatever was raised; a project exception names
    its own kind in ``statsd_key`` (``error.quota``, ``error.status``,
    ``error.keyscan``, ``error.servercreatetimeout``, ...); anything else
    is ``error.unknown``.
    """
    if session_lost or isinstance(error, SessionExpiredError):
        return ERROR_ZKSESSION
    if error is None:
        return READY
    if isinstance(error, LaunchError):
        return error.statsd_key
    return ERROR_UNKNOWN


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

    def launch_result(self, *, result: str, provider: str, az: str | None,
                      requestor: str | None, ms: float) -> None:
        """``nodepool.launch.<result>``, ``nodepool.launch.provider.<p>.
        <result>``, ``nodepool.launch.provider.<p>.<az>.<result>`` (with an
        availability zone) and ``nodepool.launch.requestor.<r>.<result>``
        (with a requestor), each as a timer and a counter.

        As upstream, only the requestor is normalised (it is free text
        from Zuul); provider and zone go in as named.
        """
        if not self.client:
            return
        keys = ["nodepool.launch", f"nodepool.launch.provider.{provider}"]
        if az:
            keys.append(f"nodepool.launch.provider.{provider}.{az}")
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
