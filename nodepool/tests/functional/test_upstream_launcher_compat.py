"""Our launcher takes over from upstream Nodepool 11.0.0's own launcher.

An operator replacing upstream's launcher by ours keeps what upstream's
left in ZooKeeper.  Here upstream's ``nodepool-launcher`` (in a
virtualenv of its own, installed on first use; marked slow) serves a
metastatic provider: its backing node is held with a lock that outlives
the launcher, and its metastatic node is in use by Zuul.  Then it stops
and ours starts on the same file: it must find that backing node and the
slot in use, and serve the next node from the same backing node.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from nodepool.tests.functional.daemon_support import stop_daemon
from nodepool.tests.functional.test_metastatic_driver import OWNER, big_nodes, lock_holders
from nodepool.tests.functional.upstream_support import CLOUDS_YAML, upstream_env
from nodepool.tests.helpers import wait_for

pytestmark = pytest.mark.slow


def takeover_config(zk_info) -> str:
    """A fake cloud serving ``big`` (no host-key scan: upstream's fake
    servers have no sshd) and a metastatic provider on it, in the form
    both launchers read."""
    return zk_info.config_yaml() + """\
webapp:
  port: 0
  listen_address: 127.0.0.1
labels:
  - name: big
    min-ready: 0
  - name: meta
    min-ready: 0
providers:
  - name: fake-provider
    cloud: fake
    driver: fake
    region-name: fake-region
    cloud-images:
      - name: fake-image
        image-name: Fake Precise
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
        labels:
          - name: big
            cloud-image: fake-image
            min-ram: 8192
            flavor-name: Fake
  - name: meta-provider
    driver: metastatic
    pools:
      - name: main
        max-servers: 10
        labels:
          - name: meta
            backing-label: big
            max-parallel-jobs: 2
            grace-time: 600
"""


def test_our_launcher_takes_over_upstreams_metastatic_provider(
        upstream_nodepool, zk_info, zuul, launcher_factory, tmp_path):
    config_text = takeover_config(zk_info)
    upstream_config = tmp_path / "upstream.yaml"
    upstream_config.write_text(config_text)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS_YAML)
    log = tmp_path / "upstream-launcher.log"
    launcher_exe = upstream_nodepool.parent / "nodepool-launcher"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(launcher_exe), "-f", "-c", str(upstream_config)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env=upstream_env(clouds))
    try:
        request_id = zuul.submit(["meta"])
        request = zuul.wait_request(request_id, timeout=120)
        assert request["state"] == "fulfilled", log.read_text()[-3000:]
        [first] = zuul.accept(request_id)
    finally:
        stop_daemon(proc, timeout=60)
    # What upstream left: its backing node, held for good, and our node.
    [backing_id] = big_nodes(zuul)
    backing = zuul.node(backing_id)
    assert backing["state"] == "in-use"
    assert json.loads(backing["user_data"])["owner"] == OWNER
    assert lock_holders(zuul, backing_id)[:1] == [OWNER]
    first_record = zuul.node(first)
    assert first_record["state"] == "in-use"
    assert first_record["driver_data"]["backing_node"] == backing_id
    first_slot = first_record["driver_data"]["slot"]

    launcher_factory(config_text)
    second_request = zuul.wait_request(zuul.submit(["meta"]))
    assert second_request["state"] == "fulfilled"
    [second] = second_request["nodes"]
    data = zuul.node(second)["driver_data"]
    # The free slot of upstream's backing node, not a new backing node.
    assert data["backing_node"] == backing_id and data["slot"] != first_slot
    assert big_nodes(zuul) == [backing_id]
    assert zuul.node(second)["interface_ip"] == backing["interface_ip"]

    # Upstream's node, returned, is deleted by ours; the backing node stays
    # ours (grace-time) with the second node on it.
    zuul.return_nodes([first])
    wait_for(lambda: zuul.node(first) is None, what="upstream's node deleted by ours")
    assert zuul.node(backing_id)["state"] == "in-use"
    assert lock_holders(zuul, backing_id)[:1] == [OWNER]
