"""The builder's pure parts: DIB invocation, local file names, build logs
and lock identifiers."""

from __future__ import annotations

import os
import threading
from types import SimpleNamespace

from nodepool.builder import dib, files
from nodepool.builder.build_worker import build_lock_identifier, lock_names_build, needed_formats
from nodepool.builder.upload_worker import cloud_image_name, upload_metadata
from nodepool.tests.helpers import wait_for

BUILD_ID = "0123456789abcdef0123456789abcdef"


def fake_diskimage(**kw):
    d = dict(name="ubuntu-22.04", dib_cmd="disk-image-create", elements=["ubuntu", "vm"],
             release="jammy", env_vars={"DIB_FOO": "bar"}, formats=[], image_types=set())
    d.update(kw)
    return SimpleNamespace(**d)


def test_dib_command_matches_upstream_order():
    image = fake_diskimage(elements=["ubuntu vm", "simple-init"])
    assert dib.dib_command(image, ["qcow2", "raw"], "/images/x-1") == [
        "disk-image-create", "-x", "-t", "qcow2,raw", "--checksum", "--no-tmpfs",
        "--qemu-img-options", "compat=0.10", "-o", "/images/x-1", "ubuntu", "vm",
        "simple-init"]
    assert "--qemu-img-options" not in dib.dib_command(image, ["tar"], "/i/x")
    image = fake_diskimage(dib_cmd="/opt/dib/bin/disk-image-create --no-cache")
    assert dib.dib_command(image, ["raw"], "/i/x")[:2] == [
        "/opt/dib/bin/disk-image-create", "--no-cache"]


def test_dib_environment():
    env = dib.dib_environment(fake_diskimage(), "/images/u-1", "/elements",
                              {"PATH": "/bin", "DIB_FOO": "old"})
    assert env == {"PATH": "/bin", "DIB_RELEASE": "jammy", "DIB_IMAGE_NAME": "ubuntu-22.04",
                   "DIB_IMAGE_FILENAME": "/images/u-1", "ELEMENTS_PATH": "/elements",
                   "DIB_FOO": "bar"}
    env = dib.dib_environment(fake_diskimage(release=None), "/i/u", None, {})
    assert "DIB_RELEASE" not in env and "ELEMENTS_PATH" not in env


def test_needed_formats_union_of_config_and_providers():
    assert needed_formats(fake_diskimage(formats=["tar"], image_types={"qcow2", "tar"})) == [
        "qcow2", "tar"]
    assert needed_formats(fake_diskimage()) == []


def test_run_dib_streams_output_and_exit_code(tmp_path):
    log = tmp_path / "b.log"
    result = dib.run_dib(["sh", "-c", "echo hello; echo oops >&2; exit 3"], os.environ,
                         str(log), timeout=30)
    assert result.returncode == 3 and not result.ok and not result.timed_out
    text = log.read_text()
    assert "hello\n" in text and "oops\n" in text
    assert text.endswith("Exit code: 3\n")


def processes_running(argv: list[str]) -> list[int]:
    wanted = "\0".join(argv).encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().rstrip(b"\0") == wanted:
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def test_run_dib_timeout_kills_the_process_group(tmp_path):
    # A background grandchild, as DIB's tools leave, must die too.  Both
    # would outlive the test (pytest's timeout): only the kill ends them.
    script = "(sleep 3117; true) & sleep 3117"
    result = dib.run_dib(["sh", "-c", script], os.environ, str(tmp_path / "l"), timeout=0.5)
    assert result.timed_out and not result.ok
    assert "timed out" in (tmp_path / "l").read_text()
    wait_for(lambda: not processes_running(["sleep", "3117"]), 60,
             what="the process group killed")


def test_run_dib_cancel(tmp_path):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    result = dib.run_dib(["sleep", "30"], os.environ, str(tmp_path / "l"), timeout=60,
                         cancel=cancel)
    assert result.cancelled and not result.ok


def test_local_builds_parses_names_with_dots_and_dashes(tmp_path):
    for name in (f"ubuntu-22.04-{BUILD_ID}.qcow2", f"ubuntu-22.04-{BUILD_ID}.qcow2.md5",
                 f"ubuntu-22.04-{BUILD_ID}.d", "fake-0000000001.raw",
                 "builder_id.txt", "fake-image-create.pause", f"x-{BUILD_ID}.log",
                 "random.file"):
        (tmp_path / name).write_text("x")
    assert files.local_builds(str(tmp_path)) == {("ubuntu-22.04", BUILD_ID),
                                                 ("fake", "0000000001")}


def test_find_and_remove_build_files(tmp_path):
    base = tmp_path / f"img-{BUILD_ID}"
    for suffix in (".qcow2", ".qcow2.md5", ".qcow2.sha256", ".raw", ".raw.md5"):
        (tmp_path / f"{base.name}{suffix}").write_text("data\n")
    (tmp_path / f"{base.name}.d").mkdir()
    found = files.find_build_files(str(tmp_path), "img", BUILD_ID)
    assert sorted(found) == ["qcow2", "raw"]
    assert found["qcow2"].md5 == "data" and found["raw"].sha256 is None
    files.remove_build_files(str(tmp_path), "img", BUILD_ID, ["raw"])
    assert sorted(files.find_build_files(str(tmp_path), "img", BUILD_ID)) == ["qcow2"]
    assert (tmp_path / f"{base.name}.d").is_dir()
    files.remove_build_files(str(tmp_path), "img", BUILD_ID)
    assert list(tmp_path.iterdir()) == []


def test_prune_build_logs(tmp_path):
    for i in range(4):
        path = tmp_path / f"img-{i:032x}.log"
        path.write_text("x")
        os.utime(path, (1000 + i, 1000 + i))
    (tmp_path / f"img-other-{BUILD_ID}.log").write_text("another image's log")
    files.prune_build_logs(str(tmp_path), "img", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"img-{2:032x}.log", f"img-{3:032x}.log", f"img-other-{BUILD_ID}.log"]
    files.prune_build_logs(str(tmp_path), "img", -1)
    assert len(list(tmp_path.iterdir())) == 3


def test_lock_identifier_names_the_build():
    ident = build_lock_identifier("builder-1", BUILD_ID)
    assert lock_names_build(ident, BUILD_ID) is True
    assert lock_names_build(ident, "other") is False
    assert lock_names_build(None, BUILD_ID) is False
    assert lock_names_build("", BUILD_ID) is None


def test_cloud_image_name_and_metadata():
    pc = SimpleNamespace(image_name_format="{image_name}-{upload_id}-{timestamp}")
    assert cloud_image_name(pc, "img", "0000000001", 42) == "img-0000000001-42"
    assert cloud_image_name(SimpleNamespace(image_name_format="{bad}"), "img", "1", 42) == (
        "img-42")
    meta = upload_metadata(SimpleNamespace(metadata={"a": "1", "b": "2"}),
                           SimpleNamespace(meta={"b": "3"}), "p", "img", "b1", "0000000002")
    assert meta == {"a": "1", "b": "3", "nodepool_build_id": "b1",
                    "nodepool_upload_id": "0000000002", "nodepool_image_name": "img",
                    "nodepool_provider_name": "p"}
