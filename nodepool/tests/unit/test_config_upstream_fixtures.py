"""Our loader accepts every upstream fixture config that upstream 11.0.0's
``config-validate`` accepts, and rejects the ones it rejects.

The fixtures are not part of this repository: tools/fetch-upstream-fixtures
takes them from the upstream wheel on PyPI at test time, with the pip of
the interpreter running the tests (a virtualenv's, not the system's).  A
fetch that fails fails these tests: they are never skipped.  The verdicts
(upstream_fixture_verdicts.json) were recorded by running upstream's own
validator on each fixture.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from nodepool.config import check_config, load_config
from nodepool.driver import Driver, registry
from nodepool.exceptions import ConfigError, ProviderNotImplemented

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
            capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
        if result.returncode != 0 or not (CACHE / "node.yaml").exists():
            pytest.fail(
                f"could not fetch the upstream fixtures into {CACHE} with "
                f"{sys.executable} -m pip (exit {result.returncode}): "
                f"{result.stderr.strip()[-1000:]}\n"
                "Let pip reach PyPI (or its configured index), or point "
                "NODEPOOL_UPSTREAM_FIXTURES at a directory holding nodepool "
                "11.0.0's tests/fixtures.", pytrace=False)
    return CACHE


def render(src: pathlib.Path, dest: pathlib.Path, tmp: pathlib.Path, raw: bool) -> None:
    text = src.read_text()
    if not raw:
        text = text.format(
            images_dir=tmp / "images", build_log_dir=tmp / "logs",
            zookeeper_host="127.0.0.1", zookeeper_port=2281,
            zookeeper_chroot="/fixture", zookeeper_ca="/tmp/ca.pem",
            zookeeper_cert="/tmp/cert.pem", zookeeper_key="/tmp/key.pem",
            context_name="sim-context",
            # The AWS fixtures' account-specific values.
            subnet_id="subnet-0123456789abcdef0", security_group_id="sg-0123456789abcdef0",
            instance_profile_arn="arn:aws:iam::123456789012:instance-profile/np",
            # The Azure fixtures' credentials file (not read at load).
            auth_path=tmp / "azure-auth.json")
    dest.write_text(text)


def prepare(name: str, fixtures: pathlib.Path, tmp: pathlib.Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, str | None]:
    """The fixture (and secure file) rendered as upstream's tests do, in
    the environment the verdicts were recorded in."""
    monkeypatch.setenv("NODEPOOL_PORT", "8005")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(fixtures / "clouds.yaml"))
    # clouds.yaml is cached per process; read the fixtures' one.
    registry.reset_all()
    raw = name.startswith("config_validate/")
    path = tmp / "nodepool.yaml"
    render(fixtures / name, path, tmp, raw)
    secure = None
    if name == "secure_file_config.yaml":
        secure = tmp / "secure.yaml"
        render(fixtures / "secure_file_secure.yaml", secure, tmp, False)
    return str(path), str(secure) if secure else None


@pytest.mark.parametrize("name", FIXTURES)
def test_upstream_fixture_verdict(name, upstream_fixtures, tmp_path, monkeypatch):
    verdict = VERDICTS[name]
    path, secure = prepare(name, upstream_fixtures, tmp_path, monkeypatch)
    problems = check_config(path, secure)
    if verdict["validate"] == 0:
        assert problems == [], f"upstream accepts {name}"
    else:
        assert problems, (f"upstream rejects {name} "
                          f"({verdict.get('validate_error', '')}); we accepted it")


def driver_of(provider: dict) -> Driver:
    """The driver upstream gives a provider entry (providers named fake...
    use the fake driver whatever they say)."""
    if str(provider.get("name", "")).startswith("fake"):
        return registry.get_driver("fake")
    return registry.get_driver(provider.get("driver") or "openstack")


def upstream_place(verdict: dict) -> str | None:
    """Where upstream's validator found its schema error, in our messages'
    words (``data['zookeeper-servers'][0]['host']`` becomes
    ``zookeeper-servers[0] > host``)."""
    match = re.search(r"@ data((?:\[[^\]]+\])+)", verdict.get("validate_exception", ""))
    if match is None:
        return None
    text = ""
    for part in re.findall(r"\[([^\]]+)\]", match.group(1)):
        text += f"[{part}]" if part.isdigit() else (" > " if text else "") + part.strip("'")
    return text


def not_served(raw: dict) -> dict[str, str]:
    """Reason each provider of a configuration-only driver is left out for
    (and for nothing else), by provider name."""
    return {p["name"]: str(ProviderNotImplemented(p["name"], driver_of(p).name))
            for p in raw.get("providers") or [] if driver_of(p).config_only}


@pytest.mark.parametrize("name", FIXTURES)
def test_upstream_fixture_load_verdict(name, upstream_fixtures, tmp_path, monkeypatch):
    """The daemons' loader loads what upstream's ``loadConfig`` loads (all
    of it: no provider left out, but for those of drivers this build only
    understands) and finds a problem in the others; the providers it loads
    can be instantiated, as upstream's could."""
    verdict = VERDICTS[name]
    path, secure = prepare(name, upstream_fixtures, tmp_path, monkeypatch)
    try:
        raw = yaml.safe_load(pathlib.Path(path).read_text().replace("%(NODEPOOL_PORT)", "8005"))
    except yaml.YAMLError:
        raw = {}
    unserved = not_served(raw)
    try:
        config = load_config(path, secure)
    except ConfigError as e:
        problems = str(e).splitlines()
    else:
        problems = config.problems
    if not verdict["load"]:
        # Something besides not being served.
        real = [p for p in problems if not any(r in p for r in unserved.values())]
        assert real, (f"upstream's loader fails on {name} "
                      f"({verdict['load_error']}); ours found nothing wrong")
        return
    if verdict["validate"] != 0 and problems:
        # Upstream's loader does not check values its validator refuses
        # (its launches fail later); ours leaves such a provider out, with
        # the others loaded, and refuses a file with such a value outside
        # the providers (doc/source/compatibility.rst): in the section where
        # upstream's validator found its first one.
        outside = [p for p in problems if not ("is left out" in p or "providers[" in p)]
        if outside:
            place = upstream_place(verdict)
            assert place is not None, outside
            section = re.split(r"[\[ ]", place)[0]
            assert all(f": {section}" in p for p in outside), (place, outside)
            assert any(f": {place}:" in p for p in outside), (place, outside)
        return
    # Each provider of a configuration-only driver is understood (its
    # reason comes last, after every check) and left out for that alone.
    assert set(config.left_out) == set(unserved)
    for provider_name, reason in unserved.items():
        [problem] = config.left_out[provider_name]
        assert problem.endswith(f"(name={provider_name}): {reason}"), problem
    assert sorted(problems) == sorted(p for ps in config.left_out.values() for p in ps)
    assert set(config.providers) | set(unserved) == {
        p["name"] for p in raw.get("providers") or []}
    # (None: upstream's providers could not be made without the cloud's
    # credentials, so only the load was recorded.)
    assert verdict["provider_init"] in (True, None)
    for provider in config.providers.values():
        registry.get_driver(provider.driver_name).getProvider(provider)
    for item in raw.get("providers") or []:
        if item["name"] in unserved:
            driver = driver_of(item)
            with pytest.raises(ProviderNotImplemented, match="not implemented in this build"):
                driver.getProvider(driver.getProviderConfig(item))
