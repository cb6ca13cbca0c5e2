"""tools/quickstart end to end, in a private state directory, chroot and
ports so it never meets a user's own quick start."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from nodepool.tests.conftest import ZK_DIR
from nodepool.tests.sshd import require_sshd

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "tools" / "quickstart"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_quickstart_serves_a_request_reuses_and_stops(tmp_path, zk_info):
    require_sshd()
    state = tmp_path / "state"
    env = dict(os.environ,
               NODEPOOL_QUICKSTART_STATE=str(state),
               NODEPOOL_QUICKSTART_HOST="127.0.0.14",
               NODEPOOL_QUICKSTART_PORT=str(_free_port("127.0.0.14")),
               NODEPOOL_QUICKSTART_WEBAPP_PORT=str(_free_port("127.0.0.1")),
               NODEPOOL_QUICKSTART_CHROOT=zk_info.chroot,
               NODEPOOL_ZK_DIR=ZK_DIR,
               NODEPOOL_ZK_TLS_PORT=str(zk_info.port))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(QUICKSTART), *args], env=env, capture_output=True,
                              text=True, timeout=180)

    pids: list[int] = []
    try:
        first = run()
        assert first.returncode == 0, first.stdout + first.stderr
        assert "local-static" in first.stdout and "ready" in first.stdout
        assert "Nodes returned unused" in first.stderr
        log = (state / "launcher.log").read_text()
        assert "Fulfilled with nodes" in log
        pids = [int((state / "launcher.pid").read_text()),
                int((state / "sshd" / "sshd.pid").read_text())]
        # A second run reuses the running launcher and sshd.
        second = run()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "nodepool-launcher already running" in second.stdout
        assert "sshd already running" in second.stdout
        assert [int((state / "launcher.pid").read_text()),
                int((state / "sshd" / "sshd.pid").read_text())] == pids
    finally:
        stop = run("--stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped nodepool-launcher" in stop.stdout and "stopped sshd" in stop.stdout
    assert not any(_alive(pid) for pid in pids)
