"""
The CSV store's room history (chatd/stores/csv_history.py through
chatd.persistence.CsvStore), room ids in rooms.csv and per-account marks
(marks.csv): synchronously on a temp dir, files checked byte for byte where
the format is the point.
"""

from __future__ import annotations

import errno
import os
import threading
from datetime import datetime, timezone

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import persistence
from chatd.core.events import EventKind, RoomEvent
from chatd.persistence import CsvStore, FormatError
from chatd.store import LINE_KINDS, PUBLIC_ROOM_ID, HistoryBatch, HistoryTail, RoomRecord, StoreError, UserRecord
from chatd.stores import csv_history
from chatd.text import clean_text
from helpers import Held, counted_room_ids, data_rows, fired, run_now

SAY, ME, JOIN, LEAVE = EventKind.SAY, EventKind.ME, EventKind.JOIN, EventKind.LEAVE
#: 2026-11-29 23:59:58 UTC: two seconds before a day boundary.
T0 = datetime(2026, 11, 29, 23, 59, 58, tzinfo=timezone.utc).timestamp()
HEADER = b"#chatd-history,2.2,id,time,kind,sender,text,lines,target,until\n"


def _store(path, **options) -> CsvStore:
    return CsvStore(str(path), run=run_now, clock=None, now=lambda: "2026-11-29T00:00:00Z", **options)


def _batch(room_id: str, first: int, kinds, at: float = T0, lines_before: int | None = None, step: float = 0.25,
           sender: str = "ann", text: str = "hi"):
    """A HistoryBatch of events ``first``, ``first + 1``, ... of the given kinds, ``step`` seconds apart."""
    events = [RoomEvent("lab", first + n, at + n * step, sender, kind, text if kind in LINE_KINDS else "")
              for n, kind in enumerate(kinds)]
    return HistoryBatch(room_id, first - 1 if lines_before is None else lines_before, events)


@pytest.fixture
def store(tmp_path):
    s = _store(tmp_path)
    s.load_now()
    fired(s.add_user(UserRecord("ann", "h", "t")))
    fired(s.add_room(RoomRecord("lab", "ann", "t", "lab1")))
    fired(s.add_room(RoomRecord("den", "ann", "t", "den2")))
    return s


def _segment(tmp_path, room_id: str, day: str) -> bytes:
    return (tmp_path / "history" / room_id / f"{day}.csv").read_bytes()


# -- room ids ------------------------------------------------------------------

def test_a_2_0_rooms_file_gets_ids_once_and_keeps_them(tmp_path, monkeypatch):
    counted_room_ids(monkeypatch)
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.0,name,owner,created\nlab,ann,t\nden,ann,t\n")
    loaded = _store(tmp_path).load_now()
    assert [(room.name, room.id) for room in loaded.rooms] == [("lab", "r1"), ("den", "r2")]
    assert loaded.migrations == ["rooms.csv: migrated from format 2.0 to 2.1: added the id column; "
                                 "gave 2 room(s) an id (their history is kept by id)"]
    assert (tmp_path / "rooms.csv").read_bytes() == b"#chatd-rooms,2.1,name,owner,created,id\nlab,ann,t,r1\nden,ann,t,r2\n"
    again = _store(tmp_path).load_now()
    assert [room.id for room in again.rooms] == ["r1", "r2"] and again.migrations == []


def test_an_empty_2_0_rooms_file_gets_the_id_column_before_any_room_is_appended(tmp_path):
    """Else a room appended with its id would load with a fresh one (its history lost)."""
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.0,name,owner,created\n")
    store = _store(tmp_path)
    store.load_now()
    fired(store.add_room(RoomRecord("lab", "ann", "t", "abc")))
    assert _store(tmp_path).load_now().rooms == [RoomRecord("lab", "ann", "t", "abc")]


def test_a_row_an_older_chatd_appended_without_an_id_gets_one(tmp_path, monkeypatch):
    counted_room_ids(monkeypatch)
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.1,name,owner,created,id\nlab,ann,t,a1\nold,ann,t\n")
    loaded = _store(tmp_path).load_now()
    assert [room.id for room in loaded.rooms] == ["a1", "r1"]
    assert loaded.migrations == ["rooms.csv: gave 1 room(s) an id (their history is kept by id)"]
    assert (tmp_path / "rooms.csv").read_bytes() == b"#chatd-rooms,2.1,name,owner,created,id\nlab,ann,t,a1\nold,ann,t,r1\n"


