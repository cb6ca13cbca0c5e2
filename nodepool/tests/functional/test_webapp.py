"""The launcher's web API against a real ZooKeeper chroot."""

from __future__ import annotations

import email.utils
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nodepool.tests.helpers import wait_for
from nodepool.webapp import WebApp, wants_json
from nodepool.zk.cache import NodeCache, RequestCache

RECORDS = Path(__file__).parent.parent / "fixtures" / "upstream_records"
B1 = "26486869544a4955967308ef4e996c0b"


def record(name: str) -> bytes:
    return (RECORDS / f"{name}.json").read_bytes()


def put(zk, path: str, data: bytes = b"") -> None:
    zk.kazoo.create(path, data, makepath=True)


class Ready:
    def __init__(self) -> None:
        self.value = True

    def __call__(self) -> bool:
        return self.value


class Config:
    """What the web app reads from a launcher's configuration."""

    class DiskImage:
        pause = True

    diskimages = {"paused-in-config": DiskImage()}


@pytest.fixture
def ready() -> Ready:
    return Ready()


@pytest.fixture
def web(zk, ready):
    app = WebApp(zk, lambda: Config, ready, "127.0.0.1", 0)
    app.start()
    yield app
    app.stop()


def get(app: WebApp, path: str, accept: str | None = None,
        headers: dict | None = None, method: str = "GET"):
    """(status, headers, body) of one request."""
    request = urllib.request.Request(f"http://127.0.0.1:{app.port}{path}", method=method)
    if accept:
        request.add_header("Accept", accept)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


@pytest.fixture
def populated(zk):
    put(zk, "/nodepool/nodes/0000000000", record("node_static_ready"))
    put(zk, "/nodepool/nodes/0000000001", record("node_in_use"))
    put(zk, "/nodepool/nodes/0000000002", record("node_held"))
    put(zk, "/nodepool/nodes/0000000003", b"{broken")
    put(zk, "/nodepool/requests/199-0000000006", record("request_failed"))
    put(zk, "/nodepool/requests/100-0000000004", record("request_zuul_created_static"))
    put(zk, "/nodepool/components/pool/vm0000000000", record("component_pool"))
    put(zk, "/nodepool/components/pool/vm0000000001", record("component_pool_1"))
    base = f"/nodepool/images/fake-image/builds/{B1}"
    put(zk, base, record("image_build"))
    put(zk, f"{base}/providers/fake-provider/images/0000000001", record("image_upload"))
    put(zk, "/nodepool/images/paused-in-config/request-build")
    return zk


def test_node_list_text_has_every_column(web, populated):
    code, headers, body = get(web, "/node-list")
    assert code == 200
    assert headers["Content-Type"] == "text/plain; charset=UTF-8"
    lines = body.splitlines()
    assert lines[1].startswith("| ID         | Provider        | Label        |")
    assert lines[1].endswith("| Driver Data |")
    assert [line.split("|")[1].strip() for line in lines[3:-1]] == [
        "0000000000", "0000000001", "0000000002", "0000000003"]
    assert "| unparsable |" in lines[6]
    assert not body.endswith("\n")


def test_node_list_json(web, populated):
    for path, accept in (("/node-list", "application/json"), ("/node-list.json", None)):
        code, headers, body = get(web, path, accept)
        assert code == 200
        assert headers["Content-Type"] == "application/json"
        nodes = json.loads(body)
        assert [n["id"] for n in nodes] == ["0000000000", "0000000001", "0000000002",
                                            "0000000003"]
        assert nodes[1]["label"] == ["fake-label"]
        assert nodes[1]["locked"] == "unlocked"
        assert nodes[1]["user_data"]["project_name"] == "example-project"
        assert len(nodes[1]) == 21


def test_node_list_by_id_and_fields(web, populated):
    code, _, body = get(web, "/node-list?node_id=0000000002", "application/json")
    assert [n["id"] for n in json.loads(body)] == ["0000000002"]
    code, _, body = get(web, "/node-list?node_id=0000000099", "application/json")
    assert json.loads(body) == []
    code, _, body = get(web, "/node-list?fields=id,state,locked")
    assert body.splitlines()[1] == "| ID         | State      | Locked   |"
    assert body.splitlines()[4] == "| 0000000001 | in-use     | unlocked |"


