"""Cinder v3, just enough for boot-from-volume bookkeeping and volume quota.

Volumes are created by Nova when a server boots from an image-backed volume
(see ``CloudState._attach_boot_volume``); here they can be listed, shown,
deleted, and counted in ``/limits`` and the quota set.
"""

from __future__ import annotations

from typing import Any

from nodepool.tests.openstack_sim.compute import error_body
from nodepool.tests.openstack_sim.httpd import Request, Response, Route, Service, json_response
from nodepool.tests.openstack_sim.state import (
    PROJECT_ID,
    USER_ID,
    ApiError,
    CloudState,
    Volume,
    iso,
)

MAX_MICROVERSION = "3.70"


def _version_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": MAX_MICROVERSION,
        "min_version": "3.0",
        "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/volume/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


def versions(state: CloudState, req: Request) -> Response:
    return json_response(300, {"versions": [_version_doc(req.base_url)]})


def version(state: CloudState, req: Request) -> Response:
    return json_response(200, {"versions": [_version_doc(req.base_url)]})


def render_volume(base: str, volume: Volume) -> dict[str, Any]:
    attachments = []
    if volume.server_id:
        attachments.append(
            {
                "id": volume.id,
                "attachment_id": volume.id,
                "volume_id": volume.id,
                "server_id": volume.server_id,
                "device": "/dev/vda",
                "host_name": None,
                "attached_at": iso(volume.created_at),
            }
        )
    doc: dict[str, Any] = {
        "id": volume.id,
        "name": volume.name,
        "size": volume.size,
        "status": volume.status,
        "bootable": "true" if volume.image_id else "false",
        "availability_zone": volume.availability_zone,
        "attachments": attachments,
        "created_at": iso(volume.created_at),
        "updated_at": iso(volume.created_at),
        "description": None,
        "volume_type": "__DEFAULT__",
        "snapshot_id": None,
        "source_volid": None,
        "metadata": {},
        "multiattach": False,
        "encrypted": False,
        "user_id": USER_ID,
        "os-vol-tenant-attr:tenant_id": PROJECT_ID,
        "links": [{"rel": "self", "href": f"{base}/volume/v3/{PROJECT_ID}/volumes/{volume.id}"}],
    }
    if volume.image_id:
        doc["volume_image_metadata"] = {"image_id": volume.image_id}
    return doc


def list_volumes(state: CloudState, req: Request, project_id: str, detail: str | None) -> Response:
    with state.lock:
        state.tick()
        volumes = list(state.volumes.values())
        docs = [render_volume(req.base_url, v) for v in volumes]
    for key in ("status", "name"):
        if req.arg(key) is not None:
            docs = [d for d in docs if d[key] == req.arg(key)]
    if not detail:
        docs = [{"id": d["id"], "name": d["name"], "links": d["links"]} for d in docs]
    return json_response(200, {"volumes": docs})


def show_volume(state: CloudState, req: Request, project_id: str, volume_id: str) -> Response:
    with state.lock:
        state.tick()
        volume = state.volumes.get(volume_id)
        if volume is None:
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        doc = render_volume(req.base_url, volume)
    return json_response(200, {"volume": doc})


def delete_volume(state: CloudState, req: Request, project_id: str, volume_id: str) -> Response:
    with state.lock:
        state.tick()
        volume = state.volumes.get(volume_id)
        if volume is None:
            raise ApiError(404, f"Volume {volume_id} could not be found.")
        if volume.status == "in-use":
            raise ApiError(
                400,
                "Invalid volume: Volume status must be available or error or error_restoring "
                "or error_extending or error_managing and must not be migrating, attached, "
                "belong to a group, have snapshots or be disassociated from snapshots after "
                "volume transfer.",
            )
        del state.volumes[volume_id]
    return Response(202)


def limits(state: CloudState, req: Request, project_id: str) -> Response:
    with state.lock:
        used = state.usage()
        quota = dict(state.quota)
    absolute = {
        "maxTotalVolumes": quota["volumes"],
        "maxTotalVolumeGigabytes": quota["gigabytes"],
        "totalVolumesUsed": used["volumes"],
        "totalGigabytesUsed": used["gigabytes"],
        "maxTotalSnapshots": 10,
        "totalSnapshotsUsed": 0,
        "maxTotalBackups": 10,
        "totalBackupsUsed": 0,
        "maxTotalBackupGigabytes": 1000,
        "totalBackupGigabytesUsed": 0,
    }
    return json_response(200, {"limits": {"rate": [], "absolute": absolute}})


def quota_set(state: CloudState, req: Request, project_id: str, target: str) -> Response:
    with state.lock:
        used = state.usage()
        quota = dict(state.quota)
    usage = (req.arg("usage") or "").lower() in ("true", "1")
    doc: dict[str, Any] = {"id": target}
    for key in ("volumes", "gigabytes"):
        doc[key] = (
            {"limit": quota[key], "in_use": used[key], "reserved": 0, "allocated": 0}
            if usage
            else quota[key]
        )
    return json_response(200, {"quota_set": doc})


_P = "/v3/(?P<project_id>[^/]+)"

SERVICE = Service(
    prefix="/volume",
    routes=[
        Route("GET", "", versions, auth=False),
        Route("GET", "/v3", version, auth=False),
        Route("GET", f"{_P}/limits", limits),
        Route("GET", f"{_P}/volumes(?P<detail>/detail)?", list_volumes),
        Route("GET", f"{_P}/volumes/(?P<volume_id>[^/]+)", show_volume),
        Route("DELETE", f"{_P}/volumes/(?P<volume_id>[^/]+)", delete_volume),
        Route("GET", f"{_P}/os-quota-sets/(?P<target>[^/]+)", quota_set),
    ],
    error_body=error_body,
)
