"""
The Store contract (chatd.store.Store), run on every implementation: the
CSV store (chatd.persistence.CsvStore, synchronously on a temp dir), the
in-memory one (chatd.stores.memory.MemoryStore) and the PostgreSQL one
(chatd.stores.postgres.PostgresStore, on a private cluster: tests/pg.py). A
new store joins by adding one entry to STORES.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.persistence import CsvStore, decode_detail
from chatd.store import (
    LINE_KINDS, PUBLIC_ROOM_ID, SERVER, HistoryBatch, HistoryTail, LogEvent, QueueFull, RoomRecord, RoomValue, Store,
    UserRecord,
)
from chatd.stores.memory import MemoryStore
from helpers import Client, data_rows, fired, make_factory, run_now

NOW = "2026-11-29T12:00:00Z"


class CsvWorld:
    """A CsvStore on a directory; reopen() is a new store on the same files (a restart)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.clock = Clock()

    def reopen(self) -> Store:
        return CsvStore(self.path, run=run_now, clock=self.clock, now=lambda: NOW)

    def events(self, store: Store) -> list[tuple[str, str, str, dict[str, str]]]:
        return [(row[1], row[2], row[3], decode_detail(row[4])) for row in data_rows(os.path.join(self.path, "log.csv"))]


class MemoryWorld:
    """One MemoryStore; reopen() is the same store (its data lives as long as it)."""

    def __init__(self, path: str) -> None:
        self.store = MemoryStore(now=lambda: NOW)

    def reopen(self) -> Store:
        return self.store

    def events(self, store: Store) -> list[tuple[str, str, str, dict[str, str]]]:
        return [(event.event, event.user, event.room, {k: str(v) for k, v in event.details.items()})
                for _, event in self.store.events]


class PostgresWorld:
    """
    A PostgresStore on a fresh database of the session's private cluster (tests/pg.py), on a synchronous runner
    (chatd.stores.postgres.Direct: every Deferred fired); reopen() is a new store on the same database.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.clock = Clock()
        self.runners: list[Any] = []

    def reopen(self) -> Store:
        from chatd.stores.postgres import Direct, PostgresStore

        runner = Direct(self.dsn)
        self.runners.append(runner)
        return PostgresStore(self.dsn, self.clock, lambda: NOW, run=runner)

    def events(self, store: Store) -> list[tuple[str, str, str, dict[str, str]]]:
        import psycopg

        with psycopg.connect(self.dsn) as connection:
            rows = connection.execute("SELECT event, user_name, room, details FROM log ORDER BY seq").fetchall()
        return [(event, user, room, details) for event, user, room, details in rows]

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


STORES: dict[str, Callable[[str], Any]] = {"csv": CsvWorld, "memory": MemoryWorld, "postgres": PostgresWorld}


@pytest.fixture(params=sorted(STORES))
def world(request, tmp_path):
    if request.param != "postgres":
        return STORES[request.param](str(tmp_path))
    world = PostgresWorld(request.getfixturevalue("pg_dsn"))
    request.addfinalizer(world.close)
    return world


def _result(d: defer.Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (the stores here answer synchronously)."""
    assert isinstance(d, defer.Deferred)
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if isinstance(out[0], Exception) or hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def _loaded(world):
    store = world.reopen()
    return _result(store.load())


def test_an_empty_store_loads_nothing(world):
    loaded = _loaded(world)
    assert len(loaded.users) == 0 and loaded.rooms == [] and loaded.repairs == []


