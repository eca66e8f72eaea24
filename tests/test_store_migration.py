"""
Versioned CSV files: data directories written before the header existed
(format 1: tests/data/format1, the exact bytes the server wrote then) are
migrated on start and keep every account, room and event; a newer minor
version (an extra column) loads; a newer major version is refused.
"""

from __future__ import annotations

import os
import shutil

import pytest
from twisted.logger import globalLogPublisher

from chatd import persistence
from chatd.persistence import CsvStore, FormatError
from chatd.store import RoomRecord, UserRecord
from helpers import Client, counted_room_ids, data_rows, fired, make_factory, run_now

FORMAT1 = os.path.join(os.path.dirname(__file__), "data", "format1")
HEADERS = {
    "users.csv": b"#chatd-users,2.1,name,password_hash,created\n",
    "rooms.csv": b"#chatd-rooms,2.1,name,owner,created,id\n",
    "log.csv": b"#chatd-log,2.1,timestamp,event,user,room,detail\n",
}
#: The accounts of tests/data/format1 and their passwords (carol-x has two lines: a rehash).
PASSWORDS = {"alice": "alice-pw1", "Bob_2": "bob-pw-22", "carol-x": "carol-pw3"}


@pytest.fixture(autouse=True)
def _room_ids(monkeypatch):
    counted_room_ids(monkeypatch)


@pytest.fixture
def old_dir(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FORMAT1, data)
    return data


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def _texts(events):
    from twisted.logger import formatEvent
    return [formatEvent(event) for event in events]


def test_an_old_data_dir_is_migrated_and_everything_is_still_there(old_dir, logged):
    before = {name: (old_dir / name).read_bytes() for name in HEADERS}
    factory, clock = make_factory(str(old_dir))
    for name, header in HEADERS.items():  # the header, then the old bytes unchanged (rooms: with ids)
        expected = before[name] if name != "rooms.csv" else (
            b"lab,alice,2026-09-21T14:13:20Z,r1\nOld,alice,2026-09-21T14:13:20Z,r2\n")
        assert (old_dir / name).read_bytes() == header + expected
        assert oct(os.stat(old_dir / name).st_mode & 0o777) == "0o600"
    assert not [name for name in os.listdir(old_dir) if name.endswith(".new")]
    notes = [text for text in _texts(logged) if "data migrated at start-up" in text]
    assert notes == [
        "data migrated at start-up: users.csv: migrated from format 1 (no header) to 2.1: "
        "added the header row, kept 4 row(s) as they were",
        "data migrated at start-up: rooms.csv: migrated from format 1 (no header) to 2.1: "
        "added the header row, kept 2 row(s) as they were",
        "data migrated at start-up: rooms.csv: gave 2 room(s) an id (their history is kept by id)",
        "data migrated at start-up: log.csv: migrated from format 1 (no header) to 2.1: "
        "added the header row, kept 15 row(s) as they were",
    ]
    assert not [text for text in _texts(logged) if "repaired" in text]
    for name, password in PASSWORDS.items():
        assert f"Logged in as {name}." in Client(factory, clock).login(name.lower(), password)
    assert "Login failed" in Client(factory, clock).login("alice", "bob-pw-22")
    assert [(room.name, room.owner) for room in fired(factory.list_rooms())] == [
        ("public", ""), ("lab", "alice"), ("Old", "alice")]
    clock.advance(1)
    rows = data_rows(old_dir / "log.csv")
    assert rows[11][4] == "name=a%20%22quoted%22%2C%20name%26x%3D1.txt&size=5&reason=the%20file%2C%20is%20%22big%22"
    assert rows[14][4] == 'name=a,b&reason=quoted "by" a spreadsheet'
    # carol-x's last hash has other parameters than this server's: her login rehashed it.
    assert [row[1:3] for row in rows[15:]] == [["login", "alice"], ["login", "Bob_2"], ["rehash", "carol-x"],
                                               ["login", "carol-x"], ["login_failed", "alice"]]


def test_a_second_start_migrates_nothing(old_dir, logged):
    make_factory(str(old_dir))
    migrated = {name: (old_dir / name).read_bytes() for name in HEADERS}
    logged.clear()
    factory, clock = make_factory(str(old_dir))
    assert {name: (old_dir / name).read_bytes() for name in HEADERS} == migrated
    assert not [text for text in _texts(logged) if "migrated" in text]
    assert "Logged in as alice." in Client(factory, clock).login("alice", "alice-pw1")


@pytest.mark.parametrize("crash", ["before the rename", "after the rename"])
def test_a_crash_during_the_migration_leaves_files_the_server_starts_from(old_dir, monkeypatch, crash):
    """A kill during the migration: the old file (and a stray .new) or the new one; either starts."""
    real_replace = os.replace

    def crashing_replace(src, dst):
        if crash == "after the rename":
            real_replace(src, dst)
        raise SystemExit("killed")

    monkeypatch.setattr(persistence.os, "replace", crashing_replace)
    with pytest.raises(SystemExit):
        CsvStore(str(old_dir), run=run_now, clock=None, now=lambda: "").load_now()
    monkeypatch.setattr(persistence.os, "replace", real_replace)
    factory, clock = make_factory(str(old_dir))
    assert (old_dir / "users.csv").read_bytes().startswith(HEADERS["users.csv"])
    assert sorted(factory.accounts) == ["alice", "bob_2", "carol-x"]
    assert "Logged in as Bob_2." in Client(factory, clock).login("bob_2", "bob-pw-22")


