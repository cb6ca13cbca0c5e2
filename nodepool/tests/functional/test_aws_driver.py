"""The AWS driver against moto's server, with the real boto3 over HTTP.

moto runs as a process of its own (one per module, reset for each test)
behind :class:`~nodepool.tests.aws_sim.AwsProxy`, which boto3 reaches
through ``AWS_ENDPOINT_URL``; launches go through the shared machinery
with real node records in the test's ZooKeeper chroot.  moto's instances
are running at once and answer no SSH: every pool here sets
``host-key-checking: false``, as upstream's AWS tests do (and nothing may
connect to the public-looking addresses moto hands out).
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nodepool.config import check_config, load_config
from nodepool.driver.adapter import (
    META_BUILD_ID,
    META_NODE_ID,
    META_POOL,
    META_PROVIDER,
    META_UPLOAD_ID,
)
from nodepool.driver.aws import images as aws_images
from nodepool.driver.aws.adapter import AwsAdapter
from nodepool.driver.aws.config import AwsProviderConfig
from nodepool.driver.aws.provider import AwsProvider
from nodepool.driver.launch import ABORTED, READY
from nodepool.exceptions import NotFound, RuntimeConfigurationException
from nodepool.tests.aws_sim.fixtures import ACCESS_KEY, REGION, SECRET_KEY, SESSION_TOKEN
from nodepool.tests.helpers import wait_for
from nodepool.zk import models
from nodepool.zk.models import Node, NodeRequest

PROVIDER = "ec2-test"
AMI = "ami-1e749f67"  # one of the AMIs moto's EC2 starts with (Ubuntu 14.04)
BUCKET = "nodepool-images"
STANDARD_VCPUS = "L-1216C47A"
SPOT_VCPUS = "L-34B43A08"


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    # The driver looks at EC2 every few seconds and at an import task
    # every 30 s; moto answers at once, so look more often here.
    monkeypatch.setattr(AwsAdapter, "poll_interval", 0.05)
    monkeypatch.setattr(aws_images.ImageStore, "import_poll", 0.05)


def provider_yaml(*, pool: str = "", labels: str = "", provider: str = "",
                  diskimage: str = "") -> str:
    """A provider with one pool ``main`` offering ``small``; the arguments
    add YAML (indented to their place)."""
    return f"""
  - name: {PROVIDER}
    driver: aws
    region-name: {REGION}
    rate: 1000
    launch-retries: 2
    object-storage:
      bucket-name: {BUCKET}
{provider}
    cloud-images:
      - name: ubuntu
        image-id: {AMI}
        username: ubuntu
      - name: ubuntu-newest
        image-filters:
          - name: name
            values: ["ubuntu/images/*"]
        username: ubuntu
        python-path: /usr/bin/python3
    diskimages:
      - name: dib-image
        tags:
          purpose: testing
{diskimage}
    pools:
      - name: main
        max-servers: 10
        host-key-checking: false
{pool}
        labels:
          - name: small
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
{labels}
"""


LABELS = ("small", "tagged", "spot", "fleet", "dedicated", "newest", "dib", "nope", "gpu")


def config_text(zk_info: Any, providers: str) -> str:
    return (zk_info.config_yaml()
            + "labels:\n" + "".join(f"  - name: {n}\n" for n in LABELS)
            + "diskimages:\n  - name: dib-image\n    username: zuul\n"
            + "providers:" + providers)


@pytest.fixture
def make_provider(aws, tmp_path: Path, zk_info: Any, zk: Any) -> Iterator[Any]:
    started: list[AwsProvider] = []

    def make(**kwargs: Any) -> AwsProvider:
        path = tmp_path / f"nodepool-{len(started)}.yaml"
        path.write_text(config_text(zk_info, provider_yaml(**kwargs)))
        provider = AwsProvider(load_config(str(path)).providers[PROVIDER])
        provider.start(zk)
        started.append(provider)
        return provider

    yield make
    for provider in started:
        provider.stop()
        provider.join()


def make_request(labels: list[str]) -> NodeRequest:
    request = NodeRequest("200-0000000042")
    request.node_types = labels
    request.requestor = "zuul-system-1"
    request.tenant_name = "tenant-one"
    request.event_id = "event-7"
    request.requestor_data = {"job_name": "unit-tests"}
    return request


def launch(provider: AwsProvider, zk: Any, label_name: str, timeout: float = 30
           ) -> tuple[Any, Node]:
    """Launch one node the way the request handler does."""
    pool = provider.provider.pools["main"]
    label = pool.labels[label_name]
    external_id, image_id = provider.image_external_id(label)
    node = Node()
    node.state = models.BUILDING
    node.type = [label_name]
    node.provider = PROVIDER
    node.pool = pool.name
    node.az = provider.choose_az(pool)
    node.image_id = image_id
    zk.store_node(node)
    zk.lock_node(node)
    node.hostname = provider.hostname_for(node)
    zk.store_node(node)
    handle = provider.launch(node, label, pool, make_request([label_name]), external_id)
    assert handle.done.wait(timeout), "launch did not finish"
    return handle, node


def stored(zk: Any, node: Node) -> Node:
    record = zk.get_node(node.id)
    assert record is not None
    return record


def instances(aws: Any, *states: str) -> list[dict[str, Any]]:
    found = [i for r in aws.moto("ec2").describe_instances()["Reservations"]
             for i in r["Instances"]]
    return [i for i in found if not states or i["State"]["Name"] in states]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


TAGGED_LABEL = """          - name: tagged
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
            ebs-optimized: true
            userdata: "#cloud-config\\n"
            iam-instance-profile:
              name: builders
            imdsv2: required
            volume-type: gp3
            volume-size: 40
            iops: 3000
            throughput: 250
            tags:
              team: infra
              Name: overridden
            dynamic-tags:
              job: "{request.requestor_data[job_name]}"
              tenant: "{request.tenant_name}"
              broken: "{request.no_such_attribute}"
