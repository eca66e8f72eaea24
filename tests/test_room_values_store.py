"""
The CSV store's part of room authority (issue 14; chatd.persistence.CsvStore,
synchronously on a temp dir): room_values.csv (one write and one fsync per
call, durable with its log.csv row, compaction, damaged rows, formula-safe
cells, rooms and accounts deleted), owner transfer in rooms.csv, and
moderation events with their target and until in the history files (and
history files written before those columns). The behaviour both stores share
is in tests/test_store_contract.py.
"""

from __future__ import annotations

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import persistence
from chatd.core.events import EventKind, RoomEvent
from chatd.persistence import CsvStore
from chatd.store import PUBLIC_ROOM_ID, SERVER, HistoryBatch, HistoryTail, LogEvent, RoomRecord, RoomValue, StoreError
from chatd.store import UserRecord
from chatd.text import clean_text
from helpers import Held, data_rows, fired, run_now

HEADER = b"#chatd-room-values,2.1,room,kind,key,value\n"
BAN = "until=1790003600&by=ann&reason=spam"
#: 2026-11-29 12:00:00 UTC.
T0 = 1_795_953_600.0


def _store(path, **options) -> CsvStore:
    return CsvStore(str(path), run=run_now, clock=None, now=lambda: "2026-11-29T12:00:00Z", **options)


@pytest.fixture
def store(tmp_path):
    """A loaded store with the account ann, her rooms lab (id lab1) and den (id den2)."""
    s = _store(tmp_path)
    s.load_now()
    fired(s.add_user(UserRecord("ann", "h", "t")))
    fired(s.add_room(RoomRecord("lab", "ann", "t1", "lab1")))
    fired(s.add_room(RoomRecord("den", "ann", "t2", "den2")))
    return s


def _path(tmp_path, name: str) -> str:
    return str(tmp_path / name)


def _opened_as(fd: int) -> str:
    return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))


def _watch(monkeypatch) -> list[tuple[str, str]]:
    """Record each write and fsync of the store as (``write`` or ``fsync``, the file's name), in order."""
    calls: list[tuple[str, str]] = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(persistence.os, "write", lambda fd, data: calls.append(("write", _opened_as(fd)))
                        or real_write(fd, data))
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: calls.append(("fsync", _opened_as(fd))) or real_fsync(fd))
    return calls


# -- room_values.csv: writing ---------------------------------------------------------------------------------

def test_a_call_is_one_write_and_one_fsync_then_its_event_row_durable(store, tmp_path, monkeypatch):
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "Welcome")], LogEvent("topic", "ann", "lab")))  # files
    fired(store.log_event("join", "bob", "lab"))  # queued before: written with the change's row
    calls = _watch(monkeypatch)
    fired(store.set_room_values([RoomValue("lab1", "op", "bob", "1"), RoomValue("lab1", "ban", "eve", BAN),
                                 RoomValue("den2", "mute", "carol", BAN), RoomValue(SERVER, "ban", "::1", BAN)],
                                LogEvent("ban", "ann", "lab", {"target": "eve", "reason": "spam"})))
    assert calls == [("write", "room_values.csv"), ("fsync", "room_values.csv"), ("write", "log.csv"),
                     ("fsync", "log.csv")]
    assert (tmp_path / "room_values.csv").read_bytes() == HEADER + (
        b"lab1,topic,,Welcome\n"
        b"lab1,op,bob,1\n"
        b"lab1,ban,eve,until=1790003600&by=ann&reason=spam\n"
        b"den2,mute,carol,until=1790003600&by=ann&reason=spam\n"
        b",ban,::1,until=1790003600&by=ann&reason=spam\n")
    assert [row[1:] for row in data_rows(tmp_path / "log.csv")] == [
        ["topic", "ann", "lab", ""], ["join", "bob", "lab", ""], ["ban", "ann", "lab", "target=eve&reason=spam"]]
    assert oct(os.stat(tmp_path / "room_values.csv").st_mode & 0o777) == "0o600"


