"""Talking to static hosts: TCP checks, host-key scans and comparison.

A static host is somebody else's machine: it may be rebooting, firewalled
or reinstalled (new host keys) at any moment.  A failed check raises
:class:`HostProblem`; the framework's registrar keeps each host's health
and retries it with a backoff (:mod:`nodepool.driver.registration`).
"""

from __future__ import annotations

import socket

from nodepool.driver import nodescan
from nodepool.driver.registration import EndpointProblem
from nodepool.driver.static.config import StaticHost
from nodepool.exceptions import LaunchKeyscanException

UNREACHABLE = "unreachable"
KEY_MISMATCH = "host-key-mismatch"


class HostProblem(EndpointProblem):
    """The host must not be offered; ``kind`` is UNREACHABLE or
    KEY_MISMATCH and the message says why."""


def normalize_key(key: str) -> str:
    """``<type> <base64>`` without a trailing comment or extra spaces, so a
    key pasted from a ``known_hosts`` or ``.pub`` file still matches."""
    return " ".join(key.split()[:2])


def uses_ssh(host: StaticHost) -> bool:
    """Whether the host's connection type has SSH host keys."""
    return host.connection_type in nodescan.SSH_TYPES


def tcp_check(host: StaticHost, timeout: float | None = None) -> None:
    """Open and close a TCP connection to the host's connection port.
    Raises HostProblem(UNREACHABLE) when that fails within the timeout."""
    limit = host.timeout if timeout is None else timeout
    try:
        socket.create_connection((host.name, host.connection_port), timeout=limit).close()
    except OSError as e:
        raise HostProblem(UNREACHABLE, f"cannot connect to {host.name} port "
                          f"{host.connection_port}: {e or type(e).__name__}") from e


def check_host(host: StaticHost) -> list[str]:
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

