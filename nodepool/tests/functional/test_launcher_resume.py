"""A launcher killed with launches in flight: the next one resumes them.

Real launcher processes against the OpenStack simulator (real openstacksdk
over HTTP) and the test's ZooKeeper chroot.  The first launcher is killed
with SIGKILL while its servers are still building; a second one, started
at once, takes its requests over the moment the dead launcher's session
expires, and the half-built servers become the nodes they were meant to be.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodepool.tests.helpers import wait_for
from nodepool.tests.openstack_sim import SimulatedCloud

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def sim() -> Iterator[SimulatedCloud]:
    with SimulatedCloud(boot_delay=0.05) as cloud:
        yield cloud


def config(zk_info: Any) -> str:
    return (zk_info.config_yaml()
            # The shortest session ZooKeeper grants (2 ticks): the dead
            # launcher's locks go soon after it.
            + "zookeeper-timeout: 4\n"
            + """labels:
  - name: small
providers:
  - name: os-provider
    cloud: sim
    rate: 0.0001
    boot-timeout: 10
    launch-timeout: 300
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
          - name: small
            cloud-image: precise
            min-ram: 1000
""")


class Launcher:
    """A nodepool-launcher process of its own."""

    def __init__(self, tmp_path: Path, name: str, env: dict[str, str]) -> None:
        self.log = tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nodepool.cmd.launcher", "-f", "--no-webapp",
             "-c", str(tmp_path / "nodepool.yaml"), "-p", str(tmp_path / f"{name}.pid")],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def building_with_server(zuul: Any) -> list[dict]:
    if not zuul.client.exists("/nodepool/nodes"):
        return []
    nodes = [zuul.node(n) for n in zuul.client.get_children("/nodepool/nodes")]
    return [n for n in nodes if n and n["state"] == "building" and n["external_id"]]


def test_killed_launcher_requests_resumed_by_the_next_one(sim, zk_info, zuul, tmp_path):
    clouds = tmp_path / "clouds.yaml"
    sim.write_clouds_yaml(clouds, image_format="raw")
    (tmp_path / "nodepool.yaml").write_text(config(zk_info))
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds),
           "PYTHONPATH": str(REPO)}
    sim.hold_servers_in_build()
    first = Launcher(tmp_path, "first", env)
    second = None
    try:
        requests = [zuul.submit(["small"]), zuul.submit(["small", "small"]),
                    zuul.submit(["small"])]
        # Every server asked for, each recorded in its node (the progress
        # a successor needs).
        wait_for(lambda: len(building_with_server(zuul)) == 4, timeout=60,
                 what="four servers building")
        servers = {s.id for s in sim.servers()}
        assert len(servers) == 4
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        second = Launcher(tmp_path, "second", env)
        # The servers come up only now, under the new launcher.
        wait_for(lambda: "Resumed request" in second.text(), timeout=60,
                 what="a request resumed")
        sim.hold_servers_in_build(False)
        for request_id in requests:
            assert zuul.wait_request(request_id, timeout=60)["state"] == "fulfilled"
        node_ids = [n for r in requests for n in zuul.request(r)["nodes"]]
        assert len(node_ids) == 4
        # The half-built servers became the nodes: nothing was created again.
        assert {zuul.node(n)["external_id"] for n in node_ids} == servers
        assert {s.id for s in sim.servers()} == servers
        log = second.text()
        assert log.count("Resumed request") == 3, log
        assert "Reset lost request" not in log
        # And they are ordinary nodes: used, then deleted with their servers.
        for request_id in requests:
            zuul.return_nodes(zuul.accept(request_id))
        wait_for(lambda: not sim.servers(), timeout=60, what="servers deleted")
    finally:
        first.stop()
        if second is not None:
            second.stop()