def test_fresh_ids_are_16_hex_digits_and_differ():
    ids = {persistence.new_room_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert persistence.new_room_id({"x"}) != "x"


def test_invalid_and_duplicate_ids_are_rejected_like_other_bad_rows(tmp_path):
    rows = (b"a,ann,t,ok1\n"
            b"b,ann,t,bad-id\n"
            b"c,ann,t," + b"x" * 33 + b"\n"
            b"d,ann,t,ok1\n"
            b"e,ann,t,public\n"
            b"f,ann,t,\xc3\xa9t\xc3\xa9\n")
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.1,name,owner,created,id\n" + rows)
    loaded = _store(tmp_path).load_now()
    assert [room.name for room in loaded.rooms] == ["a"]
    assert loaded.repairs == [
        "rooms.csv: skipped 3 row(s) with an invalid id (lines 3, 4, 7); moved to rooms.csv.rejected",
        "rooms.csv: skipped 2 row(s) with a duplicate id (lines 5, 6); moved to rooms.csv.rejected",
        "rooms.csv: kept 1 room(s) whose owner has no account (line 2: a); whoever registers that name owns the room",
    ]
    assert (tmp_path / "rooms.csv.rejected").read_bytes() == rows[len(b"a,ann,t,ok1\n"):]


@pytest.mark.parametrize("room_id", ["", "public", "has-dash", "x" * 33, "caf\u00e9", "../up"])
def test_add_room_refuses_what_is_no_room_id(tmp_path, room_id):
    store = _store(tmp_path)
    store.load_now()
    with pytest.raises(ValueError):
        store.add_room(RoomRecord("lab", "ann", "t", room_id))
    assert data_rows(tmp_path / "rooms.csv") == []


# -- append and the tail at start-up ------------------------------------------------

def test_batches_append_one_segment_per_utc_day_and_the_tail_loads(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [JOIN, SAY, ME])]))  # 23:59:58.00, .25, .50
    fired(store.append_history([_batch("lab1", 4, [SAY, LEAVE, SAY, SAY, FILE_OFFER := EventKind.FILE_OFFER],
                                       at=T0 + 1.5, lines_before=2, step=0.5)]))  # 23:59:59.5 .. 00:00:01.5
    assert _segment(tmp_path, "lab1", "2026-11-29") == HEADER + (
        b"1,2026-11-29T23:59:58.000000Z,join,ann,,0\n"
        b"2,2026-11-29T23:59:58.250000Z,say,ann,hi,1\n"
        b"3,2026-11-29T23:59:58.500000Z,me,ann,hi,2\n"
        b"4,2026-11-29T23:59:59.500000Z,say,ann,hi,3\n")
    assert _segment(tmp_path, "lab1", "2026-11-30") == HEADER + (
        b"5,2026-11-30T00:00:00.000000Z,leave,ann,,3\n"
        b"6,2026-11-30T00:00:00.500000Z,say,ann,hi,4\n"
        b"7,2026-11-30T00:00:01.000000Z,say,ann,hi,5\n"
        b"8,2026-11-30T00:00:01.500000Z,file_offer,ann,,5\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.history == {"lab1": HistoryTail(8, 5)}
    assert oct(os.stat(tmp_path / "history").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "history" / "lab1").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "history" / "lab1" / "2026-11-30.csv").st_mode & 0o777) == "0o600"


def test_the_public_room_has_a_history_without_a_row(tmp_path):
    store = _store(tmp_path)
    store.load_now()
    fired(store.append_history([_batch(PUBLIC_ROOM_ID, 1, [SAY])]))
    assert _store(tmp_path).load_now().history == {PUBLIC_ROOM_ID: HistoryTail(1, 1)}


def test_the_tail_comes_from_the_end_of_the_newest_segment_only(store, tmp_path, monkeypatch):
    """Start-up reads a small block from the end of each room's newest segment, never whole files."""
    fired(store.append_history([_batch("lab1", 1, [SAY] * 2000, step=0.0001)]))
    fired(store.append_history([_batch("lab1", 2001, [SAY] * 3, at=T0 + 10)]))  # the next day
    read: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(csv_history.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(2003, 2003)}
    assert sum(read) <= 256 + 1 + csv_history.TAIL_BLOCK  # the header, the last byte, one block


def _two_lines_and(store, tmp_path, damage: bytes):
    """lab1's history of two lines with ``damage`` after them, loaded again: (what loaded, the segment's path)."""
    fired(store.append_history([_batch("lab1", 1, [SAY, SAY])]))
    path = tmp_path / "history" / "lab1" / "2026-11-29.csv"
    path.write_bytes(path.read_bytes() + damage)
    loaded = _store(tmp_path).load_now()
    assert loaded.history == {"lab1": HistoryTail(2, 2)}
    return loaded, path


def test_a_torn_last_line_is_cut_and_kept_aside_and_appends_go_on(store, tmp_path):
    loaded, path = _two_lines_and(store, tmp_path, b"3,2026-11-29T23:59:58.5")
    assert loaded.repairs == ["history/lab1/2026-11-29.csv: dropped a torn last line (23 bytes, kept in "
                              "2026-11-29.csv.torn)"]
    assert (tmp_path / "history" / "lab1" / "2026-11-29.csv.torn").read_bytes() == b"3,2026-11-29T23:59:58.5\n"
    again = _store(tmp_path)
    again.load_now()
    fired(again.append_history([_batch("lab1", 3, [SAY])]))
    assert path.read_bytes().endswith(b"\n2,2026-11-29T23:59:58.250000Z,say,ann,hi,2\n"
                                      b"3,2026-11-29T23:59:58.000000Z,say,ann,hi,3\n")


def test_a_malformed_last_row_is_skipped_for_the_one_before(store, tmp_path):
    loaded, _ = _two_lines_and(store, tmp_path, b'"3,broken\n')
    assert loaded.repairs == ["history/lab1/2026-11-29.csv: skipped 1 malformed last row(s)"]


@pytest.mark.parametrize("row", [
    b"3" + b"9" * 29 + b",2026-11-29T23:59:58.500000Z,say,ann,hi,3\n",  # the attacker's 30-digit id
    b"9223372036854775808,2026-11-29T23:59:58.500000Z,say,ann,hi,3\n",  # 2**63
    b"0,2026-11-29T23:59:58.500000Z,say,ann,hi,3\n",
    b"9" * 5000 + b",2026-11-29T23:59:58.500000Z,say,ann,hi,3\n",  # past int()'s 4,300 digits: no traceback
    b"3,2026-11-29T23:59:58.500000Z,say,ann,hi,9223372036854775808\n",  # a line count of 2**63
    b"3,2026-11-29T23:59:58.500000Z,say,ann,hi,\xd9\xa3\n",  # a digit, but not ASCII
])
def test_an_id_or_line_count_out_of_range_is_a_malformed_row_at_load_and_on_read(store, tmp_path, row):
    """An id over 2**63-1 would make the room's ids go on past what /history before accepts."""
    loaded, _ = _two_lines_and(store, tmp_path, row)
    assert loaded.repairs == ["history/lab1/2026-11-29.csv: skipped 1 malformed last row(s)"]
    assert _ids(fired(store.read_history("lab1", "lab", 5))) == [1, 2]


