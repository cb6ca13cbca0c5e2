"""A real OpenSSH server on a loopback address, for host-key scanning tests.

Each instance has its own host key, config, pid and log files in a work
directory, listens on one 127.0.0.0/8 address (never anything routable,
see ENVIRONMENT.md) and is stopped by the test that started it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def require_sshd() -> None:
    """Skip the calling test, saying why, when sshd is not installed."""
    if not os.access(SSHD, os.X_OK):
        pytest.skip(f"{SSHD} is missing: install openssh-server "
                    "(tools/run-tests does) to run host-key scan tests")


class LoopbackSshd:
    """``/usr/sbin/sshd -D`` on ``address``:<free port> with an ed25519 host key.

    The port and host key are kept across ``stop()``/``start()``, so a test
    can take a host down and bring the same host back; ``reserve_port()``
    picks the port before the first start (a host that does not answer yet).
    """

    def __init__(self, workdir: Path, address: str = "127.0.0.5", port: int = 0) -> None:
        if not address.startswith("127."):
            raise ValueError("test sshd listens on loopback addresses only")
        self.workdir = workdir
        self.address = address
        self.port = port
        self.process: subprocess.Popen | None = None

    def reserve_port(self) -> int:
        """The port this sshd will listen on (nothing listens there yet)."""
        if not self.port:
            self.port = _free_port(self.address)
        return self.port

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def host_key(self) -> str:
        """``<type> <base64>`` as a host-key scan reports it."""
        text = (self.workdir / "host_ed25519.pub").read_text()
        return " ".join(text.split()[:2])

    def start(self, timeout: float = 10.0) -> None:
        require_sshd()
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation dir
        self.workdir.mkdir(parents=True, exist_ok=True)
        key = self.workdir / "host_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                           check=True)
        self.reserve_port()
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress {self.address}\nHostKey {key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\n")
        subprocess.run([SSHD, "-t", "-f", str(config)], check=True)
        self.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.workdir / "sshd.log")])
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.address, self.port), timeout=0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"sshd did not start on {self.address}:{self.port}; "
                                       f"see {self.workdir / 'sshd.log'}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
