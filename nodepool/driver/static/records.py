"""Node records of static hosts: what a host slot's record holds.

A configured host offers ``max-parallel-jobs`` slots; the framework keeps
one node record per slot (:mod:`nodepool.driver.registrar`).  A record
belongs to a host by the identity upstream uses, (host name, username,
port), so records written by upstream Nodepool or by an earlier
configuration are adopted, not duplicated.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

from nodepool.driver.static.config import StaticHost, StaticPool
from nodepool.driver.static.hosts import normalize_key, uses_ssh
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.static")

# What upstream writes as the ``launcher`` of static nodes.
LAUNCHER = "static driver"

Identity = tuple[str | None, str, Any]


def identity_of(node: Node) -> Identity:
    """The host a record belongs to (same tuple as ``StaticHost.identity``)."""
    return (node.hostname, node.username, node.connection_port)


def resolve(name: str) -> tuple[str | None, str | None]:
    """(public_ipv4, public_ipv6) of a host name or address.

    Zuul and operators read these; a name that does not resolve from the
    launcher still works for executors that can resolve it, so failure
    only leaves them empty.
    """
    try:
        addr = ipaddress.ip_address(name)
        return (str(addr), None) if addr.version == 4 else (None, str(addr))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError as e:
        log.debug("Cannot resolve static host %s: %s", name, e)
        return None, None
    for family, *_, sockaddr in infos:
        if family == socket.AF_INET:
            return str(sockaddr[0]), None
    for family, *_, sockaddr in infos:
        if family == socket.AF_INET6:
            return None, str(sockaddr[0])
    return None, None


def config_fields(provider_name: str, pool: StaticPool, host: StaticHost) -> dict[str, Any]:
    """The record fields that follow from the configuration (the fields
    upstream writes for static nodes; cloud, region, az and resources
    stay null)."""
    return {
        "provider": provider_name,
        "pool": pool.name,
        "type": list(host.labels),
        "launcher": LAUNCHER,
        "external_id": host.name,
        "hostname": host.name,
        "interface_ip": host.name,
        "username": host.username,
        "connection_port": host.connection_port,
        "connection_type": host.connection_type,
        "python_path": host.python_path,
        "shell_type": host.shell_type,
        "attributes": pool.node_attributes,
    }


def checked_fields(host_keys: list[str], addresses: tuple[str | None, str | None]
                   ) -> dict[str, Any]:
    """The record fields learned when the host is checked."""
    return {"host_keys": list(host_keys), "public_ipv4": addresses[0],
            "public_ipv6": addresses[1]}


def is_current(node: Node, pool: StaticPool, host: StaticHost) -> bool:
    """Whether a record's configured fields match ``host``'s (the host keys
    count when the configuration pins them).  Addresses are not resolved
    again for this: they rarely change and a lookup per comparison would
    be slow."""
    if any(getattr(node, key) != value
           for key, value in config_fields(node.provider or "", pool, host).items()):
        return False
    if not uses_ssh(host):
        return not node.host_keys
    pinned = {normalize_key(k) for k in host.host_keys}
    recorded = {normalize_key(k) for k in node.host_keys}
    if not host.host_key_checking:
        return pinned == recorded
    return pinned <= recorded