def test_the_largest_id_and_line_count_are_kept(store, tmp_path):
    big = 2**63 - 1
    _, _ = _two_lines_and(store, tmp_path, b"")
    path = tmp_path / "history" / "lab1" / "2026-11-29.csv"
    path.write_bytes(path.read_bytes() + f"{big},2026-11-29T23:59:58.500000Z,say,ann,hi,{big}\n".encode())
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(big, big)}
    assert _ids(fired(store.read_history("lab1", "lab", 5))) == [1, 2, big]


def test_text_read_back_is_cleaned_of_escapes_nul_and_invalid_utf8(store, tmp_path):
    """A segment edited by hand: nothing read back can drive a terminal."""
    fired(store.append_history([_batch("lab1", 1, [SAY])]))
    path = tmp_path / "history" / "lab1" / "2026-11-29.csv"
    path.write_bytes(path.read_bytes() + b"2,2026-11-29T23:59:58.500000Z,say,\x1b]0;pwned\x07mal,"
                     b"a\x1b]0;pwned\x07b\x00c\xff\xfed\x1b[31mred,2\n")
    event = fired(store.read_history("lab1", "lab", 5))[-1]
    assert (event.sender, event.text) == (clean_text("\x1b]0;pwned\x07mal"), clean_text("a\x1b]0;pwned\x07b\x00c\ufffd\ufffdd\x1b[31mred"))
    for text in (event.sender, event.text):
        assert not any(ord(char) < 32 or 0x7f <= ord(char) < 0xa0 for char in text)
    assert "pwned" not in event.sender and "\x00" not in event.text


def test_tails_load_in_threads_and_notes_come_in_room_order(store, tmp_path, monkeypatch):
    """A cold start reads the rooms' tails concurrently (issue 13 attacker: 5.2 s for 10,000 rooms)."""
    fired(store.append_history([_batch("lab1", 1, [SAY, SAY]), _batch("den2", 1, [SAY])]))
    for room in ("lab1", "den2"):
        path = tmp_path / "history" / room / "2026-11-29.csv"
        path.write_bytes(path.read_bytes() + b'"9,broken\n')
    threads: list[str] = []
    real_tail = csv_history.HistoryFiles._tail
    monkeypatch.setattr(csv_history.HistoryFiles, "_tail",
                        lambda self, *args, **kw: threads.append(threading.current_thread().name) or real_tail(self, *args, **kw))
    loaded = _store(tmp_path).load_now()
    assert loaded.history == {"lab1": HistoryTail(2, 2), "den2": HistoryTail(1, 1)}
    assert loaded.repairs == ["history/den2/2026-11-29.csv: skipped 1 malformed last row(s)",
                              "history/lab1/2026-11-29.csv: skipped 1 malformed last row(s)"]
    assert len(threads) == 2 and all(name.startswith("chatd-history-load") for name in threads)


def test_an_empty_newest_segment_falls_back_to_the_one_before(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [SAY, JOIN])]))
    (tmp_path / "history" / "lab1" / "2026-12-01.csv").write_bytes(HEADER)
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(2, 1)}


def test_a_segment_of_a_newer_major_version_stops_the_start(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [SAY])]))
    (tmp_path / "history" / "lab1" / "2026-12-01.csv").write_bytes(b"#chatd-history,3.0,id,time\n1,x\n")
    with pytest.raises(FormatError, match=r"history/lab1/2026-12-01.csv is format 3.0"):
        _store(tmp_path).load_now()


def test_a_clock_set_back_writes_into_the_newest_segment(store, tmp_path):
    """Ids only grow along the segments: an event dated before the newest segment's day goes into it."""
    fired(store.append_history([_batch("lab1", 1, [SAY], at=T0 + 10)]))  # 2026-11-30
    fired(store.append_history([_batch("lab1", 2, [SAY], at=T0 - 86400)]))  # 2026-11-28
    assert sorted(os.listdir(tmp_path / "history" / "lab1")) == ["2026-11-30.csv"]
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(2, 2)}


def test_one_write_and_one_fsync_per_room_per_batch(store, tmp_path, monkeypatch):
    fired(store.append_history([_batch("lab1", 1, [SAY]), _batch("den2", 1, [SAY])]))  # files and dirs exist
    writes, syncs = [], []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(persistence.os, "write", lambda fd, data: writes.append(fd) or real_write(fd, data))
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: syncs.append(fd) or real_fsync(fd))
    fired(store.append_history([_batch("lab1", 2, [SAY, ME, JOIN] * 50, step=0.001),
                                _batch("den2", 2, [SAY] * 200, step=0.001)]))
    assert len(writes) == 2 and len(syncs) == 2
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(151, 101), "den2": HistoryTail(201, 201)}


def test_a_new_room_directory_and_file_are_fsynced_in_their_directories(store, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}"))
                        or real_fsync(fd))
    fired(store.append_history([_batch("lab1", 1, [SAY])]))
    history = str(tmp_path / "history")
    assert synced == [history, f"{history}/lab1/2026-11-29.csv", f"{history}/lab1"]


