"""Diskimages into AMIs, the three ways upstream Nodepool imports them,
and the AMIs, snapshots and objects uploads leave behind.

``import-method``:

* ``snapshot`` (the default): the image file goes to the provider's S3
  bucket, EC2 imports it as an EBS snapshot, and an AMI is registered on
  the snapshot (with the diskimage's architecture, ENA and IMDS settings);
* ``image``: the file goes to S3 and EC2 imports it as an AMI directly
  (EC2 then decides the AMI's settings; it cannot require IMDSv2);
* ``ebs-direct``: the file is written straight into a new EBS snapshot
  with the EBS direct API (no bucket needed), then registered as above.

The S3 object is deleted once the import is over.  Everything made
carries the upload's tags (``nodepool_build_id``, ``nodepool_upload_id``,
...), so a leftover of a failed upload is found by leak cleanup.  EC2 does
not tag what an import task makes; the task's tags are copied onto it
(:meth:`ImageStore.tag_imports` does it again for imports whose builder
died before it could).

Runs on the builder's upload threads (and the cleanup worker's): waiting
here is fine.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import math
import os
import re
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from nodepool.driver.adapter import META_PROVIDER, CloudImage, Resource
from nodepool.driver.aws.errors import AwsError
from nodepool.driver.aws.launch_args import ROOT_DEVICE, tag_dict, tag_list
from nodepool.driver.aws.ratelimit import MUTATING, READ
from nodepool.exceptions import BuilderError, NotFound

if TYPE_CHECKING:
    from nodepool.driver.aws.adapter import AwsAdapter

GIB = 1024 ** 3
EBS_BLOCK = 512 * 1024
EBS_WORKERS = 8


class ImageStore:
    # Seconds between looks at an import task (EC2 imports take minutes).
    import_poll: ClassVar[float] = 30.0

    def __init__(self, adapter: AwsAdapter) -> None:
        self.adapter = adapter
        self.provider = adapter.provider
        self.log = adapter.log
        # Untagged AMIs and snapshots found not to be imports of ours.
        self._not_ours: set[str] = set()
        self._bucket_missing = False

    @property
    def ec2(self) -> Any:
        return self.adapter.clients.ec2

    def call(self, what: str, fn: Any, kind: str = READ) -> Any:
        return self.adapter.call(what, fn, kind)

    # Uploading -----------------------------------------------------------------

    def upload(self, *, image_name: str, filename: str, image_format: str,
               metadata: dict[str, str], provider_image: Any,
               timeout: float | None) -> str:
        method = provider_image.import_method
        if method == "image" and provider_image.imds_support == "v2.0":
            raise BuilderError(
                f"diskimage {provider_image.name} of provider {self.provider.name}: "
                "imds-support v2.0 needs import-method snapshot or ebs-direct (EC2's image "
                "import cannot set it)")
        retry_for = timeout if timeout is not None else self.provider.image_import_timeout
        self.log.info("Importing %s into %s (%s)", image_name, self.provider.name, method)
        if method == "ebs-direct":
            size_gib, snapshot_id = self._ebs_direct(image_name, filename, metadata, retry_for)
            return self._register(provider_image, image_name, metadata,
                                  provider_image.volume_size or size_gib, snapshot_id)
        bucket = self.provider.bucket_name
        if not bucket:
            raise BuilderError(f"provider {self.provider.name} imports {image_name} through "
                               "S3 (import-method snapshot or image) but has no "
                               "object-storage bucket-name; set one or use ebs-direct")
        key = f"{image_name}.{image_format}"
        self.call(f"uploading {key} to bucket {bucket}",
                  lambda: self.adapter.clients.s3.upload_file(
                      filename, bucket, key,
                      ExtraArgs={"Tagging": urllib.parse.urlencode(metadata)}), MUTATING)
        try:
            container = {"Format": image_format,
                         "UserBucket": {"S3Bucket": bucket, "S3Key": key}}
            if method == "image":
                return self._import_image(provider_image, image_name, container, metadata,
                                          retry_for)
            snapshot_id = self._import_snapshot(image_name, container, metadata, retry_for)
            size = provider_image.volume_size or self._snapshot_size(snapshot_id)
            return self._register(provider_image, image_name, metadata, size, snapshot_id)
        finally:
            self._delete_object(key, quiet=True)

    def _start_import(self, what: str, start: Any, retry_for: float | None) -> dict[str, Any]:
        """Start an import task; EC2 limits how many run at once
        (``ResourceCountLimitExceeded``): with ``image-import-timeout`` set,
        wait for a free slot until it passes, else fail at once."""
        deadline = time.monotonic() + (retry_for or 0)
        while True:
            try:
                return self.call(what, start, MUTATING)
            except AwsError as e:
                if e.code != "ResourceCountLimitExceeded" or time.monotonic() >= deadline:
                    raise
                self.log.warning("%s: %s; trying again", what, e)
                self._pause(self.import_poll)

    def _wait_task(self, what: str, describe: Any, status_of: Any) -> dict[str, Any]:
        while True:
            self._pause(self.import_poll)
            task = describe()
            status = status_of(task).lower()
            if status in ("completed", "deleted", "deleting"):
                if status != "completed":
                    raise BuilderError(f"{what} ended {status}: "
                                       f"{task.get('StatusMessage') or task}")
                return task

    def _pause(self, seconds: float) -> None:
        if self.adapter.stopped.wait(seconds):
            raise BuilderError(f"provider {self.provider.name} stopped during an image import")

    def _import_snapshot(self, image_name: str, container: dict[str, Any],
                         metadata: dict[str, str], retry_for: float | None) -> str:
        task = self._start_import(
            f"importing {image_name} as a snapshot",
            lambda: self.ec2.import_snapshot(DiskContainer=container, TagSpecifications=[
                {"ResourceType": "import-snapshot-task", "Tags": tag_list(metadata)}]),
            retry_for)
        task_id = task["ImportTaskId"]
        done = self._wait_task(
            f"snapshot import {task_id} of {image_name}",
            lambda: self.call(f"reading snapshot import {task_id}",
                              lambda: self.ec2.describe_import_snapshot_tasks(
                                  ImportTaskIds=[task_id]))["ImportSnapshotTasks"][0],
            lambda t: t["SnapshotTaskDetail"]["Status"])
        snapshot_id = done["SnapshotTaskDetail"]["SnapshotId"]
        self._tag(snapshot_id, metadata)
        return snapshot_id

    def _import_image(self, provider_image: Any, image_name: str, container: dict[str, Any],
                      metadata: dict[str, str], retry_for: float | None) -> str:
        task = self._start_import(
            f"importing {image_name} as an AMI",
            lambda: self.ec2.import_image(
                Architecture=provider_image.architecture, DiskContainers=[container],
                TagSpecifications=[{"ResourceType": "import-image-task",
                                    "Tags": tag_list(metadata)}]),
            retry_for)
        task_id = task["ImportTaskId"]
        done = self._wait_task(
            f"image import {task_id} of {image_name}",
            lambda: self.call(f"reading image import {task_id}",
                              lambda: self.ec2.describe_import_image_tasks(
                                  ImportTaskIds=[task_id]))["ImportImageTasks"][0],
            lambda t: t["Status"])
        image_id = done["ImageId"]
        self._tag(image_id, metadata)
        for detail in done.get("SnapshotDetails") or []:
            if detail.get("SnapshotId"):
                self._tag(detail["SnapshotId"], metadata)
        self.log.info("Imported %s as %s", image_name, image_id)
        return image_id

    def _tag(self, resource_id: str, metadata: dict[str, str]) -> None:
        try:
            self.call(f"tagging {resource_id}", lambda: self.ec2.create_tags(
                Resources=[resource_id], Tags=tag_list(metadata)), MUTATING)
        except Exception:
            # Leak cleanup copies the task's tags later (tag_imports).
            self.log.exception("Could not tag %s", resource_id)

    def _snapshot_size(self, snapshot_id: str) -> int:
        snapshots = self.call(f"reading snapshot {snapshot_id}",
                              lambda: self.ec2.describe_snapshots(SnapshotIds=[snapshot_id]))
        return int(snapshots["Snapshots"][0]["VolumeSize"])

    def _ebs_direct(self, image_name: str, filename: str, metadata: dict[str, str],
                    timeout: float | None) -> tuple[int, str]:
        """Write the file into a new snapshot; (size in GiB, snapshot id).
        Blocks that are all zeros are not sent: an EBS snapshot reads
        unwritten blocks as zeros."""
        ebs = self.adapter.clients.ebs
        size = os.path.getsize(filename)
        size_gib = max(1, math.ceil(size / GIB))
        deadline = None if not timeout else time.monotonic() + timeout
        snapshot_id = self.call(f"starting snapshot of {image_name}", lambda: ebs.start_snapshot(
            VolumeSize=size_gib, ClientToken=uuid.uuid4().hex, Tags=tag_list(metadata)),
            MUTATING)["SnapshotId"]
        try:
            written = self._write_blocks(ebs, snapshot_id, filename, deadline)
            while True:
                status = self.call(f"completing snapshot {snapshot_id}",
                                   lambda: ebs.complete_snapshot(
                                       SnapshotId=snapshot_id, ChangedBlocksCount=written),
                                   MUTATING)["Status"]
                if status == "completed":
                    break
                if status == "error":
                    raise BuilderError(f"snapshot {snapshot_id} of {image_name} failed")
                if deadline is not None and time.monotonic() > deadline:
                    raise BuilderError(f"snapshot {snapshot_id} of {image_name} not "
                                       f"complete within {timeout} s")
                self._pause(min(self.import_poll, 5.0))
        except BaseException:
            self._delete_snapshot(snapshot_id, quiet=True)
            raise
        self.log.info("Wrote %s into snapshot %s (%d blocks)", image_name, snapshot_id,
                      written)
        return size_gib, snapshot_id

    def _write_blocks(self, ebs: Any, snapshot_id: str, filename: str,
                      deadline: float | None) -> int:
        def put(index: int, data: bytes) -> None:
            data = data.ljust(EBS_BLOCK, b"\0")
            checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
            response = self.call(
                f"writing block {index} of snapshot {snapshot_id}",
                lambda: ebs.put_snapshot_block(
                    SnapshotId=snapshot_id, BlockIndex=index, BlockData=data,
                    DataLength=len(data), Checksum=checksum, ChecksumAlgorithm="SHA256"),
                MUTATING)
            if response.get("Checksum") != checksum:
                raise BuilderError(f"block {index} of snapshot {snapshot_id} was corrupted "
                                   "on the way")

        written = 0
        pending: set[concurrent.futures.Future] = set()
        with concurrent.futures.ThreadPoolExecutor(EBS_WORKERS) as pool, \
                open(filename, "rb") as image:
            index = 0
            while True:
                data = image.read(EBS_BLOCK)
                if not data:
                    break
                if data.count(0) != len(data):
                    pending.add(pool.submit(put, index, data))
                    written += 1
                index += 1
                if len(pending) >= EBS_WORKERS * 2:
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        future.result()
                    if deadline is not None and time.monotonic() > deadline:
                        raise BuilderError(f"writing snapshot {snapshot_id} took too long")
            for future in concurrent.futures.as_completed(pending):
                future.result()
        return written

    def _register(self, provider_image: Any, image_name: str, metadata: dict[str, str],
                  volume_size: int, snapshot_id: str) -> str:
        ebs: dict[str, Any] = {"DeleteOnTermination": True, "SnapshotId": snapshot_id,
                               "VolumeSize": volume_size,
                               "VolumeType": provider_image.volume_type}
        if provider_image.iops:
            ebs["Iops"] = provider_image.iops
        if provider_image.throughput:
            ebs["Throughput"] = provider_image.throughput
        args: dict[str, Any] = {
            "Architecture": provider_image.architecture,
            "BlockDeviceMappings": [{"DeviceName": ROOT_DEVICE, "Ebs": ebs}],
            "RootDeviceName": ROOT_DEVICE,
            "VirtualizationType": "hvm",
            "EnaSupport": provider_image.ena_support,
            "Name": image_name,
            "TagSpecifications": [{"ResourceType": "image", "Tags": tag_list(metadata)}],
        }
        if provider_image.imds_support == "v2.0":
            args["ImdsSupport"] = "v2.0"
        image_id = self.call(f"registering {image_name}",
                             lambda: self.ec2.register_image(**args), MUTATING)["ImageId"]
        self.log.info("Registered %s as %s on snapshot %s", image_name, image_id, snapshot_id)
        return image_id

    # Deleting and listing -----------------------------------------------------------

    def _amis(self) -> list[dict[str, Any]]:
        return self.adapter.paginate("listing AMIs", self.ec2, "describe_images", "Images",
                                     Owners=["self"])

    def _snapshots(self) -> list[dict[str, Any]]:
        return self.adapter.paginate("listing snapshots", self.ec2, "describe_snapshots",
                                     "Snapshots", OwnerIds=["self"])

    def delete_image(self, image_id: str) -> None:
        """Deregister the AMI and delete its snapshots; NotFound if the
        AMI is gone."""
        images = self.call(f"reading AMI {image_id}",
                           lambda: self.ec2.describe_images(ImageIds=[image_id]))["Images"]
        if not images or images[0].get("State") == "deregistered":
            raise NotFound(f"AMI {image_id} does not exist")
        snapshots = [m["Ebs"]["SnapshotId"] for m in images[0].get("BlockDeviceMappings") or []
                     if (m.get("Ebs") or {}).get("SnapshotId")]
        self.call(f"deregistering AMI {image_id}",
                  lambda: self.ec2.deregister_image(ImageId=image_id), MUTATING)
        self.log.info("Deregistered AMI %s", image_id)
        for snapshot_id in snapshots:
            self._delete_snapshot(snapshot_id, quiet=True)

    def _delete_snapshot(self, snapshot_id: str, quiet: bool = False) -> None:
        try:
            self.call(f"deleting snapshot {snapshot_id}",
                      lambda: self.ec2.delete_snapshot(SnapshotId=snapshot_id), MUTATING)
            self.log.info("Deleted snapshot %s", snapshot_id)
        except NotFound:
            if not quiet:
                raise
        except Exception:
            if not quiet:
                raise
            # Tagged: leak cleanup deletes it later.
            self.log.exception("Could not delete snapshot %s", snapshot_id)

    def _delete_object(self, key: str, quiet: bool = False) -> None:
        bucket = self.provider.bucket_name
        try:
            self.call(f"deleting object {key} from bucket {bucket}",
                      lambda: self.adapter.clients.s3.delete_object(Bucket=bucket, Key=key),
                      MUTATING)
        except Exception:
            if not quiet:
                raise
            self.log.exception("Could not delete object %s from bucket %s", key, bucket)

    def list_images(self) -> list[CloudImage]:
        return [CloudImage(i["ImageId"], i.get("Name") or "", tag_dict(i.get("Tags")))
                for i in self._amis()]

    def resources(self) -> list[Resource]:
        """AMIs, snapshots and uploaded objects (with their tags)."""
        out = [Resource("ami", i["ImageId"], tag_dict(i.get("Tags")), i.get("Name"))
               for i in self._amis() if i.get("State") != "deregistered"]
        out += [Resource("snapshot", s["SnapshotId"], tag_dict(s.get("Tags")))
                for s in self._snapshots() if s.get("State") != "deleted"]
        bucket = self.provider.bucket_name
        if bucket:
            s3 = self.adapter.clients.s3
            try:
                objects = self.adapter.paginate(f"listing bucket {bucket}", s3,
                                                "list_objects_v2", "Contents", Bucket=bucket)
            except NotFound:
                if not self._bucket_missing:
                    self.log.warning("The object-storage bucket %s of provider %s does not "
                                     "exist: create it, or imports through S3 will fail",
                                     bucket, self.provider.name)
                self._bucket_missing = True
                objects = []
            for obj in objects:
                key = obj["Key"]
                try:
                    tags = self.call(f"reading the tags of {key}",
                                     lambda k=key: s3.get_object_tagging(
                                         Bucket=bucket, Key=k))["TagSet"]
                except Exception:
                    continue
                out.append(Resource("object", key, tag_dict(tags), key))
        return out

    def delete_resource(self, resource: Resource) -> None:
        if resource.type == "ami":
            try:
                self.delete_image(resource.id)
            except NotFound:
                pass
        elif resource.type == "snapshot":
            self._delete_snapshot(resource.id)
        elif resource.type == "object":
            self._delete_object(resource.id)
        else:
            raise ValueError(f"not an image resource: {resource.type}")

    # Tags of imports -----------------------------------------------------------------

    def tag_imports(self) -> None:
        """Copy the tags of our import tasks onto the untagged AMIs and
        snapshots they made (an upload interrupted before it tagged them
        would leak them untagged otherwise).  EC2's import task listings
        may be unavailable; then this waits for the next pass."""
        try:
            self._tag_imports()
        except Exception as e:
            self.log.warning("Could not copy import task tags in %s (trying again next "
                             "pass): %s", self.provider.name, e)

    def _tag_imports(self) -> None:
        untagged_amis = [i for i in self._amis() if not i.get("Tags")
                         and i["ImageId"] not in self._not_ours]
        untagged_snaps = [s for s in self._snapshots() if not s.get("Tags")
                          and s["SnapshotId"] not in self._not_ours]
        if not untagged_amis and not untagged_snaps:
            return
        by_task: dict[str, dict[str, str]] = {}
        by_snapshot: dict[str, dict[str, str]] = {}
        for task in self.adapter.paginate("listing snapshot imports", self.ec2,
                                          "describe_import_snapshot_tasks",
                                          "ImportSnapshotTasks"):
            snapshot_id = (task.get("SnapshotTaskDetail") or {}).get("SnapshotId")
            if snapshot_id:
                by_snapshot[snapshot_id] = tag_dict(task.get("Tags"))
        for task in self.adapter.paginate("listing image imports", self.ec2,
                                          "describe_import_image_tasks", "ImportImageTasks"):
            task_tags = tag_dict(task.get("Tags"))
            by_task[task["ImportTaskId"]] = task_tags
            for detail in task.get("SnapshotDetails") or []:
                if detail.get("SnapshotId"):
                    by_snapshot[detail["SnapshotId"]] = task_tags
        tags: dict[str, str] | None
        for ami in untagged_amis:
            tags = by_task.get(ami.get("Name") or "")
            if tags is None:
                mappings = ami.get("BlockDeviceMappings") or [{}]
                tags = by_snapshot.get((mappings[0].get("Ebs") or {}).get("SnapshotId", ""))
            self._adopt(ami["ImageId"], tags)
        for snap in untagged_snaps:
            tags = by_snapshot.get(snap["SnapshotId"])
            if tags is None:
                match = re.search(r"(import-ami-\w+)", snap.get("Description") or "")
                tags = by_task.get(match.group(1)) if match else None
            self._adopt(snap["SnapshotId"], tags)

    def _adopt(self, resource_id: str, tags: dict[str, str] | None) -> None:
        if not tags or tags.get(META_PROVIDER) != self.provider.name:
            self._not_ours.add(resource_id)
            return
        self.log.info("Copying the tags of its import task onto %s", resource_id)
        self._tag(resource_id, tags)
