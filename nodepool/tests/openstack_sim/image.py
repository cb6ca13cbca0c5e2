"""Glance v2: images with properties, data upload, and glance-direct import.

Image data is hashed while it streams in and then thrown away: a builder
test may upload real diskimage-builder output, and only size and checksums
are ever read back.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import urlencode

from nodepool.tests.openstack_sim.httpd import Request, Response, Route, Service, json_response
from nodepool.tests.openstack_sim.state import (
    PROJECT_ID,
    ApiError,
    CloudState,
    Image,
    iso,
    new_id,
)

DISK_FORMATS = {"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
CONTAINER_FORMATS = {"ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"}
VISIBILITIES = {"public", "private", "shared", "community"}
# Attributes a client may set at create time (everything else is a property).
WRITABLE = {
    "id", "name", "visibility", "protected", "os_hidden", "disk_format",
    "container_format", "min_disk", "min_ram", "tags",
}  # fmt: skip
READ_ONLY = {
    "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
    "created_at", "updated_at", "owner", "self", "file", "schema", "locations", "direct_url",
}  # fmt: skip
IMPORT_METHODS = ["glance-direct", "web-download"]
DEFAULT_LIMIT = 25


def _versions(base: str) -> dict[str, Any]:
    docs = []
    for minor in range(16, 8, -1):
        docs.append(
            {
                "id": f"v2.{minor}",
                "status": "CURRENT" if minor == 16 else "SUPPORTED",
                "links": [{"rel": "self", "href": f"{base}/image/v2/"}],
            }
        )
    return {"versions": docs}


def versions(state: CloudState, req: Request) -> Response:
    return json_response(300, _versions(req.base_url))


def versions_ok(state: CloudState, req: Request) -> Response:
    return json_response(200, _versions(req.base_url))


def render_image(image: Image) -> dict[str, Any]:
    doc: dict[str, Any] = dict(image.properties)
    doc.update(
        {
            "id": image.id,
            "name": image.name,
            "status": image.status,
            "visibility": image.visibility,
            "protected": image.protected,
            "os_hidden": False,
            "checksum": image.checksum,
            "os_hash_algo": "sha512" if image.os_hash_value else None,
            "os_hash_value": image.os_hash_value,
            "size": image.size,
            "virtual_size": None,
            "min_disk": image.min_disk,
            "min_ram": image.min_ram,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "owner": PROJECT_ID,
            "tags": list(image.tags),
            "created_at": iso(image.created_at),
            "updated_at": iso(image.updated_at),
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return doc


def _matches(doc: dict[str, Any], key: str, value: str) -> bool:
    if key == "tag":
        return value in doc["tags"]
    if key in ("size_min", "size_max"):
        size = doc["size"]
        if size is None:
            return False
        return size >= int(value) if key == "size_min" else size <= int(value)
    if value.startswith("in:"):
        wanted = value[3:].split(",")
    else:
        wanted = [value]
    actual = doc.get(key)
    if isinstance(actual, bool):
        actual = str(actual).lower()
    return actual is not None and str(actual) in wanted


def list_images(state: CloudState, req: Request) -> Response:
    with state.lock:
        state.tick()
        images = list(state.images.values())
    docs = [render_image(i) for i in images]
    visibility = req.arg("visibility")
    if visibility is None:
        docs = [d for d in docs if d["visibility"] != "community"]
    ignored = {"limit", "marker", "sort", "sort_key", "sort_dir", "member_status"}
    for key, values in req.query.items():
        if key in ignored or (key == "visibility" and values[-1] == "all"):
            continue
        docs = [d for d in docs if all(_matches(d, key, v) for v in values)]
    reverse = req.arg("sort_dir", "desc") != "asc"
    sort_key = req.arg("sort_key", "created_at") or "created_at"
    by_id = {i.id: i for i in images}
    if sort_key == "created_at":
        docs.sort(key=lambda d: (by_id[d["id"]].created_at, d["id"]), reverse=reverse)
    else:
        docs.sort(key=lambda d: (str(d.get(sort_key)), d["id"]), reverse=reverse)

    marker = req.arg("marker")
    if marker:
        ids = [d["id"] for d in docs]
        if marker not in ids:
            raise ApiError(400, f"Invalid marker. Image {marker} could not be found.")
        docs = docs[ids.index(marker) + 1 :]
    limit = int(req.arg("limit") or DEFAULT_LIMIT)
    page = docs[:limit]
    body: dict[str, Any] = {
        "images": page,
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if len(page) == limit and len(docs) > limit:
        params = [(k, v) for k, vs in req.query.items() for v in vs if k not in ("marker",)]
        params = [p for p in params if p[0] != "limit"] + [
            ("limit", str(limit)),
            ("marker", page[-1]["id"]),
        ]
        body["next"] = "/v2/images?" + urlencode(params)
    return json_response(200, body)


def _get(state: CloudState, image_id: str) -> Image:
    state.tick()
    image = state.images.get(image_id)
    if image is None:
        raise ApiError(404, f"No image found with ID {image_id}")
    return image


def show_image(state: CloudState, req: Request, image_id: str) -> Response:
    with state.lock:
        doc = render_image(_get(state, image_id))
    return json_response(200, doc)


def _check_value(key: str, value: Any) -> None:
    if key == "disk_format" and value is not None and value not in DISK_FORMATS:
        raise ApiError(400, f"Invalid value '{value}' for disk_format.")
    if key == "container_format" and value is not None and value not in CONTAINER_FORMATS:
        raise ApiError(400, f"Invalid value '{value}' for container_format.")
    if key == "visibility" and value not in VISIBILITIES:
        raise ApiError(400, f"Invalid visibility value: {value}")
    if key in ("min_disk", "min_ram") and not isinstance(value, int):
        raise ApiError(400, f"{value!r} is not of type 'integer' for {key}")
    if key in ("protected", "os_hidden") and not isinstance(value, bool):
        raise ApiError(400, f"{value!r} is not of type 'boolean' for {key}")
    if key not in WRITABLE and not isinstance(value, str):
        # Glance's schema only allows string values for extra properties.
        raise ApiError(
            400,
            f"Provided object does not match schema 'image': {value!r} "
            f"is not of type 'string' (property {key})",
        )


def _apply(image: Image, key: str, value: Any) -> None:
    if key in READ_ONLY:
        raise ApiError(403, f"Attribute '{key}' is read-only.")
    _check_value(key, value)
    if key == "tags":
        image.tags = list(value)
    elif key in WRITABLE:
        if key != "os_hidden":
            setattr(image, key, value)
    else:
        image.properties[key] = value


def create_image(state: CloudState, req: Request) -> Response:
    body = req.json()
    if not isinstance(body, dict):
        raise ApiError(400, "Image create expects a JSON object.")
    image = Image(id=str(body.get("id") or ""), name=body.get("name") or "")
    for key, value in body.items():
        if key != "id":
            _apply(image, key, value)
    image.id = image.id or new_id()
    with state.lock:
        if image.id in state.images:
            raise ApiError(409, f"Image with identifier {image.id} already exists!")
        state.images[image.id] = image
        doc = render_image(image)
    headers = {
        "Location": f"{req.base_url}/image/v2/images/{image.id}",
        "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
    }
    return json_response(201, doc, headers)


def update_image(state: CloudState, req: Request, image_id: str) -> Response:
    """JSON-patch (``application/openstack-images-v2.1-json-patch``) update."""
    content_type = req.headers.get("Content-Type", "")
    if "json-patch" not in content_type:
        raise ApiError(415, f"Unsupported Content-Type {content_type}")
    ops = req.json()
    with state.lock:
        image = _get(state, image_id)
        for op in ops:
            key = str(op.get("path", "")).lstrip("/")
            if "/" in key:
                raise ApiError(400, f"Nested paths are not simulated: {op.get('path')}")
            if op.get("op") in ("add", "replace"):
                if op["op"] == "replace" and key not in image.properties and key not in WRITABLE:
                    raise ApiError(409, f"Property {key} does not exist.")
                _apply(image, key, op.get("value"))
            elif op.get("op") == "remove":
                if key in WRITABLE or key in READ_ONLY:
                    raise ApiError(403, f"Attribute '{key}' is reserved.")
                if image.properties.pop(key, None) is None:
                    raise ApiError(409, f"Property {key} does not exist.")
            else:
                raise ApiError(400, f"Unsupported patch operation {op.get('op')}")
        image.updated_at = time.time()
        doc = render_image(image)
    return json_response(200, doc)


def delete_image(state: CloudState, req: Request, image_id: str) -> Response:
    with state.lock:
        image = _get(state, image_id)
        if image.protected:
            raise ApiError(403, f"Image {image_id} is protected and cannot be deleted.")
        del state.images[image_id]
    return Response(204)


def _receive_data(
    state: CloudState, req: Request, image_id: str, from_status: str, during: str
) -> tuple[int, str, str]:
    with state.lock:
        image = _get(state, image_id)
        if image.status != from_status:
            raise ApiError(
                409, f"Image status transition from {image.status} to {during} is not allowed"
            )
        if not image.disk_format or not image.container_format:
            raise ApiError(
                400, "Properties disk_format, container_format must be set prior to saving data."
            )
        image.status = during
    md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
    try:
        for chunk in req.iter_body():
            md5.update(chunk)
            sha512.update(chunk)
            size += len(chunk)
    except Exception:
        with state.lock:
            image.status = from_status
        raise
    return size, md5.hexdigest(), sha512.hexdigest()


def _finish(state: CloudState, image_id: str, size: int, md5: str, sha512: str) -> None:
    with state.lock:
        image = state.images.get(image_id)
        if image is None:
            raise ApiError(410, f"Image {image_id} was deleted during the upload.")
        image.size, image.checksum, image.os_hash_value = size, md5, sha512
        image.updated_at = time.time()
        if state.image_upload_delay > 0:
            image.status = "saving"
            image.active_at = time.monotonic() + state.image_upload_delay
        else:
            image.status = "active"


def upload_image(state: CloudState, req: Request, image_id: str) -> Response:
    size, md5, sha512 = _receive_data(state, req, image_id, "queued", "saving")
    _finish(state, image_id, size, md5, sha512)
    return Response(204)


def stage_image(state: CloudState, req: Request, image_id: str) -> Response:
    size, md5, sha512 = _receive_data(state, req, image_id, "queued", "uploading")
    with state.lock:
        image = _get(state, image_id)
        image.size, image.checksum, image.os_hash_value = size, md5, sha512
    return Response(204)


def import_image(state: CloudState, req: Request, image_id: str) -> Response:
    method = (req.json().get("method") or {}).get("name")
    with state.lock:
        image = _get(state, image_id)
        if method != "glance-direct":
            raise ApiError(400, f"Import method {method} is not simulated.")
        if image.status != "uploading":
            raise ApiError(409, "Image needs to be staged before glance-direct import.")
    _finish(state, image_id, image.size or 0, image.checksum or "", image.os_hash_value or "")
    return Response(202)


def import_info(state: CloudState, req: Request) -> Response:
    return json_response(
        200,
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": IMPORT_METHODS,
            }
        },
    )


def stores_info(state: CloudState, req: Request) -> Response:
    raise ApiError(404, "Multi backend is not supported at this site.")


def error_body(status: int, message: str) -> Response:
    titles = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    title = f"{status} {titles.get(status, 'Error')}"
    html = (
        f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n"
        f"  {message}<br /><br />\n\n\n\n </body>\n</html>"
    )
    return Response(status, html.encode(), {"Content-Type": "text/html; charset=UTF-8"})


_ID = "/v2/images/(?P<image_id>[^/]+)"

SERVICE = Service(
    prefix="/image",
    routes=[
        Route("GET", "", versions, auth=False),
        Route("GET", "/versions", versions_ok, auth=False),
        Route("GET", "/v2", versions_ok, auth=False),
        Route("GET", "/v2/images", list_images),
        Route("POST", "/v2/images", create_image),
        Route("GET", _ID, show_image),
        Route("PATCH", _ID, update_image),
        Route("DELETE", _ID, delete_image),
        Route("PUT", f"{_ID}/file", upload_image),
        Route("PUT", f"{_ID}/stage", stage_image),
        Route("POST", f"{_ID}/import", import_image),
        Route("GET", "/v2/info/import", import_info),
        Route("GET", "/v2/info/stores", stores_info),
    ],
    error_body=error_body,
)