def test_a_newer_minor_version_with_an_extra_column_loads(tmp_path):
    """Columns added by a later 2.x (read by name; extra cells ignored); deleting a room keeps them."""
    (tmp_path / "users.csv").write_bytes(
        b"#chatd-users,2.1,name,password_hash,created,email\n"
        b'ann,"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",2026-01-01T00:00:00Z,ann@example.org\n')
    (tmp_path / "rooms.csv").write_bytes(
        b"#chatd-rooms,2.2,name,owner,created,topic,id\n"
        b"lab,ann,2026-01-01T00:00:00Z,the lab,a1\n"
        b"gone,ann,2026-01-01T00:00:00Z,\"a, topic\",a2\n"
        b"old,ann,2026-01-01T00:00:00Z,,a3\n")
    store = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t")
    loaded = store.load_now()
    assert loaded.users["ann"] == UserRecord("ann", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                                             "2026-01-01T00:00:00Z")
    assert [(room.name, room.id) for room in loaded.rooms] == [("lab", "a1"), ("gone", "a2"), ("old", "a3")]
    assert loaded.migrations == [] and loaded.repairs == []
    store.delete_room("GONE")
    store.add_room(RoomRecord("new", "ann", "t", "a4"))  # its cells under the header's names
    assert (tmp_path / "rooms.csv").read_bytes() == (
        b"#chatd-rooms,2.2,name,owner,created,topic,id\n"
        b"lab,ann,2026-01-01T00:00:00Z,the lab,a1\n"
        b"old,ann,2026-01-01T00:00:00Z,,a3\n"
        b"new,ann,t,,a4\n")


def test_a_2_0_rooms_file_with_an_extra_column_gets_ids_after_it(tmp_path):
    """A 2.0 file (no id column) with a column this chatd does not know: the ids go in a new last column."""
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.0,name,owner,created,topic\n"
                                         b"lab,ann,t,the lab\nold,ann,t\n")
    loaded = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t").load_now()
    assert loaded.rooms == [RoomRecord("lab", "ann", "t", "r1"), RoomRecord("old", "ann", "t", "r2")]
    assert loaded.migrations == ["rooms.csv: migrated from format 2.0 to 2.1: added the id column; "
                                 "gave 2 room(s) an id (their history is kept by id)"]
    assert (tmp_path / "rooms.csv").read_bytes() == (b"#chatd-rooms,2.1,name,owner,created,topic,id\n"
                                                     b"lab,ann,t,the lab,r1\nold,ann,t,,r2\n")


def test_a_row_with_one_extra_cell_loads(tmp_path):
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.0,name,owner,created\nlab,ann,t,extra\nshort,ann\n")
    loaded = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t").load_now()
    assert loaded.rooms == [RoomRecord("lab", "ann", "t", "r1")]
    assert loaded.repairs == ["rooms.csv: skipped 1 malformed row(s) (line 3); moved to rooms.csv.rejected",
                              "rooms.csv: kept 1 room(s) whose owner has no account (line 2: lab); "
                              "whoever registers that name owns the room"]
    assert (tmp_path / "rooms.csv.rejected").read_bytes() == b"short,ann\n"


def test_columns_are_read_by_name(tmp_path):
    (tmp_path / "users.csv").write_bytes(b"#chatd-users,2.3,created,password_hash,name\nt,$argon2id$h,Ann\n")
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.3,id,owner,name,created\na1,ann,lab,t\n")
    store = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t")
    loaded = store.load_now()
    assert loaded.users["ann"] == UserRecord("Ann", "$argon2id$h", "t")
    assert loaded.rooms == [RoomRecord("lab", "ann", "t", "a1")]
    store.add_room(RoomRecord("new", "bob", "t2", "a2"))  # appended in the file's order
    assert data_rows(tmp_path / "rooms.csv") == [["a1", "ann", "lab", "t"], ["a2", "bob", "new", "t2"]]


@pytest.mark.parametrize("content, message", [
    (b"#chatd-users,3.0,name,password_hash,created\nann,h,t\n",
     "users.csv is format 3.0, newer than this chatd reads (2.x); run a newer chatd or restore a backup"),
    (b"#chatd-users,2.0,name,created\nann,t\n", "users.csv: its header lacks the column(s) password_hash"),
    (b"#chatd-rooms,2.1,name,owner,created,id\n", "users.csv: not a chatd users file (its header is "
                                                   "'#chatd-rooms,2.1,name,owner,created,id')"),
])
def test_a_file_this_version_cannot_read_is_refused_untouched(tmp_path, content, message):
    (tmp_path / "users.csv").write_bytes(content)
    with pytest.raises(FormatError) as error:
        CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t").load_now()
    assert str(error.value) == message
    assert (tmp_path / "users.csv").read_bytes() == content


def test_new_files_start_with_their_header(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    owner = Client(factory, clock)
    owner.output()
    owner.register("ann")
    owner.send("create lab")
    clock.advance(1)
    for name, header in HEADERS.items():
        assert (tmp_path / name).read_bytes().startswith(header)
    os.rename(tmp_path / "log.csv", tmp_path / "log.csv.1")  # rotated away while running
    owner.send("ping")
    factory.store.log_event("login", "ann")
    clock.advance(1)
    assert (tmp_path / "log.csv").read_bytes() == HEADERS["log.csv"] + b"2026-09-21T14:13:21Z,login,ann,,\n"