def test_a_failing_room_does_not_stop_the_others_and_is_cut_back(store, tmp_path, monkeypatch):
    fired(store.append_history([_batch("lab1", 1, [SAY]), _batch("den2", 1, [SAY])]))
    lab = tmp_path / "history" / "lab1" / "2026-11-29.csv"
    before = lab.read_bytes()
    real_write = os.write

    def full_for_lab(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}") == str(lab):
            real_write(fd, bytes(data[:5]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(persistence.os, "write", full_for_lab)
    failure = store.append_history([_batch("lab1", 2, [SAY]), _batch("den2", 2, [SAY])])
    with pytest.raises(StoreError, match=r"room lab1: No space left on device"):
        fired(failure)
    monkeypatch.setattr(persistence.os, "write", real_write)
    assert lab.read_bytes() == before  # cut back
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(1, 1), "den2": HistoryTail(2, 2)}
    fired(store.append_history([_batch("lab1", 2, [SAY]), _batch("den2", 3, [SAY])]))  # the disk recovered
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(2, 2), "den2": HistoryTail(3, 3)}


def test_a_batch_retried_after_a_failure_half_way_stores_no_event_twice(store, tmp_path, monkeypatch):
    """The first day's segment was written, the second's failed: the retry writes only what is missing."""
    real_write = os.write
    calls = []

    def second_fails(fd, data):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        return real_write(fd, data)

    monkeypatch.setattr(persistence.os, "write", second_fails)
    batch = _batch("lab1", 1, [SAY] * 4, step=1.0)  # 23:59:58, 59 | 00:00:00, 01
    with pytest.raises(StoreError):
        fired(store.append_history([batch]))
    monkeypatch.setattr(persistence.os, "write", real_write)
    fired(store.append_history([batch]))
    assert [row[0] for row in data_rows(tmp_path / "history" / "lab1" / "2026-11-29.csv")] == ["1", "2"]
    assert [row[0] for row in data_rows(tmp_path / "history" / "lab1" / "2026-11-30.csv")] == ["3", "4"]


def test_history_of_a_room_that_is_not_stored_is_dropped(store, tmp_path):
    fired(store.append_history([_batch("nosuch", 1, [SAY]), _batch("lab1", 1, [SAY])]))
    assert os.listdir(tmp_path / "history") == ["lab1"]


def test_appends_run_in_the_history_thread_in_order(tmp_path):
    writer, history = Held(), Held()
    store = CsvStore(str(tmp_path), run=writer, clock=None, now=lambda: "t", history_run=history)
    store.load_now()
    d = store.append_history([_batch(PUBLIC_ROOM_ID, 1, [SAY])])
    assert len(history.calls) == 1 and writer.calls == [] and not d.called
    history.run_all()
    assert fired(d) is None and _store(tmp_path).load_now().history == {PUBLIC_ROOM_ID: HistoryTail(1, 1)}


# -- reading back ---------------------------------------------------------------------

@pytest.fixture
def long_history(store):
    """lab1: 40 events over two days (ids 1-20 on 2026-11-29, 21-40 on 2026-11-30), every 5th a join."""
    kinds = [JOIN if n % 5 == 0 else SAY for n in range(40)]
    fired(store.append_history([_batch("lab1", 1, kinds[:20], at=T0 - 10, step=0.5)]))
    fired(store.append_history([_batch("lab1", 21, kinds[20:], at=T0 + 10, step=0.5, lines_before=16)]))
    return store


def _ids(events):
    return [event.id for event in events]


def test_read_history_newest_count_with_before_kinds_and_since(long_history):
    store = long_history
    assert _ids(fired(store.read_history("lab1", "lab", 5))) == [36, 37, 38, 39, 40]
    assert _ids(fired(store.read_history("lab1", "lab", 5, before=23))) == [18, 19, 20, 21, 22]
    assert _ids(fired(store.read_history("lab1", "lab", 4, before=25, kinds=frozenset({JOIN})))) == [6, 11, 16, 21]
    assert _ids(fired(store.read_history("lab1", "lab", 100, since=T0 + 10 + 5))) == list(range(31, 41))
    assert _ids(fired(store.read_history("lab1", "lab", 100, kinds=frozenset(LINE_KINDS)))) == [
        n for n in range(1, 41) if n % 5 != 1]
    assert fired(store.read_history("lab1", "lab", 0)) == []
    assert fired(store.read_history("den2", "den", 5)) == []
    assert fired(store.read_history("nosuch", "x", 5)) == []
    event = fired(store.read_history("lab1", "Lab", 1))[0]
    assert event == RoomEvent("Lab", 40, T0 + 10 + 19 * 0.5, "ann", SAY, "hi")