def test_every_method_answers_with_a_deferred(world):
    store = world.reopen()
    _result(store.load())
    for d in (store.start(), store.add_user(UserRecord("ann", "$argon2id$h1", "t")),
              store.replace_password(UserRecord("ann", "$argon2id$h2", "t")),
              store.add_room(RoomRecord("lab", "ann", "t", "a1")),
              store.set_room_values([RoomValue("a1", "topic", "", "hi")], LogEvent("topic", "ann", "lab")),
              store.set_room_owner("lab", "bob", LogEvent("owner", "ann", "lab")),
              store.delete_room("lab"), store.delete_user("ann"),
              store.queue_private(PrivateMessage(1.5, "ann", "bob", "hi")),
              store.remove_private([PrivateMessage(1.5, "ann", "bob", "hi")]),
              store.log_event("login", "ann"), store.flush_events(), store.stop()):
        assert _result(d) is None


def test_accounts_survive_a_restart_by_name_key(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("Ann", "$argon2id$h1", "2026-01-01T00:00:00Z")))
    _result(store.add_user(UserRecord("bob", "$argon2id$h2", "2026-01-02T00:00:00Z")))
    users = _loaded(world).users
    assert sorted(users) == ["ann", "bob"]
    assert users["ann"] == UserRecord("Ann", "$argon2id$h1", "2026-01-01T00:00:00Z")
    assert users.get("nobody") is None
    assert sorted(users.hash_texts())  # one text per account, each holding its hash
    assert all(any(h in text for text in users.hash_texts()) for h in ("$argon2id$h1", "$argon2id$h2"))


def test_a_replaced_password_hash_is_the_one_loaded(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("ann", "$argon2id$old", "2026-01-01T00:00:00Z")))
    _result(store.replace_password(UserRecord("ann", "$argon2id$new", "2026-01-01T00:00:00Z"),
                                   LogEvent("rehash", "ann", details={"address": "::1"})))
    users = _loaded(world).users
    assert len(users) == 1 and users["ann"] == UserRecord("ann", "$argon2id$new", "2026-01-01T00:00:00Z")
    assert world.events(store) == [("rehash", "ann", "", {"address": "::1"})]


def test_a_deleted_account_is_gone_with_every_version_of_it(world):
    """delete_user removes the account (any case, its replaced hashes too) and nothing else, with its event."""
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("Ann", "$argon2id$h1", "2026-01-01T00:00:00Z")))
    _result(store.add_user(UserRecord("bob", "$argon2id$h2", "2026-01-02T00:00:00Z")))
    _result(store.replace_password(UserRecord("Ann", "$argon2id$h3", "2026-01-01T00:00:00Z")))
    _result(store.add_room(RoomRecord("lab", "Ann", "t1", "a1")))
    _result(store.delete_user("ANN", LogEvent("account_delete", "Ann", details={"address": "::1"})))
    loaded = _loaded(world)
    assert sorted(loaded.users) == ["bob"] and loaded.users["bob"].password_hash == "$argon2id$h2"
    assert loaded.rooms == [RoomRecord("lab", "Ann", "t1", "a1")]  # its rooms are the caller's to delete
    assert world.events(store) == [("account_delete", "Ann", "", {"address": "::1"})]
    _result(store.delete_user("nobody"))
    assert sorted(_loaded(world).users) == ["bob"]


def test_queued_private_messages_load_in_order_until_removed_or_their_recipient_is_deleted(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("bob", "$argon2id$h", "t")))
    messages = [PrivateMessage(1_790_000_000.123456, "ann", "bob", "one, \"two\""),
                PrivateMessage(1_790_000_001.0, "carol", "Bob", "=SUM(A1)"),
                PrivateMessage(1_790_000_002.5, "ann", "dan", "'hi")]
    for message in messages:
        _result(store.queue_private(message))
    assert _loaded(world).private == messages
    _result(store.remove_private(messages[:1]))
    assert _loaded(world).private == messages[1:]
    _result(store.delete_user("BOB"))
    assert _loaded(world).private == messages[2:]


