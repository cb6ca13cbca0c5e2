"""Running an image's check command on a node over SSH, within a deadline.

The node was just launched from the upload being checked, so it may still
be finishing its boot (cloud-init installing keys): connecting is retried
until the deadline.  Its host keys were scanned by the launch; the server
must present one of them (unless the label turned host-key checking off,
which leaves the list empty).  The command's exit status decides; its
output (stdout and stderr together, the last few KB) goes to the log so
an operator can see why a check failed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import paramiko

log = logging.getLogger("nodepool.ImageValidator.ssh")

# One connection attempt at most this long.
CONNECT_TIMEOUT = 10.0
# Pause between connection attempts.
CONNECT_RETRY = 1.0
# How often a running command is looked at (output read, deadline and stop
# checked).
POLL = 0.2
# Output kept for the log (the end of it).
OUTPUT_LIMIT = 4096


@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, or why not (``reason``, one
    line for the upload record and listings)."""

    passed: bool
    reason: str
    exit_status: int | None = None
    output: str = ""


class CheckAbandoned(Exception):
    """The launcher is stopping: the check ends without a verdict."""


class HostKeyMismatch(paramiko.SSHException):
    """The server presented a key the launch did not scan."""


class _KnownHostKeys(paramiko.MissingHostKeyPolicy):
    """Accept the server only if it presents one of the keys the launch
    scanned (any key when none were scanned: host-key checking is off)."""

    def __init__(self, host_keys: list[str]) -> None:
        # "<type> <base64>": compared by the key itself, since a scan may
        # name an RSA key by its signature algorithm (rsa-sha2-512).
        self.blobs = {k.split()[1] for k in host_keys if len(k.split()) >= 2}

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        if self.blobs and key.get_base64() not in self.blobs:
            raise HostKeyMismatch(
                f"host key {key.get_name()} of {hostname} is not one the launch scanned")


def run_check(*, host: str, port: int, username: str, command: str, timeout: float,
              host_keys: list[str], private_key: str | None = None,
              stop: threading.Event | None = None) -> CheckResult:
    """Connect to ``host`` and run ``command``; passed when it exits 0
    before ``timeout`` seconds (from now, connecting included) are up.
    ``private_key``: a key file; None uses the launcher user's keys and
    agent.  Raises CheckAbandoned when ``stop`` is set meanwhile."""
    deadline = time.monotonic() + timeout
    stop = stop if stop is not None else threading.Event()
    client = _connect(host, port, username, host_keys, private_key, deadline, timeout, stop)
    if isinstance(client, CheckResult):
        return client
    try:
        return _run(client, command, deadline, timeout, stop)
    finally:
        client.close()


def _connect(host: str, port: int, username: str, host_keys: list[str],
             private_key: str | None, deadline: float, timeout: float,
             stop: threading.Event) -> paramiko.SSHClient | CheckResult:
    last_error = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return CheckResult(False, f"could not log in to {username}@{host}:{port} within "
                                      f"{timeout:.0f} s: {last_error}")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_KnownHostKeys(host_keys))
        attempt = min(CONNECT_TIMEOUT, remaining)
        try:
            client.connect(host, port=port, username=username, key_filename=private_key,
                           look_for_keys=private_key is None,
                           allow_agent=private_key is None, timeout=attempt,
                           banner_timeout=attempt, auth_timeout=attempt)
            return client
        except (HostKeyMismatch, paramiko.BadHostKeyException) as e:
            client.close()
            return CheckResult(False, f"wrong host key: {e}")
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            last_error = str(e) or type(e).__name__
            log.debug("Connecting to %s@%s:%s: %s", username, host, port, last_error)
        if stop.wait(min(CONNECT_RETRY, max(0.0, deadline - time.monotonic()))):
            raise CheckAbandoned("stopping")


def _run(client: paramiko.SSHClient, command: str, deadline: float, timeout: float,
         stop: threading.Event) -> CheckResult:
    transport = client.get_transport()
    if transport is None:
        return CheckResult(False, "the SSH connection closed before the command ran")
    try:
        channel = transport.open_session(timeout=max(1.0, deadline - time.monotonic()))
        channel.set_combine_stderr(True)
        channel.settimeout(POLL)
        channel.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError) as e:
        return CheckResult(False, f"could not run the command: {e}")
    output = bytearray()
    try:
        while True:
            try:
                chunk = channel.recv(32768)
            except TimeoutError:
                chunk = None
            if chunk:
                output += chunk
                del output[:-OUTPUT_LIMIT]
            elif chunk == b"":
                # End of output; the exit status follows it.
                if channel.exit_status_ready():
                    break
                stop.wait(POLL)
            if stop.is_set():
                raise CheckAbandoned("stopping")
            if time.monotonic() >= deadline:
                return CheckResult(False, f"timed out after {timeout:.0f} s",
                                   output=output.decode("utf8", "replace"))
        status = channel.recv_exit_status()
    finally:
        channel.close()
    text = output.decode("utf8", "replace")
    if status == 0:
        return CheckResult(True, "command exited 0", 0, text)
    last = text.strip().splitlines()[-1:] if text.strip() else []
    detail = f": {last[0][:200]}" if last else ""
    return CheckResult(False, f"command exited {status}{detail}", status, text)
