"""
Sessions and room output (issue 11, kinds 2, 3, 4, 11 and the log.csv rows of
sessions): in memory, StringTransport and a Clock, no sleeps.

- A replaced or kicked session leaves its room, the online list and its
  connection slots at once; its connection is aborted after --close-grace.
- Each connection's output is one stream in the order the server handled
  things, while room lines are still batched per turn.
- One member whose delivery fails never silences a room, nor later rooms.
- A room deleted under a member never turns its chat lines into menu choices.
"""

from __future__ import annotations


import pytest
from twisted.logger import globalLogPublisher

from chatd.broadcast import Batcher, Fanout
from chatd.core.events import EventKind, RoomEvent
from chatd.settings import Settings
from helpers import data_rows, Client, make_factory


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock, tmp_path


def _in_room(factory, clock, name, room="public", tagged=False) -> Client:
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.send(f"join {room}")
    c.output()
    return c


#: The detail of a row about a StringTransport connection (its default peer address), docs/OPERATIONS.md.
PEER = "address=192.168.1.1&port=54321"


def _rows(factory, data_dir):
    factory.store.flush_events()
    return [tuple(row[1:5]) for row in data_rows(data_dir / "log.csv")]


def _in_order(text: str, *parts: str) -> None:
    """Each of ``parts`` is in ``text``, in this order."""
    positions = [text.find(part) for part in parts]
    assert -1 not in positions and positions == sorted(positions), (parts, text)


# -- kind 2: a replaced or kicked session ends at once --------------------------------


def test_replaced_session_leaves_room_and_online_list_at_once(world):
    """
    alice sits in public and stops reading; she logs in again from a new
    connection and joins: bob's /who never shows `alice, bob, alice`, the old
    connection gets nothing after being replaced, and no false `* alice left`
    comes later when it finally closes.
    """
    factory, clock, _ = world
    old = _in_room(factory, clock, "alice")
    bob = _in_room(factory, clock, "bob")
    bob.send(*[f"line {i} " + "y" * 1000 for i in range(20)])
    old.output()
    bob.output()
    new = Client(factory, clock)
    assert "Logged in as alice." in new.login("alice")
    assert old.transport.disconnecting and not old.transport.disconnected
    assert old.output().endswith("You logged in from another connection.\r\n")
    assert factory.online["alice"] is new.protocol
    assert factory.rooms["public"].member_names() == ["bob"]
    assert "* alice left public" in bob.output()
    new.send("join public")
    bob.send("/who", "after the new login")
    seen = bob.output()
    assert "In public (2): bob, alice" in seen
    assert "alice: " not in old.output() and old.output() == ""
    clock.advance(factory.settings.close_grace)
    assert old.transport.disconnected  # aborted: it never took its output
    old.protocol.connectionLost(None)
    bob.send("/who")
    seen = bob.output()
    assert "left" not in seen and "In public (2): bob, alice" in seen
    assert factory.online["alice"] is new.protocol


def test_replaced_login_is_one_event_in_the_log(world):
    factory, clock, data = world
    old = _in_room(factory, clock, "alice")
    Client(factory, clock).login("alice")
    old.protocol.connectionLost(None)
    rows = [row for row in _rows(factory, data) if row[1] == "alice"]
    assert rows[-2:] == [("replaced", "alice", "public", PEER), ("login", "alice", "", PEER)]
    assert not [row for row in rows if row[0] in ("disconnect", "leave")]


def test_disconnect_from_a_room_is_one_row(world):
    factory, clock, data = world
    ann = _in_room(factory, clock, "ann")
    ann.disconnect()
    assert [row for row in _rows(factory, data) if row[0] in ("disconnect", "leave")] == [
        ("disconnect", "ann", "public", PEER)
    ]


