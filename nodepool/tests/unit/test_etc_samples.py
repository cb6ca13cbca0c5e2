"""The samples in etc/ work: configs validate, logging configs load and
catch stack dumps, systemd units parse."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nodepool.config import check_config, load_config

ETC = Path(__file__).resolve().parents[3] / "etc"
CONFIGS = sorted(p.name for p in ETC.glob("nodepool*.yaml"))
LOGGING = ["logging.yaml", "builder-logging.yaml"]
UNITS = sorted(p.name for p in (ETC / "systemd").glob("*.service"))


def test_the_samples_are_there():
    assert {"nodepool.yaml", "nodepool-static.yaml", "nodepool-mixed.yaml"} <= set(CONFIGS)
    assert UNITS == ["nodepool-builder.service", "nodepool-launcher.service"]


@pytest.mark.parametrize("name", CONFIGS)
def test_sample_config_is_valid(name):
    assert check_config(str(ETC / name)) == []


def test_secure_file_merges_into_the_openstack_sample():
    assert check_config(str(ETC / "nodepool.yaml"), str(ETC / "secure.conf")) == []
    config = load_config(str(ETC / "nodepool.yaml"), str(ETC / "secure.conf"))
    assert config.zookeeper_servers[0]["chroot"] == "/nodepool"
    env = config.diskimages["debian-bookworm"].env_vars
    assert env["DIB_REG_PASSWORD"] and env["DIB_CHECKSUM"] == "1"


def test_static_sample_offers_every_connection_type():
    config = load_config(str(ETC / "nodepool-static.yaml"))
    [pool] = config.providers["lab"].pools.values()
    assert {h.connection_type for h in pool.nodes} == {"ssh", "winrm", "network_cli"}


@pytest.mark.parametrize("name", LOGGING)
def test_logging_config_loads_and_keeps_stack_dumps(name, tmp_path):
    conf = yaml.safe_load((ETC / name).read_text())
    for handler in conf["handlers"].values():
        handler["filename"] = str(tmp_path / Path(handler["filename"]).name)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(conf))
    script = (
        "import logging, logging.config, sys, yaml\n"
        "logging.config.dictConfig(yaml.safe_load(open(sys.argv[1])))\n"
        "logging.getLogger('nodepool.stack_dump').warning('Thread stack dump: here')\n"
        "logging.getLogger('nodepool.NodePool').info('an info line')\n"
        "logging.getLogger('nodepool.PoolWorker').debug('a debug line')\n"
        "logging.getLogger('kazoo.client').info('kazoo noise')\n")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=30)
    files = {Path(h["filename"]).name: Path(h["filename"]).read_text()
             for h in conf["handlers"].values()}
    normal, debug, dump = (files[Path(conf["handlers"][k]["filename"]).name]
                           for k in ("normal", "debug", "stack_dump"))
    assert "Thread stack dump" in normal and "Thread stack dump" in dump
    assert "an info line" in normal and "a debug line" not in normal
    assert "a debug line" in debug and "an info line" not in dump
    assert "kazoo noise" not in debug


@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_parses(name, tmp_path):
    text = (ETC / "systemd" / name).read_text()
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    service = parser["Service"]
    assert service["Type"] == "simple" and service["Restart"] == "on-failure"
    assert service["User"] == "nodepool"
    assert " -f " in service["ExecStart"]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    # verify wants the executable to exist: point it at ours.
    daemon = Path(sys.executable).with_name(name.removesuffix(".service"))
    if not daemon.exists():
        daemon = Path(sys.executable)
    unit = tmp_path / name
    unit.write_text(text.replace("/usr/local/bin/" + name.removesuffix(".service"),
                                 str(daemon)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    # Unknown keys or bad values are only warnings: there must be none.
    assert str(unit) not in result.stderr, result.stderr
