"""Records stored in ZooKeeper: nodes, node requests, image builds and uploads.

Each record is a small class with ``toDict``/``fromDict``.  The JSON keys,
states and defaults are the ones upstream Nodepool and Zuul read and write
(see WIRE.md); Zuul reads several request keys without defaults, so every
key is always written, null where unknown.  Keys we do not know are kept
and written back unchanged, so a newer writer's data survives our rewrite.
The record's id is the znode name and is never stored in the JSON.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, ClassVar, overload

# Node states.
INIT = "init"
BUILDING = "building"
TESTING = "testing"
READY = "ready"
IN_USE = "in-use"
USED = "used"
HOLD = "hold"
DELETING = "deleting"
FAILED = "failed"
ABORTED = "aborted"
DELETED = "deleted"

# Node request states (FAILED is shared with nodes).
REQUESTED = "requested"
PENDING = "pending"
FULFILLED = "fulfilled"

# Image build and upload states (READY, DELETING, FAILED shared).
UPLOADING = "uploading"

NODE_STATES = (
    INIT, BUILDING, TESTING, READY, IN_USE, USED, HOLD, DELETING, FAILED,
    ABORTED, DELETED,
)
REQUEST_STATES = (REQUESTED, PENDING, FULFILLED, FAILED)
BUILD_STATES = (BUILDING, READY, DELETING, FAILED)
UPLOAD_STATES = (UPLOADING, READY, DELETING, FAILED)

# An unlocked node in one of these states belongs to nobody and may be
# deleted: its owner (a launcher building it, an executor using it, a
# launcher checking an image upload on it) died.
CLEANUP_STATES = (USED, IN_USE, BUILDING, TESTING, FAILED, DELETING, DELETED, ABORTED)

# States of an upload's image validation (the ``validation`` key of an
# upload record, ours; see ImageUpload).  Only PASSED and SKIPPED let a
# ready upload serve requests.
VALIDATION_PENDING = "pending"
VALIDATION_CHECKING = "checking"
VALIDATION_PASSED = "passed"
VALIDATION_FAILED = "failed"
VALIDATION_SKIPPED = "skipped"
VALIDATION_DONE = (VALIDATION_PASSED, VALIDATION_FAILED, VALIDATION_SKIPPED)


class ModelError(ValueError):
    """A znode's data is not a valid record."""


