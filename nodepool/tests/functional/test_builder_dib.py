"""One real diskimage-builder build through nodepool-builder.

Slow (about 90 s and ~130 MB of downloads from the Debian mirror) and it
needs root-capable tools, so it only runs with ``-m capable_host``.  It
builds ``debian-minimal`` as a tar file, which needs no partitioning
(ENVIRONMENT.md section 3: this kind of machine has loop devices but no
device-mapper).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tarfile
from pathlib import Path

import pytest

from nodepool.tests.functional.builder_support import base_config
from nodepool.tests.helpers import wait_for
from nodepool.zk import models

MIRROR_HOST = "deb.debian.org"


def _dib_cmd() -> str | None:
    local = Path(sys.executable).parent / "disk-image-create"
    return str(local) if local.exists() else shutil.which("disk-image-create")


def _missing_prerequisite() -> str | None:
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        return "not root and no sudo"
    for tool in ("sudo", "debootstrap"):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed (apt-get install sudo debootstrap; "
                    "diskimage-builder calls sudo even as root)")
    if _dib_cmd() is None:
        return "disk-image-create (diskimage-builder) is not installed"
    try:
        socket.create_connection((MIRROR_HOST, 80), timeout=5).close()
    except OSError as e:
        return f"no network access to the Debian mirror {MIRROR_HOST}:80 ({e})"
    return None


@pytest.mark.capable_host
@pytest.mark.timeout(1800)
def test_real_debian_minimal_tar_build(zk_info, tmp_path, builder_factory, images,
                                       monkeypatch):
    reason = _missing_prerequisite()
    if reason:
        pytest.skip(reason)
    dib_cmd = _dib_cmd()
    # DIB runs helper scripts from its own bin directory.
    monkeypatch.setenv("PATH", f"{Path(dib_cmd).parent}:{os.environ.get('PATH', '')}")
    work = tmp_path / "dib"
    (work / "tmp").mkdir(parents=True)
    config = base_config(zk_info, tmp_path)
    config["diskimages"] = [{
        "name": "debian-tar",
        "dib-cmd": f"{dib_cmd} --image-cache {work / 'cache'}",
        "elements": ["debian-minimal"],
        "release": "bookworm",
        "formats": ["tar"],
        "build-timeout": 1500,
        "env-vars": {
            "DIB_DISTRIBUTION_MIRROR": f"http://{MIRROR_HOST}/debian",
            "DIB_DEBIAN_SECURITY_MIRROR": f"http://{MIRROR_HOST}/debian-security",
            "TMP_DIR": str(work / "tmp"),
        },
    }]
    # No retries: one attempt tells whether this host can build.
    builder_factory(config, min_free_space=4 * 2**30, retry_delay=3600)

    def finished():
        # A failed build's record is removed soon: ask the recorder.
        return [(i, s) for i in images.build_ids("debian-tar")
                for s in images.states(("debian-tar", i))
                if s in (models.READY, models.FAILED)]
    [(build_id, state)] = wait_for(finished, timeout=1500, interval=2, what="real DIB build")
    log = (tmp_path / "logs" / f"debian-tar-{build_id}.log").read_text()
    assert state == models.READY, log[-5000:]
    assert log.endswith("Exit code: 0\n")
    image = Path(config["images-dir"]) / f"debian-tar-{build_id}.tar"
    assert image.stat().st_size > 100 * 2**20
    with tarfile.open(image) as tar:
        names = set(tar.getnames())
    assert {"./etc/debian_version", "etc/debian_version"} & names
    # DIB writes tar files directly, without the --checksum files it makes
    # for the formats it converts with qemu-img.