def test_a_failed_write_stores_no_value_and_no_event_row(store, tmp_path, monkeypatch):
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "Welcome")]))
    before = (tmp_path / "room_values.csv").read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        if _opened_as(fd) == "room_values.csv":
            real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(persistence.os, "write", half_then_full)
    with pytest.raises(StoreError, match="No space left on device"):
        fired(store.set_room_values([RoomValue("lab1", "op", "bob", "1"), RoomValue("lab1", "ban", "eve", BAN)],
                                    LogEvent("ban", "ann", "lab", {"target": "eve"})))
    assert (tmp_path / "room_values.csv").read_bytes() == before  # cut back: no torn row before the next one
    assert [row[1] for row in data_rows(tmp_path / "log.csv")] == []
    monkeypatch.undo()
    assert _store(tmp_path).load_now().room_values == {"lab1": {("topic", ""): "Welcome"}}


def test_values_of_a_room_deleted_meanwhile_are_dropped_but_the_event_is_written(store, tmp_path):
    fired(store.delete_room("lab"))
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "late"), RoomValue("den2", "topic", "", "den's")],
                                LogEvent("topic", "ann", "den")))
    assert data_rows(tmp_path / "room_values.csv") == [["den2", "topic", "", "den's"]]
    fired(store.set_room_values([RoomValue("lab1", "op", "bob", "1")], LogEvent("op", "ann", "lab")))
    assert data_rows(tmp_path / "room_values.csv") == [["den2", "topic", "", "den's"]]
    assert [row[1] for row in data_rows(tmp_path / "log.csv")] == ["topic", "op"]


def test_values_of_a_room_added_but_not_yet_written_are_kept(tmp_path):
    """add_room counts the room as stored at once, so a value given before it fires is not dropped."""
    held = Held()
    store = CsvStore(str(tmp_path), run=held, clock=None, now=lambda: "t")
    store.load()
    held.run_all()
    store.add_room(RoomRecord("lab", "ann", "t", "lab1"))
    store.set_room_values([RoomValue("lab1", "op", "bob", "1")])
    held.run_all()
    assert _store(tmp_path).load_now().room_values == {"lab1": {("op", "bob"): "1"}}


@pytest.mark.parametrize("value", [
    RoomValue("bad-id", "topic", "", "x"), RoomValue("x" * 33, "topic", "", "x"), RoomValue("lab1", "owner", "", "x"),
    RoomValue("lab1", "op", "two\nlines", "1"), RoomValue("lab1", "topic", "", "\x1b[31mred"),
    RoomValue("lab1", "topic", "", "cr\rlf"), RoomValue("lab1", "op", "k" * 257, "1"),
    RoomValue("lab1", "topic", "", "x" * 65537),
])
def test_what_cannot_be_stored_is_refused_before_anything_is_written(store, tmp_path, value):
    with pytest.raises(ValueError, match="cannot be stored"):
        store.set_room_values([RoomValue("lab1", "op", "bob", "1"), value], LogEvent("op", "ann", "lab"))
    assert data_rows(tmp_path / "room_values.csv") == [] and data_rows(tmp_path / "log.csv") == []


def test_the_longest_key_and_value_are_stored(store, tmp_path):
    fired(store.set_room_values([RoomValue("lab1", "op", "k" * 256, "1"), RoomValue("lab1", "topic", "", "x" * 65536)]))
    assert _store(tmp_path).load_now().room_values["lab1"] == {("op", "k" * 256): "1", ("topic", ""): "x" * 65536}


def test_keys_and_values_are_formula_safe_and_read_back(store, tmp_path):
    values = [RoomValue("lab1", "topic", "", "=HYPERLINK(\"http://x\")"), RoomValue("lab1", "op", "'quoted", "+1"),
              RoomValue("lab1", "invite", "-x", "@ann"), RoomValue("lab1", "setting", "a,b", '"q", r'),
              RoomValue("lab1", "ban", "caf\u00e9 \U0001f600", "\u05e9\u05dc\u05d5\u05dd")]
    fired(store.set_room_values(values))
    assert data_rows(tmp_path / "room_values.csv") == [
        ["lab1", "topic", "", "'=HYPERLINK(\"http://x\")"], ["lab1", "op", "''quoted", "'+1"],
        ["lab1", "invite", "'-x", "'@ann"], ["lab1", "setting", "a,b", '"q", r'],
        ["lab1", "ban", "caf\u00e9 \U0001f600", "\u05e9\u05dc\u05d5\u05dd"]]
    assert all(line.count(b"\n") == 1 for line in (tmp_path / "room_values.csv").open("rb"))
    assert _store(tmp_path).load_now().room_values == {"lab1": {(v.kind, v.key): v.value for v in values}}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40).map(clean_text), st.text(min_size=1, max_size=80).map(clean_text).filter(bool))