def test_request_label_and_image_lists(web, populated):
    requests = json.loads(get(web, "/request-list", "application/json")[2])
    assert [r["id"] for r in requests] == ["100-0000000004", "199-0000000006"]
    assert set(requests[0]) == {"id", "relative_priority", "state", "requestor",
                                "node_types", "nodes", "declined_by", "event_id"}
    labels = get(web, "/label-list")[2]
    assert labels == ("+--------------+\n| Label        |\n+--------------+\n"
                      "| fake-label   |\n| fake-label2  |\n| static-label |\n"
                      "+--------------+")
    images = json.loads(get(web, "/image-list.json")[2])
    assert images[0]["external_id"] == "ae19fa8caaf940b98b2fc6bf8f77277b"
    assert isinstance(images[0]["age"], int)
    dib = json.loads(get(web, "/dib-image-list.json")[2])
    assert dib[0]["id"] == f"fake-image-{B1}" and dib[0]["formats"] == ["qcow2"]
    statuses = json.loads(get(web, "/image-status.json")[2])
    # The configuration's pause shows, as well as ZooKeeper's flag.
    assert statuses == [
        {"image": "fake-image", "paused": False, "build_request": None,
         "build_request_age": None},
        {"image": "paused-in-config", "paused": True, "build_request": "pending",
         "build_request_age": statuses[1]["build_request_age"]}]


def test_unknown_path_is_404(web):
    code, headers, body = get(web, "/no-such-endpoint")
    assert code == 404
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_cache_headers(web, populated):
    code, headers, _ = get(web, "/node-list")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "max-age=1, public"
    modified = email.utils.parsedate_to_datetime(headers["Last-Modified"]).timestamp()
    expires = email.utils.parsedate_to_datetime(headers["Expires"]).timestamp()
    assert expires - modified == 1
    code, _, _ = get(web, "/node-list",
                     headers={"If-Modified-Since": headers["Last-Modified"]})
    assert code == 304


@pytest.fixture
def web_caching(zk, ready):
    """web_caching(seconds) -> a started WebApp whose answers live that long."""
    started: list[WebApp] = []

    def make(seconds: float) -> WebApp:
        app = WebApp(zk, lambda: Config, ready, "127.0.0.1", 0, cache_seconds=seconds)
        app.start()
        started.append(app)
        return app

    yield make
    for app in started:
        app.stop()


def test_answers_are_cached(web_caching, populated, zk):
    # A lifetime far longer than this test, however slow the machine.
    web = web_caching(600)
    first = get(web, "/node-list.json")[2]
    put(zk, "/nodepool/nodes/0000000010", record("node_held"))
    assert get(web, "/node-list.json")[2] == first


def test_cached_answers_expire(web_caching, populated, zk):
    web = web_caching(0.2)
    get(web, "/node-list.json")
    put(zk, "/nodepool/nodes/0000000010", record("node_held"))
    wait_for(lambda: "0000000010" in get(web, "/node-list.json")[2],
             what="a fresh answer once the cached one expired")


def test_ready_follows_the_launcher(web, ready):
    assert get(web, "/ready")[:3:2] == (200, "OK")
    ready.value = False
    assert get(web, "/ready")[0] == 503
    ready.value = True
    assert get(web, "/ready")[0] == 200


def test_health_follows_the_zookeeper_session(web, zk_client):
    assert get(web, "/health")[:3:2] == (200, "OK")
    zk_client.disconnect()
    assert get(web, "/health")[0] == 503


def test_head_answers_without_body(web, populated):
    code, headers, body = get(web, "/label-list", method="HEAD")
    assert code == 200 and body == "" and int(headers["Content-Length"]) > 0


def test_serves_from_the_launchers_caches(zk, ready, populated):
    nodes, requests = NodeCache(zk), RequestCache(zk)
    nodes.start()
    requests.start()
    app = WebApp(zk, None, ready, "127.0.0.1", 0, node_cache=nodes,
                 request_cache=requests)
    app.start()
    try:
        assert nodes.wait_synced(10) and requests.wait_synced(10)
        listed = json.loads(get(app, "/node-list.json")[2])
        # The cache skips the unparsable record; the rest is identical.
        assert [n["id"] for n in listed] == ["0000000000", "0000000001", "0000000002"]
        assert listed[1]["user_data"]["project_name"] == "example-project"
        listed = json.loads(get(app, "/request-list.json")[2])
        assert [r["id"] for r in listed] == ["100-0000000004", "199-0000000006"]
    finally:
        app.stop()
        nodes.stop()
        requests.stop()


@pytest.mark.parametrize("accept, expected", [
    (None, False),
    ("", False),
    ("*/*", False),
    ("application/json", True),
    ("application/json, text/plain", False),
    ("text/plain;q=0.5, application/json", True),
    ("application/*", True),
    ("text/html;q=0, text/plain;q=0, application/json;q=0.1", True),
    ("image/png", False),
])
def test_accept_header_negotiation(accept, expected):
    assert wants_json(accept) is expected
