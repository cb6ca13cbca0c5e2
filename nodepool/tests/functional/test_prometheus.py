"""``/metrics`` scraped from running daemons: a nodepool-launcher process
booting nodes in the simulated OpenStack cloud through the real
openstacksdk, and a nodepool-builder process building and uploading, with
no statsd configured.  Every line must parse with prometheus_client's own
parser, and the values must move with the work done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nodepool import stats as statsmod
from nodepool.builder.webapp import BuilderWebApp
from nodepool.tests.functional.builder_support import write_config
from nodepool.tests.functional.daemon_support import stop_daemon
from nodepool.tests.functional.test_builder import (
    IMAGE,
    PROVIDER,
    builder_command,
    ready_uploads,
    simple_config,
)
from nodepool.tests.helpers import FakeZuul, fake_config, wait_for
from nodepool.tests.openstack_sim import SimulatedCloud

REPO = Path(__file__).resolve().parents[3]
OS_PROVIDER = "os-provider"
# A label with a dot: statsd writes it raw into a dotted key; Prometheus
# must still see one label value.
LABEL = "ubuntu-22.04"


class Scrape:
    """One parsed answer of ``/metrics``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[Any] = []
        for family in text_string_to_metric_families(text):
            self.samples.extend(family.samples)
        # The parser read every sample line there is.
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        assert len(self.samples) == len(lines), "lines the parser did not read"

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``
        (0 when there are none)."""
        return sum(s.value for s in self.samples if s.name == name
                   and all(s.labels.get(k) == v for k, v in labels.items()))

    def has(self, name: str, **labels: str) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body); status 0 while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            return 0, "", ""
        raise


def scrape(port: int) -> Scrape:
    status, content_type, body = get(port, "/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain"), content_type
    return Scrape(body)


def wait_value(port: int, name: str, wanted: Any, **labels: str) -> Scrape:
    """Scrape until ``name{labels}`` is there and satisfies ``wanted`` (a
    value, or a predicate); returns that scrape."""
    check = wanted if callable(wanted) else (lambda v: v == wanted)
    last: list[float] = []

    def ok() -> Scrape | None:
        result = scrape(port)
        last[:] = [result.value(name, **labels)]
        return result if result.has(name, **labels) and check(last[0]) else None

    return wait_for(ok, 60, what=f"{name}{labels} to be {wanted} (last {last})")


def no_statsd_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATSD_")}
    env["PYTHONPATH"] = str(REPO)
    return env


# The launcher ---------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud(boot_delay=0.05) as cloud:
        yield cloud


def launcher_config(zk_info: Any, port: int) -> str:
    return (zk_info.config_yaml()
            + f"webapp:\n  port: {port}\n  listen_address: 127.0.0.1\n"
            + f"""labels:
  - name: {LABEL}
providers:
  - name: {OS_PROVIDER}
    cloud: sim
    rate: 0.0001
    boot-timeout: 10
    cloud-images:
      - name: precise
        image-name: Fake Precise
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        networks: [private]
        auto-floating-ip: false
        labels:
          - name: {LABEL}
            cloud-image: precise
            min-ram: 1000
