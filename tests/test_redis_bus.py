"""
The Redis bus (chatd.buses.redis): its entry format, and two buses (two
nodes) on a real private redis-server (tests/redis.py): every event exactly
once in one order on both, ids numbered by the stream, a retried batch
appended once, a Redis restart with lines waiting, a trimmed stream caught up.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task

from chatd.core.events import EventKind, RoomEvent

pytest.importorskip("txredisapi")

from chatd.buses.redis import RedisBus, decode, encode, parse_url  # noqa: E402  (after the skip: an extra)

#: Seconds a test waits for the bus at most.
WAIT = 15.0


def _event(room: str, guess: int, sender: str, text: str, kind: EventKind = EventKind.SAY) -> RoomEvent:
    return RoomEvent(room, guess, 1764465000.25, sender, kind, text)


def test_a_batch_round_trips_through_the_entry_format_with_ids_from_the_stream():
    events = [_event("lab", 7, "ann", "hi, «ünïcode» \"quoted\""), _event("public", 3, "bob", "x"),
              _event("lab", 8, "ann", "bye", EventKind.ME),
              RoomEvent("lab", 9, 1.5, "ann", EventKind.BAN, "spam", "eve", 1764466000.0)]
    payload, rooms, counts, floors = encode(events)
    assert (rooms, counts, floors) == (["lab", "public"], [3, 1], [6, 2])
    decoded = decode(payload, "41,12")
    assert [(room, first) for room, first, _ in decoded] == [("lab", 41), ("public", 12)]
    lab = decoded[0][2]
    assert [event.id for event in lab] == [41, 42, 43]
    assert lab == [events[0]._replace(id=41), events[2]._replace(id=42), events[3]._replace(id=43)]
    assert lab[1].kind is EventKind.ME
    assert decoded[1][2] == [events[1]._replace(id=12)]


def test_a_malformed_entry_is_refused_with_value_error():
    with pytest.raises(ValueError):
        decode('[["lab", [[1.0, "ann", "say", "x", "", 0.0]]]]', "1,2")
    with pytest.raises(ValueError):
        decode("not json", "1")


def test_bus_urls():
    assert parse_url("redis://127.0.0.1:6380/2") == ("127.0.0.1", 6380, 2)
    assert parse_url("redis://cache.example.org") == ("cache.example.org", 6379, 0)
    for bad in ("http://x/0", "redis://x/db", "redis:///0"):
        with pytest.raises(ValueError):
            parse_url(bad)


class Node:
    """A bus as a node uses it, with what it delivered and the room changes it was told."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        from twisted.internet import reactor

        self.bus = RedisBus(url, reactor, "test", **kwargs)
        self.got: list[RoomEvent] = []
        self.changes: list[tuple[Any, ...]] = []
        self.missed_ranges: list[tuple[str, int, int]] = []
        #: Who is in which room on this node (its heartbeats say so); the nodes it was told are gone.
        self.here: dict[str, list[str]] = {}
        self.gone: list[tuple[str, dict[str, list[str]]]] = []
        #: Other nodes' events this node was given to store (a node gone, or read back at its start).
        self.adopted: list[tuple[str, list[RoomEvent]]] = []
        #: What another node said it published leaves for while it took this one for gone.
        self.rejoined: list[dict[str, list[str]]] = []
        self.bus.subscribe(self.got.append)
        #: Whether this node records each delivered event in history (asked as the fan-out does, in its turn).
        self.mine: list[bool] = []
        self.bus.subscribe(lambda event: self.mine.append(self.bus.mine(event)))
        self.bus.listener = self

    def room_created(self, *record: str) -> None:
        self.changes.append(("create", *record))

    def room_deleted(self, name: str, by: str) -> None:
        self.changes.append(("delete", name, by))

    def logged_in(self, name: str, here: bool) -> None:
        self.changes.append(("login", name, here))

    def room_values(self, room: str, values: list[list[str]]) -> None:
        self.changes.append(("room_values", room, values))

    def kicked(self, room: str, by: str, target: str, reason: str) -> None:
        self.changes.append(("kick", room, by, target, reason))

    def known(self) -> dict[str, int]:
        return {}

    def members(self) -> dict[str, list[str]]:
        return self.here

    def online(self) -> dict[str, list[Any]]:
        return {name: [0, ""] for names in self.here.values() for name in names}

    def node_gone(self, node: str, rooms: dict[str, list[str]]) -> None:
        self.gone.append((node, rooms))

    def stored(self) -> str | None:
        return None

    def unstored(self, node: str, events: list[RoomEvent]) -> None:
        self.adopted.append((node, events))

    def taken_for_gone(self, rooms: dict[str, list[str]]) -> None:
        self.rejoined.append(rooms)

    def missed(self, room: str, first: int, last: int) -> defer.Deferred[None]:
        self.missed_ranges.append((room, first, last))
        return defer.succeed(None)

    def say(self, room: str, text: str, sender: str = "ann") -> None:
        """Publish as the factory does: its own guess of the next id (the room's last id delivered + 1)."""
        last = max((event.id for event in self.got if event.room == room), default=0)
        self.bus.publish(_event(room, last + 1, sender, text))