"""


# -- launch and delete ------------------------------------------------------------------


def test_launch_tags_instance_and_delete_terminates_it(aws, make_provider, zk):
    provider = make_provider(labels=TAGGED_LABEL)
    aws.moto("iam").create_instance_profile(InstanceProfileName="builders")
    aws.service_quotas = {"ec2": {STANDARD_VCPUS: 64}, "ebs": {"L-7A658B76": 50}}
    handle, node = launch(provider, zk, "tagged")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [instance] = instances(aws, "running")
    instance_id = instance["InstanceId"]
    # The record as upstream's AWS driver writes it.
    assert record.external_id == {"instance": instance_id}
    assert record.state == models.READY
    assert record.hostname == f"np{node.id}"
    assert record.public_ipv4 == instance["PublicIpAddress"]
    assert record.private_ipv4 == instance["PrivateIpAddress"]
    assert record.interface_ip == record.public_ipv4
    assert record.public_ipv6 is None
    assert record.az == instance["Placement"]["AvailabilityZone"]
    assert (record.region, record.cloud) == (REGION, "AWS")
    assert record.node_properties == {"fleet": False, "spot": False}
    assert record.host_keys == []
    assert record.resources == {"instances": 1, "cores": 1, "ram": 4096, STANDARD_VCPUS: 2,
                                "L-7A658B76": 40}
    assert tags_of(instance) == {
        "team": "infra", "job": "unit-tests", "tenant": "tenant-one",
        "Name": f"np{node.id}", META_PROVIDER: PROVIDER, META_POOL: "main",
        META_NODE_ID: node.id}
    [volume_id] = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    [volume] = aws.moto("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert tags_of(volume)[META_NODE_ID] == node.id
    # What was asked of EC2, as it went over the wire.
    [run] = aws.actions("RunInstances")
    assert run["ImageId"] == AMI and run["InstanceType"] == "t3.medium"
    assert run["KeyName"] == "zuul" and run["EbsOptimized"] == "true"
    assert base64.b64decode(run["UserData"]) == b"#cloud-config\n"
    assert run["IamInstanceProfile.Name"] == "builders"
    assert run["MetadataOptions.HttpTokens"] == "required"
    assert run["MetadataOptions.HttpEndpoint"] == "enabled"
    assert run["NetworkInterface.1.AssociatePublicIpAddress"] == "true"
    assert run["ClientToken"]
    assert (run["BlockDeviceMapping.1.Ebs.VolumeSize"], run["BlockDeviceMapping.1.Ebs.VolumeType"],
            run["BlockDeviceMapping.1.Ebs.Iops"], run["BlockDeviceMapping.1.Ebs.Throughput"],
            run["BlockDeviceMapping.1.Ebs.DeleteOnTermination"]) == (
        "40", "gp3", "3000", "250", "true")
    assert "InstanceMarketOptions.MarketType" not in run

    provider.delete_node(record)
    [gone] = instances(aws)
    assert gone["State"]["Name"] == "terminated"
    assert aws.actions("TerminateInstances") == [
        {"Action": "TerminateInstances", "Version": "2016-11-15",
         "InstanceId.1": instance_id}]


def test_waiting_launches_share_one_instance_listing(aws, make_provider, zk):
    import threading
    provider = make_provider()
    results: list[tuple[Any, Node]] = []
    threads = [threading.Thread(target=lambda: results.append(launch(provider, zk, "small")))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [h.state for h, _ in results] == [READY] * 4
    # Launches read the shared listing; nothing asks for one instance.
    assert all("InstanceId.1" not in p for p in aws.actions("DescribeInstances"))
    assert len(aws.actions("DescribeInstances")) <= len(aws.actions("RunInstances")) * 3


def test_spot_instance_counts_spot_quota(aws, make_provider, zk):
    provider = make_provider(labels="""          - name: spot
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
            use-spot: true
""")
    handle, node = launch(provider, zk, "spot")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [instance] = instances(aws, "running")
    assert instance.get("InstanceLifecycle") == "spot"
    assert record.node_properties == {"fleet": False, "spot": True}
    assert record.resources[SPOT_VCPUS] == 2 and STANDARD_VCPUS not in record.resources
    [run] = aws.actions("RunInstances")
    assert run["InstanceMarketOptions.MarketType"] == "spot"
    assert run["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    # Spot instances seen in the account count against the spot quota.
    [seen] = provider.adapter.list_instances()
    assert seen.quota.get(SPOT_VCPUS) == 2


FLEET_LABEL = """          - name: fleet
            cloud-image: ubuntu
            key-name: zuul
            fleet:
              instance-types: [t3.medium, t3.large]
              allocation-strategy: prioritized
