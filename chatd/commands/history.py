"""
History commands: ``/history [all] [before ID] [N]`` and ``/replay on|off``
(docs/PROTOCOL.md, "Room history").

The history itself is ``chatd.history`` (``ChatFactory.history``); replay
on join is part of joining (``ChatFactory.enter``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from chatd import errors
from chatd.commands.builtin import ANYWHERE, ROOM, command
from chatd.commands.table import Arg, Caller, Login
from chatd.core.events import RoomEvent
from chatd.limits import try_again
from chatd.text import name_key

#: Lines ``/history`` shows when no N is given, and at most per request.
HISTORY_DEFAULT = 20
HISTORY_MAX = 50
#: The largest event id ``/history before ID`` takes.
ID_MAX = 2**63 - 1

HISTORY_USAGE = (f"usage: /history [all] [before ID] [N]: the last N lines (default {HISTORY_DEFAULT}, at most "
                 f"{HISTORY_MAX}); 'all' adds joins and leaves; 'before ID' pages back.")


def _number(text: str, maximum: int) -> int | None:
    """ASCII digits of value 1 to ``maximum`` (no sign, no other scripts' digits), else None."""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(maximum)):
        return None
    value = int(text)
    return value if 1 <= value <= maximum else None


def parse_history(text: str) -> tuple[bool, int | None, int]:
    """``[all] [before ID] [N]`` as (everything, before, count); raises BadInput with the usage."""
    words = text.split()
    everything = bool(words) and words[0].lower() == "all"
    if everything:
        words.pop(0)
    before: int | None = None
    if words and words[0].lower() == "before":
        before = _number(words[1], ID_MAX) if len(words) > 1 else None
        if not before:
            raise errors.BadArguments(HISTORY_USAGE)
        words = words[2:]
    count: int | None = HISTORY_DEFAULT
    if words:
        count = _number(words[0], HISTORY_MAX) if len(words) == 1 else None
        if not count:
            raise errors.BadArguments(HISTORY_USAGE)
    assert count is not None
    return everything, before, count


def _history_refused(caller: Caller) -> str | None:
    """The rate limit on /history (chatd.limits.HISTORY_REQUEST_RATE): why not now, or None (a request counted)."""
    requests, key = caller.factory.limits.history_requests, name_key(caller.session.name or "")
    wait = requests.wait(key)
    if wait:
        return "too many /history requests; " + try_again(wait)
    requests.take(key)
    return None


@command("history", "show the room's earlier lines: /history [all] [before ID] [N]", ROOM, login=Login.REQUIRED,
         in_room=True, args=(Arg("ARGS", optional=True),))
def history(caller: Caller, text: str) -> defer.Deferred[None]:
    """Only the room one is in (its members read its history); joins and leaves only with ``all``."""
    room = caller.room
    assert room is not None
    try:
        everything, before, count = parse_history(text)
    except errors.ChatError as error:
        return defer.fail(error)
    refused = _history_refused(caller)
    if refused:
        return defer.fail(errors.NotAllowed(refused))

    def show(events: list[RoomEvent]) -> None:
        more = len(events) == count and events[0].id > 1
        caller.show_history(room.name, events, events[0].id if more else None)

    return caller.factory.room_history(room, count, before, everything).addCallback(show)


def _on_off(caller: Caller, value: str) -> str | None:
    return None if value.lower() in ("on", "off") else "usage: /replay on|off"


@command("replay", "on or off: show a room's last lines when you join it", ANYWHERE, login=Login.REQUIRED,
         args=(Arg("ON_OFF", "Show a room's last lines when you join it (on/off)?", check=_on_off),))
def replay(caller: Caller, value: str) -> defer.Deferred[Any]:
    on = value.lower() == "on"
    d = caller.factory.set_replay(caller.session, on)
    return d.addCallback(lambda _: caller.reply(
        "Replay on join is on." if on else "Replay on join is off: /history shows a room's earlier lines."))
