"""The ``nodepool`` CLI as a subprocess against a real TLS ZooKeeper chroot,
with records in upstream's format."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.recipe.lock import Lock

from nodepool.tests.helpers import wait_for
from nodepool.zk import models
from nodepool.zk.components import PoolComponent

RECORDS = Path(__file__).parent.parent / "fixtures" / "upstream_records"
REPO = Path(__file__).resolve().parents[3]

B1 = "26486869544a4955967308ef4e996c0b"
B2 = "6d1cc390d3cd49d2ab81abdc324e12fc"

CONFIG_TAIL = """\
labels:
  - name: fake-label
  - name: fake-label2
  - name: static-label
providers:
  - name: fake-provider
    cloud: fake
    cloud-images:
      - name: fake-image
        image-name: Fake Precise
    pools:
      - name: main
        labels:
          - name: fake-label
            cloud-image: fake-image
            min-ram: 8192
          - name: fake-label2
            cloud-image: fake-image
            min-ram: 8192
  - name: static-hosts
    driver: static
    pools:
      - name: main
        nodes:
          - name: 127.0.0.1
            labels: [static-label]
            host-key-checking: false
diskimages:
  - name: base
    abstract: true
    elements: [fedora]
  - name: fake-image
    parent: base
  - name: paused-image
    parent: base
    pause: true
"""


def record(name: str) -> bytes:
    return (RECORDS / f"{name}.json").read_bytes()


def changed(name: str, **changes) -> bytes:
    d = json.loads(record(name))
    d.update(changes)
    return json.dumps(d).encode()


class CLI:
    """Runs ``python -m nodepool.cmd.nodepoolcmd -c <config> ...``."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.env = dict(os.environ, NODEPOOL_CONNECT_TIMEOUT="3")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "nodepool.cmd.nodepoolcmd", "-c", str(self.config),
                *args]

    def __call__(self, *args: str, input: str | None = None,
                 timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              input=input, timeout=timeout, cwd=REPO, env=self.env)

    def ok(self, *args: str, **kwargs) -> str:
        proc = self(*args, **kwargs)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json"))

    def fails(self, *args: str, **kwargs) -> str:
        proc = self(*args, **kwargs)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        return proc.stderr


@pytest.fixture
def cli(zk_info, tmp_path) -> CLI:
    config = tmp_path / "nodepool.yaml"
    config.write_text(zk_info.config_yaml() + CONFIG_TAIL)
    return CLI(config)


@pytest.fixture
def other_client(zk_info):
    """A second session on the test's chroot (another process's locks)."""
    client = KazooClient(hosts=zk_info.hosts, use_ssl=True, certfile=zk_info.cert,
                         keyfile=zk_info.key, ca=zk_info.ca)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


def put(zk, path: str, data: bytes = b"") -> None:
    zk.kazoo.create(path, data, makepath=True)


def put_node(zk, node_id: str, name: str = "node_ready_min_ready", **changes) -> None:
    put(zk, f"/nodepool/nodes/{node_id}", changed(name, **changes))


def node_data(zk, node_id: str) -> dict:
    return json.loads(zk.kazoo.get(f"/nodepool/nodes/{node_id}")[0])


def put_images(zk) -> None:
    base = "/nodepool/images/fake-image/builds"
    put(zk, f"{base}/{B1}", record("image_build"))
    put(zk, f"{base}/{B2}", record("image_build_building"))
    put(zk, f"{base}/{B1}/providers/fake-provider/images/lock")
    put(zk, f"{base}/{B1}/providers/fake-provider/images/0000000001", record("image_upload"))
    put(zk, f"{base}/{B1}/providers/fake-provider/images/0000000002",
        record("image_upload_uploading"))
    put(zk, f"{base}/{B1}/providers/other-provider/images/0000000004",
        changed("image_upload", external_id="other-external-id"))
    put(zk, "/nodepool/images/fake-image/pause")


