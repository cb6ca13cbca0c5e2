"""nodepool-builder against real ZooKeeper, the fake cloud and a stand-in
for diskimage-builder (nodepool/tests/fake-image-create)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from kazoo.client import KazooClient

from nodepool.builder.build_worker import build_lock_identifier
from nodepool.driver.fake.cloud import FakeCloud
from nodepool.tests.functional.builder_support import (
    FAKE_DIB,
    base_config,
    diskimage,
    provider,
    write_config,
)
from nodepool.tests.helpers import wait_for, wait_for_pass
from nodepool.zk import ZooKeeper, models
from nodepool.zk.models import ImageBuild

IMAGE = "fake-image"
PROVIDER = "fake-provider"


def simple_config(zk_info, tmp_path, image_keys=None, provider_keys=None, **top):
    config = base_config(zk_info, tmp_path, **top)
    config["diskimages"] = [diskimage(**(image_keys or {}))]
    config["providers"] = [provider(**(provider_keys or {}))]
    return config


def ready_builds(images, image=IMAGE):
    return sorted((b for b in images.builds(image) if b.state == models.READY),
                  key=lambda b: b.state_time)


def ready_uploads(images, image=IMAGE, provider_name=PROVIDER):
    return sorted((u for u in images.uploads(image, provider_name)
                   if u.state == models.READY), key=lambda u: u.state_time)


def cloud_images(provider_name=PROVIDER):
    """Images in the fake cloud that nodepool uploaded."""
    return [i for i in FakeCloud.for_provider(provider_name).list_images()
            if "nodepool_build_id" in i.metadata]


def build_files(images_dir, build_id):
    return sorted(p.name for p in Path(images_dir).iterdir() if build_id in p.name)


def states_of(images, build_id, image=IMAGE):
    return images.states((image, build_id))


# Build and upload ---------------------------------------------------------------


def test_build_and_upload(zk_info, tmp_path, builder_factory, images, zk, statsd):
    elements_dir = tmp_path / "elements"
    config = simple_config(
        zk_info, tmp_path, {"metadata": {"purpose": "test"},
                            "env_vars": {"DIB_EXTRA": "from-env-vars"}},
        {"image_keys": {IMAGE: {"meta": {"owner": "ci"}}}},
        **{"elements-dir": str(elements_dir)})
    builder = builder_factory(config)
    [upload] = wait_for(lambda: ready_uploads(images), what="ready upload")
    [build] = ready_builds(images)
    images_dir = Path(config["images-dir"])

    # The build record, as upstream writes it.
    assert re.fullmatch(r"[0-9a-f]{32}", build.id)
    assert build.builder == builder.hostname
    assert build.builder_id == (images_dir / "builder_id.txt").read_text()
    assert build.formats == ["qcow2"]
    raw = json.loads(zk.kazoo.get(f"/nodepool/images/{IMAGE}/builds/{build.id}")[0])
    assert raw["state"] == "ready" and raw["formats"] == "qcow2"
    assert raw["username"] == "zuul" and raw["python_path"] == "auto"
    assert states_of(images, build.id)[:2] == ["building", "ready"]

    # The upload record and the cloud image with our tags.
    assert upload.id == "0000000001"
    assert upload.format == "qcow2"
    assert re.fullmatch(r"fake-image-\d+", upload.external_name)
    image = FakeCloud.for_provider(PROVIDER).images[upload.external_id]
    assert image.name == upload.external_name
    assert image.metadata == {
        "purpose": "test", "owner": "ci", "nodepool_build_id": build.id,
        "nodepool_upload_id": upload.id, "nodepool_image_name": IMAGE,
        "nodepool_provider_name": PROVIDER}
    assert images.upload_keys(IMAGE, PROVIDER) == {(IMAGE, build.id, PROVIDER, upload.id)}

    # DIB's invocation, files and log.
    base = images_dir / f"{IMAGE}-{build.id}"
    assert (Path(f"{base}.d") / "dib-args").read_text().split("\n")[:-1] == [
        "-x", "-t", "qcow2", "--checksum", "--no-tmpfs", "--qemu-img-options",
        "compat=0.10", "-o", str(base), "fedora", "vm"]
    env = dict(line.split("=", 1) for line in
               (Path(f"{base}.d") / "dib-env").read_text().splitlines())
    assert env["DIB_RELEASE"] == "21"
    assert env["DIB_IMAGE_NAME"] == IMAGE
    assert env["DIB_IMAGE_FILENAME"] == str(base)
    assert env["ELEMENTS_PATH"] == str(elements_dir)
    assert env["DIB_EXTRA"] == "from-env-vars"
    qcow2 = Path(f"{base}.qcow2").read_bytes()
    assert Path(f"{base}.qcow2.md5").read_text().strip() == hashlib.md5(qcow2).hexdigest()
    assert (Path(f"{base}.qcow2.sha256").read_text().strip()
            == hashlib.sha256(qcow2).hexdigest())
    log = (tmp_path / "logs" / f"{IMAGE}-{build.id}.log").read_text()
    assert "fake-image-create: done" in log
    assert log.endswith("Exit code: 0\n")

    # Registered as a builder component.
    [component] = zk.kazoo.get_children("/nodepool/components/builder")
    assert json.loads(zk.kazoo.get(f"/nodepool/components/builder/{component}")[0])[
        "kind"] == "builder"

    # Upstream's builder metrics.
    host = builder.hostname
    for prefix in (f"nodepool.dib_image_build.{IMAGE}.qcow2.size:",
                   f"nodepool.dib_image_build.{IMAGE}.status.duration:",
                   f"nodepool.dib_image_build.{IMAGE}.status.rc:0|g",
                   f"nodepool.dib_image_build.{IMAGE}.status.last_build:",
                   f"nodepool.image_update.{IMAGE}.{PROVIDER}:",
                   f"nodepool.builder.{host}.image.{IMAGE}.build.state:",
                   f"nodepool.builder.{host}.image.{IMAGE}.provider.{PROVIDER}.upload.state:",
                   f"nodepool.image.{IMAGE}.image_build_requests:0|g",
                   "nodepool.image_build_requests:0|g"):
        wait_for(lambda p=prefix: statsd.has(p), timeout=60, what=f"{prefix} in {statsd.lines}")


def test_builder_id_persists_across_restarts(zk_info, tmp_path, builder_factory):
    config = simple_config(zk_info, tmp_path)
    first = builder_factory(config)
    builder_id = first.builder_id
    assert uuid.UUID(builder_id)
    first.stop()
    second = builder_factory(config)
    assert second.builder_id == builder_id
    assert (Path(config["images-dir"]) / "builder_id.txt").read_text() == builder_id


# When to build ----------------------------------------------------------------


def test_rebuild_age_and_only_two_newest_builds_kept(zk_info, tmp_path, builder_factory,
                                                      images, zk):
    config = simple_config(zk_info, tmp_path, {"rebuild_age": 1})
    builder_factory(config, build_interval=0.2)
    wait_for(lambda: len(images.build_ids(IMAGE, "ready")) >= 3, timeout=60,
             what="three builds, one per rebuild-age")
    # Stop rebuilding and let cleanup settle.
    zk.set_image_paused(IMAGE, True)

    def settled():
        builds = images.builds(IMAGE)
        uploads = images.uploads(IMAGE, PROVIDER)
        return (len(builds) == 2 and all(b.state == models.READY for b in builds)
                and len(uploads) == 2 and all(u.state == models.READY for u in uploads)
                and len(cloud_images()) == 2 and builds)
    kept = wait_for(settled, what="two builds and two uploads kept")
    assert len(images.build_ids(IMAGE, "ready")) >= 3
    # The survivors are the newest, and their uploads are the ones in the cloud.
    newest = {b.id for b in kept}
    assert {u.build_id for u in images.uploads(IMAGE, PROVIDER)} == newest
    assert {i.metadata["nodepool_build_id"] for i in cloud_images()} == newest
    local = {p.name.split(".")[0] for p in Path(config["images-dir"]).glob(f"{IMAGE}-*")}
    wait_for(lambda: {p.name.split(".")[0] for p in
                      Path(config["images-dir"]).glob(f"{IMAGE}-*")}
             == {f"{IMAGE}-{i}" for i in newest}, what=f"local files of old builds gone "
             f"(have {local})")


def test_build_request_triggers_a_build_and_is_removed(zk_info, tmp_path, builder_factory,
                                                       images, zk):
    builder_factory(simple_config(zk_info, tmp_path))
    [first] = wait_for(lambda: ready_builds(images), what="first build")
    zk.submit_build_request(IMAGE)
    wait_for(lambda: len(ready_builds(images)) == 2, what="requested build")
    wait_for(lambda: zk.build_request_time(IMAGE) is None, what="request removed")
    assert ready_builds(images)[0].id == first.id


def test_paused_images_are_not_built(zk_info, tmp_path, builder_factory, images, zk):
    config = base_config(zk_info, tmp_path)
    config["diskimages"] = [diskimage(), diskimage("paused-image", pause=True),
                            diskimage("abstract-image", abstract=True)]
    config["providers"] = [provider(images=(IMAGE, "paused-image"))]
    zk.set_image_paused(IMAGE, True)
    zk.submit_build_request(IMAGE)
    builder = builder_factory(config)
    for worker in builder.build_workers:
        wait_for_pass(worker)
    assert not images.builds(IMAGE) and not images.builds("paused-image")
    # Lifting the ZooKeeper pause builds at once; the request is honoured.
    zk.set_image_paused(IMAGE, False)
    wait_for(lambda: ready_uploads(images), what="build after unpause")
    wait_for(lambda: zk.build_request_time(IMAGE) is None, what="request removed")
    # Lifting the config pause: picked up by the config reload.
    config["diskimages"][1]["pause"] = False
    write_config(tmp_path / "nodepool.yaml", config)
    wait_for(lambda: ready_uploads(images, "paused-image"), what="build after config")
    assert not images.builds("abstract-image")


def test_build_timeout_kills_the_build(zk_info, tmp_path, builder_factory, images):
    config = simple_config(zk_info, tmp_path, {"build_timeout": 1})
    images_dir = Path(config["images-dir"])
    images_dir.mkdir()
    pause = images_dir / "fake-image-create.pause"
    pause.touch()
    try:
        builder_factory(config, retry_delay=60)
        [build_id] = wait_for(lambda: images.build_ids(IMAGE), what="build started")
        wait_for(lambda: "failed" in states_of(images, build_id), timeout=60,
                 what="build failed by timeout")
        log = (tmp_path / "logs" / f"{IMAGE}-{build_id}.log").read_text()
        assert "paused while" in log
        assert "Build timed out after 1 seconds" in log
        assert re.search(r"Exit code: -?\d+\n$", log)
        # The whole process group is gone and nothing was left behind.
        assert not dib_processes(build_id)
        # (The files go just after the record says failed.)
        wait_for(lambda: build_files(images_dir, build_id) == [], what="files removed")
        wait_for(lambda: not images.builds(IMAGE), what="failed build removed")
    finally:
        pause.unlink()


def dib_processes(build_id):
    """pids of fake-image-create processes working on ``build_id``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if FAKE_DIB in cmdline and build_id in cmdline:
            pids.append(int(entry.name))
    return pids


