"""Images validated before service: a real builder uploads to the fake
cloud, real launchers boot a check node from each upload (the fake cloud
routes its servers to a real sshd on a loopback address) and run the
diskimage's command over SSH; requests are served from the upload only
once the command passed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nodepool import status
from nodepool.driver.fake.cloud import FakeCloud
from nodepool.launcher.ssh_check import run_check
from nodepool.tests.functional.builder_support import base_config, diskimage, provider
from nodepool.tests.helpers import wait_for, wait_for_pass
from nodepool.tests.sshd import LoopbackSshd
from nodepool.zk import listing, models
from nodepool.zk.models import ImageBuild, ImageUpload, Node

IMAGE = "fake-image"
PROVIDER = "fake-provider"
LABEL = "checked-label"


class Host:
    """A real sshd standing in for every server of the fake cloud, and
    the key pair the launchers log in with (as root: the test runs as
    root, and so does this sshd)."""

    def __init__(self, tmp_path: Path) -> None:
        self.sshd = LoopbackSshd(tmp_path / "sshd", address="127.0.0.7")
        self.key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.sshd.workdir.mkdir(parents=True, exist_ok=True)
        (self.sshd.workdir / "authorized_keys").write_text(
            Path(f"{self.key}.pub").read_text())
        self.sshd.start()

    def stop(self) -> None:
        self.sshd.stop()


@pytest.fixture
def host(tmp_path: Path, fake_cloud_reset: None) -> Any:
    server = Host(tmp_path)
    FakeCloud.for_provider(PROVIDER).address_for = lambda s: server.sshd.address
    yield server
    server.stop()


def checked_config(zk_info: Any, tmp_path: Path, host: Host, command: str | None,
                   timeout: int = 60) -> dict[str, Any]:
    """One diskimage, checked with ``command`` (None: no ``validation``),
    one fake provider whose only pool offers a label booting it."""
    config = base_config(zk_info, tmp_path)
    config["labels"] = [{"name": LABEL}]
    keys: dict[str, Any] = {}
    if command is not None:
        keys["validation"] = {"command": command, "timeout": timeout, "username": "root",
                              "private-key": str(host.key)}
    config["diskimages"] = [diskimage(IMAGE, **keys)]
    entry = provider(PROVIDER, image_keys={IMAGE: {"connection-port": host.sshd.port}})
    entry["pools"] = [{"name": "main", "max-servers": 10, "labels": [
        {"name": LABEL, "diskimage": IMAGE, "min-ram": 8192}]}]
    config["providers"] = [entry]
    return config


def uploads(images: Any) -> list[ImageUpload]:
    return sorted(images.uploads(IMAGE, PROVIDER), key=lambda u: u.state_time)


def with_check(images: Any, state: str, build_id: str | None = None) -> ImageUpload | None:
    for upload in uploads(images):
        if upload.validation_state == state and build_id in (None, upload.build_id):
            return upload
    return None


def served_image(zuul: Any) -> str:
    """Submit a request for the label; the image_id of the node it got."""
    request = zuul.wait_request(zuul.submit([LABEL]))
    assert request["state"] == "fulfilled", request
    [node_id] = request["nodes"]
    return zuul.node(node_id)["image_id"]


def check_node_gone(zk: Any, upload: ImageUpload) -> None:
    node_id = upload.validation["node"]
    assert node_id
    wait_for(lambda: zk.get_node(node_id) is None, what=f"check node {node_id} deleted")


def test_a_passing_check_puts_the_upload_in_service(zk_info, tmp_path, host, builder_factory,
                                                    launcher_factory, images, zuul, zk,
                                                    statsd):
    # The check waits for a go-ahead, so the test can look while it runs.
    go = tmp_path / "go"
    config = checked_config(zk_info, tmp_path, host,
                            f"while ! test -e {go}; do sleep 0.1; done; echo image fine")
    text = yaml.safe_dump(config)
    launchers = [launcher_factory(text, name=f"{n}.yaml", hostname=f"launcher-{n}")
                 for n in ("a", "b")]
    builder_factory(config)
    checking = wait_for(lambda: (u := with_check(images, models.VALIDATION_CHECKING))
                        and u.validation.get("node") and u, what="check running on its node")
    assert checking.state == models.READY
    node = zk.get_node(checking.validation["node"])
    assert node.state == models.TESTING and node.allocated_to is None
    assert node.image_id == checking.path and node.comment.startswith("checking upload")
    # Not served meanwhile: its only pool has no image in service.
    request = zuul.wait_request(zuul.submit([LABEL]))
    assert request["state"] == "failed" and request["nodes"] == []
    assert zk.get_node(node.id).state == models.TESTING

    go.touch()
    passed = wait_for(lambda: with_check(images, models.VALIDATION_PASSED), what="passed")
    assert passed.id == checking.id and passed.state == models.READY
    assert passed.validation["launcher"] in ("launcher-a", "launcher-b")
    assert passed.validation["node"] == node.id
    check_node_gone(zk, passed)
    # One check node in all, though both launchers serve the provider.
    assert FakeCloud.for_provider(PROVIDER).create_calls == 1
    assert served_image(zuul) == passed.path
    wait_for(lambda: statsd.has(
        f"nodepool.image_validation.{IMAGE}.{PROVIDER}.passed:"), what="passed metric")
    for launcher in launchers:
        assert launcher.is_alive()


def test_a_failing_check_fails_the_upload_and_the_previous_one_keeps_serving(
        zk_info, tmp_path, host, builder_factory, launcher_factory, images, zuul, zk,
        statsd):
    marker = tmp_path / "image-is-good"
    marker.touch()
    config = checked_config(zk_info, tmp_path, host,
                            f"test -e {marker} || {{ echo missing {marker.name}; exit 3; }}")
    launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    builder = builder_factory(config)
    first = wait_for(lambda: with_check(images, models.VALIDATION_PASSED), what="first")
    assert served_image(zuul) == first.path

    marker.unlink()
    zk.submit_build_request(IMAGE)
    failed = wait_for(lambda: with_check(images, models.VALIDATION_FAILED), what="failure")
    assert failed.build_id != first.build_id and failed.state == models.FAILED
    assert failed.validation["reason"] == f"command exited 3: missing {marker.name}"
    check_node_gone(zk, failed)
    assert served_image(zuul) == first.path
    wait_for(lambda: statsd.has(
        f"nodepool.image_validation.{IMAGE}.{PROVIDER}.failed:"), what="failed metric")

    # The builder keeps the failed upload (for operators to see) and does
    # not upload the same build again.
    for worker in [builder.cleanup_worker, *builder.upload_workers]:
        wait_for_pass(worker)
    kept = zk.get_uploads(IMAGE, failed.build_id, PROVIDER)
    assert [(u.id, u.state) for u in kept] == [(failed.id, models.FAILED)]
    assert zk.get_upload(IMAGE, first.build_id, PROVIDER, first.id).in_service
    table = status.image_list(listing.read_images(zk))
    assert table.columns[-1] == status.VALIDATION_COLUMN
    rows = {r["upload_id"]: r for r in table.rows if r["id"] == failed.build_id}
    assert rows[failed.id]["state"] == models.FAILED
    assert rows[failed.id]["validation"] == f"failed: command exited 3: missing {marker.name}"


def test_a_check_that_runs_too_long_fails(zk_info, tmp_path, host, builder_factory,
                                          launcher_factory, images, zk):
    config = checked_config(zk_info, tmp_path, host, "sleep 60", timeout=2)
    launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    builder_factory(config)
    failed = wait_for(lambda: with_check(images, models.VALIDATION_FAILED), what="timeout")
    assert failed.state == models.FAILED
    assert failed.validation["reason"] == "timed out after 2 s"
    check_node_gone(zk, failed)


def test_a_check_node_that_does_not_boot_fails_the_check(zk_info, tmp_path, host,
                                                         builder_factory, launcher_factory,
                                                         images, zk):
    config = checked_config(zk_info, tmp_path, host, "true")
    config["providers"][0]["launch-retries"] = 1
    FakeCloud.for_provider(PROVIDER).fail_next_creates(1, status_error=True)
    launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    builder_factory(config)
    failed = wait_for(lambda: with_check(images, models.VALIDATION_FAILED), what="failure")
    assert failed.validation["reason"].startswith("the check node could not be launched")
    assert "Injected boot failure" in failed.validation["reason"]
    wait_for(lambda: not FakeCloud.for_provider(PROVIDER).list_servers(),
             what="the failed server deleted")


def test_without_validation_uploads_serve_at_once(zk_info, tmp_path, host, builder_factory,
                                                  launcher_factory, images, zuul, zk):
    config = checked_config(zk_info, tmp_path, host, None)
    launcher = launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    builder_factory(config)
    [upload] = wait_for(lambda: [u for u in uploads(images) if u.state == models.READY],
                        what="upload")
    assert upload.validation is None
    assert "validation" not in zk.kazoo.get(upload.path)[0].decode()
    assert served_image(zuul) == upload.path
    wait_for_pass(launcher.image_validator)
    # The only server ever made is the request's node.
    assert FakeCloud.for_provider(PROVIDER).create_calls == 1
    table = status.image_list(listing.read_images(zk))
    assert status.VALIDATION_COLUMN not in table.columns


def test_a_pending_upload_whose_check_was_removed_is_skipped(zk_info, tmp_path, host,
                                                             launcher_factory, zuul, zk):
    # The builder asked for a check, but the launchers' configuration no
    # longer does: the upload serves without one.
    build = ImageBuild(IMAGE)
    build.state = models.READY
    build.formats = ["qcow2"]
    build_id = zk.store_build(IMAGE, build)
    upload = ImageUpload()
    upload.state = models.READY
    upload.external_id = "fake-image-id"
    upload.validation = {"state": models.VALIDATION_PENDING}
    zk.store_upload(IMAGE, build_id, PROVIDER, upload)
    config = checked_config(zk_info, tmp_path, host, None)
    launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    wait_for(lambda: zk.get_upload(IMAGE, build_id, PROVIDER, upload.id).validation_state
             == models.VALIDATION_SKIPPED, what="check skipped")
    assert served_image(zuul) == upload.path
    assert FakeCloud.for_provider(PROVIDER).create_calls == 1


def test_a_check_node_left_by_a_dead_launcher_is_deleted(zk_info, tmp_path, host,
                                                         launcher_factory, zk):
    # A launcher that dies mid-check leaves its node ``testing`` and, with
    # its session, unlocked: nobody's, so any launcher deletes it.
    cloud = FakeCloud.for_provider(PROVIDER)
    server = cloud.add_server("np-check")
    node = Node()
    node.state = models.TESTING
    node.provider = PROVIDER
    node.pool = "main"
    node.type = [LABEL]
    node.external_id = server.id
    zk.store_node(node)
    launcher_factory(yaml.safe_dump(checked_config(zk_info, tmp_path, host, None)),
                     name="launcher.yaml")
    wait_for(lambda: zk.get_node(node.id) is None, what="check node deleted")
    assert cloud.get_server(server.id) is None


# The SSH check on its own ---------------------------------------------------


def test_ssh_check_verdicts(tmp_path, host):
    sshd = host.sshd
    common = dict(host=sshd.address, port=sshd.port, username="root",
                  private_key=str(host.key), host_keys=[sshd.host_key])
    ok = run_check(command="echo out; echo err >&2", timeout=20, **common)
    assert ok.passed and ok.exit_status == 0 and set(ok.output.split()) == {"out", "err"}
    bad = run_check(command="echo first; echo 'last words' >&2; exit 7", timeout=20, **common)
    assert not bad.passed and bad.reason == "command exited 7: last words"
    slow = run_check(command="sleep 30", timeout=1, **common)
    assert not slow.passed and slow.reason == "timed out after 1 s"
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    refused = run_check(command="true", timeout=2,
                        **{**common, "private_key": str(stranger)})
    assert not refused.passed
    assert refused.reason.startswith(f"could not log in to root@{sshd.address}:{sshd.port} "
                                     "within 2 s: Authentication failed")
    other = LoopbackSshd(tmp_path / "other", address="127.0.0.7")
    other.workdir.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(other.workdir / "host_ed25519")], check=True)
    wrong = run_check(command="true", timeout=20,
                      **{**common, "host_keys": [other.host_key]})
    assert not wrong.passed and wrong.reason.startswith("wrong host key")
    # Host-key checking off (no keys scanned): any key is taken.
    assert run_check(command="true", timeout=20, **{**common, "host_keys": []}).passed


@pytest.mark.parametrize("full", ["pool", "label"])
def test_the_check_node_waits_for_room_like_any_node(zk_info, tmp_path, host, builder_factory,
                                                     launcher_factory, images, zk, caplog,
                                                     full):
    # A held node takes the only slot: of the pool (max-servers 1), or
    # of the label (max-servers 1, counted across providers).
    config = checked_config(zk_info, tmp_path, host, "true")
    holder = Node()
    holder.state = models.HOLD
    if full == "pool":
        config["providers"][0]["pools"][0]["max-servers"] = 1
        holder.provider, holder.pool, holder.type = PROVIDER, "main", ["other"]
    else:
        config["labels"][0]["max-servers"] = 1
        holder.provider, holder.pool, holder.type = "elsewhere", "main", [LABEL]
    zk.store_node(holder)
    caplog.set_level("INFO", logger="nodepool.ImageValidator")
    launcher_factory(yaml.safe_dump(config), name="launcher.yaml")
    builder_factory(config)
    wait_for(lambda: any("waits for room" in r.getMessage() for r in caplog.records),
             what="the check waiting for room")
    wait_for(lambda: with_check(images, models.VALIDATION_CHECKING), what="checking")
    assert FakeCloud.for_provider(PROVIDER).create_calls == 0

    zk.kazoo.delete(f"/nodepool/nodes/{holder.id}", recursive=True)
    passed = wait_for(lambda: with_check(images, models.VALIDATION_PASSED), what="passed")
    check_node_gone(zk, passed)


def test_a_check_cut_short_by_a_stopping_launcher_is_done_by_another(
        zk_info, tmp_path, host, builder_factory, launcher_factory, images, zk):
    go = tmp_path / "go"
    config = checked_config(zk_info, tmp_path, host,
                            f"while ! test -e {go}; do sleep 0.1; done")
    text = yaml.safe_dump(config)
    first = launcher_factory(text, name="a.yaml", hostname="launcher-a")
    builder_factory(config)
    checking = wait_for(lambda: (u := with_check(images, models.VALIDATION_CHECKING))
                        and u.validation.get("node") and u, what="first check running")
    first.stop()
    # Given back: pending again, its node on its way out.
    wait_for(lambda: with_check(images, models.VALIDATION_PENDING), what="pending again")
    assert zk.get_node(checking.validation["node"]).state == models.DELETING

    launcher_factory(text, name="b.yaml", hostname="launcher-b")
    check_node_gone(zk, checking)
    go.touch()
    passed = wait_for(lambda: with_check(images, models.VALIDATION_PASSED), what="passed")
    assert passed.id == checking.id
    assert passed.validation["launcher"] == "launcher-b"
    assert passed.validation["node"] != checking.validation["node"]
