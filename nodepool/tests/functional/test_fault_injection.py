"""Random ZooKeeper faults under load: an opt-in search for recovery bugs.

Each round submits a few requests, lets the launchers start on them for
a random moment, then expires one launcher's session or drops its
connection (kazoo's own fault injection), and checks what must hold
whatever the timing: every request is fulfilled, no node goes to two
requests, Zuul can lock every node it is given, and once the nodes come
back nothing is leaked.  Random by design, so not part of the regular
run (marker ``fault_injection``): run it with

    .venv/bin/python -m pytest -m fault_injection nodepool/tests/functional/test_fault_injection.py

``NODEPOOL_FAULT_ROUNDS`` sets the rounds (default 10) and
``NODEPOOL_FAULT_SEED`` replays a seed a failure printed.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.helpers import drop_connection, expire_session, fake_config, wait_for

pytestmark = pytest.mark.fault_injection


def _inject_fault(launcher, rng: random.Random) -> None:
    fault = rng.choice([expire_session, expire_session, drop_connection])
    fault(launcher.zk_client)


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("launchers", [1, 2])
def test_requests_survive_random_zookeeper_faults(zk_info, zuul, launcher_factory,
                                                  monkeypatch, launchers):
    from nodepool.launcher import deleter
    monkeypatch.setattr(deleter, "INIT_GRACE", 1.0)
    seed = int(os.environ.get("NODEPOOL_FAULT_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    rounds = int(os.environ.get("NODEPOOL_FAULT_ROUNDS", "10"))
    config = fake_config(zk_info, max_servers=8)
    # Cleanup an hour away: recovery must not lean on its periodic pass.
    started = [launcher_factory(config, name=f"{n}.yaml", hostname=f"launcher-{n}",
                                cleanup_interval=3600) for n in range(launchers)]
    cloud = FakeCloud.for_provider("fake-provider")
    given: dict[str, str] = {}
    for round_ in range(rounds):
        where = f"seed {seed}, round {round_}"
        cloud.boot_delay = rng.choice([0.0, 0.05, 0.3, 1.0])
        request_ids = [zuul.submit(["fake-label"]) for _ in range(rng.randint(1, 6))]
        time.sleep(rng.uniform(0, 0.4))  # a random moment of the work, not a wait
        _inject_fault(rng.choice(started), rng)
        for request_id in request_ids:
            request = zuul.wait_request(request_id, timeout=60)
            assert request["state"] == "fulfilled", (where, request)
            for node_id in request["nodes"]:
                assert node_id not in given, (where, node_id, given[node_id], request_id)
                given[node_id] = request_id
        for request_id in request_ids:
            # Locks each node (30 s at most): one left held fails here.
            zuul.return_nodes(zuul.accept(request_id))

    def settled() -> bool:
        ids = [i for i in zuul.client.get_children("/nodepool/nodes") if i.isdigit()]
        states = [(zuul.node(i) or {}).get("state") for i in ids]
        return len(cloud.list_servers()) == len(ids) and all(s == "ready" for s in states)

    wait_for(settled, 90, what=f"used nodes deleted and no server leaked (seed {seed})")