"""


def test_fleet_launch_uses_a_launch_template(aws, make_provider, zk):
    ec2 = aws.moto("ec2")
    # A template of ours that no label uses any more, and someone else's.
    for name, owner in (("nodepool-launch-template-old", PROVIDER),
                        ("nodepool-launch-template-foreign", "elsewhere")):
        ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData={"KeyName": "zuul"},
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": [
                {"Key": META_PROVIDER, "Value": owner}]}])
    provider = make_provider(pool="        security-group-id: sg-nodepool",
                             labels=FLEET_LABEL)
    label = provider.provider.pools["main"].labels["fleet"]
    # The fleet's instance type is not known before the launch.
    assert provider.quota_for_label(label).resources == {"instances": 1}
    handle, node = launch(provider, zk, "fleet")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [instance] = instances(aws, "running")
    assert record.external_id == {"instance": instance["InstanceId"]}
    assert record.node_properties == {"fleet": True, "spot": False}
    assert record.resources["cores"] >= 1 and record.resources[STANDARD_VCPUS] >= 2
    [created] = aws.actions("CreateLaunchTemplate")
    template = created["LaunchTemplateName"]
    assert template.startswith("nodepool-launch-template-") and len(template) == 25 + 64
    assert created["LaunchTemplateData.SecurityGroupId.1"] == "sg-nodepool"
    [fleet] = aws.actions("CreateFleet")
    assert fleet["Type"] == "instant"
    assert fleet["LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"] == \
        template
    assert fleet["OnDemandOptions.AllocationStrategy"] == "prioritized"
    names = {t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]}
    assert names == {template, "nodepool-launch-template-foreign"}
    # A second launch reuses the template.
    handle, _ = launch(provider, zk, "fleet")
    assert handle.state == READY, handle.error
    assert len(aws.actions("CreateLaunchTemplate")) == 1


def test_dedicated_host_allocated_and_released(aws, make_provider, zk):
    provider = make_provider(pool="        availability-zone: us-west-2a", labels="""
          - name: dedicated
            cloud-image: ubuntu
            instance-type: m5.large
            key-name: zuul
            dedicated-host: true
""")
    label = provider.provider.pools["main"].labels["dedicated"]
    assert provider.quota_for_label(label).resources == {"instances": 1, "L-8B7BF662": 1}
    handle, node = launch(provider, zk, "dedicated")
    assert handle.state == READY, handle.error
    record = stored(zk, node)
    [host] = aws.moto("ec2").describe_hosts()["Hosts"]
    [instance] = instances(aws, "running")
    assert record.external_id == {"host": host["HostId"], "instance": instance["InstanceId"]}
    assert tags_of(host)[META_NODE_ID] == node.id
    [run] = aws.actions("RunInstances")
    assert (run["Placement.HostId"], run["Placement.Tenancy"]) == (host["HostId"], "host")
    assert run["Placement.AvailabilityZone"] == "us-west-2a"
    # Seen in the listing under the node's id: not taken for vanished.
    assert record.state == models.READY and not record.locked
    assert provider.vanished_nodes([record]) == provider.vanished_nodes([record]) == []
    provider.delete_node(record)
    assert aws.actions("ReleaseHosts") == [
        {"Action": "ReleaseHosts", "Version": "2016-11-15", "HostId.1": host["HostId"]}]
    [host] = aws.moto("ec2").describe_hosts()["Hosts"]
    assert host["State"] == "released"


def test_image_filters_boot_the_newest_match(aws, make_provider, zk):
    provider = make_provider(labels="""          - name: newest
            cloud-image: ubuntu-newest
            instance-type: t3.medium
            key-name: zuul
""")
    images = aws.moto("ec2").describe_images(
        Filters=[{"Name": "name", "Values": ["ubuntu/images/*"]}])["Images"]
    newest = max(images, key=lambda i: (i["CreationDate"], i["Name"]))
    assert len(images) > 1
    handle, node = launch(provider, zk, "newest")
    assert handle.state == READY, handle.error
    [run] = aws.actions("RunInstances")
    same_date = [i["ImageId"] for i in images if i["CreationDate"] == newest["CreationDate"]]
    assert run["ImageId"] in same_date
    record = stored(zk, node)
    assert record.python_path == "/usr/bin/python3" or record.image_id == "ubuntu-newest"


# -- failures ---------------------------------------------------------------------------


def test_throttled_create_slows_down_and_succeeds(aws, make_provider, zk, caplog):
    provider = make_provider()
    # boto3 retries a throttled call twice by itself: three refusals reach
    # the driver once.
    aws.fail("RunInstances", "RequestLimitExceeded", status=503, count=3,
             message="Request limit exceeded.")
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    assert len(aws.actions("RunInstances")) == 4
    assert len(instances(aws, "running")) == 1
    assert "AWS is throttling" in caplog.text
    # Only one attempt: a throttled call is not a failed launch.
    assert stored(zk, node).external_id is not None


def test_insufficient_capacity_aborts_without_failing(aws, make_provider, zk):
    provider = make_provider()
    aws.fail("RunInstances", "InsufficientInstanceCapacity",
             message="We currently do not have sufficient t3.medium capacity.")
    handle, node = launch(provider, zk, "small")
    assert handle.state == ABORTED, handle.error
    assert "InsufficientInstanceCapacity" in handle.error
    assert stored(zk, node).state == models.ABORTED
    assert len(aws.actions("RunInstances")) == 1


def test_quota_refusal_aborts_without_failing(aws, make_provider, zk):
    provider = make_provider()
    aws.fail("RunInstances", "VcpuLimitExceeded",
             message="You have requested more vCPU capacity than your current vCPU limit")
    handle, node = launch(provider, zk, "small")
    assert handle.state == ABORTED, handle.error
    assert len(aws.actions("RunInstances")) == 1
    assert instances(aws) == []


def test_instance_terminated_while_booting_is_retried(aws, make_provider, zk):
    provider = make_provider()
    aws.terminate_next_instances(1)
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    assert len(aws.actions("RunInstances")) == 2
    [running] = instances(aws, "running")
    assert stored(zk, node).external_id == {"instance": running["InstanceId"]}


def test_unknown_instance_type_cannot_be_served(aws, make_provider):
    provider = make_provider(labels="""          - name: nope
            cloud-image: ubuntu
            instance-type: t3.nope
            key-name: zuul
