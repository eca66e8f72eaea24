"""
The PostgreSQL store (chatd.stores.postgres) beyond the Store contract
(tests/test_store_contract.py runs that on it too), against a real private
cluster (tests/pg.py): two stores on one database (two nodes) racing to
register one name, PostgreSQL restarted under a running store, the schema
made once by two nodes starting together, the DSN's password never logged,
and the real daemon with ``--store``.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.core.events import EventKind, RoomEvent
from chatd.store import HistoryBatch, LogEvent, NameTakenError, RoomRecord, StoreError, UserRecord
from daemon import Conn, Daemon, in_room
from pg import back_in_lab, need_binaries, talk_in_lab

psycopg = pytest.importorskip("psycopg")

from chatd.stores.postgres import (  # noqa: E402  (after the skip: psycopg is an extra)
    SCHEMA_VERSION, Direct, Pools, PostgresStore, ensure_schema, masked_dsn,
)

NOW = "2026-11-30T01:00:00Z"
#: Bound on every wait for the real reactor (seconds).
WAIT = 20


def _pooled(dsn: str) -> tuple[PostgresStore, Pools]:
    """A store as the server builds it: adbapi pools on the running reactor."""
    from twisted.internet import reactor

    pools = Pools(dsn, reactor)
    return PostgresStore(dsn, reactor, lambda: NOW, run=pools.write, history_run=pools.history,
                         history_read_run=pools.read), pools


def _timed(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    from twisted.internet import reactor

    return d.addTimeout(WAIT, reactor)


@pytest_twisted.inlineCallbacks
def test_two_nodes_registering_one_name_at_once_exactly_one_wins(pg_dsn):
    """Two stores (two nodes) on one database: concurrent add_user of one name in any case commits once."""
    first, first_pools = _pooled(pg_dsn)
    second, second_pools = _pooled(pg_dsn)
    try:
        yield _timed(first.load())
        yield _timed(second.load())
        for round in range(10):
            name = f"racer{round}"
            results = yield _timed(defer.DeferredList([
                first.add_user(UserRecord(name, "$argon2id$a", "t"), LogEvent("register", name)),
                second.add_user(UserRecord(name.upper(), "$argon2id$b", "t"), LogEvent("register", name.upper())),
            ], consumeErrors=True))
            outcomes = [ok for ok, _ in results]
            assert sorted(outcomes) == [False, True], results
            failure = next(value for ok, value in results if not ok)
            assert failure.check(NameTakenError)
        loaded = yield _timed(first.load())
        assert sorted(loaded.users) == [f"racer{round}" for round in range(10)]
        with psycopg.connect(pg_dsn) as connection:  # only the winner's register row
            assert connection.execute("SELECT count(*) FROM log WHERE event = 'register'").fetchone() == (10,)
    finally:
        yield first.stop()
        yield second.stop()
        first_pools.close()
        second_pools.close()


def test_the_state_answers_a_name_stored_by_another_node_as_taken(pg_dsn, tmp_path):
    """The factory turns the store's NameTakenError into the user's 'taken' sentence (not a storage problem)."""
    from helpers import Client, fired, make_factory

    here = PostgresStore(pg_dsn, Clock(), lambda: NOW)
    factory, clock = make_factory(str(tmp_path), store=here)  # loaded before the other node stored ann and lab
    other = PostgresStore(pg_dsn, Clock(), lambda: NOW)
    fired(other.add_user(UserRecord("Ann", "$argon2id$h", "t")))
    fired(other.add_room(RoomRecord("lab", "Ann", "t", "lab1")))
    bob = Client(factory, clock)
    bob.output()
    assert "The name ann is taken." in bob.register("ann", "secret1")
    assert "Registered and logged in as bob." in bob.register("bob", "secret1")
    bob.send("create LAB")
    assert "A room called LAB already exists." in bob.output()


def test_the_schema_is_made_once_when_two_nodes_start_together(pg_dsn):
    """Two connections creating the schema at once: the advisory lock makes one wait; one version row."""
    errors: list[BaseException] = []
    notes: list[list[str]] = []

    def start() -> None:
        try:
            notes.append(Direct(pg_dsn).call(ensure_schema))
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert errors == []
    assert sorted(notes, key=len) == [[], [], [], [f"PostgreSQL schema created (version {SCHEMA_VERSION})"]]
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_every_node_loads_one_resume_token_key_made_once(pg_dsn):
    """The first load makes the key (server_keys); every later load, any node's, reads the same."""
    keys = [PostgresStore(pg_dsn, Clock(), lambda: NOW).load_now().token_key for _ in range(3)]
    assert len(keys[0]) == 32 and keys == [keys[0]] * 3
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM server_keys").fetchone() == (1,)


