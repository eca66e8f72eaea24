"""
Damaged or hostile data files: each physical line is one row (a bad line
never hides the lines after it), a leading UTF-8 BOM is read past, rows are
checked on load (names, owners, duplicates), header versions are read in
ASCII digits and only 2.x. What is skipped is reported and its bytes kept
in ``FILE.rejected``.
"""

from __future__ import annotations

import csv
import os
import shutil

import pytest

from chatd import persistence
from chatd.persistence import CsvStore, FormatError
from chatd.store import RoomRecord
from helpers import Client, counted_room_ids, data_rows, fired, make_factory, run_now

FORMAT1 = os.path.join(os.path.dirname(__file__), "data", "format1")
ROOMS_HEADER = b"#chatd-rooms,2.1,name,owner,created,id\n"
USERS_HEADER = b"#chatd-users,2.1,name,password_hash,created\n"
LOG_HEADER = b"#chatd-log,2.1,timestamp,event,user,room,detail\n"
BOM = b"\xef\xbb\xbf"


@pytest.fixture(autouse=True)
def _room_ids(monkeypatch):
    counted_room_ids(monkeypatch)


def _store(path):
    return CsvStore(str(path), run=run_now, clock=None, now=lambda: "2026-11-29T00:00:00Z")


def _users(path, *names):
    """users.csv with an account (any hash) for each name."""
    (path / "users.csv").write_bytes(USERS_HEADER + b"".join(b"%s,h,t\n" % name.encode() for name in names))


def _csv_rows(path):
    """Every row of ``path`` as any CSV reader (the one docs/OPERATIONS.md shows) sees it, header included."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# -- 1. one physical line is one row ------------------------------------------

def test_an_unclosed_quote_in_rooms_csv_hides_no_later_room(tmp_path):
    _users(tmp_path, "alice")
    (tmp_path / "rooms.csv").write_bytes(ROOMS_HEADER + b'lab,alice,x,a1\n"odd,alice,y\nnewroom,alice,z,a2\n')
    store = _store(tmp_path)
    loaded = store.load_now()
    assert loaded.rooms == [RoomRecord("lab", "alice", "x", "a1"), RoomRecord("newroom", "alice", "z", "a2")]
    assert loaded.repairs == ["rooms.csv: skipped 1 malformed row(s) (line 3); moved to rooms.csv.rejected"]
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b"lab,alice,x,a1\nnewroom,alice,z,a2\n"
    assert (tmp_path / "rooms.csv.rejected").read_bytes() == b'"odd,alice,y\n'
    assert oct(os.stat(tmp_path / "rooms.csv.rejected").st_mode & 0o777) == "0o600"
    fired(store.delete_room("lab"))
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b"newroom,alice,z,a2\n"
    again = _store(tmp_path).load_now()
    assert again.rooms == [RoomRecord("newroom", "alice", "z", "a2")] and again.repairs == []


def test_a_delete_keeps_a_bad_line_written_while_running_apart_from_other_rows(tmp_path):
    _users(tmp_path, "alice")
    store = _store(tmp_path)
    store.load_now()
    (tmp_path / "rooms.csv").write_bytes(ROOMS_HEADER + b'lab,alice,x,a1\n"odd,alice,y\nnewroom,alice,z,a2\n')
    fired(store.delete_room("lab"))
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b'"odd,alice,y\nnewroom,alice,z,a2\n'
    assert _store(tmp_path).load_now().rooms == [RoomRecord("newroom", "alice", "z", "a2")]


def test_a_field_over_the_csv_limit_is_a_malformed_row_not_a_start_failure(tmp_path):
    _users(tmp_path, "alice")
    big = b"x" * (200 * 1024)
    (tmp_path / "rooms.csv").write_bytes(ROOMS_HEADER + b"lab,alice," + big + b"\nnext,alice,t,a1\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.rooms == [RoomRecord("next", "alice", "t", "a1")]
    assert loaded.repairs == ["rooms.csv: skipped 1 malformed row(s) (line 2); moved to rooms.csv.rejected"]
    assert (tmp_path / "rooms.csv.rejected").read_bytes() == b"lab,alice," + big + b"\n"


def test_a_users_line_over_the_csv_limit_reads_as_no_account(tmp_path):
    """The rest of an account's line is parsed at login: a field over the limit is no account, not a traceback."""
    (tmp_path / "users.csv").write_bytes(USERS_HEADER + b"bob,h" + b"x" * (200 * 1024) + b",t\nann,h,t\n")
    users = _store(tmp_path).load_now().users
    assert "ann" in users and "bob" not in users


def test_users_csv_rows_after_an_unclosed_quote_load_and_the_line_is_moved_out(tmp_path):
    (tmp_path / "users.csv").write_bytes(USERS_HEADER + b'ann,h,t\nbob,"h,t\ncid,h,t\n')
    loaded = _store(tmp_path).load_now()
    assert sorted(loaded.users) == ["ann", "cid"]
    assert loaded.repairs == ["users.csv: skipped 1 malformed row(s) (line 3); moved to users.csv.rejected"]
    assert (tmp_path / "users.csv").read_bytes() == USERS_HEADER + b"ann,h,t\ncid,h,t\n"
    assert (tmp_path / "users.csv.rejected").read_bytes() == b'bob,"h,t\n'


