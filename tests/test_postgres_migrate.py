"""
``chatd-admin migrate-to-postgres``: a data directory made by the CSV store
(directly, and by a real daemon) copied into an empty PostgreSQL database
reads back the same through the PostgreSQL store; a database with chatd
data in it is refused, with nothing copied twice.
"""

from __future__ import annotations

import io
import re
import signal

import pytest
from twisted.internet.task import Clock

from chatd.admin_tool import FAILED, OK, main
from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.persistence import CsvStore
from chatd.store import PUBLIC_ROOM_ID, SERVER, HistoryBatch, LogEvent, RoomRecord, RoomValue, UserRecord
from daemon import Daemon
from pg import back_in_lab, talk_in_lab
from helpers import fired, run_now

psycopg = pytest.importorskip("psycopg")

from chatd.stores.postgres import PostgresStore  # noqa: E402  (after the skip: psycopg is an extra)

NOW = "2026-11-30T01:30:00Z"
DAY = 86400.0
T0 = 1_790_000_000.0


def _csv(data_dir: str) -> CsvStore:
    return CsvStore(data_dir, run=run_now, clock=Clock(), now=lambda: NOW)


def _say(room: str, first: int, at: float, *texts: str) -> list[RoomEvent]:
    return [RoomEvent(room, first + n, at + n, "ann", EventKind.SAY, text) for n, text in enumerate(texts)]


def _fill(data_dir: str) -> None:
    """A data directory with something of every kind, written by the CSV store itself."""
    store = _csv(data_dir)
    store.load_now()
    fired(store.start())
    fired(store.add_user(UserRecord("Ann", "$argon2id$old", "2026-01-01T00:00:00Z"), LogEvent("register", "Ann")))
    fired(store.replace_password(UserRecord("Ann", "$argon2id$new", "2026-01-01T00:00:00Z")))  # a second line
    fired(store.add_user(UserRecord("bob", "$argon2id$b", "2026-01-02T00:00:00Z")))
    fired(store.add_user(UserRecord("gone", "$argon2id$g", "2026-01-02T00:00:00Z")))
    fired(store.add_room(RoomRecord("lab", "Ann", "2026-01-03T00:00:00Z", "lab1")))
    fired(store.add_room(RoomRecord("den", "bob", "2026-01-04T00:00:00Z", "den2")))
    fired(store.add_room(RoomRecord("old", "bob", "2026-01-05T00:00:00Z", "old3")))
    fired(store.delete_room("OLD", LogEvent("room_delete", "bob", "old")))
    fired(store.delete_user("gone"))
    fired(store.queue_private(PrivateMessage(T0 + 0.123456, "ann", "Bob", 'one, "two"')))
    fired(store.queue_private(PrivateMessage(T0 + 1.5, "bob", "Ann", "=SUM(A1)")))
    fired(store.set_marks("Ann", {"read:lab1": "3", "replay": "off"}, durable=True))
    fired(store.set_marks("bob", {"admin": "1"}))
    fired(store.set_room_values([RoomValue("lab1", "topic", "", '=Plans, "now"'), RoomValue("lab1", "op", "bob", "1"),
                                 RoomValue(SERVER, "ban", "203.0.113.0/24", "until=0&by=ann&reason=")],
                                LogEvent("topic", "ann", "lab", {"text": "Plans & more"})))
    fired(store.append_history([HistoryBatch("lab1", 0, _say("lab", 1, T0, "day one", "=formula, \"quoted\"")),
                                HistoryBatch(PUBLIC_ROOM_ID, 0, _say("public", 1, T0 - 20 * DAY, "long ago"))]))
    fired(store.append_history([HistoryBatch("lab1", 2, _say("lab", 3, T0 + DAY, "day two", "more"))]))
    fired(store.append_history([HistoryBatch("den2", 0, [
        RoomEvent("den", 1, T0, "bob", EventKind.BAN, "spam", "carol", T0 + 3600.5),
        *_say("den", 2, T0 + 2, "after")])]))
    assert fired(store.expire_history(T0 - 10 * DAY)) == 1  # the public room keeps only its tail
    store.log_event("login", "Ann", address="::1", port=4000)
    fired(store.stop())