def test_any_clean_key_and_value_round_trip(tmp_path_factory, key, value):
    path = tmp_path_factory.mktemp("values")
    store = _store(path)
    store.load_now()
    fired(store.set_room_values([RoomValue(PUBLIC_ROOM_ID, "topic", key, value)]))
    assert _store(path).load_now().room_values == {PUBLIC_ROOM_ID: {("topic", key): value}}


# -- room_values.csv: loading ---------------------------------------------------------------------------------

def _values_file(tmp_path, rows: bytes, header: bytes = HEADER) -> None:
    (tmp_path / "room_values.csv").write_bytes(header + rows)


def _rooms_file(tmp_path) -> None:
    """The account ann and her rooms lab (id lab1) and den (id den2), as files."""
    (tmp_path / "users.csv").write_bytes(b"#chatd-users,2.1,name,password_hash,created\nann,h,t\n")
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.1,name,owner,created,id\nlab,ann,t,lab1\nden,ann,t,den2\n")


def test_a_file_of_mostly_old_rows_is_compacted_at_load(tmp_path):
    _rooms_file(tmp_path)
    _values_file(tmp_path, b"".join(b"lab1,mute,bob,until=%d\n" % n for n in range(150))
                 + b"lab1,op,eve,1\nlab1,op,eve,\n,ban,::1,x\nden2,topic,,hi\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.room_values == {"lab1": {("mute", "bob"): "until=149"}, SERVER: {("ban", "::1"): "x"},
                                  "den2": {("topic", ""): "hi"}}
    assert loaded.repairs == []
    assert (tmp_path / "room_values.csv").read_bytes() == HEADER + (
        b"lab1,mute,bob,until=149\n,ban,::1,x\nden2,topic,,hi\n")
    assert _store(tmp_path).load_now().room_values == loaded.room_values


def test_a_few_old_rows_are_not_worth_a_rewrite(tmp_path):
    _rooms_file(tmp_path)
    _values_file(tmp_path, b"".join(b"lab1,mute,bob,until=%d\n" % n for n in range(50)))
    assert _store(tmp_path).load_now().room_values == {"lab1": {("mute", "bob"): "until=49"}}
    assert len(data_rows(tmp_path / "room_values.csv")) == 50


def test_rows_of_rooms_no_longer_stored_are_dropped_at_load_and_the_file_rewritten(tmp_path):
    """A crash between deleting a room and rewriting room_values.csv: the next start drops the rows, once."""
    _rooms_file(tmp_path)
    _values_file(tmp_path, b"gone1,topic,,old\nlab1,op,bob,1\ngone1,op,bob,1\ngone2,ban,eve,x\n,ban,::1,x\n"
                           b"public,topic,,hello\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.room_values == {"lab1": {("op", "bob"): "1"}, SERVER: {("ban", "::1"): "x"},
                                  PUBLIC_ROOM_ID: {("topic", ""): "hello"}}
    assert loaded.repairs == ["room_values.csv: dropped 3 row(s) of 2 room(s) no longer stored (deleted just before "
                              "chatd stopped): gone1, gone2"]
    assert data_rows(tmp_path / "room_values.csv") == [["lab1", "op", "bob", "1"], ["", "ban", "::1", "x"],
                                                       ["public", "topic", "", "hello"]]
    assert not os.path.exists(tmp_path / "room_values.csv.rejected")
    assert _store(tmp_path).load_now().repairs == []


