"""The drivers this build understands but does not serve yet (gce, azure,
ibmvpc and upstream's ``test`` driver): every upstream key with its
default, upstream's checks, and what the daemons and ``config-validate``
do with their providers.  The metastatic driver's configuration, which
began here, is checked here too; that driver serves now."""

from __future__ import annotations

import base64
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool.cmd.config_validator import validate
from nodepool.config import load_config, validate_config
from nodepool.driver import ProviderConfig, registry
from nodepool.exceptions import ProviderNotImplemented

HEAD = """\
zookeeper-servers:
  - host: 127.0.0.1
labels:
  - name: small
  - name: big
  - name: meta
  - name: meta-2
diskimages:
  - name: dib-image
    username: builder
"""

MESSAGE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<place>.+?): (?P<what>.+)$")

CONFIG_ONLY = ("azure", "gce", "ibmvpc", "test")


def write(tmp_path: Path, providers: str) -> str:
    path = tmp_path / "nodepool.yaml"
    path.write_text(HEAD + "providers:\n" + textwrap.indent(textwrap.dedent(providers), "  "))
    return str(path)


def parsed(tmp_path: Path, providers: str) -> ProviderConfig:
    """The first provider's typed configuration, as a driver of this build
    will get it (the daemons leave the provider out, so it is built here
    the way the loader builds it: checked, then loaded)."""
    path = write(tmp_path, providers)
    report = validate_config(path)
    assert report.errors == []
    config = load_config(path)
    item = yaml.safe_load(Path(path).read_text())["providers"][0]
    driver = registry.get_driver(item["driver"])
    provider = driver.getProviderConfig(item)
    provider.check_environment()
    provider.load(config)
    return provider


def errors_of(tmp_path: Path, providers: str) -> list[dict[str, str]]:
    report = validate_config(write(tmp_path, providers))
    out = []
    for error in report.errors:
        match = MESSAGE.match(error)
        assert match, error
        out.append(match.groupdict())
    return out


def left_out_reason(tmp_path: Path, providers: str, name: str) -> str:
    config = load_config(write(tmp_path, providers))
    assert name not in config.providers
    [reason] = config.left_out[name]
    return reason


# --------------------------------------------------------------------------
# Every config-only driver


GCE = """\
- name: gce-main
  driver: gce
  project: my-project
  region: us-central1
  zone: us-central1-a
  cloud-images:
    - name: debian
      image-project: debian-cloud
      image-family: debian-12
      username: zuul
      key: ssh-ed25519 AAAA zuul
    - name: windows
      image-id: windows-2022
      connection-type: winrm
  pools:
    - name: main
      max-servers: 8
      use-internal-ip: true
      labels:
        - name: small
          cloud-image: debian
          instance-type: e2-small
        - name: big
          cloud-image: windows
          instance-type: n2-standard-8
          volume-type: pd-ssd
          volume-size: 100
"""

FAKE = """\
- name: fake-provider
  cloud: fake
  cloud-images:
    - name: fake-image
  pools:
    - name: main
      max-servers: 5
      labels:
        - name: small
          cloud-image: fake-image
          min-ram: 8192
"""


def test_each_config_only_driver_is_registered_and_declared():
    for name in CONFIG_ONLY:
        driver = registry.get_driver(name)
        assert driver.name == name and driver.config_only
        assert name in registry.available()
    assert not registry.get_driver("fake").config_only
    assert not registry.get_driver("aws").config_only
    assert not registry.get_driver("metastatic").config_only


def test_config_validate_accepts_them_with_one_warning_each(tmp_path, capsys):
    path = write(tmp_path, FAKE + GCE)
    assert validate(path) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "will not serve in this build" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: {path}:")
    assert "providers[1](name=gce-main)" in warnings[0]
    assert "uses driver 'gce'" in warnings[0]


def test_daemons_leave_them_out_and_load_the_others(tmp_path, caplog):
    path = write(tmp_path, FAKE + GCE)
    with caplog.at_level(logging.ERROR, logger="nodepool.config"):
        config = load_config(path)
    assert set(config.providers) == {"fake-provider"}
    [reason] = config.left_out["gce-main"]
    assert reason.startswith(f"{path}:")
    assert ("provider 'gce-main' uses driver 'gce': its configuration is understood, but "
            "launching nodes with it is not implemented in this build yet; this provider "
            "is left out") in reason
    # Only the served provider's pools offer labels.
    assert [p.provider.name for p in config.labels["small"].pools] == ["fake-provider"]
    assert config.labels["big"].pools == []
    [logged] = [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("Provider gce-main is left out")]
    assert reason in logged


