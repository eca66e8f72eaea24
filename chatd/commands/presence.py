"""
Presence commands: ``/away [MESSAGE]``, ``/back`` and ``/whois NAME``
(docs/PROTOCOL.md, "Presence").

The state is :class:`chatd.presence.Presence` (``ChatFactory.presence``);
``/who``, ``/users`` and ``/msg`` (chatd.commands.builtin) show it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from chatd import errors
from chatd.commands.builtin import ANYWHERE, command
from chatd.commands.table import Arg, Caller, Login
from chatd.presence import AWAY_DEFAULT, AWAY_MAX, Whois


def _away_message(caller: Caller, message: str) -> str | None:
    return f"an away message has at most {AWAY_MAX} characters." if len(message) > AWAY_MAX else None


@command("away", "mark yourself away, with a MESSAGE for those who write to you",
         ANYWHERE, number="11", login=Login.REQUIRED, args=(Arg("MESSAGE", optional=True, check=_away_message),))
def away(caller: Caller, message: str) -> None:
    name = caller.session.name
    assert name is not None
    caller.factory.presence.set_away(name, message)
    caller.reply(f"You are marked as away: {message or AWAY_DEFAULT}")


@command("back", "you are back (no longer away)", ANYWHERE, number="12", login=Login.REQUIRED)
def back(caller: Caller) -> None:
    name = caller.session.name
    assert name is not None
    if not caller.factory.presence.back(name):
        raise errors.NotAllowed("you are not marked as away.")
    caller.reply("You are no longer marked as away.")


def duration_text(seconds: float) -> str:
    """
    A span of time for people, rounded down: ``42 s``, ``5 min``, ``2 h 5 min``,
    ``1 day 3 h``, ``27 days`` (negative spans, from a clock set back, are ``0 s``).
    """
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    if days < 2:
        return f"1 day {hours} h" if hours else "1 day"
    return f"{days} days"


def _utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, timezone.utc)


def whois_lines(whois: Whois) -> list[str]:
    """
    ``whois`` as the lines the line front-end shows (docs/PROTOCOL.md,
    "Presence"): the account's age, then, indented, online since (the time
    alone when it is today, UTC) or last seen, the away message, and the
    room it shares with the asker.
    """
    now = whois.at
    if whois.created is None:
        lines = [f"{whois.name}: account created before the server kept track"]
    else:
        lines = [f"{whois.name}: account created {_utc(whois.created):%Y-%m-%d} "
                 f"({duration_text(now - whois.created)} ago)"]
    if whois.online_since is not None:
        since = _utc(whois.online_since)
        shown = f"{since:%H:%M:%S}" if since.date() == _utc(now).date() else f"{since:%Y-%m-%d %H:%M:%S}"
        lines.append(f"  online since {shown} UTC ({duration_text(now - whois.online_since)})")
    elif whois.last_seen is not None:
        lines.append(f"  last seen {_utc(whois.last_seen):%Y-%m-%d %H:%M} UTC "
                     f"({duration_text(now - whois.last_seen)} ago)")
    else:
        lines.append("  never seen since the server kept track")
    if whois.away is not None:
        lines.append(f"  away: {whois.away}")
    if whois.shared_room:
        lines.append(f"  in {whois.shared_room} with you")
    return lines


@command("whois", "account age, online or last seen, away, your room if shared (never others)", ANYWHERE, number="16",
         login=Login.REQUIRED, args=(Arg("NAME", "Name of the user:"),))
def whois(caller: Caller, name: str) -> Whois:
    """
    Answers with :class:`~chatd.presence.Whois` (shown as
    :func:`whois_lines`); only the room the asker is in can be shown as a
    room in common, never another (privacy). Raises NoSuchUser.
    """
    factory = caller.factory
    answer = factory.presence.whois(name, factory.accounts, factory.online, caller.session, caller.room,
                                    factory.reactor.seconds())
    for line in whois_lines(answer):
        caller.reply(line)
    return answer
