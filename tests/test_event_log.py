"""log.csv: five columns; the detail is key=value fields (form-urlencoded) with the client's address on every
row about a connection (docs/OPERATIONS.md, "The event log")."""

from __future__ import annotations

import csv
import hashlib
import os
import re

from twisted.internet.address import IPv4Address, IPv6Address

from chatd.persistence import decode_detail, encode_detail
from chatd.wire import safe_file_name
from daemon import Conn
from helpers import data_rows, Client, make_factory
from test_transfer import in_room, upload, world  # noqa: F401 (world is a fixture)

ALICE = IPv4Address("TCP", "203.0.113.7", 40001)
BOB = IPv6Address("TCP", "2001:db8::5", 40002)


def _rows(factory, clock, data_dir) -> list[list[str]]:
    clock.advance(1)
    rows = data_rows(os.path.join(data_dir, "log.csv"))
    assert all(len(row) == 5 for row in rows), rows
    return rows


def _events(rows, event: str) -> list[tuple[str, str, dict[str, str]]]:
    """(user, room, detail fields) of each ``event`` row."""
    return [(row[2], row[3], decode_detail(row[4])) for row in rows if row[1] == event]


def test_connection_events_record_the_client_address(tmp_path):
    """register, login, login_failed (known and unknown name), logout and disconnect carry address and port."""
    factory, clock = make_factory(str(tmp_path))
    alice = Client(factory, clock, peer=ALICE)
    alice.register("alice")
    alice.send("quit")
    bob = Client(factory, clock, peer=BOB)
    bob.login("alice", "wrong-password")
    clock.advance(5)
    bob.login("nobody", "whatever")
    clock.advance(5)
    bob.login("alice")
    bob.send("join public")
    bob.disconnect()
    rows = _rows(factory, clock, tmp_path)
    at_alice = {"address": "203.0.113.7", "port": "40001"}
    at_bob = {"address": "2001:db8::5", "port": "40002"}
    assert _events(rows, "register") == [("alice", "", at_alice)]
    assert _events(rows, "login") == [("alice", "", at_alice), ("alice", "", at_bob)]
    assert _events(rows, "logout") == [("alice", "", at_alice)]
    assert _events(rows, "login_failed") == [
        ("alice", "", {"reason": "wrong_password", **at_bob}),
        ("", "", {"reason": "unknown_name", **at_bob}),  # the name typed is not logged: it may be a password
    ]
    assert _events(rows, "disconnect") == [("alice", "public", at_bob)]
    assert [row for row in rows if row[1] == "login"][1][4] == "address=2001:db8::5&port=40002"  # readable as is


def test_file_rows_are_fields_that_survive_any_file_name(world):
    """The file event's fields decode to exactly what was sent, whatever the name holds; the cell never needs quoting."""
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    in_room(factory, clock, "bob")
    data = os.urandom(3000)
    name = '=cmd|\'x\' "a",b&c=d.txt'
    file_id = upload(ann, data, name=name)
    rows = _rows(factory, clock, tmp_path)
    ((user, room, fields),) = _events(rows, "file")
    assert (user, room) == ("ann", "public")
    assert fields == {"id": file_id, "name": safe_file_name(name), "size": "3000",
                      "sha256": hashlib.sha256(data).hexdigest()}
    assert fields["name"].startswith("=cmd") and "a,b&c=d" in fields["name"]
    raw = open(tmp_path / "log.csv", encoding="utf-8").read()
    detail = [line for line in raw.splitlines() if ",file," in line][0].split(",", 4)[4]
    assert detail.startswith("id=") and '"' not in detail and "," not in detail


def test_encode_detail_round_trip():
    fields = {"address": "::1", "port": "5", "reason": 'a "quoted",\r\n=SUM(1) & more'}
    text = encode_detail(fields)
    assert text.startswith("address=::1&port=5&reason=") and "\n" not in text and "," not in text
    assert decode_detail(text) == fields
    assert encode_detail({}) == "" and decode_detail("") == {}


def test_real_connection_logs_its_address_and_source_port(daemon):
    """Through the real daemon: the login row has 127.0.0.1 and the client's own source port."""
    conn = Conn(daemon.port)
    source_port = conn.sock.getsockname()[1]
    conn.register("carol")
    conn.close()
    path = os.path.join(daemon.data_dir, "log.csv")
    import time

    deadline = time.monotonic() + 10
    rows: list[list[str]] = []
    while time.monotonic() < deadline:
        rows = [row for row in data_rows(path) if row[1] == "login"] if os.path.exists(path) else []
        if rows:
            break
        time.sleep(0.05)
    assert [decode_detail(row[4]) for row in rows] == [{"address": "127.0.0.1", "port": str(source_port)}]


def _documented_events() -> dict[str, list[str]]:
    """docs/OPERATIONS.md's event table: event name -> its example row (as CSV cells)."""
    from daemon import ROOT

    text = open(os.path.join(ROOT, "docs", "OPERATIONS.md"), encoding="utf-8").read()
    section = text.split("## The event log (log.csv)", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3].startswith("`20"):
            example = next(csv.reader([cells[3].strip("`")]))
            for name in re.findall(r"`(\w+)`", cells[0]):
                documented[name] = example
    return documented


def test_every_event_is_documented_with_an_example_row():
    """Each event the server writes (log_event calls, and the session ends) has a row in the docs' table, and each
    example is five cells whose detail decodes."""
    from daemon import ROOT

    source = "".join(open(os.path.join(ROOT, "chatd", name), encoding="utf-8").read()
                     for name in os.listdir(os.path.join(ROOT, "chatd")) if name.endswith(".py"))
    written = set(re.findall(r"(?:log_event|event_row|LogEvent)\(\s*\"(\w+)\"", source)) | {"logout", "disconnect", "replaced"}
    documented = _documented_events()
    assert written <= set(documented), written - set(documented)
    for name, example in documented.items():
        assert len(example) == 5 and example[1] in documented, (name, example)
        assert encode_detail(decode_detail(example[4])) == example[4], example