def load_json(data: bytes | str | None, what: str) -> dict[str, Any]:
    """Decode a znode payload into a dict, or raise ModelError saying why."""
    if data is None or is_empty_znode(data):
        raise ModelError(f"{what}: empty znode")
    try:
        if isinstance(data, bytes):
            data = data.decode("utf8")
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError(f"{what}: not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ModelError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


class Record:
    """Common behaviour: known keys become attributes, unknown keys are kept.

    ``KEYS`` lists every key the record writes, in order.  ``DROP`` lists keys
    that other writers add but that must not be carried back (for example
    the ``id`` Zuul adds to nodes, which duplicates the znode name).
    """

    KEYS: ClassVar[tuple[str, ...]] = ()
    DROP: ClassVar[frozenset[str]] = frozenset()

    # Subclasses kept by the thousand (nodes) list their attributes in
    # ``__slots__``: a record then takes a few hundred bytes, not a dict's.
    __slots__ = ("__dict__", "id", "version", "mzxid", "extra")

    def __init__(self, id: str | None = None) -> None:
        self.id = id
        # The znode version the data was read at (for versioned writes).
        self.version: int | None = None
        # Modification zxid, used by caches to ignore stale reads.
        self.mzxid: int = 0
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        state = getattr(self, "state", None)
        return f"<{type(self).__name__} {self.id} {state}>"

    def _load_known(self, d: dict[str, Any]) -> None:
        """Set attributes from ``d``; subclasses coerce types here."""
        raise NotImplementedError

    def updateFromDict(self, d: dict[str, Any]) -> None:
        known = set(self.KEYS)
        self.extra = {
            k: v for k, v in d.items() if k not in known and k not in self.DROP
        }
        self._load_known(d)

    @classmethod
    def fromDict(cls, d: dict[str, Any], id: str | None = None):
        obj = cls(id)
        obj.updateFromDict(d)
        return obj

    # Keys written only when their value is not None.
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def toDict(self) -> dict[str, Any]:
        d = dict(self.extra)
        for key in self.KEYS:
            value = getattr(self, _attr(key))
            if value is None and key in self.OPTIONAL:
                continue
            d[key] = value
        return d

    def serialize(self) -> bytes:
        return json.dumps(self.toDict()).encode("utf8")

    @classmethod
    def deserialize(cls, data: bytes | str | None, id: str | None = None):
        """Build a record from znode bytes; raises ModelError when malformed."""
        d = load_json(data, f"{cls.__name__} {id}")
        try:
            return cls.fromDict(d, id)
        except (TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"{cls.__name__} {id}: bad field value: {e}") from e


def _attr(key: str) -> str:
    return key.replace("-", "_")


def as_list(value: Any) -> list:
    """A list from a list, tuple, single value or None (older writers
    stored single values where lists are expected now)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    return [value]


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


class StateField:
    """A record's ``state``: one of ``allowed`` or None (anything else is
    a ModelError); setting a different one stamps ``state_time``.  The
    value lives in the record's ``_state``."""

    def __init__(self, allowed: tuple[str, ...], what: str) -> None:
        self.allowed = allowed
        self.what = what

    @overload
    def __get__(self, record: None, owner: type) -> StateField: ...

    @overload
    def __get__(self, record: Record, owner: type) -> str | None: ...

    def __get__(self, record: Record | None, owner: type) -> StateField | str | None:
        if record is None:
            return self
        return record._state  # type: ignore[attr-defined]

    def __set__(self, record: Record, value: str | None) -> None:
        if value not in self.allowed and value is not None:
            raise ModelError(f"invalid {self.what} state {value!r}")
        if value != record._state:  # type: ignore[attr-defined]
            record.state_time = time.time()  # type: ignore[attr-defined]
        record._state = value  # type: ignore[attr-defined]


class Node(Record):
    """A test node: a cloud server or a static host slot.

    ``type`` is a list of labels (older writers stored a plain string).
    ``ssh_port`` mirrors ``connection_port`` for old readers.
    """

    KEYS = (
        "state", "state_time", "cloud", "provider", "pool", "type",
        "allocated_to", "az", "region", "public_ipv4", "private_ipv4",
        "public_ipv6", "host_id", "interface_ip", "connection_port",
        "ssh_port", "image_id", "launcher", "created_time", "external_id",
        "hostname", "comment", "user_data", "hold_job", "host_keys",
        "username", "connection_type", "shell_type", "hold_expiration",
        "resources", "slot", "attributes", "python_path", "tenant_name",
        "driver_data", "requestor", "node_properties", "launch_progress",
    )
    # Written only while set, so records of idle nodes carry exactly
    # upstream's keys.
    OPTIONAL = frozenset({"launch_progress"})
    DROP = frozenset({"id"})

    __slots__ = (
        "_state", "state_time", "cloud", "provider", "pool", "type", "allocated_to", "az",
        "region", "public_ipv4", "private_ipv4", "public_ipv6", "host_id", "interface_ip",
        "connection_port", "image_id", "launcher", "created_time", "external_id",
        "hostname", "comment", "user_data", "hold_job", "host_keys", "username",
        "connection_type", "shell_type", "hold_expiration", "resources", "slot",
        "attributes", "python_path", "tenant_name", "driver_data", "requestor",
        "node_properties", "launch_progress", "lock_contenders", "lock",
    )

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id)
        self._state: str | None = None
        self.state_time: float = time.time()
        self.cloud: str | None = None
        self.provider: str | None = None
        self.pool: str | None = None
        self.type: list[str] = []
        self.allocated_to: str | None = None
        self.az: str | None = None
        self.region: str | None = None
        self.public_ipv4: str | None = None
        self.private_ipv4: str | None = None
        self.public_ipv6: str | None = None
        self.host_id: str | None = None
        self.interface_ip: str | None = None
        self.connection_port: Any = 22
        self.image_id: str | None = None
        self.launcher: str | None = None
        self.created_time: float | None = None
        self.external_id: Any = None
        self.hostname: str | None = None
        self.comment: str | None = None
        self.user_data: Any = None
        self.hold_job: str | None = None
        self.host_keys: list[str] = []
        self.username: str = "zuul"
        self.connection_type: str | None = None
        self.shell_type: str | None = None
        self.hold_expiration: int | None = None
        self.resources: dict[str, Any] | None = None
        self.slot: int | None = None
        self.attributes: dict[str, Any] | None = None
        self.python_path: str | None = None
        self.tenant_name: str | None = None
        self.driver_data: Any = None
        self.requestor: str | None = None
        self.node_properties: dict[str, Any] | None = None
        # How far a launch in flight has got (see nodepool.driver.launch);
        # None once the node is ready.  Not an upstream key.
        self.launch_progress: dict[str, Any] | None = None
        # Number of contenders in the node's lock dir, kept by the cache.
        self.lock_contenders: int = 0
        # The kazoo lock we hold on this node, if any.
        self.lock: Any = None

    state = StateField(NODE_STATES, "node")

    @property
    def ssh_port(self) -> Any:
        return self.connection_port

    @property
    def locked(self) -> bool:
        return self.lock_contenders > 0

    @property
    def label(self) -> str:
        return ",".join(self.type)

    def _load_known(self, d: dict[str, Any]) -> None:
        state = d.get("state")
        if state is not None and state not in NODE_STATES:
            raise ModelError(f"invalid node state {state!r}")
        self._state = _intern(state)
        self.state_time = _as_float(d.get("state_time")) or 0.0
        for key in _NODE_SHARED:
            setattr(self, key, _intern(d.get(key)))
        for key in _NODE_OWN:
            setattr(self, key, d.get(key))
        self.type = [_intern(t) for t in as_list(d.get("type"))]
        self.created_time = _as_float(d.get("created_time"))
        self.host_keys = as_list(d.get("host_keys"))
        self.username = _intern(d.get("username")) or "zuul"
        port = d.get("connection_port")
        if port is None:
            port = d.get("ssh_port")
        self.connection_port = 22 if port is None else port
        self.hold_expiration = _hold_expiration(d.get("hold_expiration"))