""")
    label = provider.provider.pools["main"].labels["nope"]
    with pytest.raises(RuntimeConfigurationException, match="t3.nope"):
        provider.adapter.get_quota_for_label(label)
    assert "fix the label's instance-type" in provider.label_error(label)


# -- quota ------------------------------------------------------------------------------


def test_service_quotas_limit_and_others_instances_count(aws, make_provider, zk):
    provider = make_provider()
    aws.service_quotas = {"ec2": {STANDARD_VCPUS: 8, SPOT_VCPUS: 100, "L-OTHER": 5}}
    assert provider.adapter.get_quota_limits().resources == {STANDARD_VCPUS: 8}
    # Someone else's instance in the account.
    aws.moto("ec2").run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                                  InstanceType="t3.large")
    pool = provider.provider.pools["main"]
    room = provider.available_quota(pool)
    assert room.get(STANDARD_VCPUS) == 6
    assert room.get("instances") == 10  # the pool's max-servers


def test_denied_service_quotas_launch_within_pool_limits(aws, make_provider, zk, caplog):
    provider = make_provider()
    aws.deny_service_quotas = True
    caplog.set_level(logging.INFO)
    assert provider.adapter.get_quota_limits().resources == {}
    assert provider.adapter.get_quota_limits().resources == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "service quotas" in r.getMessage()]
    assert len(warnings) == 1
    assert "servicequotas:ListServiceQuotas" in warnings[0].getMessage()
    handle, _ = launch(provider, zk, "small")
    assert handle.state == READY, handle.error


def test_unavailable_service_quotas_are_not_fatal(aws, make_provider, caplog):
    # moto's server answers 500 to ListServiceQuotas.
    provider = make_provider()
    assert provider.adapter.get_quota_limits().resources == {}
    assert "Could not read the AWS service quotas" in caplog.text
    assert aws.actions("ListServiceQuotas", service="servicequotas")


# -- leaks ------------------------------------------------------------------------------


def test_leaked_resources_deleted_on_the_second_pass(aws, make_provider, zk):
    provider = make_provider()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    ec2, s3 = aws.moto("ec2"), aws.moto("s3")

    def tagged(tags: dict[str, str]) -> list[dict[str, Any]]:
        return [{"ResourceType": t, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
                for t in ("instance", "volume")]

    ours = {META_PROVIDER: PROVIDER, META_NODE_ID: "0000009999", META_POOL: "main"}
    leaked = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                               TagSpecifications=tagged(ours))["Instances"][0]["InstanceId"]
    foreign = {ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 TagSpecifications=tagged(t))["Instances"][0]["InstanceId"]
               for t in ({META_PROVIDER: "elsewhere", META_NODE_ID: "0000009998"},
                         {"owner": "someone"})}
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-west-2a", TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": k, "Value": v}
                                            for k, v in ours.items()]}])["VolumeId"]
    upload_tags = {META_PROVIDER: PROVIDER, META_BUILD_ID: "0000000001",
                   META_UPLOAD_ID: "0000000009", "nodepool_image_name": "dib-image"}
    snapshot = ec2.create_snapshot(VolumeId=ec2.create_volume(
        Size=1, AvailabilityZone="us-west-2a")["VolumeId"], TagSpecifications=[
        {"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v}
                                              for k, v in upload_tags.items()]}])["SnapshotId"]
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="dib-image-1.raw", Body=b"x",
                  Tagging="&".join(f"{k}={v}" for k, v in upload_tags.items()))
    s3.put_object(Bucket=BUCKET, Key="someone-elses.raw", Body=b"x")

    assert provider.cleanup_leaked_resources() == {}
    counts = provider.cleanup_leaked_resources()
    assert counts == {"instances": 1, "volumes": 1, "snapshots": 1, "objects": 1}
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances(aws)}
    assert states[leaked] == "terminated"
    assert all(states[i] == "running" for i in foreign | {stored(zk, node).external_id[
        "instance"]})
    assert volume not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert snapshot not in {s["SnapshotId"] for s in ec2.describe_snapshots(
        OwnerIds=["self"])["Snapshots"]}
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [
        "someone-elses.raw"]


# -- images -----------------------------------------------------------------------------


def upload_tags(zk: Any) -> dict[str, str]:
    """Tags of an upload whose record exists (so it is not a leak)."""
    build = models.ImageBuild()
    build.state = models.READY
    build_id = zk.store_build("dib-image", build)
    upload = models.ImageUpload()
    upload.state = models.UPLOADING
    upload_id = zk.store_upload("dib-image", build_id, PROVIDER, upload)
    return {META_PROVIDER: PROVIDER, META_BUILD_ID: build_id, META_UPLOAD_ID: upload_id,
            "nodepool_image_name": "dib-image", "purpose": "testing"}


def image_file(tmp_path: Path, size: int = 3 * 512 * 1024 + 100) -> Path:
    path = tmp_path / "dib-image.raw"
    data = bytearray(size)
    data[0:5] = b"boot!"
    data[-3:] = b"end"  # the second and third blocks stay zeros
    path.write_bytes(bytes(data))
    return path


def upload(provider: AwsProvider, path: Path, tags: dict[str, str]) -> str:
    config = provider.provider
    assert isinstance(config, AwsProviderConfig)
    pdi = config.diskimages["dib-image"]
    return provider.upload_image(image_name="dib-image-1700000000", filename=str(path),
                                 image_format="raw", metadata=tags, provider_image=pdi)


def ami(aws: Any, image_id: str) -> dict[str, Any]:
    return aws.moto("ec2").describe_images(ImageIds=[image_id])["Images"][0]


def test_ebs_direct_upload_registers_an_ami_and_delete_removes_it(aws, make_provider, zk,
                                                                   tmp_path):
    provider = make_provider(diskimage="""        import-method: ebs-direct
        imds-support: v2.0
        architecture: arm64
        volume-size: 20""")
    tags = upload_tags(zk)
    image_id = upload(provider, image_file(tmp_path), tags)
    # Through the proxy, which shows what RegisterImage was given.
    [image] = [i for i in provider.adapter.clients.ec2.describe_images(
        ImageIds=[image_id])["Images"]]
    assert image["Name"] == "dib-image-1700000000"
    assert tags_of(image) == tags
    assert (image["Architecture"], image["ImdsSupport"], image["EnaSupport"]) == (
        "arm64", "v2.0", True)
    [mapping] = image["BlockDeviceMappings"]
    snapshot_id = mapping["Ebs"]["SnapshotId"]
    assert (mapping["DeviceName"], mapping["Ebs"]["VolumeSize"],
            mapping["Ebs"]["VolumeType"]) == ("/dev/sda1", 20, "gp3")
    [snapshot] = aws.moto("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert tags_of(snapshot) == tags and snapshot["VolumeSize"] == 1
    # Only the blocks with data were written, zero-padded to 512 KiB (by
    # several threads, so in any order).
    blocks = aws.actions(None, service="ebs")
    puts = [p for p in aws.calls if p[0] == "ebs" and p[1].startswith("PUT ")]
    assert sorted(p[1].rsplit("/", 1)[1] for p in puts) == ["0", "3"]
    assert blocks
    listed = {i.id: i for i in provider.list_images()}
    assert listed[image_id].metadata[META_BUILD_ID] == tags[META_BUILD_ID]

    provider.delete_image(image_id)
    assert image_id not in {i["ImageId"] for i in aws.moto("ec2").describe_images(
        Owners=["self"])["Images"]}
    assert snapshot_id not in {s["SnapshotId"] for s in aws.moto("ec2").describe_snapshots(
        OwnerIds=["self"])["Snapshots"]}
    with pytest.raises(NotFound):
        provider.delete_image(image_id)


def test_snapshot_import_through_s3(aws, make_provider, zk, tmp_path):
    aws.emulate_imports = True
    aws.moto("s3").create_bucket(Bucket=BUCKET,
                                 CreateBucketConfiguration={"LocationConstraint": REGION})
    provider = make_provider(provider="    image-import-timeout: 30")
    tags = upload_tags(zk)
    # EC2 runs a few imports at a time; with image-import-timeout set the
    # upload waits for its turn.
    aws.fail("ImportSnapshot", "ResourceCountLimitExceeded")
    image_id = upload(provider, image_file(tmp_path), tags)
    assert len(aws.actions("ImportSnapshot")) == 2
    image = ami(aws, image_id)
    assert tags_of(image) == tags
    snapshot_id = provider.adapter.clients.ec2.describe_images(ImageIds=[image_id])[
        "Images"][0]["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    [snapshot] = aws.moto("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    # EC2 does not tag what an import makes; the driver does.
    assert tags_of(snapshot) == tags
    [imported] = aws.actions("ImportSnapshot")[1:]
    assert imported["DiskContainer.UserBucket.S3Key"] == "dib-image-1700000000.raw"
    assert imported["DiskContainer.Format"] == "raw"
    # The object is deleted once imported.
    assert "Contents" not in aws.moto("s3").list_objects_v2(Bucket=BUCKET)
    register = aws.registered[image_id]
    assert register["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] == "gp3"
    assert register["ImdsSupport"] is None


def test_image_import(aws, make_provider, zk, tmp_path):
    aws.emulate_imports = True
    aws.moto("s3").create_bucket(Bucket=BUCKET,
                                 CreateBucketConfiguration={"LocationConstraint": REGION})
    provider = make_provider(diskimage="        import-method: image")
    tags = upload_tags(zk)
    image_id = upload(provider, image_file(tmp_path), tags)
    image = ami(aws, image_id)
    assert image["Name"].startswith("import-ami-")  # EC2 names imported AMIs itself
    assert tags_of(image) == tags
    assert not aws.actions("RegisterImage")
    provider.delete_image(image_id)
    assert image_id not in {i["ImageId"] for i in aws.moto("ec2").describe_images(
        Owners=["self"])["Images"]}


def test_imdsv2_cannot_be_imported_as_an_image(aws, zk_info, tmp_path):
    # As upstream: its validator accepts the file, its loader refuses it.
    # The daemons leave the provider out; config-validate only warns.
    path = tmp_path / "nodepool.yaml"
    path.write_text(config_text(zk_info, provider_yaml(diskimage="""        import-method: image
        imds-support: v2.0""")))
    config = load_config(str(path))
    assert PROVIDER not in config.providers
    [reason] = config.left_out[PROVIDER]
    assert "needs import-method snapshot or ebs-direct" in reason
    assert check_config(str(path)) == []
    assert not aws.calls


def test_failed_snapshot_import_removes_the_object(aws, make_provider, zk, tmp_path):
    # moto's server itself cannot import snapshots (it answers 500).
    aws.moto("s3").create_bucket(Bucket=BUCKET,
                                 CreateBucketConfiguration={"LocationConstraint": REGION})
    provider = make_provider()
    with pytest.raises(Exception, match="ImportSnapshot|import"):
        upload(provider, image_file(tmp_path), upload_tags(zk))
    assert "Contents" not in aws.moto("s3").list_objects_v2(Bucket=BUCKET)
    assert not aws.moto("ec2").describe_images(Owners=["self"])["Images"]


def test_untagged_imports_get_their_tasks_tags(aws, make_provider, zk, tmp_path):
    """An upload interrupted after EC2 imported its AMI leaves it
    untagged; the leak cleanup tags it from the import task, so it is
    found as a leak once its upload record goes."""
    aws.emulate_imports = True
    s3 = aws.moto("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BUCKET, Key="lost.raw", Body=b"x" * 1024)
    provider = make_provider()
    tags = upload_tags(zk)
    ec2 = provider.adapter.clients.ec2
    task = ec2.import_image(DiskContainers=[{"Format": "raw", "UserBucket": {
        "S3Bucket": BUCKET, "S3Key": "lost.raw"}}], TagSpecifications=[
        {"ResourceType": "import-image-task",
         "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
    [done] = ec2.describe_import_image_tasks(ImportTaskIds=[task["ImportTaskId"]])[
        "ImportImageTasks"]
    assert not tags_of(ami(aws, done["ImageId"]))
    resources = {(r.type, r.id): r for r in provider.adapter.list_resources()}
    assert resources[("ami", done["ImageId"])].metadata == tags
    snapshot_id = done["SnapshotDetails"][0]["SnapshotId"]
    assert resources[("snapshot", snapshot_id)].metadata == tags


# -- credentials ------------------------------------------------------------------------


def test_credentials_never_reach_the_logs(aws, make_provider, zk, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("botocore", "boto3", "urllib3", "nodepool"):
        caplog.set_level(logging.DEBUG, logger=name)
    provider = make_provider()
    provider.adapter.get_quota_limits()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    provider.delete_node(stored(zk, node))
    assert any(r.name.startswith("botocore") for r in caplog.records)
    assert ACCESS_KEY in aws.access_keys()  # they were used
    assert SECRET_KEY not in caplog.text
    assert SESSION_TOKEN not in caplog.text


def test_profile_name_selects_the_credentials(aws, make_provider, zk, tmp_path, monkeypatch):
    config = Path(tmp_path / "aws-config")
    config.write_text("[profile ci]\nregion = eu-west-1\n")
    Path(tmp_path / "aws-credentials").write_text(
        "[ci]\naws_access_key_id = AKIAPROFILEKEY000001\n"
        "aws_secret_access_key = profile-secret\n")
    provider = make_provider(provider="    profile-name: ci")
    handle, _ = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    assert aws.access_keys() == {"AKIAPROFILEKEY000001"}
    # region-name wins over the profile's region.
    [instance] = instances(aws, "running")
    assert instance["Placement"]["AvailabilityZone"].startswith(REGION)


def test_rate_spaces_mutating_calls(aws, make_provider, zk):
    import time
    provider = make_provider(provider="    rate: 5")
    # The fixture's rate: 1000 is overridden by the later key.
    assert provider.provider.rate == 5
    start = time.monotonic()
    for _ in range(3):
        handle, _ = launch(provider, zk, "small")
        assert handle.state == READY, handle.error
    # Three creates (and reads at ten times the rate) at 5 per second.
    assert time.monotonic() - start >= 0.4
    assert math.isclose(provider.adapter.limiter.interval("mutating"), 0.2)


# -- the launcher -----------------------------------------------------------------------


def test_launcher_fulfils_a_request_through_aws(aws, zk_info, zuul, launcher_factory):
    launcher_factory(config_text(zk_info, provider_yaml(pool="""        node-attributes:
          key1: value1""")))
    request_id = zuul.submit(["small"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    [node_id] = request["nodes"]
    node = zuul.node(node_id)
    [instance] = instances(aws, "running")
    assert node["external_id"] == {"instance": instance["InstanceId"]}
    assert node["provider"] == PROVIDER and node["cloud"] == "AWS"
    assert node["region"] == REGION and node["az"] == "us-west-2a"
    assert node["interface_ip"] == instance["PublicIpAddress"]
    assert node["username"] == "ubuntu" and node["connection_port"] == 22
    assert node["image_id"] == "ubuntu"
    assert node["attributes"] == {"key1": "value1"}
    assert node["node_properties"] == {"fleet": False, "spot": False}
    assert node["resources"]["instances"] == 1
    assert tags_of(instance)[META_NODE_ID] == node_id
    zuul.return_nodes(zuul.accept(request_id))
    wait_for(lambda: zuul.node(node_id) is None, what="used node deleted")
    wait_for(lambda: not instances(aws, "running", "pending", "shutting-down"),
             what="instance terminated")


def test_launcher_waits_for_quota_and_resumes(aws, zk_info, zuul, launcher_factory):
    # Two t3.medium (2 vCPUs each) fit the account's 4 standard vCPUs; G
    # instances count against another quota, which is not limited here.
    aws.service_quotas = {"ec2": {STANDARD_VCPUS: 4}}
    launcher_factory(config_text(zk_info, provider_yaml(labels="""          - name: gpu
            cloud-image: ubuntu
            instance-type: g4dn.xlarge
            key-name: zuul