def test_real_problems_are_reported_before_not_being_served(tmp_path):
    # A broken config-only provider is reported for what is broken.
    reason = left_out_reason(tmp_path, GCE.replace("cloud-image: windows", "cloud-image: nope"),
                             "gce-main")
    assert "label 'big' uses cloud-image 'nope'" in reason
    assert "not implemented" not in reason


@pytest.mark.parametrize("name", CONFIG_ONLY)
def test_provider_factory_raises_not_implemented(name):
    driver = registry.get_driver(name)

    class Named:
        pass

    provider_config: Any = Named()
    provider_config.name = f"{name}-provider"
    with pytest.raises(ProviderNotImplemented) as raised:
        driver.getProvider(provider_config)
    assert (f"provider '{name}-provider' uses driver '{name}': its configuration is "
            "understood, but launching nodes with it is not implemented in this build "
            "yet") in str(raised.value)


# --------------------------------------------------------------------------
# gce


def test_gce_defaults_and_values(tmp_path):
    provider = parsed(tmp_path, GCE)
    assert (provider.project, provider.region, provider.zone) == (
        "my-project", "us-central1", "us-central1-a")
    assert (provider.rate_limit, provider.boot_timeout, provider.launch_timeout,
            provider.launch_retries) == (1, 60, 3600, 3)
    assert not provider.manage_images
    pool = provider.pools["main"]
    assert (pool.max_servers, pool.use_internal_ip, pool.host_key_checking) == (8, True, True)
    small, big = pool.labels["small"], pool.labels["big"]
    assert (small.instance_type, small.volume_type, small.volume_size) == (
        "e2-small", "pd-standard", 10)
    assert (big.volume_type, big.volume_size) == ("pd-ssd", 100)
    debian, windows = small.cloud_image, big.cloud_image
    assert (debian.image_project, debian.image_family, debian.key) == (
        "debian-cloud", "debian-12", "ssh-ed25519 AAAA zuul")
    assert (debian.connection_type, debian.connection_port, debian.python_path) == (
        "ssh", 22, "auto")
    assert (windows.connection_type, windows.connection_port) == ("winrm", 5986)
    assert windows.external_name == "windows-2022" and debian.external_name == "debian"
    # Upstream gives GCE images no default username.
    assert windows.username is None


def test_gce_bad_values_name_file_and_key(tmp_path):
    text = (GCE.replace("  project: my-project\n", "")
               .replace("instance-type: e2-small", "instance-typ: e2-small"))
    errors = errors_of(tmp_path, text)
    path = str(tmp_path / "nodepool.yaml")
    assert all(e["file"] == path for e in errors)
    by_place = {e["place"]: e["what"] for e in errors}
    assert by_place["providers[0](name=gce-main) > project"] == "required setting is missing"
    base = "providers[0](name=gce-main) > pools[0](name=main) > "
    assert by_place[base + "labels[0](name=small) > instance-typ"].startswith("unknown setting")
    assert by_place[base + "labels[0](name=small) > instance-type"] == (
        "required setting is missing")
    [error] = errors_of(tmp_path, GCE.replace("volume-size: 100", "volume-size: big"))
    assert error["place"] == base + "labels[1](name=big) > volume-size"
    assert error["what"] == "expected int"
    assert int(error["line"]) == Path(path).read_text().splitlines().index(
        "            volume-size: big") + 1


# --------------------------------------------------------------------------
# azure