def test_an_old_log_with_an_unclosed_quote_does_not_swallow_new_events(tmp_path):
    (tmp_path / "log.csv").write_bytes(b't,login,ann,,\n=odd,"x,,\nt,logout,ann,,\n')
    store = _store(tmp_path)
    loaded = store.load_now()
    assert loaded.repairs == [
        "log.csv: 1 malformed row(s) (line 3) rewritten as one quoted cell each, so they cannot swallow the rows "
        "after them; their bytes are in log.csv.rejected"]
    assert (tmp_path / "log.csv.rejected").read_bytes() == b'=odd,"x,,\n'
    fired(store.log_event("login", "bob"))
    fired(store.flush_events())
    assert _csv_rows(tmp_path / "log.csv")[1:] == [
        ["t", "login", "ann", "", ""], ["'=odd,\"x,,"], ["t", "logout", "ann", "", ""],
        ["2026-11-29T00:00:00Z", "login", "bob", "", ""]]


def test_a_current_log_whose_last_line_has_an_unclosed_quote_is_mended_before_appends(tmp_path):
    (tmp_path / "log.csv").write_bytes(LOG_HEADER + b't,login,ann,,\n"t,login,bob,,\n')
    store = _store(tmp_path)
    loaded = store.load_now()
    assert loaded.repairs == [
        "log.csv: its last line was a malformed row (it would swallow the rows appended after it): rewrote it as "
        "one quoted cell; its bytes are in log.csv.rejected"]
    fired(store.log_event("logout", "ann"))
    fired(store.flush_events())
    assert data_rows(tmp_path / "log.csv") == [
        ["t", "login", "ann", "", ""], ['"t,login,bob,,'], ["2026-11-29T00:00:00Z", "logout", "ann", "", ""]]
    assert (tmp_path / "log.csv.rejected").read_bytes() == b'"t,login,bob,,\n'
    assert _store(tmp_path).load_now().repairs == []


# -- 2. a UTF-8 byte order mark -------------------------------------------------