def test_failed_build_is_recorded_and_cleaned_up(zk_info, tmp_path, builder_factory,
                                                 images):
    config = simple_config(zk_info, tmp_path, {"env_vars": {"SHOULD_FAIL": "true"}})
    builder_factory(config, retry_delay=60)
    [build_id] = wait_for(lambda: images.build_ids(IMAGE), what="build started")
    wait_for(lambda: "failed" in states_of(images, build_id), what="build failed")
    log = (tmp_path / "logs" / f"{IMAGE}-{build_id}.log").read_text()
    assert "failing because SHOULD_FAIL=true" in log
    assert log.endswith("Exit code: 1\n")
    # (The files go just after the record says failed.)
    wait_for(lambda: build_files(config["images-dir"], build_id) == [], what="files removed")
    wait_for(lambda: not images.builds(IMAGE), what="failed build removed")
    assert not images.upload_keys(IMAGE, PROVIDER) and not cloud_images()


def test_build_log_retention(zk_info, tmp_path, builder_factory, images, zk):
    config = simple_config(zk_info, tmp_path, **{"build-log-retention": 2})
    builder_factory(config)
    for count in range(1, 5):
        wait_for(lambda c=count: len(images.build_ids(IMAGE, "ready")) == c,
                 what=f"build {count}")
        # A request made before the last one is removed would be merged
        # with it.
        wait_for(lambda: zk.build_request_time(IMAGE) is None, what="request removed")
        if count < 4:
            zk.submit_build_request(IMAGE)
    # The two newest builds' logs are kept (they are also the builds kept);
    # the builder prunes them just after recording the build ready.
    def logs() -> list[str]:
        return sorted(p.name for p in (tmp_path / "logs").iterdir())

    kept = sorted(f"{IMAGE}-{b.id}.log" for b in ready_builds(images)[-2:])
    wait_for(lambda: logs() == kept, what=f"logs pruned to {kept}")


