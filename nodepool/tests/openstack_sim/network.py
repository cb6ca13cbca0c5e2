"""Neutron v2.0: networks, subnets, ports, floating IPs, one router, quotas.

List calls accept Neutron's generic ``field=value`` filters (repeatable, so
several values mean "any of"), ``fields=`` projections and limit/marker
paging, because openstacksdk's cloud layer and the driver's port cleanup
rely on server-side filtering.
"""

from __future__ import annotations

import uuid
from typing import Any

from nodepool.tests.openstack_sim.httpd import Request, Response, Route, Service, json_response
from nodepool.tests.openstack_sim.state import (
    PROJECT_ID,
    ApiError,
    CloudState,
    FloatingIP,
    Network,
    Port,
    Subnet,
    iso,
)

# Stable ids for the singletons, derived from the project so repeated runs agree.
SECURITY_GROUP_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PROJECT_ID}/default-sg"))
ROUTER_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PROJECT_ID}/router1"))
EXTENSIONS = [
    ("agent", "agent"),
    ("availability_zone", "Availability Zone"),
    ("binding", "Port Binding"),
    ("external-net", "Neutron external network"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options"),
    ("fip-port-details", "Floating IP Port Details Extension"),
    ("filter-validation", "Filter parameters validation"),
    ("network_availability_zone", "Network Availability Zone"),
    ("port-security", "Port Security"),
    ("quotas", "Quota management support"),
    ("quota_details", "Quota details management support"),
    ("router", "Neutron L3 Router"),
    ("security-group", "security-group"),
    ("standard-attr-description", "standard-attr-description"),
    ("standard-attr-tag", "Tag support for resources with standard attribute"),
    ("standard-attr-timestamp", "Resource timestamps"),
    ("subnet-service-types", "Subnet service types"),
]
QUOTA = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
    "rbac_policy": 10,
    "subnetpool": -1,
}


def _common(created_at: float) -> dict[str, Any]:
    return {
        "tenant_id": PROJECT_ID,
        "project_id": PROJECT_ID,
        "description": "",
        "tags": [],
        "created_at": iso(created_at),
        "updated_at": iso(created_at),
        "revision_number": 1,
    }


def render_network(net: Network) -> dict[str, Any]:
    doc = _common(net.created_at)
    doc.update(
        {
            "id": net.id,
            "name": net.name,
            "status": "ACTIVE",
            "admin_state_up": True,
            "subnets": list(net.subnet_ids),
            "shared": net.shared,
            "router:external": net.external,
            "is_default": net.external,
            "mtu": 1500,
            "port_security_enabled": True,
            "availability_zones": ["nova"],
            "availability_zone_hints": [],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "l2_adjacency": True,
        }
    )
    return doc


def render_subnet(subnet: Subnet, created_at: float) -> dict[str, Any]:
    doc = _common(created_at)
    doc.update(
        {
            "id": subnet.id,
            "name": subnet.name,
            "network_id": subnet.network_id,
            "cidr": subnet.cidr,
            "ip_version": 4,
            "gateway_ip": subnet.gateway_ip,
            "allocation_pools": [{"start": subnet.pool_start, "end": subnet.pool_end}],
            "enable_dhcp": True,
            "dns_nameservers": [],
            "host_routes": [],
            "service_types": list(subnet.service_types),
            "ipv6_ra_mode": None,
            "ipv6_address_mode": None,
            "subnetpool_id": None,
        }
    )
    return doc


def render_port(port: Port) -> dict[str, Any]:
    doc = _common(port.created_at)
    doc.update(
        {
            "id": port.id,
            "name": port.name,
            "network_id": port.network_id,
            "mac_address": port.mac_address,
            "fixed_ips": [dict(ip) for ip in port.fixed_ips],
            "device_id": port.device_id,
            "device_owner": port.device_owner,
            "status": port.status,
            "admin_state_up": True,
            "security_groups": [SECURITY_GROUP_ID],
            "allowed_address_pairs": [],
            "extra_dhcp_opts": [],
            "binding:vnic_type": "normal",
            "port_security_enabled": True,
        }
    )
    return doc


