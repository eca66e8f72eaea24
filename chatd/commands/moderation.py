"""
Room authority commands (issue 14; docs/PROTOCOL.md, "Room authority"):
``/op``, ``/deop``, ``/owner``, ``/kick``, ``/ban``, ``/unban``, ``/bans``,
``/mute``, ``/unmute``, ``/topic``, ``/invite-only``, ``/open-topic``,
``/secret``, ``/limit``, ``/key``, ``/moderated``, ``/voice``, ``/devoice``, ``/invite``, ``/uninvite``.

Who may use a command is declared (``role``: the table refuses the others
with ``only operators of lab may use /kick.``); whom it may act on is the check
of its NAME argument (:meth:`chatd.moderation.Moderation.target_refusal`),
so both hold for every front-end before the handler runs. The state and
its changes are ``chatd.moderation`` (``ChatFactory.moderation``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer

from chatd.commands.builtin import ROOM, command
from chatd.commands.table import Arg, Caller, Login
from chatd.moderation import (INVITE_ONLY, MODERATED, OPEN_TOPIC, REASON_MAX, SECRET, TOPIC_MAX, Role,
                              duration_and_reason, duration_text, key_problem, limit_problem)

OPERATOR, OWNER = Role.OPERATOR, Role.OWNER
#: What ``/topic`` takes to clear the topic.
CLEAR_TOPIC = "-"


def _target(caller: Caller, name: str) -> str | None:
    """NAME of kick, ban, mute, unban, unmute: an account the caller outranks in the room."""
    assert caller.room is not None
    return caller.factory.moderation.target_refusal(caller.room, caller.session.name, name)


def _kick_target(caller: Caller, name: str) -> str | None:
    """NAME of kick: anyone but the caller (the owner and operators too: ``Moderation.target_refusal``, ``kick``)."""
    assert caller.room is not None
    return caller.factory.moderation.target_refusal(caller.room, caller.session.name, name, kick=True)


def _account(caller: Caller, name: str) -> str | None:
    """NAME of invite, op, owner: an account."""
    return caller.factory.moderation.account_refusal(name)


def _known(caller: Caller, name: str) -> str | None:
    """NAME of invite, uninvite, op, deop: an account, or a user online without one (an IRC guest)."""
    return caller.factory.moderation.invitee_refusal(name)


#: NAME of ban, mute, unban, unmute; of kick; of owner; of invite, uninvite, op, deop.
TARGET = Arg("NAME", check=_target, word=True)
KICK_TARGET = Arg("NAME", check=_kick_target, word=True)
ACCOUNT = Arg("NAME", check=_account, word=True)
KNOWN = Arg("NAME", check=_known, word=True)


def _on_off(usage: str) -> Arg:
    def check(caller: Caller, value: str) -> str | None:
        return None if value.lower() in ("on", "off") else f"usage: {usage}"

    return Arg("ON_OFF", check=check)


def _may_set_topic(caller: Caller, text: str) -> str | None:
    """Setting the topic (reading it is for everyone): operators, or anyone if the owner turned open-topic on."""
    room = caller.room
    assert room is not None
    if not room.authority.open_topic:
        refused = caller.factory.moderation.role_refusal(room, caller.session.name, OPERATOR, "set its topic")
        if refused:
            return refused
    return f"a topic has at most {TOPIC_MAX} characters." if len(text) > TOPIC_MAX else None


def reason_problem(reason: str) -> str | None:
    """The one rule of every REASON argument: at most REASON_MAX characters."""
    return f"a reason has at most {REASON_MAX} characters." if len(reason) > REASON_MAX else None


def _reason(caller: Caller, text: str) -> str | None:
    return reason_problem(text)


def _duration_reason(caller: Caller, text: str) -> str | None:
    try:
        _, reason = duration_and_reason(text)
    except ValueError as error:
        return str(error)
    return reason_problem(reason)


def _whole(text: str) -> str:
    return text


def _reason_of(text: str) -> str:
    return duration_and_reason(text)[1]


#: Every REASON argument: ``/kick`` (ROOM_REASON), ``/disconnect``, ``/lock`` (chatd.commands.admin).
REASON = Arg("[REASON]", optional=True, check=_reason)
#: ``[DURATION] [REASON]`` of ``/ban``, ``/mute`` (ROOM_DURATION_REASON) and ``/banip``: a first word that looks like
#: a duration must be one (chatd.moderation.duration_and_reason); the reason as REASON.
DURATION_REASON = Arg("[DURATION] [REASON]", optional=True, check=_duration_reason)
#: A reason the room sees (kick, ban, mute): it is the user's text before the room, refused to a muted operator
#: (who may still act without one).
ROOM_REASON = attrs.evolve(REASON, said=_whole)
ROOM_DURATION_REASON = attrs.evolve(DURATION_REASON, said=_reason_of)


def _for(seconds: int) -> str:
    return f" for {duration_text(seconds)}" if seconds else " until lifted"


def _change(caller: Caller, change: Callable[..., defer.Deferred[str]], answer: str,
            *args: Any) -> defer.Deferred[None]:
    """
    ``change(room, by, *args)`` (a chatd.moderation.Moderation change) in
    the caller's room by the caller; once it is done (stored), answer
    ``answer`` with ``{name}`` (the account as stored) and ``{room}``.
    """
    room = caller.room
    assert room is not None and caller.session.name is not None
    d = change(room, caller.session.name, *args)
    return d.addCallback(lambda stored: caller.reply(answer.format(name=stored, room=room.name)))


@command("kick", "put NAME out of the room, telling them and the room REASON", ROOM, login=Login.REQUIRED,
         in_room=True, role=OPERATOR, args=(KICK_TARGET, ROOM_REASON))
def kick(caller: Caller, name: str, reason: str) -> None:
    assert caller.room is not None and caller.session.name is not None
    caller.factory.moderation.kick(caller.room, caller.session.name, name, reason)


@command("ban", "keep NAME out of the room for DURATION (30s, 10m, 2h, 7d, at most 366d; none: until /unban); "
         "a ban beats an invite", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(TARGET, ROOM_DURATION_REASON))
def ban(caller: Caller, name: str, text: str) -> defer.Deferred[None]:
    seconds, reason = duration_and_reason(text)
    answer = "{name} is banned from {room}" + _for(seconds) + "."
    return _change(caller, caller.factory.moderation.ban, answer, name, seconds, reason)


@command("unban", "lift the ban on NAME", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(TARGET,))
def unban(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.unban, "The ban on {name} is lifted.", name)


@command("bans", "list the room's bans", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR)
def bans(caller: Caller) -> None:
    room = caller.room
    assert room is not None
    lines = caller.factory.moderation.ban_lines(room)
    caller.reply(f"Bans in {room.name} ({len(lines)}): {', '.join(lines)}" if lines else f"No bans in {room.name}.")


@command("mute", "keep NAME from speaking in the room for DURATION (none: until /unmute)", ROOM,
         login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(TARGET, ROOM_DURATION_REASON))
def mute(caller: Caller, name: str, text: str) -> defer.Deferred[None]:
    seconds, reason = duration_and_reason(text)
    answer = "{name} is muted in {room}" + _for(seconds) + "."
    return _change(caller, caller.factory.moderation.mute, answer, name, seconds, reason)


@command("unmute", "let NAME speak again", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(TARGET,))
def unmute(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.unmute, "{name} may speak again.", name)


@command("topic", f"show the topic; with TEXT set it (operators), with {CLEAR_TOPIC} clear it", ROOM,
         login=Login.REQUIRED, in_room=True,
         args=(Arg("[TEXT]", optional=True, check=_may_set_topic, said=_whole),))
def topic(caller: Caller, text: str) -> defer.Deferred[None] | None:
    room = caller.room
    assert room is not None and caller.session.name is not None
    if not text:
        caller.reply(f"Topic of {room.name}: {room.authority.topic}" if room.authority.topic
                     else f"{room.name} has no topic.")
        return None
    return caller.factory.moderation.set_topic(room, caller.session.name, "" if text == CLEAR_TOPIC else text)


def _setting(caller: Caller, setting: str, value: str) -> defer.Deferred[None]:
    room = caller.room
    assert room is not None and caller.session.name is not None
    on = value.lower() == "on"
    shown = setting.replace("_", "-")

    def answer(changed: bool) -> None:
        if not changed:
            caller.reply(f"{shown} is {'on' if on else 'off'} in {room.name} already.")

    return caller.factory.moderation.set_setting(room, caller.session.name, setting, on).addCallback(answer)


@command("invite-only", "on: only invited accounts, operators and the owner may enter", ROOM, login=Login.REQUIRED,
         in_room=True, role=OPERATOR, args=(_on_off("/invite-only on|off"),))
def invite_only(caller: Caller, value: str) -> defer.Deferred[None]:
    return _setting(caller, INVITE_ONLY, value)


@command("secret", "on: the room is hidden from the room list, info and /users of all but its members, "
         "owner, operators and invitees", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(_on_off("/secret on|off"),))
def secret(caller: Caller, value: str) -> defer.Deferred[None]:
    return _setting(caller, SECRET, value)


def _limit_arg(caller: Caller, value: str) -> str | None:
    problem = None if value.lower() == "off" else limit_problem(value)
    return f"usage: /limit N|off ({problem})" if problem else None


def _key_arg(caller: Caller, value: str) -> str | None:
    return None if value.lower() == "off" else key_problem(value)


@command("limit", "N: at most N members in the room (invitees, operators and the owner still enter); off: none",
         ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR, args=(Arg("N|off", check=_limit_arg, word=True),))
def limit(caller: Caller, value: str) -> defer.Deferred[None]:
    room = caller.room
    assert room is not None and caller.session.name is not None
    number = 0 if value.lower() == "off" else int(value)

    def answer(changed: bool) -> None:
        if not changed:
            caller.reply(f"The member limit of {room.name} is {number or 'off'} already.")

    return caller.factory.moderation.set_limit(room, caller.session.name, number).addCallback(answer)


@command("key", "KEY: others enter only with 'join ROOM KEY' (invitees, operators and the owner need none); "
         "off: no key", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(Arg("KEY|off", check=_key_arg, word=True),))
def key(caller: Caller, value: str) -> defer.Deferred[None]:
    room = caller.room
    assert room is not None and caller.session.name is not None
    new = "" if value.lower() == "off" else value

    def answer(changed: bool) -> None:
        if new:
            caller.reply(f"The key of {room.name} is {new}: others enter with 'join {room.name} {new}'.")
        elif not changed:
            caller.reply(f"{room.name} has no key.")

    return caller.factory.moderation.set_key(room, caller.session.name, new).addCallback(answer)


@command("open-topic", "on: anyone in the room may set the topic", ROOM, login=Login.REQUIRED, in_room=True,
         role=OWNER, args=(_on_off("/open-topic on|off"),))
def open_topic(caller: Caller, value: str) -> defer.Deferred[None]:
    return _setting(caller, OPEN_TOPIC, value)


@command("moderated", "on: only voiced members, operators and the owner may speak", ROOM, login=Login.REQUIRED,
         in_room=True, role=OPERATOR, args=(_on_off("/moderated on|off"),))
def moderated(caller: Caller, value: str) -> defer.Deferred[None]:
    return _setting(caller, MODERATED, value)


@command("voice", "let NAME speak while the room is moderated", ROOM, login=Login.REQUIRED, in_room=True,
         role=OPERATOR, args=(KNOWN,))
def voice(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.set_voice, "{name} is voiced in {room}.", name, True)


@command("devoice", "take NAME's voice away", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(KNOWN,))
def devoice(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.set_voice, "{name} is no longer voiced in {room}.", name, False)


@command("invite", "let NAME (online or not) enter the invite-only room; a ban beats an invite", ROOM,
         login=Login.REQUIRED, in_room=True, role=OPERATOR, args=(KNOWN,))
def invite(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.invite, "{name} is invited to {room}.", name, True)


@command("uninvite", "withdraw NAME's invitation", ROOM, login=Login.REQUIRED, in_room=True, role=OPERATOR,
         args=(KNOWN,))
def uninvite(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.invite, "{name} is no longer invited to {room}.", name, False)


@command("op", "make NAME an operator of the room", ROOM, login=Login.REQUIRED, in_room=True, role=OWNER,
         args=(KNOWN,))
def op(caller: Caller, name: str) -> defer.Deferred[None]:
    return _change(caller, caller.factory.moderation.set_operator, "{name} is an operator of {room}.", name, True)


@command("deop", "take NAME's operator role away (your own name: put yours down, keeping the room; /op takes it "
         "back)", ROOM, login=Login.REQUIRED, in_room=True, role=OWNER,
         args=(KNOWN,))
def deop(caller: Caller, name: str) -> defer.Deferred[None]:
    answer = "{name} is no longer an operator of {room}."
    return _change(caller, caller.factory.moderation.set_operator, answer, name, False)


@command("owner", "give the room to NAME (you stay an operator)", ROOM, login=Login.REQUIRED, in_room=True,
         role=OWNER, args=(ACCOUNT,))
def owner(caller: Caller, name: str) -> defer.Deferred[None]:
    answer = "{name} owns {room} now; you are one of its operators."
    return _change(caller, caller.factory.moderation.give, answer, name)
