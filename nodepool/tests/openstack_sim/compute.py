"""Nova (compute v2.1 with microversions up to :data:`MAX_MICROVERSION`).

Only the calls a launcher makes are simulated: servers, flavors, limits,
quota sets, availability zones, keypairs, server metadata and console
output.  Response shapes follow the requested microversion where it matters
to openstacksdk (embedded flavor from 2.47, required ``networks`` from 2.37).
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from nodepool.tests.openstack_sim.httpd import Request, Response, Route, Service, json_response
from nodepool.tests.openstack_sim.state import (
    PROJECT_ID,
    USER_ID,
    ApiError,
    CloudState,
    Flavor,
    Server,
    iso,
)

MIN_MICROVERSION = (2, 1)
MAX_MICROVERSION = (2, 79)
Version = tuple[int, int]


def _fmt(v: Version) -> str:
    return f"{v[0]}.{v[1]}"


def microversion(req: Request) -> Version:
    """The microversion the client asked for (Nova defaults to 2.1)."""
    raw = None
    header = req.headers.get("OpenStack-API-Version")
    if header:
        parts = header.split()
        if len(parts) == 2 and parts[0].lower() == "compute":
            raw = parts[1]
    raw = raw or req.headers.get("X-OpenStack-Nova-API-Version")
    if not raw:
        return MIN_MICROVERSION
    if raw == "latest":
        return MAX_MICROVERSION
    try:
        major, minor = (int(x) for x in raw.split("."))
    except ValueError as e:
        raise ApiError(400, f"Invalid API version request string {raw}") from e
    if not MIN_MICROVERSION <= (major, minor) <= MAX_MICROVERSION:
        raise ApiError(
            406,
            f"Version {raw} is not supported by the API. Minimum is "
            f"{_fmt(MIN_MICROVERSION)} and maximum is {_fmt(MAX_MICROVERSION)}.",
        )
    return (major, minor)


def _reply(req: Request, status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    mv = _fmt(microversion(req))
    hdrs = {
        "OpenStack-API-Version": f"compute {mv}",
        "X-OpenStack-Nova-API-Version": mv,
        "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
    }
    hdrs.update(headers or {})
    if obj is None:
        return Response(status, b"", hdrs)
    return json_response(status, obj, hdrs)


# -- discovery ----------------------------------------------------------------


def _version_doc(base: str, *, v2_1: bool) -> dict[str, Any]:
    return {
        "id": "v2.1" if v2_1 else "v2.0",
        "status": "CURRENT" if v2_1 else "SUPPORTED",
        "version": _fmt(MAX_MICROVERSION) if v2_1 else "",
        "min_version": _fmt(MIN_MICROVERSION) if v2_1 else "",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base}/compute/{'v2.1' if v2_1 else 'v2'}/"}],
        "media-types": [
            {
                "base": "application/json",
                "type": "application/vnd.openstack.compute+json;version=2.1",
            }
        ],
    }


def versions(state: CloudState, req: Request) -> Response:
    docs = [_version_doc(req.base_url, v2_1=False), _version_doc(req.base_url, v2_1=True)]
    return json_response(200, {"versions": docs})


def version(state: CloudState, req: Request) -> Response:
    return json_response(200, {"version": _version_doc(req.base_url, v2_1=True)})


# -- rendering ----------------------------------------------------------------


def _links(base: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [
        {"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{ident}"},
        {"rel": "bookmark", "href": f"{base}/compute/{kind}/{ident}"},
    ]


def _flavor_doc(base: str, flavor: Flavor, mv: Version, *, detail: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": flavor.id,
        "name": flavor.name,
        "links": _links(base, "flavors", flavor.id),
    }
    if mv >= (2, 55):
        doc["description"] = None
    if detail:
        doc.update(
            {
                "ram": flavor.ram,
                "vcpus": flavor.vcpus,
                "disk": flavor.disk,
                "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral,
                "swap": flavor.swap or "",
                "rxtx_factor": 1.0,
                "os-flavor-access:is_public": flavor.is_public,
                "OS-FLV-DISABLED:disabled": False,
            }
        )
        if mv >= (2, 61):
            doc["extra_specs"] = dict(flavor.extra_specs)
    return doc


def _addresses(state: CloudState, server: Server) -> dict[str, list[dict[str, Any]]]:
    addresses: dict[str, list[dict[str, Any]]] = {}
    for port in state.server_ports(server.id):
        net = state.networks.get(port.network_id)
        entries = addresses.setdefault(net.name if net else port.network_id, [])
        for ip in port.fixed_ips:
            entries.append(
                {
                    "version": 4,
                    "addr": ip["ip_address"],
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port.mac_address,
                }
            )
        for fip in state.floating_ips.values():
            if fip.port_id == port.id:
                entries.append(
                    {
                        "version": 4,
                        "addr": fip.floating_ip_address,
                        "OS-EXT-IPS:type": "floating",
                        "OS-EXT-IPS-MAC:mac_addr": port.mac_address,
                    }
                )
    return addresses


VM_STATES = {"BUILD": "building", "ACTIVE": "active", "ERROR": "error"}


def render_server(
    state: CloudState, base: str, server: Server, mv: Version, *, show: bool = True
) -> dict[str, Any]:
    """A server as ``GET /servers/{id}`` or ``/servers/detail`` shows it."""
    if mv >= (2, 47):
        flavor: dict[str, Any] = {
            "original_name": server.flavor.name,
            "vcpus": server.flavor.vcpus,
            "ram": server.flavor.ram,
            "disk": server.flavor.disk,
            "ephemeral": server.flavor.ephemeral,
            "swap": server.flavor.swap,
            "extra_specs": dict(server.flavor.extra_specs),
        }
    else:
        flavor = {"id": server.flavor.id, "links": _links(base, "flavors", server.flavor.id)[1:]}
    image: Any = ""
    if server.image_id:
        image = {"id": server.image_id, "links": _links(base, "images", server.image_id)[1:]}
    volumes = []
    for volume_id, delete_on_termination in server.volumes:
        entry: dict[str, Any] = {"id": volume_id}
        if mv >= (2, 3):
            entry["delete_on_termination"] = delete_on_termination
        volumes.append(entry)
    doc: dict[str, Any] = {
        "id": server.id,
        "name": server.name,
        "status": server.status,
        "tenant_id": PROJECT_ID,
        "user_id": USER_ID,
        "metadata": dict(server.metadata),
        "hostId": server.host_id,
        "image": image,
        "flavor": flavor,
        "created": iso(server.created),
        "updated": iso(server.updated),
        "addresses": _addresses(state, server),
        "accessIPv4": "",
        "accessIPv6": "",
        "links": _links(base, "servers", server.id),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": server.availability_zone,
        "config_drive": "True" if server.config_drive else "",
        "key_name": server.key_name,
        "OS-SRV-USG:launched_at": iso(server.updated) if server.status == "ACTIVE" else None,
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": server.task_state,
        "OS-EXT-STS:vm_state": VM_STATES.get(server.status, server.status.lower()),
        "OS-EXT-STS:power_state": 1 if server.status == "ACTIVE" else 0,
        "os-extended-volumes:volumes_attached": volumes,
    }
    if server.status in ("BUILD", "ACTIVE"):
        doc["progress"] = 0
    if server.security_groups and doc["addresses"]:
        doc["security_groups"] = [{"name": n} for n in server.security_groups]
    if server.fault:
        doc["fault"] = dict(server.fault)
    if mv >= (2, 9):
        doc["locked"] = False
    if mv >= (2, 19):
        doc["description"] = None
    if mv >= (2, 26):
        doc["tags"] = []
    if mv >= (2, 63):
        doc["trusted_image_certificates"] = None
    if mv >= (2, 71) and show:
        doc["server_groups"] = []
    if mv >= (2, 73):
        doc["locked_reason"] = None
    return doc


# -- servers ------------------------------------------------------------------


def _matches_filters(state: CloudState, server: Server, req: Request) -> bool:
    for key, values in req.query.items():
        if key == "name":

            def search(pattern: str) -> bool:
                try:
                    return re.search(pattern, server.name) is not None
                except re.error:
                    return pattern in server.name

            ok = any(search(v) for v in values)
        elif key == "status":
            ok = server.status in {v.upper() for v in values}
        elif key == "image":
            ok = server.image_id in values
        elif key == "flavor":
            ok = server.flavor.id in values
        elif key == "availability_zone":
            ok = server.availability_zone in values
        elif key == "key_name":
            ok = server.key_name in values
        elif key == "uuid":
            ok = server.id in values
        elif key == "ip":
            ips = [ip["ip_address"] for p in state.server_ports(server.id) for ip in p.fixed_ips]
            ok = any(re.search(v, ip) for v in values for ip in ips)
        elif key == "deleted":
            # Deleted servers are forgotten at once; none can match.
            ok = values[-1].lower() not in ("true", "1", "yes")
        else:
            # Paging, sorting, all_tenants and filters Nova ignores for
            # non-admins do not narrow the result here.
            continue
        if not ok:
            return False
    return True


def _paginate(
    items: list[Any], req: Request, key: str, next_url: str
) -> tuple[list[Any], list[dict[str, str]]]:
    marker = req.arg("marker")
    if marker:
        ids = [i.id for i in items]
        if marker not in ids:
            raise ApiError(400, f"marker [{marker}] not found")
        items = items[ids.index(marker) + 1 :]
    limit_arg = req.arg("limit")
    if not limit_arg:
        return items, []
    limit = int(limit_arg)
    page = items[:limit]
    links = []
    if len(page) == limit and len(items) > limit:
        links = [{"rel": "next", "href": f"{next_url}?limit={limit}&marker={page[-1].id}"}]
    return page, links


def list_servers(state: CloudState, req: Request, detail: bool = False) -> Response:
    mv = microversion(req)
    with state.lock:
        state.tick()
        servers = [s for s in state.servers.values() if _matches_filters(state, s, req)]
        reverse = req.arg("sort_dir", "desc") != "asc"
        if req.arg("sort_key") in ("display_name", "name"):
            servers.sort(key=lambda s: s.name, reverse=reverse)
        else:
            servers.sort(key=lambda s: s.created, reverse=reverse)
        suffix = "/detail" if detail else ""
        page, links = _paginate(
            servers, req, "servers", f"{req.base_url}/compute/v2.1/servers{suffix}"
        )
        if detail:
            docs = [render_server(state, req.base_url, s, mv, show=False) for s in page]
        else:
            docs = [
                {"id": s.id, "name": s.name, "links": _links(req.base_url, "servers", s.id)}
                for s in page
            ]
    body: dict[str, Any] = {"servers": docs}
    if links:
        body["servers_links"] = links
    return _reply(req, 200, body)


def list_servers_detail(state: CloudState, req: Request) -> Response:
    return list_servers(state, req, detail=True)


def show_server(state: CloudState, req: Request, server_id: str) -> Response:
    mv = microversion(req)
    with state.lock:
        state.tick()
        server = state.servers.get(server_id)
        if server is None:
            raise ApiError(404, f"Instance {server_id} could not be found.")
        doc = render_server(state, req.base_url, server, mv)
    return _reply(req, 200, {"server": doc})


def _ref(value: Any) -> str:
    """flavorRef / imageRef may be an id or a URL ending in one."""
    return str(value).rstrip("/").rsplit("/", 1)[-1]


def _validate_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise ApiError(400, "Invalid input for field/attribute metadata: not an object.")
    if len(metadata) > 128:
        raise ApiError(403, "Quota exceeded for metadata_items: Requested more than 128 items.")
    for key, value in metadata.items():
        if not isinstance(value, str) or not 1 <= len(key) <= 255 or len(value) > 255:
            raise ApiError(
                400,
                f"Invalid input for field/attribute metadata. Value: {{{key!r}: {value!r}}}. "
                "Metadata keys must be 1-255 characters and values strings of at most 255.",
            )
    return dict(metadata)


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("true", "1", "yes", "on")
    return bool(value)


def create_server(state: CloudState, req: Request) -> Response:
    mv = microversion(req)
    body = req.json()
    spec = body.get("server")
    if not isinstance(spec, dict):
        raise ApiError(400, "Invalid input: 'server' is a required property")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise ApiError(400, "Invalid input for field/attribute name.")
    if "flavorRef" not in spec:
        raise ApiError(400, "Invalid input: 'flavorRef' is a required property")

    bdms = spec.get("block_device_mapping_v2") or []
    boots_from_volume = any(
        str(b.get("boot_index")) == "0" and b.get("destination_type") == "volume" for b in bdms
    )
    networks = spec.get("networks")
    if networks is None and mv >= (2, 37):
        raise ApiError(400, "Invalid input for field/attribute server: 'networks' is required.")

    with state.lock:
        try:
            flavor = state.flavors[_ref(spec["flavorRef"])]
        except KeyError:
            raise ApiError(400, f"Flavor {spec['flavorRef']} could not be found.") from None
        image_id = _ref(spec.get("imageRef") or "")
        if image_id:
            image = state.images.get(image_id)
            if image is None:
                raise ApiError(400, f"Image {image_id} could not be found.")
            if image.status != "active":
                raise ApiError(400, f"Image {image_id} is not active.")
        elif not boots_from_volume:
            raise ApiError(400, "Block Device Mapping is Invalid: imageRef is required.")
        for bdm in bdms:
            if bdm.get("source_type") == "image" and bdm.get("uuid") not in state.images:
                raise ApiError(400, f"Image {bdm.get('uuid')} could not be found.")
        if boots_from_volume:
            # Nova reports the server with no image when it boots from a volume.
            image_id = ""

        if networks in (None, "auto"):
            nets = None
        elif networks == "none":
            nets = []
        elif isinstance(networks, list):
            nets = networks
        else:
            raise ApiError(400, f"Invalid input for field/attribute networks: {networks!r}")

        server = state.create_server(
            name=name,
            flavor=flavor,
            image_id=image_id,
            networks=nets,
            metadata=_validate_metadata(spec.get("metadata") or {}),
            key_name=spec.get("key_name"),
            availability_zone=spec.get("availability_zone") or None,
            security_groups=[g.get("name", "") for g in spec.get("security_groups") or []],
            user_data=spec.get("user_data"),
            config_drive=_bool(spec.get("config_drive", False)),
            block_device_mapping=bdms,
        )
        doc = {
            "id": server.id,
            "links": _links(req.base_url, "servers", server.id),
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": n} for n in server.security_groups or ["default"]],
            "adminPass": secrets.token_urlsafe(9),
        }
    location = f"{req.base_url}/compute/v2.1/servers/{server.id}"
    return _reply(req, 202, {"server": doc}, {"Location": location})


def delete_server(state: CloudState, req: Request, server_id: str) -> Response:
    with state.lock:
        state.tick()
        server = state.servers.get(server_id)
        if server is None:
            raise ApiError(404, f"Instance {server_id} could not be found.")
        state.delete_server(server)
    return _reply(req, 204, None)


def server_action(state: CloudState, req: Request, server_id: str) -> Response:
    body = req.json()
    with state.lock:
        state.tick()
        server = state.servers.get(server_id)
        if server is None:
            raise ApiError(404, f"Instance {server_id} could not be found.")
        if "os-getConsoleOutput" in body:
            if server.status != "ACTIVE":
                raise ApiError(
                    409,
                    f"Cannot 'get_console_output' instance {server_id} while it is in "
                    f"vm_state {VM_STATES.get(server.status, server.status.lower())}",
                )
            text = server.console_log
            if text is None:
                text = f"Simulated console of {server.name}\n{server.name} login: \n"
            length = (body["os-getConsoleOutput"] or {}).get("length")
            if length is not None and int(length) >= 0:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(length) :]) if int(length) else ""
            return _reply(req, 200, {"output": text})
    raise ApiError(400, f"The simulated cloud does not implement the actions {list(body)}.")


def _server_or_404(state: CloudState, server_id: str) -> Server:
    state.tick()
    server = state.servers.get(server_id)
    if server is None:
        raise ApiError(404, f"Instance {server_id} could not be found.")
    return server


def show_metadata(state: CloudState, req: Request, server_id: str) -> Response:
    with state.lock:
        metadata = dict(_server_or_404(state, server_id).metadata)
    return _reply(req, 200, {"metadata": metadata})


def update_metadata(state: CloudState, req: Request, server_id: str) -> Response:
    """POST merges keys into the metadata; PUT replaces it."""
    new = _validate_metadata(req.json().get("metadata"))
    with state.lock:
        server = _server_or_404(state, server_id)
        merged = new if req.method == "PUT" else {**server.metadata, **new}
        server.metadata = _validate_metadata(merged)
        metadata = dict(server.metadata)
    return _reply(req, 200, {"metadata": metadata})


def delete_metadata_item(state: CloudState, req: Request, server_id: str, key: str) -> Response:
    with state.lock:
        server = _server_or_404(state, server_id)
        if server.metadata.pop(key, None) is None:
            raise ApiError(404, f"Metadata item was not found: {key}")
    return _reply(req, 204, None)


# -- flavors, limits, quotas, zones, keypairs ----------------------------------


def list_flavors(state: CloudState, req: Request, detail: bool = False) -> Response:
    mv = microversion(req)
    with state.lock:
        flavors = list(state.flavors.values())
    if req.arg("minRam"):
        flavors = [f for f in flavors if f.ram >= int(req.arg("minRam") or 0)]
    if req.arg("minDisk"):
        flavors = [f for f in flavors if f.disk >= int(req.arg("minDisk") or 0)]
    page, links = _paginate(flavors, req, "flavors", f"{req.base_url}/compute/v2.1/flavors")
    body: dict[str, Any] = {
        "flavors": [_flavor_doc(req.base_url, f, mv, detail=detail) for f in page]
    }
    if links:
        body["flavors_links"] = links
    return _reply(req, 200, body)


def list_flavors_detail(state: CloudState, req: Request) -> Response:
    return list_flavors(state, req, detail=True)


def show_flavor(state: CloudState, req: Request, flavor_id: str) -> Response:
    with state.lock:
        flavor = state.flavors.get(flavor_id)
    if flavor is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return _reply(req, 200, {"flavor": _flavor_doc(req.base_url, flavor, microversion(req))})


def flavor_extra_specs(state: CloudState, req: Request, flavor_id: str) -> Response:
    with state.lock:
        flavor = state.flavors.get(flavor_id)
    if flavor is None:
        raise ApiError(404, f"Flavor {flavor_id} could not be found.")
    return _reply(req, 200, {"extra_specs": dict(flavor.extra_specs)})


def limits(state: CloudState, req: Request) -> Response:
    mv = microversion(req)
    with state.lock:
        used = state.usage()
        quota = dict(state.quota)
    absolute: dict[str, int] = {
        "maxTotalInstances": quota["instances"],
        "maxTotalCores": quota["cores"],
        "maxTotalRAMSize": quota["ram"],
        "totalInstancesUsed": used["instances"],
        "totalCoresUsed": used["cores"],
        "totalRAMUsed": used["ram"],
        "maxServerMeta": 128,
        "maxImageMeta": 128,
        "maxTotalKeypairs": 100,
        "maxServerGroups": 10,
        "maxServerGroupMembers": 10,
        "totalServerGroupsUsed": 0,
    }
    if mv < (2, 57):
        absolute.update({"maxPersonality": 5, "maxPersonalitySize": 10240})
    if mv < (2, 36):
        absolute.update(
            {
                "maxSecurityGroups": 10,
                "maxSecurityGroupRules": 20,
                "maxTotalFloatingIps": 10,
                "totalSecurityGroupsUsed": 0,
                "totalFloatingIpsUsed": 0,
            }
        )
    return _reply(req, 200, {"limits": {"rate": [], "absolute": absolute}})


def quota_set(state: CloudState, req: Request, project_id: str, detail: str | None) -> Response:
    with state.lock:
        used = state.usage()
        quota = dict(state.quota)
        keypairs = len(state.keypairs)
    values = {
        "instances": (quota["instances"], used["instances"]),
        "cores": (quota["cores"], used["cores"]),
        "ram": (quota["ram"], used["ram"]),
        "key_pairs": (100, keypairs),
        "metadata_items": (128, 0),
        "server_groups": (10, 0),
        "server_group_members": (10, 0),
    }
    doc: dict[str, Any] = {"id": project_id}
    for key, (limit, in_use) in values.items():
        doc[key] = {"limit": limit, "in_use": in_use, "reserved": 0} if detail else limit
    return _reply(req, 200, {"quota_set": doc})


def availability_zones(state: CloudState, req: Request, detail: str | None = None) -> Response:
    with state.lock:
        zones = list(state.availability_zones)
    info = []
    for zone in zones:
        hosts = None
        if detail:
            service = {"available": True, "active": True, "updated_at": iso(time.time())}
            hosts = {f"{zone}-compute": {"nova-compute": service}}
        info.append({"zoneName": zone, "zoneState": {"available": True}, "hosts": hosts})
    return _reply(req, 200, {"availabilityZoneInfo": info})


def _keypair_doc(state: CloudState, name: str, mv: Version) -> dict[str, Any]:
    kp = state.keypairs[name]
    doc: dict[str, Any] = {
        "name": kp.name,
        "public_key": kp.public_key,
        "fingerprint": kp.fingerprint,
    }
    if mv >= (2, 2):
        doc["type"] = kp.type
    return doc


def list_keypairs(state: CloudState, req: Request) -> Response:
    mv = microversion(req)
    with state.lock:
        docs = [{"keypair": _keypair_doc(state, n, mv)} for n in state.keypairs]
    return _reply(req, 200, {"keypairs": docs})


def show_keypair(state: CloudState, req: Request, name: str) -> Response:
    mv = microversion(req)
    with state.lock:
        if name not in state.keypairs:
            raise ApiError(404, f"Keypair {name} not found for user {USER_ID}")
        doc = _keypair_doc(state, name, mv)
        kp = state.keypairs[name]
    doc.update({"user_id": USER_ID, "id": 1, "created_at": iso(kp.created_at), "deleted": False})
    return _reply(req, 200, {"keypair": doc})


def create_keypair(state: CloudState, req: Request) -> Response:
    mv = microversion(req)
    spec = req.json().get("keypair") or {}
    name = spec.get("name")
    if not name:
        raise ApiError(400, "Invalid input: 'name' is a required property")
    private_key = None
    public_key = spec.get("public_key")
    if not public_key:
        # Nova generates a key pair when none is imported (before 2.92).
        key = ed25519.Ed25519PrivateKey.generate()
        private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public_key = (
            key.public_key()
            .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
            .decode()
            + f" {name}"
        )
    with state.lock:
        state.add_keypair(name, public_key)
        doc = _keypair_doc(state, name, mv)
    doc["user_id"] = USER_ID
    if private_key:
        doc["private_key"] = private_key
    return _reply(req, 201 if mv >= (2, 2) else 200, {"keypair": doc})


def delete_keypair(state: CloudState, req: Request, name: str) -> Response:
    with state.lock:
        if state.keypairs.pop(name, None) is None:
            raise ApiError(404, f"Keypair {name} not found for user {USER_ID}")
    return _reply(req, 204 if microversion(req) >= (2, 2) else 202, None)


# -- errors and routes ----------------------------------------------------------

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
}


def error_body(status: int, message: str) -> Response:
    name = FAULT_NAMES.get(status, "computeFault")
    return json_response(status, {name: {"code": status, "message": message}})


_ID = r"(?P<server_id>[^/]+)"

SERVICE = Service(
    prefix="/compute",
    routes=[
        Route("GET", "", versions, auth=False),
        Route("GET", "/v2.1", version, auth=False),
        Route("GET", "/v2.1/servers", list_servers),
        Route("POST", "/v2.1/servers", create_server),
        Route("GET", "/v2.1/servers/detail", list_servers_detail),
        Route("GET", f"/v2.1/servers/{_ID}", show_server),
        Route("DELETE", f"/v2.1/servers/{_ID}", delete_server),
        Route("POST", f"/v2.1/servers/{_ID}/action", server_action),
        Route("GET", f"/v2.1/servers/{_ID}/metadata", show_metadata),
        Route("POST", f"/v2.1/servers/{_ID}/metadata", update_metadata),
        Route("PUT", f"/v2.1/servers/{_ID}/metadata", update_metadata),
        Route("DELETE", f"/v2.1/servers/{_ID}/metadata/(?P<key>[^/]+)", delete_metadata_item),
        Route("GET", "/v2.1/flavors", list_flavors),
        Route("GET", "/v2.1/flavors/detail", list_flavors_detail),
        Route("GET", "/v2.1/flavors/(?P<flavor_id>[^/]+)", show_flavor),
        Route("GET", "/v2.1/flavors/(?P<flavor_id>[^/]+)/os-extra_specs", flavor_extra_specs),
        Route("GET", "/v2.1/limits", limits),
        Route("GET", "/v2.1/os-quota-sets/(?P<project_id>[^/]+)(?P<detail>/detail)?", quota_set),
        Route("GET", "/v2.1/os-availability-zone(?P<detail>/detail)?", availability_zones),
        Route("GET", "/v2.1/os-keypairs", list_keypairs),
        Route("POST", "/v2.1/os-keypairs", create_keypair),
        Route("GET", "/v2.1/os-keypairs/(?P<name>[^/]+)", show_keypair),
        Route("DELETE", "/v2.1/os-keypairs/(?P<name>[^/]+)", delete_keypair),
    ],
    error_body=error_body,
)