def render_floating_ip(state: CloudState, fip: FloatingIP) -> dict[str, Any]:
    doc = _common(fip.created_at)
    port = state.ports.get(fip.port_id or "")
    details = None
    if port is not None:
        details = {
            "name": port.name,
            "network_id": port.network_id,
            "mac_address": port.mac_address,
            "admin_state_up": True,
            "status": port.status,
            "device_id": port.device_id,
            "device_owner": port.device_owner,
        }
    doc.update(
        {
            "id": fip.id,
            "floating_ip_address": fip.floating_ip_address,
            "floating_network_id": fip.floating_network_id,
            "port_id": fip.port_id,
            "fixed_ip_address": fip.fixed_ip_address,
            "router_id": ROUTER_ID if fip.port_id else None,
            "status": fip.status,
            "description": fip.description,
            "port_details": details,
            "dns_domain": "",
            "dns_name": "",
        }
    )
    return doc


def _router(state: CloudState) -> dict[str, Any]:
    """The router that makes floating IPs on ``public`` reach the other networks."""
    external = next((n for n in state.networks.values() if n.external), None)
    doc = _common(0)
    doc.update(
        {
            "id": ROUTER_ID,
            "name": "router1",
            "status": "ACTIVE",
            "admin_state_up": True,
            "external_gateway_info": None,
            "routes": [],
            "distributed": False,
            "ha": False,
            "availability_zones": ["nova"],
            "availability_zone_hints": [],
        }
    )
    if external is not None:
        subnet = state.fixed_subnet(external)
        doc["external_gateway_info"] = {
            "network_id": external.id,
            "enable_snat": True,
            "external_fixed_ips": [{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
        }
    return doc


def _security_group() -> dict[str, Any]:
    doc = _common(0)
    doc.update(
        {
            "id": SECURITY_GROUP_ID,
            "name": "default",
            "description": "Default security group",
            "security_group_rules": [],
            "stateful": True,
            "shared": False,
        }
    )
    return doc


# -- listing helpers ------------------------------------------------------------

NOT_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}


def _value_matches(actual: Any, wanted: str) -> bool:
    if isinstance(actual, bool):
        return str(actual).lower() == wanted.lower()
    if actual is None:
        return wanted in ("", "None", "null")
    return str(actual) == wanted


def _filter_matches(doc: dict[str, Any], key: str, values: list[str]) -> bool:
    if key == "fixed_ips":
        # ?fixed_ips=ip_address=X or ?fixed_ips=subnet_id=Y
        for value in values:
            attr, _, wanted = value.partition("=")
            if not any(ip.get(attr) == wanted for ip in doc["fixed_ips"]):
                return False
        return True
    if key not in doc:
        return True
    return any(_value_matches(doc[key], v) for v in values)


def _list(req: Request, plural: str, docs: list[dict[str, Any]]) -> Response:
    for key, values in req.query.items():
        if key not in NOT_FILTERS:
            docs = [d for d in docs if _filter_matches(d, key, values)]
    marker = req.arg("marker")
    if marker:
        ids = [d["id"] for d in docs]
        if marker in ids:
            docs = docs[ids.index(marker) + 1 :]
    links = []
    limit_arg = req.arg("limit")
    if limit_arg:
        limit = int(limit_arg)
        if len(docs) > limit:
            links = [
                {
                    "rel": "next",
                    "href": f"{req.base_url}/network/v2.0/{plural}"
                    f"?limit={limit}&marker={docs[limit - 1]['id']}",
                }
            ]
        docs = docs[:limit]
    fields = req.query.get("fields")
    if fields:
        docs = [{k: v for k, v in d.items() if k in fields} for d in docs]
    body: dict[str, Any] = {plural.replace("-", "_"): docs}
    if links:
        body[f"{plural.replace('-', '_')}_links"] = links
    return json_response(200, body)


def _one(singular: str, doc: dict[str, Any] | None, ident: str, status: int = 200) -> Response:
    if doc is None:
        raise ApiError(404, f"{singular.capitalize()} {ident} could not be found.")
    return json_response(status, {singular: doc})


# -- handlers ---------------------------------------------------------------------


def versions(state: CloudState, req: Request) -> Response:
    link = {"href": f"{req.base_url}/network/v2.0/", "rel": "self"}
    return json_response(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [link]}]})


