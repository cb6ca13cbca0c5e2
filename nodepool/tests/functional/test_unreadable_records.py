"""Node records this version cannot read are kept, reported and never used.

A record that is not JSON, or whose ``state`` a newer writer introduced,
may belong to someone who is using it: a launcher never deletes it (nor
the server it names), never hands it out, and reports it until an
operator removes it with ``nodepool delete``.
"""

from __future__ import annotations

import json

from nodepool.driver.adapter import META_NODE_ID, META_PROVIDER
from nodepool.launcher.cleanup import CleanupWorker
from nodepool.tests.functional.test_commands import CLI, changed, rows
from nodepool.tests.helpers import fake_config, wait_for

NOT_JSON = "0000000100"
NEWER = "0000000101"
EMPTY = "0000000102"


def cleanup_worker(launcher) -> CleanupWorker:
    [worker] = [w for w in launcher._workers if isinstance(w, CleanupWorker)]
    return worker


def exists(zuul, node_id: str) -> bool:
    return zuul.client.exists(f"/nodepool/nodes/{node_id}") is not None


def test_unreadable_records_are_kept_reported_and_never_used(
        zk_info, zuul, launcher_factory, statsd, tmp_path):
    from nodepool.driver.fake.cloud import FakeCloud
    cloud = FakeCloud.for_provider("fake-provider")
    # The newer writer's node is ready, for our label, and has a server.
    server = cloud.add_server("np0000000101", {META_PROVIDER: "fake-provider",
                                               META_NODE_ID: NEWER})
    newer = json.loads(changed("node_ready_min_ready", state="brand-new-state",
                               provider="fake-provider", type=["fake-label"],
                               allocated_to=None, external_id=server.id))
    zuul.client.create(f"/nodepool/nodes/{NOT_JSON}", b"{not json", makepath=True)
    zuul.client.create(f"/nodepool/nodes/{NEWER}", json.dumps(newer).encode())
    # A lock once taken on a node being deleted leaves an empty znode.
    zuul.client.create(f"/nodepool/nodes/{EMPTY}/lock", makepath=True)

    launcher = launcher_factory(fake_config(zk_info))
    worker = cleanup_worker(launcher)
    # Leak and record cleanup need two sightings: let three passes run.
    wait_for(lambda: worker.passes >= 3, timeout=60, what="three cleanup passes")
    assert exists(zuul, NOT_JSON) and exists(zuul, NEWER)
    assert [s.id for s in cloud.list_servers()] == [server.id]
    # Truly empty znodes still go.
    assert not exists(zuul, EMPTY)
    wait_for(lambda: statsd.has("nodepool.nodes.unreadable:2|g"), what="unreadable gauge")

    # The label is served by a new node, not by the record we cannot read.
    request = zuul.wait_request(zuul.submit(["fake-label"]))
    assert request["state"] == "fulfilled"
    assert request["nodes"][0] not in (NOT_JSON, NEWER)

    cli = CLI(tmp_path / "nodepool.yaml")
    listed = {r[0]: r[6] for r in rows(cli.ok("list"))}
    assert listed[NOT_JSON] == "unparsable"
    assert listed[NEWER] == "brand-new-state"

    for node_id in (NOT_JSON, NEWER):
        proc = cli("delete", node_id)
        assert proc.returncode == 0, proc.stderr
        assert "cannot read" in proc.stderr
        assert not exists(zuul, node_id)
    wait_for(lambda: statsd.has("nodepool.nodes.unreadable:0|g"), what="gauge back to 0")
    assert launcher.is_alive()


def test_a_record_read_twice_before_it_is_applied_is_reported_once(zk, caplog):
    """A resync's snapshot and an event (or two snapshots) may both read
    a record before either read is applied to the cache."""
    from nodepool.zk.cache import NodeCache
    cache = NodeCache(zk)
    zk.kazoo.create(f"/nodepool/nodes/{NOT_JSON}", b"[1, 2]", makepath=True)
    data, stat = zk.kazoo.get(f"/nodepool/nodes/{NOT_JSON}")
    first = cache._read(NOT_JSON, data, stat)
    second = cache._read(NOT_JSON, data, stat)
    assert first is not None and second is not None
    assert "expected a JSON object" in first.reason
    warnings = [r for r in caplog.records
                if r.name == "nodepool.zk.cache" and NOT_JSON in r.getMessage()]
    assert len(warnings) == 1


def test_cache_reports_each_unreadable_record_once(zk, caplog):
    from nodepool.zk.cache import NodeCache
    cache = NodeCache(zk)
    zk.kazoo.create(f"/nodepool/nodes/{NOT_JSON}", b"[1, 2]", makepath=True)
    cache.start()
    try:
        assert cache.wait_synced(10)
        zk.kazoo.set(f"/nodepool/nodes/{NOT_JSON}", b"{still not json")
        wait_for(lambda: "not valid JSON" in cache.unreadable()[0].reason,
                 what="cache sees the change")
        assert cache.items() == []
        warnings = [r for r in caplog.records
                    if r.name == "nodepool.zk.cache" and NOT_JSON in r.getMessage()]
        assert len(warnings) == 1
        zk.kazoo.set(f"/nodepool/nodes/{NOT_JSON}", changed("node_ready_min_ready"))
        wait_for(lambda: cache.get(NOT_JSON) is not None, what="readable again")
        assert cache.unreadable() == []
    finally:
        cache.stop()
