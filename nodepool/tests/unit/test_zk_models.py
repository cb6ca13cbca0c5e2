"""Records round-trip the JSON upstream Nodepool and Zuul write."""

import json

import pytest

from nodepool.zk import models
from nodepool.zk.models import ImageBuild, ImageUpload, ModelError, Node, NodeRequest

# A request as Zuul 14 creates it (WIRE.md): only Zuul's keys.
ZUUL_REQUEST = {
    "requestor_data": {"build_set_uuid": "b1", "tenant_name": "t1",
                       "pipeline_name": "check", "job_uuid": "j1",
                       "job_name": "tox", "span_info": None},
    "node_types": ["ubuntu", "ubuntu"],
    "requestor": "6b1f0c1e0f7a4a9f",
    "created_time": 1700000000.5,
    "provider": None,
    "state": "requested",
    "state_time": 1700000000.5,
    "relative_priority": 2,
    "event_id": "e1",
    "tenant_name": "t1",
}

# A node as Zuul writes it back after setting it in-use (adds "id").
ZUUL_NODE = {
    "id": "0000000042", "state": "in-use", "state_time": 1700000100.0,
    "cloud": "c", "provider": "p", "pool": "main", "type": ["ubuntu"],
    "allocated_to": "200-0000000001", "az": "az1", "region": "r1",
    "public_ipv4": "203.0.113.5", "private_ipv4": None, "public_ipv6": None,
    "host_id": "h", "interface_ip": "203.0.113.5", "connection_port": 22,
    "ssh_port": 22, "image_id": "/nodepool/images/i/builds/b/providers/p/images/0000000001",
    "launcher": "host-PoolWorker.p-main-abc", "created_time": 1700000000.0,
    "external_id": "uuid-1", "hostname": "np0000000042", "comment": None,
    "user_data": {"zuul_system": "6b1f", "project_name": "org/project"},
    "hold_job": None, "host_keys": ["ssh-ed25519 AAAA"], "username": "zuul",
    "connection_type": "ssh", "shell_type": None, "hold_expiration": None,
    "resources": {"cores": 4, "ram": 8192, "instances": 1}, "slot": None,
    "attributes": {"executor-zone": "z1"}, "python_path": "auto",
    "tenant_name": "t1", "driver_data": None, "requestor": "6b1f",
    "node_properties": {"spot": False},
}


def test_zuul_request_gets_every_key_zuul_reads():
    request = NodeRequest.fromDict(ZUUL_REQUEST, "200-0000000001")
    out = request.toDict()
    for key in ("requestor_data", "requestor", "node_types", "provider", "state",
                "state_time", "event_id", "declined_by", "nodes", "reuse",
                "relative_priority", "created_time", "tenant_name"):
        assert key in out
    assert out["requestor_data"] == ZUUL_REQUEST["requestor_data"]
    assert out["node_types"] == ["ubuntu", "ubuntu"]
    assert out["reuse"] is True
    assert out["declined_by"] == [] and out["nodes"] == []
    assert out["tenant_name"] == "t1"


def test_request_unknown_keys_survive_rewrite():
    d = dict(ZUUL_REQUEST, future_key={"a": 1})
    request = NodeRequest.fromDict(d, "100-0000000003")
    request.state = models.PENDING
    assert request.toDict()["future_key"] == {"a": 1}


def test_request_ordering_by_prefix_priority_sequence():
    def req(rid, rel):
        r = NodeRequest(rid)
        r.relative_priority = rel
        return r
    reqs = [req("200-0000000001", 0), req("099-0000000009", 5),
            req("100-0000000002", 1), req("100-0000000003", 0),
            req("900-0000000000", 0), req("100-0000000004", 0)]
    ordered = [r.id for r in sorted(reqs, key=NodeRequest.sort_key)]
    assert ordered == ["099-0000000009", "100-0000000003", "100-0000000004",
                       "100-0000000002", "200-0000000001", "900-0000000000"]


def test_node_ignores_zuul_id_and_keeps_fields():
    node = Node.fromDict(ZUUL_NODE, "0000000042")
    out = node.toDict()
    assert "id" not in out
    for key, value in ZUUL_NODE.items():
        if key != "id":
            assert out[key] == value, key


def test_node_read_defaults_like_upstream():
    node = Node.fromDict({"state": "ready", "type": "ubuntu", "ssh_port": 2222,
                          "hold_expiration": "soon"}, "1")
    assert node.type == ["ubuntu"]
    assert node.connection_port == 2222
    assert node.toDict()["ssh_port"] == 2222
    assert node.username == "zuul"
    assert node.host_keys == []
    assert node.hold_expiration == 0


