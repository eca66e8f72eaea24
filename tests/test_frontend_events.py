"""
A front-end that is not a line protocol: it logs in, joins and receives
room events as values, through the same command table and core as the line
front-end, touching nothing in the core (issue 12: "prove it with a small
non-line front-end in the tests").
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
from twisted.internet import defer

from chatd import errors
from chatd.commands import TABLE
from chatd.commands.table import CommandTable, Place
from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from helpers import Client, fired, make_factory


class Structured:
    """Renders a batch as the tuple of its events (what a JSON front-end would serialize); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def render(self, events: Sequence[RoomEvent]) -> tuple[RoomEvent, ...]:
        self.calls += 1
        return tuple(events)


class EventSession:
    """A session of a structured front-end: it is both the core's Session and the command table's Caller."""

    origin = MappingProxyType({"address": "10.0.0.9", "port": "1"})
    address_key = "10.0.0.9"

    commands = TABLE

    def __init__(self, factory: Any, renderer: Structured) -> None:
        self.factory = factory
        self.session = self
        self.renderer = renderer
        self.name: str | None = None
        self.room: Any = None
        self.login_failures = 0
        self.events: list[RoomEvent] = []
        self.payloads: list[Any] = []
        self.replies: list[str] = []
        self.errors: list[str] = []
        self.history: list[tuple[str, list[RoomEvent]]] = []
        self.privates: list[tuple[PrivateMessage, bool]] = []
        self.closed = False

    # Session
    def deliver(self, payload: tuple[RoomEvent, ...]) -> None:
        self.payloads.append(payload)
        self.events.extend(payload)

    def drop(self) -> None:
        self.closed = True

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        self.privates.append((message, sent))

    def notice(self, text: str) -> None:
        self.replies.append(text)

    def room_deleted(self, room: Any, by: str) -> None:
        self.room = None

    def removed(self, room: Any, notice: str, gone: str) -> None:
        self.room = None
        self.replies.append(notice)

    def spend_allowance(self) -> None:
        pass

    def share_allowance(self, bucket: Any, wait: float = 0.0) -> None:
        pass

    def kick(self, reason: str, event: str = "disconnect") -> None:
        self.closed = True
        self.factory.detach(self, event, self.room)

    # Caller
    @property
    def place(self) -> Place:
        return Place.ROOM if self.room is not None else Place.MENU

    room_gone = ""

    def reply(self, text: str) -> None:
        self.replies.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def logged_in(self, name: str, text: str) -> None:
        self.name = name
        self.factory.attach(self)

    def entered(self, room: Any, replay: Sequence[RoomEvent] = ()) -> None:
        self.room = room
        self.history.append(("replay", list(replay)))
        self.factory.join(room, self)

    def show_history(self, room: str, events: Sequence[RoomEvent], older: int | None) -> None:
        self.history.append(("history", list(events)))

    def left(self) -> None:
        room, self.room = self.room, None
        self.factory.leave(room, self)

    def logged_out(self, text: str) -> None:
        room, self.room = self.room, None
        self.factory.log_out(self, room)
        self.name = None
        self.replies.append(text)

    def show_help(self, table: CommandTable) -> None:
        self.replies.extend(command.name for command in table.listed(self.place))

    def later(self, seconds: float) -> defer.Deferred[None]:
        return defer.succeed(None)

    def close(self) -> None:
        self.closed = True

    def run(self, name: str, *values: str) -> Any:
        command = TABLE.find(name, self.place)
        assert command is not None, name
        return fired(TABLE.run(self, command, values))


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock


def test_a_structured_front_end_logs_in_joins_and_receives_events_as_values(world):
    factory, clock = world
    bob = Client(factory, clock)
    bob.register("bob")
    renderer = Structured()
    ann = EventSession(factory, renderer)
    ann.run("register", "ann", "secret1")
    assert ann.name == "ann" and factory.online["ann"] is ann
    ann.run("create", "lab")
    ann.run("join", "lab")
    bob.send("join lab")
    bob.send("hello", "/me waves", "/exit")
    ann.run("say", "hi bob")
    clock.advance(0)
    kinds = [(event.kind, event.sender, event.text) for event in ann.events]
    assert kinds == [
        (EventKind.JOIN, "ann", ""),
        (EventKind.JOIN, "bob", ""),
        (EventKind.SAY, "bob", "hello"),
        (EventKind.ME, "bob", "waves"),
        (EventKind.LEAVE, "bob", ""),
        (EventKind.SAY, "ann", "hi bob"),
    ]
    assert [event.id for event in ann.events] == [1, 2, 3, 4, 5, 6]
    assert {event.room for event in ann.events} == {"lab"}
    assert all(event.at == clock.seconds() for event in ann.events)
    # The line user saw the same events, rendered as text by the line front-end.
    out = bob.output()
    assert "* ann joined lab" not in out and "bob: hello" in out and "* bob waves" in out


def test_commands_answer_the_structured_front_end_through_the_table(world):
    factory, clock = world
    Client(factory, clock).register("bob")
    ann = EventSession(factory, Structured())
    with pytest.raises(errors.NotAllowed, match="please log in first"):
        ann.run("join", "public")
    ann.run("login", "bob", "wrong-password")  # told, then slowed down: the command ends after the delay
    assert ann.errors == ["Login failed: unknown name or wrong password."] and ann.name is None
    ann.run("register", "ann", "secret1")
    with pytest.raises(errors.NotAllowed, match="already logged in as ann"):
        ann.run("login", "bob", "secret1")
    ann.run("users")
    assert ann.replies[-1] == "Online (2): ann, bob"
    ann.run("public")
    ann.run("msg", "bob", "psst")
    assert ann.privates and ann.privates[-1][0].recipient == "bob" and ann.privates[-1][1] is True
    with pytest.raises(errors.NoSuchUser):
        ann.run("msg", "nobody", "hello?")
    with pytest.raises(errors.BadArguments, match="usage: /msg NAME TEXT"):
        ann.run("msg", "bob")


def test_a_batch_is_rendered_once_per_kind_of_audience_not_per_member(world):
    """Ten structured members, two plain and two tagged line members: one rendering per kind per batch."""
    factory, clock = world
    renderer = Structured()
    sessions = []
    for i in range(10):
        session = EventSession(factory, renderer)
        session.run("register", f"s{i}", "secret1")
        session.run("public")
        sessions.append(session)
    lines = [Client(factory, clock, tagged=bool(i % 2)) for i in range(4)]
    for i, client in enumerate(lines):
        client.register(f"line{i}")
        client.send("public")
    clock.advance(0)
    renderer.calls = 0
    for session in sessions[:3]:
        session.run("say", "one batch")
    clock.advance(0)
    assert renderer.calls == 1
    assert all(len(session.payloads[-1]) == 3 for session in sessions)
    assert all(session.payloads[-1] is sessions[0].payloads[-1] for session in sessions)