def test_read_history_reads_only_what_it_needs(long_history, monkeypatch):
    read: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(csv_history.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    monkeypatch.setattr(csv_history, "READ_BLOCK", 100)
    assert _ids(fired(long_history.read_history("lab1", "lab", 2))) == [39, 40]
    assert read == [100]
    read.clear()
    assert _ids(fired(long_history.read_history("lab1", "lab", 2, before=21))) == [19, 20]
    assert read == [1024, 1024, 100]  # each segment's first row (the newer one skipped), then the older one's end


def test_a_block_boundary_inside_a_line_and_damaged_rows(long_history, tmp_path, monkeypatch):
    path = tmp_path / "history" / "lab1" / "2026-11-30.csv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = b'"broken,row'  # id 25
    lines[6] = b"26,not a time,say,ann,hi,20"
    lines[7] = b"27,2026-11-30T00:00:13.000000Z,no_such_kind,ann,hi,21"
    lines[8] = b"28,2026-11-30T00:00:13.500000Z,say,ann,\x1b[2Jwiped\x07,22"  # edited in by hand
    path.write_bytes(b"\n".join(lines))
    for block in (7, 13, 64, 100_000):
        monkeypatch.setattr(csv_history, "READ_BLOCK", block)
        assert _ids(fired(long_history.read_history("lab1", "lab", 14))) == [24] + list(range(28, 41))
        assert _ids(fired(long_history.read_history("lab1", "lab", 100))) == (
            list(range(1, 25)) + list(range(28, 41)))
    assert fired(long_history.read_history("lab1", "lab", 1, before=29))[0].text == "wiped"


def test_text_and_senders_round_trip_formula_safe(store, tmp_path):
    texts = ["=cmd|' /C calc'!A0", "'quoted", '"a", b', "+1", "-1", "@SUM(A1)", "caf\u00e9 \U0001f600, \u05e9\u05dc\u05d5\u05dd", ""]
    events = [RoomEvent("lab", n + 1, T0, "=evil" if n == 0 else "ann", SAY, text) for n, text in enumerate(texts)]
    fired(store.append_history([HistoryBatch("lab1", 0, events)]))
    rows = data_rows(tmp_path / "history" / "lab1" / "2026-11-29.csv")
    assert [row[4] for row in rows] == ["'=cmd|' /C calc'!A0", "''quoted", '"a", b', "'+1", "'-1", "'@SUM(A1)",
                                        texts[6], ""]
    assert rows[0][3] == "'=evil"
    assert all(line.count(b"\n") == 1 for line in (tmp_path / "history" / "lab1" / "2026-11-29.csv").open("rb"))
    back = fired(store.read_history("lab1", "lab", 100))
    assert [(event.sender, event.text) for event in back] == [(event.sender, event.text) for event in events]


def test_read_failures_are_store_errors(store, tmp_path, monkeypatch):
    fired(store.append_history([_batch("lab1", 1, [SAY])]))
    monkeypatch.setattr(csv_history.os, "pread", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(StoreError, match="I/O error"):
        fired(store.read_history("lab1", "lab", 5))


# -- expiry and deletion ----------------------------------------------------------------

def test_expire_deletes_whole_segments_whose_day_ended(long_history, tmp_path, monkeypatch):
    day_end = datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp()
    monkeypatch.setattr(persistence.time, "time", lambda: day_end + 31 * 86400 + 3600.5)  # 2026-12-31 01:00:00.5
    assert fired(long_history.expire_history(day_end - 0.001)) == 0
    assert fired(long_history.expire_history(day_end)) == 1
    assert sorted(os.listdir(tmp_path / "history" / "lab1")) == ["2026-11-30.csv"]
    assert _ids(fired(long_history.read_history("lab1", "lab", 100))) == list(range(21, 41))
    assert fired(long_history.expire_history(day_end + 86400)) == 1
    # The last segment went: a row of kind tail keeps the room's last id and line count for the next start.
    assert _segment(tmp_path, "lab1", "2026-12-31") == HEADER + b"40,2026-12-31T01:00:00.500000Z,tail,,,32\n"
    assert fired(long_history.read_history("lab1", "lab", 100)) == []
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(40, 32)}
    fired(long_history.append_history([_batch("lab1", 41, [SAY], at=day_end + 31 * 86400 + 7200, lines_before=32)]))
    assert _ids(fired(long_history.read_history("lab1", "lab", 100))) == [41]
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(41, 33)}
    assert fired(long_history.expire_history(day_end + 86400 * 40)) == 1  # the tail is carried forward again
    assert os.listdir(tmp_path / "history" / "lab1") == ["2027-01-09.csv"]
    assert _store(tmp_path).load_now().history == {"lab1": HistoryTail(41, 33)}


def test_deleting_a_room_removes_its_history_and_drops_later_batches(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [SAY]), _batch("den2", 1, [SAY])]))
    fired(store.delete_room("LAB"))
    assert os.listdir(tmp_path / "history") == ["den2"]
    fired(store.append_history([_batch("lab1", 2, [SAY])]))
    assert os.listdir(tmp_path / "history") == ["den2"]
    assert fired(store.read_history("lab1", "lab", 5)) == []


def test_a_queued_append_runs_before_the_removal_of_a_deleted_rooms_history(tmp_path):
    history = Held()
    store = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t", history_run=history)
    store.load_now()
    fired(store.add_room(RoomRecord("lab", "ann", "t", "lab1")))
    appended = store.append_history([_batch("lab1", 1, [SAY])])
    deleted = store.delete_room("lab")
    history.run_all()
    assert fired(appended) is None and fired(deleted) is None
    assert os.listdir(tmp_path / "history") == []


def test_a_failed_delete_keeps_the_rooms_history_going(store, tmp_path, monkeypatch):
    monkeypatch.setattr(persistence.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(StoreError):
        fired(store.delete_room("lab"))
    monkeypatch.undo()
    fired(store.append_history([_batch("lab1", 1, [SAY])]))
    assert os.listdir(tmp_path / "history") == ["lab1"]


def test_the_history_of_a_room_deleted_just_before_a_crash_is_removed_at_start(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [SAY]), _batch("den2", 1, [SAY])]))
    (tmp_path / "rooms.csv").write_bytes(b"#chatd-rooms,2.1,name,owner,created,id\nden,ann,t,den2\n")
    (tmp_path / "history" / "not-an-id").mkdir()
    loaded = _store(tmp_path).load_now()
    assert loaded.history == {"den2": HistoryTail(1, 1)}
    assert loaded.repairs[-1] == ("history: removed the history of 1 room(s) no longer stored "
                                  "(deleted just before chatd stopped): lab1")
    assert sorted(os.listdir(tmp_path / "history")) == ["den2", "not-an-id"]


