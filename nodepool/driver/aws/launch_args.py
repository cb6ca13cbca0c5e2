"""What a launch asks EC2 for, from a label: pure functions over the
configuration (the adapter looks up the AMI and makes the calls).

Tags are where nodepool finds its own resources again (the
``nodepool_*`` tags, which nothing configurable may override) and where
operators' billing and tooling look; every instance and its volumes carry
them from the moment they exist (``TagSpecifications``), so nothing can
leak untagged.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
from typing import Any

from nodepool.driver.request_format import format_with_request

LAUNCH_TEMPLATE_PREFIX = "nodepool-launch-template"
ROOT_DEVICE = "/dev/sda1"


def tag_list(tags: dict[str, Any]) -> list[dict[str, str]]:
    return [{"Key": str(k), "Value": str(val)} for k, val in tags.items()]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def instance_tags(*, label: Any, hostname: str, metadata: dict[str, str], request: Any,
                  log: logging.Logger | logging.LoggerAdapter) -> dict[str, str]:
    """The label's ``tags``, its ``dynamic-tags`` formatted with the
    request (one that does not format is logged and left out), nodepool's
    tags, and ``Name`` (the hostname), later ones winning."""
    tags = {str(k): str(val) for k, val in label.tags.items()}
    for key, template in label.dynamic_tags.items():
        try:
            tags[str(key)] = format_with_request(template, request)
        except Exception:
            log.exception("Could not format dynamic tag %s (%r); leaving it out", key,
                          template)
    tags.update(metadata)
    tags["Name"] = hostname
    return tags


def _metadata_options(label: Any) -> dict[str, str] | None:
    if label.imdsv2 in ("required", "optional"):
        return {"HttpTokens": label.imdsv2, "HttpEndpoint": "enabled"}
    return None


def root_volume(label: Any, image: dict[str, Any]) -> dict[str, Any] | None:
    """The AMI's first block device, set to go with the instance and
    sized and typed as the label says (None when the AMI has none)."""
    mappings = image.get("BlockDeviceMappings") or []
    if not mappings or "Ebs" not in mappings[0]:
        return None
    mapping = copy.deepcopy(mappings[0])
    ebs = mapping["Ebs"]
    ebs["DeleteOnTermination"] = True
    for key, value in (("VolumeSize", label.volume_size), ("VolumeType", label.volume_type),
                       ("Iops", label.iops), ("Throughput", label.throughput)):
        if value:
            ebs[key] = value
    # A mapping from a snapshot may not say whether it is encrypted.
    ebs.pop("Encrypted", None)
    return mapping


def run_instances_args(*, label: Any, image_id: str, image: dict[str, Any],
                       tags: dict[str, str], host_id: str | None,
                       client_token: str | None) -> dict[str, Any]:
    """Keyword arguments for ``ec2.run_instances`` (one instance)."""
    pool = label.pool
    nic: dict[str, Any] = {"AssociatePublicIpAddress": pool.public_ipv4, "DeviceIndex": 0}
    if pool.security_group_id:
        nic["Groups"] = [pool.security_group_id]
    if pool.subnet_id:
        nic["SubnetId"] = pool.subnet_id
    if pool.public_ipv6:
        nic["Ipv6AddressCount"] = 1
    args: dict[str, Any] = {
        "ImageId": image_id,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": label.key_name,
        "EbsOptimized": label.ebs_optimized,
        "InstanceType": label.instance_type,
        "NetworkInterfaces": [nic],
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(tags)},
                              {"ResourceType": "volume", "Tags": tag_list(tags)}],
    }
    if client_token:
        args["ClientToken"] = client_token
    if label.userdata:
        args["UserData"] = label.userdata
    profile = label.iam_instance_profile or {}
    if "name" in profile:
        args["IamInstanceProfile"] = {"Name": profile["name"]}
    elif "arn" in profile:
        args["IamInstanceProfile"] = {"Arn": profile["arn"]}
    volume = root_volume(label, image)
    if volume is not None:
        args["BlockDeviceMappings"] = [volume]
    if label.use_spot:
        args["InstanceMarketOptions"] = {
            "MarketType": "spot",
            "SpotOptions": {"SpotInstanceType": "one-time",
                            "InstanceInterruptionBehavior": "terminate"}}
    options = _metadata_options(label)
    if options:
        args["MetadataOptions"] = options
    placement: dict[str, Any] = {}
    if host_id:
        placement.update({"Tenancy": "host", "HostId": host_id, "Affinity": "host"})
    if pool.az:
        placement["AvailabilityZone"] = pool.az
    if placement:
        args["Placement"] = placement
    return args


def allocate_host_args(*, label: Any, tags: dict[str, str], client_token: str | None
                       ) -> dict[str, Any]:
    args: dict[str, Any] = {
        "AutoPlacement": "off",
        "AvailabilityZone": label.pool.az,
        "InstanceType": label.instance_type,
        "Quantity": 1,
        "HostRecovery": "off",
        "HostMaintenance": "off",
        "TagSpecifications": [{"ResourceType": "dedicated-host", "Tags": tag_list(tags)}],
    }
    if client_token:
        args["ClientToken"] = client_token
    return args


def launch_template(label: Any, provider_name: str) -> tuple[str, dict[str, Any]]:
    """(name, ``create_launch_template`` arguments) of the launch template
    a fleet label launches from.  The name is a hash of the settings, the
    same as upstream Nodepool's, so both find the same templates."""
    ebs: dict[str, Any] = {"DeleteOnTermination": True}
    for key, value in (("VolumeSize", label.volume_size), ("VolumeType", label.volume_type),
                       ("Iops", label.iops), ("Throughput", label.throughput)):
        if value:
            ebs[key] = value
    data: dict[str, Any] = {
        "KeyName": label.key_name,
        "SecurityGroupIds": [label.pool.security_group_id],
        "BlockDeviceMappings": [{"DeviceName": ROOT_DEVICE, "Ebs": ebs}],
    }
    options = _metadata_options(label)
    if options:
        data["MetadataOptions"] = options
    if label.userdata:
        data["UserData"] = base64.b64encode(label.userdata.encode("ascii")).decode("utf-8")
    args: dict[str, Any] = {
        "LaunchTemplateData": data,
        "TagSpecifications": [{"ResourceType": "launch-template", "Tags": tag_list(
            {"nodepool_managed": True, "nodepool_provider_name": provider_name})}],
    }
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode("utf8")).hexdigest()
    return f"{LAUNCH_TEMPLATE_PREFIX}-{digest}", args


