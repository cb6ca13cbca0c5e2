"""A pool worker's request queue: serving order kept from events, parked
requests left alone until they change or the pools do."""

from __future__ import annotations

from nodepool.launcher.request_queue import RequestQueue
from nodepool.zk import models
from nodepool.zk.models import NodeRequest

POOL = "host-PoolWorker.p-main-1"


def request(request_id: str, labels=("a",), state=models.REQUESTED, relative=0,
            declined=()) -> NodeRequest:
    r = NodeRequest(request_id)
    r.state = state
    r.node_types = list(labels)
    r.relative_priority = relative
    r.declined_by = list(declined)
    return r


def ids(queue: RequestQueue) -> list[str]:
    return [str(r.id) for r in queue.snapshot()]


def test_serving_order_servable_first_then_priority():
    queue = RequestQueue(POOL, {"a"})
    for r in (request("200-0000000003"), request("100-0000000002", labels=("x",)),
              request("200-0000000001", relative=1), request("100-0000000004")):
        assert queue.update(r.id, r)
    assert ids(queue) == ["100-0000000004", "200-0000000003", "200-0000000001",
                          "100-0000000002"]


def test_only_open_requests_not_declined_by_this_pool():
    queue = RequestQueue(POOL, {"a"})
    assert not queue.update("200-0000000001", request("200-0000000001",
                                                      state=models.PENDING))
    assert not queue.update("200-0000000002", request("200-0000000002", declined=[POOL]))
    assert queue.update("200-0000000003", request("200-0000000003"))
    # Taken by someone: it leaves the queue.
    assert not queue.update("200-0000000003", request("200-0000000003",
                                                      state=models.PENDING))
    assert not queue.update("200-0000000003", None)
    assert ids(queue) == []


def test_parked_until_changed_or_unparked():
    queue = RequestQueue(POOL, {"a"})
    queue.update("200-0000000001", request("200-0000000001"))
    queue.update("200-0000000002", request("200-0000000002"))
    assert [r.id for r in queue.take_fresh()] == ["200-0000000001", "200-0000000002"]
    queue.park("200-0000000001")
    assert ids(queue) == ["200-0000000002"]
    assert queue.take_fresh() == []
    # A change brings it back, as fresh.
    queue.update("200-0000000001", request("200-0000000001", declined=["other"]))
    assert ids(queue) == ["200-0000000001", "200-0000000002"]
    assert [r.id for r in queue.take_fresh()] == ["200-0000000001"]
    queue.park("200-0000000002")
    queue.unpark_all()
    assert ids(queue) == ["200-0000000001", "200-0000000002"]
    assert [r.id for r in queue.take_fresh()] == ["200-0000000002"]


def test_snapshot_is_not_disturbed_by_later_changes():
    queue = RequestQueue(POOL, {"a"})
    for n in range(3):
        queue.update(f"200-000000000{n}", request(f"200-000000000{n}"))
    walk = queue.snapshot()
    assert next(walk).id == "200-0000000000"
    queue.update("200-0000000001", None)
    queue.update("100-0000000009", request("100-0000000009"))
    assert [r.id for r in walk] == ["200-0000000001", "200-0000000002"]


def test_new_labels_reorder():
    queue = RequestQueue(POOL, {"a"})
    queue.update("100-0000000001", request("100-0000000001", labels=("b",)))
    queue.update("200-0000000002", request("200-0000000002"))
    assert ids(queue) == ["200-0000000002", "100-0000000001"]
    queue.set_labels({"a", "b"})
    assert ids(queue) == ["100-0000000001", "200-0000000002"]