def test_a_newer_schema_is_refused(pg_dsn):
    store = PostgresStore(pg_dsn, Clock(), lambda: NOW)
    store.load_now()
    with psycopg.connect(pg_dsn) as connection:
        connection.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema is version {SCHEMA_VERSION + 1}, newer than this chatd's"):
        store.load_now()


def test_a_password_in_an_error_is_masked():
    """Should a message ever hold the DSN's password, the StoreError and the log show *** instead."""
    from chatd.stores.postgres import _Health

    error = _Health("postgresql://chatd:s3cret@db/chat").failed(psycopg.OperationalError("bad s3cret here"))
    assert str(error) == "PostgreSQL is unavailable: bad *** here"
    error = _Health("postgresql://chatd@db/chat").failed(psycopg.errors.UniqueViolation("dup"))
    assert str(error) == "PostgreSQL: dup"


def test_connections_give_up_on_a_vanished_server_unless_the_dsn_says_otherwise(pg_dsn):
    """TCP keepalives and a user timeout (libpq) bound a call to a server that vanished; the DSN's own win."""
    from chatd.stores.postgres import connect, connection_args

    assert connection_args(pg_dsn)["tcp_user_timeout"] == 30_000
    assert "tcp_user_timeout" not in connection_args(pg_dsn + "?tcp_user_timeout=5000")
    with connect(pg_dsn) as connection:
        assert "tcp_user_timeout=30000" in connection.info.dsn and "keepalives_idle=10" in connection.info.dsn
    with connect(pg_dsn + "?keepalives_idle=60") as connection:
        assert "keepalives_idle=60" in connection.info.dsn


def test_the_password_of_a_dsn_is_masked():
    assert masked_dsn("postgresql://chatd:s3cr%40t@db.example.org:5433/chat") == \
        "postgresql://chatd:***@db.example.org:5433/chat"
    assert masked_dsn("postgres://db/chat?user=chatd&password=s3cret&sslmode=require") == \
        "postgres://db/chat?user=chatd&password=***&sslmode=require"
    assert masked_dsn("host=db user=chatd password='a b\\' c' dbname=chat") == \
        "host=db user=chatd password=*** dbname=chat"
    assert masked_dsn("postgresql://chatd@db/chat") == "postgresql://chatd@db/chat"


@pytest_twisted.inlineCallbacks
def test_postgresql_restarted_under_a_running_store(own_pg_cluster):
    """
    While PostgreSQL is down every call fails with a clear StoreError (queued events are kept); once it is back
    the same store works again, without a restart, and the events queued meanwhile are written.
    """
    dsn = own_pg_cluster.create_database()
    store, pools = _pooled(dsn)
    try:
        yield _timed(store.load())
        yield _timed(store.add_user(UserRecord("ann", "$argon2id$h", "t")))
        own_pg_cluster.stop()
        failures = []
        for attempt in (store.add_user(UserRecord("bob", "$argon2id$h", "t"), LogEvent("register", "bob")),
                        store.add_room(RoomRecord("lab", "ann", "t", "lab1")),
                        store.read_history("public", "public", 5),
                        store.append_history([HistoryBatch("public", 0, [
                            RoomEvent("public", 1, 1_790_000_000.0, "ann", EventKind.SAY, "hi")])])):
            try:
                yield _timed(attempt)
            except StoreError as error:
                failures.append(str(error))
        assert len(failures) == 4
        assert all(re.match(r"PostgreSQL is unavailable: ", failure) for failure in failures), failures
        store.log_event("login", "ann")
        yield _timed(store.flush_events())  # fails, keeps the event
        own_pg_cluster.start()
        yield _timed(store.add_user(UserRecord("bob", "$argon2id$h", "t"), LogEvent("register", "bob")))
        yield _timed(store.append_history([HistoryBatch("public", 0, [
            RoomEvent("public", 1, 1_790_000_000.0, "ann", EventKind.SAY, "hi")])]))
        read = yield _timed(store.read_history("public", "public", 5))
        assert [event.text for event in read] == ["hi"]
        loaded = yield _timed(store.load())
        assert sorted(loaded.users) == ["ann", "bob"]
        with psycopg.connect(dsn) as connection:
            assert connection.execute("SELECT event, user_name FROM log ORDER BY seq").fetchall() == [
                ("login", "ann"), ("register", "bob")]
    finally:
        yield store.stop()
        pools.close()