@defer.inlineCallbacks
def _until(condition: Any, what: str) -> Any:
    from twisted.internet import reactor

    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        yield task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


@defer.inlineCallbacks
def _started(*nodes: Node) -> Any:
    yield defer.gatherResults([node.bus.start() for node in nodes])


@defer.inlineCallbacks
def _stopped(*nodes: Node) -> Any:
    yield defer.gatherResults([node.bus.stop() for node in nodes])


@pytest_twisted.inlineCallbacks
def test_two_nodes_get_every_event_once_in_one_order_numbered_by_the_stream(redis_url):
    from twisted.internet import reactor

    a, b = Node(redis_url), Node(redis_url)
    yield _started(a, b)
    try:
        for turn in range(20):  # interleaved turns of both nodes, several lines a turn, two rooms
            for i in range(3):
                a.say("lab", f"a{turn}.{i}")
            b.say("lab", f"b{turn}")
            b.say("public", f"p{turn}", "bob")
            yield task.deferLater(reactor, 0, lambda: None)
        yield _until(lambda: len(a.got) == len(b.got) == 100, "100 events on both nodes")
        assert a.got == b.got  # the same events, ids and order
        lab = [event for event in a.got if event.room == "lab"]
        assert [event.id for event in lab] == list(range(1, 81))
        assert sorted(event.text for event in lab) == sorted([f"a{t}.{i}" for t in range(20) for i in range(3)]
                                                             + [f"b{t}" for t in range(20)])
        assert [event.id for event in a.got if event.room == "public"] == list(range(1, 21))
        # At most one entry per node per turn (turns that waited for a write share the next), never one per line.
        assert 1 <= a.bus.appended <= 20 and 1 <= b.bus.appended <= 20
        # History: each node records exactly the events it published.
        assert [e.text for e, mine in zip(a.got, a.mine) if mine] == [e.text for e in lab if e.text[0] == "a"]
        assert [e.text for e, mine in zip(b.got, b.mine) if mine] == [e.text for e in b.got if e.text[0] != "a"]
        assert not a.bus.mine(a.got[0])  # asked once: recorded
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_room_changes_travel_in_order_with_the_events(redis_url):
    a, b = Node(redis_url), Node(redis_url)
    yield _started(a, b)
    try:
        a.bus.share(["create", "lab", "ann", "2026-11-30T00:00:00Z", "abc123"])
        a.say("lab", "first")
        a.bus.share(["delete", "lab", "ann"])
        a.bus.share(["login", "ann"])
        a.bus.share(["room_values", "lab", [["ban", "bob", "until=0&by=ann&reason="], ["topic", "", "hi"]]])
        a.bus.share(["kick", "lab", "ann", "cid", "enough"])
        yield _until(lambda: len(b.changes) == 5 and b.got and len(a.changes) == 3, "the changes")
        assert b.changes == [("create", "lab", "ann", "2026-11-30T00:00:00Z", "abc123"), ("delete", "lab", "ann"),
                             ("login", "ann", False),
                             ("room_values", "lab", [["ban", "bob", "until=0&by=ann&reason="], ["topic", "", "hi"]]),
                             ("kick", "lab", "ann", "cid", "enough")]
        assert a.changes[2] == ("login", "ann", True)  # (the node it happened on is told it came back)
        assert [event.text for event in b.got] == ["first"]
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_a_retried_batch_is_appended_once(redis_url):
    a, b = Node(redis_url), Node(redis_url)
    yield _started(a, b)
    try:
        connection = yield a.bus._writer.whenConnected()
        events = [_event("lab", 1, "ann", "once")]
        a.bus._seq += 1  # (a batch number of its own)
        first = yield a.bus._append(connection, a.bus._seq, events, None)
        again = yield a.bus._append(connection, a.bus._seq, events, None)  # as after a connection lost before the reply
        assert first and again is None
        b.say("lab", "next")
        yield _until(lambda: len(b.got) == 2, "both lines")
        assert [(event.id, event.text) for event in b.got] == [(1, "once"), (2, "next")]
    finally:
        yield _stopped(a, b)


