"""The builder's files on local disk: image files, checksums, manifests
and build logs.

diskimage-builder writes, for output base ``<images-dir>/<image>-<build
id>``, one ``<base>.<format>`` per requested format, a ``.md5`` and a
``.sha256`` beside each (with ``--checksum``), and a ``<base>.d`` manifest
directory.  Only the builder that ran the build has these files, which is
why only it can upload the build.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("nodepool.builder.files")

CHECKSUMS = ("md5", "sha256")
MANIFEST_SUFFIX = ".d"
# ``<image>-<build id>.<format>[.md5|.sha256]`` or the ``.d`` manifest.
# Build ids are uuid4 hex (10-digit sequence numbers in old upstream
# releases); image names may contain dots and dashes.
_BUILD_FILE = re.compile(r"^(.+)-([0-9a-f]{32}|[0-9]{10})\.(\w+)(?:\.(?:md5|sha256))?$")
# Files in images-dir that are not build output.
_NOT_BUILD_EXTENSIONS = {"log", "txt", "pause", "done", "tmp"}


def build_base(images_dir: str, image: str, build_id: str) -> str:
    """DIB's ``-o`` argument: every file of the build starts with it."""
    return os.path.join(images_dir, f"{image}-{build_id}")


@dataclass(frozen=True)
class DibImageFile:
    """One image file of a build, in one format."""

    path: str
    extension: str

    def _checksum(self, kind: str) -> str | None:
        try:
            with open(f"{self.path}.{kind}") as f:
                text = f.read().split()
        except OSError:
            return None
        return text[0] if text else None

    @property
    def md5(self) -> str | None:
        return self._checksum("md5")

    @property
    def sha256(self) -> str | None:
        return self._checksum("sha256")


def find_build_files(images_dir: str, image: str, build_id: str) -> dict[str, DibImageFile]:
    """The image files of one build by format (checksums and the manifest
    directory are not image files)."""
    prefix = f"{image}-{build_id}."
    out = {}
    try:
        names = os.listdir(images_dir)
    except OSError:
        return {}
    for name in names:
        if not name.startswith(prefix):
            continue
        ext = name[len(prefix):]
        if not ext or "." in ext or ext == MANIFEST_SUFFIX[1:]:
            continue
        path = os.path.join(images_dir, name)
        if os.path.isfile(path):
            out[ext] = DibImageFile(path, ext)
    return out


def remove_build_files(images_dir: str, image: str, build_id: str,
                       formats: Iterable[str] | None = None) -> list[str]:
    """Remove a build's files of ``formats`` (all of them, and the manifest,
    when None).  Safe to call repeatedly; returns what was removed."""
    base = build_base(images_dir, image, build_id)
    if formats is None:
        prefix = os.path.basename(base) + "."
        try:
            names = os.listdir(images_dir)
        except OSError:
            names = []
        paths = [os.path.join(images_dir, n) for n in names
                 if n.startswith(prefix) and n != prefix + MANIFEST_SUFFIX[1:]]
    else:
        paths = [p for fmt in formats
                 for p in [f"{base}.{fmt}"] + [f"{base}.{fmt}.{c}" for c in CHECKSUMS]]
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.error("Could not remove %s: %s", path, e)
    manifest = base + MANIFEST_SUFFIX
    if os.path.isdir(manifest) and not find_build_files(images_dir, image, build_id):
        shutil.rmtree(manifest, ignore_errors=True)
        removed.append(manifest)
    if removed:
        log.info("Removed local files of build %s-%s: %s", image, build_id,
                 ", ".join(os.path.basename(p) for p in removed))
    return removed


def local_builds(images_dir: str) -> set[tuple[str, str]]:
    """(image, build id) of every build with files in ``images_dir``."""
    out: set[tuple[str, str]] = set()
    try:
        names = os.listdir(images_dir)
    except OSError:
        return out
    for name in names:
        m = _BUILD_FILE.match(name)
        if m and m.group(3) not in _NOT_BUILD_EXTENSIONS:
            out.add((m.group(1), m.group(2)))
    return out


def free_space(path: str) -> int:
    """Bytes available to us on the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def allocated_size(path: str) -> int:
    """Bytes a (possibly sparse) file really occupies on disk."""
    return os.stat(path).st_blocks * 512


# Build logs ---------------------------------------------------------------


def build_log_path(log_dir: str, image: str, build_id: str) -> str:
    return os.path.join(log_dir, f"{image}-{build_id}.log")


def prune_build_logs(log_dir: str, image: str, keep: int) -> list[str]:
    """Keep the ``keep`` newest build logs of ``image`` (all when -1)."""
    if keep < 0:
        return []
    keep = max(keep, 1)
    pattern = re.compile(rf"^{re.escape(image)}-[0-9a-f]+\.log$")
    try:
        names = [n for n in os.listdir(log_dir) if pattern.match(n)]
    except OSError:
        return []
    paths = []
    for name in names:
        path = os.path.join(log_dir, name)
        try:
            paths.append((os.path.getmtime(path), path))
        except OSError:
            continue
    paths.sort()
    removed = []
    for _, path in paths[:-keep]:
        try:
            os.unlink(path)
            removed.append(path)
            log.info("Removed old build log %s", path)
        except OSError as e:
            log.error("Could not remove old build log %s: %s", path, e)
    return removed
