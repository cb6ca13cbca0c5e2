"""The ZooKeeper layer against a real ZooKeeper (TLS, private chroot)."""

import contextlib
import dataclasses
import json
import threading
from collections import Counter
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.connection import _CONNECTION_DROP
from kazoo.recipe.lock import Lock

from nodepool.tests.helpers import expire_session, wait_for
from nodepool.tests.tcp_cut import CuttingRelay
from nodepool.zk import (
    ZKLockException,
    ZKTLSRequired,
    ZooKeeper,
    ZooKeeperClient,
    build_hosts,
    models,
)
from nodepool.zk.cache import ImageCache, NodeCache, RequestCache, RequestLockCache
from nodepool.zk.components import ComponentRegistry, PoolComponent
from nodepool.zk.exceptions import LockOutcomeUnknown
from nodepool.zk.models import ImageBuild, ImageUpload, Node, NodeRequest


def make_node(state=models.READY, label="ubuntu", provider="p1"):
    node = Node()
    node.state = state
    node.type = [label]
    node.provider = provider
    node.pool = "main"
    return node


@contextlib.contextmanager
def requests_sent(kazoo):
    """Count the requests a kazoo client sends, by type (a spy on its
    request queue; what is sent is unchanged)."""
    sent: Counter[str] = Counter()
    call = kazoo._call

    def counting(request, async_object):
        sent[type(request).__name__] += 1
        return call(request, async_object)

    kazoo._call = counting
    try:
        yield sent
    finally:
        del kazoo._call


def test_build_hosts_with_chroot_and_ipv6():
    hosts = build_hosts([{"host": "zk1", "port": 2281, "chroot": "/np"},
                         {"host": "::1", "chroot": "/np"}])
    assert hosts == "zk1:2281,[::1]:2281/np"


def test_tls_is_required():
    with pytest.raises(ZKTLSRequired, match="zookeeper-tls"):
        ZooKeeperClient("127.0.0.1:2281")


def test_unreachable_zookeeper_names_hosts(zk_info):
    client = ZooKeeperClient("127.0.0.1:1", zk_info.cert, zk_info.key, zk_info.ca)
    with pytest.raises(Exception, match="127.0.0.1:1"):
        client.connect(timeout=1)