def test_damaged_rows_are_skipped_reported_and_moved_out(tmp_path):
    """A BOM, a torn last line, an unclosed quote that hides no later row, rows breaking the rules: each as in every file."""
    _rooms_file(tmp_path)
    (tmp_path / "room_values.csv").write_bytes(
        b"\xef\xbb\xbf" + HEADER
        + b"lab1,op,bob,1\n"                 # line 2
        + b'lab1,topic,,"unclosed\n'        # line 3: no whole row
        + b"lab1,op,eve,1\n"                 # line 4: not swallowed by line 3
        + b"bad-id,op,x,1\n"                 # line 5
        + b"lab1,owner,x,1\n"                # line 6
        + b"lab1,topic,,\x1b[31mred\n"       # line 7: an escape never reaches a terminal
        + b"lab1,op\n"                       # line 8: too few cells
        + b"den2,topic,,torn")               # a torn last line
    loaded = _store(tmp_path).load_now()
    assert loaded.room_values == {"lab1": {("op", "bob"): "1", ("op", "eve"): "1"}}
    assert sorted(loaded.repairs) == sorted([
        "room_values.csv: dropped a torn last line (16 bytes, kept in room_values.csv.torn)",
        "room_values.csv: read past a UTF-8 byte order mark at its start (dropped when chatd next rewrites the file)",
        "room_values.csv: skipped 2 malformed row(s) (lines 3, 8); moved to room_values.csv.rejected",
        "room_values.csv: skipped 1 row(s) with an invalid room id (line 5); moved to room_values.csv.rejected",
        "room_values.csv: skipped 1 row(s) of an unknown kind (line 6); moved to room_values.csv.rejected",
        "room_values.csv: skipped 1 row(s) whose key or value is not clean text (line 7); moved to "
        "room_values.csv.rejected",
    ])
    assert (tmp_path / "room_values.csv.rejected").read_bytes() == (
        b'lab1,topic,,"unclosed\nbad-id,op,x,1\nlab1,owner,x,1\nlab1,topic,,\x1b[31mred\nlab1,op\n')
    assert (tmp_path / "room_values.csv.torn").read_bytes() == b"den2,topic,,torn\n"
    assert (tmp_path / "room_values.csv").read_bytes() == HEADER + b"lab1,op,bob,1\nlab1,op,eve,1\n"
    again = _store(tmp_path)
    assert again.load_now().repairs == []
    fired(again.set_room_values([RoomValue("den2", "topic", "", "new")]))
    assert _store(tmp_path).load_now().room_values["den2"] == {("topic", ""): "new"}


def test_a_newer_minor_version_with_more_columns_reads_the_same(tmp_path):
    _rooms_file(tmp_path)
    header = b"#chatd-room-values,2.5,room,kind,key,value,since\n"
    _values_file(tmp_path, b"lab1,op,bob,1,2026-11-29\nlab1,op,eve,1,2026-11-30\n", header=header)
    store = _store(tmp_path)
    assert store.load_now().room_values == {"lab1": {("op", "bob"): "1", ("op", "eve"): "1"}}
    fired(store.delete_user("bob"))  # a rewrite keeps the header and the other columns
    assert (tmp_path / "room_values.csv").read_bytes() == header + b"lab1,op,eve,1,2026-11-30\n"
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "hi")]))  # an append has just its own columns
    assert _store(tmp_path).load_now().room_values == {"lab1": {("op", "eve"): "1", ("topic", ""): "hi"}}


# -- deleting rooms and accounts --------------------------------------------------------------------------------

def test_deleting_a_room_rewrites_room_values_without_its_rows_after_the_commit(store, tmp_path, monkeypatch):
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "x"), RoomValue("den2", "op", "bob", "1"),
                                 RoomValue(SERVER, "ban", "::1", BAN), RoomValue("lab1", "op", "bob", "1")]))
    renamed: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(persistence.os, "replace", lambda a, b: renamed.append(os.path.basename(b)) or
                        real_replace(a, b))
    fired(store.delete_room("LAB", LogEvent("room_delete", "ann", "lab")))
    assert renamed == ["rooms.csv", "room_values.csv"]  # the room's commit point first
    assert data_rows(tmp_path / "room_values.csv") == [["den2", "op", "bob", "1"], ["", "ban", "::1", BAN]]
    assert _store(tmp_path).load_now().repairs == []


