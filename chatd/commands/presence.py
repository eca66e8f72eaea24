"""
Presence commands: ``/away [MESSAGE]`` and ``/back`` (docs/PROTOCOL.md, "Presence").

The state is :class:`chatd.presence.Presence` (``ChatFactory.presence``);
``/who``, ``/users`` and ``/msg`` (chatd.commands.builtin) show it.
"""

from __future__ import annotations

from chatd import errors
from chatd.commands.builtin import ANYWHERE, command
from chatd.commands.table import Arg, Caller, Login
from chatd.presence import AWAY_DEFAULT, AWAY_MAX


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
