"""The AWS driver's pure parts: configuration, what a launch asks EC2 for,
quota codes, error sorting and the API rate limiter."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from nodepool.config import check_config, load_config
from nodepool.driver.aws import launch_args, quota
from nodepool.driver.aws.clients import CredentialFilter
from nodepool.driver.aws.errors import AwsError, Throttled, translate
from nodepool.driver.aws.ratelimit import MUTATING, READ, ApiRateLimiter
from nodepool.exceptions import CapacityException, NotFound, QuotaException

HEAD = """zookeeper-servers:
  - host: 127.0.0.1
labels:
  - name: small
  - name: fleet
  - name: host
diskimages:
  - name: dib-image
    username: builder
providers:
  - name: ec2
    driver: aws
    region-name: us-west-2
"""


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "nodepool.yaml"
    path.write_text(HEAD + text)
    return load_config(str(path)).providers["ec2"]


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "nodepool.yaml"
    path.write_text(HEAD + text)
    return check_config(str(path))


POOLS = """    cloud-images:
      - name: ubuntu
        image-filters:
          - name: name
            values: [ubuntu*]
          - Name: architecture
            Values: [x86_64]
        username: ubuntu
        connection-type: winrm
    diskimages:
      - name: dib-image
        import-method: ebs-direct
        tags:
          team: infra
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
      - name: other
        max-servers: 3
        max-resources:
          L-1216C47A: 8
        public-ip-address: false
        public-ipv6: true
        availability-zone: us-west-2b
        labels:
          - name: host
            diskimage: dib-image
            instance-type: m5.large
            key-name: zuul
            dedicated-host: true
"""


def test_provider_limits_and_addresses_are_inherited(tmp_path):
    provider = load(tmp_path, """    max-servers: 10
    max-cores: 40
    max-resources:
      L-1216C47A: 100
      L-34B43A08: 50
""" + POOLS)
    main, other = provider.pools["main"], provider.pools["other"]
    assert (main.max_servers, main.max_cores, main.max_ram) == (10, 40, float("inf"))
    assert main.max_resources == {"L-1216C47A": 100, "L-34B43A08": 50}
    assert other.max_servers == 3
    assert other.max_resources == {"L-1216C47A": 8, "L-34B43A08": 50}
    assert other.limits().resources["L-1216C47A"] == 8
    assert (main.public_ipv4, main.public_ipv6) == (True, False)
    assert (other.public_ipv4, other.public_ipv6) == (False, True)
    assert other.azs == ["us-west-2b"] and main.azs is None
    assert (provider.rate, provider.boot_timeout, provider.launch_retries) == (2, 180, 3)
    assert (provider.cloud, provider.region_name) == ("AWS", "us-west-2")


def test_images_as_upstream_reads_them(tmp_path):
    provider = load(tmp_path, POOLS)
    label = provider.pools["main"].labels["small"]
    image = label.cloud_image
    assert image.image_filters == [{"Name": "name", "Values": ["ubuntu*"]},
                                   {"Name": "architecture", "Values": ["x86_64"]}]
    assert (image.username, image.connection_type, image.connection_port) == (
        "ubuntu", "winrm", 5986)
    assert image.external_name == "ubuntu"
    dib = provider.pools["other"].labels["host"].diskimage
    assert dib.username == "builder"  # from the top-level diskimage
    assert (dib.import_method, dib.architecture, dib.volume_type, dib.ena_support) == (
        "ebs-direct", "x86_64", "gp3", True)
    assert dib.meta == {"team": "infra"}
    assert provider.diskimage_names() == ["dib-image"]
    assert provider.image_format("dib-image") == "raw"
    assert provider.manage_images


def test_dedicated_hosts_need_a_zone_and_no_spot(tmp_path):
    errors = problems(tmp_path, """    cloud-images:
      - name: ubuntu
        image-id: ami-1
        username: ubuntu
    pools:
      - name: main
        labels:
          - name: host
            cloud-image: ubuntu
            instance-type: m5.large
            key-name: zuul
            dedicated-host: true
            use-spot: true
""")
    text = "\n".join(errors)
    assert "spot instances cannot run on dedicated hosts" in text
    assert "needs the pool's availability-zone" in text


def test_labels_need_a_key_name_and_one_image(tmp_path):
    errors = problems(tmp_path, """    cloud-images:
      - name: ubuntu
        image-id: ami-1
        image-filters: [{name: name, values: [x]}]
        username: ubuntu
    pools:
      - name: main
        labels:
          - name: small
            cloud-image: ubuntu
            instance-type: t3.medium
