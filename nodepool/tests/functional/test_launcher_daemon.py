"""The nodepool-launcher process: signals, stack dumps, logging files,
pidfiles, configuration reloads, orderly stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from nodepool.tests.conftest import ZKInfo
from nodepool.tests.functional.daemon_support import (
    logging_file,
    read,
    rewrite,
    stack_dump,
    stop_daemon,
)
from nodepool.tests.helpers import FakeZuul, fake_config, wait_for
from nodepool.zk.components import ComponentRegistry

LAUNCHER = [sys.executable, "-m", "nodepool.cmd.launcher"]


def start_daemon(tmp_path, config_text, *extra, name="launcher"):
    """A foreground launcher (as systemd runs it) on ``config_text``."""
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(config_text)
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [*LAUNCHER, "-f", "--no-webapp", "-c", str(cfg), *extra],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, log


def pool_names(zk):
    return {c.name for c in ComponentRegistry(zk).all("pool")}


def launcher_count(zk):
    return len(ComponentRegistry(zk).all("launcher"))


def test_sigusr2_dumps_stacks_and_sigterm_stops(tmp_path, zk_info, zuul):
    proc, log = start_daemon(tmp_path, fake_config(zk_info))
    try:
        request_id = zuul.submit(["fake-label"])
        assert zuul.wait_request(request_id)["state"] == "fulfilled"
        os.kill(proc.pid, signal.SIGUSR2)
        # The dump may reach the file in several writes.
        threads = wait_for(lambda: stack_dump(read(log)), what="stack dump in the log")
        assert "nodepool.stack_dump" in log.read_text()
        assert {"MainThread", "NodePool", "PoolWorker.fake-provider-main",
                "DeletedNodeWorker"} <= set(threads)
        # Still serving after the dump.
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        assert proc.poll() is None, "daemon died after SIGUSR2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_daemon(proc)


def test_operator_logging_file_keeps_stack_dump_and_config_errors(tmp_path, zk_info, zuul):
    """A dictConfig file without disable_existing_loggers must not
    silence our loggers (created at import): the stack dump shows every
    thread and broken main or secure files are reported."""
    logfile = tmp_path / "custom.log"
    logconf = logging_file(tmp_path, "yaml", logfile)
    secure = tmp_path / "secure.yaml"
    secure.write_text(f"zookeeper-tls:\n  ca: {zk_info.ca}\n  cert: {zk_info.cert}\n"
                      f"  key: {zk_info.key}\n")
    config_text = fake_config(zk_info)
    proc, _ = start_daemon(tmp_path, config_text, "-l", str(logconf), "-s", str(secure))
    cfg = tmp_path / "launcher.yaml"
    try:
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        os.kill(proc.pid, signal.SIGUSR2)
        threads = wait_for(lambda: stack_dump(read(logfile)), what="stack dump in the log")
        assert "CUSTOM nodepool.stack_dump" in logfile.read_text()
        assert {"MainThread", "NodePool", "PoolWorker.fake-provider-main",
                "DeletedNodeWorker", "CleanupWorker"} <= set(threads)
        for name, stack in threads.items():
            assert 'File "' in stack, f"no stack for thread {name}"

        # A broken main file: reported, the running configuration stays.
        rewrite(cfg, config_text + "max-hold-age: forever\n")
        wait_for(lambda: f"Configuration {cfg} and {secure} is invalid" in read(logfile)
                 and "max-hold-age: expected int" in read(logfile),
                 what="invalid main file reported")
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        rewrite(cfg, config_text)
        wait_for(lambda: "reloaded" in read(logfile), what="fixed file reloaded")

        # The secure file alone changes (to an invalid value): noticed
        # without a signal.
        rewrite(secure, "zookeeper-tls: not-a-mapping\n")
        wait_for(lambda: f"{secure}:1: zookeeper-tls: expected a dictionary"
                 in read(logfile), what="invalid secure file reported")
        assert proc.poll() is None
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0


@pytest.mark.parametrize("kind", ["json", "ini"])
def test_json_and_ini_logging_files(tmp_path, zk_info, kind):
    logfile = tmp_path / "custom.log"
    logconf = logging_file(tmp_path, kind, logfile, marker=kind.upper())
    proc, _ = start_daemon(tmp_path, fake_config(zk_info), "-l", str(logconf))
    try:
        wait_for(lambda: f"{kind.upper()} nodepool.launcher nodepool-launcher started"
                 in read(logfile), what="log lines through the operator's file")
        os.kill(proc.pid, signal.SIGUSR2)
        wait_for(lambda: stack_dump(read(logfile)), what="stack dump in the log")
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0


@pytest.mark.parametrize("content, ext, message", [
    ("version: 1\nhandlers:\n  h:\n    class: no.such.Handler\n", "yaml",
     "cannot apply the logging configuration"),
    ("version: 1\nhandlers: [oops\n", "yaml", "is not valid YAML/JSON"),
    ("[loggers]\nkeys=root\n", "conf", "cannot apply the logging configuration"),
    (None, "yaml", "does not exist"),
])
def test_unusable_logging_file_is_refused_with_the_reason(tmp_path, content, ext, message):
    path = tmp_path / f"logging.{ext}"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([*LAUNCHER, "-f", "-c", str(tmp_path / "none.yaml"),
                             "-l", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert message in result.stderr and str(path) in result.stderr


def test_invalid_config_exits_with_message(tmp_path, zk_info):
    # A bad value outside the providers makes the whole file unusable (a
    # broken provider would only be left out).
    proc, log = start_daemon(tmp_path, fake_config(zk_info) + "max-hold-age: forever\n")
    assert proc.wait(30) == 1
    text = log.read_text()
    assert "launcher.yaml:" in text and "max-hold-age: expected int" in text


def test_sigusr1_stops_in_order(tmp_path, zk_info, zuul, zk):
    proc, log = start_daemon(tmp_path, fake_config(zk_info))
    try:
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        assert pool_names(zk) == {"main"} and launcher_count(zk) == 1
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == 0
    finally:
        stop_daemon(proc)
    assert "Received signal SIGUSR1; stopping" in log.read_text()
    # Unregistered by the daemon itself, not left for the session timeout.
    assert pool_names(zk) == set() and launcher_count(zk) == 0


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie waiting for a reaper has ended too.
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_detached_daemon_holds_pidfile_until_sigusr1(tmp_path, zk_info, zk):
    """Without -f the launcher detaches (working in /, so relative paths
    are resolved first), holds the pidfile and removes it when stopped."""
    (tmp_path / "nodepool.yaml").write_text(fake_config(zk_info))
    logfile = tmp_path / "custom.log"
    logging_file(tmp_path, "yaml", logfile)
    pidfile = tmp_path / "run" / "launcher.pid"
    starter = subprocess.run(
        [*LAUNCHER, "--no-webapp", "-c", "nodepool.yaml", "-l", "logging.yaml",
         "-p", "run/launcher.pid"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60)
    assert starter.returncode == 0, starter.stderr
    pid = int(wait_for(lambda: read(pidfile).strip(), what="pidfile written"))
    try:
        assert not _gone(pid)
        wait_for(lambda: pool_names(zk) == {"main"}, what="pool registered")
        # A second one is refused before it detaches, with the reason.
        second = subprocess.run(
            [*LAUNCHER, "--no-webapp", "-c", "nodepool.yaml", "-p", "run/launcher.pid"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert f"another process (pid {pid}) holds the pidfile {pidfile}" in second.stderr
        os.kill(pid, signal.SIGUSR1)
        wait_for(lambda: _gone(pid), timeout=60, what="daemon exited")
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert not pidfile.exists()
    assert pool_names(zk) == set() and launcher_count(zk) == 0
    assert "nodepool-launcher started" in logfile.read_text()


@pytest.fixture
def other_zk_info(zk_admin, zk_info):
    """A second private chroot, for a second nodepool installation."""
    chroot = f"/nodepool_test/{uuid.uuid4().hex}"
    zk_admin.ensure_path(chroot)
    yield ZKInfo(zk_info.host, zk_info.port, chroot, zk_info.ca, zk_info.cert, zk_info.key)
    zk_admin.delete(chroot, recursive=True)


def test_two_foreground_launchers_without_pidfile_option(tmp_path, zk_info, other_zk_info,
                                                         zuul):
    """In the foreground no pidfile is taken (as upstream), so two
    launchers with different configurations share a host."""
    first, _ = start_daemon(tmp_path, fake_config(zk_info), name="first")
    second, second_log = start_daemon(tmp_path, fake_config(other_zk_info), name="second")
    other_zuul = FakeZuul(other_zk_info)
    try:
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        assert other_zuul.wait_request(
            other_zuul.submit(["fake-label"]))["state"] == "fulfilled", read(second_log)
        assert first.poll() is None and second.poll() is None
    finally:
        other_zuul.close()
        stop_daemon(first)
        stop_daemon(second)
    assert first.returncode == 0 and second.returncode == 0


def two_pools(zk_info):
    pool = ("      - name: {name}\n        max-servers: 5\n        labels:\n"
            "          - name: {label}\n            cloud-image: fake-image\n"
            "            min-ram: 8192\n")
    return fake_config(
        zk_info, labels=[{"name": "fake-label"}, {"name": "other-label"}],
        pools=pool.format(name="main", label="fake-label")
        + pool.format(name="other", label="other-label"))


def test_sighup_rereads_a_file_whose_mtime_did_not_change(tmp_path, zk_info, zuul, zk):
    proc, log = start_daemon(tmp_path, fake_config(zk_info))
    cfg = tmp_path / "launcher.yaml"
    try:
        wait_for(lambda: pool_names(zk) == {"main"}, what="pool registered")
        # Rewritten by a tool that keeps modification times: only a
        # SIGHUP makes the launcher read it.
        rewrite(cfg, two_pools(zk_info), keep_mtime=True)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: pool_names(zk) == {"main", "other"}, what="new pool served")
        assert zuul.wait_request(zuul.submit(["other-label"]))["state"] == "fulfilled"
        assert proc.poll() is None
    finally:
        stop_daemon(proc)
    assert proc.returncode == 0
    assert "reloaded (forced)" in log.read_text()


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_serves_web_api(tmp_path, zk_info, zuul):
    import urllib.request
    port = _free_port()
    config = fake_config(zk_info, extra=f"webapp:\n  port: {port}\n"
                                        "  listen_address: 127.0.0.1\n")
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(config)
    log = tmp_path / "launcher.log"
    proc = subprocess.Popen(
        [*LAUNCHER, "-f", "-c", str(cfg)], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        def get(path, accept=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if accept:
                req.add_header("Accept", accept)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return None, ""
        wait_for(lambda: get("/ready")[0] == 200, timeout=60, what="web API ready")
        request = zuul.wait_request(zuul.submit(["fake-label"]))
        status, body = get("/node-list", "application/json")
        assert status == 200
        assert request["nodes"][0] in [row["id"] for row in json.loads(body)]
        status, body = get("/label-list")
        assert status == 200 and "fake-label" in body
        assert get("/health")[0] == 200
        assert "reloaded" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
