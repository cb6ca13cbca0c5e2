"""A label's own ``max-servers``: its configuration, and the launcher's
ledger of slots (records counted by the node index plus launches not
recorded yet).  The launcher enforcing it end to end is in
functional/test_label_caps.py."""

from __future__ import annotations

import math
import textwrap
import threading
from collections import Counter
from pathlib import Path

from nodepool.config import Config, Label, load_config, validate_config
from nodepool.driver.launch import LaunchHandle
from nodepool.launcher.label_caps import LabelCaps
from nodepool.tests.unit.test_status_page import launcher, pool, request
from nodepool.web.status_page import render_page
from nodepool.web.status_snapshot import CAPACITY, take_snapshot
from nodepool.zk import models
from nodepool.zk.models import Node
from nodepool.zk.node_index import NodeIndex

CONFIG = """\
zookeeper-servers:
  - host: 127.0.0.1
zookeeper-tls:
  ca: /ca.pem
  cert: /cert.pem
  key: /key.pem
labels:
  - name: capped
    min-ready: {min_ready}
    max-servers: {cap}
  - name: free
"""


def write(tmp_path: Path, cap: object, min_ready: int = 0) -> str:
    path = tmp_path / "nodepool.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(cap=cap, min_ready=min_ready)))
    return str(path)


def test_label_max_servers_is_read_and_unlimited_by_default(tmp_path):
    config = load_config(write(tmp_path, 3))
    assert config.labels["capped"].max_servers == 3
    assert config.labels["free"].max_servers == math.inf
    assert not config.warnings
    report = validate_config(write(tmp_path, 3))
    assert not report.errors and not report.warnings


def test_label_max_servers_must_be_a_count(tmp_path):
    report = validate_config(write(tmp_path, -1))
    assert any("labels[0](name=capped) > max-servers" in e for e in report.errors), (
        report.errors)


def test_min_ready_above_the_label_cap_is_a_warning(tmp_path):
    config = load_config(write(tmp_path, 2, min_ready=5))
    [warning] = config.warnings
    assert "min-ready 5 is more than the label's max-servers 2" in warning
    assert "labels[0](name=capped) > min-ready" in warning


# The ledger ------------------------------------------------------------------


def node(node_id: str, labels: tuple[str, ...] = ("capped",),
         state: str = models.BUILDING) -> Node:
    n = Node(node_id)
    n.state, n.type, n.provider, n.pool = state, list(labels), "p", "main"
    return n


def ledger(caps: dict[str, int]) -> tuple[LabelCaps, NodeIndex, list[set[str]]]:
    index = NodeIndex()
    labels = {name: Label(name, max_servers=cap) for name, cap in caps.items()}
    labels["free"] = Label("free")
    freed: list[set[str]] = []
    return LabelCaps(index, lambda: labels, on_freed=freed.append), index, freed


def launch(node_id: str | None) -> LaunchHandle:
    """A launch whose record is made (``node_id``) or could not be (None)."""
    handle = LaunchHandle(Node())
    handle.node.id = node_id
    handle.record_created.set()
    return handle


def test_claims_fit_under_the_cap_or_take_nothing():
    caps, index, _ = ledger({"capped": 2})
    index.node_changed("0000000001", None, node("0000000001"))
    assert caps.in_use("capped") == 1 and caps.room("capped") == 1
    # Two would go over: none is taken.
    assert caps.claim(["capped", "capped"]) is None
    assert caps.in_use("capped") == 1
    [claim] = caps.claim(["capped", "free"])
    assert claim.label == "capped"
    assert caps.in_use("capped") == 2 and caps.room("capped") == 0
    assert caps.claim(["capped"]) is None
    # Labels without a cap take no slot and always fit.
    assert caps.claim(["free", "free"]) == []
    assert caps.room("free") == math.inf


def test_slots_spoken_for_by_waiting_requests_count():
    caps, _, _ = ledger({"capped": 2})
    assert caps.claim(["capped"], held=Counter({"capped": 2})) is None
    assert caps.claim(["capped"], held=Counter({"capped": 1})) is not None


def test_a_launched_claim_counts_until_the_cache_shows_its_record():
    caps, index, _ = ledger({"capped": 1})
    [claim] = caps.claim(["capped"])
    handle = LaunchHandle(Node())
    caps.launched(claim, handle)
    assert caps.in_use("capped") == 1  # no record yet
    handle.node.id = "0000000007"
    handle.record_created.set()
    assert caps.in_use("capped") == 1  # made, not yet in the cache
    index.node_changed("0000000007", None, node("0000000007"))
    assert caps.in_use("capped") == 1  # the record counts instead
    index.node_changed("0000000007", None, None)
    assert caps.in_use("capped") == 0 and caps.claim(["capped"]) is not None