# -- marks ---------------------------------------------------------------------------

def test_marks_last_row_wins_empty_deletes_and_reload(tmp_path):
    store = _store(tmp_path)
    store.load_now()
    fired(store.set_marks("Ann", {"read:lab1": "5", "replay": "off"}, durable=True))
    fired(store.set_marks("ann", {"read:lab1": "9", "replay": ""}))
    assert data_rows(tmp_path / "marks.csv") == [["Ann", "read:lab1", "5"], ["Ann", "replay", "off"]]  # queued
    fired(store.flush_events())
    assert (tmp_path / "marks.csv").read_bytes() == (
        b"#chatd-marks,2.1,user,key,value\nAnn,read:lab1,5\nAnn,replay,off\nann,read:lab1,9\nann,replay,\n")
    assert _store(tmp_path).load_now().marks == {"ann": {"read:lab1": "9"}}


def test_a_durable_mark_is_written_after_the_queued_ones_and_fsynced_before_it_fires(tmp_path, monkeypatch):
    store = _store(tmp_path)
    store.load_now()
    fired(store.set_marks("ann", {"replay": "off"}))
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    d = store.set_marks("ann", {"replay": "on"}, durable=True)
    assert fired(d) is None and synced
    fired(store.flush_events())
    assert _store(tmp_path).load_now().marks == {"ann": {"replay": "on"}}


def test_marks_are_written_by_the_event_ticker(tmp_path):
    from twisted.internet.task import Clock
    clock = Clock()
    store = CsvStore(str(tmp_path), run=run_now, clock=clock, now=lambda: "t")
    store.load_now()
    store.start()
    fired(store.set_marks("ann", {"read:lab1": "3"}))
    assert data_rows(tmp_path / "marks.csv") == []
    clock.advance(0.5)
    assert data_rows(tmp_path / "marks.csv") == [["ann", "read:lab1", "3"]]
    fired(store.set_marks("ann", {"read:lab1": "4"}))
    fired(store.stop())
    assert data_rows(tmp_path / "marks.csv")[-1] == ["ann", "read:lab1", "4"]


@pytest.mark.parametrize("key, value", [("bad key", "1"), ("", "1"), ("k" * 65, "1"), ("r\u00e9ad", "1"),
                                        ("replay", "two\nlines"), ("replay", "\x1b[31m"), ("replay", "x" * 1001)])
def test_bad_mark_keys_and_values_are_refused(tmp_path, key, value):
    store = _store(tmp_path)
    store.load_now()
    with pytest.raises(ValueError):
        store.set_marks("ann", {key: value}, durable=True)


def test_mark_values_are_formula_safe(tmp_path):
    store = _store(tmp_path)
    store.load_now()
    fired(store.set_marks("ann", {"away": "=cmd", "note": "'x"}, durable=True))
    assert data_rows(tmp_path / "marks.csv") == [["ann", "away", "'=cmd"], ["ann", "note", "''x"]]
    assert _store(tmp_path).load_now().marks == {"ann": {"away": "=cmd", "note": "'x"}}


def test_a_marks_file_of_mostly_old_rows_is_compacted_at_load(tmp_path):
    rows = b"".join(b"ann,read:lab1,%d\n" % n for n in range(150)) + b"bob,replay,off\nbob,x,1\nbob,x,\n"
    (tmp_path / "marks.csv").write_bytes(b"#chatd-marks,2.1,user,key,value\n" + rows)
    loaded = _store(tmp_path).load_now()
    assert loaded.marks == {"ann": {"read:lab1": "149"}, "bob": {"replay": "off"}}
    assert (tmp_path / "marks.csv").read_bytes() == (
        b"#chatd-marks,2.1,user,key,value\nann,read:lab1,149\nbob,replay,off\n")
    assert _store(tmp_path).load_now().marks == loaded.marks


def test_a_few_old_rows_are_not_worth_a_rewrite(tmp_path):
    rows = b"".join(b"ann,read:lab1,%d\n" % n for n in range(50))
    (tmp_path / "marks.csv").write_bytes(b"#chatd-marks,2.1,user,key,value\n" + rows)
    assert _store(tmp_path).load_now().marks == {"ann": {"read:lab1": "49"}}
    assert len(data_rows(tmp_path / "marks.csv")) == 50


def test_bad_marks_rows_are_moved_out(tmp_path):
    (tmp_path / "marks.csv").write_bytes(b"\xef\xbb\xbf#chatd-marks,2.1,user,key,value\n"
                                         b"ann,read:lab1,3\nbad name,k,1\nann,bad key,1\n\"odd,k\n"
                                         b"ann,away,\x1b[31mred\nann,replay,off")
    loaded = _store(tmp_path).load_now()
    assert loaded.marks == {"ann": {"read:lab1": "3"}}
    assert sorted(loaded.repairs) == sorted([
        "marks.csv: dropped a torn last line (14 bytes, kept in marks.csv.torn)",
        "marks.csv: read past a UTF-8 byte order mark at its start (dropped when chatd next rewrites the file)",
        "marks.csv: skipped 1 row(s) with an invalid name (line 3); moved to marks.csv.rejected",
        "marks.csv: skipped 1 row(s) with an invalid key (line 4); moved to marks.csv.rejected",
        "marks.csv: skipped 1 malformed row(s) (line 5); moved to marks.csv.rejected",
        "marks.csv: skipped 1 row(s) with an invalid value (line 6); moved to marks.csv.rejected",
    ])


