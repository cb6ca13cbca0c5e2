"""Checks of uploads before service, piece by piece: the record's
``validation`` key, the configuration, which uploads the builder keeps,
which upload a launcher checks and where, and how listings show it (the
whole flow with a builder, launchers and sshd is in
functional/test_image_validation.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from nodepool import status
from nodepool.builder.cleanup import CleanupWorker
from nodepool.builder.upload_worker import failed_check
from nodepool.config import load_config, validate_config
from nodepool.exceptions import ConfigError
from nodepool.launcher.image_validator import check_target, next_to_check
from nodepool.tests.unit.test_status_page import Cache, launcher
from nodepool.web.status_page import render_page
from nodepool.web.status_snapshot import take_snapshot
from nodepool.zk import models
from nodepool.zk.listing import RawImage, RawUpload
from nodepool.zk.models import ImageBuild, ImageUpload

NOW = 1_800_000_000.0


def upload(upload_id: str, build_id: str = "b1", state: str = models.READY,
           age: float = 0.0, validation: Any = None, provider: str = "p1") -> ImageUpload:
    d: dict[str, Any] = {"state": state, "state_time": NOW - age, "external_id": f"x{upload_id}"}
    if validation is not None:
        d["validation"] = validation
    return ImageUpload.fromDict(d, build_id, provider, "img", upload_id)


def check(state: str, **more: Any) -> dict[str, Any]:
    return {"state": state, **more}


# The record --------------------------------------------------------------------


def test_records_without_a_check_are_upstreams_and_serve():
    plain = upload("1")
    assert plain.validation_state is None and plain.in_service
    assert "validation" not in plain.toDict()
    assert not upload("2", state=models.UPLOADING).in_service


@pytest.mark.parametrize(("validation", "state", "serves", "awaits"), [
    (check("pending"), "pending", False, True),
    (check("checking", launcher="l1", node="7"), "checking", False, True),
    (check("passed"), "passed", True, False),
    (check("skipped"), "skipped", True, False),
    (check("failed"), "failed", False, False),
    # Not ours to trust: checked (and rewritten) like a pending one.
    ("garbage", "pending", False, True),
    (check("a-newer-state"), "pending", False, True),
])
def test_the_check_decides_whether_a_ready_upload_serves(validation, state, serves, awaits):
    record = upload("1", validation=validation)
    assert record.validation_state == state
    assert record.in_service is serves and record.awaiting_validation is awaits
    again = ImageUpload.deserialize(record.serialize(), "b1", "p1", "img", "1")
    assert again.validation == validation


def test_a_failed_check_is_a_failed_upload_to_upstream_readers():
    record = upload("1", state=models.FAILED, validation=check("failed", reason="exit 1"))
    assert failed_check(record) and not record.in_service
    assert json.loads(record.serialize())["state"] == "failed"
    # A failed upload (no check) is retried by the builder as before.
    assert not failed_check(upload("2", state=models.FAILED))


# Configuration ------------------------------------------------------------------


ZK = """\
zookeeper-servers:
  - host: 127.0.0.1
zookeeper-tls: {ca: /ca, cert: /cert, key: /key}
labels:
  - name: small
