"""Node records of static hosts: what they hold, and which slot each fills.

A configured host offers ``max-parallel-jobs`` slots; each slot is one
node record (``slot`` 0..n-1).  A record belongs to a host by the
identity upstream uses, (host name, username, port), so records written
by upstream Nodepool or by an earlier configuration are adopted, not
duplicated.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from nodepool.driver.static.hosts import normalize_key, uses_ssh
from nodepool.zk import models
from nodepool.zk.models import Node

log = logging.getLogger("nodepool.driver.static")

# What upstream writes as the ``launcher`` of static nodes.
LAUNCHER = "static driver"

# Records in these states no longer hold their slot: the host is free for
# a new record as soon as one is marked for deletion.
FREEING_STATES = (models.DELETING, models.DELETED)


def identity_of(node: Node) -> tuple[str | None, str, Any]:
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


def config_fields(provider_name: str, pool: Any, host: Any,
                  addresses: tuple[str | None, str | None]) -> dict[str, Any]:
    """The record fields that follow from the configuration."""
    return {
        "provider": provider_name,
        "pool": pool.name,
        "type": list(host.labels),
        "launcher": LAUNCHER,
        "external_id": host.name,
        "hostname": host.name,
        "interface_ip": host.name,
        "public_ipv4": addresses[0],
        "public_ipv6": addresses[1],
        "username": host.username,
        "connection_port": host.connection_port,
        "connection_type": host.connection_type,
        "python_path": host.python_path,
        "shell_type": host.shell_type,
        "attributes": pool.node_attributes,
    }


# Compared without resolving names again (addresses rarely change and a
# lookup per comparison would be slow).
_COMPARED = ("pool", "type", "username", "connection_port", "connection_type",
             "python_path", "shell_type", "attributes")


def new_record(provider_name: str, pool: Any, host: Any, slot: int,
               host_keys: list[str], addresses: tuple[str | None, str | None]) -> Node:
    """A READY record for ``slot`` of ``host``, with the fields upstream
    writes for static nodes (cloud, region, az and resources stay null)."""
    node = Node()
    node.state = models.READY
    for key, value in config_fields(provider_name, pool, host, addresses).items():
        setattr(node, key, value)
    node.host_keys = list(host_keys)
    node.slot = slot
    node.node_properties = {}
    return node


def rewrite(node: Node, provider_name: str, pool: Any, host: Any,
            host_keys: list[str], addresses: tuple[str | None, str | None]) -> bool:
    """Bring a record in line with the configuration and the scanned
    keys; True when something changed."""
    wanted = config_fields(provider_name, pool, host, addresses)
    wanted["host_keys"] = list(host_keys)
    changed = False
    for key, value in wanted.items():
        if getattr(node, key) != value:
            setattr(node, key, value)
            changed = True
    return changed


def is_stale(node: Node, pool: Any, host: Any) -> bool:
    """Whether a record's configured fields differ from ``host``'s (the
    host keys count when the configuration pins them)."""
    if any(getattr(node, key) != value
           for key, value in config_fields("", pool, host, (None, None)).items()
           if key in _COMPARED):
        return True
    if not uses_ssh(host):
        return bool(node.host_keys)
    pinned = {normalize_key(k) for k in host.host_keys}
    recorded = {normalize_key(k) for k in node.host_keys}
    if not host.host_key_checking:
        return pinned != recorded
    return not pinned <= recorded


@dataclass
class SlotView:
    """A host's records by slot; ``excess`` are records no slot can hold
    (``max-parallel-jobs`` was lowered, or duplicates)."""

    slots: list[Node | None]
    excess: list[Node] = field(default_factory=list)

    @property
    def empty(self) -> list[int]:
        return [i for i, node in enumerate(self.slots) if node is None]

    @property
    def records(self) -> list[Node]:
        return [node for node in self.slots if node is not None]


def slot_view(host: Any, nodes: list[Node]) -> SlotView:
    """Place ``host``'s live records into its slots.

    Records with a valid free slot number keep it; records without one
    (written by very old versions) take the first free slot; the rest are
    excess.
    """
    view = SlotView([None] * host.max_parallel_jobs)
    unslotted = []
    for node in sorted(nodes, key=lambda n: (n.created_time or 0, n.id or "")):
        if node.state in FREEING_STATES:
            continue
        slot = node.slot
        if isinstance(slot, int) and 0 <= slot < len(view.slots) and view.slots[slot] is None:
            view.slots[slot] = node
        elif slot is None:
            unslotted.append(node)
        else:
            view.excess.append(node)
    for node in unslotted:
        if None in view.slots:
            view.slots[view.slots.index(None)] = node
        else:
            view.excess.append(node)
    return view