AZURE = """\
- name: azure-main
  driver: azure
  location: centralus
  resource-group: nodepool
  resource-group-location: centralus
  auth-path: /etc/nodepool/azure.json
  zuul-public-key: ssh-rsa PROVIDERKEY
  network: nodepool-net
  cloud-images:
    - name: ubuntu
      username: zuul
      image-reference:
        sku: 22_04-lts
        publisher: Canonical
        version: latest
        offer: ubuntu
    - name: by-id
      username: admin
      key: ssh-rsa IMAGEKEY
      image-id: /subscriptions/x/images/y
      connection-type: winrm
  diskimages:
    - name: dib-image
      tags:
        team: infra
  pools:
    - name: main
      max-servers: 10
      labels:
        - name: small
          cloud-image: ubuntu
          hardware-profile:
            vm-size: Standard_B1ls
          user-data: "#cloud-config"
    - name: v6
      max-servers: 2
      public-ipv4: false
      ipv6: true
      use-internal-ip: true
      host-key-checking: false
      labels:
        - name: big
          diskimage: dib-image
          hardware-profile:
            vm-size: Standard_D8
          volume-size: 200
"""


def test_azure_defaults_and_values(tmp_path):
    provider = parsed(tmp_path, AZURE)
    assert (provider.location, provider.resource_group, provider.auth_path) == (
        "centralus", "nodepool", "/etc/nodepool/azure.json")
    assert (provider.rate, provider.boot_timeout, provider.launch_retries) == (1, 120, 3)
    assert provider.network == "nodepool-net" and provider.subnet_id is None
    assert provider.manage_images and provider.image_format("dib-image") == "vhd"
    assert provider.diskimage_names() == ["dib-image"]
    main, v6 = provider.pools["main"], provider.pools["v6"]
    # public-ipv4 is on by default (and implies IPv4).
    assert (main.public_ipv4, main.ipv4, main.public_ipv6, main.ipv6) == (
        True, True, False, False)
    assert (v6.public_ipv4, v6.ipv4, v6.ipv6) == (False, False, True)
    assert (main.use_internal_ip, main.host_key_checking) == (False, True)
    assert (v6.use_internal_ip, v6.host_key_checking) == (True, False)
    small, big = main.labels["small"], v6.labels["big"]
    assert small.hardware_profile == {"vm-size": "Standard_B1ls"}
    assert base64.b64decode(small.user_data).decode() == "#cloud-config"
    assert small.custom_data is None and small.volume_size is None
    assert small.host_key_checking and not big.host_key_checking
    ubuntu = small.cloud_image
    assert ubuntu.key == "ssh-rsa PROVIDERKEY"  # the provider's zuul-public-key
    assert (ubuntu.connection_port, ubuntu.generate_password) == (22, False)
    by_id = provider.cloud_images["by-id"]
    assert (by_id.key, by_id.connection_port) == ("ssh-rsa IMAGEKEY", 5986)
    assert by_id.external_name == "/subscriptions/x/images/y"
    dib = big.diskimage
    assert dib.username == "builder"  # from the top-level diskimage
    assert dib.meta == {"team": "infra"} and big.volume_size == 200


def test_azure_image_needs_exactly_one_spec(tmp_path):
    none = AZURE.replace("      image-id: /subscriptions/x/images/y\n", "")
    [error] = errors_of(tmp_path, none)
    assert error["place"] == "providers[0](name=azure-main) > cloud-images[1](name=by-id)"
    assert error["what"] == ('a cloud-image needs one of "image-reference", "image-id", '
                             '"image-filter", "community-gallery-image", '
                             '"shared-gallery-image"')
    two = AZURE.replace("      image-id: /subscriptions/x/images/y\n",
                        "      image-id: /subscriptions/x/images/y\n"
                        "      image-filter: {name: foo}\n")
    [error] = errors_of(tmp_path, two)
    assert "exclusion 'spec'" in error["what"]


def test_azure_pool_without_max_servers_is_what_upstreams_loader_refuses(tmp_path, capsys):
    text = AZURE.replace("      max-servers: 2\n", "")
    # Upstream's validator accepts it: a warning here...
    path = write(tmp_path, text)
    assert validate(path) == 0
    assert "pool(s) 'v6': max-servers is required for Azure pools" in capsys.readouterr().err
    # ...and its loader refuses it: the provider is left out for that.
    reason = left_out_reason(tmp_path, text, "azure-main")
    assert "max-servers is required" in reason and "not implemented" not in reason


