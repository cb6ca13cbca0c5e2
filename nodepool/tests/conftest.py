"""Shared test fixtures: a private ZooKeeper chroot per test, on the real
TLS ZooKeeper that tools/test-setup.sh starts."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient

from nodepool.tests.k8s_sim.fixtures import k8s_sim, openshift_sim  # noqa: F401
from nodepool.zk import ZooKeeper, ZooKeeperClient

ZK_DIR = os.environ.get("NODEPOOL_ZK_DIR", "/tmp/nodepool-zk")
ZK_HOST = os.environ.get("NODEPOOL_ZK_HOST", "127.0.0.1:2281")
ZK_CA = os.environ.get("NODEPOOL_ZK_CA", f"{ZK_DIR}/certs/ca.pem")
ZK_CERT = os.environ.get("NODEPOOL_ZK_CERT", f"{ZK_DIR}/certs/client.pem")
ZK_KEY = os.environ.get("NODEPOOL_ZK_KEY", f"{ZK_DIR}/certs/client.key")


@dataclass
class ZKInfo:
    """Where a test's private ZooKeeper chroot is and how to reach it."""

    host: str
    port: int
    chroot: str
    ca: str
    cert: str
    key: str

    @property
    def hosts(self) -> str:
        return f"{self.host}:{self.port}{self.chroot}"

    def config_yaml(self) -> str:
        """The zookeeper part of a nodepool.yaml for this chroot."""
        return (
            "zookeeper-servers:\n"
            f"  - host: {self.host}\n"
            f"    port: {self.port}\n"
            f"    chroot: {self.chroot}\n"
            "zookeeper-tls:\n"
            f"  ca: {self.ca}\n"
            f"  cert: {self.cert}\n"
            f"  key: {self.key}\n"
        )

    def client(self) -> ZooKeeperClient:
        return ZooKeeperClient(self.hosts, self.cert, self.key, self.ca, timeout=10)


# -- Skips fail the run in CI ----------------------------------------------
#
# A skipped test proves nothing, and a test that skips because its host
# lacks something (network, a tool) skips silently for ever.  CI (and
# tools/run-tests) therefore runs with --fail-on-skip: the skip reasons are
# listed and the run fails.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip", action="store_true",
        default=os.environ.get("NODEPOOL_FAIL_ON_SKIP", "") not in ("", "0"),
        help="fail the run if any test is skipped (also NODEPOOL_FAIL_ON_SKIP=1); "
             "tools/run-tests sets it")


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # With pytest-xdist this runs in the controller for every worker's
    # reports too.
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if (_skipped and session.config.getoption("fail_on_skip")
            and exitstatus == pytest.ExitCode.OK):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    if _skipped and config.getoption("fail_on_skip"):
        terminalreporter.write_sep(
            "=", f"{len(_skipped)} skipped test(s) fail this run (--fail-on-skip)",
            red=True)
        for nodeid in _skipped:
            terminalreporter.write_line(f"SKIPPED {nodeid}")


def _admin_client() -> KazooClient:
    client = KazooClient(hosts=ZK_HOST, use_ssl=True, certfile=ZK_CERT,
                         keyfile=ZK_KEY, ca=ZK_CA)
    try:
        client.start(timeout=10)
    except Exception as e:
        pytest.exit(f"ZooKeeper is not reachable at {ZK_HOST} with TLS ({e}); "
                    "run tools/test-setup.sh first", returncode=3)
    return client


@pytest.fixture(scope="session")
def zk_admin() -> Iterator[KazooClient]:
    client = _admin_client()
    yield client
    client.stop()
    client.close()


@pytest.fixture
def zk_info(zk_admin: KazooClient) -> Iterator[ZKInfo]:
    chroot = f"/nodepool_test/{uuid.uuid4().hex}"
    zk_admin.ensure_path(chroot)
    host, port = ZK_HOST.rsplit(":", 1)
    yield ZKInfo(host, int(port), chroot, ZK_CA, ZK_CERT, ZK_KEY)
    try:
        zk_admin.delete(chroot, recursive=True)
    except Exception:
        pass