def test_a_failed_rewrite_of_the_values_still_deletes_the_room_and_the_next_start_drops_them(store, tmp_path,
                                                                                               monkeypatch):
    fired(store.set_room_values([RoomValue("lab1", "topic", "", "x"), RoomValue("den2", "topic", "", "y")]))
    real_replace = persistence.replace_data

    def full(path, data):
        if path.endswith("room_values.csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(path, data)

    monkeypatch.setattr(persistence, "replace_data", full)
    assert fired(store.delete_room("lab")) is None
    monkeypatch.undo()
    loaded = _store(tmp_path).load_now()
    assert [room.name for room in loaded.rooms] == ["den"]
    assert loaded.room_values == {"den2": {("topic", ""): "y"}}
    assert loaded.repairs == ["room_values.csv: dropped 1 row(s) of 1 room(s) no longer stored (deleted just before "
                              "chatd stopped): lab1"]


def test_deleting_an_account_rewrites_its_values_before_users_csv(store, tmp_path, monkeypatch):
    """The account goes last: a crash half-way never leaves its op role or ban for whoever registers the name next."""
    fired(store.add_user(UserRecord("Bob", "h", "t")))
    fired(store.set_room_values([RoomValue("lab1", "op", "bob", "1"), RoomValue("den2", "ban", "bob", BAN),
                                 RoomValue("lab1", "op", "eve", "1"), RoomValue("lab1", "setting", "bob", "on")]))
    renamed: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(persistence.os, "replace", lambda a, b: renamed.append(os.path.basename(b)) or
                        real_replace(a, b))
    fired(store.delete_user("BOB", LogEvent("account_delete", "Bob")))
    assert renamed[-2:] == ["room_values.csv", "users.csv"]
    assert data_rows(tmp_path / "room_values.csv") == [["lab1", "op", "eve", "1"], ["lab1", "setting", "bob", "on"]]


def test_deleting_an_account_without_a_values_file_creates_none(store, tmp_path):
    fired(store.delete_user("ann"))
    assert not os.path.exists(tmp_path / "room_values.csv")


# -- owner transfer -------------------------------------------------------------------------------------------

def test_an_owner_transfer_rewrites_rooms_csv_atomically_keeping_the_other_cells(tmp_path, monkeypatch):
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.3,name,owner,created,id,colour\n"
                                         b"lab,ann,t1,lab1,blue\nden,ann,t2,den2\n")
    store = _store(tmp_path)
    store.load_now()
    fired(store.log_event("login", "ann"))
    fired(store.flush_events())  # log.csv exists
    fired(store.log_event("join", "bob", "lab"))
    calls = _watch(monkeypatch)
    fired(store.set_room_owner("LAB", "bob", LogEvent("owner", "ann", "lab", {"target": "bob"})))
    assert calls == [("write", "rooms.csv.new"), ("fsync", "rooms.csv.new"), ("fsync", tmp_path.name),
                     ("write", "log.csv"), ("fsync", "log.csv")]
    assert (tmp_path / "rooms.csv").read_bytes() == (b"#chatd-rooms,2.3,name,owner,created,id,colour\n"
                                                     b"lab,bob,t1,lab1,blue\nden,ann,t2,den2\n")
    assert [row[1:4] for row in data_rows(tmp_path / "log.csv")] == [
        ["login", "ann", ""], ["join", "bob", "lab"], ["owner", "ann", "lab"]]