def test_azure_required_keys(tmp_path):
    errors = errors_of(tmp_path, AZURE.replace("  auth-path: /etc/nodepool/azure.json\n", "")
                                      .replace("vm-size: Standard_D8", "size: Standard_D8"))
    places = {e["place"]: e["what"] for e in errors}
    assert places["providers[0](name=azure-main) > auth-path"] == "required setting is missing"
    key = ("providers[0](name=azure-main) > pools[1](name=v6) > labels[0](name=big) > "
           "hardware-profile > vm-size")
    assert places[key] == "required setting is missing"


# --------------------------------------------------------------------------
# ibmvpc


IBMVPC = """\
- name: ibmvpc-main
  driver: ibmvpc
  vpc: nodepool
  region: us-south
  zone: us-south-1
  subnet: sn-provider
  quota:
    cores: 64
  object-storage:
    instance-name: cos
    endpoint: https://s3.us-south.cloud-object-storage.appdomain.cloud
    bucket-name: np-images
  cloud-images:
    - name: debian
      username: zuul
      keys: [zuul-key]
      image-filter:
        operating-system:
          family: Debian GNU/Linux
  diskimages:
    - name: dib-image
      operating-system: debian-11-amd64
  pools:
    - name: main
      max-servers: 5
      labels:
        - name: small
          cloud-image: debian
          profile: cx2-2x4
    - name: other
      max-servers: 5
      zone: us-south-2
      subnet: sn-other
      public-ipv4: true
      labels:
        - name: big
          diskimage: dib-image
          profile: cx2-8x16
          user-data: "#cloud-config"
"""


def test_ibmvpc_defaults_and_values(tmp_path):
    provider = parsed(tmp_path, IBMVPC)
    assert (provider.vpc, provider.region, provider.quota) == (
        "nodepool", "us-south", {"cores": 64})
    assert (provider.rate, provider.boot_timeout, provider.launch_timeout) == (1, 120, 3600)
    assert provider.image_name_format == "npimage{upload_id}"
    assert provider.image_format("dib-image") == "qcow2" and provider.manage_images
    assert provider.object_storage["bucket-name"] == "np-images"
    main, other = provider.pools["main"], provider.pools["other"]
    # Zone and subnet are inherited from the provider unless set.
    assert (main.zone, main.subnet, main.public_ipv4) == ("us-south-1", "sn-provider", False)
    assert (other.zone, other.subnet, other.public_ipv4) == ("us-south-2", "sn-other", True)
    assert other.azs == ["us-south-2"]
    small, big = main.labels["small"], other.labels["big"]
    assert small.profile == "cx2-2x4" and small.cloud_image.keys == ["zuul-key"]
    assert small.cloud_image.external_name == "debian"
    assert (big.diskimage.operating_system, big.diskimage.username) == (
        "debian-11-amd64", "builder")
    assert big.user_data == "#cloud-config"


def test_ibmvpc_pool_without_zone_or_subnet_is_left_out(tmp_path, capsys):
    text = IBMVPC.replace("  zone: us-south-1\n", "").replace("  subnet: sn-provider\n", "")
    path = write(tmp_path, text)
    assert validate(path) == 0
    err = capsys.readouterr().err
    assert "pool 'main': no zone; set zone on the pool or the provider" in err
    reason = left_out_reason(tmp_path, text, "ibmvpc-main")
    assert "pool 'main': no zone" in reason and "pool 'main': no subnet" in reason
    assert "pool 'other'" not in reason


def test_ibmvpc_names_and_underscores(tmp_path):
    [error] = errors_of(tmp_path, IBMVPC.replace("- name: main", "- name: _main"))
    assert error["place"] == "providers[0](name=ibmvpc-main) > pools[0](name=_main) > name"
    assert "does not match regular expression" in error["what"]
    # Accepted upstream, but its driver cannot launch with it: a warning.
    report = validate_config(write(tmp_path, IBMVPC.replace("name: ibmvpc-main",
                                                            "name: ibm_main")))
    assert report.errors == []
    assert any("provider name 'ibm_main' contains an underscore" in w for w in report.warnings)


# --------------------------------------------------------------------------
# metastatic


METASTATIC = """\
- name: meta-provider
  driver: metastatic
  pools:
    - name: main
      max-servers: 10
      labels:
        - name: meta
          backing-label: big
          max-parallel-jobs: 2
          grace-time: 2
        - name: meta-2
          backing-label: big
          max-parallel-jobs: 2
          grace-time: 2
          host-key-checking: true
"""


