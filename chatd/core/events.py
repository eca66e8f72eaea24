"""
What the core produces: room events and private messages as values.

A :class:`RoomEvent` says who did what in which room and when; it carries no
wire format. Both are immutable values. Each kind of front-end renders it (``chatd.render`` for the
line front-end: plain text for people, tagged lines for the bundled client),
once per kind of audience per batch (``chatd.broadcast``).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import attrs


class EventKind(enum.StrEnum):
    """The kinds of room events (the value is the name used in logs and, later, in JSON)."""

    #: A line of chat; ``text`` is what was said; ``target`` "notice" if an IRC client sent it as a NOTICE.
    SAY = "say"
    #: An action (``/me``); ``text`` is the action, without the name.
    ME = "me"
    #: ``sender`` entered the room; no text.
    JOIN = "join"
    #: ``sender`` left the room (by ``/exit``, by going away, or its session ended); ``text``: the reason it
    #: gave, if any (IRC's PART and QUIT messages); ``target``: "quit" when its session ended, else "".
    LEAVE = "leave"
    #: ``sender`` offered a file to the room; ``text``: its name and size (``notes.txt (1.2 KiB)``).
    FILE_OFFER = "file_offer"
    #: ``sender``'s file arrived whole and verified; ``text``: name, size and the start of its SHA-256.
    FILE = "file"
    #: ``sender``'s file was not shared; ``text``: its name and why.
    FILE_FAILED = "file_failed"

    # Moderation (issue 14): ``sender`` did it to ``target``; ``text`` is the reason (or the topic);
    # ``until`` the end of a timed ban or mute (seconds since the epoch; 0: until lifted).
    #: ``sender`` removed ``target`` from the room.
    KICK = "kick"
    #: ``sender`` banned ``target`` from the room (until ``until``, 0: until lifted).
    BAN = "ban"
    #: The ban of ``target`` was lifted by ``sender`` ("" if it ran out).
    UNBAN = "unban"
    #: ``sender`` muted ``target`` (until ``until``); ``sender`` "" : the flood limiter did.
    MUTE = "mute"
    #: ``target`` may speak again (lifted by ``sender``; "" if it ran out).
    UNMUTE = "unmute"
    #: ``sender`` set the topic to ``text`` ("" : cleared it).
    TOPIC = "topic"
    #: ``sender`` changed a room setting: ``target`` is its name, ``text`` its new value.
    SETTING = "setting"
    #: ``sender`` invited ``target`` (or, with ``text`` "withdrawn", withdrew the invitation).
    INVITE = "invite"
    #: ``sender`` (the owner) made ``target`` an operator.
    OP = "op"
    #: ``sender`` took ``target``'s operator role away.
    DEOP = "deop"
    #: ``sender`` (an operator) gave ``target`` a voice: it may speak in the room while it is moderated.
    VOICE = "voice"
    #: ``sender`` took ``target``'s voice away.
    DEVOICE = "devoice"
    #: ``sender`` gave the room to ``target``, its new owner.
    OWNER = "owner"


class RoomEvent(NamedTuple):
    """
    One thing that happened in a room: an immutable value.

    ``room`` is the room's name as stored; ``id`` counts the room's events
    from 1 in the order they happened (monotonic per room, across restarts:
    the history goes on from its last id);
    ``at`` is the time in seconds since the epoch (UTC); ``sender`` is the
    name of the account that caused it; ``text`` is clean text
    (``chatd.text.clean_line``), its meaning depends on ``kind``.

    A ``typing.NamedTuple``, not a frozen attrs class like the other values:
    one is made per room line on the hot path, and it costs 0.26 µs where a
    frozen slotted attrs instance costs 0.55 µs (timeit, this machine; an
    attrs class with hand-written slot setters 0.41 µs): 6% of the whole
    per-line cost of the fan-out benchmark (docs/PERFORMANCE.md). It is as
    immutable, compares and hashes by value, and takes no more memory.
    """

    room: str
    id: int
    at: float
    sender: str
    kind: EventKind
    text: str = ""
    #: Whom a moderation event is about ("" for other kinds).
    target: str = ""
    #: When a timed ban or mute ends (seconds since the epoch; 0.0: until lifted, and for other kinds).
    until: float = 0.0


@attrs.frozen(slots=True)
class PrivateMessage:
    """
    ``sender`` wrote ``text`` (clean) to ``recipient`` at ``at`` (seconds
    since the epoch, UTC); ``notice``: an IRC NOTICE (RFC 1459 4.4.2: never
    answered automatically), delivered to an online user only, never queued.
    """

    at: float
    sender: str
    recipient: str
    text: str
    notice: bool = False
