"""The launcher runs on the configurations upstream's launcher runs on:
a broken provider is left out while the others serve, and a file without
ZooKeeper settings stops it with one clear line instead of a traceback."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from nodepool.tests.helpers import fake_config, wait_for

BROKEN_PROVIDERS = """\
  - name: gone
    driver: not-installed
  - name: no-cloud
    cloud: not-in-clouds-yaml
    cloud-images:
      - name: image
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: image
            min-ram: 8192
  - name: fake-bad-value
    cloud: fake
    max-concurrency: lots
    cloud-images:
      - name: fake-image
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: fake-image
            min-ram: 8192
"""


def test_good_provider_serves_while_broken_ones_are_left_out(
        zk_info, zuul, launcher_factory, tmp_path, monkeypatch, caplog):
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text("clouds: {}\n")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    with caplog.at_level(logging.WARNING, logger="nodepool.config"):
        launcher = launcher_factory(fake_config(zk_info) + BROKEN_PROVIDERS)
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "fulfilled"
    assert zuul.node(request["nodes"][0])["provider"] == "fake-provider"
    assert set(launcher.providers) == {"fake-provider"}
    assert {w.provider_name for w in launcher.pool_workers.values()} == {"fake-provider"}
    errors = {r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    config_path = str(tmp_path / "nodepool.yaml")
    for name, reason in (("gone", "unknown driver 'not-installed'"),
                         ("no-cloud", "Cloud not-in-clouds-yaml was not found"),
                         ("fake-bad-value", "max-concurrency: expected int")):
        [message] = [e for e in errors if e.startswith(f"Provider {name} is left out")]
        assert f"{config_path}:" in message and reason in message


def test_label_on_a_diskimage_the_provider_does_not_list_is_declined(
        zk_info, zuul, launcher_factory):
    # Upstream loads this and declines the label's requests ("images are
    # not available"), as no upload to this provider ever exists.
    pools = ("      - name: main\n        labels:\n"
             "          - name: fake-label\n            cloud-image: fake-image\n"
             "            min-ram: 8192\n"
             "          - name: small\n            diskimage: debian\n"
             "            min-ram: 1024\n")
    launcher = launcher_factory(fake_config(
        zk_info, labels=[{"name": "fake-label"}, {"name": "small"}], pools=pools,
        extra="diskimages:\n  - name: debian\n"))
    request = zuul.wait_request(zuul.submit(["small"]))
    assert request["state"] == "failed"
    [worker] = launcher.pool_workers.values()
    assert request["declined_by"] == [worker.id]
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"


def run_launcher(tmp_path, config_text: str) -> tuple[int, str]:
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(config_text)
    proc = subprocess.run(
        [sys.executable, "-m", "nodepool.cmd.launcher", "-f", "--no-webapp", "-c", str(cfg),
         "-p", str(tmp_path / "launcher.pid")],
        capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(("drop", "missing"), [
    ("zookeeper-servers", "zookeeper-servers is missing"),
    ("zookeeper-tls", "zookeeper-tls is missing: a TLS ZooKeeper connection is required"),
])
def test_launcher_without_zookeeper_settings_exits_naming_them(tmp_path, zk_info, drop,
                                                               missing):
    text = fake_config(zk_info)
    zk_part = zk_info.config_yaml()
    kept = zk_part.split("zookeeper-tls:")[0 if drop == "zookeeper-tls" else 1]
    if drop == "zookeeper-servers":
        kept = "zookeeper-tls:" + kept
    code, output = run_launcher(tmp_path, text.replace(zk_part, kept))
    assert code == 1
    assert f"{tmp_path / 'nodepool.yaml'}: {missing}" in output
    assert "Traceback" not in output


def test_provider_broken_by_a_reload_keeps_serving(zk_info, zuul, launcher_factory,
                                                   tmp_path):
    launcher = launcher_factory(fake_config(zk_info))
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    # A typo in the provider's section: it would be left out of the new
    # configuration, but it keeps its previous definition and serves on.
    text = fake_config(zk_info).replace("max-servers: 20", "max-servers: twenty")
    (tmp_path / "nodepool.yaml").write_text(text)
    launcher.request_reload()
    wait_for(lambda: "fake-provider" in launcher.config.left_out, what="the reload")
    assert "fake-provider" in launcher.config.providers
    assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
