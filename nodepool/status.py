"""Rows and tables for the status listings shared by the CLI and web API.

Each ``*_list`` function turns raw records (see :mod:`nodepool.zk.listing`)
or cached model objects into a :class:`Table`: column keys with their
headers, and one dict per row.  The keys, headers and values are those of
upstream Nodepool, so scripts reading either tool's output keep working:
JSON rows keep lists as lists and image ages as epoch seconds; the text
table joins lists with commas, shows ages as ``DD:HH:MM:SS`` and empty
values as blanks.

A record that cannot be parsed still gets a row, in state ``unparsable``,
so an operator can see it and remove it; nothing here raises on bad data.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from nodepool.zk.listing import RawImage, RawRecord
from nodepool.zk.models import (
    VALIDATION_CHECKING,
    VALIDATION_DONE,
    VALIDATION_FAILED,
    VALIDATION_PENDING,
    VALIDATION_SKIPPED,
    as_list,
)

UNPARSABLE = "unparsable"

NODE_COLUMNS = [
    ("id", "ID"),
    ("provider", "Provider"),
    ("label", "Label"),
    ("server_id", "Server ID"),
    ("public_ipv4", "Public IPv4"),
    ("ipv6", "IPv6"),
    ("state", "State"),
    ("age", "Age"),
    ("locked", "Locked"),
    ("pool", "Pool"),
    ("hostname", "Hostname"),
    ("private_ipv4", "Private IPv4"),
    ("AZ", "AZ"),
    ("username", "Username"),
    ("connection_port", "Port"),
    ("launcher", "Launcher"),
    ("allocated_to", "Allocated To"),
    ("hold_job", "Hold Job"),
    ("comment", "Comment"),
    ("user_data", "User Data"),
    ("driver_data", "Driver Data"),
]
# What ``nodepool list`` shows without ``--detail``.
NODE_BASIC_FIELDS = [key for key, _ in NODE_COLUMNS[:9]]

IMAGE_COLUMNS = [
    ("id", "Build ID"),
    ("upload_id", "Upload ID"),
    ("provider", "Provider"),
    ("image", "Image"),
    ("external_name", "Provider Image Name"),
    ("external_id", "Provider Image ID"),
    ("state", "State"),
    ("age", "Age"),
]

# Ours, added after upstream's columns only when some listed upload has a
# check before service (``validation``): upstream's configurations list
# exactly upstream's columns.
VALIDATION_COLUMN = ("validation", "Validation")

DIB_IMAGE_COLUMNS = [
    ("id", "ID"),
    ("image", "Image"),
    ("builder", "Builder"),
    ("formats", "Formats"),
    ("state", "State"),
    ("age", "Age"),
]

IMAGE_STATUS_COLUMNS = [
    ("image", "Image"),
    ("paused", "Paused"),
    ("build_request", "Build Request"),
    ("build_request_age", "Build Request Age"),
]

REQUEST_COLUMNS = [
    ("id", "Request ID"),
    ("relative_priority", "Priority"),
    ("state", "State"),
    ("requestor", "Requestor"),
    ("node_types", "Node Types"),
    ("nodes", "Nodes"),
    ("declined_by", "Declined By"),
    ("event_id", "Event ID"),
]

LABEL_COLUMNS = [("label", "Label")]

INFO_IMAGE_COLUMNS = [
    ("image", "Image Name"),
    ("build_id", "Build ID"),
    ("upload_ids", "Upload IDs"),
]

INFO_NODE_COLUMNS = [("id", "ID"), ("server_id", "Server ID")]

ALIEN_IMAGE_COLUMNS = [("provider", "Provider"), ("name", "Name"), ("id", "Image ID")]


@dataclass
class Table:
    """Column ``(key, header)`` pairs and one dict per row, keyed by the
    column keys (the JSON form of the listing)."""

    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------
# Values


def age(timestamp: float, now: float | None = None) -> str:
    """Time since ``timestamp`` as ``DD:HH:MM:SS`` (days may exceed 99).

    A timestamp in the future (clock skew between hosts) shows as zero.
    """
    seconds = int((time.time() if now is None else now) - timestamp)
    if seconds < 0:
        seconds = 0
    return "%02d:%02d:%02d:%02d" % (seconds // 86400, seconds // 3600 % 24,
                                    seconds // 60 % 60, seconds % 60)


_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_decode = msgspec.json.Decoder().decode


def _msgspec(decode: Any, data: Any) -> Any:
    """``data`` decoded by msgspec (several times faster than the json
    module), or None when the json module must have the last word: msgspec
    refuses a few things json accepts (NaN, lone surrogates, a byte order
    mark, UTF-16) and, in parts of a record it skips, does not check that
    strings are UTF-8.  Whatever msgspec does decode, json reads the same."""
    if data.__class__ is not bytes:
        return None
    try:
        value = decode(data)
    except msgspec.MsgspecError:
        return None
    if not data.isascii():
        try:
            data.decode("utf8")
        except UnicodeDecodeError:
            return None
    return value


def _load(data: bytes | str | None) -> tuple[dict[str, Any] | None, str | None]:
    """Decode a record; (dict, None) or (None, why it failed)."""
    value = _msgspec(_decode, data)
    if value.__class__ is dict:
        return value, None
    if data is None or data in (b"", ""):
        return None, "empty znode"
    # The C scanner straight on the text skips json.loads' per-call work
    # (encoding detection, whitespace handling).
    try:
        text = data.decode("utf8") if isinstance(data, bytes) else data
        value, end = _scan(text, 0)
        if end == len(text) and isinstance(value, dict):
            return value, None
    except (StopIteration, ValueError):
        pass
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        return None, f"not valid JSON: {e}"
    if not isinstance(value, dict):
        return None, f"not a JSON object but a {type(value).__name__}"
    return value, None


def _number(value: Any) -> float | None:
    """A finite number from a record's value; None for anything else (an
    infinite or NaN time has no age)."""
    if isinstance(value, bool):
        return None
    if value.__class__ is not int:
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
        if not math.isfinite(value):
            return None
    return value


def _int_seconds(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _port(value: Any) -> Any:
    """A node's connection port; anything but a number may carry
    credentials (some drivers put a dict of them there) and is hidden."""
    try:
        int(value)
    except (TypeError, ValueError):
        return "redacted"
    return value


# --------------------------------------------------------------------------
# Nodes


class _ListedNode(msgspec.Struct):
    """The keys of a node record that a plain ``nodepool list`` shows.
    Decoding into it skips the rest of the record (user data, host keys,
    resources...) without building it: a fraction of a full parse."""

    provider: Any = None
    type: Any = None
    external_id: Any = None
    public_ipv4: Any = None
    public_ipv6: Any = None
    state: Any = None
    state_time: Any = None


_decode_listed = msgspec.json.Decoder(_ListedNode).decode


def _basic_row(node_id: str, provider: Any, node_type: Any, external_id: Any,
               public_ipv4: Any, public_ipv6: Any, state: Any, state_time: Any,
               lock_contenders: int, now: float) -> dict[str, Any]:
    """The plain listing's columns of one node."""
    seconds = _number(state_time)
    return {
        "id": node_id,
        "provider": provider,
        "label": as_list(node_type),
        "server_id": external_id,
        "public_ipv4": public_ipv4,
        "ipv6": public_ipv6,
        "state": state,
        "age": age(seconds, now) if seconds is not None else None,
        "locked": "locked" if lock_contenders else "unlocked",
    }