# Uploads ----------------------------------------------------------------------


def test_provider_pause_holds_uploads(zk_info, tmp_path, builder_factory, images):
    config = simple_config(zk_info, tmp_path,
                           provider_keys={"image_keys": {IMAGE: {"pause": True}}})
    builder = builder_factory(config)
    wait_for(lambda: ready_builds(images), what="build")
    for worker in builder.upload_workers:
        wait_for_pass(worker)
    assert not images.upload_keys(IMAGE, PROVIDER) and not cloud_images()
    config["providers"][0]["diskimages"][0]["pause"] = False
    write_config(tmp_path / "nodepool.yaml", config)
    wait_for(lambda: ready_uploads(images), what="upload after unpause")


def test_upload_failure_is_retried(zk_info, tmp_path, builder_factory, images):
    # Three attempts per upload record: the first record fails, the next
    # one (after the retry delay) succeeds.
    FakeCloud.for_provider(PROVIDER).fail_next_uploads(4)
    builder_factory(simple_config(zk_info, tmp_path), upload_attempts=3)
    [upload] = wait_for(lambda: ready_uploads(images), what="upload after retries")
    failed = images.upload_keys(IMAGE, PROVIDER, "failed")
    assert len(failed) == 1 and (IMAGE, upload.build_id, PROVIDER, upload.id) not in failed
    assert [i.id for i in cloud_images()] == [upload.external_id]
    wait_for(lambda: len(images.uploads(IMAGE, PROVIDER)) == 1, what="failed record removed")