def test_a_shared_store_takes_an_accounts_messages_once_and_bounds_its_queue(world):
    store = world.reopen()
    if not store.shares_private and not isinstance(store, MemoryStore):  # (the memory store can, in tests)
        pytest.skip("one process keeps the loaded messages (chatd.factory)")
    _result(store.load())
    messages = [PrivateMessage(1_790_000_000.5, "ann", "bob", "one"),
                PrivateMessage(1_790_000_001.0, "carol", "Bob", "two"), PrivateMessage(1_790_000_002.0, "ann", "dan", "three")]
    for message in messages:
        _result(store.queue_private(message, limit=2))
    with pytest.raises(QueueFull):
        _result(store.queue_private(PrivateMessage(1_790_000_003.0, "ann", "BOB", "four"), limit=2))
    assert _result(store.take_private("BOB")) == messages[:2]
    assert _result(store.take_private("bob")) == []
    assert _loaded(world).private == messages[2:]


def test_rooms_added_and_deleted_in_any_case(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_room(RoomRecord("lab", "ann", "t1", "a1")))
    _result(store.add_room(RoomRecord("Other", "ann", "t2", "a2")))
    _result(store.delete_room("OTHER", LogEvent("room_delete", "ann", "Other")))
    assert _loaded(world).rooms == [RoomRecord("lab", "ann", "t1", "a1")]
    assert world.events(store) == [("room_delete", "ann", "Other", {})]


def test_a_change_has_its_event_stored_with_it_after_the_queued_ones(world):
    """The event of a change is stored by the time the change fires, after the events queued before it."""
    store = world.reopen()
    _result(store.load())
    _result(store.start())
    _result(store.log_event("login", "ann", address="::1", port=4000))
    assert world.events(store) == []  # batched
    _result(store.add_user(UserRecord("bob", "$argon2id$h", "t"), LogEvent("register", "bob")))
    assert world.events(store) == [("login", "ann", "", {"address": "::1", "port": "4000"}),
                                   ("register", "bob", "", {})]
    _result(store.log_event("logout", "ann"))
    _result(store.stop())  # stop writes what is queued
    assert world.events(store)[-1] == ("logout", "ann", "", {})


def test_the_factory_runs_on_the_memory_store(tmp_path):
    """The shared state needs only the Store interface: register, log in, create a room, all in memory."""
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    alice = Client(factory, clock)
    alice.output()
    assert "Registered and logged in as alice." in alice.register("alice", "secret1")
    alice.send("create lab")
    assert "Room lab created." in alice.output()
    assert list(store.users) == ["alice"] and list(store.rooms) == ["lab"]
    again, clock = make_factory(str(tmp_path), store=store)
    assert "Logged in as alice." in Client(again, clock).login("alice", "secret1")
    assert [room.name for room in fired(again.list_rooms())] == ["public", "lab"]
    assert os.listdir(tmp_path) == []  # nothing on disk


def _is_a_store(path: str) -> bool:
    """The stores themselves (chatd/persistence.py, chatd/stores/) may build on each other."""
    return path == "persistence.py" or path.startswith("stores" + os.sep)


def test_only_the_composition_root_names_a_concrete_store():
    """
    chatd.service builds the store and the bus (and chatd-admin, the offline tool, its own CsvStore); the state
    and the front-ends import only the interfaces. chatd.datadir (the data directory's lock and the resume
    tokens' key file, used by those two only) writes its key file with the CSV files' durable primitive.
    """
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "chatd")
    imports: dict[str, list[str]] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py") and not _is_a_store(os.path.relpath(os.path.join(directory, name), root)):
                path = os.path.join(directory, name)
                for line in open(path, encoding="utf-8"):
                    if re.match(r"\s*(from|import) chatd\.(persistence|stores|buses)\b", line):
                        imports.setdefault(os.path.relpath(path, root), []).append(line.strip())
    assert imports == {
        "service.py": ["from chatd.buses.local import LocalBus", "from chatd.persistence import CsvStore, FormatError",
                       "from chatd.buses.redis import RedisBus",  # (for the type checker)
                       "from chatd.buses.redis_limits import RedisLimits",  # (for the type checker)
                       "from chatd.stores.postgres import Pools, PostgresStore",  # (for the type checker)
                       "from chatd.stores.postgres import Pools, PostgresStore, masked_dsn",
                       "from chatd.buses.redis import RedisBus  # the 'cluster' extra: imported when --bus names Redis",
                       "from chatd.buses.redis_limits import RedisLimits  # the 'cluster' extra, as _redis_bus"],
        "buses/redis_limits.py": ["from chatd.buses.redis import Script, _Connections, _ready, parse_url"],  # (its connection)
        "tap.py": ["from chatd.buses.redis import parse_url"],  # (checking --bus)
        "admin_tool.py": ["from chatd.persistence import CsvStore", "from chatd.stores.jobs import fired",
                          "from chatd.stores.postgres_copy import copy_data_dir"],
        "datadir.py": ["from chatd.stores.csv_files import replace_data"],
    }


