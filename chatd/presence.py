"""
Presence: who is away, with what message, and who has been told.

A logged-in user may mark themselves away (``/away [message]``) until
``/back`` or until their session ends (log out, disconnect, replaced by a
new login). Whoever sends them a private message meanwhile is told the away
message once per away period (a new ``/away`` starts a new period). Nothing
of it is stored: it lives as long as the session. docs/PROTOCOL.md,
"Presence".
"""

from __future__ import annotations

from collections.abc import Iterable

from chatd.text import name_key

#: Characters an away message may have at most (it is shown to others on one line).
AWAY_MAX = 200
#: The away message of ``/away`` without one.
AWAY_DEFAULT = "away"


class Presence:
    """The away users, by name key: their message and the senders (name keys) already told it."""

    __slots__ = ("_away",)

    def __init__(self) -> None:
        self._away: dict[str, tuple[str, set[str]]] = {}

    def __len__(self) -> int:
        """How many users are away."""
        return len(self._away)

    def set_away(self, name: str, message: str) -> None:
        """``name`` is away with ``message`` (clean text, at most AWAY_MAX characters); a new period begins."""
        self._away[name_key(name)] = (message or AWAY_DEFAULT, set())

    def back(self, name: str) -> bool:
        """``name`` is no longer away; False if they were not."""
        return self._away.pop(name_key(name), None) is not None

    def message(self, name: str) -> str | None:
        """The away message of ``name``, or None if they are not away."""
        away = self._away.get(name_key(name))
        return away[0] if away is not None else None

    def tell_once(self, sender: str, recipient: str) -> str | None:
        """
        The away message of ``recipient`` if ``sender`` has not been told it
        in this away period (and from now on has), else None.
        """
        away = self._away.get(name_key(recipient))
        if away is None:
            return None
        message, told = away
        key = name_key(sender)
        if key in told:
            return None
        told.add(key)
        return message

    def marked(self, names: Iterable[str]) -> list[str]:
        """``names`` with `` (away)`` after each away user's name, in the same order."""
        if not self._away:
            return list(names)
        away = self._away
        return [f"{name} (away)" if name_key(name) in away else name for name in names]
