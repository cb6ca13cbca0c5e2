"""Scanning a new node's SSH host keys (paramiko).

Zuul pins the keys it finds in ``host_keys``; a node that never answers
within ``boot-timeout`` is not ready.  Non-SSH connection types (winrm)
only need their port to accept TCP connections.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import paramiko

from nodepool.exceptions import LaunchKeyscanException

log = logging.getLogger("nodepool.nodescan")

# One key per type, as upstream gathers them.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "ssh-rsa")

SSH_TYPES = ("ssh", "network_cli")

# Asking a host for a key type it does not have fails by design, and
# paramiko's transport thread logs each such failure at ERROR with a
# traceback; our scan reports real failures itself, so its transports log
# to a channel that is kept quiet.
TRANSPORT_LOG_CHANNEL = "nodepool.nodescan.transport"
logging.getLogger(TRANSPORT_LOG_CHANNEL).setLevel(logging.CRITICAL)


def _connect(ip: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except OSError:
        sock.close()
        raise
    return sock


def _key_of_type(ip: str, port: int, key_type: str, timeout: float) -> str | None:
    sock = _connect(ip, port, timeout)
    transport = paramiko.Transport(sock)
    transport.set_log_channel(TRANSPORT_LOG_CHANNEL)
    try:
        opts = transport.get_security_options()
        if key_type not in opts.key_types:
            return None
        opts.key_types = [key_type]
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, EOFError, OSError):
        return None
    finally:
        transport.close()
        sock.close()


# One attempt at most this long (a host that is still booting usually
# refuses or drops the connection at once).
ATTEMPT_TIMEOUT = 10.0
# Scans in progress at once in a launcher, whatever the launches in flight.
SCAN_THREADS = 32

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def scan_once(ip: str, port: int = 22, connection_type: str = "ssh",
              timeout: float = ATTEMPT_TIMEOUT) -> list[str]:
    """One attempt: the host's keys (an empty list for connection types
    that only need the port open); raises OSError or LaunchKeyscanException
    when the host does not answer (yet)."""
    if connection_type not in SSH_TYPES:
        _connect(ip, port, timeout).close()
        return []
    keys = []
    seen_names = set()
    for key_type in KEY_TYPES:
        key = _key_of_type(ip, port, key_type, timeout)
        if key and key.split()[0] not in seen_names:
            seen_names.add(key.split()[0])
            keys.append(key)
    if not keys:
        raise LaunchKeyscanException("the SSH server offered no host key")
    return keys


def scan_once_async(ip: str, port: int, connection_type: str,
                    timeout: float = ATTEMPT_TIMEOUT) -> Future:
    """:func:`scan_once` on the launcher's small, shared pool of scanning
    threads; the future holds the keys or the error."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="NodeScan")
    return _pool.submit(scan_once, ip, port, connection_type, max(0.5, timeout))


def scan_host_keys(ip: str, port: int = 22, timeout: float = 60.0,
                   connection_type: str = "ssh", attempt_timeout: float = 10.0) -> list[str]:
    """Wait until ``ip:port`` answers and return its host keys.

    Retries until ``timeout`` seconds have passed, then raises
    LaunchKeyscanException saying what the last error was.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        per_try = max(0.5, min(attempt_timeout, remaining))
        try:
            return scan_once(ip, port, connection_type, per_try)
        except (OSError, LaunchKeyscanException) as e:
            last_error = e
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise LaunchKeyscanException(
        f"could not get host keys from {ip}:{port} within {timeout:.0f} s "
        f"({last_error})")
