"""Test helpers: start a launcher, and play Zuul's part of the protocol."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP, _SESSION_EXPIRED
from kazoo.protocol.states import EventType, WatchedEvent
from kazoo.recipe.lock import Lock

from nodepool.zk import models
from nodepool.zk.watch import WatchingKazooClient

# How long a test waits for an event at most by default: generous, since CI
# runs the suite two at a time on two cores beside a real image build; a
# passing test never waits that long.
WAIT_TIMEOUT = 60.0


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT_TIMEOUT,
             interval: float = 0.02, what: str | None = None) -> Any:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


def rewrite_config(tmp_path: Any, launcher: Any, text: str) -> None:
    """Replace the launcher's nodepool.yaml (in ``tmp_path``, as
    ``launcher_factory`` writes it) and wait until it is reloaded."""
    path = tmp_path / "nodepool.yaml"
    old = launcher.config
    path.write_text(text)
    os.utime(path, (time.time() + 5, time.time() + 5))
    wait_for(lambda: launcher.config is not old, what="config reload")


def wait_for_pass(worker: Any, timeout: float = WAIT_TIMEOUT, what: str | None = None) -> None:
    """Wait until ``worker`` has completed a pass that began after this
    call, so it has looked at everything that was true before the call.

    ``worker`` is any daemon thread with ``last_pass_started`` (monotonic
    time the latest completed pass began); it is woken first if it has a
    ``wake()``.  This is the proof a test needs before asserting that the
    daemon did *not* do something.
    """
    since = time.monotonic()
    wake = getattr(worker, "wake", None)
    if wake is not None:
        wake()
    wait_for(lambda: worker.last_pass_started >= since, timeout,
             what=what or f"a pass of {getattr(worker, 'name', worker)}")


def wait_for_pool_passes(launcher: Any, request_id: str | None = None,
                         timeout: float = WAIT_TIMEOUT) -> None:
    """Wait until every pool worker of ``launcher`` has looked at the open
    requests: first until its request cache shows ``request_id`` (when
    given), then for a pass of each worker begun after that."""
    if request_id is not None:
        wait_for(lambda: launcher.request_cache.get(request_id) is not None, timeout,
                 what=f"request {request_id} in the launcher's cache")
    for worker in list(launcher.pool_workers.values()):
        wait_for_pass(worker, timeout)


def assert_request_waits(zuul: FakeZuul, launcher: Any, request_id: str) -> None:
    """Assert that every pool of ``launcher`` has looked at the request and
    left it waiting: neither taken (no handler, still ``requested``) nor
    declined."""
    wait_for_pool_passes(launcher, request_id)
    for worker in list(launcher.pool_workers.values()):
        # A pass accepts by starting a handler; its thread marks the
        # request pending only later.
        assert request_id not in {h.request.id for h in list(worker.handlers)}, (
            f"{worker.name} took request {request_id}")
    request = zuul.request(request_id)
    assert request is not None, f"request {request_id} is gone"
    assert request["state"] == "requested", request
    assert not request.get("declined_by"), request


class FakeZuul:
    """Makes node requests exactly as Zuul 14 does, on its own session:
    persistent sequential znodes with Zuul's keys, node locks with kazoo's
    Lock recipe, in-use/used transitions, and request deletion."""

    def __init__(self, zk_info: Any, system_id: str | None = None) -> None:
        self.client = KazooClient(hosts=zk_info.hosts, use_ssl=True, certfile=zk_info.cert,
                                  keyfile=zk_info.key, ca=zk_info.ca)
        self.client.start(timeout=10)
        self.system_id = system_id or uuid.uuid4().hex
        self.locks: dict[str, Lock] = {}

    def close(self) -> None:
        for lock in self.locks.values():
            try:
                lock.release()
            except Exception:
                pass
        self.client.stop()
        self.client.close()

    def submit(self, labels: list[str], priority: str = "200", relative_priority: int = 0,
               provider: str | None = None, tenant: str = "tenant-one") -> str:
        now = time.time()
        data = {
            "requestor_data": {"build_set_uuid": uuid.uuid4().hex, "tenant_name": tenant,
                               "pipeline_name": "check", "job_uuid": uuid.uuid4().hex,
                               "job_name": "test-job", "span_info": None},
            "node_types": labels,
            "requestor": self.system_id,
            "created_time": now,
            "provider": provider,
            "state": "requested",
            "state_time": now,
            "relative_priority": relative_priority,
            "event_id": uuid.uuid4().hex,
            "tenant_name": tenant,
        }
        path = self.client.create(f"/nodepool/requests/{priority}-",
                                  json.dumps(data).encode(), sequence=True, makepath=True)
        return path.rsplit("/", 1)[1]

    def request(self, request_id: str) -> dict | None:
        try:
            data, _ = self.client.get(f"/nodepool/requests/{request_id}")
            return json.loads(data)
        except Exception:
            return None

    def node(self, node_id: str) -> dict | None:
        try:
            data, _ = self.client.get(f"/nodepool/nodes/{node_id}")
            return json.loads(data)
        except Exception:
            return None

    def wait_request(self, request_id: str, states=("fulfilled", "failed"),
                     timeout: float = WAIT_TIMEOUT) -> dict:
        def done():
            r = self.request(request_id)
            return r if r and r.get("state") in states else None
        return wait_for(done, timeout, what=f"request {request_id} in {states}")

    def write_node(self, node_id: str, **changes: Any) -> None:
        """Write a node record the way Zuul's ``storeNode`` does: every key
        read back (Zuul keeps them all), the keys Zuul always writes, and
        a new ``state_time`` whenever a state is set: Zuul's Node.state
        setter stamps it, on every in-use, used and hold write."""
        data = self.node(node_id)
        assert data is not None, f"node {node_id} is gone"
        for key in ("hold_job", "comment", "user_data", "tenant_name", "requestor"):
            data.setdefault(key, None)
        data.update(changes)
        data["id"] = node_id
        if "state" in changes:
            data["state_time"] = time.time()
        self.client.set(f"/nodepool/nodes/{node_id}", json.dumps(data).encode())

    def lock_node(self, node_id: str, timeout: float = 30) -> None:
        lock = Lock(self.client, f"/nodepool/nodes/{node_id}/lock")
        assert lock.acquire(timeout=timeout)
        self.locks[node_id] = lock

    def unlock_node(self, node_id: str) -> None:
        self.locks.pop(node_id).release()

    def accept(self, request_id: str) -> list[str]:
        """What Zuul's executor does on fulfilment: check, lock, in-use,
        delete the request."""
        request = self.request(request_id)
        assert request is not None, f"request {request_id} is gone"
        nodes = request["nodes"]
        for node_id in nodes:
            assert (self.node(node_id) or {}).get("allocated_to") == request_id
            self.lock_node(node_id)
            self.write_node(node_id, state=models.IN_USE,
                            user_data={"zuul_system": self.system_id})
        self.client.delete(f"/nodepool/requests/{request_id}")
        return nodes

    def return_nodes(self, node_ids: list[str], state: str = models.USED) -> None:
        for node_id in node_ids:
            if (self.node(node_id) or {}).get("state") == models.IN_USE:
                self.write_node(node_id, state=state)
            self.unlock_node(node_id)

    def delete_request(self, request_id: str) -> None:
        try:
            self.client.delete(f"/nodepool/requests/{request_id}")
        except Exception:
            pass


class NodeRecordWatch:
    """Every node record as it changes, seen through a persistent recursive
    watch on a session of its own (an observer, not a poller: ZooKeeper
    delivers each creation and deletion in order, so ``most`` is exactly
    the most records that ever existed at once).

    ``allocations`` maps each node id to every request it was seen
    allocated to; the record is read after each change it had.
    """

    ROOT = "/nodepool/nodes"

    def __init__(self, zk_info: Any) -> None:
        self.client = WatchingKazooClient(hosts=zk_info.hosts, use_ssl=True,
                                          certfile=zk_info.cert, keyfile=zk_info.key,
                                          ca=zk_info.ca)
        self.client.start(timeout=10)
        self._lock = threading.Lock()
        self.live: set[str] = set()
        self.most = 0
        self.allocations: dict[str, set[str]] = {}
        self.client.ensure_path(self.ROOT)
        self.client.add_recursive_watch(self.ROOT, self._on_event)
        for node_id in self.client.get_children(self.ROOT):
            self._created(node_id)

    def close(self) -> None:
        self.client.stop()
        self.client.close()

    def _created(self, node_id: str) -> None:
        with self._lock:
            self.live.add(node_id)
            self.most = max(self.most, len(self.live))
        self.client.get_async(f"{self.ROOT}/{node_id}").rawlink(
            lambda result: self._on_data(node_id, result))

    def _on_event(self, event: WatchedEvent) -> None:
        node_id = event.path[len(self.ROOT) + 1:]
        if not event.path.startswith(self.ROOT + "/") or "/" in node_id:
            return  # the root itself, or a lock under a node
        if event.type == EventType.CREATED:
            self._created(node_id)
        elif event.type == EventType.DELETED:
            with self._lock:
                self.live.discard(node_id)
        elif event.type == EventType.CHANGED:
            self.client.get_async(event.path).rawlink(
                lambda result: self._on_data(node_id, result))

    def _on_data(self, node_id: str, result: Any) -> None:
        try:
            data, _ = result.get()
            request = json.loads(data).get("allocated_to")
        except Exception:
            return  # deleted meanwhile, or not a record
        if request:
            with self._lock:
                self.allocations.setdefault(node_id, set()).add(request)


def fake_config(zk_info: Any, *, labels: list[dict] | None = None, pools: str | None = None,
                extra: str = "", provider_extra: str = "", max_servers: int = 20,
                name: str = "fake-provider") -> str:
    """A launcher config using the fake cloud with one pool."""
    labels = labels if labels is not None else [{"name": "fake-label", "min-ready": 0}]
    label_yaml = "".join(f"  - name: {lbl['name']}\n    min-ready: {lbl.get('min-ready', 0)}\n"
                         + (f"    max-ready-age: {lbl['max-ready-age']}\n"
                            if "max-ready-age" in lbl else "")
                         for lbl in labels)
    if pools is None:
        pool_labels = "".join(
            f"          - name: {lbl['name']}\n"
            f"            cloud-image: fake-image\n"
            f"            min-ram: 8192\n" for lbl in labels)
        pools = (f"      - name: main\n        max-servers: {max_servers}\n"
                 f"        labels:\n{pool_labels}")
    return (zk_info.config_yaml()
            + f"labels:\n{label_yaml}"
            + extra
            + "providers:\n"
            + f"  - name: {name}\n    cloud: fake\n"
            + provider_extra
            + "    cloud-images:\n      - name: fake-image\n        image-name: Fake Precise\n"
            + f"    pools:\n{pools}")


def drop_connection(zk_client: Any) -> None:
    """Make a :class:`ZooKeeperClient`'s connection drop (kazoo's own fault
    injection): it reconnects with the same session."""
    kazoo = zk_client.kazoo
    kazoo._call(_CONNECTION_DROP, kazoo.handler.async_result())


def expire_session(zk_client: Any) -> None:
    """Make a :class:`ZooKeeperClient` act as if its session expired, and
    wait for its new one.  The server ends the old session only when it
    times out, as after a real network split."""
    generation = zk_client.session_generation
    kazoo = zk_client.kazoo
    kazoo._call(_SESSION_EXPIRED, kazoo.handler.async_result())
    wait_for(lambda: zk_client.session_generation > generation and zk_client.connected,
             timeout=30, what="a new session")
