"""Status rows and tables: upstream's columns, values and text layout."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from prettytable import PrettyTable

from nodepool import status
from nodepool.zk.listing import RawBuild, RawImage, RawRecord, RawUpload
from nodepool.zk.models import Node, NodeRequest

RECORDS = Path(__file__).parent.parent / "fixtures" / "upstream_records"


def record(name: str) -> bytes:
    return (RECORDS / f"{name}.json").read_bytes()


def loaded(name: str) -> dict:
    return json.loads(record(name))


# --------------------------------------------------------------------------
# Values


@pytest.mark.parametrize("seconds, text", [
    (0, "00:00:00:00"),
    (59.9, "00:00:00:59"),
    (61, "00:00:01:01"),
    (3661, "00:01:01:01"),
    (90061, "01:01:01:01"),
    (150 * 86400, "150:00:00:00"),
    (-30, "00:00:00:00"),  # a clock ahead of ours
])
def test_age_is_days_hours_minutes_seconds(seconds, text):
    assert status.age(1000.0 - seconds, now=1000.0) == text


def test_text_layout_is_prettytable_for_ascii():
    rng = random.Random(4)
    for _ in range(50):
        ncols = rng.randint(1, 6)
        headers = [f"H{i}{'x' * rng.randint(0, 5)}" for i in range(ncols)]
        rows = [["".join(rng.choice(string.printable[:-5]) for _ in range(rng.randint(0, 12)))
                 for _ in range(ncols)] for _ in range(rng.randint(0, 6))]
        expected = PrettyTable(headers)
        expected.align = "l"
        for row in rows:
            expected.add_row(row)
        assert status.format_table(headers, rows) == expected.get_string()


def test_text_layout_falls_back_to_prettytable_for_wide_and_multiline_cells():
    headers = ["ID", "Comment"]
    rows = [["1", "日本語のコメント"], ["2", "two\nlines"]]
    expected = PrettyTable(headers)
    expected.align = "l"
    for row in rows:
        expected.add_row(row)
    assert status.format_table(headers, rows) == expected.get_string()


def test_empty_table_shows_headers_between_rules():
    text = status.render_text(status.Table(status.INFO_NODE_COLUMNS))
    assert text == ("+----+-----------+\n"
                    "| ID | Server ID |\n"
                    "+----+-----------+\n"
                    "+----+-----------+")


# --------------------------------------------------------------------------
# Nodes


def test_node_list_matches_upstream_text_for_a_held_node():
    data = record("node_held")
    now = loaded("node_held")["state_time"]
    table = status.node_list([RawRecord("0000000002", data, 0)], now=now)
    # Upstream 11.0.0's ``nodepool hold 0000000002`` output for this record.
    assert status.render_text(table, status.NODE_BASIC_FIELDS, now=now) == (
        "+------------+---------------+------------+----------------------------------+"
        "-------------+------+-------+-------------+----------+\n"
        "| ID         | Provider      | Label      | Server ID                        |"
        " Public IPv4 | IPv6 | State | Age         | Locked   |\n"
        "+------------+---------------+------------+----------------------------------+"
        "-------------+------+-------+-------------+----------+\n"
        "| 0000000002 | fake-provider | fake-label | d87cb1e82e72463998aebbd5186a5651 |"
        " fake        |      | hold  | 00:00:00:00 | unlocked |\n"
        "+------------+---------------+------------+----------------------------------+"
        "-------------+------+-------+-------------+----------+")


def test_node_row_json_keys_and_values_are_upstreams():
    d = loaded("node_in_use")
    row = status.node_row(RawRecord("0000000001", record("node_in_use"), 1),
                          now=d["state_time"] + 61)
    assert list(row) == [key for key, _ in status.NODE_COLUMNS]
    assert row == {
        "id": "0000000001", "provider": "fake-provider", "label": ["fake-label"],
        "server_id": "de8590c21a1f461fa8f9edfb1dbee237", "public_ipv4": "fake",
        "ipv6": "", "state": "in-use", "age": "00:00:01:01", "locked": "locked",
        "pool": "main", "hostname": None, "private_ipv4": "fake", "AZ": "az1",
        "username": "zuul", "connection_port": 22,
        "launcher": "localhost-PoolWorker.fake-provider-main-6ac8e1bbd650448bb9860941182c619a",
        "allocated_to": "200-0000000002", "hold_job": None, "comment": None,
        "user_data": {"zuul_system": "4742d7d899164c2781dba2e73793d0c8",
                      "project_name": "example-project"},
        "driver_data": None,
    }


def test_detail_text_joins_lists_and_prints_dicts_as_upstream():
    d = loaded("node_in_use")
    d["type"] = ["label-a", "label-b"]
    table = status.node_list([RawRecord("0000000001", json.dumps(d).encode(), 0)],
                             now=d["state_time"])
    lines = status.render_text(table, now=d["state_time"]).splitlines()
    assert "| label-a,label-b |" in lines[3]
    assert ("{'zuul_system': '4742d7d899164c2781dba2e73793d0c8', "
            "'project_name': 'example-project'}") in lines[3]


@pytest.mark.parametrize("changes, port", [
    ({"connection_port": {"token": "secret"}}, "redacted"),
    ({"connection_port": "not-a-port"}, "redacted"),
    ({"connection_port": None, "ssh_port": 2222}, 2222),
    ({"connection_port": None, "ssh_port": None}, 22),
])
def test_port_column(changes, port):
    d = loaded("node_ready_min_ready")
    d.update(changes)
    row = status.node_row(RawRecord("1", json.dumps(d).encode()))
    assert row["connection_port"] == port


def test_missing_username_shows_blank_like_upstream():
    row = status.node_row(RawRecord("0000000005", record("node_building")))
    assert row["username"] is None
    d = loaded("node_building")
    del d["username"]
    assert status.node_row(RawRecord("5", json.dumps(d).encode()))["username"] == "zuul"


@pytest.mark.parametrize("data", [b"", b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_unparsable_node_gets_a_row_not_an_error(data):
    table = status.node_list([RawRecord("0000000009", data, 1),
                              RawRecord("0000000001", record("node_held"), 0)])
    assert [r["id"] for r in table.rows] == ["0000000001", "0000000009"]
    bad = table.rows[1]
    assert bad["state"] == status.UNPARSABLE
    assert bad["locked"] == "locked"
    assert bad["comment"].startswith("unparsable record")
    text = status.render_text(table)
    assert "| unparsable |" in text
    json.loads(status.render_json(table))


def test_unexpected_field_types_do_not_break_rows():
    d = loaded("node_held")
    d.update(state_time="yesterday", type="single-label", user_data=[1, {"a": 2}])
    table = status.node_list([RawRecord("1", json.dumps(d).encode())])
    assert table.rows[0]["age"] is None
    assert table.rows[0]["label"] == ["single-label"]
    status.render_text(table)


@pytest.mark.parametrize("state_time", ["NaN", "Infinity", "-Infinity", '"nan"', '"inf"',
                                        '"1' + '0' * 400 + '"'])
def test_time_that_is_not_a_finite_number_has_no_age(state_time):
    data = record("node_held").replace(b'"state_time": ', f'"state_time": {state_time}, '
                                       '"ignored": '.encode())
    assert json.loads(data)["state_time"] is not None
    for detail in (False, True):
        table = status.node_list([RawRecord("1", data)], detail=detail)
        assert table.rows[0]["state"] == "hold"
        assert table.rows[0]["age"] is None
        assert "| hold  |     |" in status.render_text(table)
    upload = RawUpload("img", "b1", "p1", "0000000001",
                       json.dumps({"state": "ready", "state_time": "nan"}).encode())
    assert status.image_list([RawImage("img", uploads=[upload])]).rows[0]["age"] is None


# Records the fast decoder refuses or cannot vouch for: json decides, and the
# plain and the detailed listing agree on each.
ODD_RECORDS = [
    b'{"state": "ready", "state_time": 5, "x": NaN}',
    b'{"state": "ready", "state_time": 5, "x": "\\ud800"}',
    b'\xef\xbb\xbf{"state": "ready", "state_time": 5}',
    '{"state": "ready", "state_time": 5}'.encode("utf-16"),
    b'{"state": "ready", "state_time": 5, "user_data": {"note": "\xff"}}',
    b'{"state": "ready", "state_time": 5, "state": "hold"}',
    b'{"state": "ready", "state_time": 5} trailing',
    b'{"state": "ready", "type": "one-label", "state_time": 5, "x": 1e400}',
]


@pytest.mark.parametrize("data", ODD_RECORDS)
def test_plain_and_detailed_listing_read_a_record_alike(data):
    try:
        expected = json.loads(data)
    except ValueError:
        expected = None
    plain = status.node_list([RawRecord("1", data)], now=10.0, detail=False).rows[0]
    detailed = status.node_list([RawRecord("1", data)], now=10.0).rows[0]
    assert plain == {k: detailed[k] for k in status.NODE_BASIC_FIELDS}
    if expected is None:
        assert plain["state"] == status.UNPARSABLE
    else:
        assert plain["state"] == expected["state"]
        assert plain["age"] == "00:00:00:05"
        assert plain["label"] == status.as_list(expected.get("type"))


def test_cached_node_objects_give_the_same_row_as_raw_records():
    data = record("node_in_use")
    node = Node.deserialize(data, "0000000001")
    node.lock_contenders = 1
    now = node.state_time + 10
    assert status.node_row(node, now) == status.node_row(
        RawRecord("0000000001", data, 1), now)


def test_plain_list_rows_hold_only_plain_columns():
    table = status.node_list([RawRecord("1", record("node_held"))], detail=False)
    assert list(table.rows[0]) == status.NODE_BASIC_FIELDS
    assert [k for k, _ in table.columns] == status.NODE_BASIC_FIELDS


# --------------------------------------------------------------------------
# Requests


def _request(name: str, **changes) -> bytes:
    d = loaded(name)
    d.update(changes)
    return json.dumps(d).encode()


def test_request_list_matches_upstream_text():
    records = [
        RawRecord("300-0000000005", _request(
            "request_zuul_created_static", relative_priority=5,
            event_id="5da06f00189c47ea8211ed14ab3dcece")),
        RawRecord("199-0000000006", record("request_failed")),
    ]
    text = status.render_text(status.request_list(records))
    # Upstream 11.0.0's ``nodepool request-list`` for these two requests.
    declined = ("localhost-PoolWorker.static-provider-main-a598f1d58f6746248fe43ea6d04bf195,"
                "localhost-PoolWorker.fake-provider-main-6ac8e1bbd650448bb9860941182c619a")
    rule = ("+----------------+----------+-----------+----------------------------------+"
            "---------------+-------+" + "-" * (len(declined) + 2) + "+"
            "----------------------------------+")
    assert text.splitlines() == [
        rule,
        "| Request ID     | Priority | State     | Requestor                        |"
        " Node Types    | Nodes | Declined By" + " " * (len(declined) - 10) + "|"
        " Event ID                         |",
        rule,
        "| 199-0000000006 | 0        | failed    | 4742d7d899164c2781dba2e73793d0c8 |"
        f" no-such-label |       | {declined} | 9ff58fa848a4404b9151ed11f1fbb851 |",
        "| 300-0000000005 | 5        | requested | 4742d7d899164c2781dba2e73793d0c8 |"
        " static-label  |       |" + " " * (len(declined) + 2) + "|"
        " 5da06f00189c47ea8211ed14ab3dcece |",
        rule,
    ]


def test_requests_are_listed_in_serving_order():
    def raw(request_id, rp):
        return RawRecord(request_id, _request("request_zuul_created_static",
                                              relative_priority=rp))
    records = [raw("200-0000000003", 0), raw("100-0000000009", 2),
               raw("200-0000000001", 5), raw("099-0000000010", 9),
               raw("100-0000000004", 2), RawRecord("200-0000000002", b"garbage")]
    ids = [r["id"] for r in status.request_list(records).rows]
    assert ids == ["099-0000000010", "100-0000000004", "100-0000000009",
                   "200-0000000002", "200-0000000003", "200-0000000001"]


def test_request_objects_and_raw_records_give_the_same_row():
    data = record("request_zuul_fulfilled")
    request = NodeRequest.deserialize(data, "200-0000000002")
    assert status.request_row(request) == status.request_row(
        RawRecord("200-0000000002", data))


# --------------------------------------------------------------------------
# Images


def _images(paused: bool = False) -> list[RawImage]:
    b1, b2 = "26486869544a4955967308ef4e996c0b", "6d1cc390d3cd49d2ab81abdc324e12fc"
    image = RawImage("fake-image", paused=paused)
    image.builds = [RawBuild("fake-image", b2, record("image_build_building"), 20.0),
                    RawBuild("fake-image", b1, record("image_build"), 10.0)]
    image.uploads = [
        RawUpload("fake-image", b1, "fake-provider", "0000000001", record("image_upload")),
        RawUpload("fake-image", b1, "other-provider", "0000000003", b"{broken"),
    ]
    image.build_providers = {b1: ["fake-provider", "other-provider"],
                             b2: ["fake-provider"]}
    return [image]


def test_image_list_matches_upstream_text():
    state_time = loaded("image_upload")["state_time"]
    table = status.image_list(_images(), provider="fake-provider")
    text = status.render_text(table, now=int(state_time) + 120.5)
    assert text.splitlines() == [
        "+----------------------------------+------------+---------------+------------+"
        "-----------------------+----------------------------------+-------+-------------+",
        "| Build ID                         | Upload ID  | Provider      | Image      |"
        " Provider Image Name   | Provider Image ID                | State | Age         |",
        "+----------------------------------+------------+---------------+------------+"
        "-----------------------+----------------------------------+-------+-------------+",
        "| 26486869544a4955967308ef4e996c0b | 0000000001 | fake-provider | fake-image |"
        " fake-image-1795611984 | ae19fa8caaf940b98b2fc6bf8f77277b | ready | 00:00:02:00 |",
        "+----------------------------------+------------+---------------+------------+"
        "-----------------------+----------------------------------+-------+-------------+",
    ]
    # JSON gives the epoch second, as upstream's web API does.
    assert table.rows[0]["age"] == int(state_time)


def test_image_list_shows_unparsable_uploads():
    rows = status.image_list(_images()).rows
    assert [r["state"] for r in rows] == ["ready", status.UNPARSABLE]


def test_dib_image_list_rows_and_pause():
    table = status.dib_image_list(_images())
    assert table.rows[0] == {
        "id": "fake-image-26486869544a4955967308ef4e996c0b", "image": "fake-image",
        "builder": "localhost", "formats": ["qcow2"], "state": "ready",
        "age": int(loaded("image_build")["state_time"])}
    assert [r["state"] for r in table.rows] == ["ready", "building"]
    paused = status.dib_image_list(_images(paused=True)).rows
    assert {r["state"] for r in paused} == {"paused"}
    paused = status.dib_image_list(_images(), config_paused=["fake-image"]).rows
    assert {r["state"] for r in paused} == {"paused"}


def test_image_status_build_request_pending_then_building():
    image = _images()[0]
    assert status.image_status([image]).rows == [
        {"image": "fake-image", "paused": False, "build_request": None,
         "build_request_age": None}]
    image.build_request_time = 15.5
    assert status.image_status([image]).rows[0]["build_request"] == "pending"
    # A builder took the lock after the newest build was made: still pending.
    image.build_lock_time = 30.0
    assert status.image_status([image]).rows[0]["build_request"] == "pending"
    # ...and it made a new build since: building.
    image.builds.append(RawBuild("fake-image", "c0ffee", record("image_build_building"), 31.0))
    row = status.image_status([image]).rows[0]
    assert row["build_request"] == "building"
    assert row["build_request_age"] == 15
    text = status.render_text(status.image_status([image]), now=75.0)
    assert "| fake-image | False  | building      | 00:00:01:00       |" in text


def test_label_list_is_the_sorted_union_of_pool_labels():
    pools = [RawRecord("vm0000000000", record("component_pool")),
             RawRecord("vm0000000001", record("component_pool_1")),
             RawRecord("vm0000000002", b"not json")]
    assert status.label_list(pools).rows == [
        {"label": "fake-label"}, {"label": "fake-label2"}, {"label": "static-label"}]


def test_info_tables():
    images = status.info_images(_images(), "other-provider")
    assert images.rows == [{"image": "fake-image",
                            "build_id": "26486869544a4955967308ef4e996c0b",
                            "upload_ids": ["0000000003"]}]
    fake = status.info_images(_images(), "fake-provider")
    assert [r["upload_ids"] for r in fake.rows] == [["0000000001"], []]
    nodes = status.info_nodes([RawRecord("0000000000", record("node_static_ready")),
                               RawRecord("0000000001", record("node_in_use")),
                               RawRecord("0000000002", b"{")], "static-provider")
    assert status.render_text(nodes) == (
        "+------------+-----------+\n"
        "| ID         | Server ID |\n"
        "+------------+-----------+\n"
        "| 0000000000 | 127.0.0.1 |\n"
        "+------------+-----------+")


def test_fields_keep_table_order_and_ignore_unknown_names():
    table = status.node_list([RawRecord("1", record("node_held"))])
    text = status.render_text(table, ["locked", "id", "nonsense"])
    assert text.splitlines()[1] == "| ID | Locked   |"