def test_node_state_change_moves_state_time():
    node = Node("1")
    node.state = models.READY
    node.state_time = 5.0
    node.state = models.READY
    assert node.state_time == 5.0
    node.state = models.USED
    assert node.state_time > 5.0


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]",
                                  json.dumps({"state": "bogus"}).encode(),
                                  json.dumps({"state": "ready",
                                              "state_time": "x"}).encode()])
def test_malformed_node_raises_model_error(data):
    with pytest.raises(ModelError):
        Node.deserialize(data, "0000000001")


def test_malformed_request_node_types():
    with pytest.raises(ModelError):
        NodeRequest.deserialize(json.dumps({"state": "requested",
                                            "node_types": [1, {}]}).encode(), "x")


def test_image_build_formats_wire_format():
    build = ImageBuild.fromDict({"state": "ready", "state_time": 1.0,
                                 "builder": "b1", "builder_id": "uuid",
                                 "formats": "raw,qcow2", "username": "zuul",
                                 "python_path": "auto", "shell_type": None},
                                "abc", "ubuntu")
    assert build.formats == ["raw", "qcow2"]
    out = build.toDict()
    assert out["formats"] == "qcow2,raw"
    empty = ImageBuild("ubuntu", "x")
    empty.state = "building"
    assert "formats" not in empty.toDict() and "builder" not in empty.toDict()


def test_image_upload_defaults_and_path():
    upload = ImageUpload.fromDict({"state": "ready", "state_time": 2.0,
                                   "external_id": "img-1",
                                   "external_name": "ubuntu-1700000000",
                                   "format": "qcow2"},
                                  "abc", "p1", "ubuntu", "0000000001")
    assert upload.python_path == "/usr/bin/python2"
    assert upload.path == ("/nodepool/images/ubuntu/builds/abc/providers/p1"
                           "/images/0000000001")


# Records captured from a running upstream Nodepool 11.0.0 and Zuul 14.3.0
# (see fixtures/upstream_records/README.txt).
import pathlib  # noqa: E402

RECORDS = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "upstream_records"


def _records(prefix):
    return sorted(p for p in RECORDS.glob(f"{prefix}*.json"))


@pytest.mark.parametrize("path", _records("node_"), ids=lambda p: p.name)
def test_upstream_node_round_trip(path):
    raw = json.loads(path.read_text())
    node = Node.deserialize(path.read_bytes(), "0000000001")
    out = json.loads(node.serialize())
    for key, value in raw.items():
        if key == "id":
            assert key not in out
        elif key == "username" and value is None:
            assert out[key] == "zuul"  # upstream's read default too
        else:
            assert out[key] == value, key
    assert set(Node.KEYS) - Node.OPTIONAL <= set(out)


@pytest.mark.parametrize("path", _records("request_"), ids=lambda p: p.name)
def test_upstream_request_round_trip(path):
    raw = json.loads(path.read_text())
    request = NodeRequest.deserialize(path.read_bytes(), "200-0000000001")
    out = json.loads(request.serialize())
    for key, value in raw.items():
        assert out[key] == value, key
    # Zuul reads these without defaults: a rewrite must carry them all.
    assert set(NodeRequest.KEYS) <= set(out)


@pytest.mark.parametrize("path", _records("image_build"), ids=lambda p: p.name)
def test_upstream_build_round_trip(path):
    raw = json.loads(path.read_text())
    build = ImageBuild.deserialize(path.read_bytes(), "abc", "fake-image")
    out = build.toDict()
    for key, value in raw.items():
        if value is not None:
            assert out[key] == value, key


@pytest.mark.parametrize("path", _records("image_upload"), ids=lambda p: p.name)
def test_upstream_upload_round_trip(path):
    raw = json.loads(path.read_text())
    upload = ImageUpload.deserialize(path.read_bytes(), "abc", "p", "fake-image", "0000000001")
    out = upload.toDict()
    for key, value in raw.items():
        if value is not None:
            assert out[key] == value, key


@pytest.mark.parametrize("path", _records("component_"), ids=lambda p: p.name)
def test_upstream_component_parses(path):
    from nodepool.zk.components import PoolComponent, parse_component
    component = parse_component(PoolComponent, "/x", path.read_bytes())
    raw = json.loads(path.read_text())
    assert component.toDict()["kind"] == "pool" or raw["kind"] != "pool"
    if raw["kind"] == "pool":
        assert component.id == raw["id"]
        assert component.supported_labels == raw["supported_labels"]
