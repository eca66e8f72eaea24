"""
Room output: the hot path of the server.

An event in a room (a :class:`~chatd.core.events.RoomEvent`) is queued on the
room's :class:`Fanout`. Once per reactor turn the :class:`Batcher` flushes
every room that has queued events: each kind of audience (members that share
a :class:`~chatd.core.ports.Renderer`: plain text, tagged lines, later JSON or
IRC) gets the batch rendered once, and that same payload is handed to each of
its members. Per member there is exactly one Python call per turn, whatever
the number of events; per kind of audience one rendering.

Order: a room's pending events always belong to its current members. Before
the membership changes (:meth:`Fanout.add`, :meth:`Fanout.discard`) and
before a member gets output of its own (a reply, a private message, a
prompt: :meth:`Fanout.catch_up` called by the front-end), that member is
sent the pending events it has not had. So each member's output is one
stream in the order things happened, an event reaches exactly those who were
members when it happened, and events of one turn are still sent as one batch.

Isolation: one member whose delivery raises is dropped from the room and
logged (like ``Group.receive`` in ``twisted/words/service.py``); the other
members, and the other rooms of the same turn, still get their events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.core.events import RoomEvent
from chatd.core.ports import Member, Renderer

M = TypeVar("M", bound=Member)


class Batcher:
    """Flushes every dirty :class:`Fanout` once per reactor turn."""

    log = Logger()
    __slots__ = ("_clock", "_dirty", "_scheduled")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._dirty: list[Fanout[Any]] = []
        self._scheduled = False

    def mark(self, fanout: Fanout[Any]) -> None:
        """Make sure ``fanout`` is flushed at the end of this turn."""
        self._dirty.append(fanout)
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Flush all dirty rooms now."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for fanout in dirty:
            try:
                fanout.flush()
            except Exception:
                # Fanout.flush takes its lines before anything can fail, so
                # the room is marked again by its next line; later rooms still go.
                self.log.failure("flushing a room failed")


class Fanout(Generic[M]):
    """The members of one room (connected to this process) and the events waiting to be sent to them."""

    __slots__ = ("_batcher", "_pending", "_joined", "_start", "_audiences", "_record")

    def __init__(self, batcher: Batcher, record: Callable[[list[RoomEvent]], None] | None = None) -> None:
        """``record`` is given each batch (once per turn, before it is sent): the room's history."""
        self._batcher = batcher
        self._record = record
        self._pending: list[RoomEvent] = []
        #: Everyone, in the order they joined (only for listing; flush never reads it).
        self._joined: dict[M, None] = {}
        #: Members that already have, or must never get, the first N queued events: those
        #: that joined after N events were queued, and those sent them early by :meth:`catch_up`.
        self._start: dict[M, int] = {}
        #: The members of each kind of audience, by their renderer: what flush writes to.
        self._audiences: dict[Renderer, dict[M, None]] = {}

    def __len__(self) -> int:
        return len(self._joined)

    def add(self, member: M) -> None:
        """Start delivering to ``member``: events queued before it joined are not sent to it."""
        self._joined[member] = None
        self._audiences.setdefault(member.renderer, {})[member] = None
        if self._pending:
            self._start[member] = len(self._pending)

    def discard(self, member: M) -> None:
        """Stop delivering to ``member``, after sending it the events queued so far (the others get them in the batch)."""
        if self._pending and member in self._joined:
            self.catch_up(member)
        self._forget(member)

    def catch_up(self, member: M) -> None:
        """
        Send ``member`` now the queued events it has not had, so that its own
        output (a reply, a prompt) or its leaving comes after them. The rest
        of the room still gets them in this turn's batch, which stays one
        rendering per audience; ``member`` gets only the events queued after
        this from it. Cheap when nothing is queued.
        """
        pending = self._pending
        if not pending or member not in self._joined:
            return
        start = self._start.get(member, 0)
        self._start[member] = len(pending)
        if start < len(pending):
            self._deliver(member, member.renderer.render(pending[start:]))

    def _forget(self, member: M) -> None:
        self._joined.pop(member, None)
        self._start.pop(member, None)
        for audience in self._audiences.values():
            audience.pop(member, None)

    def regroup(self, member: M) -> None:
        """``member``'s renderer changed: move it to its new audience, keeping its place in the join order."""
        if member in self._joined:
            for audience in self._audiences.values():
                audience.pop(member, None)
            self._audiences.setdefault(member.renderer, {})[member] = None

    def members(self) -> list[M]:
        """Everyone in the room, in the order they joined."""
        return list(self._joined)

    def audience(self, renderer: Renderer) -> list[M]:
        """The members whose output ``renderer`` renders."""
        return list(self._audiences.get(renderer, ()))

    def pending(self) -> list[RoomEvent]:
        """The events queued in this turn, not yet sent nor recorded (a copy)."""
        return list(self._pending)

    def send(self, event: RoomEvent) -> None:
        """Queue one event for the members; it is sent at the end of this reactor turn."""
        if not self._pending:
            self._batcher.mark(self)
        self._pending.append(event)

    def flush(self) -> None:
        """
        Send the queued events now: rendered once per audience, written to
        each member (a member that joined meanwhile, or was caught up early,
        gets only the events it has not had). A member whose ``deliver``
        raises is logged, taken out of the room and asked to
        :meth:`~chatd.core.ports.Member.drop`; the others still get theirs.
        """
        events = self._pending
        if not events:
            return
        self._pending = []
        if self._record is not None:
            self._record(events)
        start = self._start
        if start:
            self._start = {}
        for renderer, audience in list(self._audiences.items()):
            if audience:
                self._send(renderer, audience, events, start)

    def _send(self, renderer: Renderer, audience: dict[M, None], events: list[RoomEvent],
              start: dict[M, int]) -> None:
        """Write one audience's rendering to each of its members (the hot loop: one ``deliver`` per member)."""
        payload = renderer.render(events)
        for member in list(audience):
            if start and member in start:
                if start[member] < len(events):
                    self._deliver(member, renderer.render(events[start[member]:]))
                continue
            try:
                member.deliver(payload)
            except Exception:
                self._failed(member)

    def _deliver(self, member: M, payload: Any) -> None:
        try:
            member.deliver(payload)
        except Exception:
            self._failed(member)

    def _failed(self, member: M) -> None:
        """``member.deliver`` raised (called inside the ``except``): drop it, keep the room going."""
        self._batcher.log.failure("delivering room events to {member!r} failed; dropping it from the room",
                                  member=member)
        self._forget(member)
        try:
            member.drop()
        except Exception:
            self._batcher.log.failure("dropping {member!r} failed", member=member)
