"""The static driver against real sshd processes on loopback addresses,
real ZooKeeper and an in-process launcher, with the test playing Zuul."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from kazoo.exceptions import NoNodeError

from nodepool.driver import registration
from nodepool.driver.registrar import Registrar
from nodepool.tests.functional.test_commands import CLI
from nodepool.tests.helpers import FakeZuul, assert_request_waits, rewrite_config, wait_for
from nodepool.tests.sshd import LoopbackSshd

PROVIDER = "static-provider"
LABELS = ("label-a", "label-b", "label-c", "shared")
RECORDS = Path(__file__).parent.parent / "fixtures" / "upstream_records"


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    """Retry unreachable hosts quickly so tests need not wait 30 s."""
    monkeypatch.setattr(registration, "INITIAL_BACKOFF", 0.2)
    monkeypatch.setattr(registration, "MAX_BACKOFF", 1.0)


@pytest.fixture
def sshd(tmp_path):
    """sshd(n) -> a started LoopbackSshd on 127.0.0.<n> (``start=False``
    only reserves its port); all are stopped after the test."""
    started: list[LoopbackSshd] = []

    def make(n: int, start: bool = True) -> LoopbackSshd:
        server = LoopbackSshd(tmp_path / f"sshd-{n}", address=f"127.0.0.{n}")
        started.append(server)
        if start:
            server.start()
        else:
            server.reserve_port()
        return server

    yield make
    for server in started:
        server.stop()


def host(server: LoopbackSshd, labels: str, **keys: Any) -> dict[str, Any]:
    return {"name": server.address, "connection-port": server.port, "labels": labels,
            "timeout": 2, **keys}


def static_config(zk_info, hosts: list[dict[str, Any]], **pool_keys: Any) -> str:
    pool = {"name": "main", **pool_keys, "nodes": hosts}
    rest = {
        "labels": [{"name": name, "min-ready": 0} for name in LABELS],
        "providers": [{"name": PROVIDER, "driver": "static", "pools": [pool]}],
    }
    return zk_info.config_yaml() + yaml.safe_dump(rest, sort_keys=False)


def records(zuul, server: LoopbackSshd | None = None) -> list[dict[str, Any]]:
    out = []
    for node_id in sorted(zuul.client.get_children("/nodepool/nodes")):
        data = zuul.node(node_id)
        if data is None or data["provider"] != PROVIDER or data["state"] == "deleted":
            continue
        if server is not None and (data["hostname"], data["connection_port"]) != (
                server.address, server.port):
            continue
        data["_id"] = node_id
        out.append(data)
    return out


def ready(zuul, server: LoopbackSshd | None = None) -> list[dict[str, Any]]:
    return [r for r in records(zuul, server)
            if r["state"] == "ready" and r["allocated_to"] is None]


def wait_ready(zuul, server: LoopbackSshd, count: int = 1, timeout: float = 20):
    return wait_for(lambda: len(ready(zuul, server)) == count and ready(zuul, server),
                    timeout, what=f"{count} ready record(s) of {server.address}")


def registrar(launcher) -> Registrar:
    return launcher.registrars[PROVIDER]


def wait_for_look(launcher, server: LoopbackSshd) -> None:
    """Wait until the registrar has looked at the host's records (and
    contacted it if it had to) in a look begun after this call."""
    since = time.monotonic()
    current = registrar(launcher)
    [identity] = [e.key for e in current.endpoints() if isinstance(e.key, tuple)
                  and (e.key[0], e.key[2]) == (server.address, server.port)]
    current.request_sync()
    wait_for(lambda: current.looked_at.get(identity, float("-inf")) >= since,
             what=f"the registrar's look at {server.address}")


def health(launcher, server: LoopbackSshd) -> str:
    [state] = [h["state"] for h in registrar(launcher).describe()
               if h["endpoint"].startswith(f"Static host {server.address} port {server.port} ")]
    return state


def test_hosts_registered_ready_with_scanned_keys(zk_info, zuul, launcher_factory, sshd):
    one, two = sshd(2), sshd(3)
    launcher_factory(static_config(zk_info, [
        host(one, "label-a", username="ci", **{"python-path": "/usr/bin/python3"}),
        host(two, ["label-b", "shared"], **{"max-parallel-jobs": 2, "shell-type": "sh"}),
    ], **{"node-attributes": {"executor-zone": "lab"}}))
    [a] = wait_ready(zuul, one)
    slots = wait_ready(zuul, two, 2)
    assert sorted(r["slot"] for r in slots) == [0, 1]
    expected_a = {
        "state": "ready", "provider": PROVIDER, "pool": "main", "type": ["label-a"],
        "launcher": "static driver", "external_id": one.address, "hostname": one.address,
        "interface_ip": one.address, "public_ipv4": one.address, "public_ipv6": None,
        "private_ipv4": None, "connection_type": "ssh", "connection_port": one.port,
        "ssh_port": one.port, "username": "ci", "python_path": "/usr/bin/python3",
        "shell_type": None, "host_keys": [one.host_key], "slot": 0,
        "attributes": {"executor-zone": "lab"}, "cloud": None, "region": None, "az": None,
        "resources": None, "allocated_to": None, "node_properties": {},
    }
    assert {k: a[k] for k in expected_a} == expected_a
    assert a["created_time"] == a["state_time"]
    assert {(r["type"][0], r["type"][1], r["shell_type"], r["username"], r["python_path"])
            for r in slots} == {("label-b", "shared", "sh", "zuul", "auto")}
    assert all(r["host_keys"] == [two.host_key] for r in slots)
    # Exactly the keys upstream writes for a static node (plus nothing).
    upstream = json.loads((RECORDS / "node_static_ready.json").read_text())
    assert set(a) - {"_id"} == set(upstream)


def test_request_served_then_host_reregistered_after_use(
        zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [first] = wait_ready(zuul, server)
    request_id = zuul.submit(["label-a"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled" and request["nodes"] == [first["_id"]]
    assert zuul.node(first["_id"])["allocated_to"] == request_id
    nodes = zuul.accept(request_id)
    # The host is busy: the next request waits, untouched (not declined).
    waiting = zuul.submit(["label-a"])
    assert_request_waits(zuul, launcher, waiting)
    zuul.return_nodes(nodes)
    request = zuul.wait_request(waiting)
    assert request["state"] == "fulfilled"
    [second_id] = request["nodes"]
    assert second_id != first["_id"]
    assert zuul.node(first["_id"]) is None
    second = zuul.node(second_id)
    assert (second["hostname"], second["slot"], second["host_keys"]) == (
        server.address, 0, [server.host_key])
    assert second["created_time"] > first["created_time"]


def test_unreachable_host_registered_once_its_sshd_starts(
        zk_info, zuul, launcher_factory, sshd):
    up, later = sshd(2), sshd(3, start=False)
    launcher = launcher_factory(static_config(zk_info, [
        host(up, "label-a"), host(later, "label-b")]))
    wait_ready(zuul, up)
    wait_for(lambda: health(launcher, later) == "unreachable", what="host marked down")
    wait_for_look(launcher, later)
    assert records(zuul, later) == []
    # A request for its label waits instead of failing.
    request_id = zuul.submit(["label-b"])
    assert_request_waits(zuul, launcher, request_id)
    later.start()
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    assert zuul.node(request["nodes"][0])["host_keys"] == [later.host_key]
    assert health(launcher, later) == "up"


def test_dead_host_is_not_handed_out(zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [record] = wait_ready(zuul, server)
    server.stop()
    request_id = zuul.submit(["label-a"])
    # The liveness check fails: the record is deregistered, the request
    # goes back to waiting.
    wait_for(lambda: zuul.node(record["_id"]) is None, what="dead host's record removed")
    wait_for(lambda: launcher.node_cache.get(record["_id"]) is None,
             what="the launcher's cache without the record")
    assert_request_waits(zuul, launcher, request_id)
    assert health(launcher, server) == "unreachable"
    assert records(zuul, server) == []
    server.start()
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    assert request["nodes"] != [record["_id"]]


def test_host_key_mismatch_is_not_offered(zk_info, zuul, launcher_factory, sshd):
    good, bad = sshd(2), sshd(3)
    launcher = launcher_factory(static_config(zk_info, [
        # A pinned key with a trailing comment still matches.
        host(good, "label-a", **{"host-key": good.host_key + " root@good"}),
        host(bad, "label-b", **{"host-key": [good.host_key]}),
    ]))
    wait_ready(zuul, good)
    wait_for(lambda: health(launcher, bad) == "host-key-mismatch", what="mismatch noticed")
    assert records(zuul, bad) == []


def test_host_key_checking_off_contacts_nothing(zk_info, zuul, launcher_factory, sshd):
    # Nothing listens on this port: registration and reuse must not care.
    silent = sshd(2, start=False)
    pinned = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBmZ7mH8t3m3n8Xo5QkGz5M3h1cM2x0dZzJ0wH3s9FqK"
    launcher_factory(static_config(zk_info, [
        host(silent, "label-a", **{"host-key-checking": False, "host-key": pinned})]))
    [record] = wait_ready(zuul, silent)
    assert record["host_keys"] == [pinned]
    request = zuul.wait_request(zuul.submit(["label-a"]))
    assert request["state"] == "fulfilled" and request["nodes"] == [record["_id"]]


def test_winrm_host_needs_only_its_port(zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    launcher_factory(static_config(zk_info, [
        host(server, "label-a", **{"connection-type": "winrm", "host-key": "ignored key"})]))
    [record] = wait_ready(zuul, server)
    assert record["connection_type"] == "winrm" and record["host_keys"] == []
    assert record["connection_port"] == server.port


def test_multinode_request_across_two_hosts(zk_info, zuul, launcher_factory, sshd):
    one, two = sshd(2), sshd(3)
    launcher_factory(static_config(zk_info, [
        host(one, "label-a shared"), host(two, "label-b shared")]))
    wait_ready(zuul, one)
    wait_ready(zuul, two)
    request_id = zuul.submit(["label-b", "label-a"])
    request = zuul.wait_request(request_id)
    assert request["state"] == "fulfilled"
    assert [zuul.node(n)["hostname"] for n in request["nodes"]] == [two.address, one.address]
    # Two "label-a" nodes: only one host has that label, one slot: never.
    impossible = zuul.wait_request(zuul.submit(["label-a", "label-a"]))
    assert impossible["state"] == "failed" and impossible["nodes"] == []
    # Two "shared" nodes fit (one per host) once the hosts are free again.
    zuul.return_nodes(zuul.accept(request_id))
    both = zuul.wait_request(zuul.submit(["shared", "shared"]))
    assert both["state"] == "fulfilled"
    assert {zuul.node(n)["hostname"] for n in both["nodes"]} == {one.address, two.address}


def test_label_no_host_has_fails_the_request(zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    request = zuul.wait_request(zuul.submit(["label-c"]))
    assert request["state"] == "failed"
    assert request["declined_by"] == [w.id for w in launcher.pool_workers.values()]


def test_config_change_adds_removes_and_relabels_hosts(
        zk_info, zuul, launcher_factory, sshd, tmp_path):
    a, b, c = sshd(2), sshd(3), sshd(4)
    launcher = launcher_factory(static_config(zk_info, [
        host(a, "label-a"), host(b, "label-b")]))
    wait_ready(zuul, a)
    [b_record] = wait_ready(zuul, b)
    # Host a is in use when it is removed from the configuration.
    request_id = zuul.submit(["label-a"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    in_use = zuul.accept(request_id)
    old_provider = launcher.providers[PROVIDER]
    serving = registrar(launcher)
    rewrite_config(tmp_path, launcher, static_config(zk_info, [
        host(b, "label-c"), host(c, "label-b")]))
    wait_for(lambda: launcher.providers[PROVIDER] is not old_provider, what="new provider")
    # The framework's registrar carries on with the new provider object.
    assert registrar(launcher) is serving
    assert serving.provider is launcher.providers[PROVIDER]
    wait_ready(zuul, c)
    # b's ready record is rewritten in place, not duplicated.
    wait_for(lambda: [r["type"] for r in ready(zuul, b)] == [["label-c"]], what="relabel")
    assert [r["_id"] for r in records(zuul, b)] == [b_record["_id"]]
    # The removed host's record stays while in use, and goes when returned.
    assert [r["state"] for r in records(zuul, a)] == ["in-use"]
    zuul.return_nodes(in_use)
    wait_for(lambda: records(zuul, a) == [], what="removed host's record deleted")
    since = time.monotonic()
    registrar(launcher).request_sync()
    wait_for(lambda: registrar(launcher).last_sync_started >= since, what="registrar sync")
    wait_for_look(launcher, b)
    wait_for_look(launcher, c)
    assert records(zuul, a) == []
    assert len(records(zuul, b)) == 1 and len(records(zuul, c)) == 1
    assert zuul.wait_request(zuul.submit(["label-c"]))["state"] == "fulfilled"


def test_max_parallel_jobs_change(zk_info, zuul, launcher_factory, sshd, tmp_path):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [
        host(server, "label-a", **{"max-parallel-jobs": 3})]))
    wait_ready(zuul, server, 3)
    request_id = zuul.submit(["label-a", "label-a"])
    assert zuul.wait_request(request_id)["state"] == "fulfilled"
    in_use = zuul.accept(request_id)
    busy_slots = sorted(zuul.node(n)["slot"] for n in in_use)
    rewrite_config(tmp_path, launcher, static_config(zk_info, [
        host(server, "label-a", **{"max-parallel-jobs": 1})]))
    # Only the unlocked ready slot goes; the busy ones stay until returned.
    wait_for(lambda: len(records(zuul, server)) == 2, what="free slot deregistered")
    assert sorted(r["slot"] for r in records(zuul, server)) == busy_slots
    zuul.return_nodes(in_use)
    [left] = wait_ready(zuul, server, 1)
    assert left["slot"] == 0
    wait_for_look(launcher, server)
    assert len(records(zuul, server)) == 1
    # Growing again fills the new slots.
    rewrite_config(tmp_path, launcher, static_config(zk_info, [
        host(server, "label-a", **{"max-parallel-jobs": 2})]))
    assert sorted(r["slot"] for r in wait_ready(zuul, server, 2)) == [0, 1]


def test_restarted_launcher_adopts_existing_records(zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    config = static_config(zk_info, [host(server, "label-a", **{"max-parallel-jobs": 2})])
    first = launcher_factory(config, name="a.yaml")
    before = sorted(r["_id"] for r in wait_ready(zuul, server, 2))
    first.stop()
    second = launcher_factory(config, name="b.yaml")
    wait_for_look(second, server)
    assert sorted(r["_id"] for r in records(zuul, server)) == before
    assert zuul.wait_request(zuul.submit(["label-a"]))["state"] == "fulfilled"


def test_record_deleted_by_hand_is_replaced(zk_info, zuul, launcher_factory, sshd):
    server = sshd(2)
    launcher = launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [record] = wait_ready(zuul, server)
    zuul.client.delete(f"/nodepool/nodes/{record['_id']}", recursive=True)
    [again] = wait_ready(zuul, server)
    assert again["_id"] != record["_id"] and again["slot"] == 0
    wait_for(lambda: launcher.node_cache.get(again["_id"]) is not None,
             what="the launcher's cache with the new record")
    wait_for_look(launcher, server)
    assert len(records(zuul, server)) == 1


class SlotWatcher:
    """Reads every static record over and over on its own session and
    remembers the most live records (not being deleted) each host and
    each slot ever had at one moment.

    Records are read newest first (node ids are ZooKeeper sequence
    numbers: creation order).  A record never comes back once it is being
    deleted, so an older record read live after a newer one was read
    live was live when the newer one was read: every record counted in
    one pass was live at the same moment, and a count above the slots is
    a real double registration, never an artefact of reading one by one.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.passes = 0
        self.most: dict[tuple[str, int], int] = {}
        self.most_per_slot: dict[tuple[str, int, Any], int] = {}
        self.seen: dict[tuple[str, int], set[str]] = {}
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True, name="SlotWatcher")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._running = False
        self._thread.join(10)

    def _run(self) -> None:
        self.client.ensure_path("/nodepool/nodes")
        while self._running:
            ids = sorted(self.client.get_children("/nodepool/nodes"), reverse=True)
            reads = [(i, self.client.get_async(f"/nodepool/nodes/{i}")) for i in ids]
            hosts: Counter[tuple[str, int]] = Counter()
            slots: Counter[tuple[str, int, Any]] = Counter()
            for node_id, result in reads:
                try:
                    data = json.loads(result.get()[0] or b"{}")
                except NoNodeError:
                    continue
                if data.get("provider") != PROVIDER or data["state"] in ("deleting",
                                                                          "deleted"):
                    continue
                host_key = (data["hostname"], data["connection_port"])
                hosts[host_key] += 1
                slots[(*host_key, data["slot"])] += 1
                self.seen.setdefault(host_key, set()).add(node_id)
            for key, count in hosts.items():
                self.most[key] = max(self.most.get(key, 0), count)
            for slot_key, count in slots.items():
                self.most_per_slot[slot_key] = max(self.most_per_slot.get(slot_key, 0), count)
            self.passes += 1


