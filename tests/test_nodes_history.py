"""
History with several nodes (issue 17): nothing acknowledged is lost when the
node that published events dies before its group commit. Two factories on a
real private redis-server (tests/redis.py) and one shared store (as
PostgreSQL is): the survivor that announces the dead node's leaves commits
its events read after its last heartbeat's stored position, once.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from chatd.core.events import EventKind
from chatd.factory import ChatFactory
from chatd.nodes import Nodes
from chatd.passwords import Passwords
from chatd.protocol import ChatProtocol
from chatd.settings import Settings
from chatd.stores.memory import MemoryStore
from helpers import CHEAP_HASH, run_now

pytest.importorskip("txredisapi")

from chatd.buses.redis import RedisBus  # noqa: E402  (after the skip: an extra)
from test_redis_bus import _until  # noqa: E402

@defer.inlineCallbacks
def _node(url: str, store: MemoryStore, name: str) -> Any:
    """A factory on the bus at ``url`` and the shared ``store``, wired as chatd.service does; fires with it."""
    from twisted.internet import reactor

    bus = RedisBus(url, reactor, name)
    factory = ChatFactory(store, Passwords(run=run_now, **CHEAP_HASH), Settings(), reactor, ChatProtocol, bus=bus)
    bus.listener = Nodes(factory)
    factory.history.mine, factory.history.position = bus.mine, bus.recorded
    loaded = yield store.load()
    factory.restore(loaded)
    yield bus.start()
    return factory


@defer.inlineCallbacks
def _two_nodes(url: str) -> Any:
    """Nodes A and C on one shared store (as PostgreSQL is); A commits its history: fires with (store, a, c)."""
    store = MemoryStore()
    store.start()
    a = yield _node(url, store, "a")
    c = yield _node(url, store, "c")
    a.history.start()
    return store, a, c


def _killed(bus: RedisBus) -> defer.Deferred[Any]:
    """kill -9: the bus stops beating and reading, says nothing (no ``gone``), appends nothing more."""
    bus._beats.stop()
    bus._running = False
    return defer.gatherResults([bus._reader.stopService(), bus._writer.stopService()], consumeErrors=True)


@pytest_twisted.inlineCallbacks
def test_a_publisher_that_dies_before_its_commit_has_its_events_stored_by_the_survivor_once(redis_url):
    store, a, c = yield _two_nodes(redis_url)  # (C never commits: it dies first)
    try:
        lab_a, lab_c = a._by_name["public"], c._by_name["public"]
        yield _until(lambda: c.bus.node in a.bus._nodes, "C's heartbeat read on A")
        for i in range(5):
            a.publish(lab_a, "amy", EventKind.SAY, f"a{i}")
            c.publish(lab_c, "cid", EventKind.SAY, f"c{i}")
            yield task.deferLater(a.reactor, 0, lambda: None)
        yield _until(lambda: lab_a.last_id == lab_c.last_id == 10, "ten lines delivered on both nodes")
        yield _killed(c.bus)
        # A commits its own lines; C's are in the store only once A took C for gone (DEAD_AFTER) and stored them.
        yield _until(lambda: sum(e.text.startswith("c") for e in store.history.get(lab_a.history.room_id, ())) == 5,
                     "C's lines stored by the survivor")
        yield a.history.commit()
        stored = store.history[lab_a.history.room_id]
        said = [event for event in stored if event.kind is EventKind.SAY]
        assert sorted(event.text for event in said) == sorted([f"a{i}" for i in range(5)] + [f"c{i}" for i in range(5)])
        assert [event.id for event in said] == list(range(1, 11))  # every event once, in the stream's order
    finally:
        yield a.history.stop()
        yield a.bus.stop()


@pytest_twisted.inlineCallbacks
def test_a_nodes_heartbeat_says_what_it_stored_and_the_others_forget_those_events(redis_url):
    store, a, c = yield _two_nodes(redis_url)
    c.history.start()
    try:
        lab_c = c._by_name["public"]
        for i in range(3):
            c.publish(lab_c, "cid", EventKind.SAY, f"c{i}")
        yield _until(lambda: a._by_name["public"].last_id == 3, "C's lines on A")
        assert a.bus._unstored.get(c.bus.node)  # kept until C says they are stored
        yield _until(lambda: not a.bus._unstored.get(c.bus.node), "C's heartbeat saying its lines are stored")
        assert [event.text for event in store.history[lab_c.history.room_id]] == ["c0", "c1", "c2"]
    finally:
        yield a.history.stop()
        yield c.history.stop()
        yield defer.gatherResults([a.bus.stop(), c.bus.stop()])


@pytest_twisted.inlineCallbacks
def test_a_node_started_after_every_node_died_stores_what_they_had_not(redis_url):
    """C says five lines and dies before its commit, A too (every node dead); A2 starts: the lines are stored."""
    store = MemoryStore()
    store.start()
    a = yield _node(redis_url, store, "a")
    c = yield _node(redis_url, store, "c")
    lab_c = c._by_name["public"]
    yield _until(lambda: c.bus.node in a.bus._nodes, "C's heartbeat read on A")
    for i in range(5):
        c.publish(lab_c, "cid", EventKind.SAY, f"c{i}")
    yield _until(lambda: a._by_name["public"].last_id == 5, "C's lines on A")
    yield _killed(c.bus)
    yield _killed(a.bus)
    assert not store.history.get(lab_c.history.room_id)
    again = yield _node(redis_url, store, "a2")
    try:
        yield again.history.commit()
        assert [event.text for event in store.history[lab_c.history.room_id]] == [f"c{i}" for i in range(5)]
    finally:
        yield again.bus.stop()


def test_the_stored_position_advances_at_each_commit_under_steady_traffic_and_not_past_a_failed_one():
    """Lines keep coming while each commit is written: the position a commit started at is stored once it is."""
    from chatd.core.events import RoomEvent
    from chatd.history import History
    from chatd.store import StoreError
    from helpers import Clock

    writes: list[defer.Deferred[None]] = []

    class SlowStore(MemoryStore):
        def append_history(self, batches: Any) -> defer.Deferred[None]:
            writes.append(defer.Deferred())
            return writes[-1]

    history = History(SlowStore(), Clock(), Settings())
    position = ["1-0"]
    history.position = lambda: position[0]
    room = history.room("r1")
    assert history.stored_through() is None
    room.record([RoomEvent("lab", 1, 1.0, "ann", EventKind.SAY, "one")])
    history.commit()  # (started at 1-0)
    position[0] = "2-0"
    room.record([RoomEvent("lab", 2, 1.0, "ann", EventKind.SAY, "two")])  # while the first is written
    writes[0].callback(None)
    assert history.stored_through() == "1-0"
    history.commit()  # (started at 2-0; fails: its events wait again)
    position[0] = "3-0"
    writes[1].errback(StoreError("down"))
    assert history.stored_through() == "1-0"
    history.commit()  # (started at 3-0, with the failed commit's events)
    writes[2].callback(None)
    assert history.stored_through() == "3-0"
    history.commit()  # nothing waits: everything recorded is stored
    assert history.stored_through() == "3-0" and len(writes) == 3
