"""Talking to static hosts: host-key scans, liveness checks, health.

A static host is somebody else's machine: it may be rebooting, firewalled
or reinstalled (new host keys) at any moment.  Each host's health is kept
on its own, so one that hangs or refuses never holds up the others
(OPERATORS.md row 20), and its problems are logged when they start and
when they end, not on every retry.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from nodepool.driver import nodescan
from nodepool.exceptions import LaunchKeyscanException

log = logging.getLogger("nodepool.driver.static")

# Retry delays for a host that is unreachable or offers the wrong keys.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 30.0

UP = "up"
UNKNOWN = "unknown"
UNREACHABLE = "unreachable"
KEY_MISMATCH = "host-key-mismatch"


class HostProblem(Exception):
    """The host must not be offered; ``kind`` is UNREACHABLE or
    KEY_MISMATCH and the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def normalize_key(key: str) -> str:
    """``<type> <base64>`` without a trailing comment or extra spaces, so a
    key pasted from a ``known_hosts`` or ``.pub`` file still matches."""
    return " ".join(key.split()[:2])


def uses_ssh(host: Any) -> bool:
    """Whether the host's connection type has SSH host keys."""
    return host.connection_type in nodescan.SSH_TYPES


def tcp_check(host: Any, timeout: float | None = None) -> None:
    """Open and close a TCP connection to the host's connection port.
    Raises HostProblem(UNREACHABLE) when that fails within the timeout."""
    limit = host.timeout if timeout is None else timeout
    try:
        socket.create_connection((host.name, host.connection_port), timeout=limit).close()
    except OSError as e:
        raise HostProblem(UNREACHABLE, f"cannot connect to {host.name} port "
                          f"{host.connection_port}: {e or type(e).__name__}") from e


def check_host(host: Any) -> list[str]:
    """Contact the host as its configuration asks; return the host keys to
    record on its nodes.

    * ``host-key-checking: false``: nothing is contacted (the launcher may
      have no route to the host, only the executors); the configured
      ``host-key`` is recorded for SSH hosts.
    * SSH and network_cli hosts: the port must answer, the keys are
      scanned, and every configured ``host-key`` must be among them.
    * other connection types (winrm): the port must accept a TCP
      connection; there are no host keys.
    """
    if not host.host_key_checking:
        return list(host.host_keys) if uses_ssh(host) else []
    tcp_check(host)
    if not uses_ssh(host):
        return []
    try:
        keys = nodescan.scan_host_keys(
            host.name, host.connection_port, timeout=host.timeout,
            connection_type=host.connection_type, attempt_timeout=host.timeout)
    except LaunchKeyscanException as e:
        raise HostProblem(UNREACHABLE, str(e)) from e
    offered = {normalize_key(k) for k in keys}
    missing = [k for k in host.host_keys if normalize_key(k) not in offered]
    if missing:
        types = ", ".join(sorted(k.split()[0] for k in offered)) or "none"
        raise HostProblem(KEY_MISMATCH, f"the configured host-key "
                          f"{normalize_key(missing[0])[:40]}... is not among the keys "
                          f"{host.name} port {host.connection_port} offers ({types})")
    return keys


class HostHealth:
    """What was last learned about one host and when to ask it again.

    Shared by the provider objects that succeed one another when the
    configuration changes, so a new one does not start by hammering a
    host the old one already knew to be down.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.state = UNKNOWN
        self.reason: str | None = None
        self.backoff = 0.0
        self.next_try = 0.0

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.next_try

    def record_ok(self) -> None:
        if self.state not in (UP, UNKNOWN):
            log.info("Static host %s answers again; offering it", self.label)
        self.state = UP
        self.reason = None
        self.backoff = 0.0
        self.next_try = 0.0

    def record_problem(self, problem: HostProblem) -> None:
        """Back off; log only when the kind of problem changes."""
        if self.state != problem.kind:
            log.warning("Static host %s is not offered: %s (retrying with a backoff "
                        "of up to %.0f s)", self.label, problem, MAX_BACKOFF)
        self.state = problem.kind
        self.reason = str(problem)
        self.backoff = min(MAX_BACKOFF, self.backoff * 2 if self.backoff else INITIAL_BACKOFF)
        self.next_try = time.monotonic() + self.backoff

    def forget(self) -> None:
        """Make the next check happen at once (e.g. after a config change)."""
        self.next_try = 0.0