def test_a_record_seen_gone_before_the_ledger_looked_is_not_counted_twice():
    caps, index, _ = ledger({"capped": 2})
    [claim] = caps.claim(["capped"])
    caps.launched(claim, launch("0000000003"))
    # The cache saw a later record (so the launch's is counted or gone).
    index.node_changed("0000000004", None, node("0000000004"))
    assert caps.in_use("capped") == 1


def test_a_launch_without_a_record_frees_its_slot():
    caps, _, freed = ledger({"capped": 1})
    [claim] = caps.claim(["capped"])
    handle = launch(None)
    caps.launched(claim, handle)
    caps.launch_ended(handle)
    assert caps.in_use("capped") == 0
    assert freed == [{"capped"}]


def test_released_claims_wake_pools_of_their_labels():
    caps, _, freed = ledger({"capped": 3, "other": 1})
    claims = caps.claim(["capped", "other", "capped"])
    assert claims is not None
    caps.release(claims)
    assert freed == [{"capped", "other"}]
    assert caps.in_use("capped") == 0 and caps.in_use("other") == 0
    caps.release(claims)  # twice: nothing more to free
    assert len(freed) == 1


def test_a_node_with_several_labels_counts_for_each():
    caps, index, _ = ledger({"capped": 1, "other": 1})
    index.node_changed("0000000001", None, node("0000000001", ("capped", "other")))
    assert caps.in_use("capped") == 1 and caps.in_use("other") == 1
    assert index.label_generation("other") == 0
    # Dropping a label (a static host reconfigured) frees that label only.
    index.node_changed("0000000001", None, node("0000000001", ("capped",)))
    assert caps.in_use("other") == 0 and index.label_generation("other") == 1
    assert index.label_generation("capped") == 0


def test_any_state_counts_and_only_removal_frees():
    caps, index, _ = ledger({"capped": 5})
    for i, state in enumerate((models.BUILDING, models.READY, models.IN_USE, models.USED,
                               models.HOLD, models.DELETING, models.FAILED)):
        index.node_changed(f"000000000{i}", None, node(f"000000000{i}", state=state))
    assert caps.in_use("capped") == 7 and caps.room("capped") == 0
    index.node_changed("0000000000", None, node("0000000000", state=models.READY))
    assert index.label_generation("capped") == 0
    index.node_changed("0000000000", None, None)
    assert index.label_generation("capped") == 1 and caps.in_use("capped") == 6


def test_requests_larger_than_a_cap_are_named():
    caps, _, _ = ledger({"capped": 2})
    assert caps.too_large(["capped", "capped", "free", "free", "free"]) is None
    assert caps.too_large(["capped"] * 3) == (
        "it asks for 3 nodes of label capped, more than the label's max-servers (2)")


def test_pools_claiming_at_once_never_share_the_last_slot():
    caps, _, _ = ledger({"capped": 3})
    start = threading.Barrier(8)
    taken: list[int] = []

    def pool() -> None:
        start.wait()
        for _ in range(50):
            if caps.claim(["capped"]) is not None:
                taken.append(1)
    threads = [threading.Thread(target=pool) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 3 and caps.in_use("capped") == 3


# The status page ---------------------------------------------------------------


def test_status_page_shows_label_caps_and_who_waits_for_them():
    config = Config()
    config.labels = {"capped": Label("capped", max_servers=2),
                     "roomy": Label("roomy", max_servers=5), "free": Label("free")}
    nodes = [node(f"000000000{i}", state=models.IN_USE) for i in range(2)]
    view = launcher(nodes, [request("200-0000000001", ("capped", "free")),
                            request("200-0000000002", ("free",))],
                    [pool(["capped", "free"])], config)
    view.label_caps = LabelCaps(view.node_cache.index, lambda: config.labels)
    snap = take_snapshot(view)
    assert snap.max_servers == {"capped": 2, "roomy": 5}
    assert snap.label_in_use == {"capped": 2, "roomy": 0}
    waiting = {r.id: r for r in snap.requests}
    assert waiting["200-0000000001"].reason_code == CAPACITY
    assert waiting["200-0000000001"].reason == (
        "waiting for room under max-servers of label capped (2 of 2 in use)")
    assert waiting["200-0000000002"].reason == "waiting for capacity (quota)"
    page = render_page(snap)
    assert ('<td class="num max-servers" data-max-servers="2" data-in-use="2">2 (2) '
            '<span class="badge warn">full</span></td>') in page
    assert '<td class="num max-servers" data-max-servers="5" data-in-use="0">5 (0)</td>' in page