@pytest.mark.parametrize("key, value", [
    ("seen", "9999-12-31T23:59:59Z"),  # the attacker's: far in the future
    ("seen", "2026-12-01T00:00:01Z"),  # a day and a second after the load
    ("seen", "yesterday"), ("seen", "2026-11-29T12:00:00+02:00"), ("seen", "2026-11-29T12:00:00"),
    ("read:lab1", "-3"), ("read:lab1", "9223372036854775808"), ("read:lab1", "1" * 30), ("read:lab1", "3.5"),
    ("read:lab1", "\u0663"), ("read:lab1", "+3"), ("read:lab1", " 3"),
])
def test_marks_the_server_could_not_have_written_are_moved_out(tmp_path, monkeypatch, key, value):
    monkeypatch.setattr(persistence.time, "time", lambda: datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp())
    (tmp_path / "marks.csv").write_text(f"#chatd-marks,2.1,user,key,value\nann,{key},{value}\nann,away,lunch\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.marks == {"ann": {"away": "lunch"}}
    assert loaded.repairs == ["marks.csv: skipped 1 row(s) with an invalid value (line 2); moved to marks.csv.rejected"]
    assert (tmp_path / "marks.csv.rejected").read_text().endswith(f"ann,{key},{value}\n")


def test_marks_the_server_writes_load(tmp_path, monkeypatch):
    monkeypatch.setattr(persistence.time, "time", lambda: datetime(2026, 11, 30, tzinfo=timezone.utc).timestamp())
    values = {"seen": "2026-12-01T00:00:00Z", "read:lab1": "9223372036854775807", "read:den2": "0", "away": "-3"}
    (tmp_path / "marks.csv").write_text("#chatd-marks,2.1,user,key,value\n"
                                        + "".join(f"ann,{key},{value}\n" for key, value in values.items())
                                        + "ann,read:den2,\n")  # an empty value deletes
    loaded = _store(tmp_path).load_now()
    assert loaded.marks == {"ann": {"seen": "2026-12-01T00:00:00Z", "read:lab1": "9223372036854775807", "away": "-3"}}
    assert loaded.repairs == []


def test_deleting_an_account_deletes_its_marks_written_and_queued(tmp_path):
    store = _store(tmp_path)
    store.load_now()
    fired(store.add_user(UserRecord("ann", "h", "t")))
    fired(store.set_marks("Ann", {"replay": "off"}, durable=True))
    fired(store.set_marks("bob", {"replay": "off"}, durable=True))
    fired(store.set_marks("ann", {"read:lab1": "3"}))
    fired(store.delete_user("ANN"))
    fired(store.flush_events())
    assert _store(tmp_path).load_now().marks == {"bob": {"replay": "off"}}


def test_stop_waits_for_the_history_jobs_asked_for_and_only_those(tmp_path):
    history = Held()
    store = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t", history_run=history)
    store.load_now()
    assert fired(store.stop()) is None  # nothing asked of the history thread: no round trip
    store.append_history([_batch(PUBLIC_ROOM_ID, 1, [SAY])])
    stopped: list = []
    store.stop().addCallback(stopped.append)
    assert stopped == []
    history.run_all()
    assert stopped == [None] and _store(tmp_path).load_now().history == {PUBLIC_ROOM_ID: HistoryTail(1, 1)}


@settings(max_examples=300, deadline=None)
@given(st.text().map(clean_text))
def test_a_cell_is_written_as_the_csv_module_writes_it_and_reads_back(text):
    """The hand-written cell quoting of history rows (per event, fast) is csv.writer's, formula-safe, and reversible."""
    safe = "'" + text if text.startswith(("=", "+", "-", "@", "'")) else text
    assert f"1,{csv_history._cell(text)},2\n".encode() == persistence._encode_rows([["1", safe, "2"]])
    row = persistence.parse_line(f"1,{csv_history._cell(text)},2")
    assert row is not None and csv_history.cell_text(row[1]) == text


# -- reads beside commits (issue 13 attacker: a deep page stalled every room's commits) -------------------------

def _big_segment(tmp_path, rows: int, kind: str = "say", first: int = 1) -> bytes:
    """lab1's segment 2026-11-29 of ``rows`` rows, ids ``first``..., every one of ``kind``; returns its bytes."""
    lines = [f"{first + n},2026-11-29T12:00:{n % 60:02d}.000000Z,{kind},ann,line {n},{n + 1}\n" for n in range(rows)]
    data = HEADER + "".join(lines).encode()
    directory = tmp_path / "history" / "lab1"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "2026-11-29.csv").write_bytes(data)
    return data


def _counted_reads(monkeypatch) -> list[int]:
    read: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(csv_history.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at))
    return read


def test_a_deep_page_of_a_long_segment_reads_o_log_n_blocks(store, tmp_path, monkeypatch):
    """200,000 rows (9 MB): a page near the start is found by binary search on the offset, not a scan from the end."""
    data = _big_segment(tmp_path, 200_000)
    read = _counted_reads(monkeypatch)
    page = fired(store.read_history("lab1", "lab", 50, before=100))
    assert _ids(page) == list(range(50, 100)) and page[0].text == "line 49"
    assert len(read) <= 2 * 18 + 4 and sum(read) <= 40 * csv_history.SEEK_BLOCK + 1024 + csv_history.READ_BLOCK * 2
    assert sum(read) < len(data) / 50
    read.clear()
    assert _ids(fired(store.read_history("lab1", "lab", 3, before=150_001))) == [149_998, 149_999, 150_000]
    assert len(read) <= 2 * 18 + 4
    read.clear()
    assert _ids(fired(store.read_history("lab1", "lab", 2, before=1))) == [] and _ids(
        fired(store.read_history("lab1", "lab", 2, before=3))) == [1, 2]
    assert _ids(fired(store.read_history("lab1", "lab", 2, before=10**9))) == [199_999, 200_000]