def test_kicked_connection_frees_its_slot_at_once_and_is_aborted_after_the_grace(tmp_path):
    """
    --max-connections 2 --login-timeout 5: a connection that never reads
    (its output stays queued) is kicked at 5 s and no longer holds its slot,
    so the next client gets in; after --close-grace it is aborted.
    """
    factory, clock = make_factory(str(tmp_path), Settings(max_connections=2, login_timeout=5, close_grace=3))
    stuck = Client(factory, clock)
    member = Client(factory, clock)
    member.register("mia")
    stuck.output()
    for _ in range(100):
        clock.advance(0.125)
        if stuck.transport.disconnecting:
            break
    assert 5 <= clock.seconds() - 1_790_000_000 <= 6
    assert stuck.transport.disconnecting and not stuck.transport.disconnected
    assert "you did not log in within 5 seconds" in stuck.output()
    assert stuck.protocol not in factory.limits.all and stuck.protocol not in factory.connections
    assert sum(factory.limits.per_address.values()) == 1  # mia's connection only
    newcomer = Client(factory, clock)
    greeting = newcomer.output()
    assert "server is full" not in greeting and "Welcome to chatd" in greeting
    clock.advance(2.9)
    assert not stuck.transport.disconnected
    clock.advance(0.2)
    assert stuck.transport.disconnected
    stuck.protocol.connectionLost(None)  # the abort completes: nothing is counted twice
    assert len(factory.limits.all) == 2 and sum(factory.limits.per_address.values()) == 2


def test_a_close_that_completes_cancels_the_abort(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.send("quit")
    assert c.transport.disconnecting
    c.protocol.connectionLost(None)
    assert not clock.getDelayedCalls() or all(
        call.func != c.protocol._abort_late for call in clock.getDelayedCalls())


def test_connection_refused_when_full_is_aborted_after_the_grace(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_connections=1, close_grace=2))
    Client(factory, clock)
    refused = Client(factory, clock)
    assert "server is full" in refused.output() and refused.transport.disconnecting
    clock.advance(2)
    assert refused.transport.disconnected


# -- kind 3: one ordered stream per connection, lines still batched ---------------------


def test_room_line_then_private_message_in_one_write(world):
    factory, clock, _ = world
    alice = _in_room(factory, clock, "alice")
    bob = _in_room(factory, clock, "bob")
    alice.output()
    bob.send(b"one-in-room\r\n/msg alice two-private\r\n")
    _in_order(alice.output(), "bob: one-in-room", "*bob* two-private")
    _in_order(bob.output(), "bob: one-in-room", "-> *alice* two-private")


@pytest.mark.parametrize("command,answer", [("/who", "In public (1): bob"), ("/ping", "pong"),
                                            ("/nosuch", "unknown command"), ("/help", "Commands")])
def test_room_line_then_a_command(world, command, answer):
    factory, clock, _ = world
    bob = _in_room(factory, clock, "bob", tagged=True)
    bob.send(f"x\r\n{command}\r\n".encode())
    _in_order(bob.output(), "bob: x", answer)


def test_last_line_then_exit_reaches_the_sender(world):
    factory, clock, _ = world
    alice = _in_room(factory, clock, "alice")
    bob = _in_room(factory, clock, "bob")
    alice.output()
    bob.send(b"bye-all\r\n/exit\r\n")
    _in_order(bob.output(), "bob: bye-all", "You left public.")
    _in_order(alice.output(), "bob: bye-all", "* bob left public")


def test_line_said_before_a_join_is_not_delivered_to_the_newcomer(world):
    """
    alice says a line in the same reactor turn as bob's join is handled, before it: bob never gets it live,
    only once, in the replayed block of earlier lines (issue 13).
    """
    factory, clock, _ = world
    alice = _in_room(factory, clock, "alice")
    bob = Client(factory, clock)
    bob.register("bob")
    alice.output()
    for i in range(5):
        alice.protocol.dataReceived(f"before-{i}\r\n".encode())
        bob.protocol.dataReceived(b"join public\r\n" if i == 0 else f"/ping\r\n".encode())
        alice.protocol.dataReceived(f"after-{i}\r\n".encode())
        clock.advance(0)
    seen = bob.output()
    assert seen.count("before-0") == 1
    _in_order(seen, "Entered room public (2 here)", "alice: before-0", "--- end of earlier lines ---",
              "* bob joined public", "alice: after-0")
    for i in range(1, 5):  # said after the join: delivered, in order with bob's own answers
        _in_order(seen[seen.index(f"after-{i - 1}"):], f"before-{i}", "pong", f"after-{i}")
    _in_order(alice.output(), "alice: before-0", "* bob joined public", "alice: after-0")