def test_a_csv_data_dir_reads_back_the_same_from_postgresql(tmp_path, pg_dsn):
    data = str(tmp_path / "data")
    _fill(data)
    out, err = io.StringIO(), io.StringIO()
    assert main(["--data-dir", data, "migrate-to-postgres", pg_dsn], out, err) == OK, err.getvalue()
    assert re.search(r"Copied 2 accounts, 2 rooms, 2 offline messages, 3 marks, 3 room values, 6 history events of "
                     r"3 rooms and 4 log events into postgresql://chatd@127\.0\.0\.1:\d+/\w+\.", out.getvalue())
    csv_store = _csv(data)
    expected = csv_store.load_now()
    pg = PostgresStore(pg_dsn, Clock(), lambda: NOW)
    loaded = fired(pg.load())
    assert {key: loaded.users[key] for key in loaded.users} == {key: expected.users[key] for key in expected.users}
    assert loaded.users["ann"].password_hash == "$argon2id$new"
    assert loaded.rooms == expected.rooms == [RoomRecord("lab", "Ann", "2026-01-03T00:00:00Z", "lab1"),
                                              RoomRecord("den", "bob", "2026-01-04T00:00:00Z", "den2")]
    assert loaded.private == expected.private and len(loaded.private) == 2
    assert loaded.marks == expected.marks == {"ann": {"read:lab1": "3", "replay": "off"}, "bob": {"admin": "1"}}
    assert loaded.room_values == expected.room_values
    assert loaded.history == expected.history and loaded.history[PUBLIC_ROOM_ID].last_id == 1
    for room_id, name in (("lab1", "lab"), ("den2", "den"), (PUBLIC_ROOM_ID, "public")):
        assert fired(pg.read_history(room_id, name, 100)) == fired(csv_store.read_history(room_id, name, 100))
    assert [event.text for event in fired(pg.read_history("lab1", "lab", 2, before=4))] == [
        '=formula, "quoted"', "day two"]
    with psycopg.connect(pg_dsn) as connection:
        log = connection.execute("SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), event, "
                                 "user_name, room, details FROM log ORDER BY seq").fetchall()
    assert log[0] == (NOW, "register", "Ann", "", {})
    assert ("topic", "ann", "lab", {"text": "Plans & more"}) in [row[1:] for row in log]
    assert log[-1] == (NOW, "login", "Ann", "", {"address": "::1", "port": "4000"})


def test_a_database_with_chatd_data_is_refused(tmp_path, pg_dsn):
    data = str(tmp_path / "data")
    _fill(data)
    assert main(["--data-dir", data, "migrate-to-postgres", pg_dsn], io.StringIO(), io.StringIO()) == OK
    err = io.StringIO()
    assert main(["migrate-to-postgres", "--data-dir", data, pg_dsn], io.StringIO(), err) == FAILED
    assert err.getvalue() == "chatd-admin: the database holds chatd data already (in users, rooms, log, offline, " \
           "marks, room_values, history, history_tails): migrate into an empty one\n"  # (no class name: NotEmpty)
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (2,)


def test_an_unreachable_database_fails_with_the_reason_and_no_password(tmp_path):
    from daemon import free_port

    data = str(tmp_path / "data")
    _fill(data)
    err = io.StringIO()
    dsn = f"postgresql://chatd:hunter2@127.0.0.1:{free_port()}/chatd"
    assert main(["--data-dir", data, "migrate-to-postgres", dsn], io.StringIO(), err) == FAILED
    assert err.getvalue().startswith("chatd-admin: PostgreSQL is unavailable: ")
    assert "hunter2" not in err.getvalue()


def test_a_daemons_data_dir_migrated_serves_the_same_accounts_rooms_and_history(tmp_path, pg_dsn):
    """A real daemon on CSV files, stopped; migrated; a daemon with --store logs ann in and replays lab's lines."""
    data = str(tmp_path / "data")
    d = Daemon(data).start()
    try:
        talk_in_lab(d.port, 3, "/topic Plans")
    finally:
        assert d.stop() in (0, -signal.SIGTERM)
    out = io.StringIO()
    assert main(["--data-dir", data, "migrate-to-postgres", pg_dsn], out, io.StringIO()) == OK
    d = Daemon(data, "--store", pg_dsn, port=d.port).start()
    try:
        text = back_in_lab(d.port)
        assert re.findall(r"ann: (line \d+)", text) == ["line 1", "line 2", "line 3"]
        assert "Plans" in text
        assert not d.unhandled_errors()
    finally:
        d.stop()