@pytest.mark.parametrize("seek_block", [8, 50, 300, 4096])
def test_the_binary_search_steps_over_damaged_and_long_rows(long_history, tmp_path, monkeypatch, seek_block):
    path = tmp_path / "history" / "lab1" / "2026-11-30.csv"
    lines = path.read_bytes().split(b"\n")
    lines[5] = b'"broken,row'  # id 25
    lines[6] = b"26,not a time,say,ann,hi,20"
    lines[9] = lines[9].replace(b",hi,", b"," + b"x" * 700 + b",")  # id 29: longer than a probe
    path.write_bytes(b"\n".join(lines) + b"30,2026-11-30T00:0")  # and a row being appended: left out
    monkeypatch.setattr(csv_history, "SEEK_BLOCK", seek_block)
    monkeypatch.setattr(csv_history, "SEEK_SCAN", max(seek_block, 512))
    every = [n for n in range(1, 41) if n not in (25, 26)]
    for before in (1, 2, 5, 20, 21, 22, 25, 26, 27, 29, 30, 31, 40, 41, 10**6):
        expected = [n for n in every if n < before][-4:]
        assert _ids(fired(long_history.read_history("lab1", "lab", 4, before=before))) == expected, before


def test_a_row_being_appended_is_not_read(store, tmp_path):
    fired(store.append_history([_batch("lab1", 1, [SAY, SAY])]))
    path = tmp_path / "history" / "lab1" / "2026-11-29.csv"
    with path.open("ab") as file:
        file.write(b"3,2026-11-29T23:59:58.500000Z,say,ann,hal,3")  # the rest of its text and newline not written yet
    assert _ids(fired(store.read_history("lab1", "lab", 5))) == [1, 2]
    assert _ids(fired(store.read_history("lab1", "lab", 5, before=4))) == [1, 2]


def test_one_read_looks_at_no_more_than_scan_max_bytes(store, tmp_path, monkeypatch):
    """/history over a day of joins: what was found within SCAN_MAX, not a scan of the whole day."""
    fired(store.append_history([_batch("lab1", 1, [SAY], at=T0 - 86400)]))  # the day before: a line
    _big_segment(tmp_path, 20_000, kind="join", first=2)
    monkeypatch.setattr(csv_history, "SCAN_MAX", 100_000)
    read = _counted_reads(monkeypatch)
    assert fired(store.read_history("lab1", "lab", 5, kinds=LINE_KINDS)) == []
    assert sum(read) <= 100_000 * 2 + 1024
    monkeypatch.setattr(csv_history, "SCAN_MAX", 10**9)
    assert _ids(fired(store.read_history("lab1", "lab", 5, kinds=LINE_KINDS))) == [1]


def test_reads_run_in_the_reader_runner_and_commits_do_not_wait_for_them(tmp_path):
    history, readers = Held(), Held()
    store = CsvStore(str(tmp_path), run=run_now, clock=None, now=lambda: "t", history_run=history,
                     history_read_run=readers)
    store.load_now()
    first = store.append_history([_batch(PUBLIC_ROOM_ID, 1, [SAY])])
    history.run_all()
    read = store.read_history(PUBLIC_ROOM_ID, "lobby", 5)
    commit = store.append_history([_batch(PUBLIC_ROOM_ID, 2, [SAY], lines_before=1)])
    assert len(readers.calls) == 1 and len(history.calls) == 1
    history.run_all()  # the commit goes while the read is still held
    assert fired(first) is None and fired(commit) is None and not read.called
    stopped: list = []
    store.stop().addCallback(stopped.append)
    assert stopped == []  # stop waits for the reads too
    readers.run_all()
    assert _ids(fired(read)) == [1, 2] and stopped == [None]


@pytest_twisted.inlineCallbacks
def test_the_service_commits_while_a_slow_read_holds_a_reader_thread(tmp_path, monkeypatch):
    """Real pools: a read blocked on an Event does not hold back an append (the attacker's 35 s commit)."""
    from twisted.internet import reactor
    from chatd.service import StoreService

    service = StoreService(reactor, str(tmp_path), now=lambda: "t")
    service.startService()
    release, entered = threading.Event(), threading.Event()
    real_read = service.store._history.read

    def slow_read(*args):
        entered.set()
        release.wait(10)
        return real_read(*args)

    monkeypatch.setattr(service.store._history, "read", slow_read)
    try:
        read = service.store.read_history(PUBLIC_ROOM_ID, "lobby", 5)
        assert entered.wait(10)
        yield service.store.append_history([_batch(PUBLIC_ROOM_ID, 1, [SAY])])
        assert not read.called and not release.is_set()
        release.set()
        assert _ids((yield read)) == [1]
    finally:
        release.set()
        yield service.stopService()


def test_an_event_utf8_cannot_encode_is_stored_with_u_fffd_and_blocks_no_room(store, tmp_path):
    """A lone surrogate (which the front-ends no longer let through: chatd.text) never fails a room's write."""
    fired(store.append_history([_batch("lab1", 1, [SAY], text="hi \ud800 there"), _batch("den2", 1, [SAY])]))
    assert "hi \ufffd there" in _segment(tmp_path, "lab1", "2026-11-29").decode("utf-8")
    assert b",hi," in _segment(tmp_path, "den2", "2026-11-29")
