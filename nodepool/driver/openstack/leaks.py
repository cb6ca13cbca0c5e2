"""Cleaning up what OpenStack leaves behind that carries no nodepool tags.

Servers and images carry our metadata and are handled by the shared leak
cleanup.  Ports and floating IPs cannot be tagged by a server create, so
nothing proves they are ours; they are deleted only on strong evidence:

* a port whose ``device_owner`` starts with ``compute:`` (it belonged to a
  server) that is DOWN on two listings at least ``port-cleanup-interval``
  seconds apart: Nova leaves such ports behind when a server delete races
  with Neutron, and they eat the port quota;
* only when the operator opted in with ``clean-floating-ips``, a floating
  IP that is unattached on two consecutive passes.  A peer that deleted
  floating IPs it never created (JENKINS-48799) is why this is opt-in and
  why one sighting is not enough: someone else may be between allocating
  and attaching one.
"""

from __future__ import annotations

import logging
import time
from typing import Any


def _delete_each(ids: set[str], delete: Any, what: str,
                 log: logging.Logger | logging.LoggerAdapter) -> set[str]:
    deleted = set()
    for ident in sorted(ids):
        try:
            delete(ident, ignore_missing=True)
        except Exception:
            log.exception("Could not delete leaked %s %s", what, ident)
            continue
        log.info("Deleted leaked %s %s", what, ident)
        deleted.add(ident)
    return deleted


class PortCleanup:
    """DOWN compute ports, listed at most once per ``interval`` seconds
    (0 disables), deleted when the previous listing showed them DOWN too."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._down: set[str] | None = None
        self._listed_at = 0.0

    def run(self, conn: Any, log: logging.Logger | logging.LoggerAdapter) -> int:
        if self.interval <= 0:
            return 0
        now = time.monotonic()
        if self._down is not None and now - self._listed_at < self.interval:
            return 0
        down = {p.id for p in conn.network.ports(status="DOWN")
                if (p.device_owner or "").startswith("compute:")}
        deleted: set[str] = set()
        if self._down is not None:
            deleted = _delete_each(down & self._down, conn.network.delete_port, "port", log)
        self._down, self._listed_at = down - deleted, now
        return len(deleted)


class FloatingIPCleanup:
    """Unattached floating IPs seen on two consecutive passes."""

    def __init__(self) -> None:
        self._unattached: set[str] = set()

    def run(self, conn: Any, log: logging.Logger | logging.LoggerAdapter) -> int:
        unattached = {ip.id for ip in conn.network.ips() if not ip.port_id}
        deleted = _delete_each(unattached & self._unattached, conn.network.delete_ip,
                               "floating IP", log)
        self._unattached = unattached - deleted
        return len(deleted)
