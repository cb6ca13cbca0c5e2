"""Upstream Nodepool 11.0.0's own CLI reads what our daemons write.

Operators may keep upstream's ``nodepool`` command (or scripts built on
it) while running our launcher.  Marked slow: the first run installs
nodepool==11.0.0 into a virtualenv of its own (about 30 s).
"""

from __future__ import annotations

import subprocess

import pytest

from nodepool.tests.functional.upstream_support import CLOUDS_YAML, upstream_env
from nodepool.tests.helpers import fake_config

pytestmark = pytest.mark.slow


def test_upstream_cli_lists_our_nodes_and_requests(upstream_nodepool, zk_info, zuul,
                                                   launcher_factory, tmp_path):
    config = fake_config(zk_info, labels=[{"name": "fake-label", "min-ready": 1}])
    launcher_factory(config)
    request_id = zuul.submit(["fake-label", "fake-label"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    waiting = zuul.submit(["no-such-label"])
    zuul.wait_request(waiting)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS_YAML)
    env = upstream_env(clouds)

    def run(*args):
        result = subprocess.run([str(upstream_nodepool), "-c", str(tmp_path / "nodepool.yaml"),
                                 *args], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    listing = run("list", "--detail")
    for node_id in request["nodes"]:
        assert node_id in listing
    assert "fake-provider" in listing and "ready" in listing
    requests = run("request-list")
    assert waiting in requests and "failed" in requests
    run("image-list")
    run("dib-image-list")
    info = run("info", "fake-provider")
    for node_id in request["nodes"]:
        assert node_id in info


def test_upstream_cli_lists_uploads_with_checks(upstream_nodepool, zk_info, zk, tmp_path):
    # Uploads awaiting, passing and failing a check before service keep
    # upstream's states, so upstream's image-list reads them all.
    from nodepool.zk import models
    from nodepool.zk.models import ImageBuild, ImageUpload

    build = ImageBuild("fake-image")
    build.state = models.READY
    build_id = zk.store_build("fake-image", build)
    stored = {}
    for name, state, validation in [
            ("pending", models.READY, {"state": models.VALIDATION_PENDING}),
            ("passed", models.READY, {"state": models.VALIDATION_PASSED, "node": "1"}),
            ("failed", models.FAILED, {"state": models.VALIDATION_FAILED,
                                       "reason": "command exited 1"})]:
        upload = ImageUpload()
        upload.state = state
        upload.external_id = f"image-{name}"
        upload.external_name = f"fake-image-{name}"
        upload.validation = validation
        stored[name] = zk.store_upload("fake-image", build_id, "fake-provider", upload)
    (tmp_path / "nodepool.yaml").write_text(fake_config(zk_info))
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS_YAML)
    env = upstream_env(clouds)
    result = subprocess.run([str(upstream_nodepool), "-c", str(tmp_path / "nodepool.yaml"),
                             "image-list"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in result.stdout.splitlines() if build_id in line}
    assert {rows[stored[n]][6] for n in ("pending", "passed")} == {models.READY}
    assert rows[stored["failed"]][6] == models.FAILED


def test_upstream_cli_lists_metastatic_and_backing_nodes(upstream_nodepool, zk_info, zuul,
                                                         launcher_factory, tmp_path):
    from nodepool.tests.functional.test_metastatic_driver import big_nodes, meta_config

    launcher_factory(meta_config(zk_info))
    request = zuul.wait_request(zuul.submit(["meta", "meta"]))
    assert request["state"] == "fulfilled"
    [backing_id] = big_nodes(zuul)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(CLOUDS_YAML)
    result = subprocess.run([str(upstream_nodepool), "-c", str(tmp_path / "nodepool.yaml"),
                             "list", "--detail"], capture_output=True, text=True,
                            env=upstream_env(clouds), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines()
            if line.startswith("|") and line.split("|")[1].strip().isdigit()}
    for node_id in request["nodes"]:
        assert "meta-provider" in rows[node_id] and " meta " in rows[node_id]
    assert "in-use" in rows[backing_id] and "fake-provider" in rows[backing_id]