@pytest.fixture
def slot_watcher(zk_info):
    """A started SlotWatcher on a session of its own."""
    session = FakeZuul(zk_info)
    watcher = SlotWatcher(session.client)
    watcher.start()
    yield watcher
    watcher.stop()
    session.close()


def watched_again(watcher: SlotWatcher) -> None:
    """Wait until the watcher has read every record again after now."""
    passes = watcher.passes
    wait_for(lambda: watcher.passes > passes + 1, what="the watcher to look again")


def test_two_launchers_share_a_static_provider_without_double_registration(
        zk_info, zuul, launcher_factory, sshd, monkeypatch, slot_watcher):
    one, two = sshd(2), sshd(3)
    config = static_config(zk_info, [
        host(one, "label-a", **{"max-parallel-jobs": 2}), host(two, "label-a")])
    slots = {(one.address, one.port): 2, (two.address, two.port): 1}
    watcher: SlotWatcher = slot_watcher
    # Both start at once, so both find the hosts unregistered.
    with ThreadPoolExecutor(2) as pool:
        launchers = list(pool.map(
            lambda n: launcher_factory(config, name=f"{n}.yaml", hostname=n),
            ["launcher-1", "launcher-2"]))
    wait_ready(zuul, one, 2)
    wait_ready(zuul, two, 1)

    # Which launcher hands out which node (the last liveness check
    # before a node is allocated is made by the launcher claiming it).
    claimed_by: dict[str, str] = {}
    for launcher in launchers:
        provider = launcher.providers[PROVIDER]

        def checked(node, check=provider.check_reusable, name=launcher.hostname):
            if check(node):
                claimed_by[node.id] = name
                return True
            return False
        monkeypatch.setattr(provider, "check_reusable", checked)

    # Every slot used and registered again, round after round, until
    # both launchers have served requests.
    served_by: set[str] = set()
    rounds = 0
    while rounds < 3 or len(served_by) < 2:
        assert rounds < 15, f"only {served_by} served requests in {rounds} rounds"
        rounds += 1
        requests = [zuul.submit(["label-a"]) for _ in range(3)]
        nodes = []
        for request_id in requests:
            request = zuul.wait_request(request_id)
            assert request["state"] == "fulfilled", request
            served_by.update(claimed_by[n] for n in request["nodes"])
            nodes += zuul.accept(request_id)
        zuul.return_nodes(nodes)
        wait_ready(zuul, one, 2)
        wait_ready(zuul, two, 1)
    watched_again(watcher)

    assert watcher.most == slots
    assert set(watcher.most_per_slot.values()) == {1}
    assert sorted(watcher.most_per_slot) == sorted(
        [(one.address, one.port, 0), (one.address, one.port, 1), (two.address, two.port, 0)])
    # Each round replaced every record.
    assert {key: len(ids) for key, ids in watcher.seen.items()} == {
        key: count * (rounds + 1) for key, count in slots.items()}
    assert sorted(r["slot"] for r in ready(zuul, one)) == [0, 1]
    assert len(records(zuul)) == 3
    # The lock they share, where doc/source/compatibility.rst says.
    assert zuul.client.exists(f"/nodepool/registration/{PROVIDER}")


def test_delete_now_while_a_launcher_serves_the_host_registers_it_once(
        zk_info, zuul, launcher_factory, sshd, tmp_path, slot_watcher):
    # The command and the launcher both register the freed slot again;
    # only one of them may.
    server = sshd(2)
    launcher_factory(static_config(zk_info, [host(server, "label-a")]))
    [record] = wait_ready(zuul, server)
    seen = {record["_id"]}
    cli = CLI(tmp_path / "nodepool.yaml")
    for _ in range(3):
        cli.ok("delete", "--now", record["_id"])
        [record] = wait_ready(zuul, server)
        assert record["_id"] not in seen
        seen.add(record["_id"])
    watched_again(slot_watcher)
    assert slot_watcher.most == {(server.address, server.port): 1}
    assert slot_watcher.seen[(server.address, server.port)] == seen
    assert len(records(zuul, server)) == 1
