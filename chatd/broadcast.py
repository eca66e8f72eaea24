"""
Room output: the hot path of the server.

A line said in a room is rendered once as text and queued on the room's
:class:`Fanout`. Once per reactor turn the :class:`Batcher` flushes every
room that has queued lines: the lines are joined into one blob per kind of
audience (plain text, and tagged with the chat code) and that same blob is
handed to each member. Per member there is exactly one Python call per
turn, whatever the number of lines.

Order: a room's pending lines always belong to its current members. Before
the membership changes (:meth:`Fanout.add`, :meth:`Fanout.discard`) and
before a member gets output of its own (a reply, a private message, a
prompt: :meth:`Fanout.flush` called by the connection), the pending lines
are flushed. So each member's output is one stream in the order things
happened, a line reaches exactly those who were members when it was said,
and lines said in one turn are still sent as one batch.

Isolation: one member whose delivery raises is dropped from the room and
logged (like ``Group.receive`` in ``twisted/words/service.py``); the other
members, and the other rooms of the same turn, still get their lines.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.wire import CHAT, ENCODING

_TAG = CHAT + " "
_TAG_JOIN = "\r\n" + _TAG


class Recipient(Protocol):
    """What a room needs of a member to deliver output to it."""

    @property
    def tagged(self) -> bool:
        """Whether this member wants every line prefixed with its code."""

    def deliver(self, data: bytes) -> None:
        """Send already-encoded bytes (whole CRLF lines) to this member."""

    def drop(self) -> None:
        """Delivering to this member raised: it was taken out of the room; end its connection."""


class Batcher:
    """Flushes every dirty :class:`Fanout` once per reactor turn."""

    log = Logger()
    __slots__ = ("_clock", "_dirty", "_scheduled")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._dirty: list[Fanout] = []
        self._scheduled = False

    def mark(self, fanout: Fanout) -> None:
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


class Fanout:
    """The members of one room and the lines waiting to be sent to them."""

    __slots__ = ("_batcher", "_pending", "_joined", "_start", "plain", "tagged")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._pending: list[str] = []
        #: Everyone, in the order they joined (only for listing; flush never reads it).
        self._joined: dict[Recipient, None] = {}
        #: Members that already have, or must never get, the first N queued lines: those
        #: that joined after N lines were queued, and those sent them early by :meth:`catch_up`.
        self._start: dict[Recipient, int] = {}
        #: Members in plain mode and in tagged mode: the audiences flush writes to.
        self.plain: dict[Recipient, None] = {}
        self.tagged: dict[Recipient, None] = {}

    def __len__(self) -> int:
        return len(self._joined)

    def add(self, member: Recipient) -> None:
        """Start delivering to ``member``: lines queued before it joined are not sent to it."""
        self._joined[member] = None
        (self.tagged if member.tagged else self.plain)[member] = None
        if self._pending:
            self._start[member] = len(self._pending)

    def discard(self, member: Recipient) -> None:
        """Stop delivering to ``member``, after sending it the lines queued so far (the others get them in the batch)."""
        if self._pending and member in self._joined:
            self.catch_up(member)
        self._forget(member)

    def catch_up(self, member: Recipient) -> None:
        """
        Send ``member`` now the queued lines it has not had, so that its own
        output (a reply, a prompt) or its leaving comes after them. The rest
        of the room still gets them in this turn's batch, which stays one
        blob per audience; ``member`` gets only the lines queued after this
        from it. Cheap when nothing is queued.
        """
        pending = self._pending
        if not pending or member not in self._joined:
            return
        start = self._start.get(member, 0)
        self._start[member] = len(pending)
        if start < len(pending):
            self._deliver(member, _render(pending[start:], member.tagged))

    def _forget(self, member: Recipient) -> None:
        self._joined.pop(member, None)
        self._start.pop(member, None)
        self.plain.pop(member, None)
        self.tagged.pop(member, None)

    def regroup(self, member: Recipient) -> None:
        """``member`` switched mode: move it to its new audience, keeping its place in the join order."""
        if member in self._joined:
            self.plain.pop(member, None)
            self.tagged.pop(member, None)
            (self.tagged if member.tagged else self.plain)[member] = None

    def members(self) -> list[Recipient]:
        """Everyone in the room, in the order they joined."""
        return list(self._joined)

    def send(self, text: str) -> None:
        """Queue one already-rendered, already-clean line (no line end)."""
        if not self._pending:
            self._batcher.mark(self)
        self._pending.append(text)

    def flush(self) -> None:
        """
        Send the queued lines now: one blob per audience, written to each
        member (a member that joined meanwhile, or was caught up early, gets
        only the lines it has not had). A member whose ``deliver`` raises is
        logged, taken out of the room and asked to
        :meth:`~Recipient.drop`; the others still get the blob.
        """
        lines = self._pending
        if not lines:
            return
        self._pending = []
        start = self._start
        if start:
            self._start = {}
        if self.plain:
            self._send(self.plain, lines, False, start)
        if self.tagged:
            self._send(self.tagged, lines, True, start)

    def _send(self, audience: dict[Recipient, None], lines: list[str], tagged: bool, start: dict[Recipient, int]) -> None:
        """Write one audience's blob to each of its members (the hot loop: one ``deliver`` per member)."""
        blob = _render(lines, tagged)
        for member in list(audience):
            if start and member in start:
                if start[member] < len(lines):
                    self._deliver(member, _render(lines[start[member]:], tagged))
                continue
            try:
                member.deliver(blob)
            except Exception:
                self._failed(member)

    def _deliver(self, member: Recipient, data: bytes) -> None:
        try:
            member.deliver(data)
        except Exception:
            self._failed(member)

    def _failed(self, member: Recipient) -> None:
        """``member.deliver`` raised (called inside the ``except``): drop it, keep the room going."""
        self._batcher.log.failure("delivering room lines to {member!r} failed; dropping it from the room",
                                  member=member)
        self._forget(member)
        try:
            member.drop()
        except Exception:
            self._batcher.log.failure("dropping {member!r} failed", member=member)


def _render(lines: list[str], tagged: bool) -> bytes:
    """Queued lines as one blob for a plain or a tagged audience."""
    if tagged:
        return (_TAG + _TAG_JOIN.join(lines) + "\r\n").encode(ENCODING)
    return ("\r\n".join(lines) + "\r\n").encode(ENCODING)
