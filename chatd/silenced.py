"""
Who may no longer speak in a room, in the bus's order (issue 17).

With several nodes a node accepts a line before it has read what another
node did meanwhile: the owner on A bans bob on B, and bob's lines that B
took before it read the ban come after the ban in the stream. The rule, the
same on every node because every node reads one order: a line (``say``,
``me``) from someone who at that point of the stream is banned from, kicked
from or muted in the room is not delivered, by any node; its sender, if
connected here, is told. ``ChatFactory._deliver`` follows the room's
sanction events into :attr:`Room.silenced <chatd.factory.Room.silenced>`
(:func:`follow`) and checks each line while it is not empty
(:func:`refused`): one set lookup per event, nothing per member. In one
process a sanctioned user's lines are refused before they are published, so
nothing is ever dropped here. docs/ARCHITECTURE.md, "Several nodes".
"""

from __future__ import annotations

from chatd.core.events import EventKind, RoomEvent
from chatd.text import name_key

#: The events that change who may speak (checked once per event).
SILENCING = frozenset({EventKind.BAN, EventKind.KICK, EventKind.MUTE, EventKind.UNMUTE, EventKind.JOIN})
#: The events that are a member's lines.
SPOKEN = frozenset({EventKind.SAY, EventKind.ME})
#: The most names a room keeps (a kicked user who never comes back stays until then; the oldest go first).
MAX_SILENCED = 1_000

_WHY = {EventKind.BAN: "banned from", EventKind.KICK: "kicked from", EventKind.MUTE: "muted in"}


def follow(silenced: dict[str, tuple[str, float]], event: RoomEvent) -> None:
    """
    ``event`` (one of :data:`SILENCING`) in stream order: a ban or a kick
    silences its target until it joins again, a mute until its end (the
    event's ``until``; 0: until lifted) or its lift.
    """
    kind = event.kind
    if kind is EventKind.JOIN:
        entry = silenced.get(name_key(event.sender))
        if entry is not None and entry[0] != _WHY[EventKind.MUTE]:
            del silenced[name_key(event.sender)]
    elif kind is EventKind.UNMUTE:
        entry = silenced.get(name_key(event.target))
        if entry is not None and entry[0] == _WHY[EventKind.MUTE]:
            del silenced[name_key(event.target)]
    elif event.target:
        key = name_key(event.target)
        silenced.pop(key, None)
        silenced[key] = (_WHY[kind], event.until if kind is EventKind.MUTE else 0.0)
        if len(silenced) > MAX_SILENCED:
            del silenced[next(iter(silenced))]


def refused(silenced: dict[str, tuple[str, float]], event: RoomEvent) -> str | None:
    """Why the line ``event`` is not delivered (``banned from``, ``kicked from``, ``muted in``), or None."""
    entry = silenced.get(name_key(event.sender))
    if entry is None or (entry[1] and event.at >= entry[1]):
        return None
    return entry[0]