# -- room history and marks (issue 13) ---------------------------------------------

def _events(first: int, kinds: list[EventKind], at: float = 1_790_000_000.0) -> list[RoomEvent]:
    return [RoomEvent("lab", first + n, at + n, "ann", kind, "hi" if kind in LINE_KINDS else "")
            for n, kind in enumerate(kinds)]


def test_history_reads_back_newest_first_and_loads_as_tails(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_room(RoomRecord("lab", "ann", "t", "lab1")))
    _result(store.append_history([HistoryBatch("lab1", 0, _events(1, [EventKind.JOIN, EventKind.SAY])),
                                  HistoryBatch(PUBLIC_ROOM_ID, 0, _events(1, [EventKind.ME]))]))
    _result(store.append_history([HistoryBatch("lab1", 1, _events(3, [EventKind.SAY, EventKind.LEAVE], 1_790_000_002.5))]))
    read = _result(store.read_history("lab1", "Lab", 2))
    assert read == [RoomEvent("Lab", 3, 1_790_000_002.5, "ann", EventKind.SAY, "hi"),
                    RoomEvent("Lab", 4, 1_790_000_003.5, "ann", EventKind.LEAVE, "")]
    assert [e.id for e in _result(store.read_history("lab1", "lab", 10, before=4, kinds=LINE_KINDS))] == [2, 3]
    assert [e.id for e in _result(store.read_history("lab1", "lab", 10, since=1_790_000_001.0))] == [2, 3, 4]
    assert _loaded(world).history == {"lab1": HistoryTail(4, 2), PUBLIC_ROOM_ID: HistoryTail(1, 1)}


def test_a_deleted_rooms_history_is_gone_and_later_batches_are_dropped(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_room(RoomRecord("lab", "ann", "t", "lab1")))
    _result(store.append_history([HistoryBatch("lab1", 0, _events(1, [EventKind.SAY]))]))
    _result(store.delete_room("LAB"))
    _result(store.append_history([HistoryBatch("lab1", 1, _events(2, [EventKind.SAY]))]))
    assert _result(store.read_history("lab1", "lab", 10)) == []
    assert _loaded(world).history == {}


def test_marks_last_value_wins_empty_deletes_and_an_account_delete_drops_them(world):
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("Ann", "$argon2id$h1", "t")))
    _result(store.set_marks("Ann", {"read:lab1": "3", "replay": "off"}, durable=True))
    _result(store.set_marks("ann", {"read:lab1": "7", "replay": ""}))
    _result(store.set_marks("bob", {"replay": "off"}))
    _result(store.flush_events())
    assert _loaded(world).marks == {"ann": {"read:lab1": "7"}, "bob": {"replay": "off"}}
    _result(store.delete_user("ANN"))
    assert _loaded(world).marks == {"bob": {"replay": "off"}}