def test_lines_said_before_switching_to_tagged_mode_come_first_and_untagged(world):
    factory, clock, _ = world
    alice = _in_room(factory, clock, "alice")
    bob = _in_room(factory, clock, "bob")
    bob.output()
    alice.protocol.dataReceived(b"said-while-plain\r\n")
    bob.protocol.dataReceived(b"/client test 1.0\r\n")
    alice.protocol.dataReceived(b"said-while-tagged\r\n")
    seen = bob.output()
    _in_order(seen, "] alice: said-while-plain", "00 Tagged mode on", "111 [", "alice: said-while-tagged")
    assert "111 [" not in seen.split("00 Tagged mode on")[0]


def test_lines_of_one_turn_are_still_one_batch(world):
    """Ordering does not cost batching: lines said in one turn reach each member in one write."""
    factory, clock, _ = world
    members = [_in_room(factory, clock, f"m{i}", tagged=bool(i % 2)) for i in range(4)]
    for member in members:
        member.output()
    writes = []
    real = members[0].transport.write
    members[0].transport.write = lambda data: (writes.append(data), real(data))[1]
    for i, member in enumerate(members):
        member.protocol.dataReceived(f"line {i}\r\n".encode())
    clock.advance(0)
    assert len(writes) == 1 and writes[0].count(b"\r\n") == 4


def test_joins_and_replies_do_not_split_a_rooms_batch():
    """
    A line, a join, a member's own reply and a leave in one turn: members who stay get the turn's lines in
    one delivery (more small writes per turn cost a Nagle wait each, measured: a 10,000-connection join storm
    took 28 s instead of 15 s); the newcomer gets only what was said after it joined; the member that
    replied got what came before its reply first, and nothing twice; the leaver got what was said before
    it left.
    """
    from twisted.internet.task import Clock

    clock = Clock()
    fanout = Fanout(Batcher(clock))
    stay, replier, leaver = _Member(), _Member(tagged=True), _Member()
    for member in (stay, replier, leaver):
        fanout.add(member)
    fanout.send(_event("a"))
    newcomer = _Member()
    fanout.add(newcomer)
    fanout.send(_event("* new joined"))
    fanout.catch_up(replier)  # what ChatProtocol does before a reply of its own
    replier.deliver(b"reply\r\n")
    fanout.send(_event("b"))
    fanout.discard(leaver)
    fanout.send(_event("* leaver left"))
    clock.advance(0)
    assert stay.got == [b"a\r\n* new joined\r\nb\r\n* leaver left\r\n"]
    assert newcomer.got == [b"* new joined\r\nb\r\n* leaver left\r\n"]
    assert replier.got == [b"111 a\r\n111 * new joined\r\n", b"reply\r\n", b"111 b\r\n111 * leaver left\r\n"]
    assert leaver.got == [b"a\r\n* new joined\r\nb\r\n"]


# -- kind 4: one failing member never silences a room ------------------------------------