@pytest.fixture
def zk_client(zk_info: ZKInfo) -> Iterator[ZooKeeperClient]:
    client = zk_info.client()
    client.connect(timeout=10)
    yield client
    client.disconnect()


@pytest.fixture
def zk(zk_client: ZooKeeperClient) -> ZooKeeper:
    return ZooKeeper(zk_client)


@pytest.fixture
def fake_cloud_reset() -> Iterator[None]:
    from nodepool.driver.fake.cloud import FakeCloud
    FakeCloud.reset_all()
    yield
    FakeCloud.reset_all()


@pytest.fixture
def zuul(zk_info: ZKInfo):
    from nodepool.tests.helpers import FakeZuul
    client = FakeZuul(zk_info)
    yield client
    client.close()


@pytest.fixture
def launcher_factory(tmp_path, fake_cloud_reset):
    """Start launchers (in this process) on config text; stopped after the
    test.  Returns a function(config_text, **kwargs) -> NodePool."""
    from nodepool.launcher import NodePool
    from nodepool.tests.helpers import wait_for

    started = []

    def start(config_text: str, name: str = "nodepool.yaml", **kwargs):
        path = tmp_path / name
        path.write_text(config_text)
        kwargs.setdefault("cleanup_interval", 1.0)
        kwargs.setdefault("delete_interval", 1.0)
        kwargs.setdefault("watermark_sleep", 0.2)
        launcher = NodePool(str(path), **kwargs)
        launcher.start()
        started.append(launcher)
        wait_for(lambda: launcher.ready or not launcher.is_alive(), 60, what="launcher ready")
        assert launcher.is_alive(), "launcher died on start"
        return launcher

    yield start
    for launcher in started:
        launcher.stop()


class StatsdListener:
    """A UDP listener standing in for statsd; collects raw metric lines."""

    def __init__(self) -> None:
        import socket
        import threading
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            self.lines.extend(data.decode().splitlines())

    def stop(self) -> None:
        self._running = False
        self._thread.join(2)
        self.sock.close()

    def has(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in list(self.lines))


@pytest.fixture
def statsd(monkeypatch) -> Iterator[StatsdListener]:
    from nodepool import stats
    listener = StatsdListener()
    monkeypatch.setenv("STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("STATSD_PORT", str(listener.port))
    stats.reset_stats()
    yield listener
    listener.stop()
    stats.reset_stats()


ZUUL_VERSION = "14.3.0"
ZUUL_VENV = Path(os.environ.get("NODEPOOL_ZUUL_VENV", f"/tmp/nodepool-zuul-{ZUUL_VERSION}-venv"))
UPSTREAM_VERSION = "11.0.0"
UPSTREAM_VENV = Path(os.environ.get("NODEPOOL_UPSTREAM_VENV",
                                    f"/tmp/nodepool-upstream-{UPSTREAM_VERSION}-venv"))


def released_venv(venv: Path, marker_name: str, packages: list[str]) -> Path:
    """A virtualenv holding released ``packages``, installed on first
    use: once, even with several test workers asking at the same time
    (a file lock beside it)."""
    import fcntl
    import subprocess
    import sys
    marker = venv / marker_name
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                                     "-q", *packages], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.fail(f"could not install {' '.join(packages)}: "
                            f"{result.stderr[-2000:]}")
            marker.write_text("ok\n")
    return venv


@pytest.fixture(scope="session")
def zuul_python() -> Path:
    """The python of a virtualenv holding the released Zuul 14.3.0."""
    venv = released_venv(ZUUL_VENV, ".zuul-installed", [f"zuul=={ZUUL_VERSION}"])
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def upstream_nodepool() -> Path:
    """Upstream's released ``nodepool`` command (11.0.0; its launcher is
    beside it)."""
    # 11.0.0 imports cachetools without declaring it.
    venv = released_venv(UPSTREAM_VENV, ".installed",
                         [f"nodepool=={UPSTREAM_VERSION}", "cachetools"])
    return venv / "bin" / "nodepool"