def test_expired_history_keeps_where_the_room_ended(world):
    """Expiry removes old events (whole day files in the CSV store) but the ids and line count go on."""
    store = world.reopen()
    _result(store.load())
    _result(store.add_room(RoomRecord("lab", "ann", "t", "lab1")))
    _result(store.append_history([HistoryBatch("lab1", 0, _events(1, [EventKind.SAY, EventKind.JOIN, EventKind.ME]))]))
    assert _result(store.expire_history(1_790_000_000.0 + 10 * 86400)) >= 1
    assert _result(store.read_history("lab1", "lab", 10)) == []
    assert _loaded(world).history == {"lab1": HistoryTail(3, 2)}


# -- room authority (issue 14) ------------------------------------------------------

def _two_rooms(world) -> Store:
    """A loaded store with the account ann and her rooms lab (id lab1) and den (id den2)."""
    store = world.reopen()
    _result(store.load())
    _result(store.add_user(UserRecord("ann", "$argon2id$h1", "t")))
    _result(store.add_room(RoomRecord("lab", "ann", "t1", "lab1")))
    _result(store.add_room(RoomRecord("den", "ann", "t2", "den2")))
    return store


BAN = "until=1790003600&by=ann&reason=spam"


def test_room_values_set_overwritten_and_deleted_survive_a_restart(world):
    """The last value of a room, kind and key counts; "" deletes it; a room left without values is not loaded."""
    store = _two_rooms(world)
    _result(store.set_room_values([
        RoomValue("lab1", "topic", "", "Welcome"), RoomValue("lab1", "op", "bob", "1"),
        RoomValue("lab1", "setting", "invite_only", "on"), RoomValue("den2", "ban", "carol", BAN),
        RoomValue(PUBLIC_ROOM_ID, "mute", "dan", "until=0&by=&reason=flood"),
        RoomValue(SERVER, "ban", "203.0.113.0/24", "until=0&by=root&reason="),
    ]))
    _result(store.set_room_values([RoomValue("lab1", "topic", "", '=New, "topic"'), RoomValue("lab1", "op", "bob", ""),
                                   RoomValue("lab1", "op", "eve", "1")]))
    assert _loaded(world).room_values == {
        "lab1": {("topic", ""): '=New, "topic"', ("setting", "invite_only"): "on", ("op", "eve"): "1"},
        "den2": {("ban", "carol"): BAN},
        PUBLIC_ROOM_ID: {("mute", "dan"): "until=0&by=&reason=flood"},
        SERVER: {("ban", "203.0.113.0/24"): "until=0&by=root&reason="},
    }
    _result(store.set_room_values([RoomValue("den2", "ban", "carol", ""), RoomValue("lab1", "ban", "nobody", "")]))
    assert "den2" not in _loaded(world).room_values


def test_deleting_a_room_drops_its_values_and_keeps_the_others(world):
    store = _two_rooms(world)
    _result(store.set_room_values([RoomValue("lab1", "topic", "", "lab's"), RoomValue("lab1", "ban", "bob", BAN),
                                   RoomValue("den2", "topic", "", "den's"), RoomValue(SERVER, "ban", "::1", BAN)]))
    _result(store.delete_room("LAB", LogEvent("room_delete", "ann", "lab")))
    expected = {"den2": {("topic", ""): "den's"}, SERVER: {("ban", "::1"): BAN}}
    assert _loaded(world).room_values == expected
    _result(store.add_room(RoomRecord("lab", "ann", "t3", "lab3")))  # the same name again: a new room, no values
    assert _loaded(world).room_values == expected