@pytest_twisted.inlineCallbacks
def test_a_quick_postgresql_restart_between_two_calls_is_not_noticed(own_pg_cluster):
    """The pools' connections went stale with the restart: the first call after it gets a new one and works."""
    dsn = own_pg_cluster.create_database()
    store, pools = _pooled(dsn)
    try:
        yield _timed(store.load())
        yield _timed(store.add_user(UserRecord("ann", "$argon2id$h", "t")))
        yield _timed(store.append_history([HistoryBatch("public", 0, [
            RoomEvent("public", 1, 1_790_000_000.0, "ann", EventKind.SAY, "hi")])]))
        yield _timed(store.read_history("public", "public", 5))
        own_pg_cluster.stop()
        own_pg_cluster.start()
        yield _timed(store.add_user(UserRecord("bob", "$argon2id$h", "t"), LogEvent("register", "bob")))
        read = yield _timed(store.read_history("public", "public", 5))
        assert [event.text for event in read] == ["hi"]
        yield _timed(store.append_history([HistoryBatch("public", 1, [
            RoomEvent("public", 2, 1_790_000_001.0, "bob", EventKind.SAY, "back")])]))
        loaded = yield _timed(store.load())
        assert sorted(loaded.users) == ["ann", "bob"] and loaded.history["public"].last_id == 2
    finally:
        yield store.stop()
        pools.close()


def test_the_daemon_keeps_accounts_rooms_and_history_in_postgresql(pg_dsn, tmp_path):
    """twistd chatd --store postgresql://...: register, create a room, talk; after a restart all is still there."""
    data = str(tmp_path / "data")
    dsn = pg_dsn.replace("chatd@", "chatd:hunter2@")  # (the test cluster trusts any password)
    d = Daemon(data, "--store", dsn).start()
    try:
        talk_in_lab(d.port, 5)
        assert re.search(r"store: PostgreSQL at postgresql://chatd:\*\*\*@127\.0\.0\.1:\d+/\w+", d.log())
        assert not d.unhandled_errors()
    finally:
        assert d.stop() in (0, -signal.SIGTERM)
    assert "chatd stopped cleanly" in d.log()
    assert not [name for name in os.listdir(data) if name.endswith(".csv")]  # no CSV store beside it
    assert "hunter2" not in d.log()
    d = Daemon(data, "--store", dsn, port=d.port).start()
    try:
        text = back_in_lab(d.port)
        assert re.findall(r"ann: (line \d+)", text) == [f"line {n}" for n in range(1, 6)]
        bob = in_room(d.port, "bob", "lab")
        bob.send("/history 2", "/ping")
        assert re.findall(r"ann: (line \d+)", bob.expect(r"pong\r\n")) == ["line 4", "line 5"]
        assert not d.unhandled_errors()
    finally:
        d.stop()


