"""
Room output: the hot path of the server.

A line said in a room is rendered once as text and queued on the room's
:class:`Fanout`. Once per reactor turn the :class:`Batcher` flushes every
room that has queued lines: the lines are joined into one blob per kind of
audience (plain text, and tagged with the chat code) and that same blob is
handed to each member. Per member there is exactly one Python call per
turn, whatever the number of lines.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime

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


class Batcher:
    """Flushes every dirty :class:`Fanout` once per reactor turn."""

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
            fanout.flush()


class Fanout:
    """The members of one room and the lines waiting to be sent to them."""

    __slots__ = ("_batcher", "_pending", "_joined", "plain", "tagged")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self._pending: list[str] = []
        #: Everyone, in the order they joined (only for listing; flush never reads it).
        self._joined: dict[Recipient, None] = {}
        #: Members in plain mode and in tagged mode: the audiences flush writes to.
        self.plain: dict[Recipient, None] = {}
        self.tagged: dict[Recipient, None] = {}

    def __len__(self) -> int:
        return len(self._joined)

    def add(self, member: Recipient) -> None:
        """Start delivering to ``member`` (from the next flush on)."""
        self._joined[member] = None
        (self.tagged if member.tagged else self.plain)[member] = None

    def discard(self, member: Recipient) -> None:
        """Stop delivering to ``member``; lines not yet flushed are not sent to it."""
        self._joined.pop(member, None)
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
        """Send the queued lines: one blob per audience, written to each member."""
        lines, self._pending = self._pending, []
        if not lines:
            return
        if self.plain:
            blob = ("\r\n".join(lines) + "\r\n").encode(ENCODING)
            for member in list(self.plain):
                member.deliver(blob)
        if self.tagged:
            blob = (_TAG + _TAG_JOIN.join(lines) + "\r\n").encode(ENCODING)
            for member in list(self.tagged):
                member.deliver(blob)