def _node_row(node_id: str, d: dict[str, Any], lock_contenders: int,
              now: float, detail: bool = True) -> dict[str, Any]:
    get = d.get
    row = _basic_row(node_id, get("provider"), get("type"), get("external_id"),
                     get("public_ipv4"), get("public_ipv6"), get("state"),
                     get("state_time"), lock_contenders, now)
    if not detail:
        return row
    port = d.get("connection_port")
    if port is None:
        port = d.get("ssh_port")
    row.update({
        "pool": d.get("pool"),
        "hostname": d.get("hostname"),
        "private_ipv4": d.get("private_ipv4"),
        "AZ": d.get("az"),
        "username": d.get("username", "zuul"),
        "connection_port": _port(22 if port is None else port),
        "launcher": d.get("launcher"),
        "allocated_to": d.get("allocated_to"),
        "hold_job": d.get("hold_job"),
        "comment": d.get("comment"),
        "user_data": d.get("user_data"),
        "driver_data": d.get("driver_data"),
    })
    return row


def _unparsable_row(columns: list[tuple[str, str]], record_id: str,
                    why: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {key: None for key, _ in columns}
    row["id"] = record_id
    row["state"] = UNPARSABLE
    if "comment" in row:
        row["comment"] = why
    row.update(values)
    return row


def node_row(record: Any, now: float | None = None, detail: bool = True) -> dict[str, Any]:
    """One node's row, from a :class:`RawRecord` or a cached ``Node``;
    without ``detail`` only the columns of a plain ``nodepool list``."""
    now = time.time() if now is None else now
    if isinstance(record, RawRecord):
        if not detail:
            n = _msgspec(_decode_listed, record.data)
            if n is not None:
                return _basic_row(record.id, n.provider, n.type, n.external_id,
                                  n.public_ipv4, n.public_ipv6, n.state, n.state_time,
                                  record.lock_contenders, now)
        d, why = _load(record.data)
        if d is None:
            row = _unparsable_row(
                NODE_COLUMNS, record.id, f"unparsable record: {why}",
                locked="locked" if record.lock_contenders else "unlocked")
            return row if detail else {k: row[k] for k in NODE_BASIC_FIELDS}
        return _node_row(record.id, d, record.lock_contenders, now, detail)
    # A Node model object (the launcher's cache).
    return _node_row(record.id, record.toDict(), getattr(record, "lock_contenders", 0),
                     now, detail)


def node_list(records: Iterable[Any], now: float | None = None,
              node_id: str | None = None, detail: bool = True) -> Table:
    """Nodes sorted by id; only ``node_id`` when given.  Without
    ``detail`` the rows hold only the plain listing's columns."""
    now = time.time() if now is None else now
    rows = [node_row(r, now, detail) for r in records
            if node_id is None or r.id == node_id]
    rows.sort(key=lambda row: row["id"])
    return Table(NODE_COLUMNS if detail else NODE_COLUMNS[:len(NODE_BASIC_FIELDS)], rows)


# --------------------------------------------------------------------------
# Requests


def _sort_key(request_id: str, relative_priority: Any) -> tuple[str, int, str]:
    """Upstream's serving order: prefix, relative priority, sequence."""
    if len(request_id) > 3 and request_id[3] == "-":
        prefix, sequence = request_id[:3], request_id[4:]
    else:
        prefix, sequence = "100", request_id
    rp = _int_seconds(relative_priority)
    return prefix, rp if rp is not None else 0, sequence


def request_row(record: Any) -> dict[str, Any]:
    """One request's row, from a :class:`RawRecord` or a ``NodeRequest``."""
    if isinstance(record, RawRecord):
        d, why = _load(record.data)
        if d is None:
            return _unparsable_row(REQUEST_COLUMNS, record.id, str(why),
                                   node_types=[], nodes=[], declined_by=[],
                                   requestor=f"unparsable record: {why}")
    else:
        d = record.toDict()
    return {
        "id": record.id,
        "relative_priority": d.get("relative_priority", 0),
        "state": d.get("state"),
        "requestor": d.get("requestor"),
        "node_types": as_list(d.get("node_types")),
        "nodes": as_list(d.get("nodes")),
        "declined_by": as_list(d.get("declined_by")),
        "event_id": d.get("event_id"),
    }


def request_list(records: Iterable[Any]) -> Table:
    """Requests in the order launchers serve them."""
    rows = [request_row(r) for r in records]
    rows.sort(key=lambda row: _sort_key(row["id"], row["relative_priority"]))
    return Table(REQUEST_COLUMNS, rows)


# --------------------------------------------------------------------------
# Images


def _formats(value: Any) -> list[str]:
    if isinstance(value, str):
        return [f for f in value.split(",") if f]
    return [str(f) for f in as_list(value)]


def image_list(images: Sequence[RawImage], provider: str | None = None) -> Table:
    """Every upload (optionally of one provider), by image, build,
    provider and upload id.  ``age`` is the epoch second of the last
    state change, as upstream's JSON gives it.  When any upload carries a
    check before service, a ``validation`` column follows (see
    :func:`validation_text`)."""
    rows = []
    checked = False
    for image in images:
        for upload in image.uploads:
            if provider is not None and upload.provider != provider:
                continue
            d, why = _load(upload.data)
            row: dict[str, Any] = {
                "id": upload.build_id,
                "upload_id": upload.id,
                "provider": upload.provider,
                "image": upload.image,
                "external_name": None,
                "external_id": None,
                "state": UNPARSABLE,
                "age": None,
            }
            if d is not None:
                row.update(external_name=d.get("external_name"),
                           external_id=d.get("external_id"),
                           state=d.get("state"),
                           age=_int_seconds(d.get("state_time")))
                if d.get("validation") is not None:
                    checked = True
                    row["validation"] = validation_text(d.get("validation"))
            rows.append(row)
    rows.sort(key=lambda r: (r["image"], r["id"], r["provider"], r["upload_id"]))
    if not checked:
        return Table(IMAGE_COLUMNS, rows)
    for row in rows:
        row.setdefault("validation", None)
    return Table(IMAGE_COLUMNS + [VALIDATION_COLUMN], rows)


def validation_text(validation: Any) -> str:
    """An upload's check in a few words: ``pending``, ``checking on
    <launcher> (node <id>)``, ``passed``, ``skipped: <why>``, ``failed:
    <why>``."""
    if not isinstance(validation, dict):
        return VALIDATION_PENDING
    state = validation.get("state")
    if state == VALIDATION_CHECKING:
        where = f" on {validation['launcher']}" if validation.get("launcher") else ""
        node = f" (node {validation['node']})" if validation.get("node") else ""
        return f"{state}{where}{node}"
    if state in (VALIDATION_FAILED, VALIDATION_SKIPPED) and validation.get("reason"):
        return f"{state}: {validation['reason']}"
    if state in VALIDATION_DONE:
        return str(state)
    return VALIDATION_PENDING


def dib_image_list(images: Sequence[RawImage],
                   config_paused: Iterable[str] = ()) -> Table:
    """Every build; its state reads ``paused`` while its image is paused
    (in ZooKeeper or with ``pause: true`` in the configuration)."""
    paused_in_config = set(config_paused)
    rows = []
    for image in images:
        paused = image.paused or image.name in paused_in_config
        for build in image.builds:
            d, why = _load(build.data)
            row: dict[str, Any] = {
                "id": f"{image.name}-{build.id}",
                "image": image.name,
                "builder": None,
                "formats": [],
                "state": UNPARSABLE,
                "age": None,
            }
            if d is not None:
                row.update(builder=d.get("builder"), formats=_formats(d.get("formats")),
                           state="paused" if paused else d.get("state"),
                           age=_int_seconds(d.get("state_time")))
            rows.append(row)
    rows.sort(key=lambda r: (r["image"], r["id"]))
    return Table(DIB_IMAGE_COLUMNS, rows)


def build_request_state(image: RawImage) -> str | None:
    """``pending`` until a builder has taken the image's build lock and
    created a build record since; ``building`` after; None if no manual
    build was requested."""
    if image.build_request_time is None:
        return None
    if image.build_lock_time is None:
        return "pending"
    for build in image.builds:
        if build.ctime >= image.build_lock_time:
            return "building"
    return "pending"


def image_status(images: Sequence[RawImage], config_paused: Iterable[str] = ()) -> Table:
    """Each image's pause flag and manual build request."""
    paused_in_config = set(config_paused)
    rows = []
    for image in sorted(images, key=lambda i: i.name):
        request = build_request_state(image)
        rows.append({
            "image": image.name,
            "paused": bool(image.paused or image.name in paused_in_config),
            "build_request": request,
            "build_request_age": (int(image.build_request_time)
                                  if request and image.build_request_time else None),
        })
    return Table(IMAGE_STATUS_COLUMNS, rows)


# --------------------------------------------------------------------------
# Labels, provider info, alien images


def label_list(pools: Iterable[Any]) -> Table:
    """The union of the labels registered pools support, sorted.  Takes
    raw pool component records or objects with ``supported_labels``."""
    labels: set[str] = set()
    for pool in pools:
        if isinstance(pool, RawRecord):
            d, _ = _load(pool.data)
            supported = as_list((d or {}).get("supported_labels"))
        else:
            supported = as_list(getattr(pool, "supported_labels", None))
        labels.update(str(label) for label in supported)
    return Table(LABEL_COLUMNS, [{"label": label} for label in sorted(labels)])


def info_images(images: Sequence[RawImage], provider: str) -> Table:
    """The builds of every image that have upload records for
    ``provider`` (an empty provider directory counts), with upload ids."""
    rows = []
    for image in sorted(images, key=lambda i: i.name):
        for build_id in sorted(image.build_providers):
            if provider not in image.build_providers[build_id]:
                continue
            upload_ids = sorted(u.id for u in image.uploads
                                if u.build_id == build_id and u.provider == provider)
            rows.append({"image": image.name, "build_id": build_id,
                         "upload_ids": upload_ids})
    return Table(INFO_IMAGE_COLUMNS, rows)


def info_nodes(records: Iterable[RawRecord], provider: str) -> Table:
    """Ids and server ids of the nodes of ``provider``."""
    rows: list[dict[str, Any]] = []
    for record in records:
        d, _ = _load(record.data)
        if d is not None and d.get("provider") == provider:
            rows.append({"id": record.id, "server_id": d.get("external_id")})
    rows.sort(key=lambda r: r["id"])
    return Table(INFO_NODE_COLUMNS, rows)


# --------------------------------------------------------------------------
# Rendering


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _age_cell(value: Any, now: float) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return age(value, now)
    return str(value)


def render_text(table: Table, fields: Sequence[str] | None = None,
                now: float | None = None) -> str:
    """The table as upstream prints it (prettytable, left aligned), with no
    trailing newline.  ``fields`` keeps only those columns, in table order.
    """
    now = time.time() if now is None else now
    columns = [c for c in table.columns if not fields or c[0] in fields]
    if not columns:
        return ""
    rows = table.rows
    cells = []
    for key, _ in columns:
        if key == "age" or key.endswith("_age"):
            cells.append([_age_cell(row.get(key), now) for row in rows])
        else:
            cells.append([v if (v := row.get(key)).__class__ is str else _plain(v)
                          for row in rows])
    return format_columns([header for _, header in columns], cells)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """:func:`format_columns` for row-major cells."""
    columns = [list(col) for col in zip(*rows, strict=True)] if rows else [
        [] for _ in headers]
    return format_columns(headers, columns)


def format_columns(headers: Sequence[str], columns: Sequence[Sequence[str]]) -> str:
    """A bordered, left-aligned text table identical to prettytable's
    default style, from column-major cells.

    Plain printable ASCII (the usual case) is laid out here, fast enough
    for 10,000 rows; anything else (wide characters, newlines inside a
    cell, escape sequences) goes through prettytable itself, which knows
    display widths.
    """
    sample = "".join(headers) + "".join("".join(col) for col in columns)
    if not (sample.isascii() and sample.isprintable()):
        return _prettytable(headers, columns)
    widths = [max(len(h), max(map(len, col), default=0))
              for h, col in zip(headers, columns, strict=True)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    # Printable ASCII only: padding by %-Ns is what prettytable does.
    template = "| " + " | ".join(f"%-{w}s" for w in widths) + " |"
    out = [rule, template % tuple(headers), rule]
    out.extend(template % row for row in zip(*columns, strict=True))
    out.append(rule)
    return "\n".join(out)


def _prettytable(headers: Sequence[str], columns: Sequence[Sequence[str]]) -> str:
    from prettytable import PrettyTable

    table = PrettyTable(list(headers))
    table.align = "l"
    for row in zip(*columns, strict=True):
        table.add_row(list(row))
    return table.get_string()


def render_json(table: Table) -> str:
    """The rows as a JSON list (upstream's web API format)."""
    return json.dumps(table.rows, default=str)
