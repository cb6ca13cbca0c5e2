"""Plays Zuul against a running launcher using Zuul 14's own client code.

Runs inside a virtualenv with zuul==14.3.0 (not ours), as a subprocess of
the compatibility test, and prints one JSON document with what Zuul saw.
Usage: drive_zuul.py HOSTS CA CERT KEY SCENARIO
Scenarios: ``fulfil`` (request, accept, use, return), ``fail`` (unknown
label), ``early-return`` (accept, hand back unused).
"""

import configparser
import json
import queue
import sys
import time
import types
import uuid

from zuul import model
from zuul.lib.tracing import Tracing
from zuul.nodepool import Nodepool
from zuul.zk import ZooKeeperClient
from zuul.zk.nodepool import ZooKeeperNodepool

# Zuul services set up tracing at start-up; submitNodeRequest needs it.
Tracing(configparser.ConfigParser())


def main() -> int:
    hosts, ca, cert, key, scenario = sys.argv[1:6]
    label_name = sys.argv[6] if len(sys.argv) > 6 else "fake-label"
    client = ZooKeeperClient(hosts, tls_cert=cert, tls_key=key, tls_ca=ca)
    client.connect()
    events: queue.Queue = queue.Queue()

    def on_request_event(request, event):
        events.put((request.id, request.state))
        return True

    # The scheduler's view: request and node caches with event callbacks,
    # which raise if a key Zuul reads without a default is missing.
    zkn = ZooKeeperNodepool(client, enable_node_request_cache=True,
                            node_request_event_callback=on_request_event,
                            enable_node_cache=True)
    nodepool = Nodepool.__new__(Nodepool)
    nodepool.system_id = uuid.uuid4().hex
    nodepool.statsd = None
    nodepool.zk_nodepool = zkn

    labels = ["no-such-label"] if scenario == "fail" else [label_name, label_name]
    nodeset = model.NodeSet()
    for i, label in enumerate(labels):
        nodeset.addNode(model.Node([f"node{i}"], label))
    job = types.SimpleNamespace(nodeset=nodeset, uuid=uuid.uuid4().hex, name="compat-job")
    event = types.SimpleNamespace(zuul_event_id=uuid.uuid4().hex)
    request = nodepool.requestNodes(uuid.uuid4().hex, job, "tenant-one", "check", None,
                                    200, 0, event=event)
    result = {"request_id": request.id, "events": []}
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline and state not in ("fulfilled", "failed"):
        try:
            request_id, event_state = events.get(timeout=1)
            result["events"].append([request_id, event_state])
            # (Other requests' events come too: a metastatic provider's
            # backing requests, say.)
            if request_id == request.id:
                state = event_state
        except queue.Empty:
            continue
    fresh = zkn.getNodeRequest(request.id)
    result["state"] = fresh.state
    result["nodes"] = list(fresh.nodes)
    # Zuul's model does not keep declined_by; read the raw record for it.
    raw = json.loads(client.client.get(f"/nodepool/requests/{fresh.id}")[0])
    result["declined_by"] = raw.get("declined_by", [])
    if fresh.state != "fulfilled":
        nodepool.deleteNodeRequest(fresh.id)
        print(json.dumps(result))
        return 0
    info = nodepool.getNodesetInfo(fresh, job.nodeset)
    result["provider"] = info.provider
    nodes = nodepool.acceptNodes(fresh, job.nodeset)
    del nodes
    result["request_exists_after_accept"] = zkn.getNodeRequest(fresh.id) is not None
    result["node_data"] = []
    for node in job.nodeset.getNodes():
        result["node_data"].append({
            "id": node.id, "state": node.state, "provider": node.provider,
            "interface_ip": node.interface_ip, "connection_type": node.connection_type,
            "connection_port": node.connection_port, "username": node.username,
            "host_keys": node.host_keys, "label": node.label, "az": node.az,
            "allocated_to": node.allocated_to, "locked": node.lock is not None,
        })
    if scenario == "early-return":
        nodepool.unlockNodeSet(job.nodeset)
    else:
        def records():
            return [json.loads(client.client.get(f"/nodepool/nodes/{n.id}")[0])
                    for n in job.nodeset.getNodes()]
        result["before_use"] = records()
        nodepool.useNodeSet(job.nodeset, "tenant-one", "org/project")
        result["in_use_records"] = records()
        result["in_use"] = [r["state"] for r in result["in_use_records"]]
        nodepool.returnNodeSet(job.nodeset, None, "tenant-one", "org/project", 1)
    print(json.dumps(result))
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
