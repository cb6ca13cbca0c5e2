"""``nodepool export-image-data`` and ``import-image-data``.

The file is upstream's format: one JSON object mapping each znode path
(without chroot) to its payload as a string: every build and upload
record, and an empty string for each image's ``pause`` flag.  Import is
meant for an empty or quiescent ZooKeeper (restoring after a loss), as
upstream's is.
"""

from __future__ import annotations

import json
import os
import sys

from nodepool.cmd.context import CommandError, Context
from nodepool.zk import listing
from nodepool.zk.zookeeper import IMAGE_ROOT, build_path, upload_path


def collect_image_data(ctx: Context) -> dict[str, str]:
    """Path -> payload for every pause flag, build and upload record."""
    out: dict[str, str] = {}
    for image in listing.read_images(ctx.zk):
        if image.paused:
            out[f"{IMAGE_ROOT}/{image.name}/pause"] = ""
        for build in image.builds:
            text = _text(build.data)
            if text is not None:
                out[build_path(image.name, build.id)] = text
        for upload in image.uploads:
            text = _text(upload.data)
            if text is not None:
                out[upload_path(upload.image, upload.build_id, upload.provider,
                                upload.id)] = text
    return out


def _text(data: bytes | None) -> str | None:
    try:
        return (data or b"").decode("utf8")
    except UnicodeDecodeError:
        return None


def export_image_data(ctx: Context) -> int:
    data = collect_image_data(ctx)
    path = ctx.args.path
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror}") from e
    # The mode only applies to a new file; records name cloud resources,
    # so keep an existing file private too.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    return 0


def _load(path: str) -> dict[str, str]:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise CommandError(f"{path} is not a JSON file written by "
                           f"export-image-data: {e}") from e
    if not isinstance(data, dict):
        raise CommandError(f"{path} must hold a JSON object of znode paths")
    for key, value in data.items():
        if not isinstance(value, str) or not key.startswith(IMAGE_ROOT + "/"):
            raise CommandError(f"{path}: unexpected entry {key!r}; only image records "
                               f"under {IMAGE_ROOT} can be imported")
    return data


def import_image_data(ctx: Context) -> int:
    data = _load(ctx.args.path)
    zk = ctx.zk
    # Upload ids are sequence numbers kept by their parent znode.  Creating
    # a record by name does not advance that counter, so the builder's next
    # upload would collide with an imported one.  Advance each counter past
    # the highest imported id first, keeping only the imported names.
    highest: dict[tuple[str, str, str], int] = {}
    for path in data:
        parts = path.split("/")
        # "", nodepool, images, <image>, builds, <build>, providers,
        # <provider>, images, <upload>
        if len(parts) == 10:
            try:
                number = int(parts[9])
            except ValueError as e:
                raise CommandError(f"{ctx.args.path}: upload id {parts[9]!r} in {path} "
                                   "is not a sequence number") from e
            key = (parts[3], parts[5], parts[7])
            highest[key] = max(highest.get(key, number), number)
    keep = set(data)
    for (image, build_id, provider), number in highest.items():
        zk.advance_upload_sequence(image, build_id, provider, number, keep)
    for path, text in sorted(data.items()):
        zk.write_image_record(path, text.encode("utf8"))
    print(f"Imported {len(data)} image records", file=sys.stderr)
    return 0
