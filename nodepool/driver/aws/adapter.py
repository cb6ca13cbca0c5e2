"""The AWS adapter: nodepool's calls translated to boto3.

Thin on purpose: retries, launch and boot timeouts, quota arithmetic and
leak bookkeeping live in the shared machinery.  What is here is EC2's
side: which calls to make (:mod:`.launch_args`), what the answers mean
(:mod:`.errors`), how fast to make them (:mod:`.ratelimit`), and not
making more than needed (waiting launches and deletes share one listing
of instances and one of dedicated hosts; instance types and AMIs are
looked up once).

A node's ``external_id`` is what upstream's driver writes:
``{"instance": "i-..."}``, plus ``"host": "h-..."`` on a dedicated host.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import botocore.exceptions

from nodepool.driver.adapter import (
    META_PROVIDER,
    Adapter,
    CloudImage,
    CreateOperation,
    DeleteOperation,
    Instance,
    LaunchSpec,
    Resource,
)
from nodepool.driver.aws import launch_args, quota
from nodepool.driver.aws.clients import AwsClients
from nodepool.driver.aws.errors import (
    AwsError,
    Throttled,
    error_code,
    is_denied,
    is_throttle,
    translate,
)
from nodepool.driver.aws.images import ImageStore
from nodepool.driver.aws.ratelimit import MUTATING, READ, ApiRateLimiter
from nodepool.driver.listing import SharedListing
from nodepool.driver.quota import QuotaInformation
from nodepool.exceptions import (
    ImageNotAvailable,
    LaunchStatusException,
    NotFound,
    RuntimeConfigurationException,
)

T = TypeVar("T")

HOST_GONE_STATES = ("released", "released-permanent-failure")
HOST_FAILED_STATES = ("permanent-failure", "released", "released-permanent-failure")
# How long an instance EC2 said it created may be missing from listings
# (EC2's listings are eventually consistent) before it counts as vanished.
MISSING_GRACE = 120.0
# How long a looked-up "newest AMI matching the filters" is used.
IMAGE_FILTER_TTL = 300.0


def as_external_id(external_id: Any) -> dict[str, str]:
    """A node's external id as a dict (nodes of old upstream releases
    carry the bare instance id)."""
    if isinstance(external_id, dict):
        return dict(external_id)
    return {"instance": str(external_id)}


class AwsCreate(CreateOperation):
    """Steps: ``start``; ``allocate-host`` and ``host-wait`` for a
    dedicated host; ``run`` (run_instances or create_fleet); ``booting``
    (until the shared listing shows the instance running).  A throttled
    step is tried again later, slower."""

    def __init__(self, adapter: AwsAdapter, spec: LaunchSpec, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.spec = spec
        self.external_id = as_external_id(self.external_id) if self.external_id else None

    def _set_id(self, **ids: str) -> None:
        # A new dict each time: the framework notices a change by comparison.
        self.external_id = {**(self.external_id or {}), **ids}

    def advance(self) -> Instance | None:
        try:
            return self._advance()
        except Throttled as e:
            self.poll_after = self.adapter.throttled(self.spec.log, e)
            return None

    def _advance(self) -> Instance | None:
        adapter = self.adapter
        label = self.spec.label
        if self.step == "start":
            # Lets EC2 recognise a repeated call (after a lost answer) as
            # the same request instead of creating a second instance.
            self.data["token"] = uuid.uuid4().hex
            self.step = "allocate-host" if label.dedicated_host else "run"
            return None
        if self.step == "allocate-host":
            wait = adapter.limiter.ready(MUTATING)
            if wait:
                self.poll_after = wait
                return None
            host_id = adapter.allocate_host(self.spec, self.data["token"])
            self._set_id(host=host_id)
            self.step = "host-wait"
            return None
        if self.step == "host-wait":
            host = adapter.host(self.external_id["host"])
            state = (host or {}).get("State", "pending").lower()
            self.status = state
            if state == "available":
                self.step = "run"
                return None
            if state in HOST_FAILED_STATES:
                raise LaunchStatusException(f"dedicated host {self.external_id['host']} "
                                            f"is {state}")
            self.poll_after = max(0.01, adapter.hosts.next_refresh())
            return None
        if self.step == "run":
            image_id = adapter.image_id_for(self.spec)
            wait = adapter.limiter.ready(MUTATING)
            if wait:
                self.poll_after = wait
                return None
            instance_id = adapter.start_instance(self.spec, image_id, self.data["token"],
                                                 (self.external_id or {}).get("host"))
            self._set_id(instance=instance_id)
            self.data["created"] = time.time()
            self.step = "booting"
            return None
        # booting
        instance = adapter.instance(self.external_id["instance"])
        if instance is None:
            self.status = "unknown"
            if time.time() - float(self.data.get("created") or time.time()) > MISSING_GRACE:
                raise LaunchStatusException(
                    f"instance {self.external_id['instance']} vanished while booting")
            self.poll_after = max(0.01, adapter.instances.next_refresh())
            return None
        state = instance["State"]["Name"].lower()
        self.status = state
        if state == "running":
            return adapter.finished_instance(instance, label, self.external_id)
        if state in ("terminated", "shutting-down", "stopped", "stopping"):
            reason = (instance.get("StateReason") or {}).get("Message") or "no reason given"
            raise LaunchStatusException(
                f"instance {self.external_id['instance']} is {state} ({reason})")
        self.poll_after = max(0.01, adapter.instances.next_refresh())
        return None


class AwsDelete(DeleteOperation):
    """Steps: ``start`` (terminate the instance), ``deleting`` (until the
    listing shows it terminated or gone), then for a dedicated host
    ``release-host`` and ``host-releasing``."""

    def __init__(self, adapter: AwsAdapter, **kw: Any) -> None:
        super().__init__(**kw)
        self.adapter = adapter
        self.ids = as_external_id(self.external_id)
        # When we asked for the termination (None when resumed from a
        # record: then any listing will do).
        self.terminated_at: float | None = None

    def advance(self) -> bool:
        try:
            return self._advance()
        except Throttled as e:
            self.poll_after = self.adapter.throttled(self.adapter.log, e)
            return False

    def _advance(self) -> bool:
        adapter = self.adapter
        if self.step == "start":
            self.step = "terminate" if "instance" in self.ids else "release-host"
        if self.step == "terminate":
            wait = adapter.limiter.ready(MUTATING)
            if wait:
                self.poll_after = wait
                return False
            try:
                adapter.terminate_instance(self.ids["instance"])
            except NotFound:
                pass
            self.terminated_at = time.monotonic()
            self.step = "deleting"
            return False
        if self.step == "deleting":
            instance, listed_at = adapter.instance_listed(self.ids["instance"])
            state = instance["State"]["Name"].lower() if instance else "gone"
            # Only a listing made after the terminate call may say "gone"
            # (the shared one is refreshed in its own time).
            if state == "gone" and self.terminated_at is not None \
                    and listed_at <= self.terminated_at:
                state = "unknown"
            self.status = state
            if state not in ("terminated", "gone"):
                self.poll_after = max(0.01, adapter.instances.next_refresh())
                return False
            if "host" not in self.ids:
                return True
            self.step = "release-host"
        if self.step == "release-host":
            wait = adapter.limiter.ready(MUTATING)
            if wait:
                self.poll_after = wait
                return False
            try:
                adapter.release_host(self.ids["host"])
            except NotFound:
                return True
            self.step = "host-releasing"
            return False
        host = adapter.host(self.ids["host"])
        state = (host or {}).get("State", "released").lower()
        self.status = state
        if state in HOST_GONE_STATES:
            return True
        self.poll_after = max(0.01, adapter.hosts.next_refresh())
        return False


class AwsAdapter(Adapter):
    """One provider's view of one AWS account in one region."""

    # Seconds between looks at EC2 while waiting: the lifetime of the
    # shared instance and host listings.  Tests shorten it.
    poll_interval: ClassVar[float] = 5.0
    image_resource_type: ClassVar[str] = "ami"

    def node_resource_id(self, external_id: Any) -> str:
        # A node's external id names its instance (and dedicated host).
        if isinstance(external_id, dict):
            return str(external_id.get("instance"))
        return str(external_id)

    def __init__(self, provider_config: Any) -> None:
        super().__init__(provider_config)
        self.log = logging.getLogger(f"nodepool.driver.aws.{provider_config.name}")
        self.clients = AwsClients(provider_config.region_name, provider_config.profile_name)
        self.limiter = ApiRateLimiter(provider_config.rate)
        self.instances: SharedListing[dict[str, Any]] = SharedListing(
            self._list_instances, lambda i: i["InstanceId"], self.poll_interval)
        self.hosts: SharedListing[dict[str, Any]] = SharedListing(
            self._list_hosts, lambda h: h["HostId"], self.poll_interval)
        self.images = ImageStore(self)
        self._lock = threading.Lock()
        self._instance_types: dict[str, dict[str, Any]] = {}
        self._unknown_types: set[str] = set()
        self._amis: dict[str, dict[str, Any]] = {}
        self._filtered_images: dict[str, tuple[float, str]] = {}
        self._templates: dict[str, str] | None = None
        self._quotas_refused = False
        self.stopped = threading.Event()

    def stop(self) -> None:
        self.stopped.set()
        self.clients.close()

    # Calls ----------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], T], kind: str = READ, wait: bool = True) -> T:
        """Make an AWS call (``fn``), keeping the rate (``wait``: sleep for
        the slot; steps take their slot with ``limiter.ready`` first) and
        raising the project exception for a failure."""
        if wait:
            self.limiter.wait(kind)
        try:
            result = fn()
        except Exception as e:
            if is_throttle(e):
                self.limiter.throttled()
            raise translate(e, what, self.provider.name) from e
        self.limiter.succeeded()
        return result

    def throttled(self, log: Any, error: Exception) -> float:
        """A step met a throttled call (the limiter has slowed down
        already, see :meth:`call`): how long until it tries again."""
        pause = self.limiter.pause()
        log.warning("AWS is throttling %s; slowing down (next try in %.0f s): %s",
                    self.provider.name, pause, error)
        return pause

    def paginate(self, what: str, client: Any, operation: str, key: str,
                 **kwargs: Any) -> list[Any]:
        items: list[Any] = []
        pages = iter(client.get_paginator(operation).paginate(**kwargs))
        while True:
            page = self.call(what, lambda: next(pages, None))
            if page is None:
                return items
            items.extend(page.get(key) or [])

    def _list_instances(self) -> list[dict[str, Any]]:
        reservations = self.paginate("listing instances", self.clients.ec2,
                                     "describe_instances", "Reservations")
        return [i for r in reservations for i in r.get("Instances") or []]

    def _list_hosts(self) -> list[dict[str, Any]]:
        if not any(label.dedicated_host for pool in self.provider.pools.values()
                   for label in pool.labels.values()):
            return []
        return self.paginate("listing dedicated hosts", self.clients.ec2,
                             "describe_hosts", "Hosts")

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        return self.instance_listed(instance_id)[0]

    def instance_listed(self, instance_id: str) -> tuple[dict[str, Any] | None, float]:
        """(an instance from the shared listing or None, the monotonic
        time the listing was requested)."""
        try:
            items, listed_at = self.instances.get()
        except Exception as e:
            raise translate(e, "listing instances", self.provider.name) from e
        return items.get(instance_id), listed_at

    def host(self, host_id: str) -> dict[str, Any] | None:
        try:
            return self.hosts.get()[0].get(host_id)
        except Exception as e:
            raise translate(e, "listing dedicated hosts", self.provider.name) from e

    # Lookups ---------------------------------------------------------------

    def instance_type(self, name: str) -> dict[str, Any]:
        """``DescribeInstanceTypes``' entry for ``name`` (looked up once)."""
        info = self._instance_types.get(name)
        if info is not None:
            return info
        try:
            found = self.call(f"looking up instance type {name}",
                              lambda: self.clients.ec2.describe_instance_types(
                                  InstanceTypes=[name])).get("InstanceTypes") or []
        except AwsError as e:
            if e.code in ("InvalidInstanceType", "InvalidParameterValue"):
                raise RuntimeConfigurationException(
                    f"instance type {name!r} does not exist in region "
                    f"{self.provider.region_name} of provider {self.provider.name}; "
                    "fix the label's instance-type") from e
            raise
        if not found:
            raise RuntimeConfigurationException(
                f"instance type {name!r} does not exist in region "
                f"{self.provider.region_name}; fix the label's instance-type")
        self._instance_types[name] = found[0]
        return found[0]

    def ami(self, image_id: str) -> dict[str, Any]:
        """An AMI by id (found ones are remembered)."""
        image = self._amis.get(image_id)
        if image is not None:
            return image
        try:
            images = self.call(f"looking up AMI {image_id}",
                               lambda: self.clients.ec2.describe_images(ImageIds=[image_id])
                               ).get("Images") or []
        except NotFound:
            images = []
        if not images:
            raise ImageNotAvailable(f"AMI {image_id} does not exist in "
                                    f"{self.provider.region_name}")
        self._amis[image_id] = images[0]
        return images[0]

    def newest_image_id(self, filters: list[dict[str, Any]]) -> str:
        """The newest AMI matching ``filters`` (looked up at most every
        five minutes per filter set)."""
        key = repr(filters)
        cached = self._filtered_images.get(key)
        if cached is not None and time.monotonic() - cached[0] < IMAGE_FILTER_TTL:
            return cached[1]
        images = self.call("looking up AMIs by filters",
                           lambda: self.clients.ec2.describe_images(Filters=filters)
                           ).get("Images") or []
        if not images:
            raise ImageNotAvailable(f"no AMI matches the image-filters {filters}")
        newest = max(images, key=lambda i: i.get("CreationDate") or "")
        self._filtered_images[key] = (time.monotonic(), newest["ImageId"])
        return newest["ImageId"]

    def image_id_for(self, spec: LaunchSpec) -> str:
        cloud_image = spec.label.cloud_image
        if cloud_image is None:
            if not spec.image_external_id:
                raise ImageNotAvailable(f"no upload of diskimage {spec.label.diskimage.name}")
            return spec.image_external_id
        if cloud_image.image_filters is not None:
            return self.newest_image_id(cloud_image.image_filters)
        return cloud_image.image_id

    # Servers -----------------------------------------------------------------

    def create(self, spec: LaunchSpec, progress: dict[str, Any] | None = None,
               external_id: Any = None) -> CreateOperation:
        progress = progress or {}
        return AwsCreate(self, spec, step=progress.get("step", "start"),
                         data=progress.get("data"), external_id=external_id)

    def delete(self, external_id: Any, progress: dict[str, Any] | None = None
               ) -> DeleteOperation:
        progress = progress or {}
        return AwsDelete(self, step=progress.get("step", "start"), data=progress.get("data"),
                         external_id=external_id)

    def _tags(self, spec: LaunchSpec) -> dict[str, str]:
        return launch_args.instance_tags(label=spec.label, hostname=spec.hostname,
                                         metadata=spec.metadata, request=spec.request,
                                         log=spec.log)

    def allocate_host(self, spec: LaunchSpec, token: str) -> str:
        args = launch_args.allocate_host_args(label=spec.label, tags=self._tags(spec),
                                              client_token=token)
        host_ids = self.call(f"allocating a dedicated host for {spec.hostname}",
                             lambda: self.clients.ec2.allocate_hosts(**args),
                             MUTATING, wait=False)["HostIds"]
        spec.log.info("Allocated dedicated host %s", host_ids[0])
        self.hosts.invalidate()
        return host_ids[0]

    def start_instance(self, spec: LaunchSpec, image_id: str, token: str,
                       host_id: str | None) -> str:
        """Ask for the instance (the slot is taken); its id."""
        label = spec.label
        tags = self._tags(spec)
        if label.fleet:
            template = self.launch_template(label)
            args = launch_args.create_fleet_args(label=label, template_name=template,
                                                 image_id=image_id, tags=tags,
                                                 client_token=token)
            response = self.call(f"creating a fleet instance for {spec.hostname}",
                                 lambda: self.clients.ec2.create_fleet(**args),
                                 MUTATING, wait=False)
            instances = response.get("Instances") or []
            if not instances or not instances[0].get("InstanceIds"):
                errors = response.get("Errors") or [{}]
                raise translate(_FleetError(errors[0]), "creating a fleet instance",
                                self.provider.name)
            instance_id = instances[0]["InstanceIds"][0]
        else:
            if not label.instance_type:
                raise RuntimeConfigurationException(
                    f"label {label.name} has neither instance-type nor fleet")
            args = launch_args.run_instances_args(
                label=label, image_id=image_id, image=self.ami(image_id), tags=tags,
                host_id=host_id, client_token=token)
            response = self.call(f"creating an instance for {spec.hostname}",
                                 lambda: self.clients.ec2.run_instances(**args),
                                 MUTATING, wait=False)
            instance_id = response["Instances"][0]["InstanceId"]
        spec.log.info("Created instance %s%s", instance_id,
                      f" on dedicated host {host_id}" if host_id else "")
        return instance_id

    def finished_instance(self, instance: dict[str, Any], label: Any,
                          external_id: dict[str, str]) -> Instance:
        used = self.label_quota(label, instance.get("InstanceType"))
        result = self._instance(instance, used)
        result.external_id = dict(external_id)
        result.node_properties = {"fleet": bool(label.fleet), "spot": bool(label.use_spot)}
        return result

    def _instance(self, instance: dict[str, Any], used: QuotaInformation | None) -> Instance:
        public_v4 = instance.get("PublicIpAddress") or None
        private_v4 = instance.get("PrivateIpAddress") or None
        public_v6 = None
        for iface in (instance.get("NetworkInterfaces") or [])[:1]:
            addresses = iface.get("Ipv6Addresses") or []
            if addresses:
                public_v6 = addresses[0].get("Ipv6Address")
        # As a node's: the dedicated host first, if any.
        host_id = (instance.get("Placement") or {}).get("HostId")
        external_id = {"host": host_id} if host_id else {}
        external_id["instance"] = instance["InstanceId"]
        return Instance(
            external_id=external_id,
            metadata=launch_args.tag_dict(instance.get("Tags")),
            interface_ip=public_v4 or public_v6 or private_v4,
            public_ipv4=public_v4, public_ipv6=public_v6, private_ipv4=private_v4,
            az=(instance.get("Placement") or {}).get("AvailabilityZone"),
            region=self.provider.region_name, cloud="AWS", quota=used)

    def terminate_instance(self, instance_id: str) -> None:
        self.call(f"terminating instance {instance_id}",
                  lambda: self.clients.ec2.terminate_instances(InstanceIds=[instance_id]),
                  MUTATING, wait=False)
        self.log.debug("Terminating instance %s", instance_id)

    def release_host(self, host_id: str) -> None:
        response = self.call(f"releasing dedicated host {host_id}",
                             lambda: self.clients.ec2.release_hosts(HostIds=[host_id]),
                             MUTATING, wait=False)
        for failure in response.get("Unsuccessful") or []:
            code = (failure.get("Error") or {}).get("Code", "")
            if "NotFound" in code or "released" in str(failure).lower():
                raise NotFound(f"dedicated host {host_id} is gone")
            raise translate(_FleetError({"ErrorCode": code,
                                         "ErrorMessage": (failure.get("Error") or {}).get(
                                             "Message")}),
                            f"releasing dedicated host {host_id}", self.provider.name)
        self.log.debug("Releasing dedicated host %s", host_id)

    def list_instances(self) -> list[Instance]:
        try:
            instances = list(self.instances.get()[0].values())
        except Exception as e:
            raise translate(e, "listing instances", self.provider.name) from e
        volumes = self._volumes_by_id() if self._counts_volumes() else {}
        result = []
        for instance in instances:
            if instance["State"]["Name"].lower() == "terminated":
                continue
            result.append(self._instance(instance, self._instance_quota(instance, volumes)))
        return result

    def _instance_quota(self, instance: dict[str, Any],
                        volumes: dict[str, dict[str, Any]]) -> QuotaInformation:
        itype = instance.get("InstanceType") or ""
        if (instance.get("Placement") or {}).get("HostId"):
            used = quota.host_quota(itype)
        else:
            try:
                used = quota.instance_type_quota(
                    self.instance_type(itype), instance.get("InstanceLifecycle") == "spot")
            except Exception as e:
                if itype not in self._unknown_types:
                    self.log.warning("Counting instances of type %s (such as %s) as one "
                                     "instance each: %s", itype, instance["InstanceId"], e)
                    self._unknown_types.add(itype)
                used = QuotaInformation(instances=1)
        for mapping in instance.get("BlockDeviceMappings") or []:
            volume = volumes.get((mapping.get("Ebs") or {}).get("VolumeId", ""))
            if volume is not None:
                used.add(quota.volume_quota(volume.get("VolumeType", ""), volume.get("Size"),
                                            volume.get("Iops")))
        return used

    # Leaks -----------------------------------------------------------------------

    def list_resources(self) -> list[Resource]:
        """Everything that may carry our tags: instances, dedicated hosts,
        volumes, AMIs, snapshots and uploaded objects (AMIs and
        snapshots imported without tags get them from their import task
        first)."""
        self.images.tag_imports()
        resources: list[Resource] = []
        # All hosts, not only while a label uses them: a host leaked under
        # an earlier configuration is found too.
        for host in self.paginate("listing dedicated hosts", self.clients.ec2,
                                  "describe_hosts", "Hosts"):
            if host.get("State", "").lower() not in HOST_GONE_STATES:
                resources.append(Resource("host", host["HostId"],
                                          launch_args.tag_dict(host.get("Tags"))))
        # The cloud as it is now (the leak sweep's rule): a listing
        # requested from now on, shared with launches waiting meanwhile.
        for instance in self.instances.get(requested_after=time.monotonic())[0].values():
            if instance["State"]["Name"].lower() != "terminated":
                tags = launch_args.tag_dict(instance.get("Tags"))
                resources.append(Resource("instance", instance["InstanceId"], tags,
                                          tags.get("Name")))
        for volume in self._volumes_by_id().values():
            if volume.get("State", "").lower() != "deleted":
                resources.append(Resource("volume", volume["VolumeId"],
                                          launch_args.tag_dict(volume.get("Tags"))))
        resources.extend(self.images.resources())
        return [r for r in resources if META_PROVIDER in r.metadata]

    def delete_resource(self, resource: Resource) -> None:
        rid = resource.id
        if resource.type == "instance":
            self.call(f"terminating leaked instance {rid}",
                      lambda: self.clients.ec2.terminate_instances(InstanceIds=[rid]), MUTATING)
        elif resource.type == "host":
            self.call(f"releasing leaked dedicated host {rid}",
                      lambda: self.clients.ec2.release_hosts(HostIds=[rid]), MUTATING)
        elif resource.type == "volume":
            self.call(f"deleting leaked volume {rid}",
                      lambda: self.clients.ec2.delete_volume(VolumeId=rid), MUTATING)
        else:
            self.images.delete_resource(resource)

    def _volumes_by_id(self) -> dict[str, dict[str, Any]]:
        volumes = self.paginate("listing volumes", self.clients.ec2, "describe_volumes",
                                "Volumes")
        return {v["VolumeId"]: v for v in volumes}

    def _counts_volumes(self) -> bool:
        return any(label.volume_type for pool in self.provider.pools.values()
                   for label in pool.labels.values())

    # Quota -----------------------------------------------------------------------

    def label_quota(self, label: Any, instance_type: str | None = None) -> QuotaInformation:
        """What a node of ``label`` uses; for a fleet label, of the
        instance type it got (unknown before launch: one instance)."""
        if label.dedicated_host:
            used = quota.host_quota(label.instance_type or "")
        else:
            itype = label.instance_type or instance_type
            if itype:
                used = quota.instance_type_quota(self.instance_type(itype), label.use_spot)
            else:
                used = QuotaInformation(instances=1)
        if label.volume_type:
            used.add(quota.volume_quota(label.volume_type, label.volume_size, label.iops))
        return used

    def get_quota_for_label(self, label: Any) -> QuotaInformation:
        return self.label_quota(label)

    def get_quota_limits(self) -> QuotaInformation:
        """The account's service quotas for the codes this provider's
        labels count against.  An account whose IAM policy refuses the
        Service Quotas API is limited by the pools' limits alone (one
        warning says so); AWS itself still refuses launches beyond its
        quotas, and those requests wait."""
        ec2_codes: set[str] = set()
        ebs_codes: set[str] = set()
        for pool in self.provider.pools.values():
            for label in pool.labels.values():
                if label.dedicated_host:
                    code = quota.host_quota_code(label.instance_type or "")
                    if code:
                        ec2_codes.add(code)
                else:
                    for itype in label.instance_types():
                        code = quota.instance_quota_code(itype, label.use_spot)
                        if code:
                            ec2_codes.add(code)
                if label.volume_type:
                    ebs_codes.update(quota.VOLUME_QUOTA_CODES.get(label.volume_type, {}).values())
        if not ec2_codes and not ebs_codes:
            return QuotaInformation()
        try:
            ec2 = self._service_quotas("ec2") if ec2_codes else {}
            ebs = self._service_quotas("ebs") if ebs_codes else {}
        except Exception as e:
            self._quota_refused(e)
            return QuotaInformation()
        if self._quotas_refused:
            self.log.info("AWS service quotas of %s are readable again", self.provider.name)
            self._quotas_refused = False
        return quota.limits(ec2_codes, ebs_codes, ec2, ebs, self.log)

    def _service_quotas(self, service: str) -> dict[str, float]:
        quotas = self.paginate(f"listing {service} service quotas", self.clients.quotas,
                               "list_service_quotas", "Quotas", ServiceCode=service)
        return {q["QuotaCode"]: q["Value"] for q in quotas}

    def _quota_refused(self, error: Exception) -> None:
        if self._quotas_refused:
            self.log.debug("AWS service quotas of %s still unreadable: %s",
                           self.provider.name, error)
            return
        self._quotas_refused = True
        cause = error.__cause__ or error
        if is_denied(cause):
            self.log.warning(
                "Provider %s may not read its AWS service quotas (%s): launching within the "
                "pools' limits only.  Allow servicequotas:ListServiceQuotas to its IAM "
                "policy to have nodepool keep within the account's vCPU and volume quotas.",
                self.provider.name, error_code(cause))
        else:
            self.log.warning(
                "Could not read the AWS service quotas of provider %s (%s); launching within "
                "the pools' limits until they can be read again", self.provider.name, error)

    def label_ready(self, label: Any) -> bool:
        cloud_image = label.cloud_image
        if cloud_image is None:
            return True
        try:
            if cloud_image.image_filters is not None:
                self.newest_image_id(cloud_image.image_filters)
            elif cloud_image.image_id:
                self.ami(cloud_image.image_id)
        except ImageNotAvailable as e:
            self.log.warning("Label %s cannot be launched yet: %s", label.name, e)
            return False
        return True

    # Fleets ----------------------------------------------------------------------

    def launch_template(self, label: Any) -> str:
        """The launch template of a fleet label, made (and the provider's
        templates no label uses any more deleted) on the first fleet
        launch."""
        with self._lock:
            if self._templates is None:
                self._templates = self._ensure_templates()
            return self._templates[label.name]

    def _ensure_templates(self) -> dict[str, str]:
        wanted: dict[str, tuple[str, dict[str, Any]]] = {
            label.name: launch_args.launch_template(label, self.provider.name)
            for label in self.provider.fleet_labels()}
        existing = {t["LaunchTemplateName"]: t for t in self.paginate(
            "listing launch templates", self.clients.ec2, "describe_launch_templates",
            "LaunchTemplates", Filters=[{"Name": "launch-template-name", "Values": [
                f"{launch_args.LAUNCH_TEMPLATE_PREFIX}-*"]}])}
        names = {name for name, _ in wanted.values()}
        for name, args in {n: a for n, a in wanted.values()}.items():
            if name in existing:
                continue
            try:
                self.call(f"creating launch template {name}",
                          functools.partial(self.clients.ec2.create_launch_template,
                                            LaunchTemplateName=name, **args), MUTATING)
                self.log.info("Created launch template %s", name)
            except Exception as e:
                if error_code(e.__cause__ or e) != \
                        "InvalidLaunchTemplateName.AlreadyExistsException":
                    raise
        for name, template in existing.items():
            tags = launch_args.tag_dict(template.get("Tags"))
            if name not in names and tags.get(META_PROVIDER) == self.provider.name:
                self.call(f"deleting unused launch template {name}",
                          functools.partial(self.clients.ec2.delete_launch_template,
                                            LaunchTemplateName=name), MUTATING)
                self.log.info("Deleted launch template %s, which no label uses", name)
        return {label: name for label, (name, _) in wanted.items()}

    # Images (the builder) --------------------------------------------------------

    def upload_image(self, *, image_name: str, filename: str, image_format: str,
                     metadata: dict[str, str], md5: str | None = None,
                     sha256: str | None = None, provider_image: Any = None,
                     timeout: float | None = None) -> str:
        return self.images.upload(image_name=image_name, filename=filename,
                                  image_format=image_format, metadata=metadata,
                                  provider_image=provider_image, timeout=timeout)

    def delete_image(self, external_id: str) -> None:
        self.images.delete_image(external_id)

    def list_images(self) -> list[CloudImage]:
        return self.images.list_images()


def _FleetError(error: dict[str, Any]) -> botocore.exceptions.ClientError:
    """An error EC2 reported inside a successful answer (create_fleet's
    ``Errors``, release_hosts' ``Unsuccessful``), as the ClientError it
    would have been, for translate()."""
    return botocore.exceptions.ClientError(
        {"Error": {"Code": error.get("ErrorCode") or "Unknown",
                   "Message": error.get("ErrorMessage") or ""}}, "EC2")