def test_the_daemon_will_not_start_without_its_database(tmp_path):
    """A DSN nobody answers: chatd refuses to start, saying so (the password masked), exit status 1."""
    from daemon import free_port

    d = Daemon(str(tmp_path / "data"), "--store", f"postgresql://chatd:hunter2@127.0.0.1:{free_port()}/chatd")
    with pytest.raises(RuntimeError, match="exited with 1"):
        d.start()
    assert re.search(r"chatd could not start: PostgreSQL at postgresql://chatd:\*\*\*@127\.0\.0\.1:\d+/chatd: "
                     r"PostgreSQL is unavailable: ", d.log())
    assert "hunter2" not in d.log()


def test_the_daemon_rides_out_a_postgresql_restart(own_pg_cluster, tmp_path):
    """
    PostgreSQL stopped under a running daemon: chat goes on, a registration is refused with the storage
    sentence (no traceback in the log); once it is back the same daemon registers again and stores the
    history the room had meanwhile.
    """
    dsn = own_pg_cluster.create_database()
    d = Daemon(str(tmp_path / "data"), "--store", dsn).start()
    try:
        ann = in_room(d.port, "ann")
        ann.send("before")
        ann.expect(r"ann: before\r\n")
        own_pg_cluster.stop()
        ann.send("during")
        ann.expect(r"ann: during\r\n")
        bob = Conn(d.port)
        bob.expect(r"menu> ")
        bob.send("register bob", "secret1", "secret1")
        bob.expect(r"Could not save the account \(server storage problem\); try again later\.")
        own_pg_cluster.start()
        bob.send("register bob", "secret1", "secret1")
        bob.expect(r"Registered and logged in as bob\.")
        bob.enter("bob")
        bob.send("/history 3", "/ping")
        assert re.findall(r"ann: (\w+)", bob.expect(r"pong\r\n")) == ["before", "during"]
        log = d.log()
        assert re.search(r"PostgreSQL at postgresql://chatd@127.0.0.1:\d+/\w+ is unavailable: ", log)
        assert "PostgreSQL at" in log and "is reachable again" in log
        assert not d.unhandled_errors()
    finally:
        d.stop()


def test_the_store_option_takes_postgresql_urls_only():
    from twisted.python import usage

    from chatd.tap import Options

    options = Options()
    options.parseOptions(["--store", "postgresql://chatd:pw@db/chat"])
    assert options["store"] == "postgresql://chatd:pw@db/chat"
    Options().parseOptions(["--store", "postgres://db/chat"])
    assert Options().parseOptions([]) is None
    for bad in ("mysql://chatd:pw@db/chat", "chat.db", "host=db password=pw dbname=chat"):
        with pytest.raises(usage.UsageError, match=r"--store takes a postgresql:// \(or postgres://\) URL") as caught:
            Options().parseOptions(["--store", bad])
        assert "pw" not in str(caught.value)


def test_the_store_benchmark_runs(capsys):
    """bench.postgres_store (docs/PERFORMANCE.md's figures) runs: its own durable cluster, both stores, a table."""
    need_binaries()
    from bench.postgres_store import main

    assert main(["--runs", "3"]) == 0
    table = capsys.readouterr().out
    assert re.search(r"append_history, 1 room x 100 events +\d+\.\d\d / +\d+\.\d\d +\d+\.\d\d / +\d+\.\d\d", table)
    assert "add_user + register row (a register)" in table


def test_two_daemons_on_one_database_register_a_name_once(pg_dsn, tmp_path):
    """Two nodes (twistd chatd --store, one database): one name registered on both at once is one account."""
    nodes = [Daemon(str(tmp_path / f"node{n}"), "--store", pg_dsn).start() for n in (1, 2)]
    try:
        conns = [Conn(node.port) for node in nodes]
        for conn in conns:
            conn.expect(r"menu> ")
        for conn, name in zip(conns, ("ann", "ANN")):
            conn.send(f"register {name}", "secret1", "secret1")
        answers = [conn.expect(r"(Registered and logged in as \w+\.|The name \w+ is taken\.)") for conn in conns]
        assert sorted("Registered" in answer for answer in answers) == [False, True], answers
        assert all(not node.unhandled_errors() for node in nodes)
    finally:
        for node in nodes:
            node.stop()
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert connection.execute("SELECT count(*) FROM log WHERE event = 'register'").fetchone() == (1,)
