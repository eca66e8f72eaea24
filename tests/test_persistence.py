"""The CSV store: durability, torn lines, atomic rewrites, quoting, write failures."""

from __future__ import annotations

import errno
import os

import pytest
from twisted.internet.task import Clock

from chatd import persistence
from chatd.persistence import CsvStore, RoomRecord, StoreError, UserRecord
from chatd.text import clean_line, spreadsheet_safe
from helpers import data_rows, run_now


@pytest.fixture
def store(tmp_path):
    clock = Clock()
    s = CsvStore(str(tmp_path), run=run_now, clock=clock, now=lambda: "2026-11-24T00:00:00Z")
    s.clock = clock
    return s


def _loaded(store):
    result = []
    store.load().addCallback(result.append)
    return result[0]


def test_users_and_rooms_round_trip(store, tmp_path):
    _loaded(store)
    store.add_user(UserRecord("alice", "$argon2id$m=8,t=1", "t"))
    store.add_room(RoomRecord("lab", "ann", "t", "a1"))
    store.add_room(RoomRecord("Other", "ann", "t", "a2"))
    store.delete_room("other")
    loaded = _loaded(store)
    assert loaded.users["alice"] == UserRecord("alice", "$argon2id$m=8,t=1", "t")
    assert [r.name for r in loaded.rooms] == ["lab"]
    assert not os.path.exists(tmp_path / "rooms.csv.new")
    assert oct(os.stat(tmp_path).st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "users.csv").st_mode & 0o777) == "0o600"


def test_adds_are_fsynced_before_they_fire(store, monkeypatch):
    synced = []
    real_fsync = os.fsync
    _loaded(store)
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    fired = []
    store.add_user(UserRecord("a", "h", "t")).addCallback(lambda _: fired.append(len(synced)))
    assert fired == [2]  # the row, then the directory entry of the new users.csv
    store.add_user(UserRecord("b", "h", "t")).addCallback(lambda _: fired.append(len(synced)))
    assert fired == [2, 3]  # the file exists now: only the row


def test_torn_last_line_dropped_and_reported(store, tmp_path):
    (tmp_path / "users.csv").write_bytes(b"a,h,t\nb,h,t\nc,\"h")
    (tmp_path / "log.csv").write_bytes(b"t,login,a,,\nt,log")
    loaded = _loaded(store)
    assert sorted(loaded.users) == ["a", "b"]
    assert any("users.csv: dropped a torn last line" in note for note in loaded.repairs)
    assert any("log.csv: dropped a torn last line" in note for note in loaded.repairs)
    assert (tmp_path / "users.csv").read_bytes() == b"#chatd-users,2.1,name,password_hash,created\na,h,t\nb,h,t\n"
    # What was cut is kept beside the file, private, never lost for good (fresh tester: a hand-made file
    # without its last newline lost its last account).
    assert (tmp_path / "users.csv.torn").read_bytes() == b'c,"h\n'
    assert (tmp_path / "log.csv.torn").read_bytes() == b"t,log\n"
    assert oct(os.stat(tmp_path / "users.csv.torn").st_mode & 0o777) == "0o600"
    assert any("kept in users.csv.torn" in note for note in loaded.repairs)
    store.add_user(UserRecord("c", "h", "t"))
    assert sorted(_loaded(store).users) == ["a", "b", "c"]
    (tmp_path / "users.csv").write_bytes((tmp_path / "users.csv").read_bytes() + b"d,h2,t2")
    _loaded(store)
    assert (tmp_path / "users.csv.torn").read_bytes() == b'c,"h\nd,h2,t2\n'  # appended, never overwritten


def test_event_log_batched_quoted_and_formula_safe(store, tmp_path):
    _loaded(store)
    store.start()
    store.log_event("login", "=cmd|' /C calc'!A0", "room,with\"quote", reason="+1\nnewline", address="::1")
    assert not (tmp_path / "log.csv").exists()  # batched: not yet written
    store.clock.advance(0.5)
    rows = data_rows(tmp_path / "log.csv")
    assert rows == [["2026-11-24T00:00:00Z", "login", "'=cmd|' /C calc'!A0", 'room,with"quote',
                     "reason=%2B1%0Anewline&address=::1"]]
    store.log_event("logout", "a")
    store.stop()
    assert len(data_rows(tmp_path / "log.csv")) == 2


def test_failed_append_leaves_file_intact(store, tmp_path, monkeypatch):
    """ENOSPC half-way through a write: the change fails with StoreError and the file is cut back."""
    _loaded(store)
    store.add_user(UserRecord("first", "h", "t"))
    before = (tmp_path / "users.csv").read_bytes()
    real_write = os.write

    def short_then_full(fd, data):
        real_write(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(persistence.os, "write", short_then_full)
    failures = []
    store.add_user(UserRecord("second", "h", "t")).addErrback(failures.append)
    monkeypatch.setattr(persistence.os, "write", real_write)
    assert failures and failures[0].check(StoreError)
    assert (tmp_path / "users.csv").read_bytes() == before
    store.add_user(UserRecord("third", "h", "t"))  # the disk recovered
    assert sorted(_loaded(store).users) == ["first", "third"]


def test_failed_rewrite_keeps_old_file(store, tmp_path, monkeypatch):
    _loaded(store)
    store.add_room(RoomRecord("lab", "ann", "t", "a1"))
    monkeypatch.setattr(persistence.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    failures = []
    store.delete_room("lab").addErrback(failures.append)
    assert failures and failures[0].check(StoreError)
    assert [r.name for r in _loaded(store).rooms] == ["lab"]


def test_clean_line():
    assert clean_line(b"  hi\tthere \r") == "hi there"
    assert clean_line(b"\x1b[1;31mred\x1b[0m") == "red"
    assert clean_line(b"a\xc2\x9b31mb") == "ab"  # C1 CSI, UTF-8 encoded
    assert clean_line(b"\xe2\x80\xaeevil\xe2\x80\xac") == "evil"
    assert clean_line(b"caf\xc3\xa9 \xf0\x9f\x98\x80") == "caf\u00e9 \U0001f600"
    assert clean_line(b"\xff\xfe") == "\ufffd\ufffd"


def test_spreadsheet_safe():
    assert spreadsheet_safe("=1+1") == "'=1+1"
    assert spreadsheet_safe("@SUM") == "'@SUM"
    assert spreadsheet_safe("plain") == "plain"


def test_accounts_load_as_one_line_each_and_are_parsed_when_read(store, tmp_path):
    """A million accounts must load in about a second: users.csv lines are kept as they are, records built on read."""
    (tmp_path / "users.csv").write_bytes(b'#chatd-users,2.0,name,password_hash,created\nann,"$argon2id$a,b",t\nbob,h,t\n')
    users = _loaded(store).users
    assert isinstance(users, persistence.CsvAccounts)
    assert list(users._lines.values()) == ['ann,"$argon2id$a,b",t', "bob,h,t"]  # one string per account
    assert list(users.hash_texts()) == ['ann,"$argon2id$a,b",t', "bob,h,t"]
    assert users["ann"] == UserRecord("ann", "$argon2id$a,b", "t")
    users["bob"] = UserRecord("bob", "$argon2id$new", "t")
    assert list(users.hash_texts()) == ['ann,"$argon2id$a,b",t', "$argon2id$new"]
