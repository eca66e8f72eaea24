"""
How the line front-end shows core values: room events and private messages
as text lines for people (plain mode) and for the bundled client (tagged
mode, each line prefixed with its code; docs/PROTOCOL.md).

Times are ``HH:MM:SS`` in UTC. Rendering is the hot path's per-line work:
one call of :meth:`LineRenderer.render` per audience per batch, one text
line per event, the clock text computed once per second.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.moderation import SERVER_NAME, duration_text
from chatd.wire import CHAT, ENCODING

_SAY = EventKind.SAY
#: The text after ``[HH:MM:SS] * `` of each kind but ``say``, from (sender, room, text).
_ACTIONS = {
    EventKind.ME: "{0} {2}",
    EventKind.JOIN: "{0} joined {1}",
    EventKind.LEAVE: "{0} left {1}",
    EventKind.FILE_OFFER: "{0} is sending {2}",
    EventKind.FILE: "{0} shared {2}",
    EventKind.FILE_FAILED: "{0}'s file {2}",
}

def _by(event: RoomEvent) -> str:
    return event.sender or SERVER_NAME


def _sanction(verb: str) -> Callable[[RoomEvent], str]:
    """``ann banned bob for 2h (spam)``: a timed one says for how long (from the event's time), a reason in brackets."""

    def text(event: RoomEvent) -> str:
        until = f" for {duration_text(event.until - event.at)}" if event.until else ""
        reason = f" ({event.text})" if event.text else ""
        return f"{_by(event)} {verb} {event.target}{until}{reason}"

    return text


#: The text after ``[HH:MM:SS] * `` of the moderation kinds (issue 14), from the event.
_MODERATION: dict[EventKind, Callable[[RoomEvent], str]] = {
    EventKind.KICK: lambda e: f"{_by(e)} kicked {e.target}" + (f" ({e.text})" if e.text else ""),
    EventKind.BAN: _sanction("banned"),
    EventKind.MUTE: _sanction("muted"),
    EventKind.UNBAN: lambda e: (f"{e.sender} lifted the ban on {e.target}" if e.sender
                                else f"{e.target} is no longer banned (the ban ran out)"),
    EventKind.UNMUTE: lambda e: (f"{e.sender} unmuted {e.target}" if e.sender
                                 else f"{e.target} may speak again (the mute ran out)"),
    EventKind.TOPIC: lambda e: f"{_by(e)} set the topic: {e.text}" if e.text else f"{_by(e)} cleared the topic",
    EventKind.SETTING: lambda e: f"{_by(e)} turned {e.target} {e.text}" if e.text in ("on", "off")
    else f"{_by(e)} set {e.target} to {e.text}",
    EventKind.INVITE: lambda e: (f"{_by(e)} withdrew {e.target}'s invitation" if e.text == "withdrawn"
                                 else f"{_by(e)} invited {e.target}"),
    EventKind.OP: lambda e: f"{_by(e)} took the operator role back" if e.sender == e.target
    else f"{_by(e)} made {e.target} an operator",
    EventKind.DEOP: lambda e: f"{_by(e)} put the operator role down" if e.sender == e.target
    else f"{_by(e)} took {e.target}'s operator role away",
    EventKind.VOICE: lambda e: f"{_by(e)} gave {e.target} a voice",
    EventKind.DEVOICE: lambda e: f"{_by(e)} took {e.target}'s voice away",
    EventKind.OWNER: lambda e: f"{_by(e)} gave {e.room} to {e.target}",
}


def action_text(event: RoomEvent) -> str:
    """The text after ``* `` of an event other than ``say``."""
    template = _ACTIONS.get(event.kind)
    if template is not None:
        return template.format(event.sender, event.room, event.text)
    return _MODERATION[event.kind](event)


_clock_second = -1
_clock_text = ""


def clock_text(at: float) -> str:
    """``at`` (seconds since the epoch) as ``HH:MM:SS`` in UTC."""
    global _clock_second, _clock_text
    second = int(at)
    if second != _clock_second:
        _clock_text = datetime.fromtimestamp(second, timezone.utc).strftime("%H:%M:%S")
        _clock_second = second
    return _clock_text


def event_text(event: RoomEvent) -> str:
    """An event as a line without its time: ``name: text`` or ``* name ...``."""
    if event.kind is _SAY:
        return f"{event.sender}: {event.text}"
    return "* " + action_text(event)


def dated_line(event: RoomEvent) -> str:
    """An event of room history as a line with its date: ``[YYYY-MM-DD HH:MM:SS] name: text`` (UTC)."""
    moment = datetime.fromtimestamp(int(event.at), timezone.utc)
    return f"[{moment:%Y-%m-%d %H:%M:%S}] {event_text(event)}"


def private_line(message: PrivateMessage, own: bool) -> str:
    """
    A private message as a line: ``[HH:MM:SS] *sender* text`` for its
    recipient, ``[HH:MM:SS] -> *recipient* text`` for its sender (``own``).
    """
    if own:
        return f"[{clock_text(message.at)}] -> *{message.recipient}* {message.text}"
    return f"[{clock_text(message.at)}] *{message.sender}* {message.text}"


#: The last batch rendered and its lines: the plain and the tagged audience of a room get the same batch
#: (the same list, one after the other, from chatd.broadcast), so its text is made once.
_last_batch: Sequence[RoomEvent] | None = None
_last_lines: list[str] = []


def event_lines(events: Sequence[RoomEvent]) -> list[str]:
    """
    Each event as a line for people (``[HH:MM:SS] name: text`` or
    ``[HH:MM:SS] * name ...``), with the clock text made once per
    second (the hot loop: no call per ``say`` event); the lines of the
    batch rendered just before are reused.
    """
    global _last_batch, _last_lines
    if events is _last_batch:
        return _last_lines
    lines: list[str] = []
    append = lines.append
    start = end = 0.0  # the second [start, end) whose clock text is ``clock``
    clock = ""
    for event in events:
        at = event.at
        if not start <= at < end:
            start = float(int(at))
            end = start + 1.0
            clock = clock_text(at)
        if event.kind is _SAY:
            append(f"[{clock}] {event.sender}: {event.text}")
        else:
            append(f"[{clock}] * " + action_text(event))
    _last_batch, _last_lines = events, lines
    return lines


class LineRenderer:
    """Renders a batch as CRLF lines in one bytes object, each line optionally prefixed (tagged mode)."""

    __slots__ = ("_first", "_joiner")

    def __init__(self, prefix: str) -> None:
        self._first = prefix
        self._joiner = "\r\n" + prefix

    def render(self, events: Sequence[RoomEvent]) -> bytes:
        # ("replace": a character UTF-8 cannot encode, a lone surrogate that chatd.text keeps out, becomes "?"
        # rather than fail the delivery of the room's batch to every member of this audience.)
        return (self._first + self._joiner.join(event_lines(events)) + "\r\n").encode(ENCODING, "replace")

    def __repr__(self) -> str:
        return f"<LineRenderer {self._first!r}>"


#: Plain mode (people on telnet, nc, ...): the lines as they are.
PLAIN = LineRenderer("")
#: Tagged mode (the bundled client): every line prefixed with the chat code.
TAGGED = LineRenderer(CHAT + " ")