def create_fleet_args(*, label: Any, template_name: str, image_id: str,
                      tags: dict[str, str], client_token: str | None) -> dict[str, Any]:
    """Keyword arguments for an ``instant`` ``ec2.create_fleet`` of one
    instance of any of the label's instance types."""
    fleet = label.fleet or {}
    strategy = fleet["allocation-strategy"]
    subnet = {"SubnetId": label.pool.subnet_id} if label.pool.subnet_id else {}
    overrides = [{"ImageId": image_id, "InstanceType": itype, **subnet}
                 for itype in fleet.get("instance-types") or []]
    market = "spot" if label.use_spot else "on-demand"
    options_key = "SpotOptions" if label.use_spot else "OnDemandOptions"
    args: dict[str, Any] = {
        options_key: {"AllocationStrategy": strategy},
        "TargetCapacitySpecification": {"TotalTargetCapacity": 1,
                                        "DefaultTargetCapacityType": market},
        "LaunchTemplateConfigs": [{
            "LaunchTemplateSpecification": {"LaunchTemplateName": template_name,
                                            "Version": "$Latest"},
            "Overrides": overrides}],
        "Type": "instant",
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(tags)},
                              {"ResourceType": "volume", "Tags": tag_list(tags)}],
    }
    if client_token:
        args["ClientToken"] = client_token
    return args