class _Lines:
    """A renderer for these tests: each event's text as a line, with a prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def render(self, events):
        return "".join(f"{self.prefix}{event.text}\r\n" for event in events).encode()


_PLAIN, _TAGGED = _Lines(""), _Lines("111 ")


def _event(text: str) -> RoomEvent:
    return RoomEvent("room", 1, 0.0, "someone", EventKind.SAY, text)


class _Member:
    def __init__(self, tagged=False, fail=False):
        self.renderer = _TAGGED if tagged else _PLAIN
        self.fail = fail
        self.got: list[bytes] = []
        self.dropped = False

    def deliver(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("broken member")
        self.got.append(data)

    def drop(self) -> None:
        self.dropped = True


@pytest.fixture
def logged_failures():
    failures = []

    def observe(event):
        if event.get("log_failure") is not None:
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


@pytest.mark.parametrize("tagged", [False, True])
def test_failing_member_is_dropped_and_the_rest_of_the_room_and_later_rooms_still_flush(tagged, logged_failures):
    from twisted.internet.task import Clock

    clock = Clock()
    batcher = Batcher(clock)
    first, second = Fanout(batcher), Fanout(batcher)
    before, broken, after = _Member(tagged), _Member(tagged, fail=True), _Member(tagged)
    other = _Member(not tagged)
    for member in (before, broken, after, other):
        first.add(member)
    later = _Member()
    second.add(later)
    first.send(_event("one"))
    second.send(_event("two"))
    clock.advance(0)
    assert before.got and after.got and other.got and later.got
    assert broken.dropped and broken not in first.members()
    assert len(logged_failures) == 1
    first.send(_event("three"))  # the room is marked again: nothing is stuck
    clock.advance(0)
    assert b"three" in before.got[-1] and b"three" in after.got[-1]


def test_a_room_that_fails_to_flush_does_not_stop_later_rooms(logged_failures):
    from twisted.internet.task import Clock

    clock = Clock()
    batcher = Batcher(clock)
    first, second = Fanout(batcher), Fanout(batcher)
    a, b = _Member(), _Member()
    first.add(a)
    second.add(b)
    first.send(_event("\ud800"))  # cannot be encoded: this room's flush raises
    second.send(_event("two"))
    clock.advance(0)
    assert b.got == [b"two\r\n"] and len(logged_failures) == 1
    first.send(_event("fine"))
    clock.advance(0)
    assert a.got == [b"fine\r\n"]


def test_failing_connection_is_dropped_and_the_room_goes_on(world, logged_failures):
    factory, clock, _ = world
    ann = _in_room(factory, clock, "ann")
    broken = _in_room(factory, clock, "bro")
    cat = _in_room(factory, clock, "cat")

    def fail(data):
        raise OSError("no such socket")

    broken.protocol.deliver = fail
    ann.output()
    cat.send("hello")
    assert "cat: hello" in ann.output()
    assert broken.transport.disconnected
    assert factory.rooms["public"].member_names() == ["ann", "cat"] and "bro" not in factory.online
    ann.send("still here")
    seen = cat.output()
    assert "* bro left public" in seen and "ann: still here" in seen


# -- kind 11: chat lines are never menu choices -------------------------------------------


@pytest.mark.parametrize("tagged", [False, True])
def test_room_deleted_under_a_member_never_runs_chat_as_menu_choices(world, tagged):
    factory, clock, _ = world
    olga = Client(factory, clock)
    olga.register("olga")
    olga.send("create lab")
    bob = _in_room(factory, clock, "bob", room="lab", tagged=tagged)
    olga.send("delete lab")
    assert "Room lab was deleted by olga; type /exit to go back to the main menu." in bob.output()
    bob.send(b"see you at 9\r\n9\r\n")
    seen = bob.output()
    assert "unknown choice" not in seen and "Bye." not in seen and not bob.transport.disconnecting
    assert seen.count("Error: room lab was deleted; nothing you type here is sent.") == 2
    assert "menu>" not in seen
    bob.send("/who", "/me waves", "/ping")
    seen = bob.output()
    assert seen.count("nothing you type here is sent") == 2 and "pong" in seen
    bob.send("/exit")
    seen = bob.output()
    assert "You left lab." in seen and "menu>" in seen
    bob.send("9")
    assert "Bye." in bob.output() and bob.transport.disconnecting


def test_shutdown_ends_every_session_without_left_lines(world):
    """At shutdown each member gets the notice once and no `left` lines of the others (no N² burst)."""
    factory, clock, data = world
    members = [_in_room(factory, clock, f"m{i}") for i in range(3)]
    members[0].send("last words")
    for member in members:
        member.output()
    factory.shut_down("The server is shutting down. Bye.")
    for member in members:
        seen = member.output()
        assert seen == "The server is shutting down. Bye.\r\n" and member.transport.disconnecting
    assert factory.rooms["public"].member_names() == [] and not factory.online
    assert sorted(row for row in _rows(factory, data) if row[0] == "disconnect") == [
        ("disconnect", f"m{i}", "public", PEER) for i in range(3)]