def test_a_failed_owner_transfer_keeps_rooms_csv_and_writes_no_owner_row(store, tmp_path, monkeypatch):
    before = (tmp_path / "rooms.csv").read_bytes()
    monkeypatch.setattr(persistence.os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(StoreError, match="I/O error"):
        fired(store.set_room_owner("lab", "bob", LogEvent("owner", "ann", "lab")))
    assert (tmp_path / "rooms.csv").read_bytes() == before and not os.path.exists(tmp_path / "rooms.csv.new")
    assert "owner" not in [row[1] for row in data_rows(tmp_path / "log.csv")]


@pytest.mark.parametrize("owner", ["", "bad name", "=cmd", "x" * 25])
def test_an_owner_that_is_no_user_name_is_refused(store, owner):
    with pytest.raises(ValueError):
        store.set_room_owner("lab", owner)


# -- moderation events in the history files ------------------------------------------------------------------

HISTORY_HEADER = b"#chatd-history,2.2,id,time,kind,sender,text,lines,target,until\n"
HISTORY_HEADER_2_1 = b"#chatd-history,2.1,id,time,kind,sender,text,lines\n"


def _segment(tmp_path, room_id: str = "lab1", day: str = "2026-11-29"):
    return tmp_path / "history" / room_id / f"{day}.csv"


def test_moderation_rows_carry_target_and_until_other_rows_stay_six_cells(store, tmp_path):
    events = [RoomEvent("lab", 1, T0, "ann", EventKind.SAY, "hi"),
              RoomEvent("lab", 2, T0 + 1, "ann", EventKind.BAN, "spam, again", "=bob", T0 + 3600),
              RoomEvent("lab", 3, T0 + 2, "", EventKind.MUTE, "", "eve", T0 + 600.25),
              RoomEvent("lab", 4, T0 + 3, "ann", EventKind.KICK, "", "bob"),
              RoomEvent("lab", 5, T0 + 4, "ann", EventKind.TOPIC, "=sum")]
    fired(store.append_history([HistoryBatch("lab1", 0, events)]))
    assert _segment(tmp_path).read_bytes() == HISTORY_HEADER + (
        b"1,2026-11-29T12:00:00.000000Z,say,ann,hi,1\n"
        b'2,2026-11-29T12:00:01.000000Z,ban,ann,"spam, again",1,\'=bob,2026-11-29T13:00:00.000000Z\n'
        b"3,2026-11-29T12:00:02.000000Z,mute,,,1,eve,2026-11-29T12:10:00.250000Z\n"
        b"4,2026-11-29T12:00:03.000000Z,kick,ann,,1,bob,\n"
        b"5,2026-11-29T12:00:04.000000Z,topic,ann,'=sum,1\n")
    assert fired(store.read_history("lab1", "lab", 10)) == events
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(5, 1)}


def test_a_history_file_written_before_the_columns_reads_the_same_and_goes_on(store, tmp_path):
    """A 2.1 segment: its rows read with no target and until 0.0, its tail loads, appends keep its header."""
    path = _segment(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(HISTORY_HEADER_2_1 + b"1,2026-11-29T12:00:00.000000Z,join,ann,,0\n"
                                          b"2,2026-11-29T12:00:01.500000Z,say,ann,\"hi, all\",1\n")
    again = _store(tmp_path)
    assert again.load_now().history == {"lab1": HistoryTail(2, 1)}
    assert fired(again.read_history("lab1", "lab", 10)) == [
        RoomEvent("lab", 1, T0, "ann", EventKind.JOIN, "", "", 0.0),
        RoomEvent("lab", 2, T0 + 1.5, "ann", EventKind.SAY, "hi, all", "", 0.0)]
    ban = RoomEvent("lab", 3, T0 + 2, "ann", EventKind.BAN, "", "bob", T0 + 60)
    fired(again.append_history([HistoryBatch("lab1", 1, [ban, RoomEvent("lab", 4, T0 + 3, "ann", EventKind.SAY, "x")])]))
    assert path.read_bytes().startswith(HISTORY_HEADER_2_1)
    assert fired(again.read_history("lab1", "lab", 2)) == [ban, RoomEvent("lab", 4, T0 + 3, "ann", EventKind.SAY, "x")]
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(4, 2)}


def test_a_row_whose_until_is_no_time_is_skipped_and_a_target_is_cleaned_when_read(store, tmp_path):
    fired(store.append_history([HistoryBatch("lab1", 0, [RoomEvent("lab", 1, T0, "ann", EventKind.SAY, "hi")])]))
    path = _segment(tmp_path)
    path.write_bytes(path.read_bytes() + b"2,2026-11-29T12:00:01.000000Z,ban,ann,,1,bob,soon\n"
                                         b"3,2026-11-29T12:00:02.000000Z,unban,ann,,1,b\x1b[31mob,\n")
    assert [(event.id, event.target, event.until) for event in fired(store.read_history("lab1", "lab", 10))] == [
        (1, "", 0.0), (3, "bob", 0.0)]