"""


def write(tmp_path: Path, diskimages: str) -> str:
    path = tmp_path / "nodepool.yaml"
    path.write_text(ZK + "diskimages:\n" + textwrap.dedent(diskimages))
    return str(path)


def test_validation_settings_with_defaults_and_inheritance(tmp_path):
    config = load_config(write(tmp_path, """\
      - name: base
        abstract: true
        username: ci
        validation:
          command: systemctl is-system-running --wait
      - name: child
        parent: base
      - name: strict
        parent: base
        validation:
          command: /usr/local/bin/smoke-test
          timeout: 120
          username: root
          private-key: /var/lib/nodepool/.ssh/check
          label: small
      - name: unchecked
    """))
    images = config.diskimages
    assert images["child"].validation.command == "systemctl is-system-running --wait"
    assert images["child"].validation.timeout == 600
    assert images["child"].validation.username is None
    strict = images["strict"].validation
    assert (strict.command, strict.timeout, strict.username, strict.private_key,
            strict.label) == ("/usr/local/bin/smoke-test", 120, "root",
                              "/var/lib/nodepool/.ssh/check", "small")
    assert images["unchecked"].validation is None
    assert validate_config(str(tmp_path / "nodepool.yaml")).errors == []


@pytest.mark.parametrize(("text", "expected"), [
    ("    validation:\n      timeout: 5\n", "validation > command: required setting"),
    ("    validation:\n      command: /bin/true\n      timeout: 0\n",
     "validation > timeout: value must be at least 1"),
    ("    validation:\n      command: /bin/true\n      label: nope\n",
     "label 'nope' is not defined under the top-level labels"),
])
def test_bad_validation_settings_are_refused_naming_the_place(tmp_path, text, expected):
    path = write(tmp_path, "  - name: image\n" + text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert expected in str(e.value) and f"{path}:" in str(e.value)


# What the builder keeps ---------------------------------------------------------------


def builds(*ids: str) -> list[ImageBuild]:
    out = []
    for age, build_id in enumerate(ids):
        build = ImageBuild("img", build_id)
        build.state = models.READY
        build.state_time = NOW - age * 100
        out.append(build)
    return out


def test_retention_without_checks_is_the_two_newest_ready_uploads():
    found = builds("b3", "b2", "b1")
    uploads = {"b3": {"p1": [upload("3", "b3", age=0)]},
               "b2": {"p1": [upload("2", "b2", age=100)]},
               "b1": {"p1": [upload("1", "b1", age=200)]}}
    assert CleanupWorker._recent_uploads(found, uploads) == {"p1": {"b3/3", "b2/2"}}


def test_retention_keeps_the_serving_upload_while_newer_ones_wait_or_fail():
    found = builds("b4", "b3", "b2", "b1")
    uploads = {
        # Newest: awaiting its check, kept (it may take over).
        "b4": {"p1": [upload("4", "b4", age=0, validation=check("checking"))]},
        # Failed its check: not ready, not kept by the ready-upload rule.
        "b3": {"p1": [upload("3", "b3", models.FAILED, 100, check("failed"))]},
        # Serving, and the one before it.
        "b2": {"p1": [upload("2", "b2", age=200, validation=check("passed"))]},
        "b1": {"p1": [upload("1", "b1", age=300, validation=check("passed")),
                      # Awaiting, but older than what serves: never used.
                      upload("0", "b1", age=400, validation=check("pending"))]},
    }
    assert CleanupWorker._recent_uploads(found, uploads) == {"p1": {"b4/4", "b2/2", "b1/1"}}
    # b2 is beyond the two newest builds (b4, b3) but still serves p1.
    assert CleanupWorker._serving_builds(found, uploads) == {"b2"}


# Which upload a launcher checks, and where ---------------------------------------------


def test_only_the_newest_upload_awaiting_a_check_newer_than_the_serving_one():
    serving = upload("2", age=100)
    assert next_to_check([serving, upload("1", age=200, validation=check("pending"))]) is None
    newest = upload("4", age=0, validation=check("pending"))
    older = upload("3", age=50, validation=check("checking"))
    assert next_to_check([serving, older, newest]) is newest
    assert next_to_check([serving, upload("5", state=models.FAILED,
                                          validation=check("failed"))]) is None
    assert next_to_check([newest]) is newest


def label(name: str, image: str | None) -> Any:
    return SimpleNamespace(name=name, diskimage=SimpleNamespace(name=image) if image else None)


def test_the_check_node_boots_as_the_configured_label_or_the_first_using_the_image():
    pools = {"a": SimpleNamespace(name="a", labels={"cloud": label("cloud", None),
                                                    "first": label("first", "img")}),
             "b": SimpleNamespace(name="b", labels={"wanted": label("wanted", "img"),
                                                    "other": label("other", "other")})}
    provider_config = SimpleNamespace(pools=pools)
    live = SimpleNamespace(launches_nodes=True)
    validation = SimpleNamespace(label=None)
    config = SimpleNamespace(providers={"p1": provider_config},
                             diskimages={"img": SimpleNamespace(validation=validation)})
    target = check_target(config, {"p1": live}, "img", "p1")
    assert (target.pool.name, target.label.name) == ("a", "first")
    validation.label = "wanted"
    target = check_target(config, {"p1": live}, "img", "p1")
    assert (target.pool.name, target.label.name) == ("b", "wanted")
    validation.label = "not-in-this-provider"
    assert check_target(config, {"p1": live}, "img", "p1").label.name == "first"
    # Not served here, or no label boots the image: another launcher's job.
    assert check_target(config, {}, "img", "p1") is None
    assert check_target(config, {"p1": live}, "unused", "p1") is None


# Listings ----------------------------------------------------------------------------


def raw(upload_id: str, d: dict[str, Any]) -> RawUpload:
    return RawUpload("img", "b1", "p1", upload_id, json.dumps(d).encode())


def test_image_list_adds_a_validation_column_only_when_uploads_carry_checks():
    image = RawImage("img")
    image.uploads = [raw("1", {"state": "ready", "state_time": NOW})]
    plain = status.image_list([image])
    assert plain.columns == status.IMAGE_COLUMNS and "validation" not in plain.rows[0]
    image.uploads += [
        raw("2", {"state": "ready", "state_time": NOW,
                  "validation": check("checking", launcher="l1", node="0000000042")}),
        raw("3", {"state": "failed", "state_time": NOW,
                  "validation": check("failed", reason="timed out after 600 s")}),
        raw("4", {"state": "ready", "state_time": NOW, "validation": check("passed")}),
    ]
    table = status.image_list([image])
    assert table.columns == status.IMAGE_COLUMNS + [status.VALIDATION_COLUMN]
    assert [r["validation"] for r in table.rows] == [
        None, "checking on l1 (node 0000000042)", "failed: timed out after 600 s", "passed"]
    text = status.render_text(table, now=NOW)
    assert "| Validation" in text.splitlines()[1]
    assert "failed: timed out after 600 s" in text


def test_status_page_shows_each_uploads_check():
    view = launcher()
    view.image_cache = Cache([
        upload("1", age=100, validation=check("passed")),
        upload("2", validation=check("checking", launcher="l2", node="0000000009")),
        upload("3", "b0", age=300),
    ])
    page = render_page(take_snapshot(view, now=NOW))
    rows = {row.split('data-upload-id="')[1].split('"')[0]: row
            for row in page.split("<tr")[1:] if 'class="upload"' in row}
    assert 'data-validation="checking"' in rows["2"]
    assert "checking on l2 (node 0000000009)" in rows["2"]
    assert 'data-validation="passed"' in rows["1"]
    assert 'data-validation=""' in rows["3"]
