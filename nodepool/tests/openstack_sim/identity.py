"""Keystone v3: version discovery and password authentication.

The token response carries the service catalog, which is how openstacksdk
finds every other service; all endpoints point back at this same server
under different path prefixes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from nodepool.tests.openstack_sim.httpd import Request, Response, Route, Service, json_response
from nodepool.tests.openstack_sim.state import (
    DOMAIN_ID,
    DOMAIN_NAME,
    PASSWORD,
    PROJECT_ID,
    PROJECT_NAME,
    USER_ID,
    USER_NAME,
    ApiError,
    CloudState,
    iso,
)


def _version(base: str) -> dict[str, object]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


def versions(state: CloudState, req: Request) -> Response:
    return json_response(300, {"versions": {"values": [_version(req.base_url)]}})


def version(state: CloudState, req: Request) -> Response:
    return json_response(200, {"version": _version(req.base_url)})


def catalog(base: str, regions: list[str]) -> list[dict[str, object]]:
    urls = {
        ("identity", "keystone"): f"{base}/identity",
        ("compute", "nova"): f"{base}/compute/v2.1",
        ("image", "glance"): f"{base}/image",
        ("network", "neutron"): f"{base}/network",
        ("block-storage", "cinder"): f"{base}/volume/v3/{PROJECT_ID}",
        ("volumev3", "cinderv3"): f"{base}/volume/v3/{PROJECT_ID}",
    }
    entries: list[dict[str, object]] = []
    for (service_type, name), url in urls.items():
        entries.append(
            {
                "id": uuid.uuid5(uuid.NAMESPACE_URL, service_type).hex,
                "type": service_type,
                "name": name,
                "endpoints": [
                    {
                        "id": uuid.uuid5(
                            uuid.NAMESPACE_URL, f"{service_type}/{region}/{iface}"
                        ).hex,
                        "interface": iface,
                        "region": region,
                        "region_id": region,
                        "url": url,
                    }
                    for region in regions
                    for iface in ("public", "internal", "admin")
                ],
            }
        )
    return entries


def _check_password_auth(body: Any) -> None:
    try:
        auth = body["auth"]
        user = auth["identity"]["password"]["user"]
    except (KeyError, TypeError) as e:
        raise ApiError(400, "Only password authentication is simulated.") from e
    name_ok = user.get("name") == USER_NAME or user.get("id") == USER_ID
    if not name_ok or user.get("password") != PASSWORD:
        raise ApiError(401, "The request you have made requires authentication.")
    project = (auth.get("scope") or {}).get("project") or {}
    if project and project.get("id") != PROJECT_ID and project.get("name") != PROJECT_NAME:
        raise ApiError(401, f"Project {project} is not known to the simulated cloud.")


def issue_token(state: CloudState, req: Request) -> Response:
    _check_password_auth(req.json())
    token = uuid.uuid4().hex
    with state.lock:
        state.tokens.add(token)
        regions = list(state.regions)
    now = time.time()
    domain = {"id": DOMAIN_ID, "name": DOMAIN_NAME}
    body = {
        "token": {
            "methods": ["password"],
            "user": {
                "id": USER_ID,
                "name": USER_NAME,
                "domain": domain,
                "password_expires_at": None,
            },
            "audit_ids": [uuid.uuid4().hex[:22]],
            "issued_at": iso(now),
            "expires_at": iso(now + 24 * 3600),
            "project": {"id": PROJECT_ID, "name": PROJECT_NAME, "domain": domain},
            "is_domain": False,
            "roles": [{"id": uuid.uuid5(uuid.NAMESPACE_URL, "member").hex, "name": "member"}],
            "catalog": catalog(req.base_url, regions),
        }
    }
    return json_response(201, body, {"X-Subject-Token": token})


def error_body(status: int, message: str) -> Response:
    titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return json_response(
        status,
        {"error": {"code": status, "message": message, "title": titles.get(status, "Error")}},
    )


SERVICE = Service(
    prefix="/identity",
    routes=[
        Route("GET", "", versions, auth=False),
        Route("GET", "/v3", version, auth=False),
        Route("POST", "/v3/auth/tokens", issue_token, auth=False),
    ],
    error_body=error_body,
)
