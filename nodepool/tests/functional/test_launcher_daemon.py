"""The nodepool-launcher process: signals, stack dumps, orderly stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from nodepool.tests.helpers import fake_config, wait_for


def start_daemon(tmp_path, config_text, *extra):
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(config_text)
    log = tmp_path / "launcher.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool.cmd.launcher", "-f", "--no-webapp", "-c", str(cfg),
         "-p", str(tmp_path / "launcher.pid"), *extra],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    return proc, log


def test_sigusr2_dumps_stacks_and_sigterm_stops(tmp_path, zk_info, zuul):
    proc, log = start_daemon(tmp_path, fake_config(zk_info))
    try:
        request_id = zuul.submit(["fake-label"])
        assert zuul.wait_request(request_id)["state"] == "fulfilled"
        assert (tmp_path / "launcher.pid").read_text().strip() == str(proc.pid)
        os.kill(proc.pid, signal.SIGUSR2)
        markers = ("nodepool.stack_dump", "Thread: PoolWorker.fake-provider-main",
                   "Thread: DeletedNodeWorker", "Thread: MainThread")
        # The dump may reach the file in several writes.
        wait_for(lambda: all(m in log.read_text() for m in markers),
                 what="stack dump in the log")
        # Still serving after the dump.
        assert zuul.wait_request(zuul.submit(["fake-label"]))["state"] == "fulfilled"
        assert proc.poll() is None, "daemon died after SIGUSR2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not (tmp_path / "launcher.pid").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_invalid_config_exits_with_message(tmp_path, zk_info):
    proc, log = start_daemon(tmp_path, fake_config(zk_info) + "  - bogus\n")
    assert proc.wait(30) == 1
    assert "nodepool.yaml" in log.read_text()


def test_logging_config_is_used(tmp_path, zk_info):
    logfile = tmp_path / "custom.log"
    logconf = tmp_path / "logging.yaml"
    logconf.write_text(f"""\
version: 1
formatters:
  simple:
    format: 'CUSTOM %(name)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    filename: {logfile}
    formatter: simple
root:
  level: INFO
  handlers: [file]
""")
    proc, _ = start_daemon(tmp_path, fake_config(zk_info), "-l", str(logconf))
    try:
        wait_for(lambda: logfile.exists() and "CUSTOM nodepool" in logfile.read_text(),
                 what="custom log output")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_serves_web_api(tmp_path, zk_info, zuul):
    import json
    import urllib.request
    port = _free_port()
    config = fake_config(zk_info, extra=f"webapp:\n  port: {port}\n"
                                        "  listen_address: 127.0.0.1\n")
    cfg = tmp_path / "nodepool.yaml"
    cfg.write_text(config)
    log = tmp_path / "launcher.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nodepool.cmd.launcher", "-f", "-c", str(cfg),
         "-p", str(tmp_path / "launcher.pid")], stdout=open(log, "w"), stderr=subprocess.STDOUT)
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
        wait_for(lambda: get("/ready")[0] == 200, timeout=30, what="web API ready")
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
