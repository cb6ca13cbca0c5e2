"""Registration of running launchers, pool workers and builders.

Each process registers an ephemeral sequential znode under
``/nodepool/components/<kind>/<hostname>``.  Other launchers read the
``pool`` records to route requests (``supported_labels``, ``priority``,
``paused``) and to decide when every pool has declined a request; zuul-web
reads ``id`` and ``supported_labels``.  Records are re-created after a
session loss because ephemeral znodes die with the session.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any, ClassVar

from kazoo.exceptions import NoNodeError

from nodepool.version import version_string
from nodepool.zk import client as zkclient
from nodepool.zk.zookeeper import COMPONENT_ROOT, ZooKeeper

log = logging.getLogger("nodepool.zk.components")

INITIALIZING = "initializing"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"

MODEL_API = 0


class Component:
    """One registered component; attribute changes are written by
    ``update()``.  Unknown keys in records read back are kept."""

    kind: ClassVar[str] = ""
    KEYS: ClassVar[tuple[str, ...]] = ("hostname", "state", "kind", "version", "model_api")

    def __init__(self, hostname: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self.state = STOPPED
        self.version = version_string
        self.model_api = MODEL_API
        self.extra: dict[str, Any] = {}
        self.path: str | None = None
        self._zk: ZooKeeper | None = None
        self._znode_version = -1
        self._lock = threading.Lock()

    def toDict(self) -> dict[str, Any]:
        d = dict(self.extra)
        for key in self.KEYS:
            d[key] = getattr(self, key) if key != "kind" else self.kind
        return d

    def _load(self, d: dict[str, Any]) -> None:
        for key in self.KEYS:
            if key in d and key != "kind":
                setattr(self, key, d[key])
        self.extra = {k: v for k, v in d.items() if k not in self.KEYS}

    def _data(self) -> bytes:
        return json.dumps(self.toDict(), sort_keys=True).encode("utf8")

    def register(self, zk: ZooKeeper) -> None:
        """Create the ephemeral record and keep it across session losses."""
        self._zk = zk
        self._create()
        zk.zk_client.add_listener(self._on_connection)

    def _create(self) -> None:
        assert self._zk is not None
        with self._lock:
            path = self._zk.kazoo.create(
                f"{COMPONENT_ROOT}/{self.kind}/{self.hostname}", self._data(),
                ephemeral=True, sequence=True, makepath=True)
            self.path = path
            self._znode_version = 0
        log.debug("Registered %s component at %s", self.kind, path)

    def _on_connection(self, event: str) -> None:
        if event != zkclient.CONNECTED or self._zk is None or self.path is None:
            return
        kazoo = self._zk.kazoo
        try:
            stat = kazoo.exists(self.path)
            if stat is not None and stat.ephemeralOwner == kazoo.client_id[0]:
                return
            log.info("Re-registering %s component after session loss", self.kind)
            if stat is not None:
                # Still held by our expired session until the server
                # notices; it would vanish then and leave us unlisted.
                try:
                    kazoo.delete(self.path)
                except NoNodeError:
                    pass
            self._create()
        except Exception:
            log.exception("Could not re-register %s component", self.kind)

    def update(self, **changes: Any) -> None:
        """Set attributes and write the record (a no-op before register)."""
        for key, value in changes.items():
            setattr(self, key, value)
        if self._zk is None or self.path is None:
            return
        with self._lock:
            try:
                stat = self._zk.kazoo.set(self.path, self._data())
                self._znode_version = stat.version
            except NoNodeError:
                # The session was lost; the reconnect listener re-creates it.
                pass

    def unregister(self) -> None:
        if self._zk is None:
            return
        self._zk.zk_client.remove_listener(self._on_connection)
        path, self.path = self.path, None
        if path:
            try:
                self._zk.kazoo.delete(path)
            except NoNodeError:
                pass
            except Exception:
                log.exception("Could not unregister %s component", self.kind)


class LauncherComponent(Component):
    kind = "launcher"


class BuilderComponent(Component):
    kind = "builder"


class PoolComponent(Component):
    """A provider pool; its ``id`` is the pool worker's id that launchers
    write into ``declined_by``."""

    kind = "pool"
    KEYS = Component.KEYS + ("id", "name", "provider_name", "supported_labels",
                             "priority", "paused")

    def __init__(self, hostname: str | None = None) -> None:
        super().__init__(hostname)
        self.id: str | None = None
        self.name: str | None = None
        self.provider_name: str | None = None
        self.supported_labels: list[str] = []
        self.priority: int = 100
        self.paused: bool = False
        self.state = RUNNING


_KINDS: dict[str, type[Component]] = {
    c.kind: c for c in (LauncherComponent, BuilderComponent, PoolComponent)
}


def parse_component(cls: type[Component], path: str, data: bytes) -> Component | None:
    """A component record from znode data, or None (logged) if malformed."""
    try:
        d = json.loads(data.decode("utf8"))
        if not isinstance(d, dict):
            raise ValueError("not an object")
    except ValueError as e:
        log.warning("Skipping unparsable component record %s: %s", path, e)
        return None
    component = cls(d.get("hostname"))
    component._load(d)
    component.path = path
    return component


class ComponentRegistry:
    """Reads the registered components of one kind."""

    def __init__(self, zk: ZooKeeper) -> None:
        self.zk = zk

    def all(self, kind: str) -> list[Component]:
        cls = _KINDS[kind]
        root = f"{COMPONENT_ROOT}/{kind}"
        try:
            names = self.zk.kazoo.get_children(root)
        except NoNodeError:
            return []
        out = []
        for got in self.zk.get_many(f"{root}/{n}" for n in names):
            if got is None:
                continue
            path, data, _ = got
            component = parse_component(cls, path, data)
            if component is not None:
                out.append(component)
        return out