def test_deleting_an_account_drops_its_roles_bans_mutes_and_invitations_everywhere(world):
    """Values keyed by the account's name key go (op, ban, mute, invite; in every room and server-wide), no others."""
    store = _two_rooms(world)
    _result(store.add_user(UserRecord("Bob", "$argon2id$h2", "t")))
    _result(store.set_room_values([
        RoomValue("lab1", "op", "bob", "1"), RoomValue("lab1", "mute", "bob", BAN), RoomValue("den2", "ban", "bob", BAN),
        RoomValue("den2", "invite", "bob", "ann"), RoomValue(SERVER, "ban", "bob", BAN),
        RoomValue("lab1", "op", "carol", "1"), RoomValue("lab1", "setting", "bob", "on"),
        RoomValue("lab1", "topic", "", "bob"),
    ]))
    _result(store.delete_user("BOB", LogEvent("account_delete", "Bob")))
    assert _loaded(world).room_values == {
        "lab1": {("op", "carol"): "1", ("setting", "bob"): "on", ("topic", ""): "bob"}}


def test_an_owner_transfer_survives_a_restart(world):
    store = _two_rooms(world)
    _result(store.add_user(UserRecord("bob", "$argon2id$h2", "t")))
    _result(store.set_room_owner("LAB", "bob", LogEvent("owner", "ann", "lab", {"target": "bob"})))
    assert _loaded(world).rooms == [RoomRecord("lab", "bob", "t1", "lab1"), RoomRecord("den", "ann", "t2", "den2")]
    assert world.events(store) == [("owner", "ann", "lab", {"target": "bob"})]
    _result(store.set_room_owner("nowhere", "bob"))
    assert [room.owner for room in _loaded(world).rooms] == ["bob", "ann"]


def test_a_moderation_change_has_its_event_stored_with_it_after_the_queued_ones(world):
    """The LogEvent given with set_room_values is stored by the time it fires, after the events queued before."""
    store = _two_rooms(world)
    _result(store.start())
    _result(store.log_event("join", "bob", "lab", address="::1", port=4000))
    ban = LogEvent("ban", "ann", "lab", {"target": "bob", "until": "2026-09-20T12:00:00Z", "reason": "spam"})
    _result(store.set_room_values([RoomValue("lab1", "ban", "bob", BAN)], ban))
    assert world.events(store) == [("join", "bob", "lab", {"address": "::1", "port": "4000"}),
                                   ("ban", "ann", "lab", {"target": "bob", "until": "2026-09-20T12:00:00Z",
                                                         "reason": "spam"})]
    _result(store.stop())


#: One event of each moderation kind, as chatd.moderation publishes them (target: whom; until: a timed end).
MODERATION = [
    (EventKind.KICK, "bob", 0.0, "flooding"), (EventKind.BAN, "bob", 1_790_003_600.0, "spam, again"),
    (EventKind.UNBAN, "bob", 0.0, ""), (EventKind.MUTE, "=bob", 1_790_000_600.5, ""), (EventKind.UNMUTE, "bob", 0.0, ""),
    (EventKind.TOPIC, "", 0.0, "=Today: \"ops\""), (EventKind.SETTING, "invite_only", 0.0, "on"),
    (EventKind.INVITE, "carol", 0.0, "withdrawn"), (EventKind.OP, "carol", 0.0, ""), (EventKind.DEOP, "carol", 0.0, ""),
    (EventKind.OWNER, "carol", 0.0, ""),
]


def test_moderation_events_read_back_with_their_target_and_until(world):
    store = _two_rooms(world)
    events = [RoomEvent("lab", n + 1, 1_790_000_000.0 + n, "" if kind is EventKind.MUTE else "ann", kind, text,
                        target, until) for n, (kind, target, until, text) in enumerate(MODERATION)]
    events.insert(3, RoomEvent("lab", 99, 1_790_000_002.5, "ann", EventKind.SAY, "hi"))  # a line between them
    events = [event._replace(id=n + 1) for n, event in enumerate(events)]
    _result(store.append_history([HistoryBatch("lab1", 0, events)]))
    assert _result(store.read_history("lab1", "lab", 100)) == events
    assert _result(store.read_history("lab1", "lab", 100, kinds=frozenset({EventKind.BAN, EventKind.MUTE}))) == [
        events[1], events[4]]
    assert _loaded(world).history == {"lab1": HistoryTail(len(events), 1)}