def rows(text: str) -> list[list[str]]:
    """The cells of a text table's body rows."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line[2:-2].split(" | ")] for line in lines[1:]]


# --------------------------------------------------------------------------
# Listings


def test_list_shows_upstream_columns_values_and_locks(cli, zk, other_client):
    put_node(zk, "0000000000", "node_static_ready")
    put_node(zk, "0000000001", "node_in_use")
    put_node(zk, "0000000002", "node_held")
    lock = Lock(other_client, "/nodepool/nodes/0000000001/lock")
    assert lock.acquire(timeout=5)
    out = cli.ok("list")
    assert out.splitlines()[1] == (
        "| ID         | Provider        | Label        | Server ID                        |"
        " Public IPv4 | IPv6 | State  | Age         | Locked   |")
    body = rows(out)
    assert [r[0] for r in body] == ["0000000000", "0000000001", "0000000002"]
    assert body[1][:7] == ["0000000001", "fake-provider", "fake-label",
                           "de8590c21a1f461fa8f9edfb1dbee237", "fake", "", "in-use"]
    assert [r[8] for r in body] == ["unlocked", "locked", "unlocked"]
    assert all(len(r[7].split(":")) == 4 for r in body)
    assert out.endswith("+\n")


def test_list_detail_and_json(cli, zk):
    put_node(zk, "0000000001", "node_in_use")
    out = cli.ok("list", "--detail")
    user_data = ("{'zuul_system': '4742d7d899164c2781dba2e73793d0c8', "
                 "'project_name': 'example-project'}")
    assert out.splitlines()[1].endswith(
        "| " + "User Data".ljust(len(user_data)) + " | Driver Data |")
    body = rows(out)
    assert body[0][9:17] == ["main", "", "fake", "az1", "zuul", "22",
                             "localhost-PoolWorker.fake-provider-main-"
                             "6ac8e1bbd650448bb9860941182c619a", "200-0000000002"]
    assert body[0][19] == user_data
    listed = cli.json("list")
    assert listed[0]["label"] == ["fake-label"]
    assert listed[0]["allocated_to"] == "200-0000000002"
    assert listed[0]["connection_port"] == 22
    assert len(listed[0]) == 21


def test_list_shows_unparsable_records_without_failing(cli, zk):
    put_node(zk, "0000000001", "node_held")
    put(zk, "/nodepool/nodes/0000000002", b"{not json")
    put(zk, "/nodepool/nodes/0000000003", b"")
    put(zk, "/nodepool/nodes/0000000004", b"[1, 2, 3]")
    body = rows(cli.ok("list"))
    assert [(r[0], r[6]) for r in body] == [
        ("0000000001", "hold"), ("0000000002", "unparsable"),
        ("0000000003", "unparsable"), ("0000000004", "unparsable")]
    assert "unparsable record: not valid JSON" in cli.ok("list", "--detail")


def test_image_listings(cli, zk):
    put_images(zk)
    put(zk, "/nodepool/images/other-image/request-build")
    body = rows(cli.ok("image-list"))
    assert [r[:3] + r[6:7] for r in body] == [
        [B1, "0000000001", "fake-provider", "ready"],
        [B1, "0000000002", "fake-provider", "uploading"],
        [B1, "0000000004", "other-provider", "ready"]]
    assert body[0][4:6] == ["fake-image-1795611984", "ae19fa8caaf940b98b2fc6bf8f77277b"]
    dib = rows(cli.ok("dib-image-list"))
    # fake-image is paused in ZooKeeper, so its builds read "paused".
    assert [r[:5] for r in dib] == [
        [f"fake-image-{B1}", "fake-image", "localhost", "qcow2", "paused"],
        [f"fake-image-{B2}", "fake-image", "localhost", "qcow2", "paused"]]
    statuses = cli.json("image-status")
    assert [(s["image"], s["paused"], s["build_request"]) for s in statuses] == [
        ("fake-image", True, None), ("other-image", False, "pending")]
    assert isinstance(statuses[1]["build_request_age"], int)
    assert cli.json("image-list")[0]["age"] == int(json.loads(
        record("image_upload"))["state_time"])


def test_request_list_is_in_serving_order(cli, zk):
    for request_id, rp in [("200-0000000003", 0), ("100-0000000005", 3),
                           ("200-0000000001", 7), ("100-0000000002", 1)]:
        put(zk, f"/nodepool/requests/{request_id}",
            changed("request_zuul_created_static", relative_priority=rp))
    put(zk, "/nodepool/requests/300-0000000009", b"broken")
    body = rows(cli.ok("request-list"))
    assert [(r[0], r[1]) for r in body] == [
        ("100-0000000002", "1"), ("100-0000000005", "3"), ("200-0000000003", "0"),
        ("200-0000000001", "7"), ("300-0000000009", "")]
    assert body[0][2:5] == ["requested", "4742d7d899164c2781dba2e73793d0c8", "static-label"]
    assert body[4][2] == "unparsable"


def test_label_list_shows_registered_pools(cli, zk):
    put(zk, "/nodepool/components/pool/vm0000000000", record("component_pool"))
    put(zk, "/nodepool/components/pool/vm0000000001", record("component_pool_1"))
    assert cli.json("label-list") == [
        {"label": "fake-label"}, {"label": "fake-label2"}, {"label": "static-label"}]


def test_every_table_command_prints_one_json_document(cli, zk):
    put_images(zk)
    put_node(zk, "0000000001", "node_in_use")
    for command in (["list"], ["image-list"], ["dib-image-list"], ["image-status"],
                    ["request-list"], ["label-list"], ["info", "fake-provider"]):
        json.loads(cli.ok(*command, "--json"))


def test_read_commands_do_not_write(cli, zk):
    put_images(zk)
    put_node(zk, "0000000001", "node_in_use")
    before = _tree(zk)
    for command in (["list"], ["list", "--detail"], ["image-list"], ["dib-image-list"],
                    ["image-status"], ["request-list"], ["info", "fake-provider"]):
        cli.ok(*command)
    assert _tree(zk) == before


def _tree(zk) -> dict:
    out = {}

    def walk(path):
        data, st = zk.kazoo.get(path)
        out[path] = (data, st.mzxid, st.cversion)
        for child in zk.kazoo.get_children(path):
            walk(f"{path.rstrip('/')}/{child}")
    walk("/")
    return out


# --------------------------------------------------------------------------
# Hold and delete


def test_hold_sets_state_and_reason_and_unlocks(cli, zk):
    put_node(zk, "0000000001")
    out = cli.ok("hold", "0000000001", "--reason", "debugging a failure")
    assert rows(out)[0][6:9] == ["hold", "00:00:00:00", "unlocked"]
    data = node_data(zk, "0000000001")
    assert data["state"] == "hold"
    assert data["comment"] == "debugging a failure"
    assert zk.node_lock_contenders("0000000001") == []


def test_hold_and_delete_refuse_a_node_locked_elsewhere(cli, zk, other_client):
    put_node(zk, "0000000001", "node_in_use")
    lock = Lock(other_client, "/nodepool/nodes/0000000001/lock")
    assert lock.acquire(timeout=5)
    for command in ("hold", "delete"):
        err = cli.fails(command, "0000000001")
        assert "locked by another process" in err
        assert "Traceback" not in err
    assert node_data(zk, "0000000001")["state"] == "in-use"
    lock.release()


def test_missing_node_is_an_error(cli, zk):
    for command in ("hold", "delete"):
        assert "node 0000000042 not found" in cli.fails(command, "0000000042")


def test_delete_marks_deleting_and_unlocks(cli, zk):
    put_node(zk, "0000000001")
    out = cli.ok("delete", "0000000001")
    assert rows(out)[0][6] == "deleting"
    assert node_data(zk, "0000000001")["state"] == "deleting"
    assert zk.node_lock_contenders("0000000001") == []


def test_delete_removes_an_unparsable_record(cli, zk):
    put(zk, "/nodepool/nodes/0000000003", b"{broken")
    proc = cli("delete", "0000000003")
    assert proc.returncode == 0, proc.stderr
    assert "Removed the record of node 0000000003, which this version cannot read" \
        in proc.stderr
    assert "not valid JSON" in proc.stderr and "No cloud resource was deleted" in proc.stderr
    assert zk.kazoo.exists("/nodepool/nodes/0000000003") is None


def test_delete_removes_a_record_with_an_unknown_state(cli, zk):
    # A newer writer's state: no launcher acts on it, so the operator's
    # delete removes the record, with or without --now.
    for node_id, args in (("0000000004", []), ("0000000005", ["--now"])):
        put_node(zk, node_id, state="brand-new-state")
        proc = cli("delete", *args, node_id)
        assert proc.returncode == 0, proc.stderr
        assert "invalid node state 'brand-new-state'" in proc.stderr
        assert zk.kazoo.exists(f"/nodepool/nodes/{node_id}") is None


def test_hold_refuses_an_unparsable_record(cli, zk):
    put(zk, "/nodepool/nodes/0000000003", b"{broken")
    err = cli.fails("hold", "0000000003")
    assert "this version cannot read its record" in err
    assert "'nodepool delete 0000000003' removes it" in err


# --------------------------------------------------------------------------
# Images


def test_image_build_requests_a_build(cli, zk):
    cli.ok("image-build", "fake-image")
    assert zk.kazoo.exists("/nodepool/images/fake-image/request-build")
    assert "not a diskimage" in cli.fails("image-build", "nope")
    assert "not a diskimage" in cli.fails("image-build", "base")  # abstract
    assert "paused in" in cli.fails("image-build", "paused-image")
    assert zk.kazoo.exists("/nodepool/images/paused-image") is None


def test_image_pause_and_unpause(cli, zk):
    cli.ok("image-pause", "fake-image")
    assert zk.kazoo.exists("/nodepool/images/fake-image/pause")
    assert [s["paused"] for s in cli.json("image-status")] == [True]
    cli.ok("image-unpause", "fake-image")
    assert zk.kazoo.exists("/nodepool/images/fake-image/pause") is None
    assert "neither a diskimage" in cli.fails("image-pause", "typo-image")
    assert zk.kazoo.exists("/nodepool/images/typo-image") is None


def test_dib_image_delete(cli, zk):
    put_images(zk)
    cli.ok("dib-image-delete", f"fake-image-{B1}")
    build = json.loads(zk.kazoo.get(f"/nodepool/images/fake-image/builds/{B1}")[0])
    assert build["state"] == "deleting"
    assert build["builder"] == "localhost"
    assert "still building" in cli.fails("dib-image-delete", f"fake-image-{B2}")
    assert "not found" in cli.fails("dib-image-delete", "fake-image-0000deadbeef")
    assert "not a build id" in cli.fails("dib-image-delete", "nodash")


def test_image_delete(cli, zk):
    put_images(zk)
    args = ["--provider", "fake-provider", "--image", "fake-image", "--build-id", B1]
    cli.ok("image-delete", *args, "--upload-id", "0000000001")
    path = f"/nodepool/images/fake-image/builds/{B1}/providers/fake-provider/images"
    upload = json.loads(zk.kazoo.get(f"{path}/0000000001")[0])
    assert upload["state"] == "deleting"
    assert upload["external_id"] == "ae19fa8caaf940b98b2fc6bf8f77277b"
    assert "in progress" in cli.fails("image-delete", *args, "--upload-id", "0000000002")
    assert "not found" in cli.fails("image-delete", *args, "--upload-id", "0000000009")
    # All four options are required.
    assert cli("image-delete", "--provider", "fake-provider").returncode == 2


def test_alien_image_list_of_the_fake_cloud(cli, zk):
    # The fake cloud lives in the CLI's own process: it has no images.
    assert cli.json("alien-image-list", "fake-provider") == []
    proc = cli("alien-image-list")
    assert proc.returncode == 0
    assert "not supported by driver static (provider static-hosts)" in proc.stderr
    assert "not supported by driver static" in cli.fails("alien-image-list", "static-hosts")
    assert "not in" in cli.fails("alien-image-list", "nope")


def test_alien_images_are_tagged_images_without_a_ready_upload(cli, zk, monkeypatch, capsys):
    from nodepool.cmd import provider_data
    from nodepool.cmd.context import Context
    from nodepool.cmd.nodepoolcmd import build_parser
    from nodepool.driver.adapter import CloudImage

    put_images(zk)

    class Provider:
        def start(self, zk):
            pass

        def stop(self):
            pass

        def list_images(self):
            return [
                CloudImage("ae19fa8caaf940b98b2fc6bf8f77277b", "known",
                           {"nodepool_build_id": B1}),
                CloudImage("lost-1", "fake-image-123", {"nodepool_build_id": B2}),
                CloudImage("base-1", "Ubuntu 22.04 (cloud's own)", {}),
            ]

    monkeypatch.setattr(provider_data, "_provider_object", lambda pc: Provider())
    args = build_parser().parse_args(["-c", str(cli.config), "alien-image-list",
                                      "fake-provider", "--json"])
    ctx = Context(args)
    try:
        assert provider_data.alien_images(ctx) == 0
    finally:
        ctx.close()
    assert json.loads(capsys.readouterr().out) == [
        {"provider": "fake-provider", "name": "fake-image-123", "id": "lost-1"}]


# --------------------------------------------------------------------------
# Provider data


def test_info(cli, zk):
    put_images(zk)
    put_node(zk, "0000000001", "node_in_use")
    put_node(zk, "0000000002", "node_static_ready")
    out = cli.ok("info", "fake-provider")
    assert out.startswith("ZooKeeper data for provider fake-provider\n\nImage data:\n")
    assert f"| fake-image | {B1} | 0000000001,0000000002 |" in out
    assert "\nNodes:\n" in out
    assert "| 0000000001 | de8590c21a1f461fa8f9edfb1dbee237 |" in out
    assert "0000000002" not in out.split("Nodes:")[1]
    # A provider gone from the configuration still shows its data.
    other = cli.json("info", "other-provider")
    assert other["images"] == [{"image": "fake-image", "build_id": B1,
                                "upload_ids": ["0000000004"]}]
    assert "no data in ZooKeeper" in cli.fails("info", "never-heard-of-it")


def test_erase_asks_first(cli, zk):
    put_images(zk)
    put_node(zk, "0000000001", "node_in_use")
    out = cli.ok("erase", "fake-provider", input="n\n")
    assert "[N/y]" in out and "Aborting. No data erased." in out
    assert zk.kazoo.exists("/nodepool/nodes/0000000001")
    out = cli.ok("erase", "fake-provider", input="")
    assert "Aborting" in out


def test_erase_removes_only_that_providers_data(cli, zk):
    put_images(zk)
    put_node(zk, "0000000001", "node_in_use")
    put_node(zk, "0000000002", "node_static_ready")
    out = cli.ok("erase", "fake-provider", "--force")
    assert "Erasing build data for fake-provider..." in out
    assert "Erasing node data for fake-provider..." in out
    providers = f"/nodepool/images/fake-image/builds/{B1}/providers"
    assert zk.kazoo.get_children(providers) == ["other-provider"]
    assert zk.kazoo.exists("/nodepool/nodes/0000000001") is None
    assert zk.kazoo.exists("/nodepool/nodes/0000000002")
    assert zk.kazoo.exists(f"/nodepool/images/fake-image/builds/{B1}")
    out = cli.ok("erase", "other-provider", input="y\n")
    assert zk.kazoo.get_children(providers) == []
    assert "never-heard-of-it" in cli.fails("erase", "never-heard-of-it", "--force")


def test_export_import_round_trip(cli, zk, zk_admin, zk_info, tmp_path):
    put_images(zk)
    path = tmp_path / "images.json"
    cli.ok("export-image-data", str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    exported = json.loads(path.read_text())
    base = f"/nodepool/images/fake-image/builds/{B1}"
    assert exported["/nodepool/images/fake-image/pause"] == ""
    assert exported[f"{base}/providers/fake-provider/images/0000000001"] == \
        record("image_upload").decode()
    assert len(exported) == 6

    # Restore into an empty chroot.
    chroot = zk_info.chroot + "-restore"
    zk_admin.ensure_path(chroot)
    try:
        config = tmp_path / "restore.yaml"
        config.write_text(cli.config.read_text().replace(zk_info.chroot, chroot))
        restore = CLI(config)
        restore.ok("import-image-data", str(path))
        again = tmp_path / "again.json"
        restore.ok("export-image-data", str(again))
        assert json.loads(again.read_text()) == exported
        # The next upload gets an id after the imported ones.
        created = zk_admin.create(f"{chroot}{base}/providers/fake-provider/images/",
                                  b"{}", sequence=True)
        assert created.rsplit("/", 1)[1] > "0000000002"
    finally:
        zk_admin.delete(chroot, recursive=True)
    bad = tmp_path / "bad.json"
    bad.write_text('{"/somewhere/else": "x"}')
    assert "only image records" in cli.fails("import-image-data", str(bad))


# --------------------------------------------------------------------------
# Errors


def test_unreachable_zookeeper_is_reported(tmp_path, zk_info):
    config = tmp_path / "nodepool.yaml"
    config.write_text(zk_info.config_yaml().replace(f"port: {zk_info.port}", "port: 1"))
    cli = CLI(config)
    cli.env["NODEPOOL_CONNECT_TIMEOUT"] = "1"
    err = cli.fails("list")
    assert f"{zk_info.host}:1" in err
    assert "zookeeper-tls" in err
    assert "Traceback" not in err


def test_missing_tls_settings_are_reported(tmp_path, zk_info):
    config = tmp_path / "nodepool.yaml"
    config.write_text(zk_info.config_yaml().split("zookeeper-tls:")[0])
    assert "zookeeper-tls" in CLI(config).fails("list")


def test_bad_config_and_arguments(cli, tmp_path):
    assert "cannot read" in CLI(tmp_path / "missing.yaml").fails("list")
    proc = cli()
    assert proc.returncode == 1 and "usage:" in proc.stdout
    assert cli("hold").returncode == 2
    assert cli("no-such-command").returncode == 2


# --------------------------------------------------------------------------
# nodepool request


REQUEST_KEYS = {"state", "state_time", "declined_by", "node_types", "nodes", "reuse",
                "requestor", "requestor_data", "provider", "relative_priority",
                "event_id", "created_time", "tenant_name"}


@pytest.fixture
def pool(zk):
    component = PoolComponent()
    component.id = "test-PoolWorker.fake-provider-main-0123"
    component.name = "main"
    component.provider_name = "fake-provider"
    component.supported_labels = ["fake-label", "fake-label2"]
    component.register(zk)
    yield component
    component.unregister()


class FakeLauncher(threading.Thread):
    """Plays a launcher for one request: checks it, then fulfils it with
    ready nodes or fails it."""

    def __init__(self, zk, fail: bool = False) -> None:
        super().__init__(daemon=True)
        self.zk = zk
        self.fail = fail
        self.request: dict | None = None
        self.request_id: str | None = None
        self.ephemeral_owner: int | None = None
        self.nodes: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            kazoo = self.zk.kazoo
            self.request_id = wait_for(lambda: self.zk.request_ids()[:1], 60)[0]
            path = f"/nodepool/requests/{self.request_id}"
            data, st = kazoo.get(path)
            self.request = json.loads(data)
            self.ephemeral_owner = st.ephemeralOwner
            request = dict(self.request)
            if self.fail:
                request.update(state="failed", declined_by=["pool-a", "pool-b"])
            else:
                for label in request["node_types"]:
                    node = models.Node.deserialize(record("node_ready_min_ready"))
                    node.id = None
                    node.type = [label]
                    node.allocated_to = self.request_id
                    self.zk.store_node(node)
                    self.nodes.append(node.id)
                request.update(state="fulfilled", nodes=self.nodes)
            kazoo.set(path, json.dumps(request).encode())
        except BaseException as e:
            self.error = e


def test_request_returns_unused_nodes_ready(cli, zk, pool):
    launcher = FakeLauncher(zk)
    launcher.start()
    proc = cli("request", "fake-label", "fake-label2", "--wait", "30")
    launcher.join()
    assert launcher.error is None
    assert proc.returncode == 0, proc.stderr
    request = launcher.request
    assert set(request) == REQUEST_KEYS
    assert launcher.request_id.startswith("200-")
    assert launcher.ephemeral_owner == 0
    assert request["state"] == "requested"
    assert request["node_types"] == ["fake-label", "fake-label2"]
    assert request["requestor"].startswith("nodepool-cli:")
    assert request["reuse"] is True and request["nodes"] == []
    # The nodes come back ready and unlocked; the request is gone.
    assert [r[0] for r in rows(proc.stdout)] == launcher.nodes
    for node_id in launcher.nodes:
        assert node_data(zk, node_id)["state"] == "ready"
        assert zk.node_lock_contenders(node_id) == []
    assert zk.kazoo.get_children("/nodepool/requests") == []


def test_request_hold_keeps_the_nodes(cli, zk, pool):
    launcher = FakeLauncher(zk)
    launcher.start()
    result = cli.json("request", "fake-label", "--hold", "--reason", "keep it",
                      "--provider", "fake-provider")
    launcher.join()
    assert launcher.request["provider"] == "fake-provider"
    assert result["held"] is True
    assert [n["state"] for n in result["nodes"]] == ["hold"]
    data = node_data(zk, launcher.nodes[0])
    assert data["state"] == "hold" and data["comment"] == "keep it"
    assert zk.kazoo.get_children("/nodepool/requests") == []


def test_request_failure_says_who_declined(cli, zk, pool):
    launcher = FakeLauncher(zk, fail=True)
    launcher.start()
    err = cli.fails("request", "fake-label")
    launcher.join()
    assert "failed" in err and "pool-a, pool-b" in err
    assert zk.kazoo.get_children("/nodepool/requests") == []


def test_request_for_a_label_no_pool_offers(cli, zk, pool):
    err = cli.fails("request", "no-such-label")
    assert "not offered by any running launcher pool" in err
    assert not zk.kazoo.exists("/nodepool/requests") or \
        zk.kazoo.get_children("/nodepool/requests") == []


def test_request_times_out_and_withdraws(cli, zk, pool):
    err = cli.fails("request", "fake-label", "--wait", "1")
    assert "not answered within 1 s" in err
    assert zk.kazoo.get_children("/nodepool/requests") == []


def test_request_interrupted_cleans_up(cli, zk, pool):
    # faulthandler: should the command hang, SIGABRT makes it print every
    # thread's stack, and the failure shows where it was stuck.
    proc = subprocess.Popen(cli.argv("request", "fake-label"), cwd=REPO,
                            env=dict(cli.env, PYTHONFAULTHANDLER="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: zk.kazoo.exists("/nodepool/requests") and
                 zk.kazoo.get_children("/nodepool/requests"), 30)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"nodepool request did not exit after SIGINT:\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert zk.kazoo.get_children("/nodepool/requests") == []


def test_request_against_a_running_launcher(launcher_factory, zk_info, zk, tmp_path):
    from nodepool.tests.helpers import fake_config

    launcher_factory(fake_config(zk_info))
    config = tmp_path / "cli.yaml"
    config.write_text(fake_config(zk_info))
    cli = CLI(config)
    held = cli.json("request", "fake-label", "--hold", "--wait", "60")
    assert [n["state"] for n in held["nodes"]] == ["hold"]
    returned = cli.json("request", "fake-label", "--wait", "60")
    node_id = returned["nodes"][0]["id"]
    assert returned["nodes"][0]["state"] == "ready"
    # The launcher takes the returned node back: unallocated, still ready.
    wait_for(lambda: node_data(zk, node_id)["allocated_to"] is None, 60)
    assert node_data(zk, node_id)["state"] == "ready"
    assert zk.request_ids() == [] or all(r.startswith("900-") for r in zk.request_ids())


def test_cli_logs_warnings_only_unless_debugging(zk_info, tmp_path):
    """Without -l or --debug a command prints warnings (here: an unknown
    setting) on stderr in the daemons' format, and nothing at INFO;
    --debug adds the rest."""
    config = tmp_path / "nodepool.yaml"
    config.write_text(zk_info.config_yaml() + CONFIG_TAIL + "no-such-setting: 1\n")
    cli = CLI(config)
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "no-such-setting" in line]
    assert warnings, proc.stderr
    assert re.match(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING nodepool\.config: ", warnings[0])
    assert " INFO " not in proc.stderr
    proc = cli("--debug", "list")
    assert proc.returncode == 0, proc.stderr
    assert "no-such-setting" in proc.stderr
    assert re.search(r" INFO nodepool\.zk\.client: Connected to ZooKeeper", proc.stderr)
