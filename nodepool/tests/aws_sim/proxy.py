"""A small HTTP proxy in front of moto's server, adding what a test needs.

boto3 talks to the proxy exactly as to AWS (through ``AWS_ENDPOINT_URL``);
the proxy forwards every call to moto and records it, and on request:

* fails chosen calls with AWS's own error answers (throttling,
  ``InsufficientInstanceCapacity``, quota errors...);
* answers the Service Quotas API (moto's server answers 500 to
  ``ListServiceQuotas``), or refuses it as an IAM policy would;
* runs EC2 import tasks (``ImportSnapshot``, ``ImportImage`` and their
  listings; moto's server answers 500 to them) the way EC2 does: the
  object must be in S3, the task finishes on a later look, and what it
  makes (a snapshot; an AMI named ``import-ami-...``) carries no tags;
* keeps what ``RegisterImage`` was asked for, which moto ignores beyond
  the name (tags, block device mappings, architecture, ENA and IMDS
  support), and shows it in ``DescribeImages`` as EC2 would;
* terminates the next instances behind the driver's back, as a spot
  interruption or a failed boot would.

Nothing here is in the driver's path in production: only tests start it.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import threading
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

from nodepool.tests.aws_sim import ec2_xml

_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/")
_IMPORT_ACTIONS = ("ImportSnapshot", "ImportImage", "DescribeImportSnapshotTasks",
                   "DescribeImportImageTasks", "CancelImportTask")
GIB = 1024 ** 3


@dataclass
class Fault:
    service: str
    action: str
    code: str
    status: int
    message: str
    count: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _any(self) -> None:
        self.server.proxy.handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any


class AwsProxy:
    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url
        parsed = urllib.parse.urlsplit(moto_url)
        self._moto_host, self._moto_port = parsed.hostname or "127.0.0.1", parsed.port
        self._lock = threading.Lock()
        # (service, action, access key id, params) of every call.
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []
        self._faults: list[Fault] = []
        self.service_quotas: dict[str, dict[str, float]] | None = None
        self.deny_service_quotas = False
        self.emulate_imports = False
        self.import_tasks: dict[str, dict[str, Any]] = {}
        self.registered: dict[str, dict[str, Any]] = {}
        self._terminate_next = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="AwsProxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def moto(self, service: str, region: str = "us-west-2") -> Any:
        """A boto3 client talking to moto directly (not through the proxy)."""
        return boto3.client(service, region_name=region, endpoint_url=self.moto_url,
                            aws_access_key_id="proxy", aws_secret_access_key="proxy")

    # What tests set up ----------------------------------------------------------

    def fail(self, action: str, code: str, *, status: int = 400, count: int = 1,
             message: str = "refused by the test", service: str = "ec2") -> None:
        """Answer the next ``count`` calls of ``action`` with an AWS error."""
        with self._lock:
            self._faults.append(Fault(service, action, code, status, message, count))

    def terminate_next_instances(self, count: int = 1) -> None:
        with self._lock:
            self._terminate_next += count

    def actions(self, action: str | None = None, service: str = "ec2") -> list[dict[str, Any]]:
        """The parameters of every call of ``action`` (all calls of the
        service if None) in order."""
        with self._lock:
            return [p for s, a, _, p in self.calls
                    if s == service and (action is None or a == action)]

    def access_keys(self) -> set[str]:
        with self._lock:
            return {k for _, _, k, _ in self.calls}

    # Serving -----------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        body = self._read_body(req)
        match = _CREDENTIAL.search(req.headers.get("Authorization", ""))
        key_id, region, service = match.groups() if match else ("", "us-east-1", "s3")
        params: dict[str, Any] = {}
        target = req.headers.get("X-Amz-Target")
        if target:
            action = target.rsplit(".", 1)[-1]
            params = json.loads(body or b"{}")
        elif service == "ec2" and body:
            params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
            action = params.get("Action", "")
        else:
            action = f"{req.command} {urllib.parse.urlsplit(req.path).path}"
        with self._lock:
            self.calls.append((service, action, key_id, params))
            fault = next((f for f in self._faults if f.service == service
                          and f.action == action and f.count > 0), None)
            if fault is not None:
                fault.count -= 1
        if fault is not None:
            return self._error(req, service, fault.code, fault.message, fault.status)
        if service == "servicequotas" and action == "ListServiceQuotas":
            if self.deny_service_quotas:
                return self._error(req, service, "AccessDeniedException",
                                   "User is not authorized to perform "
                                   "servicequotas:ListServiceQuotas", 400)
            if self.service_quotas is not None:
                quotas = self.service_quotas.get(params.get("ServiceCode", ""), {})
                return self._send(req, 200, {"Content-Type": "application/x-amz-json-1.1"},
                                  json.dumps({"Quotas": [
                                      {"ServiceCode": params.get("ServiceCode"),
                                       "QuotaCode": code, "Value": value}
                                      for code, value in quotas.items()]}).encode())
        if service == "ec2" and self.emulate_imports and action in _IMPORT_ACTIONS:
            return self._import_action(req, action, params, region)
        status, headers, answer = self._forward(req, body)
        if service == "ec2" and status == 200:
            answer = self._after_ec2(action, params, answer, region)
        self._send(req, status, headers, answer)

    def _read_body(self, req: BaseHTTPRequestHandler) -> bytes:
        if "chunked" in req.headers.get("Transfer-Encoding", ""):
            chunks: list[bytes] = []
            while True:
                size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while req.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(req.rfile.read(size))
                req.rfile.readline()
        length = int(req.headers.get("Content-Length") or 0)
        return req.rfile.read(length) if length else b""

    def _forward(self, req: BaseHTTPRequestHandler, body: bytes
                 ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self._moto_host, self._moto_port, timeout=60)
        headers = {k: v for k, v in req.headers.items()
                   if k.lower() not in ("transfer-encoding", "content-length", "connection")}
        headers["Content-Length"] = str(len(body))
        try:
            conn.request(req.command, req.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders()
                   if k.lower() not in ("transfer-encoding", "content-length", "connection",
                                        "server", "date")}
            return response.status, out, data
        finally:
            conn.close()

    def _send(self, req: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
              body: bytes) -> None:
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    def _error(self, req: BaseHTTPRequestHandler, service: str, code: str, message: str,
               status: int) -> None:
        if service == "ec2":
            return self._send(req, status, {"Content-Type": "text/xml"},
                              ec2_xml.error(code, message))
        return self._send(req, status, {"Content-Type": "application/x-amz-json-1.1",
                                        "x-amzn-ErrorType": code},
                          json.dumps({"__type": code, "message": message}).encode())

    # EC2 additions ---------------------------------------------------------------------

    def _after_ec2(self, action: str, params: dict[str, Any], answer: bytes,
                   region: str) -> bytes:
        if action == "RegisterImage":
            image_id = _find(answer, "imageId")
            if image_id:
                self._registered(image_id, params, region)
        elif action == "DescribeImages" and self.registered:
            answer = self._patch_images(answer)
        elif action == "RunInstances":
            with self._lock:
                terminate, self._terminate_next = self._terminate_next > 0, max(
                    0, self._terminate_next - 1)
            if terminate:
                instance_id = _find(answer, "instanceId")
                self.moto("ec2", region).terminate_instances(InstanceIds=[instance_id])
        return answer

    def _registered(self, image_id: str, params: dict[str, Any], region: str) -> None:
        mappings = []
        for n in range(1, 10):
            prefix = f"BlockDeviceMapping.{n}."
            if prefix + "DeviceName" not in params:
                break
            ebs: dict[str, Any] = {}
            for key, convert in (("SnapshotId", str), ("VolumeSize", int),
                                 ("VolumeType", str), ("Iops", int), ("Throughput", int),
                                 ("DeleteOnTermination", lambda s: s == "true")):
                if prefix + "Ebs." + key in params:
                    ebs[key] = convert(params[prefix + "Ebs." + key])
            mappings.append({"DeviceName": params[prefix + "DeviceName"], "Ebs": ebs})
        tags = _tags(params)
        with self._lock:
            self.registered[image_id] = {
                "BlockDeviceMappings": mappings, "Tags": tags,
                "Architecture": params.get("Architecture", "x86_64"),
                "EnaSupport": params.get("EnaSupport") == "true",
                "ImdsSupport": params.get("ImdsSupport")}
        if tags:
            self.moto("ec2", region).create_tags(
                Resources=[image_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])

    def _patch_images(self, answer: bytes) -> bytes:
        root = ET.fromstring(answer)
        ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
        ET.register_namespace("", ns)
        q = (lambda name: f"{{{ns}}}{name}") if ns else (lambda name: name)
        images = root.find(q("imagesSet"))
        for item in images if images is not None else []:
            registered = self.registered.get(item.findtext(q("imageId")) or "")
            if registered is None:
                continue
            for name in ("blockDeviceMapping", "architecture", "enaSupport", "imdsSupport"):
                for old in item.findall(q(name)):
                    item.remove(old)
            xmlns = f' xmlns="{ns}"' if ns else ""
            item.append(ET.fromstring(
                f"<blockDeviceMapping{xmlns}>"
                f'{ec2_xml.block_device_mappings(registered["BlockDeviceMappings"])}'
                "</blockDeviceMapping>"))
            for name, value in (("architecture", registered["Architecture"]),
                                ("enaSupport", "true" if registered["EnaSupport"] else "false"),
                                ("imdsSupport", registered["ImdsSupport"])):
                if value:
                    ET.SubElement(item, q(name)).text = value
        return ET.tostring(root, xml_declaration=True, encoding="UTF-8")

    # Import tasks --------------------------------------------------------------------------

    def _import_action(self, req: BaseHTTPRequestHandler, action: str,
                       params: dict[str, Any], region: str) -> None:
        try:
            data = getattr(self, "_" + re.sub(r"(?<!^)([A-Z])", r"_\1", action).lower())(
                params, region)
        except _Ec2Error as e:
            return self._error(req, "ec2", e.code, str(e), 400)
        self._send(req, 200, {"Content-Type": "text/xml"}, ec2_xml.response(action, data))

    def _object_size(self, bucket: str, key: str, region: str) -> int:
        try:
            return int(self.moto("s3", region).head_object(Bucket=bucket, Key=key)
                       ["ContentLength"])
        except Exception as e:
            raise _Ec2Error("InvalidParameter", f"s3://{bucket}/{key} cannot be read: {e}"
                            ) from e

    def _import_snapshot(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        bucket = params["DiskContainer.UserBucket.S3Bucket"]
        key = params["DiskContainer.UserBucket.S3Key"]
        size = self._object_size(bucket, key, region)
        task: dict[str, Any] = {"ImportTaskId": f"import-snap-{uuid.uuid4().hex[:17]}",
                "SnapshotTaskDetail": {"DiskImageSize": float(size), "Status": "active",
                                       "Format": params.get("DiskContainer.Format", "RAW"),
                                       "UserBucket": {"S3Bucket": bucket, "S3Key": key}},
                "Tags": [{"Key": k, "Value": v} for k, v in _tags(params).items()]}
        with self._lock:
            self.import_tasks[task["ImportTaskId"]] = task
        return task

    def _import_image(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        bucket = params["DiskContainer.1.UserBucket.S3Bucket"]
        key = params["DiskContainer.1.UserBucket.S3Key"]
        size = self._object_size(bucket, key, region)
        task: dict[str, Any] = {
                "ImportTaskId": f"import-ami-{uuid.uuid4().hex[:17]}", "Status": "active",
                "Architecture": params.get("Architecture", "x86_64"),
                "SnapshotDetails": [{"DiskImageSize": float(size), "Status": "active",
                                     "UserBucket": {"S3Bucket": bucket, "S3Key": key}}],
                "Tags": [{"Key": k, "Value": v} for k, v in _tags(params).items()]}
        with self._lock:
            self.import_tasks[task["ImportTaskId"]] = task
        return task

    def _tasks(self, params: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        ids = [v for k, v in params.items() if k.startswith("ImportTaskId.")]
        with self._lock:
            tasks = [t for i, t in self.import_tasks.items() if i.startswith(prefix)
                     and (not ids or i in ids)]
        if ids and not tasks:
            raise _Ec2Error("InvalidConversionTaskId.Malformed", f"no import task {ids}")
        return tasks

    def _snapshot_for(self, task_id: str, size: float, region: str) -> str:
        ec2 = self.moto("ec2", region)
        volume = ec2.create_volume(Size=max(1, math.ceil(size / GIB)),
                                   AvailabilityZone=f"{region}a")
        snapshot = ec2.create_snapshot(
            VolumeId=volume["VolumeId"],
            Description=f"Created by AWS-VMImport service for {task_id}")
        ec2.delete_volume(VolumeId=volume["VolumeId"])
        return snapshot["SnapshotId"]

    def _describe_import_snapshot_tasks(self, params: dict[str, Any], region: str
                                        ) -> dict[str, Any]:
        tasks = self._tasks(params, "import-snap-")
        for task in tasks:
            detail = task["SnapshotTaskDetail"]
            if detail["Status"] == "active":
                detail["SnapshotId"] = self._snapshot_for(task["ImportTaskId"],
                                                          detail["DiskImageSize"], region)
                detail["Status"] = "completed"
        return {"ImportSnapshotTasks": tasks}

    def _describe_import_image_tasks(self, params: dict[str, Any], region: str
                                     ) -> dict[str, Any]:
        tasks = self._tasks(params, "import-ami-")
        for task in tasks:
            if task["Status"] != "active":
                continue
            detail = task["SnapshotDetails"][0]
            snapshot_id = self._snapshot_for(task["ImportTaskId"], detail["DiskImageSize"],
                                             region)
            image_id = self.moto("ec2", region).register_image(
                Name=task["ImportTaskId"])["ImageId"]
            with self._lock:
                self.registered[image_id] = {
                    "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                        "SnapshotId": snapshot_id, "VolumeSize": max(
                            1, math.ceil(detail["DiskImageSize"] / GIB)),
                        "VolumeType": "gp2", "DeleteOnTermination": True}}],
                    "Tags": {}, "Architecture": task["Architecture"], "EnaSupport": True,
                    "ImdsSupport": None}
            detail.update({"SnapshotId": snapshot_id, "Status": "completed",
                           "DeviceName": "/dev/sda1"})
            task.update({"Status": "completed", "ImageId": image_id})
        return {"ImportImageTasks": tasks}

    def _cancel_import_task(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        with self._lock:
            task = self.import_tasks.pop(params.get("ImportTaskId", ""), None)
        if task is None:
            raise _Ec2Error("InvalidConversionTaskId", "no such import task")
        return {"ImportTaskId": task["ImportTaskId"], "State": "deleted"}


class _Ec2Error(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _find(answer: bytes, tag: str) -> str | None:
    match = re.search(rf"<{tag}>([^<]+)</{tag}>".encode(), answer)
    return match.group(1).decode() if match else None


def _tags(params: dict[str, Any]) -> dict[str, str]:
    """The tags of a call's first TagSpecification."""
    tags = {}
    for n in range(1, 100):
        key = params.get(f"TagSpecification.1.Tag.{n}.Key")
        if key is None:
            break
        tags[key] = params.get(f"TagSpecification.1.Tag.{n}.Value", "")
    return tags