@defer.inlineCallbacks
def _entries(node: Node) -> Any:
    """The stream's entries as [(events' texts, change)], oldest first."""
    connection = yield node.bus._writer.whenConnected()
    entries = yield connection.execute_command("XRANGE", node.bus.stream, "-", "+")
    found = []
    for _, flat in entries:
        fields = {str(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        texts = [event.text for _, _, events in decode(fields["e"], fields["b"]) for event in events]
        change = json.loads(fields["c"]) if fields["c"] else None
        found.append((texts, None if change and change[0] == "alive" else change))  # (heartbeats left out)
    return [entry for entry in found if entry != ([], None)]


@pytest_twisted.inlineCallbacks
def test_batches_queued_while_a_write_is_in_flight_go_out_as_one_entry_in_order(redis_url):
    """
    A's first turn is being appended (one entry in flight); three more turns' batches queue meanwhile: they go
    out as one entry, not three, and arrive on B in order with consecutive ids. A change queued among them stays
    between the events before and after it.
    """
    a, b = Node(redis_url), Node(redis_url)
    yield _started(a, b)
    try:
        yield _until(lambda: a.bus._writing is None, "A's writer idle (its first heartbeat appended)")
        a.say("lab", "first")
        a.bus._close_turn()  # (a turn ends: its batch is written at once)
        assert a.bus._writing is not None
        for text in ("second", "third", "fourth"):  # three turns while the first write waits for Redis
            a.say("lab", text)
            a.bus._close_turn()
        yield _until(lambda: len(b.got) == 4, "the four lines")
        assert [(event.id, event.text) for event in b.got] == [(1, "first"), (2, "second"), (3, "third"),
                                                                (4, "fourth")]
        assert a.bus.appended == 2
        yield _until(lambda: a.bus._writing is None, "A's writer idle")
        a.say("lab", "fifth")
        a.bus._close_turn()
        a.say("lab", "sixth")
        a.bus._close_turn()
        a.bus.share(["login", "ann"])
        a.say("lab", "seventh")
        a.bus._close_turn()
        yield _until(lambda: len(b.got) == 7 and b.changes, "the next three lines and the login")
        entries = yield _entries(a)
        assert entries == [(["first"], None), (["second", "third", "fourth"], None), (["fifth"], None),
                           (["sixth"], None), (["seventh"], ["login", "ann"])]
        assert [event.id for event in b.got] == list(range(1, 8)) and a.got == b.got
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_an_entry_whose_reply_was_lost_is_retried_as_it_was_and_appended_once(redis_url):
    """
    A's write reaches Redis but its reply is lost (the connection went); lines said meanwhile are not merged
    into the retry (which Redis refuses as seen), they follow in the next entry: each line once, in order.
    """
    a, b = Node(redis_url), Node(redis_url)
    yield _started(a, b)
    sent: list[tuple[int, list[str]]] = []
    append = a.bus._append

    def lossy(connection: Any, seq: int, events: list[RoomEvent], change: Any) -> defer.Deferred[Any]:
        sent.append((seq, [event.text for event in events]))
        appended = append(connection, seq, events, change)
        if len(sent) == 1:
            def lost(_: Any) -> None:
                a.say("lab", "meanwhile")
                a.bus._close_turn()
                raise ConnectionError("the reply was lost")
            appended.addCallback(lost)
        return appended

    a.bus._append = lossy  # type: ignore[method-assign]
    try:
        a.say("lab", "once")
        a.say("lab", "twice")
        yield _until(lambda: len(b.got) == 3, "the three lines")
        assert [(event.id, event.text) for event in b.got] == [(1, "once"), (2, "twice"), (3, "meanwhile")]
        assert [texts for _, texts in sent] == [["once", "twice"], ["once", "twice"], ["meanwhile"]]
        assert sent[0][0] == sent[1][0] < sent[2][0]
        entries = yield _entries(a)
        assert entries == [(["once", "twice"], None), (["meanwhile"], None)]
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_lines_said_while_redis_restarts_arrive_once_and_ids_go_on(redis_server):
    from twisted.internet import reactor

    a, b = Node(redis_server.url), Node(redis_server.url)
    yield _started(a, b)
    try:
        for i in range(5):
            a.say("lab", f"before{i}")
        yield _until(lambda: len(a.got) == len(b.got) == 5, "the lines before")
        redis_server.stop()
        a.say("lab", "during-a")  # Redis is away: these wait on their nodes
        b.say("lab", "during-b")
        yield task.deferLater(reactor, 0.3, lambda: None)
        redis_server.start()  # empty: nothing was saved
        yield _until(lambda: len(a.got) == len(b.got) == 7, "the lines said while Redis was away")
        a.say("lab", "after")
        yield _until(lambda: len(a.got) == len(b.got) == 8, "the line after")
        assert a.got == b.got
        assert [event.id for event in a.got] == list(range(1, 9))  # the counters went on from the nodes' ids
        assert sorted(event.text for event in a.got[5:7]) == ["during-a", "during-b"]
        assert a.got[7].text == "after"
        assert not a.missed_ranges and not b.missed_ranges
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_a_node_behind_a_trimmed_stream_catches_the_room_up(redis_url):
    """B stops reading; A's lines outgrow MAXLEN; B resumes from its last id and asks for the missed range."""
    from twisted.internet import reactor

    a, b = Node(redis_url, maxlen=10), Node(redis_url, maxlen=10)
    yield _started(a, b)
    try:
        a.say("lab", "seen")
        yield _until(lambda: len(b.got) == 1, "the first line")
        b.bus._running = False  # B stops reading (its current XREAD returns within READ_BLOCK_MS)
        yield b.bus._reading
        for turn in range(300):
            a.say("lab", f"line{turn}")
            yield task.deferLater(reactor, 0, lambda: None)
            if a.bus._writing is not None:  # (one entry per line: nothing waits to be merged)
                yield a.bus._writing
        yield _until(lambda: len(a.got) == 301, "A's lines")
        connection = yield a.bus._writer.whenConnected()
        yield connection.execute_command("XTRIM", a.bus.stream, "MAXLEN", 10)
        b.bus._running = True
        b.bus._reading = b.bus._read_all()
        yield _until(lambda: b.got and b.got[-1].id == 301, "B's catch-up")
        assert len(b.missed_ranges) == 1
        room, first, last = b.missed_ranges[0]
        assert room == "lab" and first == 2 and last == b.got[1].id - 1 > 200
        assert [event.id for event in b.got[1:]] == list(range(last + 1, 302))
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_a_stopped_or_silent_node_has_its_users_leave_announced_once(redis_url):
    """
    C's heartbeat says ann and cid are in lab there; cid leaves, eve joins (followed from the events). C stops:
    one survivor (the first by name) is told who was there; a silent node is taken for gone after DEAD_AFTER.
    """
    from chatd.buses import redis as module

    a, b, c = Node(redis_url), Node(redis_url), Node(redis_url)
    c.here = {"lab": ["ann", "cid"], "public": ["dan"]}
    a.here, b.here = {"lab": ["amy"]}, {"lab": ["dan"]}
    yield _started(a, b, c)
    try:
        yield _until(lambda: c.bus.node in a.bus._rooms_of and c.bus.node in b.bus._rooms_of, "C's heartbeat")
        c.bus.publish(RoomEvent("lab", 1, 1.0, "cid", EventKind.LEAVE))
        c.bus.publish(RoomEvent("lab", 2, 1.0, "eve", EventKind.JOIN))
        c.bus.publish(RoomEvent("public", 1, 1.0, "dan", EventKind.LEAVE))
        yield _until(lambda: len(a.got) == len(b.got) == 3, "C's events")
        # Who is in lab elsewhere, as A knows it: C's beat followed by its events (and B's dan once B beat).
        assert set(a.bus.elsewhere("lab")) - {"dan"} == {"ann", "eve"}
        assert a.bus.elsewhere("nowhere") == []
        # Who is logged in on C (its heartbeat), with the rooms each is in there.
        ann = a.bus.online_elsewhere()["ann"]
        assert ann.rooms == ("lab",) and ann.node == c.bus.node
        yield c.bus.stop()
        yield _until(lambda: a.gone or b.gone, "C gone")
        assert "ann" not in a.bus.online_elsewhere() and "ann" not in b.bus.online_elsewhere()
        first, other = (a, b) if a.bus.node < b.bus.node else (b, a)
        assert first.gone == [(c.bus.node, {"lab": ["ann", "eve"]})] and other.gone == []
        # A node that stops beating (killed) is taken for gone after DEAD_AFTER seconds.
        first.gone.clear()
        other.bus._beats.stop()
        yield _until(lambda: first.gone, "the silent node taken for gone")
        assert first.gone == [(other.bus.node, other.here)]
    finally:
        yield _stopped(a, b)
    assert module.DEAD_AFTER <= 5


def _pause_redis(url: str, ms: int) -> None:
    """``CLIENT PAUSE ms ALL`` on a connection of its own: every client's commands wait, none fails."""
    import socket

    with socket.create_connection(parse_url(url)[:2], timeout=5) as connection:
        connection.sendall(b"CLIENT PAUSE %d ALL\r\n" % ms)
        assert connection.recv(64).startswith(b"+OK")


@pytest_twisted.inlineCallbacks
def test_a_redis_outage_longer_than_dead_after_takes_no_node_for_gone(redis_url):
    """
    Redis paused past DEAD_AFTER (a stop and start alike): no node reads anything, its own heartbeats included,
    so none takes another for gone; both know the other's members all along and after. A node silent while
    the others read their own heartbeats is still taken for gone (above).
    """
    from twisted.internet import reactor

    from chatd.buses import redis as module

    a, b = Node(redis_url), Node(redis_url)
    a.here, b.here = {"lab": ["amy"]}, {"lab": ["bob"]}
    yield _started(a, b)
    try:
        yield _until(lambda: b.bus.node in a.bus._rooms_of and a.bus.node in b.bus._rooms_of, "both heartbeats")
        _pause_redis(redis_url, int((module.DEAD_AFTER + 1.5) * 1000))
        yield task.deferLater(reactor, module.DEAD_AFTER + 3.5, lambda: None)  # the pause, then a beat or two
        a.say("lab", "after")
        yield _until(lambda: len(a.got) == len(b.got) == 1, "the line after the pause")
        yield task.deferLater(reactor, module.DEAD_AFTER - 1, lambda: None)  # (a late judgement would be made now)
        assert a.gone == b.gone == []
        assert a.bus.elsewhere("lab") == ["bob"] and b.bus.elsewhere("lab") == ["amy"]
        assert "bob" in a.bus.online_elsewhere() and "amy" in b.bus.online_elsewhere()
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_a_node_cut_off_and_taken_for_gone_is_told_once_back_so_its_users_join_again(redis_url):
    """
    B alone loses Redis (its connections stopped) past DEAD_AFTER: A, reading its own heartbeats, takes it for
    gone; B, reading nothing, takes nobody. Once B is back it reads that A published its users' leaves (the
    state has them join again: chatd.nodes ``Nodes.taken_for_gone``) and A knows B's members again.
    """
    a, b = Node(redis_url), Node(redis_url)
    a.here, b.here = {"lab": ["amy"]}, {"lab": ["bob"], "public": ["bob", "bea"]}
    yield _started(a, b)
    try:
        yield _until(lambda: b.bus.node in a.bus._rooms_of and a.bus.node in b.bus._rooms_of, "both heartbeats")
        yield defer.gatherResults([b.bus._reader.stopService(), b.bus._writer.stopService()])
        yield _until(lambda: a.gone, "B taken for gone")
        assert a.gone == [(b.bus.node, b.here)] and "bob" not in a.bus.online_elsewhere()
        b.bus._reader.startService()
        b.bus._writer.startService()
        yield _until(lambda: b.rejoined, "B told it was taken for gone")
        assert b.rejoined == [b.here] and b.gone == []
        yield _until(lambda: a.bus.elsewhere("lab") == ["bob"] and "bob" in a.bus.online_elsewhere(),
                     "B's members and users known on A again")
        assert a.rejoined == []
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_a_node_starts_reading_without_a_failed_first_read(redis_url):
    # ClientService fires whenConnected from inside its state machine, which refuses another whenConnected
    # from there: a read loop started in that callback failed its first XREAD at every start (a warning in the
    # log and 0.2 s before the node delivered anything).
    from twisted.logger import globalLogPublisher

    warnings: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "Redis" in str(event.get("log_format", "")) and event.get("log_level") is not None \
                and event["log_level"].name in ("warn", "error", "critical"):
            warnings.append(str(event.get("log_format")))

    globalLogPublisher.addObserver(observe)
    a, b = Node(redis_url), Node(redis_url)
    try:
        for node in (a, b):
            node.bus.position_now()  # as chatd starts a node (BusService): then start waits for its connection
        yield _started(a, b)
        a.say("lab", "hello")
        yield _until(lambda: len(b.got) == 1, "the line on b")
    finally:
        globalLogPublisher.removeObserver(observe)
        yield _stopped(a, b)
    assert warnings == []


@pytest_twisted.inlineCallbacks
def test_caught_up_fires_once_what_the_stream_held_at_the_start_is_delivered(redis_url):
    from twisted.internet import reactor

    a, b = Node(redis_url), Node(redis_url)
    b.bus.position_now()  # as chatd starts b: its position, then its store's load, meanwhile a says things
    yield _started(a)
    try:
        a.bus.share(["create", "lab", "ann", "2026-11-30T00:00:00Z", "abc123"])
        for n in range(600):  # more than one XREAD's worth of entries (READ_COUNT)
            a.say("lab", f"line {n}")
            yield task.deferLater(reactor, 0, lambda: None)
        yield _until(lambda: len(a.got) == 600, "a's lines")
        seen_at_catch_up: list[int] = []
        caught = b.bus.caught_up()
        caught.addCallback(lambda _: seen_at_catch_up.append(len(b.got)))
        assert not caught.called
        yield b.bus.start()
        yield caught
        assert seen_at_catch_up == [600] and b.changes[0][:2] == ("create", "lab")
        assert b.bus.caught_up().called  # from then on at once
    finally:
        yield _stopped(a, b)


@pytest_twisted.inlineCallbacks
def test_the_bus_connection_answers_as_txredisapi_does_with_commands_packed_and_replies_decoded_by_hiredis(redis_url):
    """The bus's protocol (chatd.buses.redis._protocol_class): the same replies and errors as txredisapi's own."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from txredisapi import ConnectionError as Lost
    from txredisapi import RedisProtocol, ResponseError

    from chatd.buses.redis import _protocol_class

    port = parse_url(redis_url)[1]
    commands: list[tuple[Any, ...]] = [
        ("SET", "k:«ü»", "välue \"q\"\r\n"), ("GET", "k:«ü»"), ("GET", "missing"), ("INCR", "n"),
        ("INCRBY", "n", 41),
        ("XADD", "s", "1-1", "e", '[["lab",[]]]', "s", 7), ("XRANGE", "s", "-", "+"), ("EXISTS", "k:«ü»", "n"),
        ("DEL", "k:«ü»", "n", "s"), ("XREAD", "COUNT", 5, "STREAMS", "s", "0-0")]
    answers = []
    for protocol in (RedisProtocol, _protocol_class()):
        connection = protocol(charset="utf-8", convertNumbers=False)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), connection)
        yield connection.whenConnected()
        try:
            replies = []
            for command in commands:
                replies.append((yield connection.execute_command(*command)))
            with pytest.raises(ResponseError, match="NOSCRIPT"):
                yield connection.execute_command("EVALSHA", "0" * 40, 0)
            pending = connection.execute_command("BLPOP", "nothing", 0)  # waits: failed when the connection goes
            connection.transport.loseConnection()
            with pytest.raises(Lost):
                yield pending
            answers.append(replies)
        finally:
            connection.transport.loseConnection()
    assert answers[1] == answers[0]
    assert answers[1][1] == "välue \"q\"\r\n" and answers[1][2] is None and answers[1][4] == 42
    assert answers[1][6] == [["1-1", ["e", '[["lab",[]]]', "s", "7"]]]


@pytest_twisted.inlineCallbacks
def test_a_script_is_loaded_once_and_again_after_redis_forgot_it(redis_url):
    """chatd.buses.redis.Script: EVALSHA of the loaded SHA1; after SCRIPT FLUSH (a restarted Redis) loaded again."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from chatd.buses.redis import Script, _protocol_class

    connection = _protocol_class()(charset="utf-8", convertNumbers=False)
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", parse_url(redis_url)[1]), connection)
    yield connection.whenConnected()
    try:
        script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        assert (yield script.run(connection, ["script-test"], [2])) == 2
        sha = script.sha
        assert sha and len(sha) == 40
        yield connection.execute_command("SCRIPT", "FLUSH")
        assert (yield script.run(connection, ["script-test"], [3])) == 5  # NOSCRIPT, loaded again, run once
        assert script.sha == sha
        yield connection.execute_command("DEL", "script-test")
    finally:
        connection.transport.loseConnection()