""")
    text = "\n".join(errors)
    assert "key-name: required setting is missing" in text
    assert "exclusion 'spec'" in text


def test_a_repeated_pool_name_keeps_the_last_pool_with_its_own_images(tmp_path):
    # As upstream's loader: the last pool of a name wins, and its labels
    # boot the images they name themselves.
    provider = load(tmp_path, """    cloud-images:
      - name: ubuntu
        image-id: ami-1
        username: ubuntu
      - name: debian
        image-id: ami-2
        username: debian
    pools:
      - {name: main, labels: [{name: small, cloud-image: ubuntu, instance-type: t3.medium,
                               key-name: zuul}]}
      - name: main
        labels:
          - {name: small, cloud-image: debian, instance-type: t3.medium, key-name: zuul}
          - {name: host, cloud-image: ubuntu, instance-type: m5.large, key-name: zuul}
""")
    labels = provider.pools["main"].labels
    assert labels["small"].cloud_image.external_name == "ami-2"
    assert labels["host"].cloud_image.external_name == "ami-1"


class Pool:
    def __init__(self, **kw: Any) -> None:
        self.public_ipv4 = True
        self.public_ipv6 = False
        self.security_group_id = None
        self.subnet_id = None
        self.az = None
        self.__dict__.update(kw)


class Label:
    def __init__(self, **kw: Any) -> None:
        self.name = "small"
        self.instance_type = "t3.medium"
        self.fleet = None
        self.key_name = "zuul"
        self.ebs_optimized = False
        self.volume_type = self.volume_size = self.iops = self.throughput = None
        self.userdata = None
        self.iam_instance_profile = None
        self.tags: dict[str, Any] = {}
        self.dynamic_tags: dict[str, str] = {}
        self.use_spot = False
        self.imdsv2 = None
        self.pool = Pool()
        self.__dict__.update(kw)


class Request:
    id = "200-0000000001"
    node_types = ["small"]
    tenant_name = "tenant-one"
    requestor_data = {"job_name": "j"}


def test_tags_nodepool_wins_and_bad_dynamic_tags_are_left_out(caplog):
    label = Label(tags={"cost": 5, "nodepool_node_id": "forged", "Name": "mine"},
                  dynamic_tags={"tenant": "{request.tenant_name}",
                                "job": "{request.requestor_data[job_name]}",
                                "private": "{request.__class__}", "missing": "{request.nope}"})
    tags = launch_args.instance_tags(label=label, hostname="np0000000001",
                                     metadata={"nodepool_node_id": "0000000001"},
                                     request=Request(), log=logging.getLogger("t"))
    assert tags == {"cost": "5", "nodepool_node_id": "0000000001", "Name": "np0000000001",
                    "tenant": "tenant-one", "job": "j"}
    assert caplog.text.count("Could not format dynamic tag") == 2


def test_run_instances_args_follow_the_label():
    image = {"BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
        "SnapshotId": "snap-1", "VolumeSize": 8, "Encrypted": False,
        "DeleteOnTermination": False}}]}
    label = Label(volume_size=100, volume_type="io2", iops=4000, use_spot=True,
                  imdsv2="optional", iam_instance_profile={"arn": "arn:aws:iam::1:p"},
                  pool=Pool(public_ipv4=False, public_ipv6=True, subnet_id="subnet-1",
                            security_group_id="sg-1", az="us-west-2c"))
    args = launch_args.run_instances_args(label=label, image_id="ami-1", image=image,
                                          tags={"a": "b"}, host_id=None, client_token="t")
    assert args["NetworkInterfaces"] == [{
        "AssociatePublicIpAddress": False, "DeviceIndex": 0, "Groups": ["sg-1"],
        "SubnetId": "subnet-1", "Ipv6AddressCount": 1}]
    assert args["BlockDeviceMappings"] == [{"DeviceName": "/dev/sda1", "Ebs": {
        "SnapshotId": "snap-1", "VolumeSize": 100, "VolumeType": "io2", "Iops": 4000,
        "DeleteOnTermination": True}}]
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 8  # not changed
    assert args["InstanceMarketOptions"]["MarketType"] == "spot"
    assert args["MetadataOptions"] == {"HttpTokens": "optional", "HttpEndpoint": "enabled"}
    assert args["IamInstanceProfile"] == {"Arn": "arn:aws:iam::1:p"}
    assert args["Placement"] == {"AvailabilityZone": "us-west-2c"}
    assert args["ClientToken"] == "t"
    on_host = launch_args.run_instances_args(label=Label(), image_id="ami-1", image={},
                                             tags={}, host_id="h-1", client_token=None)
    assert on_host["Placement"] == {"Tenancy": "host", "HostId": "h-1", "Affinity": "host"}
    assert "BlockDeviceMappings" not in on_host and "ClientToken" not in on_host


def test_launch_template_names_match_upstreams():
    label = Label(volume_size=40, volume_type="gp3", imdsv2="required", userdata="hello",
                  pool=Pool(security_group_id="sg-1"),
                  fleet={"instance-types": ["t3.medium"], "allocation-strategy": "prioritized"})
    name, args = launch_args.launch_template(label, "ec2-test")
    # Computed with upstream Nodepool 11.0.0's own code for the same label.
    assert name == ("nodepool-launch-template-"
                    "053f8d09c27d950afaf19dde2a82e2b2a6d3dee397dc1a0c29b11d7ccf181fa2")
    assert args["TagSpecifications"][0]["Tags"] == [
        {"Key": "nodepool_managed", "Value": "True"},
        {"Key": "nodepool_provider_name", "Value": "ec2-test"}]


def test_quota_codes_by_instance_family():
    assert quota.instance_quota_code("t3.medium", spot=False) == "L-1216C47A"
    assert quota.instance_quota_code("t3.medium", spot=True) == "L-34B43A08"
    assert quota.instance_quota_code("g4dn.xlarge", spot=False) == "L-DB2E81BA"
    assert quota.instance_quota_code("inf2.xlarge", spot=True) == "L-B5D1601B"
    assert quota.instance_quota_code("u-6tb1.metal", spot=True) is None
    assert quota.instance_quota_code("zz9.huge", spot=False) is None
    assert quota.host_quota_code("m5.large") == "L-8B7BF662"
    assert quota.host_quota_code("mac2-m2pro.metal") == "L-14F120D1"
    info = {"InstanceType": "c5.xlarge", "VCpuInfo": {"DefaultCores": 2, "DefaultVCpus": 4},
            "MemoryInfo": {"SizeInMiB": 8192}}
    assert quota.instance_type_quota(info, spot=False).resources == {
        "instances": 1, "cores": 2, "ram": 8192, "L-1216C47A": 4}
    assert quota.volume_quota("io1", 100, 5000).resources == {
        "L-FD252861": 100, "L-B3A130E6": 5000}


def test_storage_limits_are_converted_to_gb():
    log = logging.getLogger("t")
    limits = quota.limits({"L-1216C47A", "L-MISSING"}, {"L-7A658B76", "L-B3A130E6"},
                          {"L-1216C47A": 64.0}, {"L-7A658B76": 50.0, "L-B3A130E6": 9000.0}, log)
    assert limits.resources == {"L-1216C47A": 64.0, "L-7A658B76": 50000.0,
                                "L-B3A130E6": 9000.0}


def client_error(code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": "m"}}, "Op")


@pytest.mark.parametrize("code, kind", [
    ("VcpuLimitExceeded", QuotaException), ("InstanceLimitExceeded", QuotaException),
    ("VolumeLimitExceeded", QuotaException), ("HostLimitExceeded", QuotaException),
    ("InsufficientInstanceCapacity", CapacityException),
    ("RequestLimitExceeded", Throttled), ("ThrottlingException", Throttled),
    ("InvalidInstanceID.NotFound", NotFound), ("InvalidAMIID.NotFound", NotFound),
    ("UnauthorizedOperation", AwsError), ("InvalidParameterValue", AwsError),
])
def test_errors_are_sorted(code, kind):
    error = translate(client_error(code), "doing it", "ec2")
    assert type(error) is kind
    assert "doing it in ec2" in str(error)


def test_errors_tell_the_operator_what_to_do():
    assert "IAM permissions" in str(translate(client_error("UnauthorizedOperation"), "x", "p"))
    assert "profile-name" in str(translate(botocore.exceptions.NoCredentialsError(), "x", "p"))
    # A capacity refusal waits like a quota refusal, and is counted apart.
    capacity = translate(client_error("InsufficientInstanceCapacity"), "x", "p")
    assert isinstance(capacity, QuotaException) and capacity.statsd_key == "error.capacity"


def test_rate_limiter_spaces_calls_and_slows_down_when_throttled():
    limiter = ApiRateLimiter(10)
    assert limiter.ready(MUTATING) == 0.0
    wait = limiter.ready(MUTATING)
    assert 0 < wait <= 0.1
    assert limiter.ready(READ) == 0.0  # reads have their own, faster budget
    assert 0 < limiter.ready(READ) <= 0.01
    pause = limiter.throttled()
    assert limiter.penalty == 2 and pause >= 1.0
    assert limiter.interval(MUTATING) == pytest.approx(0.2)
    for _ in range(20):
        limiter.succeeded()
    assert limiter.penalty == 1.0
    start = time.monotonic()
    unlimited = ApiRateLimiter(None)
    for _ in range(100):
        assert unlimited.ready(MUTATING) == 0.0
        unlimited.wait(READ)
    assert unlimited.interval(MUTATING) == 0.0 and time.monotonic() >= start


def test_credential_filter_blanks_session_tokens():
    record = logging.LogRecord(
        "botocore.endpoint", logging.DEBUG, __file__, 1, "Sending %s", (
            "headers={'X-Amz-Security-Token': b'SECRETTOKEN', 'User-Agent': b'x'}",), None)
    CredentialFilter().filter(record)
    assert "SECRETTOKEN" not in record.getMessage()
    assert "User-Agent" in record.getMessage()
    canonical = logging.LogRecord("botocore.auth", logging.DEBUG, __file__, 1,
                                  "x-amz-security-token:SECRETTOKEN\nhost:h", None, None)
    CredentialFilter().filter(canonical)
    assert canonical.getMessage() == "x-amz-security-token:<redacted>\nhost:h"