def resources(state: CloudState, req: Request) -> Response:
    names = ["network", "subnet", "port", "floatingip", "router", "security-group", "quota"]
    docs = [
        {
            "name": n,
            "collection": f"{n}s",
            "links": [{"href": f"{req.base_url}/network/v2.0/{n}s", "rel": "self"}],
        }
        for n in names
    ]
    return json_response(200, {"resources": docs})


def list_extensions(state: CloudState, req: Request) -> Response:
    docs = [
        {"alias": a, "name": n, "description": n, "updated": "2020-01-01T00:00:00-00:00",
         "links": []}
        for a, n in EXTENSIONS
    ]  # fmt: skip
    return json_response(200, {"extensions": docs})


def show_extension(state: CloudState, req: Request, alias: str) -> Response:
    for a, n in EXTENSIONS:
        if a == alias:
            doc = {"alias": a, "name": n, "description": n, "links": [],
                   "updated": "2020-01-01T00:00:00-00:00"}  # fmt: skip
            return json_response(200, {"extension": doc})
    raise ApiError(404, f"Extension with alias {alias} does not exist")


def list_networks(state: CloudState, req: Request) -> Response:
    with state.lock:
        docs = [render_network(n) for n in state.networks.values()]
    return _list(req, "networks", docs)


def show_network(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        net = state.networks.get(ident)
        doc = render_network(net) if net else None
    return _one("network", doc, ident)


def list_subnets(state: CloudState, req: Request) -> Response:
    with state.lock:
        docs = [
            render_subnet(s, state.networks[s.network_id].created_at)
            for s in state.subnets.values()
        ]
    return _list(req, "subnets", docs)


def show_subnet(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        subnet = state.subnets.get(ident)
        doc = None
        if subnet is not None:
            doc = render_subnet(subnet, state.networks[subnet.network_id].created_at)
    return _one("subnet", doc, ident)


def list_ports(state: CloudState, req: Request) -> Response:
    with state.lock:
        state.tick()
        docs = [render_port(p) for p in state.ports.values()]
    return _list(req, "ports", docs)


def show_port(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        state.tick()
        port = state.ports.get(ident)
        doc = render_port(port) if port else None
    return _one("port", doc, ident)


def create_port(state: CloudState, req: Request) -> Response:
    spec = req.json().get("port") or {}
    with state.lock:
        net = state.networks.get(spec.get("network_id", ""))
        if net is None:
            raise ApiError(404, f"Network {spec.get('network_id')} could not be found.")
        fixed = spec.get("fixed_ips") or [{}]
        port = state.create_port(
            net,
            device_id=spec.get("device_id", ""),
            device_owner=spec.get("device_owner", ""),
            status="DOWN",
            ip=fixed[0].get("ip_address"),
            name=spec.get("name", ""),
        )
        doc = render_port(port)
    return json_response(201, {"port": doc})


def delete_port(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        state.delete_port(ident)
    return Response(204)


def list_floating_ips(state: CloudState, req: Request) -> Response:
    with state.lock:
        state.tick()
        docs = [render_floating_ip(state, f) for f in state.floating_ips.values()]
    return _list(req, "floatingips", docs)


def show_floating_ip(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        state.tick()
        fip = state.floating_ips.get(ident)
        doc = render_floating_ip(state, fip) if fip else None
    return _one("floatingip", doc, ident)


def create_floating_ip(state: CloudState, req: Request) -> Response:
    spec = req.json().get("floatingip") or {}
    with state.lock:
        net = state.networks.get(spec.get("floating_network_id") or "")
        if net is None:
            raise ApiError(404, f"Network {spec.get('floating_network_id')} could not be found.")
        fip = state.create_floating_ip(
            net, port_id=spec.get("port_id"), description=spec.get("description", "")
        )
        doc = render_floating_ip(state, fip)
    return json_response(201, {"floatingip": doc})


def update_floating_ip(state: CloudState, req: Request, ident: str) -> Response:
    spec = req.json().get("floatingip") or {}
    with state.lock:
        fip = state.floating_ips.get(ident)
        if fip is None:
            raise ApiError(404, f"Floating IP {ident} could not be found.")
        if "port_id" in spec:
            state.associate_floating_ip(fip, spec["port_id"])
        if "description" in spec:
            fip.description = spec["description"]
        doc = render_floating_ip(state, fip)
    return json_response(200, {"floatingip": doc})


def delete_floating_ip(state: CloudState, req: Request, ident: str) -> Response:
    with state.lock:
        if state.floating_ips.pop(ident, None) is None:
            raise ApiError(404, f"Floating IP {ident} could not be found.")
    return Response(204)


def list_routers(state: CloudState, req: Request) -> Response:
    with state.lock:
        docs = [_router(state)]
    return _list(req, "routers", docs)


def list_security_groups(state: CloudState, req: Request) -> Response:
    return _list(req, "security-groups", [_security_group()])


def show_security_group(state: CloudState, req: Request, ident: str) -> Response:
    doc = _security_group() if ident == SECURITY_GROUP_ID else None
    return _one("security_group", doc, ident)


def quotas(state: CloudState, req: Request, project_id: str, details: str | None) -> Response:
    with state.lock:
        used = {
            "network": len(state.networks),
            "subnet": len(state.subnets),
            "port": len(state.ports),
            "router": 1,
            "floatingip": len(state.floating_ips),
            "security_group": 1,
            "security_group_rule": 0,
            "rbac_policy": 0,
            "subnetpool": 0,
        }
    doc: dict[str, Any]
    if details:
        doc = {k: {"limit": v, "used": used[k], "reserved": 0} for k, v in QUOTA.items()}
    else:
        doc = dict(QUOTA)
    return json_response(200, {"quota": doc})


def error_body(status: int, message: str) -> Response:
    kinds = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
             409: "Conflict"}  # fmt: skip
    body = {"NeutronError": {"type": kinds.get(status, "HTTPError"), "message": message,
                             "detail": ""}}  # fmt: skip
    return json_response(status, body)


_ID = "/(?P<ident>[^/]+?)(?:\\.json)?"
_J = "(?:\\.json)?"

SERVICE = Service(
    prefix="/network",
    routes=[
        Route("GET", "", versions, auth=False),
        Route("GET", "/v2.0", resources),
        Route("GET", f"/v2.0/extensions{_J}", list_extensions),
        Route("GET", "/v2.0/extensions/(?P<alias>[^/]+)", show_extension),
        Route("GET", f"/v2.0/networks{_J}", list_networks),
        Route("GET", f"/v2.0/networks{_ID}", show_network),
        Route("GET", f"/v2.0/subnets{_J}", list_subnets),
        Route("GET", f"/v2.0/subnets{_ID}", show_subnet),
        Route("GET", f"/v2.0/ports{_J}", list_ports),
        Route("POST", f"/v2.0/ports{_J}", create_port),
        Route("GET", f"/v2.0/ports{_ID}", show_port),
        Route("DELETE", f"/v2.0/ports{_ID}", delete_port),
        Route("GET", f"/v2.0/floatingips{_J}", list_floating_ips),
        Route("POST", f"/v2.0/floatingips{_J}", create_floating_ip),
        Route("GET", f"/v2.0/floatingips{_ID}", show_floating_ip),
        Route("PUT", f"/v2.0/floatingips{_ID}", update_floating_ip),
        Route("DELETE", f"/v2.0/floatingips{_ID}", delete_floating_ip),
        Route("GET", f"/v2.0/routers{_J}", list_routers),
        Route("GET", f"/v2.0/security-groups{_J}", list_security_groups),
        Route("GET", f"/v2.0/security-groups{_ID}", show_security_group),
        Route(
            "GET",
            f"/v2.0/quotas/(?P<project_id>[^/.]+)(?P<details>/details)?{_J}",
            quotas,
        ),
    ],
    error_body=error_body,
)