def test_post_upload_hook(zk_info, tmp_path, builder_factory, images):
    hook = tmp_path / "hook"
    hook.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/hook-$1\n"
                    "[ \"$1\" = fake-provider ] || exit 3\n")
    hook.chmod(0o755)
    config = base_config(zk_info, tmp_path)
    config["diskimages"] = [diskimage()]
    config["providers"] = [provider(post_upload_hook=str(hook)),
                           provider("fake-provider-2", post_upload_hook=str(hook))]
    builder_factory(config, retry_delay=60)
    [upload] = wait_for(lambda: ready_uploads(images), what="upload with hook")
    [build] = ready_builds(images)
    local = f"{config['images-dir']}/{IMAGE}-{build.id}.qcow2"
    assert (tmp_path / "hook-fake-provider").read_text() == (
        f"fake-provider {upload.external_id} {local}\n")
    # A failing hook fails the upload and removes the image it uploaded.
    wait_for(lambda: images.upload_keys(IMAGE, "fake-provider-2", "failed"),
             what="upload failed by hook")
    assert (tmp_path / "hook-fake-provider-2").read_text().startswith("fake-provider-2 ")
    # (Only this build's images: an upload thread of an earlier test may
    # still be finishing in the shared fake cloud.)
    assert not [i for i in cloud_images("fake-provider-2")
                if i.metadata["nodepool_build_id"] == build.id]
    assert not ready_uploads(images, provider_name="fake-provider-2")


# Deleting ---------------------------------------------------------------------