def test_an_old_users_csv_with_a_bom_is_migrated_without_it(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(FORMAT1, data)
    old = (data / "users.csv").read_bytes()
    (data / "users.csv").write_bytes(BOM + old)
    factory, clock = make_factory(str(data))
    assert (data / "users.csv").read_bytes() == USERS_HEADER + old
    assert "Logged in as alice." in Client(factory, clock).login("alice", "alice-pw1")


def test_the_migration_note_says_the_bom_was_dropped(tmp_path):
    (tmp_path / "rooms.csv").write_bytes(BOM + b"lab,alice,t\n")
    _users(tmp_path, "alice")
    loaded = _store(tmp_path).load_now()
    assert loaded.migrations == ["rooms.csv: migrated from format 1 (no header) to 2.1: added the header row, "
                                 "kept 1 row(s) as they were; dropped the UTF-8 byte order mark at its start",
                                 "rooms.csv: gave 1 room(s) an id (their history is kept by id)"]
    assert loaded.rooms == [RoomRecord("lab", "alice", "t", "r1")]
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b"lab,alice,t,r1\n"


def test_a_current_file_with_a_bom_is_not_migrated_and_a_rewrite_drops_the_bom(tmp_path):
    _users(tmp_path, "alice")
    (tmp_path / "rooms.csv").write_bytes(BOM + ROOMS_HEADER + b"lab,alice,t,a1\ngone,alice,t,a2\n")
    store = _store(tmp_path)
    loaded = store.load_now()
    assert loaded.rooms == [RoomRecord("lab", "alice", "t", "a1"), RoomRecord("gone", "alice", "t", "a2")]
    assert loaded.migrations == []
    assert loaded.repairs == ["rooms.csv: read past a UTF-8 byte order mark at its start "
                              "(dropped when chatd next rewrites the file)"]
    fired(store.delete_room("gone"))
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b"lab,alice,t,a1\n"


def test_a_current_users_csv_with_a_bom_loads_its_accounts(tmp_path):
    (tmp_path / "users.csv").write_bytes(BOM + USERS_HEADER + b"alice,h,t\n")
    loaded = _store(tmp_path).load_now()
    assert list(loaded.users) == ["alice"] and loaded.migrations == []


# -- 3. rows are checked on load -------------------------------------------------

def test_room_rows_breaking_the_rules_are_skipped_reported_and_kept_aside(tmp_path):
    _users(tmp_path, "alice")
    bad = (b"esc\x1b[31mred,alice,t\n"
           b"bad name,alice,t\n"
           b'"=HYPERLINK(""x"")",alice,t\n'
           b"nobody,,t\n"
           b"LAB,alice,t\n"
           b"Public,alice,t\n")
    (tmp_path / "rooms.csv").write_bytes(ROOMS_HEADER + b"lab,alice,t,a1\n" + bad + b"ok,ghost,t,a2\n")
    loaded = _store(tmp_path).load_now()
    assert loaded.rooms == [RoomRecord("lab", "alice", "t", "a1"), RoomRecord("ok", "ghost", "t", "a2")]
    assert loaded.repairs == [
        "rooms.csv: skipped 3 row(s) with an invalid name (lines 3, 4, 5); moved to rooms.csv.rejected",
        "rooms.csv: skipped 1 row(s) of a room without an owner (line 6); moved to rooms.csv.rejected",
        "rooms.csv: skipped 2 row(s) with a duplicate name (lines 7, 8); moved to rooms.csv.rejected",
        "rooms.csv: kept 1 room(s) whose owner has no account (line 9: ok); whoever registers that name owns "
        "the room",
    ]
    assert (tmp_path / "rooms.csv.rejected").read_bytes() == bad
    assert (tmp_path / "rooms.csv").read_bytes() == ROOMS_HEADER + b"lab,alice,t,a1\nok,ghost,t,a2\n"


def test_a_room_row_with_an_escape_never_reaches_a_terminal(tmp_path):
    _users(tmp_path, "alice")
    (tmp_path / "rooms.csv").write_bytes(ROOMS_HEADER + b"esc\x1b[31mred,alice,t\n")
    factory, _ = make_factory(str(tmp_path))
    assert [room.name for room in fired(factory.list_rooms())] == ["public"]


def test_user_rows_breaking_the_rules_are_skipped_reported_and_kept_aside(tmp_path):
    bad = b"bad name,h,t\nALICE,h2,t\nalone\n\xef\xbc\xa1nn,h,t\n"
    (tmp_path / "users.csv").write_bytes(USERS_HEADER + b"alice,h,t\n" + bad + b"alice,h3,t\n")
    loaded = _store(tmp_path).load_now()
    assert sorted(loaded.users) == ["alice"]
    assert loaded.users["alice"].password_hash == "h3"  # its own later row (a rehash) still counts
    assert loaded.repairs == [
        "users.csv: skipped 2 row(s) with an invalid name (lines 3, 6); moved to users.csv.rejected",
        "users.csv: skipped 1 row(s) with a duplicate name (line 4); moved to users.csv.rejected",
        "users.csv: skipped 1 malformed row(s) (line 5); moved to users.csv.rejected",
    ]
    assert (tmp_path / "users.csv.rejected").read_bytes() == bad
    assert (tmp_path / "users.csv").read_bytes() == USERS_HEADER + b"alice,h,t\nalice,h3,t\n"
    assert _store(tmp_path).load_now().repairs == []


def test_rehashed_accounts_take_the_fast_path_and_report_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(persistence, "_read_user_lines_slowly", None)  # the fast path must not need it
    (tmp_path / "users.csv").write_bytes(USERS_HEADER + b'ann,"$a,b",t\nBob,h,t\nann,"$c,d",t\nBob,h2,t\n')
    loaded = _store(tmp_path).load_now()
    assert sorted(loaded.users) == ["ann", "bob"] and loaded.repairs == []
    assert loaded.users["ann"].password_hash == "$c,d" and loaded.users["bob"].password_hash == "h2"
    assert not (tmp_path / "users.csv.rejected").exists()


# -- 4. header versions ----------------------------------------------------------

@pytest.mark.parametrize("version, message", [
    ("\u0662.0", "users.csv: not a chatd users file (its header is '#chatd-users,\u0662.0,name,password_hash,created')"),
    ("1.0", "users.csv: its header claims format 1.0, which never existed (format 1 had no header; this chatd "
            "reads 2.x); fix the header or restore a backup"),
    ("0.9", "users.csv: its header claims format 0.9, which never existed (format 1 had no header; this chatd "
            "reads 2.x); fix the header or restore a backup"),
])
def test_a_header_version_is_ascii_digits_and_2_x(tmp_path, version, message):
    content = f"#chatd-users,{version},name,password_hash,created\nann,h,t\n".encode()
    (tmp_path / "users.csv").write_bytes(content)
    with pytest.raises(FormatError) as error:
        _store(tmp_path).load_now()
    assert str(error.value) == message
    assert (tmp_path / "users.csv").read_bytes() == content


def test_a_huge_last_log_line_with_an_open_quote_is_mended_once(tmp_path):
    line = b't,login,"' + b"x" * (200 * 1024)
    (tmp_path / "log.csv").write_bytes(LOG_HEADER + line + b"\n")
    assert len(_store(tmp_path).load_now().repairs) == 1
    mended = (tmp_path / "log.csv").read_bytes()
    assert _store(tmp_path).load_now().repairs == []
    assert (tmp_path / "log.csv").read_bytes() == mended
    assert (tmp_path / "log.csv.rejected").read_bytes() == line + b"\n"


def test_a_log_line_that_swallows_nothing_is_left_as_it_was(tmp_path):
    content = b'"a"b,login,ann,,\nt,login,ann,,\n'
    (tmp_path / "log.csv").write_bytes(content)
    loaded = _store(tmp_path).load_now()
    assert loaded.repairs == []
    assert (tmp_path / "log.csv").read_bytes() == LOG_HEADER + content