""")


@pytest.fixture
def launcher_daemon(sim: SimulatedCloud, zk_info: Any, tmp_path: Path) -> Iterator[int]:
    """A nodepool-launcher process with its web port on 127.0.0.1 and no
    statsd; yields the port."""
    clouds = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(clouds, image_format="raw")
    port = free_port()
    config = tmp_path / "nodepool.yaml"
    config.write_text(launcher_config(zk_info, port))
    env = no_statsd_env()
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)
    log = tmp_path / "launcher.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool.cmd.launcher", "-f", "-c", str(config),
         "-p", str(tmp_path / "launcher.pid")],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        wait_for(lambda: proc.poll() is not None or get(port, "/ready")[0] == 200, 60,
                 what="the launcher ready")
        assert proc.poll() is None, log.read_text()
        yield port
    finally:
        stop_daemon(proc)


def test_launcher_metrics_move_with_launches_and_node_states(launcher_daemon, zk_info, sim):
    port = launcher_daemon
    zuul = FakeZuul(zk_info, system_id="zuul.example.org:1")
    try:
        before = wait_value(port, "nodepool_label_nodes", 0, label=LABEL, state="ready")
        # Zeros for every state of a label a pool offers, as statsd has.
        assert before.has("nodepool_label_nodes", label=LABEL, state="in-use")
        assert before.value("nodepool_launches_total") == 0
        # Sent as plain statsd strings by the pool workers, read back.
        wait_value(port, "nodepool_provider_max_servers", 10, provider=OS_PROVIDER)
        assert before.has("process_cpu_seconds_total")

        request_id = zuul.submit([LABEL])
        assert zuul.wait_request(request_id)["state"] == "fulfilled"
        after = wait_value(port, "nodepool_label_nodes", 1, label=LABEL, state="ready")
        assert after.value("nodepool_provider_nodes", provider=OS_PROVIDER,
                           state="ready") == 1
        assert after.value("nodepool_nodes", state="ready") == 1
        # One launch, counted with its requestor as Zuul wrote it.
        assert after.value("nodepool_launches_total", provider=OS_PROVIDER, result="ready",
                           requestor="zuul.example.org:1") == 1
        assert after.value("nodepool_launch_duration_seconds_count", provider=OS_PROVIDER,
                           result="ready") == 1
        assert after.value("nodepool_request_fulfil_duration_seconds_count",
                           provider=OS_PROVIDER, label=LABEL) == 1
        assert after.value("nodepool_request_fulfil_duration_seconds_sum",
                           provider=OS_PROVIDER, label=LABEL) > 0
        # The server was asked for over the compute API, timed per provider.
        assert after.value("nodepool_cloud_api_duration_seconds_count",
                           provider=OS_PROVIDER, service="compute", method="POST") >= 1
        # Not openstacksdk's own, labelled by URL.
        assert not after.has("openstack_http_response_time_count")

        # Zuul takes the node: the state gauges follow.
        node_ids = zuul.accept(request_id)
        in_use = wait_value(port, "nodepool_label_nodes", 1, label=LABEL, state="in-use")
        assert in_use.value("nodepool_label_nodes", label=LABEL, state="ready") == 0
        # Returned and deleted: the server goes with a DELETE call.
        zuul.return_nodes(node_ids)
        wait_for(lambda: not sim.servers(), 60, what="the server deleted")
        wait_value(port, "nodepool_provider_nodes", 0, provider=OS_PROVIDER, state="used")
        # The call is timed once its reply is read, which may be after the
        # cloud has dropped the server.
        done = wait_value(port, "nodepool_cloud_api_duration_seconds_count",
                          lambda count: count >= 1, provider=OS_PROVIDER,
                          service="compute", method="DELETE")
        assert done.value("nodepool_launches_total") == 1
    finally:
        zuul.close()


# The builder ----------------------------------------------------------------------


def test_builder_serves_metrics_and_health_only_when_configured(
        tmp_path, zk_info, zk, images, fake_cloud_reset):
    port = free_port()
    config = simple_config(zk_info, tmp_path, **{
        "builder-webapp": {"port": port, "listen_address": "127.0.0.1"}})
    path = tmp_path / "nodepool.yaml"
    write_config(path, config)
    log = tmp_path / "builder.log"
    proc = subprocess.Popen(builder_command() + ["-f", "-c", str(path),
                                                 "-p", str(tmp_path / "builder.pid")],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=no_statsd_env(), cwd=REPO)
    try:
        wait_for(lambda: ready_uploads(images), 60, what="an upload")
        assert get(port, "/health")[:2] == (200, "text/plain; charset=UTF-8")
        assert get(port, "/node-list")[0] == 404
        first = wait_value(port, "nodepool_image_upload_duration_seconds_count", 1,
                           image=IMAGE, provider=PROVIDER)
        assert first.value("nodepool_dib_image_build_duration_seconds_count",
                           image=IMAGE) == 1
        assert first.value("nodepool_dib_image_build_rc", image=IMAGE) == 0
        assert first.value("nodepool_dib_image_build_size_bytes", image=IMAGE) > 0
        assert first.value("nodepool_dib_image_build_last_build_timestamp_seconds",
                           image=IMAGE) > 0
        wait_value(port, "nodepool_builder_build_state", 0, image=IMAGE,
                   hostname=socket.gethostname())
        assert first.has("nodepool_builder_upload_state", image=IMAGE, provider=PROVIDER)

        # An operator asks for a build: a second build and upload follow.
        zk.submit_build_request(IMAGE)
        second = wait_value(port, "nodepool_image_upload_duration_seconds_count", 2,
                            image=IMAGE, provider=PROVIDER)
        assert second.value("nodepool_dib_image_build_duration_seconds_count",
                            image=IMAGE) == 2
        wait_value(port, "nodepool_image_build_requests", 0)
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0, log.read_text()

    # Without builder-webapp nothing listens.
    del config["builder-webapp"]
    write_config(path, config)
    proc = subprocess.Popen(builder_command() + ["-f", "-c", str(path),
                                                 "-p", str(tmp_path / "builder2.pid")],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=no_statsd_env(), cwd=REPO)
    try:
        wait_for(lambda: "nodepool-builder" in log.read_text()
                 and "started" in log.read_text(), 60, what="the builder started")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        stop_daemon(proc)


def test_builder_health_is_503_without_a_zookeeper_session():
    connected = [False]
    app = BuilderWebApp(lambda: connected[0], "127.0.0.1", 0)
    app.start()
    try:
        status, _, body = get(app.port, "/health")
        assert status == 503 and "ZooKeeper" in body
        connected[0] = True
        assert get(app.port, "/health")[0] == 200
        # /metrics answers whatever the session does.
        Scrape(get(app.port, "/metrics")[2])
    finally:
        app.stop()


# Which launcher records what -------------------------------------------------------


@pytest.fixture
def no_statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("STATSD_HOST", "STATSD_PORT", "STATSD_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    statsmod.reset_stats()
    yield
    statsmod.reset_stats()


def registry_scrape() -> Scrape:
    return Scrape(statsmod.get_stats().prometheus.render()[0].decode())


def test_without_statsd_a_launcher_records_cluster_gauges_but_stays_out_of_the_election(
        no_statsd, zk_info, zk, zuul, launcher_factory):
    # An upstream launcher with statsd must keep winning the statsd
    # election against ours when ours has no statsd to send to.
    launcher_factory(fake_config(zk_info))
    request_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    wait_for(lambda: registry_scrape().value("nodepool_label_nodes", label="fake-label",
                                             state="ready") == 1,
             30, what="the ready node in the gauges")
    assert zk.election("stats", "observer").contenders() == []


def test_with_statsd_the_elected_launcher_still_sends_and_records(
        statsd, zk_info, zk, zuul, launcher_factory):
    launcher_factory(fake_config(zk_info))
    wait_for(lambda: len(zk.election("stats", "observer").contenders()) == 1, 60,
             what="the launcher standing for election")
    request_id = zuul.submit(["fake-label"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    wait_for(lambda: "nodepool.label.fake-label.nodes.ready:1|g" in statsd.lines, 60,
             what="the statsd gauge")
    scrape = registry_scrape()
    assert scrape.value("nodepool_label_nodes", label="fake-label", state="ready") == 1
    assert scrape.value("nodepool_launches_total", provider="fake-provider",
                        result="ready") == 1
