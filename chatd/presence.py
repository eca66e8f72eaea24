"""
Presence: who is away, with what message, and who has been told; since
when each user is online, and when each account was last seen.

A logged-in user may mark themselves away (``/away [message]``) until
``/back`` or until their session ends (log out, disconnect, replaced by a
new login). Whoever sends them a private message meanwhile is told the away
message once per away period (a new ``/away`` starts a new period). Being
away is not stored: it lives as long as the session. When a session ends,
the account's "last seen" time is kept here and in the store
(``Store.set_marks(name, {"seen": ISO-8601 UTC})``, batched), and comes back
at start-up from ``Loaded.marks``. ``/whois`` (:meth:`Presence.whois`)
answers with all of it. docs/PROTOCOL.md, "Presence".

With several nodes (issue 17) a user logged in on another node is known from
the bus (``Bus.online_elsewhere``: that node's heartbeat, logins, logouts and
away changes): :meth:`Presence.message`, :meth:`Presence.marked`,
:meth:`Presence.tell_once` and :meth:`Presence.whois` answer for them too,
so every front-end shows one view (docs/ARCHITECTURE.md, "Several nodes").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from chatd import errors
from chatd.text import USER_NAME_MAX, name_key, unknown_name

if TYPE_CHECKING:
    from chatd.core.ports import OnlineElsewhere, Session
    from chatd.factory import Room
    from chatd.store import Accounts

#: Characters an away message may have at most (it is shown to others on one line).
AWAY_MAX = 200
#: The away message of ``/away`` without one.
AWAY_DEFAULT = "away"


#: The key of the last-seen time in an account's marks (``Store.set_marks``, ``Loaded.marks``).
SEEN_MARK = "seen"


def iso_seconds(text: str) -> float | None:
    """An ISO-8601 UTC time as stored (``2026-11-29T14:02:11Z``) in seconds since the epoch; None if it is none."""
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


@attrs.frozen
class Whois:
    """
    What ``/whois NAME`` answers about an account (times in seconds since
    the epoch, UTC, by the server's clock). The line front-end renders it as
    text lines (``chatd.commands.presence.whois_lines``).
    """

    #: The account's name as stored.
    name: str
    #: When this answer was made.
    at: float
    #: When the account was created; None if that is not known.
    created: float | None
    #: When its current session logged in; None: it is offline.
    online_since: float | None
    #: Offline: when its last session ended; None: online, or not seen since the server kept track.
    last_seen: float | None
    #: Its away message (online and away), else None.
    away: str | None
    #: The room it is in with the asker ("" if none): never another room.
    shared_room: str


class Presence:
    """
    The away users, by name key: their message and the senders (name keys)
    already told it; the online users' login times and the accounts'
    last-seen times, by name key.
    """

    __slots__ = ("_away", "_since", "_seen", "watchers", "elsewhere", "_told_elsewhere")

    def __init__(self, elsewhere: Callable[[], Mapping[str, OnlineElsewhere]] = dict) -> None:
        self._away: dict[str, tuple[str, set[str]]] = {}
        #: The users logged in on other nodes, by name key (``Bus.online_elsewhere``), and for those away
        #: (their message, the senders told it here).
        self.elsewhere = elsewhere
        self._told_elsewhere: dict[str, tuple[str, set[str]]] = {}
        #: Called with (name, away message or None when back) on every change (the IRC front-end's away-notify).
        self.watchers: list[Callable[[str, str | None], None]] = []
        #: Name key -> when its session logged in (seconds since the epoch), for each user online.
        self._since: dict[str, float] = {}
        #: Name key -> when its last session ended (ISO-8601 UTC, as stored), for each account seen so far.
        self._seen: dict[str, str] = {}

    def __len__(self) -> int:
        """How many users are away."""
        return len(self._away)

    def set_away(self, name: str, message: str) -> None:
        """``name`` is away with ``message`` (clean text, at most AWAY_MAX characters); a new period begins."""
        self._away[name_key(name)] = (message or AWAY_DEFAULT, set())
        for watcher in self.watchers:
            watcher(name, message or AWAY_DEFAULT)

    def back(self, name: str) -> bool:
        """``name`` is no longer away; False if they were not."""
        if self._away.pop(name_key(name), None) is None:
            return False
        for watcher in self.watchers:
            watcher(name, None)
        return True

    def message(self, name: str) -> str | None:
        """The away message of ``name`` (logged in here or on another node), or None if they are not away."""
        key = name_key(name)
        away = self._away.get(key)
        if away is not None:
            return away[0]
        if key in self._since:
            return None
        there = self.elsewhere().get(key)
        return there.away if there is not None else None

    def since(self, name: str) -> float:
        """When the session of ``name`` logged in here (seconds since the epoch); 0.0 if it is not."""
        return self._since.get(name_key(name), 0.0)

    def tell_once(self, sender: str, recipient: str) -> str | None:
        """
        The away message of ``recipient`` if ``sender`` has not been told it
        in this away period (and from now on has), else None.
        """
        away = self._away.get(name_key(recipient))
        if away is None:
            away = self._away_elsewhere(name_key(recipient))
            if away is None:
                return None
        message, told = away
        key = name_key(sender)
        if key in told:
            return None
        told.add(key)
        return message

    def _away_elsewhere(self, key: str) -> tuple[str, set[str]] | None:
        """A user away on another node: its message and who was told it here in this away period."""
        there = self.elsewhere().get(key) if key not in self._since else None
        if there is None or there.away is None:
            self._told_elsewhere.pop(key, None)
            return None
        away = self._told_elsewhere.get(key)
        if away is None or away[0] != there.away:
            self._told_elsewhere[key] = away = (there.away, set())
        return away

    def restore(self, marks: Mapping[str, Mapping[str, str]]) -> None:
        """Take the last-seen times from the marks the store loaded (name key -> key -> value; ``Loaded.marks``)."""
        seen = self._seen
        for key, values in marks.items():
            value = values.get(SEEN_MARK)
            if value:
                seen[key] = value

    def logged_in(self, name: str, at: float) -> None:
        """A session of ``name`` logged in at ``at`` (seconds since the epoch)."""
        self._since[name_key(name)] = at

    def logged_out(self, name: str, seen: str) -> None:
        """
        The session of ``name`` ended (logout, disconnect, replaced, shut
        down) at ``seen`` (ISO-8601 UTC; "": the account is gone, nothing is
        kept): it is no longer away nor online.
        """
        key = name_key(name)
        self._away.pop(key, None)
        self._since.pop(key, None)
        if seen:
            self._seen[key] = seen
        else:
            self._seen.pop(key, None)

    def whois(self, name: str, accounts: Accounts, online: Mapping[str, Session], asker: Session,
              room: Room | None, at: float) -> Whois:
        """
        What is known of the account ``name`` (any case) at ``at`` (seconds
        since the epoch), asked by ``asker`` from ``room`` (None: not in
        one). Only that room can be the room in common: where the user is
        is never told to someone who is not there too. Raises NoSuchUser
        (``There is no user called NAME.``; the naming rule instead for a
        name that cannot be one, as ``/msg`` answers).
        """
        key = name_key(name)
        record = accounts.get(key)
        if record is None:
            raise errors.NoSuchUser(unknown_name(name, "user", USER_NAME_MAX, f"There is no user called {name}."))
        session = online.get(key)
        there = self.elsewhere().get(key) if session is None else None
        shared = ""
        if session is not None and session is not asker and room is not None and session in room.fanout.members():
            shared = room.name
        elif there is not None and room is not None and room.name in there.rooms:
            shared = room.name
        if session is not None:
            since: float | None = self._since.get(key, at)
        else:
            since = there.since if there is not None else None
        return Whois(
            name=record.name,
            at=at,
            created=iso_seconds(record.created),
            online_since=since,
            last_seen=iso_seconds(self._seen.get(key, "")) if since is None else None,
            away=self.message(record.name) if since is not None else None,
            shared_room=shared,
        )

    def marked(self, names: Iterable[str], rooms: Mapping[str, str] | None = None) -> list[str]:
        """
        ``names`` with `` (away)`` after each away user's name, in the same order; with ``rooms`` (name ->
        the room they are in) also where they are: ``bob (in lab)``, ``bob (away, in lab)``.
        """
        if not self._away and not rooms and not any(there.away for there in self.elsewhere().values()):
            return list(names)
        marked = []
        for name in names:
            marks = ["away"] if self.message(name) is not None else []
            room = rooms.get(name) if rooms else None
            if room is not None:
                marks.append(f"in {room}")
            marked.append(f"{name} ({', '.join(marks)})" if marks else name)
        return marked
