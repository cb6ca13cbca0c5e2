"""The daemons load what upstream's daemons load.

Unknown settings are warnings (config-validate keeps calling them errors);
a provider that cannot be loaded is left out with a clear error while the
others load; a label's diskimage is looked up the way upstream's loader
does; a file without ZooKeeper settings is refused, in one line, by every
process that connects.
"""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

from nodepool.cmd import nodepoolcmd
from nodepool.cmd.config_validator import validate
from nodepool.config import (
    Config,
    check_config,
    check_zookeeper,
    load_config,
    validate_config,
)
from nodepool.exceptions import ConfigError

ZK = """\
zookeeper-servers:
  - host: 127.0.0.1
    port: 2281
zookeeper-tls:
  ca: {ca}
  cert: {cert}
  key: {key}
"""

# "file:line: place: what", the shape of every message.
MESSAGE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<place>.+?): (?P<what>.+)$")


def write(tmp_path: Path, text: str, name: str = "nodepool.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def zk_settings(tmp_path: Path) -> str:
    files = {}
    for key in ("ca", "cert", "key"):
        files[key] = tmp_path / f"{key}.pem"
        files[key].write_text("not checked by the loader\n")
    return ZK.format(**files)


def parse(message: str) -> dict[str, str]:
    match = MESSAGE.match(message)
    assert match, f"not file:line: place: what: {message!r}"
    return match.groupdict()


def line_of(path: str, needle: str, last: bool = False) -> int:
    found = [number for number, line in enumerate(Path(path).read_text().splitlines(), 1)
             if needle in line]
    assert found, f"{needle!r} not in {path}"
    return found[-1] if last else found[0]


# --------------------------------------------------------------------------
# Unknown settings


UNKNOWN_KEYS = """\
labels:
  - name: fake-label
    min-redy: 1
  - name: other-label
    colour: blue
diskimages:
  - name: debian
    elemnts: [vm]
webapp:
  prot: 8080
bogus-top: 1
providers:
  - name: fake-provider
    cloud: fake
    rat: 0.1
    cloud-images:
      - name: fake-image
        image-nam: Fake
    pools:
      - name: main
        max-server: 3
        labels:
          - name: fake-label
            cloud-image: fake-image
            min-ram: 8192
            falvor-name: big
          - name: other-label
            cloud-image: fake-image
            min-ram: 8192
            size: 2
  - name: static-provider
    driver: static
    cloud: no-cloud
    pools:
      - name: main
        nodes:
          - name: host1.example.org
            labels: fake-label
            usr: zuul
"""

UNKNOWN_PLACES = [
    ("min-redy", "labels[0](name=fake-label) > min-redy"),
    ("colour", "labels[1](name=other-label) > colour"),
    ("elemnts", "diskimages[0](name=debian) > elemnts"),
    ("prot", "webapp > prot"),
    ("bogus-top", "bogus-top"),
    ("rat:", "providers[0](name=fake-provider) > rat"),
    ("image-nam", "providers[0](name=fake-provider) > cloud-images[0](name=fake-image) > "
                  "image-nam"),
    ("max-server", "providers[0](name=fake-provider) > pools[0](name=main) > max-server"),
    ("falvor-name", "providers[0](name=fake-provider) > pools[0](name=main) > "
                    "labels[0](name=fake-label) > falvor-name"),
    ("size", "providers[0](name=fake-provider) > pools[0](name=main) > "
             "labels[1](name=other-label) > size"),
    ("cloud: no-cloud", "providers[1](name=static-provider) > cloud"),
    ("usr", "providers[1](name=static-provider) > pools[0](name=main) > "
            "nodes[0](name=host1.example.org) > usr"),
]


def test_daemon_loader_warns_once_per_unknown_setting_and_loads(tmp_path, caplog):
    path = write(tmp_path, zk_settings(tmp_path) + UNKNOWN_KEYS)
    with caplog.at_level(logging.WARNING, logger="nodepool.config"):
        config = load_config(path)
    assert set(config.providers) == {"fake-provider", "static-provider"}
    assert config.problems == [] and config.left_out == {}
    # The known settings around the unknown ones are used.
    pool = config.providers["fake-provider"].pools["main"]
    assert set(pool.labels) == {"fake-label", "other-label"}
    assert config.labels["fake-label"].pools == [
        pool, config.providers["static-provider"].pools["main"]]

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == config.warnings
    for (needle, place), warning in zip(UNKNOWN_PLACES, warnings, strict=True):
        parts = parse(warning)
        assert parts["file"] == path
        assert int(parts["line"]) == line_of(path, needle)
        assert parts["place"] == place
        assert parts["what"].startswith("unknown setting, ignored")


def test_config_validate_still_calls_unknown_settings_errors(tmp_path, capsys):
    path = write(tmp_path, zk_settings(tmp_path) + UNKNOWN_KEYS)
    errors = check_config(path)
    assert [parse(e)["place"] for e in errors] == [place for _, place in UNKNOWN_PLACES]
    assert all("unknown setting" in e for e in errors)
    assert validate(path) == 1
    assert "configuration is NOT valid (12 problems)" in capsys.readouterr().err


def test_unknown_setting_in_the_secure_file_is_a_warning(tmp_path):
    path = write(tmp_path, "labels: []\n")
    secure = write(tmp_path, zk_settings(tmp_path) + "passwrd: x\n", "secure.yaml")
    config = load_config(path, secure)
    assert config.zookeeper_servers[0]["host"] == "127.0.0.1"
    [warning] = config.warnings
    assert parse(warning)["file"] == secure and parse(warning)["place"] == "passwrd"
    [error] = check_config(path, secure)
    assert "passwrd: unknown setting" in error


def test_wrong_type_outside_the_providers_refuses_the_file(tmp_path):
    # Not an unknown key: upstream's loader fails on it too (it compares
    # the value with 0), so the daemons keep their previous configuration.
    path = write(tmp_path, zk_settings(tmp_path) + "max-hold-age: forever\nlabels: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [message] = str(info.value).splitlines()
    parts = parse(message)
    assert int(parts["line"]) == line_of(path, "max-hold-age")
    assert parts["place"] == "max-hold-age" and "expected int" in parts["what"]
    assert check_config(path) == [message]


# --------------------------------------------------------------------------
# Broken providers


CLOUDS = """\
clouds:
  real:
    auth:
      auth_url: https://keystone.example.org/v3
      username: nodepool
      password: secret
      project_name: ci
"""

GOOD_FAKE = """\
  - name: fake-provider
    cloud: fake
    cloud-images:
      - name: fake-image
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: fake-image
            min-ram: 8192
"""


def broken_providers_config(tmp_path: Path) -> str:
    return write(tmp_path, zk_settings(tmp_path) + """\
labels:
  - name: fake-label
providers:
""" + GOOD_FAKE + """\
  - name: no-such-driver
    driver: not-installed
  - name: missing-cloud
    cloud: not-in-clouds-yaml
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: image
            min-ram: 8192
    cloud-images:
      - name: image
  - name: real-openstack
    cloud: real
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
    rate: fast
  - name: fake-undefined-label
    cloud: fake
    cloud-images:
      - name: fake-image
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: fake-image
            min-ram: 8192
          - name: nobody-defined-this
            cloud-image: fake-image
            min-ram: 8192
  - just a string
""" + GOOD_FAKE.replace("fake-image", "other-image"))


@pytest.fixture
def clouds_yaml(tmp_path, monkeypatch):
    path = tmp_path / "clouds.yaml"
    path.write_text(CLOUDS)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    from nodepool.driver import registry
    registry.reset_all()
    yield path
    registry.reset_all()


LEFT_OUT = {
    "no-such-driver": ("no-such-driver", "unknown driver 'not-installed'"),
    "missing-cloud": ("missing-cloud", "cloud 'not-in-clouds-yaml' cannot be used: "
                                       "Cloud not-in-clouds-yaml was not found."),
    "fake-bad-value": ("rate: fast", "expected"),
    "fake-undefined-label": ("fake-undefined-label", "pool 'main' offers label "
                                                     "'nobody-defined-this', which is not "
                                                     "defined under the top-level labels"),
    "providers[6]": ("just a string", "expected a mapping"),
    "fake-provider": ("- name: fake-provider", "provider 'fake-provider' is defined more "
                                               "than once"),
}


def test_a_provider_that_cannot_be_loaded_is_left_out(tmp_path, clouds_yaml, caplog):
    path = broken_providers_config(tmp_path)
    with caplog.at_level(logging.ERROR, logger="nodepool.config"):
        config = load_config(path)
    assert set(config.providers) == {"fake-provider", "real-openstack"}
    assert set(config.left_out) == set(LEFT_OUT)
    for name, (needle, reason) in LEFT_OUT.items():
        [problem] = config.left_out[name]
        parts = parse(problem)
        assert parts["file"] == path and reason in parts["what"], problem
        # (The second fake-provider, at the end, is the one left out.)
        assert int(parts["line"]) == line_of(path, needle, last=name == "fake-provider")
    assert sorted(config.problems) == sorted(p for ps in config.left_out.values() for p in ps)
    # Nothing of the providers left out stays behind: the label is offered
    # by the good providers' pools only (the first fake-provider kept).
    fake_pool = config.providers["fake-provider"].pools["main"]
    assert fake_pool.labels["fake-label"].cloud_image.name == "fake-image"
    assert config.labels["fake-label"].pools == [
        fake_pool, config.providers["real-openstack"].pools["main"]]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == len(LEFT_OUT)
    assert all("is left out until this is fixed (the other providers keep serving)" in e
               for e in errors)
    assert any(config.left_out["missing-cloud"][0] in e for e in errors)


def test_config_validate_reports_broken_providers_as_errors(tmp_path, clouds_yaml, capsys):
    path = broken_providers_config(tmp_path)
    report = validate_config(path)
    # A cloud missing from this machine's clouds.yaml only warns, as
    # upstream's validator does not look at clouds.yaml at all.
    assert len(report.errors) == len(LEFT_OUT) - 1
    assert not any("not-in-clouds-yaml" in e for e in report.errors)
    [cloud_warning] = [w for w in report.warnings if "not-in-clouds-yaml" in w]
    assert "the launcher leaves this provider out" in cloud_warning
    assert validate(path) == 1
    err = capsys.readouterr().err
    assert f"warning: {cloud_warning}" in err
    assert "unknown driver 'not-installed'" in err


def test_all_providers_broken_still_loads(tmp_path):
    path = write(tmp_path, zk_settings(tmp_path) + """\
labels: []
providers:
  - name: gone
    driver: aws
""")
    config = load_config(path)
    assert config.providers == {} and list(config.left_out) == ["gone"]


# --------------------------------------------------------------------------
# A label's diskimage


def diskimage_config(tmp_path: Path, label_image: str, provider_images: str = "",
                     top_images: str = "  - name: debian\n") -> str:
    return write(tmp_path, zk_settings(tmp_path) + f"""\
labels:
  - name: small
diskimages:
{top_images}providers:
  - name: fake-provider
    cloud: fake
{provider_images}    pools:
      - name: main
        labels:
          - name: small
            diskimage: {label_image}
            min-ram: 1024
""")


def test_label_diskimage_defined_only_at_the_top_level_loads_with_a_warning(tmp_path):
    # As upstream's loader: the label refers to the top-level diskimage;
    # as the provider does not list it, nothing is uploaded there and the
    # label's requests are declined (image not available).
    path = diskimage_config(tmp_path, "debian")
    config = load_config(path)
    provider = config.providers["fake-provider"]
    label = provider.pools["main"].labels["small"]
    assert label.diskimage.name == "debian"
    assert provider.diskimage_names() == []
    assert config.diskimages["debian"].image_types == set()
    [warning] = config.warnings
    assert "uses diskimage 'debian', which this provider's diskimages do not list" in warning
    assert "requests for 'small' are declined" in warning
    report = validate_config(path)
    assert report.errors == [] and warning in report.warnings


def test_label_diskimage_listed_by_the_provider(tmp_path):
    path = diskimage_config(tmp_path, "debian",
                            "    diskimages:\n      - name: debian\n        pause: true\n")
    config = load_config(path)
    provider = config.providers["fake-provider"]
    image = provider.pools["main"].labels["small"].diskimage
    assert image is provider.diskimages["debian"] and image.pause
    assert provider.diskimage_names() == ["debian"]
    assert config.diskimages["debian"].image_types == {"qcow2"}
    assert config.warnings == []


@pytest.mark.parametrize(("label_image", "provider_images", "top_images", "reason"), [
    ("ubuntu", "", "  - name: debian\n",
     "label 'small' uses diskimage 'ubuntu', which is not defined under the top-level "
     "diskimages"),
    ("base", "", "  - name: base\n    abstract: true\n  - name: debian\n    parent: base\n",
     "label 'small' uses diskimage 'base', which is abstract"),
    ("debian", "    diskimages:\n      - name: debian\n      - name: ubuntu\n",
     "  - name: debian\n",
     "diskimage 'ubuntu' is not defined under the top-level diskimages"),
])
def test_label_diskimage_that_cannot_be_built_leaves_the_provider_out(
        tmp_path, label_image, provider_images, top_images, reason):
    path = diskimage_config(tmp_path, label_image, provider_images, top_images)
    config = load_config(path)
    assert config.providers == {}
    [problem] = config.left_out["fake-provider"]
    assert reason in problem
    # Nothing the provider would have needed is left behind.
    assert all(image.image_types == set() for image in config.diskimages.values())
    assert config.labels["small"].pools == []
    assert check_config(path) == [problem]


# --------------------------------------------------------------------------
# ZooKeeper settings


def test_check_zookeeper_names_what_is_missing(tmp_path):
    config = Config()
    config.path = "/etc/nodepool/nodepool.yaml"
    with pytest.raises(ConfigError, match=r"^/etc/nodepool/nodepool.yaml: "
                                          "zookeeper-servers is missing: "):
        check_zookeeper(config)
    config.zookeeper_servers = [{"host": "zk1"}]
    config.secure_path = "/etc/nodepool/secure.conf"
    with pytest.raises(ConfigError, match=r"\(or the secure file /etc/nodepool/secure.conf\):"
                                          " zookeeper-tls is missing: a TLS ZooKeeper "
                                          "connection is required"):
        check_zookeeper(config)
    config.zookeeper_tls_ca = str(tmp_path / "ca.pem")
    config.zookeeper_tls_cert = config.zookeeper_tls_key = __file__
    with pytest.raises(ConfigError, match=r"zookeeper-tls ca .*ca.pem cannot be read: "
                                          "No such file or directory$"):
        check_zookeeper(config)
    (tmp_path / "ca.pem").write_text("x")
    check_zookeeper(config)


def test_config_validate_warns_about_missing_zookeeper_settings(tmp_path, capsys):
    # Upstream's validator accepts such a file (its fixtures have some).
    path = write(tmp_path, "labels: []\n")
    report = validate_config(path)
    assert report.errors == []
    [warning] = report.warnings
    assert "zookeeper-servers is missing" in warning
    assert validate(path) == 0
    assert "warning: " in capsys.readouterr().err
    path = write(tmp_path, "zookeeper-servers:\n  - host: zk1\n")
    [warning] = validate_config(path).warnings
    assert "zookeeper-tls is missing" in warning


@pytest.mark.parametrize(("text", "missing"), [
    ("labels: []\n", "zookeeper-servers is missing"),
    ("zookeeper-servers:\n  - host: 127.0.0.1\n", "zookeeper-tls is missing"),
])
def test_cli_commands_that_need_zookeeper_say_what_is_missing(tmp_path, capsys, text,
                                                              missing):
    path = write(tmp_path, text)
    assert nodepoolcmd.main(["-c", path, "list"]) == 1
    err = capsys.readouterr().err
    [line] = err.splitlines()
    assert line.startswith(f"nodepool: {path}: {missing}: ")