def test_image_removed_from_provider_then_from_config(zk_info, tmp_path, builder_factory,
                                                      images):
    config = simple_config(zk_info, tmp_path)
    builder_factory(config)
    wait_for(lambda: ready_uploads(images), what="upload")
    [build] = ready_builds(images)
    # The provider stops using the image: its uploads go, the build stays.
    config["providers"][0]["diskimages"] = []
    write_config(tmp_path / "nodepool.yaml", config)
    wait_for(lambda: not cloud_images() and not images.uploads(IMAGE, PROVIDER),
             what="uploads deleted")
    assert [b.id for b in images.builds(IMAGE)] == [build.id]
    # The image leaves the configuration: its builds and files go too.
    config["diskimages"] = []
    write_config(tmp_path / "nodepool.yaml", config)
    wait_for(lambda: not images.builds(IMAGE), what="build deleted")
    wait_for(lambda: not build_files(config["images-dir"], build.id), what="files removed")


def test_image_delete_and_dib_image_delete_are_carried_out(zk_info, tmp_path,
                                                           builder_factory, images, zk):
    config = simple_config(zk_info, tmp_path)
    builder_factory(config)
    [first] = wait_for(lambda: ready_uploads(images), what="upload")
    # ``nodepool image-delete``: the upload goes; the build is uploaded again.
    upload = zk.get_upload(IMAGE, first.build_id, PROVIDER, first.id)
    upload.state = models.DELETING
    zk.store_upload(IMAGE, first.build_id, PROVIDER, upload)
    wait_for(lambda: first.external_id not in {i.id for i in cloud_images()},
             what="cloud image deleted")
    [second] = wait_for(lambda: [u for u in ready_uploads(images) if u.id != first.id],
                        what="re-upload")
    assert second.build_id == first.build_id
    wait_for(lambda: zk.get_upload(IMAGE, first.build_id, PROVIDER, first.id) is None,
             what="upload record removed")
    # ``nodepool dib-image-delete``: the build, its uploads and files go; a
    # new build replaces it.
    build = zk.get_build(IMAGE, first.build_id)
    build.state = models.DELETING
    zk.store_build(IMAGE, build)
    wait_for(lambda: zk.get_build(IMAGE, first.build_id) is None, what="build deleted")
    wait_for(lambda: not build_files(config["images-dir"], first.build_id),
             what="files removed")
    [replacement] = wait_for(lambda: ready_uploads(images), what="new build uploaded")
    assert replacement.build_id != first.build_id
    assert [i.id for i in cloud_images()] == [replacement.external_id]


def test_leaked_image_deleted_after_two_passes(zk_info, tmp_path, builder_factory, images):
    cloud = FakeCloud.for_provider(PROVIDER)
    leaked = cloud.upload_image("leaked", "/dev/null", "qcow2", {
        "nodepool_build_id": "0" * 32, "nodepool_upload_id": "0000000007",
        "nodepool_image_name": IMAGE, "nodepool_provider_name": PROVIDER})
    foreign = cloud.upload_image("foreign", "/dev/null", "qcow2", {"owner": "someone"})
    builder = builder_factory(simple_config(zk_info, tmp_path))
    wait_for(lambda: leaked.id not in cloud.images, what="leaked image deleted")
    assert foreign.id in cloud.images and "fake-image-id" in cloud.images
    # Our own upload is not a leak: two cleanup passes (two sightings)
    # since it was uploaded leave it alone.
    [upload] = wait_for(lambda: ready_uploads(images), what="upload")
    wait_for_pass(builder.cleanup_worker)
    wait_for_pass(builder.cleanup_worker)
    assert upload.external_id in cloud.images


# Several builders and failures ----------------------------------------------


def test_two_builders_share_the_work(zk_info, tmp_path, builder_factory, images, zk):
    def config_for(name):
        config = base_config(zk_info, tmp_path / name)
        config["diskimages"] = [diskimage(env_vars={"FAKE_IMAGE_SLEEP": "0.3"}),
                                diskimage("other-image",
                                          env_vars={"FAKE_IMAGE_SLEEP": "0.3"})]
        config["providers"] = [provider(images=(IMAGE, "other-image"))]
        return config
    for image in (IMAGE, "other-image"):
        zk.set_image_paused(image, True)
    first = builder_factory(config_for("a"), name="a.yaml")
    second = builder_factory(config_for("b"), name="b.yaml")
    assert first.builder_id != second.builder_id
    for image in (IMAGE, "other-image"):
        zk.set_image_paused(image, False)
    for image in (IMAGE, "other-image"):
        wait_for(lambda i=image: ready_uploads(images, i), what=f"{image} uploaded")
    # Both builders have looked again since, and neither built nor
    # uploaded anything twice.
    for builder in (first, second):
        for worker in builder.build_workers + builder.upload_workers:
            wait_for_pass(worker)
    for image in (IMAGE, "other-image"):
        assert len(images.build_ids(image)) == 1, image
        assert len(images.upload_keys(image, PROVIDER)) == 1, image
    assert len(cloud_images()) == 2