def _unrelated_ca(path):
    """A CA certificate that signs nothing ZooKeeper presents."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def test_tls_trusts_configured_ca_then_system_store(zk_info, tmp_path, monkeypatch,
                                                    caplog):
    """The configured CA is tried alone; a server certificate it does not
    sign is still accepted through the system's CA store (as kazoo does),
    with a warning telling the operator to fix zookeeper-tls."""
    client = ZooKeeperClient(zk_info.hosts, zk_info.cert, zk_info.key, zk_info.ca)
    with caplog.at_level("WARNING", logger="nodepool.zk.client"):
        client.connect(timeout=10)
    try:
        assert client.kazoo.get_children("/") == []
    finally:
        client.disconnect()
    assert "zookeeper-tls" not in caplog.text

    # OpenSSL's system store follows SSL_CERT_FILE: make it the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", zk_info.ca)
    other = _unrelated_ca(tmp_path / "other-ca.pem")
    client = ZooKeeperClient(zk_info.hosts, zk_info.cert, zk_info.key, other)
    with caplog.at_level("WARNING", logger="nodepool.zk.client"):
        client.connect(timeout=10)
    try:
        assert client.kazoo.get_children("/") == []
    finally:
        client.disconnect()
    assert f"the CA in zookeeper-tls ({other}) does not sign" in caplog.text


def test_multiread_returns_what_single_reads_return(zk):
    """Many reads in a few requests, under the chroot: each result is what
    kazoo's own get or get_children gives, failures as exceptions."""
    from kazoo.exceptions import NoNodeError

    from nodepool.zk import multiread

    kazoo = zk.kazoo
    kazoo.create("/mr/a", b'{"x": 1}', makepath=True)
    kazoo.create("/mr/empty", b"")
    kazoo.create("/mr/\u00e9t\u00e9", "\u00e9".encode())
    for i in range(3):
        kazoo.create(f"/mr/a/child-{i}")
    ops = [(multiread.GET_DATA, "/mr/a"), (multiread.GET_CHILDREN, "/mr/a"),
           (multiread.GET_DATA, "/mr/missing"), (multiread.GET_CHILDREN, "/mr/missing"),
           (multiread.GET_DATA, "/mr/empty"), (multiread.GET_CHILDREN, "/mr/empty"),
           (multiread.GET_DATA, "/mr/\u00e9t\u00e9"), (multiread.GET_CHILDREN, "/")]
    # More operations than one request carries.
    ops = ops * (multiread.BATCH // len(ops) + 2)
    results = multiread.read_many(kazoo, ops)
    assert len(results) == len(ops)
    for (op, path), got in zip(ops, results, strict=True):
        try:
            expected = kazoo.get(path) if op == multiread.GET_DATA else kazoo.get_children(path)
        except NoNodeError:
            assert isinstance(got, NoNodeError)
            continue
        if op == multiread.GET_DATA:
            assert got == expected
        else:
            assert sorted(got) == sorted(expected)
    assert sorted(results[7]) == ["mr"]
    assert [got[0] for got in multiread.read_many(kazoo, ops[:1], stats=False)] == [
        b'{"x": 1}']


def test_node_ids_are_sequential_and_readable(zk):
    first, second = make_node(), make_node()
    zk.store_node(first)
    zk.store_node(second)
    assert first.id == "0000000000"
    assert second.id == "0000000001"
    raw, _ = zk.kazoo.get("/nodepool/nodes/0000000000")
    data = json.loads(raw)
    assert data["state"] == "ready" and data["type"] == ["ubuntu"]
    assert "id" not in data
    assert zk.get_node("0000000001").type == ["ubuntu"]


def test_node_lock_is_kazoo_lock_recipe(zk, zk_info):
    node = make_node()
    zk.store_node(node)
    zk.lock_node(node, blocking=False)
    contenders = zk.node_lock_contenders(node.id)
    assert len(contenders) == 1
    assert "__lock__" in contenders[0] and contenders[0][-10:].isdigit()
    # Another session (as Zuul would) cannot take it.
    other = KazooClient(hosts=zk_info.hosts, use_ssl=True, certfile=zk_info.cert,
                        keyfile=zk_info.key, ca=zk_info.ca)
    other.start(timeout=10)
    try:
        lock = Lock(other, f"/nodepool/nodes/{node.id}/lock")
        assert not lock.acquire(blocking=False)
        zk.unlock_node(node)
        assert lock.acquire(timeout=5)
        # ...and we cannot take it while Zuul holds it.
        fresh = zk.get_node(node.id)
        with pytest.raises(ZKLockException):
            zk.lock_node(fresh, blocking=False)
        lock.release()
    finally:
        other.stop()
        other.close()


def test_node_lock_takes_three_round_trips(zk):
    """Contender, children, record: the lock dir made with the record is
    not looked for again on every lock."""
    node = make_node()
    zk.store_node(node)
    zk.lock_node(node)
    zk.unlock_node(node)
    with requests_sent(zk.kazoo) as sent:
        zk.lock_node(node, blocking=False)
    assert sent == Counter(Create=1, GetChildren=1, GetData=1)
    assert len(zk.node_lock_contenders(node.id)) == 1
    zk.unlock_node(node)


def test_node_lock_makes_a_missing_lock_dir(zk):
    # A record written by someone who never locked it has no lock dir.
    zk.kazoo.create("/nodepool/nodes/0000000042",
                    make_node().serialize(), makepath=True)
    node = Node("0000000042")
    zk.lock_node(node, blocking=False)
    assert node.state == models.READY
    assert len(zk.node_lock_contenders(node.id)) == 1
    zk.unlock_node(node)


def test_locking_a_deleted_node_fails_without_resurrecting_it(zk):
    node = make_node()
    zk.store_node(node)
    stale = zk.get_node(node.id)
    zk.kazoo.delete(f"/nodepool/nodes/{node.id}", recursive=True)
    with pytest.raises(ZKLockException):
        zk.lock_node(stale, blocking=False)
    assert zk.kazoo.exists(f"/nodepool/nodes/{node.id}") is None


def _allocate(node):
    if node.state != models.READY or node.allocated_to is not None:
        return False
    node.allocated_to = "200-0000000001"
    return True


def _ready_node(zk):
    node = make_node()
    zk.store_node(node)
    # Locked and released once, as every node the launcher made.
    zk.lock_node(node)
    zk.unlock_node(node)
    return zk.get_node(node.id)


def test_claim_ready_node_in_one_transaction(zk, zk_info):
    node = _ready_node(zk)
    with requests_sent(zk.kazoo) as sent:
        assert zk.claim_node(node, _allocate)
    assert sent == Counter(Transaction=1)
    assert node.lock is not None and node.allocated_to == "200-0000000001"
    stored = zk.get_node(node.id)
    assert stored.allocated_to == "200-0000000001" and stored.version == node.version
    contenders = zk.node_lock_contenders(node.id)
    assert len(contenders) == 1 and contenders[0][-10:].isdigit()
    # Zuul's executor waits for the lock, and gets it once released.
    other = _other_session(zk_info)
    try:
        lock = Lock(other, f"/nodepool/nodes/{node.id}/lock")
        assert not lock.acquire(blocking=False)
        zk.unlock_node(node)
        assert lock.acquire(timeout=5)
        lock.release()
    finally:
        other.stop()
        other.close()


def test_claim_node_held_elsewhere(zk, zk_info):
    node = _ready_node(zk)
    other = _other_session(zk_info)
    try:
        lock = Lock(other, f"/nodepool/nodes/{node.id}/lock")
        assert lock.acquire(blocking=False)
        with pytest.raises(ZKLockException):
            zk.claim_node(zk.get_node(node.id), _allocate)
        assert zk.get_node(node.id).allocated_to is None
        # Their lock is untouched: still theirs, and the only contender.
        assert zk.node_lock_contenders(node.id) == [lock.node]
        assert lock.is_acquired
        lock.release()
    finally:
        other.stop()
        other.close()


def test_claim_node_changed_since_cached(zk):
    cached = _ready_node(zk)
    fresh = zk.get_node(cached.id)
    fresh.state = models.USED
    zk.store_node(fresh)
    assert not zk.claim_node(cached, _allocate)
    assert cached.state == models.USED and cached.lock is None
    assert zk.get_node(cached.id).allocated_to is None
    assert zk.node_lock_contenders(cached.id) == []


def test_claim_node_without_lock_dir(zk):
    zk.kazoo.create("/nodepool/nodes/0000000042", make_node().serialize(), makepath=True)
    node = zk.get_node("0000000042")
    assert zk.claim_node(node, _allocate)
    assert zk.get_node(node.id).allocated_to == "200-0000000001"
    assert len(zk.node_lock_contenders(node.id)) == 1
    zk.unlock_node(node)


def test_lock_refreshes_data(zk):
    node = make_node()
    zk.store_node(node)
    stale = zk.get_node(node.id)
    node.state = models.USED
    zk.store_node(node)
    zk.lock_node(stale, blocking=False)
    assert stale.state == models.USED
    zk.unlock_node(stale)


def test_delete_node_removes_record_and_lock(zk):
    node = make_node()
    zk.store_node(node)
    zk.lock_node(node)
    zk.delete_node(node)
    assert zk.get_node(node.id) is None
    assert node.lock is None


def test_get_nodes_reports_locks_and_skips_garbage(zk):
    good = make_node()
    zk.store_node(good)
    zk.kazoo.create("/nodepool/nodes/0000000099", b"{not json")
    zk.kazoo.create("/nodepool/nodes/0000000098", b"")
    zk.lock_node(good)
    nodes = zk.get_nodes(with_locks=True)
    assert [(n.id, n.locked) for n in nodes] == [(good.id, True)]


def test_request_ids_and_order(zk):
    ids = []
    for prio, rel in (("300", 0), ("200", 5), ("200", 1), ("100", 9)):
        r = NodeRequest()
        r.state = models.REQUESTED
        r.node_types = ["ubuntu"]
        r.relative_priority = rel
        zk.store_request(r, priority=prio)
        ids.append(r.id)
    assert ids[0].startswith("300-") and ids[0][3] == "-" and len(ids[0]) == 14
    ordered = [r.id for r in zk.get_requests()]
    assert ordered == [ids[3], ids[2], ids[1], ids[0]]
    data = json.loads(zk.kazoo.get(f"/nodepool/requests/{ids[0]}")[0])
    assert set(NodeRequest.KEYS) <= set(data)
    assert data["event_id"]


def test_request_lock_path_and_vanished_request(zk):
    r = NodeRequest()
    r.state = models.REQUESTED
    zk.store_request(r)
    zk.lock_request(r, blocking=False)
    assert zk.kazoo.get_children(f"/nodepool/requests-lock/{r.id}")
    zk.unlock_request(r)
    zk.delete_request(r)
    with pytest.raises(ZKLockException):
        zk.lock_request(r, blocking=False)


def _to_pending(request):
    if request.state != models.REQUESTED or "me" in request.declined_by:
        return False
    request.state = models.PENDING
    return True


def _new_request(zk):
    r = NodeRequest()
    r.state = models.REQUESTED
    r.node_types = ["ubuntu"]
    zk.store_request(r, priority="200")
    # A copy as a cache has it (with the version it was read at).
    return zk.get_request(r.id)


def _other_session(zk_info):
    other = KazooClient(hosts=zk_info.hosts, use_ssl=True, certfile=zk_info.cert,
                        keyfile=zk_info.key, ca=zk_info.ca)
    other.start(timeout=10)
    return other


def test_claim_new_request_in_one_transaction(zk, zk_info):
    # The first request ever also makes the root of the request locks.
    first = _new_request(zk)
    assert zk.claim_request(first, _to_pending)
    request = _new_request(zk)
    with requests_sent(zk.kazoo) as sent:
        assert zk.claim_request(request, _to_pending)
    assert sent == Counter(Transaction=1)
    assert request.state == models.PENDING and request.lock is not None
    stored = zk.get_request(request.id)
    assert stored.state == models.PENDING and stored.version == request.version
    # Exactly kazoo's recipe, as Zuul sees it: held until released.
    contenders = zk.request_lock_contenders(request.id)
    assert len(contenders) == 1 and contenders[0][-10:].isdigit()
    other = _other_session(zk_info)
    try:
        lock = Lock(other, f"/nodepool/requests-lock/{request.id}")
        assert not lock.acquire(blocking=False)
        zk.unlock_request(request)
        assert lock.acquire(blocking=False)
        lock.release()
    finally:
        other.stop()
        other.close()


def test_claim_rereads_a_request_changed_since_cached(zk):
    cached = _new_request(zk)
    fresh = zk.get_request(cached.id)
    fresh.declined_by.append("me")
    zk.store_request(fresh)
    assert not zk.claim_request(cached, _to_pending)
    assert cached.lock is None and "me" in cached.declined_by
    stored = zk.get_request(cached.id)
    assert stored.state == models.REQUESTED
    assert zk.request_lock_contenders(cached.id) == []


def test_claim_request_locked_before(zk, zk_info):
    request = _new_request(zk)
    other = _other_session(zk_info)
    try:
        # Zuul revising the priority: lock, write, unlock.
        lock = Lock(other, f"/nodepool/requests-lock/{request.id}")
        assert lock.acquire(blocking=False)
        with pytest.raises(ZKLockException):
            zk.claim_request(zk.get_request(request.id), _to_pending)
        assert zk.get_request(request.id).state == models.REQUESTED
        lock.release()
    finally:
        other.stop()
        other.close()
    assert zk.claim_request(request, _to_pending)
    assert zk.get_request(request.id).state == models.PENDING
    assert len(zk.request_lock_contenders(request.id)) == 1
    zk.unlock_request(request)
    assert zk.request_lock_contenders(request.id) == []


def test_claim_vanished_request(zk):
    request = _new_request(zk)
    zk.kazoo.delete(f"/nodepool/requests/{request.id}")
    with pytest.raises(ZKLockException):
        zk.claim_request(request, _to_pending)
    assert zk.kazoo.exists(f"/nodepool/requests/{request.id}") is None


def test_fulfil_unlocks_in_the_same_transaction(zk):
    request = _new_request(zk)
    assert zk.claim_request(request, _to_pending)
    nodes = [make_node(), make_node()]
    for node in nodes:
        zk.store_node(node)
        zk.lock_node(node)
    request.state = models.FULFILLED
    request.nodes = [n.id for n in nodes]
    with requests_sent(zk.kazoo) as sent:
        assert zk.store_request_and_unlock(request, nodes)
    assert sent == Counter(Transaction=1)
    assert request.lock is None and all(n.lock is None for n in nodes)
    stored = zk.get_request(request.id)
    assert stored.state == models.FULFILLED and stored.nodes == request.nodes
    assert stored.version == request.version
    assert zk.request_lock_contenders(request.id) == []
    assert all(zk.node_lock_contenders(n.id) == [] for n in nodes)


def test_fulfil_of_a_vanished_request_changes_nothing(zk):
    request = _new_request(zk)
    assert zk.claim_request(request, _to_pending)
    node = make_node()
    zk.store_node(node)
    zk.lock_node(node)
    zk.kazoo.delete(f"/nodepool/requests/{request.id}")
    request.state = models.FULFILLED
    request.nodes = [node.id]
    assert not zk.store_request_and_unlock(request, [node])
    assert zk.kazoo.exists(f"/nodepool/requests/{request.id}") is None
    assert node.lock is not None and len(zk.node_lock_contenders(node.id)) == 1
    assert request.lock is not None and len(zk.request_lock_contenders(request.id)) == 1
    zk.unlock_node(node)
    zk.unlock_request(request)


def test_stale_request_locks_purged(zk):
    r = NodeRequest()
    r.state = models.REQUESTED
    zk.store_request(r)
    zk.lock_request(r)
    zk.unlock_request(r)
    zk.delete_request(r)
    assert zk.delete_stale_request_locks(max_age=3600) == []
    assert zk.delete_stale_request_locks(max_age=0) == [r.id]


def test_stale_request_lock_ages_are_read_once(zk):
    """A cleanup pass looks each lock dir of a vanished request up once;
    later passes spend no request on it until it is old enough."""
    ids = []
    for _ in range(3):
        r = NodeRequest()
        r.state = models.REQUESTED
        zk.store_request(r)
        zk.lock_request(r)
        zk.unlock_request(r)
        zk.delete_request(r)
        ids.append(r.id)
    with requests_sent(zk.kazoo) as sent:
        assert zk.delete_stale_request_locks(max_age=3600) == []
    assert sent["Exists"] == 3
    with requests_sent(zk.kazoo) as sent:
        assert zk.delete_stale_request_locks(max_age=3600) == []
    assert sent["Exists"] == 0
    assert sorted(zk.delete_stale_request_locks(max_age=0)) == sorted(ids)
    assert zk.kazoo.get_children("/nodepool/requests-lock") == []


def test_image_records(zk):
    build = ImageBuild()
    build.state = models.READY
    build.formats = ["qcow2"]
    bid = zk.store_build("ubuntu", build)
    assert len(bid) == 32
    upload = ImageUpload()
    upload.state = models.READY
    upload.external_id = "img-1"
    uid = zk.store_upload("ubuntu", bid, "p1", upload)
    assert uid.isdigit() and len(uid) == 10
    assert zk.most_recent_upload("ubuntu", "p1").external_id == "img-1"
    assert zk.get_builds("ubuntu", [models.READY])[0].formats == ["qcow2"]
    zk.set_image_paused("ubuntu", True)
    assert zk.is_image_paused("ubuntu")
    assert not zk.delete_build("ubuntu", bid)
    zk.delete_upload("ubuntu", bid, "p1", uid)
    assert zk.delete_build("ubuntu", bid)


def test_node_cache_follows_changes_and_locks(zk):
    cache = NodeCache(zk)
    seen = []
    cache.add_listener(lambda key, old, new: seen.append(key))
    cache.start()
    try:
        assert cache.wait_synced(10)
        node = make_node()
        zk.store_node(node)
        wait_for(lambda: cache.get(node.id) is not None)
        zk.lock_node(node)
        wait_for(lambda: cache.get(node.id).locked)
        node.state = models.IN_USE
        zk.store_node(node)
        wait_for(lambda: cache.get(node.id).state == models.IN_USE)
        assert cache.get(node.id).locked
        zk.unlock_node(node)
        wait_for(lambda: not cache.get(node.id).locked)
        zk.kazoo.create("/nodepool/nodes/0000000077", b"garbage")
        zk.delete_node(node)
        wait_for(lambda: cache.get(node.id) is None)
        assert cache.get("0000000077") is None
        assert node.id in seen
    finally:
        cache.stop()


def test_node_cache_counts_a_lock_event_seen_twice_once(zk):
    """As for request locks: a lock's creation applied again over a
    snapshot that shows it does not leave the node looking locked once
    the lock is gone."""
    cache = NodeCache(zk)
    cache.start()
    try:
        assert cache.wait_synced(10)
        node = make_node()
        zk.store_node(node)
        zk.lock_node(node)
        wait_for(lambda: cache.get(node.id) is not None and cache.get(node.id).locked)
        [child] = zk.node_lock_contenders(node.id)
        cache._on_created(f"/nodepool/nodes/{node.id}/lock/{child}")
        assert cache.get(node.id).lock_contenders == 1
        node.state = models.IN_USE
        zk.store_node(node)
        wait_for(lambda: cache.get(node.id).state == models.IN_USE)
        assert cache.get(node.id).lock_contenders == 1
        zk.unlock_node(node)
        wait_for(lambda: not cache.get(node.id).locked, what="unlocked")
        cache._on_deleted(f"/nodepool/nodes/{node.id}/lock/{child}")
        assert cache.get(node.id).lock_contenders == 0
    finally:
        cache.stop()


def test_cache_resyncs_after_connection_drop(zk, zk_info):
    cache = RequestCache(zk)
    cache.start()
    writer = zk_info.client()
    writer.connect(10)
    wzk = ZooKeeper(writer)
    try:
        assert cache.wait_synced(10)
        first = NodeRequest()
        first.state = models.REQUESTED
        wzk.store_request(first)
        wait_for(lambda: cache.get(first.id) is not None)
        # Drop our connection; make changes while we are away.
        zk.kazoo._call(_CONNECTION_DROP, zk.kazoo.handler.async_result())
        wzk.delete_request(first)
        second = NodeRequest()
        second.state = models.REQUESTED
        wzk.store_request(second)
        wait_for(lambda: cache.get(second.id) is not None and cache.get(first.id) is None)
        # The watch is back: later changes arrive too.
        second.state = models.PENDING
        wzk.store_request(second)
        wait_for(lambda: cache.get(second.id).state == models.PENDING)
    finally:
        cache.stop()
        writer.disconnect()


def _keep_writing_across_a_drop(zk, write, progress) -> None:
    """Call ``write()`` over and over on a thread; once ``progress()`` shows
    some writes, drop ``zk``'s connection, and stop after 50 more."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            write()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        wait_for(lambda: progress() > 20)
        before = progress()
        zk.kazoo._call(_CONNECTION_DROP, zk.kazoo.handler.async_result())
        wait_for(lambda: progress() > before + 50, timeout=60)
    finally:
        stop.set()
        thread.join()


def test_cache_never_goes_back_across_a_resync(zk, zk_info):
    """Events that come while a resync reads its snapshot are read and
    applied after it, and the ones after those are read at once: each
    record's version only ever goes up, and the cache ends at the last."""
    cache = RequestCache(zk)
    versions: list[int] = []
    cache.add_listener(lambda key, old, new: new is not None and versions.append(new.version))
    cache.start()
    writer = zk_info.client()
    writer.connect(10)
    wzk = ZooKeeper(writer)
    request = NodeRequest()
    request.state = models.REQUESTED
    wzk.store_request(request)

    def write() -> None:
        request.relative_priority += 1
        wzk.store_request(request)

    try:
        assert cache.wait_synced(10)
        # Changes keep coming through the resync and after it.
        _keep_writing_across_a_drop(zk, write, lambda: len(versions))
        wait_for(lambda: cache.get(request.id).version == request.version)
        assert versions == sorted(versions)
        assert cache.barrier(10)
        assert cache.get(request.id).relative_priority == request.relative_priority
    finally:
        cache.stop()
        writer.disconnect()


def test_request_lock_cache_counts_an_event_seen_twice_once(zk, zk_info):
    """A resync applies the events held back while it read its snapshot
    after that snapshot, which may already show them: the contender counts
    stay right, and the last contender's going is heard."""
    cache = RequestLockCache(zk)
    heard: list[tuple[str, Any, Any]] = []
    cache.add_listener(lambda key, old, new: heard.append((key, old, new)))
    cache.start()
    other = zk_info.client()
    other.connect(10)
    try:
        assert cache.wait_synced(10)
        lock = Lock(other.client, "/nodepool/requests-lock/200-0000000001")
        assert lock.acquire(blocking=False)
        wait_for(lambda: cache.contenders("200-0000000001") == 1)
        [child] = other.client.get_children("/nodepool/requests-lock/200-0000000001")
        # The creation again, as a resync replays it over its snapshot.
        cache._on_created(f"/nodepool/requests-lock/200-0000000001/{child}")
        assert cache.contenders("200-0000000001") == 1
        lock.release()
        wait_for(lambda: ("200-0000000001", 1, 0) in heard, what="last contender gone")
        assert cache.contenders("200-0000000001") == 0
        # A removal seen twice does not go below none either.
        cache._on_deleted(f"/nodepool/requests-lock/200-0000000001/{child}")
        assert cache.contenders("200-0000000001") == 0
    finally:
        cache.stop()
        other.disconnect()


def test_reads_at_once_only_from_watch_callbacks(zk):
    from nodepool.zk.watch import ServerWatchedEvent
    event = ServerWatchedEvent(None, None, "/nodepool/nodes")
    event.server_path = zk.kazoo.chroot + "/nodepool/nodes"
    with pytest.raises(RuntimeError, match="watch callbacks"):
        zk.kazoo.read_now(event)


def test_image_cache(zk):
    cache = ImageCache(zk)
    cache.start()
    try:
        assert cache.wait_synced(10)
        build = ImageBuild()
        build.state = models.READY
        bid = zk.store_build("ubuntu", build)
        upload = ImageUpload()
        upload.state = models.READY
        upload.external_id = "x"
        zk.store_upload("ubuntu", bid, "p1", upload)
        wait_for(lambda: cache.latest_upload("ubuntu", "p1") is not None)
        assert cache.latest_upload("ubuntu", "p1").external_id == "x"
        zk.set_image_paused("ubuntu", True)
        wait_for(lambda: "ubuntu" in cache.paused)
    finally:
        cache.stop()


def test_components_reregister_after_session_loss(zk, zk_client):
    pool = PoolComponent()
    pool.id = "host-PoolWorker.p-main-abc"
    pool.name = "main"
    pool.provider_name = "p"
    pool.supported_labels = ["ubuntu"]
    pool.register(zk)
    registry = ComponentRegistry(zk)
    [found] = registry.all("pool")
    assert found.id == pool.id and found.supported_labels == ["ubuntu"]
    assert "__lock__" not in pool.path and pool.path.rsplit("/", 1)[1][-10:].isdigit()
    raw = json.loads(zk.kazoo.get(pool.path)[0])
    assert raw["kind"] == "pool" and raw["paused"] is False
    # Expire the session: the ephemeral record dies and must come back.
    # (Injected, so the server keeps the old session's record until it
    # times out: that one must not count as ours.)
    expire_session(zk_client)

    def owned_by_this_session():
        stat = zk.kazoo.exists(pool.path)
        return stat is not None and stat.ephemeralOwner == zk.kazoo.client_id[0]

    wait_for(owned_by_this_session, timeout=60, what="record of the new session")
    assert len(registry.all("pool")) == 1
    pool.update(paused=True)
    assert registry.all("pool")[0].paused is True
    pool.unregister()
    assert registry.all("pool") == []


# -- Our own writes are not read back --------------------------------------


@contextlib.contextmanager
def reads_sent_at_once(kazoo):
    """The paths a client's caches read at once (from watch callbacks and
    replies), on the server's side of the chroot (a spy on our own
    connection class; what is sent is unchanged)."""
    paths: list[str] = []
    connection = kazoo._connection
    read = connection.read_now

    def counting(path):
        paths.append(path)
        return read(path)

    connection.read_now = counting
    try:
        yield paths
    finally:
        del connection.read_now


def test_cache_takes_own_writes_from_the_reply(zk):
    """A record this process writes (a set, or a transaction's set) is
    applied from what was written and the version the reply gave: the
    cache shows it without reading it back."""
    nodes, requests = NodeCache(zk), RequestCache(zk)
    nodes.start()
    requests.start()
    try:
        assert nodes.wait_synced(10) and requests.wait_synced(10)
        node = make_node()
        zk.store_node(node)  # a create: its id comes with the reply
        request = _new_request(zk)
        wait_for(lambda: nodes.get(node.id) is not None
                 and requests.get(request.id) is not None)
        with reads_sent_at_once(zk.kazoo) as reads:
            node.state = models.IN_USE
            zk.store_node(node)
            wait_for(lambda: nodes.get(node.id).state == models.IN_USE)
            assert nodes.get(node.id).version == node.version
            cached = nodes.get(node.id)
            claimed = Node.fromDict(cached.toDict(), cached.id)
            claimed.version = cached.version

            def mark_used(n):
                n.state = models.USED
                return True

            assert zk.claim_node(claimed, mark_used)
            wait_for(lambda: nodes.get(node.id).state == models.USED
                     and nodes.get(node.id).locked)
            assert nodes.get(node.id).version == claimed.version
            fresh = NodeRequest.fromDict(requests.get(request.id).toDict(), request.id)
            fresh.version = requests.get(request.id).version
            assert zk.claim_request(fresh, _to_pending)
            wait_for(lambda: requests.get(request.id).state == models.PENDING)
            assert requests.get(request.id).version == fresh.version
        record_reads = [p for p in reads
                        if p.endswith((f"/nodes/{node.id}", f"/requests/{request.id}"))]
        assert record_reads == []
        zk.unlock_node(claimed)
        zk.unlock_request(fresh)
    finally:
        nodes.stop()
        requests.stop()


def test_cache_reads_back_an_event_our_failed_write_covered(zk, zk_info):
    """Another session's change that comes while our write to the same
    record is in flight waits for our reply; when our write fails it is
    read then, and the cache shows it."""
    cache = NodeCache(zk)
    cache.start()
    other = _other_session(zk_info)
    try:
        assert cache.wait_synced(10)
        node = make_node()
        zk.store_node(node)
        wait_for(lambda: cache.get(node.id) is not None)
        path = f"/nodepool/nodes/{node.id}"
        cache.own_write_started(path)
        data = json.loads(other.get(path)[0])
        data["state"] = models.HOLD
        other.set(path, json.dumps(data).encode())
        # The change waits for the reply to "our write".
        wait_for(lambda: path in cache._absorbed)
        assert cache.get(node.id).state == models.READY
        cache.own_write_replied(path, None, None)
        wait_for(lambda: cache.get(node.id).state == models.HOLD)
    finally:
        cache.stop()
        other.stop()


def test_cache_loses_no_change_racing_our_writes(zk, zk_info):
    """Our writes and another session's writes to one record, as fast as
    they go: every time, the cache ends where ZooKeeper is."""
    cache = NodeCache(zk)
    cache.start()
    other = _other_session(zk_info)
    try:
        assert cache.wait_synced(10)
        node = make_node()
        zk.store_node(node)
        path = f"/nodepool/nodes/{node.id}"
        for round_ in range(30):
            def theirs(round_=round_):
                data = json.loads(other.get(path)[0])
                data["comment"] = f"theirs {round_}"
                other.set(path, json.dumps(data).encode())

            thread = threading.Thread(target=theirs)
            thread.start()
            node.comment = f"ours {round_}"
            zk.store_node(node)
            thread.join()
            final = json.loads(zk.kazoo.get(path)[0])["comment"]
            wait_for(lambda final=final: cache.get(node.id).comment == final)
            assert cache.barrier(10)
            assert cache.get(node.id).comment == final
    finally:
        cache.stop()
        other.stop()


# -- Node records made with the request's claim ------------------------------


def _new_init_node(request):
    node = make_node(state=models.INIT)
    node.allocated_to = request.id
    return node


def _roots_made(zk):
    """The node root and the request locks' root exist, as they do once a
    launcher has run (the first claim ever makes the latter)."""
    zk.store_node(make_node())
    first = _new_request(zk)
    assert zk.claim_request(first, _to_pending)


def test_claim_creates_the_new_nodes_in_the_same_transaction(zk):
    _roots_made(zk)
    request = _new_request(zk)
    nodes = [_new_init_node(request), _new_init_node(request)]
    with requests_sent(zk.kazoo) as sent:
        assert zk.claim_request(request, _to_pending, new_nodes=nodes)
    assert sent == Counter(Transaction=1)
    assert all(n.id is not None and n.version == 0 for n in nodes)
    for node in nodes:
        stored = zk.get_node(node.id)
        assert stored.state == models.INIT and stored.allocated_to == request.id
        assert not zk.kazoo.exists(f"/nodepool/nodes/{node.id}/lock")
    # Children of the node root, numbered as any node (no sibling of it).
    assert set(zk.node_ids()) >= {n.id for n in nodes}
    assert [c for c in zk.kazoo.get_children("/nodepool") if c.startswith("nodes")] == ["nodes"]
    # What the launch does next: lock and mark building in one round trip.
    node = nodes[0]

    def building(n):
        n.state = models.BUILDING

    with requests_sent(zk.kazoo) as sent:
        zk.lock_new_node(node, building)
    assert sent == Counter(Transaction=1)
    assert zk.get_node(node.id).state == models.BUILDING
    assert len(zk.kazoo.get_children(f"/nodepool/nodes/{node.id}/lock")) == 1
    # One nobody launches is removed.
    zk.delete_unused_node(nodes[1])
    assert zk.get_node(nodes[1].id) is None


def test_a_new_node_lock_whose_reply_was_lost_is_found_again(zk_info):
    """The transaction that locks a new node lands, and the connection
    drops before its reply: it may or may not have landed.  Locking again
    with the same lock finds our contender instead of waiting behind it
    (for ever: it is our own session's) and leaves no second one."""
    relay = CuttingRelay(zk_info.host, zk_info.port)
    client = dataclasses.replace(zk_info, host="127.0.0.1", port=relay.port).client()
    client.connect(10)
    zk = ZooKeeper(client)
    try:
        _roots_made(zk)
        node = make_node()
        node.state = models.INIT
        zk.store_node(node)

        def building(n):
            n.state = models.BUILDING

        relay.cut_after_next(min_bytes=300)
        with pytest.raises(LockOutcomeUnknown) as unknown:
            zk.lock_new_node(node, building)
        assert relay.cut_done.is_set()
        lock_dir = f"/nodepool/nodes/{node.id}/lock"
        wait_for(lambda: client.connected, what="reconnected")
        # It landed: our contender holds the lock, the record is building.
        assert len(zk.kazoo.get_children(lock_dir)) == 1
        zk.lock_node(node, blocking=True, timeout=10, lock=unknown.value.lock)
        assert node.lock is not None and node.state == models.BUILDING
        assert len(zk.kazoo.get_children(lock_dir)) == 1
        zk.unlock_node(node)
        assert zk.kazoo.get_children(lock_dir) == []
    finally:
        client.disconnect()
        relay.close()


def test_no_node_is_made_when_the_claim_fails(zk, zk_info):
    _roots_made(zk)
    before = set(zk.node_ids())
    request = _new_request(zk)
    other = _other_session(zk_info)
    try:
        lock = Lock(other, f"/nodepool/requests-lock/{request.id}")
        assert lock.acquire(blocking=False)
        nodes = [_new_init_node(request)]
        with pytest.raises(ZKLockException):
            zk.claim_request(zk.get_request(request.id), _to_pending, new_nodes=nodes)
        assert nodes[0].id is None
        assert set(zk.node_ids()) == before
        lock.release()
    finally:
        other.stop()
        other.close()


def test_an_unused_node_someone_locked_is_left_to_them(zk, zk_info):
    _roots_made(zk)
    request = _new_request(zk)
    node = _new_init_node(request)
    assert zk.claim_request(request, _to_pending, new_nodes=[node])
    other = _other_session(zk_info)
    try:
        lock = Lock(other, f"/nodepool/nodes/{node.id}/lock")
        assert lock.acquire(blocking=False)
        zk.delete_unused_node(node)
        assert zk.get_node(node.id) is not None
        lock.release()
    finally:
        other.stop()
        other.close()


# -- The connection thread's wait --------------------------------------------


def test_wait_sees_packets_tls_has_already_decrypted(tmp_path):
    """Two packets in one TLS record: once the first is read, the second is
    inside the SSL object and the socket's descriptor shows nothing to
    read.  The connection thread's wait must still return at once (or a
    reply would wait for the server's next packet, up to a ping later)."""
    import socket
    import ssl
    import subprocess

    from nodepool.zk.client import PollingHandler

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    a, b = socket.socketpair()
    server = server_ctx.wrap_socket(a, server_side=True, do_handshake_on_connect=False)
    client = client_ctx.wrap_socket(b, do_handshake_on_connect=False)
    handshake = threading.Thread(target=server.do_handshake)
    handshake.start()
    client.do_handshake()
    handshake.join()
    try:
        server.sendall(b"first-packet" + b"second-packet")  # one record
        assert client.recv(12) == b"first-packet"
        assert client.pending() == len(b"second-packet")
        readable, _, _ = PollingHandler().select([client], [], [], 30)
        assert readable == [client]
        assert client.recv(100) == b"second-packet"
    finally:
        client.close()
        server.close()


def test_cache_follows_our_writes_across_a_dropped_connection(zk):
    """Our writes keep going while the connection drops (their replies
    fail or come after the reconnect): the cache never stalls and ends
    where ZooKeeper is."""
    cache = NodeCache(zk)
    cache.start()
    node = make_node()
    zk.store_node(node)
    written = []

    def write() -> None:
        n = len(written) + 1
        node.comment = f"write {n}"
        try:
            zk.store_node(node)
            written.append(n)
        except Exception:
            pass  # the connection is down: try again

    try:
        assert cache.wait_synced(10)
        _keep_writing_across_a_drop(zk, write, lambda: len(written))
        final = json.loads(zk.kazoo.get(f"/nodepool/nodes/{node.id}")[0])["comment"]
        wait_for(lambda: cache.get(node.id).comment == final, timeout=60)
        assert cache.barrier(10)
        assert cache.get(node.id).comment == final
    finally:
        cache.stop()