def test_metastatic_defaults_and_values(tmp_path):
    provider = parsed(tmp_path, METASTATIC.replace("          grace-time: 2\n", "", 2)
                      .replace("max-parallel-jobs: 2", "max-parallel-jobs: 1")
                      .replace("      max-servers: 10\n", ""))
    assert (provider.boot_timeout, provider.launch_retries, provider.launch_timeout) == (
        120, 3, 3600)
    pool = provider.pools["main"]
    assert pool.max_servers == float("inf")
    # Off by default: the backing node was checked when it was launched.
    assert (pool.host_key_checking, pool.use_internal_ip) == (False, False)
    meta, meta2 = pool.labels["meta"], pool.labels["meta-2"]
    assert (meta.backing_label, meta.max_parallel_jobs, meta.grace_time,
            meta.min_retention_time, meta.max_age) == ("big", 1, 60, 0, None)
    assert not meta.host_key_checking and meta2.host_key_checking
    assert meta.image is None
    assert provider.label("meta-2") is meta2 and provider.label("small") is None


def test_metastatic_provider_is_served(tmp_path, capsys):
    path = write(tmp_path, FAKE + METASTATIC)
    assert validate(path) == 0
    assert "will not serve in this build" not in capsys.readouterr().err
    config = load_config(path)
    assert set(config.providers) == {"fake-provider", "meta-provider"}
    assert config.left_out == {}
    assert [p.provider.name for p in config.labels["meta"].pools] == ["meta-provider"]


def test_metastatic_label_missing_from_top_level_labels(tmp_path, capsys):
    # Upstream's validator does not look for it; its loader refuses it.
    text = METASTATIC.replace("- name: meta-2", "- name: meta-3")
    assert validate(write(tmp_path, text)) == 0
    assert "offers label 'meta-3', which is not defined" in capsys.readouterr().err
    assert "offers label 'meta-3'" in left_out_reason(tmp_path, text, "meta-provider")


def test_metastatic_labels_on_one_backing_label_must_agree(tmp_path, capsys):
    text = METASTATIC.replace("max-parallel-jobs: 2\n          grace-time: 2\n          host",
                              "max-parallel-jobs: 4\n          grace-time: 2\n          host")
    # As upstream: its validator accepts this, its loader does not.
    path = write(tmp_path, text)
    assert validate(path) == 0
    err = capsys.readouterr().err
    assert ("labels 'meta' and 'meta-2' use the same backing-label 'big' with different "
            "max-parallel-jobs") in err
    reason = left_out_reason(tmp_path, text, "meta-provider")
    assert "use the same backing-label 'big'" in reason
    assert "not implemented" not in reason


def test_metastatic_max_age_below_min_retention_time(tmp_path):
    text = METASTATIC.replace("grace-time: 2\n        - name: meta-2",
                              "grace-time: 2\n          max-age: 10\n"
                              "          min-retention-time: 60\n        - name: meta-2")
    reason = left_out_reason(tmp_path, text, "meta-provider")
    assert "label 'meta': max-age 10 is less than min-retention-time 60" in reason


def test_metastatic_backing_label_must_be_a_label(tmp_path):
    report = validate_config(write(tmp_path, METASTATIC.replace("backing-label: big",
                                                                "backing-label: huge")))
    assert report.errors == []
    assert any("backing-label 'huge' is not defined under the top-level labels" in w
               for w in report.warnings)
    [error] = errors_of(tmp_path, METASTATIC.replace("max-parallel-jobs: 2", "max-parallel-jobs: "
                                                     "two", 1))
    assert error["place"].endswith("labels[0](name=meta) > max-parallel-jobs")
    assert error["what"] == "expected int"


# --------------------------------------------------------------------------
# upstream's test driver


def test_upstream_test_driver_pools_list_label_names(tmp_path):
    provider = parsed(tmp_path, """\
        - name: test-provider
          driver: test
          pools:
            - name: test-pool
              labels: [small, big]
        """)
    assert set(provider.pools["test-pool"].labels) == {"small", "big"}
    assert provider.get_supported_labels() == {"small", "big"}
    reason = left_out_reason(tmp_path, """\
        - name: test-provider
          driver: test
          pools:
            - labels: [small]
        """, "test-provider")
    assert "1 pool(s) without a name" in reason