def test_stale_building_record_of_dead_builder_is_failed(zk_info, tmp_path,
                                                         builder_factory, images):
    # Another builder's session: it creates a build and dies.
    dead_client = zk_info.client()
    dead_client.connect(timeout=10)
    dead = ZooKeeper(dead_client)
    record = ImageBuild(IMAGE, uuid.uuid4().hex)
    record.state = models.BUILDING
    record.builder, record.builder_id = "dead-host", "dead-builder"
    dead.store_build(IMAGE, record, create=True)
    dead.lock_image_builds(IMAGE, identifier=build_lock_identifier("dead-builder",
                                                                   record.id))
    try:
        # While its builder holds the image lock naming this build (it is
        # being created), cleanup leaves it alone even without its build lock.
        builder = builder_factory(simple_config(zk_info, tmp_path))
        wait_for_pass(builder.cleanup_worker)
        wait_for_pass(builder.cleanup_worker)
        assert states_of(images, record.id) == ["building"]
    finally:
        dead_client.disconnect()
    # Its session is gone: the record is failed, removed, and replaced.
    wait_for(lambda: "failed" in states_of(images, record.id), what="stale build failed")
    wait_for(lambda: states_of(images, record.id)[-1] is None, what="stale build removed")
    wait_for(lambda: ready_uploads(images), what="replacement build")


def test_session_loss_during_build_fails_it(zk_info, tmp_path, builder_factory, images):
    config = simple_config(zk_info, tmp_path)
    images_dir = Path(config["images-dir"])
    images_dir.mkdir()
    pause = images_dir / "fake-image-create.pause"
    pause.touch()
    try:
        builder = builder_factory(config)
        [build_id] = wait_for(lambda: images.build_ids(IMAGE), what="build started")
        session_id, password = builder.zk_client.kazoo.client_id
        thief = KazooClient(hosts=zk_info.hosts, client_id=(session_id, password),
                            use_ssl=True, certfile=zk_info.cert, keyfile=zk_info.key,
                            ca=zk_info.ca)
        thief.start(timeout=10)
        thief.stop()
        thief.close()
        # Failed (cleanup then removes failed records quickly, so the
        # cache may only see it go), never ready.
        wait_for(lambda: "failed" in states_of(images, build_id)
                 or states_of(images, build_id)[-1] is None, timeout=60,
                 what="build failed after session loss")
        # The build worker notices the lost session and kills the build
        # (another builder's cleanup may mark the record failed first).
        wait_for(lambda: not dib_processes(build_id), timeout=60, what="build killed")
    finally:
        pause.unlink()
    [rebuilt] = wait_for(lambda: ready_builds(images), timeout=60, what="rebuilt")
    assert rebuilt.id != build_id
    assert "ready" not in states_of(images, build_id)
    wait_for(lambda: build_files(images_dir, build_id) == [], what="files removed")


# The daemon --------------------------------------------------------------------


def builder_command():
    script = Path(sys.executable).parent / "nodepool-builder"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "nodepool.cmd.builder"]


