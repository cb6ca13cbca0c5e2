"""The nodepool-builder process: an operator's logging file, stack dumps,
SIGUSR1, and configuration reloads from the main and secure files."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import yaml

from nodepool.tests.functional.builder_support import write_config
from nodepool.tests.functional.daemon_support import (
    logging_file,
    read,
    rewrite,
    stack_dump,
    stop_daemon,
)
from nodepool.tests.functional.test_builder import (
    IMAGE,
    builder_command,
    ready_builds,
    simple_config,
)
from nodepool.tests.helpers import wait_for
from nodepool.zk import models
from nodepool.zk.components import ComponentRegistry


def start_builder(tmp_path, config, *extra):
    """A foreground builder (as systemd runs it); returns (process, its
    config path, its stdout log)."""
    path = tmp_path / "nodepool.yaml"
    write_config(path, config)
    out = tmp_path / "builder.out"
    proc = subprocess.Popen(builder_command() + ["-f", "-c", str(path), *extra],
                            stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    return proc, path, out


def builders(zk):
    return ComponentRegistry(zk).all("builder")


def dib_env(config, build):
    base = Path(config["images-dir"]) / f"{IMAGE}-{build.id}"
    text = (Path(f"{base}.d") / "dib-env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines())


def test_operator_logging_file_stack_dump_config_errors_and_sigusr1(
        tmp_path, zk_info, zk, images, fake_cloud_reset):
    """A dictConfig file without disable_existing_loggers must not
    silence our loggers: the stack dump shows every thread, a broken
    configuration is reported; SIGUSR1 then stops the builder in order."""
    logfile = tmp_path / "custom.log"
    logconf = logging_file(tmp_path, "yaml", logfile)
    config = simple_config(zk_info, tmp_path)
    proc, path, _ = start_builder(tmp_path, config, "-l", str(logconf))
    try:
        wait_for(lambda: ready_builds(images), timeout=60, what="a build")
        assert len(builders(zk)) == 1
        os.kill(proc.pid, signal.SIGUSR2)
        threads = wait_for(lambda: stack_dump(read(logfile)), what="stack dump in the log")
        assert "CUSTOM nodepool.stack_dump" in logfile.read_text()
        assert {"MainThread", "NodePoolBuilder", "BuildWorker.0", "UploadWorker.0",
                "UploadWorker.3", "CleanupWorker.0"} <= set(threads)
        for name, stack in threads.items():
            assert 'File "' in stack, f"no stack for thread {name}"

        # Invalid YAML: reported with the place, the builder carries on.
        rewrite(path, path.read_text() + "providers: [\n")
        wait_for(lambda: f"Configuration {path} is invalid" in read(logfile)
                 and "YAML syntax error" in read(logfile), what="invalid YAML reported")
        # An invalid value.
        rewrite(path, yaml.safe_dump(dict(config, **{"images-dir": 5})))
        wait_for(lambda: read(logfile).count(f"Configuration {path} is invalid") == 2,
                 what="invalid value reported")
        assert proc.poll() is None

        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == 0
    finally:
        stop_daemon(proc)
    assert "Received signal SIGUSR1; stopping" in logfile.read_text()
    assert builders(zk) == []


def test_secure_file_change_is_used_without_a_signal(tmp_path, zk_info, zk, images,
                                                      fake_cloud_reset):
    """A diskimage env-var from the secure file: editing only the secure
    file changes what the next build gets."""
    secure = tmp_path / "secure.yaml"
    secure.write_text(yaml.safe_dump(
        {"diskimages": [{"name": IMAGE, "env-vars": {"DIB_SECRET": "one"}}]}))
    config = simple_config(zk_info, tmp_path)
    proc, _, out = start_builder(tmp_path, config, "-s", str(secure))
    try:
        [first] = wait_for(lambda: ready_builds(images), timeout=60, what="a build")
        assert dib_env(config, first)["DIB_SECRET"] == "one"
        rewrite(secure, yaml.safe_dump(
            {"diskimages": [{"name": IMAGE, "env-vars": {"DIB_SECRET": "two"}}]}))
        wait_for(lambda: "reloaded" in read(out), what="secure file re-read")
        zk.submit_build_request(IMAGE)
        second = wait_for(lambda: [b for b in ready_builds(images) if b.id != first.id],
                          timeout=30, what="a second build")[0]
        assert dib_env(config, second)["DIB_SECRET"] == "two"
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0


def test_sighup_rereads_files_whose_mtime_did_not_change(tmp_path, zk_info, zk, images,
                                                         fake_cloud_reset):
    config = simple_config(zk_info, tmp_path)
    proc, path, out = start_builder(tmp_path, config)
    try:
        wait_for(lambda: ready_builds(images), timeout=60, what="a build")
        # A second diskimage, written by a tool that keeps modification
        # times: only SIGHUP makes the builder read it.
        config["diskimages"].append(dict(config["diskimages"][0], name="other-image"))
        config["providers"][0]["diskimages"].append({"name": "other-image"})
        rewrite(path, yaml.safe_dump(config), keep_mtime=True)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: [b for b in images.builds("other-image")
                          if b.state == models.READY], timeout=30,
                 what="the new diskimage built")
        assert proc.poll() is None
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0
    assert "reloaded (forced)" in out.read_text()
