"""Our loader accepts every upstream fixture config that upstream 11.0.0's
``config-validate`` accepts, and rejects the ones it rejects.

The fixtures are not part of this repository: tools/fetch-upstream-fixtures
takes them from the upstream wheel on PyPI at test time.  The verdicts
(upstream_fixture_verdicts.json) were recorded by running upstream's own
validator on each fixture.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

from nodepool.config import check_config

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
VERDICTS = json.loads((HERE.parent / "fixtures" / "upstream_fixture_verdicts.json").read_text())
CACHE = pathlib.Path(os.environ.get("NODEPOOL_UPSTREAM_FIXTURES",
                                    "/tmp/nodepool-upstream-fixtures-11.0.0"))
FIXTURES = sorted(k for k in VERDICTS if not k.startswith("_"))


@pytest.fixture(scope="session")
def upstream_fixtures() -> pathlib.Path:
    if not (CACHE / "node.yaml").exists():
        result = subprocess.run(
            [str(REPO / "tools" / "fetch-upstream-fixtures"), str(CACHE)],
            capture_output=True, text=True,
            env={**os.environ, "PYTHON": os.environ.get("PYTHON", "python3")})
        if result.returncode != 0 or not (CACHE / "node.yaml").exists():
            pytest.skip("could not download upstream fixtures from PyPI: "
                        + result.stderr.strip()[-300:])
    return CACHE


def render(src: pathlib.Path, dest: pathlib.Path, tmp: pathlib.Path, raw: bool) -> None:
    text = src.read_text()
    if not raw:
        text = text.format(
            images_dir=tmp / "images", build_log_dir=tmp / "logs",
            zookeeper_host="127.0.0.1", zookeeper_port=2281,
            zookeeper_chroot="/fixture", zookeeper_ca="/tmp/ca.pem",
            zookeeper_cert="/tmp/cert.pem", zookeeper_key="/tmp/key.pem",
            # The AWS fixtures' account-specific values.
            subnet_id="subnet-0123456789abcdef0", security_group_id="sg-0123456789abcdef0",
            instance_profile_arn="arn:aws:iam::123456789012:instance-profile/np")
    dest.write_text(text)


@pytest.mark.parametrize("name", FIXTURES)
def test_upstream_fixture_verdict(name, upstream_fixtures, tmp_path, monkeypatch):
    verdict = VERDICTS[name]
    monkeypatch.setenv("NODEPOOL_PORT", "8005")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(upstream_fixtures / "clouds.yaml"))
    raw = name.startswith("config_validate/")
    path = tmp_path / "nodepool.yaml"
    render(upstream_fixtures / name, path, tmp_path, raw)
    secure = None
    if name == "secure_file_config.yaml":
        secure = tmp_path / "secure.yaml"
        render(upstream_fixtures / "secure_file_secure.yaml", secure, tmp_path, False)
    problems = check_config(str(path), str(secure) if secure else None)
    if verdict["validate"] == 0:
        assert problems == [], f"upstream accepts {name}"
    else:
        assert problems, (f"upstream rejects {name} "
                          f"({verdict.get('validate_error', '')}); we accepted it")