""")))
    first = [zuul.submit(["small"]) for _ in range(2)]
    nodes = [zuul.wait_request(r)["nodes"][0] for r in first]
    waiting = zuul.submit(["small"])
    # A later request the account has room for is served: the launcher
    # has looked at the earlier one, which waits for quota.
    assert zuul.wait_request(zuul.submit(["gpu"]))["state"] == "fulfilled"
    request = zuul.request(waiting)
    assert request["state"] == "requested" and not request.get("declined_by")
    assert len(instances(aws, "running")) == 3
    zuul.return_nodes(zuul.accept(first[0]))
    assert zuul.wait_request(waiting)["state"] == "fulfilled"
    wait_for(lambda: zuul.node(nodes[0]) is None, what="returned node deleted")
    assert len(instances(aws, "running")) == 3


def test_launcher_relaunches_after_insufficient_capacity(aws, zk_info, zuul, launcher_factory,
                                                         statsd):
    aws.fail("RunInstances", "InsufficientInstanceCapacity", count=2)
    launcher_factory(config_text(zk_info, provider_yaml()))
    request = zuul.wait_request(zuul.submit(["small"]), timeout=60)
    assert request["state"] == "fulfilled"
    assert len(aws.actions("RunInstances")) == 3
    wait_for(lambda: statsd.has(f"nodepool.launch.provider.{PROVIDER}.error.capacity"),
             what="capacity metric")


# -- the builder and the command line ----------------------------------------------------


def builder_config(zk_info: Any, root: Path, import_method: str) -> dict[str, Any]:
    from nodepool.tests.functional.builder_support import base_config, diskimage
    config = base_config(zk_info, root)
    config["diskimages"] = [diskimage("dib-image")]
    config["labels"] = [{"name": "dib"}]
    config["providers"] = [{
        "name": PROVIDER, "driver": "aws", "region-name": REGION,
        "object-storage": {"bucket-name": BUCKET},
        "diskimages": [{"name": "dib-image", "import-method": import_method,
                        "tags": {"purpose": "testing"}}],
        "pools": [{"name": "main", "max-servers": 1, "host-key-checking": False,
                   "labels": [{"name": "dib", "diskimage": "dib-image",
                               "instance-type": "t3.medium", "key-name": "zuul"}]}]}]
    return config


def our_amis(aws: Any) -> list[dict[str, Any]]:
    return [i for i in aws.moto("ec2").describe_images(Owners=["self"])["Images"]
            if META_BUILD_ID in tags_of(i)]


def test_builder_uploads_and_image_delete_removes_the_ami(aws, zk_info, zk, tmp_path,
                                                          builder_factory, images):
    from nodepool.tests.functional.test_commands import CLI
    aws.emulate_imports = True
    aws.moto("s3").create_bucket(Bucket=BUCKET,
                                 CreateBucketConfiguration={"LocationConstraint": REGION})
    config = builder_config(zk_info, tmp_path, "snapshot")
    builder_factory(config)
    wait_for(lambda: [u for u in images.uploads("dib-image", PROVIDER)
                      if u.state == models.READY], timeout=60, what="upload ready")
    [upload_record] = [u for u in images.uploads("dib-image", PROVIDER)
                       if u.state == models.READY]
    [image] = our_amis(aws)
    assert upload_record.external_id == image["ImageId"]
    assert upload_record.external_name == image["Name"]
    assert image["Name"].startswith("dib-image-")
    assert tags_of(image)[META_UPLOAD_ID] == upload_record.id
    assert tags_of(image)["purpose"] == "testing"
    snapshot_id = aws.registered[image["ImageId"]]["BlockDeviceMappings"][0]["Ebs"][
        "SnapshotId"]
    # The CLI, in a process of its own, reaches AWS through the same settings.
    cli = CLI(tmp_path / "nodepool.yaml")
    assert cli.json("alien-image-list", PROVIDER) == []
    cli.ok("image-delete", "--provider", PROVIDER, "--image", "dib-image",
           "--build-id", upload_record.build_id, "--upload-id", upload_record.id)
    # (The builder then uploads the build again, as a new AMI.)
    wait_for(lambda: image["ImageId"] not in {i["ImageId"] for i in our_amis(aws)},
             timeout=30, what="AMI deregistered")
    wait_for(lambda: snapshot_id not in {s["SnapshotId"] for s in aws.moto(
        "ec2").describe_snapshots(OwnerIds=["self"])["Snapshots"]}, what="snapshot deleted")
    objects = aws.moto("s3").list_objects_v2(Bucket=BUCKET).get("Contents") or []
    assert f"{image['Name']}.raw" not in {o["Key"] for o in objects}
    assert [a["DiskContainer.UserBucket.S3Key"] for a in aws.actions("ImportSnapshot")][
        0] == f"{image['Name']}.raw"


def test_alien_image_list_shows_amis_without_a_record(aws, zk_info, zk, tmp_path,
                                                      make_provider):
    from nodepool.tests.functional.test_commands import CLI
    provider = make_provider(diskimage="        import-method: ebs-direct")
    tags = upload_tags(zk)
    image_id = upload(provider, image_file(tmp_path), tags)
    (tmp_path / "cli.yaml").write_text(config_text(zk_info, provider_yaml(
        diskimage="        import-method: ebs-direct")))
    cli = CLI(tmp_path / "cli.yaml")
    # The upload record is still "uploading": not a ready upload.
    assert cli.json("alien-image-list", PROVIDER) == [
        {"provider": PROVIDER, "name": "dib-image-1700000000", "id": image_id}]


def test_delete_now_terminates_the_instance(aws, zk_info, zk, tmp_path, make_provider):
    from nodepool.tests.functional.test_commands import CLI
    provider = make_provider()
    handle, node = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    zk.unlock_node(node)
    (tmp_path / "cli.yaml").write_text(config_text(zk_info, provider_yaml()))
    cli = CLI(tmp_path / "cli.yaml")
    info = cli.json("info", PROVIDER)
    assert [n["id"] for n in info["nodes"]] == [node.id]
    cli.ok("delete", node.id, "--now")
    assert zk.get_node(node.id) is None
    [instance] = instances(aws)
    assert instance["State"]["Name"] == "terminated"
    # erase forgets a provider's records; its instances are then leaks.
    handle, other = launch(provider, zk, "small")
    assert handle.state == READY, handle.error
    zk.unlock_node(other)
    cli.ok("erase", PROVIDER, "--force")
    assert zk.get_node(other.id) is None
    assert len(instances(aws, "running")) == 1
    assert provider.cleanup_leaked_resources() == {}
    assert provider.cleanup_leaked_resources() == {"instances": 1}
    assert instances(aws, "running") == []


def test_create_resumes_from_its_stored_progress(aws, make_provider, zk):
    """A launcher taking a node over rebuilds the create from what the
    record says, and does not start a second instance."""
    from nodepool.driver.adapter import LaunchSpec
    provider = make_provider()
    label = provider.provider.pools["main"].labels["small"]
    spec = LaunchSpec(hostname="np0000000077", label=label, pool=label.pool,
                      image_external_id=None, metadata={META_NODE_ID: "0000000077"}, az=None,
                      request=None, log=logging.getLogger("test"))
    op = provider.adapter.create(spec)
    while op.step != "booting":
        assert op.advance() is None
    progress, external_id = op.progress(), op.external_id
    other = make_provider()
    resumed = other.adapter.create(spec, progress, external_id)
    instance = wait_for(resumed.advance, what="instance running")
    assert instance.external_id == external_id
    assert len(aws.actions("RunInstances")) == 1
    # The dedicated-host-free instance lists under the same id.
    assert [i.external_id for i in other.adapter.list_instances()] == [external_id]
    assert other.vanished_nodes([]) == []


def test_builder_deletes_leaked_amis_with_their_snapshots(aws, make_provider, zk):
    provider = make_provider()
    ec2 = provider.adapter.clients.ec2  # through the proxy, which keeps the mappings
    known = upload_tags(zk)
    lost = dict(known, **{META_UPLOAD_ID: "0000000999"})
    foreign = dict(lost, **{META_PROVIDER: "elsewhere"})
    made = {}
    for name, tags in (("known", known), ("lost", lost), ("foreign", foreign)):
        snapshot = aws.moto("ec2").create_snapshot(VolumeId=aws.moto("ec2").create_volume(
            Size=1, AvailabilityZone="us-west-2a")["VolumeId"])["SnapshotId"]
        image_id = ec2.register_image(
            Name=f"dib-image-{name}", RootDeviceName="/dev/sda1",
            BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
            TagSpecifications=[{"ResourceType": "image", "Tags": [
                {"Key": k, "Value": v} for k, v in tags.items()]}])["ImageId"]
        made[name] = (image_id, snapshot)
    assert provider.cleanup_leaked_images() == {}
    # The launcher's cleanup leaves AMIs to the builder.
    assert provider.cleanup_leaked_resources() == {}
    assert provider.cleanup_leaked_images() == {"amis": 1}
    images = {i["ImageId"] for i in aws.moto("ec2").describe_images(Owners=["self"])["Images"]}
    snapshots = {s["SnapshotId"] for s in aws.moto("ec2").describe_snapshots(
        OwnerIds=["self"])["Snapshots"]}
    assert made["lost"][0] not in images and made["lost"][1] not in snapshots
    assert {made["known"][0], made["foreign"][0]} <= images
    assert {made["known"][1], made["foreign"][1]} <= snapshots


@pytest.mark.slow
def test_zuul_14_uses_and_returns_aws_nodes(aws, zk_info, zuul, launcher_factory,
                                            zuul_python):
    """Zuul 14.3.0's own client code (in a virtualenv of its own) requests,
    locks, uses and returns two AWS nodes."""
    from nodepool.tests.functional.test_zuul_compat import drive
    launcher_factory(config_text(zk_info, provider_yaml(labels="""          - name: fake-label
            cloud-image: ubuntu
            instance-type: t3.medium
            key-name: zuul
""")).replace("labels:\n", "labels:\n  - name: fake-label\n", 1))
    result = drive(zuul_python, zk_info, "fulfil")
    assert result["state"] == "fulfilled"
    assert result["provider"] == PROVIDER
    assert len(result["node_data"]) == 2 == len(aws.actions("RunInstances"))
    assert len({n["interface_ip"] for n in result["node_data"]}) == 2
    zones = {i["Placement"]["AvailabilityZone"] for i in instances(aws)}
    for node in result["node_data"]:
        assert node["interface_ip"].count(".") == 3 and node["az"] in zones
        assert (node["username"], node["connection_type"], node["connection_port"]) == (
            "ubuntu", "ssh", 22)
        assert node["locked"] and node["label"] == "fake-label"
    assert result["in_use"] == ["in-use", "in-use"]
    wait_for(lambda: not instances(aws, "running", "pending", "shutting-down"),
             what="instances terminated after use")