def start_daemon(tmp_path, config, name="daemon"):
    path = tmp_path / f"{name}.yaml"
    write_config(path, config)
    log = open(tmp_path / f"{name}.log", "wb")
    proc = subprocess.Popen(builder_command() + ["-f", "-c", str(path),
                                                 "-p", str(tmp_path / f"{name}.pid")],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, tmp_path / f"{name}.log"


def test_daemon_stack_dump_and_sigterm(zk_info, tmp_path, fake_cloud_reset):
    proc, log_path = start_daemon(tmp_path, simple_config(zk_info, tmp_path))
    try:
        wait_for(lambda: "nodepool-builder" in log_path.read_text()
                 and "started" in log_path.read_text(), timeout=30, what="daemon started")
        proc.send_signal(signal.SIGUSR2)
        wait_for(lambda: "Thread: CleanupWorker.0" in log_path.read_text(), timeout=60,
                 what="stack dump")
        text = log_path.read_text()
        assert "nodepool.stack_dump" in text
        for thread in ("BuildWorker.0", "UploadWorker.0", "UploadWorker.3", "NodePoolBuilder"):
            assert f"Thread: {thread}" in text
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "nodepool-builder stopped" in log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_builder_leaves_nothing_stuck_after_restart(zk_info, tmp_path,
                                                           builder_factory, images):
    config = simple_config(zk_info, tmp_path, **{"zookeeper-timeout": 4.0})
    images_dir = Path(config["images-dir"])
    images_dir.mkdir()
    pause = images_dir / "fake-image-create.pause"
    pause.touch()
    proc, _ = start_daemon(tmp_path, config)
    try:
        [build_id] = wait_for(lambda: images.build_ids(IMAGE), timeout=60,
                              what="build started")
        wait_for(lambda: dib_processes(build_id), what="DIB running")
    finally:
        proc.kill()
        proc.wait()
    # The killed builder's DIB dies with the machine, so to speak; it
    # left a partial file behind.
    for pid in dib_processes(build_id):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    pause.unlink()
    partial = images_dir / f"{IMAGE}-{build_id}.qcow2"
    partial.write_text("half an image")
    # Restarted on the same images-dir: the same builder, which finds its
    # old build dead once the killed session expires.
    builder = builder_factory(config)
    assert builder.builder_id == (images_dir / "builder_id.txt").read_text()
    wait_for(lambda: "failed" in states_of(images, build_id), timeout=60,
             what="killed build failed")
    wait_for(lambda: states_of(images, build_id)[-1] is None, what="killed build removed")
    wait_for(lambda: not partial.exists(), what="partial file removed")
    [upload] = wait_for(lambda: ready_uploads(images), timeout=60, what="rebuilt")
    assert upload.build_id != build_id


# A real driver ------------------------------------------------------------------


def test_upload_to_openstack_simulator(zk_info, tmp_path, builder_factory, images, zk,
                                       monkeypatch):
    from nodepool.driver.openstack import cloud_config
    from nodepool.tests.openstack_sim import SimulatedCloud

    with SimulatedCloud() as sim:
        clouds = tmp_path / "clouds.yaml"
        sim.write_clouds_yaml(clouds, image_format="raw")
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
        cloud_config.reset()
        try:
            config = base_config(zk_info, tmp_path)
            config["diskimages"] = [diskimage(metadata={"os": "fedora"})]
            config["providers"] = [{"name": "sim-provider", "cloud": "sim", "rate": 0.0001,
                                    "diskimages": [{"name": IMAGE,
                                                    "meta": {"purpose": "testing"}}]}]
            builder_factory(config)
            [upload] = wait_for(lambda: ready_uploads(images, provider_name="sim-provider"),
                                what="upload to the simulated Glance")
            [build] = ready_builds(images)
            # The format comes from clouds.yaml.
            assert build.formats == ["raw"] and upload.format == "raw"
            [image] = [i for i in sim.images() if i.id == upload.external_id]
            assert image.status == "active" and image.disk_format == "raw"
            assert image.name == upload.external_name
            assert image.properties["os"] == "fedora"
            assert image.properties["purpose"] == "testing"
            assert image.properties["nodepool_build_id"] == build.id
            assert image.properties["nodepool_upload_id"] == upload.id
            assert image.properties["nodepool_provider_name"] == "sim-provider"
            # ``nodepool image-delete`` removes it from Glance.
            record = zk.get_upload(IMAGE, build.id, "sim-provider", upload.id)
            record.state = models.DELETING
            zk.store_upload(IMAGE, build.id, "sim-provider", record)
            wait_for(lambda: upload.external_id not in {i.id for i in sim.images()},
                     what="image deleted from Glance")
        finally:
            cloud_config.reset()