class UnreadableNode:
    """A node znode with data this version cannot use: not JSON, not an
    object, a field of the wrong type, or a ``state`` we do not know (a
    newer writer's).

    Such a record is never deleted by a daemon (whoever wrote it may be
    using it), never handed out or counted as capacity, and is reported
    (log, ``nodepool.nodes.unreadable``, ``nodepool list``) until an
    operator removes it with ``nodepool delete``.
    """

    __slots__ = ("id", "data", "reason")

    def __init__(self, id: str, data: bytes, reason: str) -> None:
        self.id = id
        self.data = data
        self.reason = reason

    def __repr__(self) -> str:
        return f"<UnreadableNode {self.id}: {self.reason}>"


def is_empty_znode(data: bytes | str | None) -> bool:
    """Whether a znode carries no record at all (a lock taken on a node
    being deleted can leave one behind)."""
    return data is None or data == b"" or data == ""


# Node fields whose values repeat across thousands of records (a
# provider's name, a pool's, a label's...): kept once in memory.
_NODE_SHARED = (
    "cloud", "provider", "pool", "az", "region", "image_id", "launcher",
    "connection_type", "shell_type", "python_path", "tenant_name", "requestor",
)
_NODE_OWN = (
    "allocated_to", "public_ipv4", "private_ipv4", "public_ipv6", "host_id",
    "interface_ip", "external_id", "hostname", "comment", "user_data", "hold_job",
    "resources", "slot", "attributes", "driver_data", "node_properties",
    "launch_progress",
)


def _intern(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


def _hold_expiration(value: Any) -> int | None:
    """Upstream stores whole seconds; anything unusable means no expiry."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class NodeRequest(Record):
    """A request for a set of nodes, made by Zuul or by min-ready."""

    KEYS = (
        "state", "state_time", "declined_by", "node_types", "nodes", "reuse",
        "requestor", "requestor_data", "provider", "relative_priority",
        "event_id", "created_time", "tenant_name",
    )

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id)
        self._state: str | None = None
        self.state_time: float = time.time()
        self.declined_by: list[str] = []
        self.node_types: list[str] = []
        self.nodes: list[str] = []
        self.reuse: bool = True
        self.requestor: str | None = None
        self.requestor_data: Any = None
        self.provider: str | None = None
        self.relative_priority: int = 0
        self.event_id: str | None = None
        self.created_time: float | None = None
        self.tenant_name: str | None = None
        self.lock: Any = None

    state = StateField(REQUEST_STATES, "request")

    @property
    def priority(self) -> str:
        """The 3-character precedence prefix of the id (``100`` if none)."""
        if self.id and len(self.id) > 3 and self.id[3] == "-":
            return self.id[:3]
        return "100"

    @property
    def sequence(self) -> str:
        if self.id and "-" in self.id:
            return self.id.rsplit("-", 1)[1]
        return self.id or ""

    def sort_key(self) -> tuple[str, int, str]:
        """Requests are served by (prefix, relative_priority, sequence)."""
        return (self.priority, self.relative_priority, self.sequence)

    def _load_known(self, d: dict[str, Any]) -> None:
        state = d.get("state")
        if state is not None and state not in REQUEST_STATES:
            raise ModelError(f"invalid request state {state!r}")
        self._state = state
        self.state_time = _as_float(d.get("state_time")) or 0.0
        self.declined_by = as_list(d.get("declined_by"))
        node_types = as_list(d.get("node_types"))
        if not all(isinstance(t, str) for t in node_types):
            raise ModelError("node_types must be a list of label names")
        self.node_types = node_types
        self.nodes = [str(n) for n in as_list(d.get("nodes"))]
        reuse = d.get("reuse", True)
        self.reuse = True if reuse is None else bool(reuse)
        self.requestor = d.get("requestor")
        self.requestor_data = d.get("requestor_data")
        self.provider = d.get("provider")
        self.relative_priority = int(d.get("relative_priority") or 0)
        self.event_id = d.get("event_id")
        self.created_time = _as_float(d.get("created_time"))
        self.tenant_name = d.get("tenant_name")


class ImageBuild(Record):
    """One diskimage-builder build of an image (``builds/<build id>``).

    ``formats`` is a list in memory and a sorted comma-joined string on the
    wire; empty optional keys are left out as upstream does.
    """

    KEYS = ("state", "state_time", "builder", "builder_id", "formats",
            "username", "python_path", "shell_type")

    def __init__(self, image_name: str | None = None, id: str | None = None) -> None:
        super().__init__(id)
        self.image_name = image_name
        self.state: str | None = None
        self.state_time: float = time.time()
        self.builder: str | None = None
        self.builder_id: str | None = None
        self.formats: list[str] = []
        self.username: str = "zuul"
        self.python_path: str = "/usr/bin/python2"
        self.shell_type: str | None = None

    @classmethod
    def fromDict(cls, d: dict[str, Any], id: str | None = None,  # type: ignore[override]
                 image_name: str | None = None):
        obj = cls(image_name, id)
        obj.updateFromDict(d)
        return obj

    @classmethod
    def deserialize(cls, data, id=None, image_name=None):
        d = load_json(data, f"ImageBuild {image_name}-{id}")
        try:
            return cls.fromDict(d, id, image_name)
        except (TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"ImageBuild {id}: bad field value: {e}") from e

    def _load_known(self, d: dict[str, Any]) -> None:
        state = d.get("state")
        if state is not None and state not in BUILD_STATES:
            raise ModelError(f"invalid build state {state!r}")
        self.state = state
        self.state_time = _as_float(d.get("state_time")) or 0.0
        self.builder = d.get("builder")
        self.builder_id = d.get("builder_id")
        formats = d.get("formats")
        if isinstance(formats, str):
            self.formats = [f for f in formats.split(",") if f]
        else:
            self.formats = as_list(formats)
        self.username = _intern(d.get("username")) or "zuul"
        self.python_path = d.get("python_path") or "/usr/bin/python2"
        self.shell_type = d.get("shell_type")

    def toDict(self) -> dict[str, Any]:
        d = dict(self.extra)
        d["state"] = self.state
        d["state_time"] = self.state_time
        if self.builder:
            d["builder"] = self.builder
        if self.builder_id:
            d["builder_id"] = self.builder_id
        if self.formats:
            d["formats"] = ",".join(sorted(self.formats))
        d["username"] = self.username
        d["python_path"] = self.python_path
        d["shell_type"] = self.shell_type
        return d


class ImageUpload(Record):
    """One upload of a build to one provider (``.../images/<upload id>``).

    ``validation`` (ours; absent from upstream's records) is set by the
    builder to ``{"state": "pending"}`` when the diskimage asks for a
    check before service, and advanced by the launcher that checks it
    (``checking``, then ``passed``, ``failed`` or ``skipped``, with who,
    when and why).  The upload's ``state`` stays within upstream's values:
    it is ``ready`` while the check is pending and becomes ``failed`` when
    the check fails, so upstream tools keep parsing the record (see
    doc/source/compatibility.rst).  Our launchers boot only uploads that
    are :attr:`in_service`.
    """

    KEYS = ("state", "state_time", "external_id", "external_name", "format",
            "username", "python_path", "shell_type", "validation")
    OPTIONAL = frozenset({"validation"})

    def __init__(self, build_id: str | None = None, provider_name: str | None = None,
                 image_name: str | None = None, id: str | None = None) -> None:
        super().__init__(id)
        self.build_id = build_id
        self.provider_name = provider_name
        self.image_name = image_name
        self.state: str | None = None
        self.state_time: float = time.time()
        self.external_id: str | None = None
        self.external_name: str | None = None
        self.format: str | None = None
        self.username: str = "zuul"
        self.python_path: str = "/usr/bin/python2"
        self.shell_type: str | None = None
        # A mapping as we write it; Any, since another writer may have
        # stored something else (see validation_state).
        self.validation: Any = None

    @property
    def validation_state(self) -> str | None:
        """None when no check was asked for; otherwise the check's state.
        Anything unusable there (not a mapping, an unknown state) reads
        as ``pending``: such an upload is checked (and its record
        rewritten) rather than trusted."""
        if self.validation is None:
            return None
        state = self.validation.get("state") if isinstance(self.validation, dict) else None
        if state in (VALIDATION_CHECKING, *VALIDATION_DONE):
            return state
        return VALIDATION_PENDING

    @property
    def awaiting_validation(self) -> bool:
        """Ready, but its check has not decided yet."""
        return self.state == READY and self.validation_state in (
            VALIDATION_PENDING, VALIDATION_CHECKING)

    @property
    def in_service(self) -> bool:
        """Whether launchers may boot nodes from it: ready, and either
        never meant to be checked or checked (or the check skipped)."""
        return self.state == READY and self.validation_state in (
            None, VALIDATION_PASSED, VALIDATION_SKIPPED)

    @property
    def path(self) -> str:
        """The znode path, which launchers store as a node's ``image_id``."""
        return (f"/nodepool/images/{self.image_name}/builds/{self.build_id}"
                f"/providers/{self.provider_name}/images/{self.id}")

    @classmethod
    def fromDict(cls, d: dict[str, Any], build_id=None,  # type: ignore[override]
                 provider_name=None, image_name=None, id=None):
        obj = cls(build_id, provider_name, image_name, id)
        obj.updateFromDict(d)
        return obj

    @classmethod
    def deserialize(cls, data, build_id=None, provider_name=None,
                    image_name=None, id=None):
        d = load_json(data, f"ImageUpload {image_name}/{build_id}/{provider_name}/{id}")
        try:
            return cls.fromDict(d, build_id, provider_name, image_name, id)
        except (TypeError, ValueError, AttributeError) as e:
            raise ModelError(f"ImageUpload {id}: bad field value: {e}") from e

    def _load_known(self, d: dict[str, Any]) -> None:
        state = d.get("state")
        if state is not None and state not in UPLOAD_STATES:
            raise ModelError(f"invalid upload state {state!r}")
        self.state = state
        self.state_time = _as_float(d.get("state_time")) or 0.0
        self.external_id = d.get("external_id")
        self.external_name = d.get("external_name")
        self.format = d.get("format")
        self.username = _intern(d.get("username")) or "zuul"
        self.python_path = d.get("python_path") or "/usr/bin/python2"
        self.shell_type = d.get("shell_type")
        self.validation = d.get("validation")
