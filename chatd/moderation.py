"""
Room authority (issue 14, docs/PROTOCOL.md "Room authority"): who may do
what in a room, and the per-room state it works on.

Each room has an :class:`Authority`: its topic, its settings (invite-only,
open topic, moderated), its operators, voiced members, bans, mutes and invitations. :class:`Moderation`
(``ChatFactory.moderation``) changes them: durably first
(``Store.set_room_values`` with the action's ``LogEvent``), then in memory,
then as a room event (``ChatFactory.publish``: history and every member see
it). Timed bans and mutes end on a reactor timer, also after a restart
(:meth:`Moderation.restore` schedules them; those that ended while the
server was down are lifted at once).

The roles come from IRC channel operators (RFC 2812 section 3.2.8 KICK,
RFC 2811 modes +o +v +b +i +m +s): the owner (the room's creator, ``Room.owner``)
may do anything to anyone but himself; an operator bans and mutes members
only; nobody bans, mutes or deops the owner; any operator kicks anyone (the
owner too, as ngIRCd and InspIRCd treat a channel's creator); the owner may
put its operator role down and take it back (:meth:`Moderation.set_operator`).
Voice and moderated rooms are RFC 2811's ``+v`` and ``+m`` (section 4.2.3):
in a moderated room only voiced members, operators and the owner speak;
voice gives nothing else (not the topic under ``+t``, as ngIRCd and InspIRCd).
Timed bans and mutes follow ergo (ergo#1513, ergo#307) and InspIRCd's
``m_timedbans``; a ban beats an invitation, as InspIRCd's ``+b`` beats
``INVITE`` (only its ``override`` module lifts that).
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import parse_qsl, urlencode

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import errors
from chatd.core.events import EventKind
from chatd.limits import FLOOD_CUT, TokenBucket
from chatd.store import EventName, LogEvent, RoomValue, RoomValueKind, StoreError
from chatd.text import USER_NAME_MAX, name_key, unknown_name

if TYPE_CHECKING:
    from chatd.core.ports import Session
    from chatd.factory import ChatFactory, Room

T = TypeVar("T")

#: What a duration is typed as: ASCII digits and one unit (``30s``, ``10m``, ``2h``, ``7d``).
_DURATION = re.compile(r"([0-9]{1,6})([smhd])\Z")
#: A word that looks like a duration, so must be one: a digit of any script first, maybe after a sign or a point.
_LOOKS_LIKE_DURATION = re.compile(r"[+-]?\.?\d")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest timed ban or mute (366 days); longer is refused.
DURATION_MAX = 366 * 86400
NOT_A_DURATION = "not a duration: use 30s, 10m, 2h or 7d (at most 366 days)."
#: The longest reason of a kick, ban, mute, lock, disconnection or address ban (every REASON argument).
REASON_MAX = 200
#: How much of a topic the room list shows; the longest topic (IRC servers allow about 300-390).
TOPIC_SHOWN = 40
TOPIC_MAX = 300
#: The settings a room has (``/invite-only``, ``/open-topic``, ``/secret``, ``/moderated``): their
#: stored keys.
INVITE_ONLY = "invite_only"
OPEN_TOPIC = "open_topic"
SECRET = "secret"
MODERATED = "moderated"
#: A room's member limit and key (``/limit``, ``/key``; IRC ``+l``, ``+k``): their stored keys.
LIMIT = "limit"
KEY = "key"
#: The largest member limit; the longest key (RFC 2812 §2.3.1: 1 to 23 characters).
LIMIT_MAX = 100_000
KEY_MAX = 23
#: Stored (a ``setting``) while the owner has put its operator role down (``/deop`` of itself, IRC ``-o``).
OWNER_DOWN = "owner_down"
#: The key of the ``topic`` value saying who set the topic and when (the topic's text is key "").
TOPIC_SET = "set"
#: How the room's lines name the server (a flood mute, a ban that ran out).
SERVER_NAME = "chatd"


class Role(enum.IntEnum):
    """What someone is in a room: the owner outranks operators, who outrank voiced members, who outrank members."""

    MEMBER = 0
    VOICED = 1
    OPERATOR = 2
    OWNER = 3


def key_problem(key: str) -> str | None:
    """
    Why ``key`` cannot be a room's key, or None: 1 to KEY_MAX printable ASCII
    characters, no space (RFC 2812 §2.3.1) and no comma (JOIN's lists).
    """
    if not 0 < len(key) <= KEY_MAX or any(not "!" <= char <= "~" or char == "," for char in key):
        return f"a key is 1 to {KEY_MAX} ASCII letters, digits or signs, without spaces or commas."
    return None


def limit_problem(text: str) -> str | None:
    """Why ``text`` is no member limit (1 to LIMIT_MAX, ASCII digits), or None."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= LIMIT_MAX:
        return f"a member limit is a number from 1 to {LIMIT_MAX}."
    return None


def parse_duration(text: str) -> int | None:
    """``30s``, ``10m``, ``2h``, ``7d`` as seconds (1 to DURATION_MAX); None if ``text`` is no such duration."""
    match = _DURATION.match(text.lower())
    if match is None:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return seconds if 0 < seconds <= DURATION_MAX else None


def duration_and_reason(text: str) -> tuple[int, str]:
    """
    ``[DURATION] [REASON]`` (``/ban``, ``/mute``, ``/banip``): the seconds (0:
    until lifted) and the reason. A first word that looks like a duration
    (``367d``, ``0s``, ``1h30m``, ``1.5h``, ``-5m``, ``５m``) must be one
    (:func:`parse_duration`): else ValueError(:data:`NOT_A_DURATION`), never
    a silent ban until lifted with the word as its reason.
    """
    first, _, rest = text.strip().partition(" ")
    if not _LOOKS_LIKE_DURATION.match(first):
        return 0, text.strip()
    seconds = parse_duration(first)
    if seconds is None:
        raise ValueError(NOT_A_DURATION)
    return seconds, rest.strip()


def duration_text(seconds: float) -> str:
    """Seconds as the largest whole unit: ``2h``, ``90s``, ``7d``."""
    seconds = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def until_text(until: float, now: float) -> str:
    """The end of a timed ban or mute: ``14:00 UTC`` within a day from ``now``, else ``2026-12-01 14:00 UTC``."""
    moment = datetime.fromtimestamp(int(until), timezone.utc)
    if until - now < 86400:
        return f"{moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def iso(seconds: float) -> str:
    """Seconds since the epoch as ISO-8601 UTC (log.csv's ``until``)."""
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen(slots=True)
class Sanction:
    """
    A ban or a mute: ``by`` whom ("" : the server), ``until`` (seconds since
    the epoch; 0: until lifted), why, ``at``: when it was set (seconds since
    the epoch; 0: not known, one stored before this was kept).
    """

    by: str
    until: float
    reason: str
    at: float = 0.0

    def encode(self) -> str:
        """As stored (``RoomValue.value``): ``until=1790003600&by=ann&reason=spam&at=1790000000``."""
        fields = {"until": str(int(self.until)), "by": self.by, "reason": self.reason}
        if self.at:
            fields["at"] = str(int(self.at))
        return urlencode(fields)

    @classmethod
    def decode(cls, value: str) -> Sanction:
        fields = dict(parse_qsl(value, keep_blank_values=True))
        until, at = fields.get("until", "0"), fields.get("at", "0")
        return cls(fields.get("by", ""), float(until) if until.isdigit() else 0.0, fields.get("reason", ""),
                   float(at) if at.isdigit() else 0.0)

    def over(self, now: float) -> bool:
        return bool(self.until) and self.until <= now


@attrs.define(slots=True, eq=False)
class Authority:
    """One room's authority state; keys are account name keys (``chatd.text.name_key``)."""

    topic: str = ""
    #: Who set the topic ("": the server) and when (seconds since the epoch; 0: unknown, set before issue 16).
    topic_by: str = ""
    topic_at: float = 0.0
    invite_only: bool = False
    open_topic: bool = False
    #: Hidden from all but its members, owner, operators and invitees (``/secret``; IRC ``+s``).
    secret: bool = False
    #: At most this many members (0: no limit; ``/limit``, IRC ``+l``).
    limit: int = 0
    #: The key a join must give ("": none; ``/key``, IRC ``+k``). Stored as other room values; never logged.
    key: str = ""
    #: The owner has put its operator role down (:meth:`Moderation.set_operator` on itself): it acts as a member.
    owner_down: bool = False
    #: Only voiced members, operators and the owner speak (``/moderated``, IRC ``+m``).
    moderated: bool = False
    #: Operators: name key -> "1".
    operators: dict[str, str] = attrs.field(factory=dict)
    #: Voiced members (``/voice``, IRC ``+v``; an operator may be voiced too): name key -> "1".
    voiced: dict[str, str] = attrs.field(factory=dict)
    bans: dict[str, Sanction] = attrs.field(factory=dict)
    #: Mutes (also ``Room.muted``: the say path's one check).
    mutes: dict[str, Sanction] = attrs.field(factory=dict)
    #: Invited accounts: name key -> who invited them.
    invites: dict[str, str] = attrs.field(factory=dict)
    #: The timers ending timed bans and mutes: (kind, key) -> call.
    timers: dict[tuple[str, str], IDelayedCall] = attrs.field(factory=dict)
    #: The room's changes run one at a time, each checked once those before it are written
    #: (:meth:`Moderation._in_turn`).
    turn: defer.DeferredLock = attrs.field(factory=defer.DeferredLock, repr=False)

    def drop_roles(self, key: str) -> None:
        """The roles of name key ``key`` (operator, voice) are gone: its account, or a guest's session, ended."""
        self.operators.pop(key, None)
        self.voiced.pop(key, None)


def _not_saved(what: str) -> Callable[[Any], NoReturn]:
    """An errback: a StoreError becomes NotSaved (``what (server storage problem); try again later.``)."""

    def failed(failure: Any) -> NoReturn:
        failure.trap(StoreError)
        raise errors.NotSaved(f"{what} (server storage problem); try again later.")

    return failed


class Moderation:
    """The rules of room authority and its changes, for :class:`~chatd.factory.ChatFactory`."""

    log = Logger()

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory

    # -- reading the state ------------------------------------------------------------

    def owns(self, room: Room, name: str | None) -> bool:
        """Whether the account ``name`` owns ``room`` (its operator role put down or not)."""
        return bool(name) and bool(room.owner) and name_key(room.owner) == name_key(name or "")

    def role(self, room: Room, name: str | None) -> Role:
        """
        What the account ``name`` is in ``room``: OWNER, or MEMBER while the
        owner has put its operator role down (:meth:`set_operator`: marks and
        rights follow; it stays the owner, :meth:`owns`), OPERATOR, VOICED or MEMBER.
        """
        if not name:
            return Role.MEMBER
        key = name_key(name)
        if room.owner and name_key(room.owner) == key:
            if not room.authority.owner_down:
                return Role.OWNER
        authority = room.authority
        if key in authority.operators:
            return Role.OPERATOR
        return Role.VOICED if key in authority.voiced else Role.MEMBER

    def marks(self, room: Room, name: str) -> str:
        """
        Every role mark of ``name`` in ``room``, highest first, as IRC's
        multi-prefix lists them: ``@`` the owner (its role not put down) or an
        operator, ``+`` voiced (``@+`` both); "" for a member.
        """
        op = "@" if self.role(room, name) >= Role.OPERATOR else ""
        return op + ("+" if name_key(name) in room.authority.voiced else "")

    def acting_role(self, room: Room, name: str | None) -> Role:
        """
        The role the account ``name`` acts with in ``room``: its role, and at
        least OPERATOR for a server admin (``ChatFactory.is_admin``) in every
        room, public too (IRC operators' override of channel modes; InspIRCd's
        ``override`` module). Marks (``/who``) and whom others may act on
        follow :meth:`role`.
        """
        role = self.role(room, name)
        return max(role, Role.OPERATOR) if role < Role.OPERATOR and self.factory.is_admin(name) else role

    def allowed(self, room: Room, name: str | None, needed: Role) -> bool:
        """
        Whether the account ``name`` acts with the role ``needed`` in ``room``
        (:meth:`acting_role`); the owner's own commands (OWNER) stay the
        owner's while it has put its operator role down, so it can take it
        back (``/op`` of itself, as a founder regains ``+o`` through
        services in ergo or Atheme's ChanServ ``OP``).
        """
        return self.acting_role(room, name) >= needed or (needed is Role.OWNER and self.owns(room, name))

    def role_refusal(self, room: Room, name: str | None, needed: Role, action: str) -> str | None:
        """
        Why the account ``name`` may not ``action`` (``use /kick``, ``set its
        topic``) in ``room``, which needs the role ``needed`` (:meth:`allowed`);
        or None. ``public`` has no owner: only server admins moderate it.
        """
        if self.allowed(room, name, needed):
            return None
        if not room.owner:
            return f"{room.name} has no owner." if needed is Role.OWNER and self.factory.is_admin(name) \
                else f"only server admins moderate {room.name}."
        who = "the owner" if needed is Role.OWNER else "operators"
        return f"only {who} of {room.name} may {action}."

    def operators(self, room: Room, voiced: bool = False) -> list[str]:
        """The names of ``room``'s operators (``voiced``: its voiced members) as their accounts are stored, by name."""
        table = room.authority.voiced if voiced else room.authority.operators
        return sorted((self.display(key) for key in table), key=name_key)

    def display(self, key: str) -> str:
        """The account of name key ``key`` as stored (the key itself if it is gone)."""
        record = self.factory.accounts.get(key)
        return record.name if record is not None else key

    def _sanction(self, table: dict[str, Sanction], name: str | None) -> Sanction | None:
        """The ban or mute of ``name`` in ``table`` that has not ended, or None."""
        if not table or not name:
            return None
        sanction = table.get(name_key(name))
        if sanction is None or sanction.over(self.factory.reactor.seconds()):
            return None
        return sanction

    def _until(self, sanction: Sanction) -> str:
        return f" until {until_text(sanction.until, self.factory.reactor.seconds())}" if sanction.until else ""

    def join_refusal(self, room: Room, name: str | None) -> str | None:
        """
        Why the account ``name`` may not enter ``room`` (a ban; invite-only), or None. A ban beats an invite.
        Nothing refuses the owner or a server admin (operator rights in every room, :meth:`acting_role`, and
        more: as InspIRCd's ``override`` module lets an IRC operator pass ``+b``, ``+i``, ``+k`` and ``+l``).
        """
        if self.owns(room, name) or self.factory.is_admin(name):
            return None
        ban = self._sanction(room.authority.bans, name)
        if ban is not None:
            return f"you are banned from {room.name}{self._until(ban)}" + (f": {ban.reason}" if ban.reason else ".")
        if room.authority.invite_only and not self._invited(room, name):
            return f"{room.name} is invite-only; ask one of its operators for an /invite."
        return None

    def entry_refusal(self, room: Room, name: str | None, key: str = "") -> errors.NotAllowed | None:
        """
        Why the account ``name`` may not enter ``room`` giving ``key``, or
        None: :meth:`join_refusal` (ban, invite-only), then BadRoomKey (the
        room has another key), then RoomFull (its member limit reached, on
        every node), the order of ngIRCd's ``join_allowed`` (irc-channel.c).
        The owner, operators, invitees and server admins need no key and pass
        the limit (an invitation overrides ``+l``: modern.ircdocs.horse; ngIRCd
        lets it pass a ban and ``+i`` only, but a chatd invitation is a lasting
        member list, which ``/uninvite`` withdraws).
        """
        refused = self.join_refusal(room, name)
        if refused:
            return errors.NotAllowed(refused)
        authority = room.authority
        if not (authority.key or authority.limit) or self._invited(room, name) or self.factory.is_admin(name):
            return None
        if authority.key and not hmac.compare_digest(key.encode(), authority.key.encode()):
            return errors.BadRoomKey(f"{room.name} has a key: join {room.name} KEY."
                                     if not key else f"wrong key for {room.name}.")
        if authority.limit:
            from chatd.nodes import members_everywhere  # (here: chatd.nodes imports chatd.admin, which imports this)

            if len(members_everywhere(self.factory, room)) >= authority.limit:
                return errors.RoomFull(f"{room.name} is full ({authority.limit} members).")
        return None

    def _invited(self, room: Room, name: str | None) -> bool:
        """Whether the account ``name`` may enter ``room`` while it is invite-only: invited, an operator, the owner."""
        if not name:
            return False
        return (self.owns(room, name) or self.role(room, name) >= Role.OPERATOR
                or name_key(name) in room.authority.invites)

    def may_see(self, room: Room, name: str | None) -> bool:
        """
        Whether ``room`` is shown to the account ``name`` in ``list`` and
        ``info`` (IRC: LIST, NAMES, WHO, WHOIS): an invite-only room only to
        those who may enter it; a secret room only to its members, its owner,
        operators and invitees (RFC 2812 §3.2.6: a secret channel is listed
        to its members only; chatd's lasting roles count as membership); every
        room to server admins (``ChatFactory.is_admin``).
        """
        authority = room.authority
        if not (authority.invite_only or authority.secret) or self.factory.is_admin(name):
            return True
        return self._invited(room, name) or (bool(name) and self.member(room, name or "") is not None)

    def mute_refusal(self, room: Room, name: str | None) -> str | None:
        """
        Why the account ``name`` may not speak in ``room``, or None: it is
        muted (a mute beats a voice: it names the member); the room is
        moderated and it is neither voiced nor an operator, the owner (its
        operator role put down too: it owns the room) or a server admin
        (RFC 2811 4.2.3 ``+m``; IRC's 404 ERR_CANNOTSENDTOCHAN).
        """
        mute = self._sanction(room.authority.mutes, name)
        if mute is not None:
            return f"you are muted in {room.name}{self._until(mute)}" + (f": {mute.reason}" if mute.reason else ".")
        if room.authority.moderated and self.acting_role(room, name) is Role.MEMBER and not self.owns(room, name):
            return f"{room.name} is moderated: only voiced members and operators may speak."
        return None

    def target_refusal(self, room: Room, actor: str | None, target: str, kick: bool = False) -> str | None:
        """
        Why ``actor`` may not act (kick, ban, mute, and lift them) on the
        account ``target`` in ``room``: there is no such account, it is
        the actor, or it ranks as high as the actor (an operator bans and
        mutes members only; the owner operators too; nobody the owner).
        ``kick``: anyone but the actor (any operator kicks any member, RFC
        2812 §3.2.8, the owner included, as ngIRCd's and InspIRCd's channel
        creator is an ordinary operator: a kick only puts out, and the owner
        may come back at once, which no ban or invite-only stops).
        """
        name = self.known(target)
        if name is None:
            return unknown_name(target, "user", USER_NAME_MAX, f"There is no user called {target}.")
        if actor and name_key(actor) == name_key(name):
            return "you cannot do that to yourself."
        if kick:
            return None
        if self.owns(room, name):
            return f"{name} owns {room.name}; nobody can do that to its owner."
        theirs = self.role(room, name)
        if theirs >= self.acting_role(room, actor):
            return f"{name} is an operator of {room.name}; only its owner can do that."
        return None

    def known(self, target: str) -> str | None:
        """
        The name of the account ``target`` as stored, or of the online user
        of that name without one (an IRC guest: ``--irc-guests``), whom a
        kick, ban, mute or invitation may name as well; None if neither.
        """
        key = name_key(target)
        record = self.factory.accounts.get(key)
        if record is not None:
            return record.name
        session = self.factory.online.get(key)
        return session.name if session is not None and self.factory.is_guest(target) else None

    def invitee_refusal(self, target: str) -> str | None:
        """Why ``target`` cannot be invited (no account, nobody online of that name: :meth:`known`), or None."""
        if self.known(target) is None:
            return unknown_name(target, "user", USER_NAME_MAX, f"There is no user called {target}.")
        return None

    def account_refusal(self, target: str) -> str | None:
        """Why ``target`` is not an account one can invite, make an operator or give a room to; or None."""
        if self.factory.accounts.get(name_key(target)) is None:
            return unknown_name(target, "user", USER_NAME_MAX, f"There is no user called {target}.")
        return None

    def topic_shown(self, room: Room) -> str:
        """The topic as the room list shows it: at most TOPIC_SHOWN characters (cut after a word, with ...)."""
        topic = room.authority.topic
        if len(topic) <= TOPIC_SHOWN:
            return topic
        cut = topic[: TOPIC_SHOWN - 3]
        return (cut[: cut.rindex(" ")] if " " in cut else cut).rstrip() + "..."

    def ban_lines(self, room: Room) -> list[str]:
        """``bob (until 14:00 UTC, by ann: spam)`` for each ban in ``room`` that has not ended, by name."""
        now = self.factory.reactor.seconds()
        lines = []
        for key, ban in sorted(room.authority.bans.items()):
            if ban.over(now):
                continue
            until = f"until {until_text(ban.until, now)}" if ban.until else "until lifted"
            by = ban.by or SERVER_NAME
            lines.append(f"{self.display(key)} ({until}, by {by}" + (f": {ban.reason})" if ban.reason else ")"))
        return lines

    # -- start, stop, forgetting ------------------------------------------------------------

    def restore(self, values: Mapping[str, Mapping[tuple[str, str], str]]) -> None:
        """
        Take over the stored per-room values (``Loaded.room_values``): the
        timers of timed bans and mutes start; those over already are lifted
        at once (an ``unban``/``unmute`` event and row, by nobody).
        """
        by_id = {room.history.room_id: room for room in self.factory.rooms.values()}
        for room_id, room_values in values.items():
            room = by_id.get(room_id)
            if room is None:
                continue
            for (kind, key), value in room_values.items():
                self._apply(room, kind, key, value, timers=True)

    def _apply(self, room: Room, kind: str, key: str, value: str, timers: bool) -> None:
        """
        One stored value (``RoomValue``: kind, key, value; value "": none) in
        ``room``'s authority: at start-up (:meth:`restore`) and when another
        node changed it (:meth:`changed_elsewhere`). ``timers``: a timed ban or
        mute ends on a timer here (only on the node that set it, else every
        node would lift it; elsewhere it stops counting at its end,
        :meth:`Sanction.over`, and the lifting node shares the lift).
        """
        authority = room.authority
        if kind == "topic" and key == TOPIC_SET:
            fields = dict(parse_qsl(value))
            authority.topic_by, at = fields.get("by", ""), fields.get("at", "0")
            authority.topic_at = float(at) if at.isdigit() else 0.0
        elif kind == "topic":
            authority.topic = value
        elif kind == "setting":
            if key == INVITE_ONLY:
                authority.invite_only = value == "on"
            elif key == OPEN_TOPIC:
                authority.open_topic = value == "on"
            elif key == SECRET:
                authority.secret = value == "on"
            elif key == OWNER_DOWN:
                authority.owner_down = value == "on"
            elif key == LIMIT:
                authority.limit = int(value) if value.isascii() and value.isdigit() else 0
            elif key == KEY:
                authority.key = value
            elif key == MODERATED:
                authority.moderated = value == "on"
        elif kind == "owner":
            room.owner = value
        elif kind in ("op", "voice", "invite", "ban", "mute"):
            tables: dict[str, dict[str, Any]] = {"op": authority.operators, "voice": authority.voiced,
                                                 "invite": authority.invites, "ban": authority.bans,
                                                 "mute": authority.mutes}
            table = tables[kind]
            if not value:
                table.pop(key, None)
                if kind in ("ban", "mute"):
                    self._schedule(room, kind, key, 0.0)
            elif kind == "op" or kind == "voice":
                table[key] = value
            elif kind == "invite":
                table[key] = dict(parse_qsl(value)).get("by", "")
            else:
                sanction = Sanction.decode(value)
                table[key] = sanction
                if sanction.until and timers:
                    self._schedule(room, kind, key, sanction.until)

    def _share(self, room: Room, values: Sequence[tuple[str, str, str]]) -> None:
        """
        Tell the other nodes (``Bus.share``: ``["room_values", ROOM,
        [[KIND, KEY, VALUE], ...]]``) that ``room``'s stored values changed
        here; they apply them with :meth:`changed_elsewhere`.
        """
        self.factory.bus.share(["room_values", room.name, [list(value) for value in values]])

    def changed_elsewhere(self, room: Room, values: Sequence[Sequence[str]]) -> None:
        """
        Another node changed ``room``'s values (:meth:`_share`): applied as at
        start-up (:meth:`_apply`), then this node's members of the room that
        are banned now are taken out of it (told as on the node that banned
        them); the room event itself comes through the bus like any other.
        """
        for kind, key, value in values:
            self._apply(room, kind, key, value, timers=False)
        for kind, key, value in values:
            if kind == "ban" and value:
                sanction = Sanction.decode(value)
                seconds = max(1, round(sanction.until - self.factory.reactor.seconds())) if sanction.until else 0
                self._banned(room, self.display(key), sanction.by, seconds, sanction.reason)

    def kicked_elsewhere(self, room: Room, by: str, target: str, reason: str) -> None:
        """Another node kicked ``target`` from ``room`` (``["kick", ROOM, BY, TARGET, REASON]``): out of it here too."""
        member = self.member(room, target)
        if member is not None:
            self._take_out(room, member, by, reason)

    def forget(self, room: Room) -> None:
        """``room`` is deleted (its values with it): its timers stop."""
        for timer in room.authority.timers.values():
            if timer.active():
                timer.cancel()
        room.authority.timers.clear()

    def stop(self) -> None:
        """The server stops: every timer stops (a restart schedules them again)."""
        for room in self.factory.rooms.values():
            self.forget(room)

    def account_deleted(self, key: str) -> None:
        """The account of name key ``key`` is gone (the store deleted its values): so are its roles and sanctions."""
        for room in self.factory.rooms.values():
            authority = room.authority
            authority.drop_roles(key)
            authority.invites.pop(key, None)
            authority.bans.pop(key, None)
            authority.mutes.pop(key, None)
            for kind in ("ban", "mute"):
                timer = authority.timers.pop((kind, key), None)
                if timer is not None and timer.active():
                    timer.cancel()

    # -- changes ------------------------------------------------------------------------------

    def _save(self, room: Room, values: Sequence[RoomValue], event: LogEvent, what: str,
              effect: Callable[[], Any] | None = None) -> defer.Deferred[Any]:
        """
        Store ``values`` with ``event``, run ``effect`` (fires with what it
        returns), then share the values with the other nodes (:meth:`_share`):
        the room events ``effect`` publishes come before the change in the
        stream's order, so another node's reaction to the change (a ban's
        KICK) comes after them. A StoreError becomes NotSaved (``what (server
        storage problem)...``).
        """
        def saved(_: None) -> Any:
            result = effect() if effect is not None else None
            self._share(room, [(value.kind, value.key, value.value) for value in values])
            return result

        return self.factory.store.set_room_values(values, event).addCallbacks(saved, _not_saved(what))

    def _value(self, room: Room, kind: RoomValueKind, key: str, value: str) -> RoomValue:
        return RoomValue(room.history.room_id, kind, key, value)

    def _in_turn(self, room: Room, work: Callable[[], defer.Deferred[T]]) -> defer.Deferred[T]:
        """
        Run ``work`` (a change of ``room``'s authority: its check, its write,
        its effect in memory and its event) once the room's changes before it
        are done: from any front-end, the changes of one room apply in the
        order asked, each checked against the state the ones before it left
        (IRC's ``MODE #lab +v-v erin erin`` ends -v; ``+vvv erin erin erin``
        voices once, then "already voiced" twice). At once if none runs.
        """
        return room.authority.turn.run(work)

    def _publish(self, room: Room, by: str, kind: EventKind, text: str = "", target: str = "",
                 until: float = 0.0) -> None:
        if self.factory.rooms.get(room.key) is room:  # (not deleted meanwhile)
            self.factory.publish(room, by, kind, text, target, until)

    def _banned(self, room: Room, target: str, by: str, seconds: int, reason: str) -> None:
        """Take the account ``target``, banned by ``by`` for ``seconds`` (0: until lifted), out of ``room`` if it is in it."""
        member = self.member(room, target)
        if member is not None:
            # The room sees the member go as for a kick (IRC: a KICK by the operator, as servers enforcing bans do).
            self._publish(room, by, EventKind.KICK, reason or "Banned", member.name or target)
            self.factory.remove_member(room, member, "banned")
            for_how_long = f" for {duration_text(seconds)}" if seconds else ""
            member.removed(room, f"You were banned from {room.name} by {by or SERVER_NAME}{for_how_long}"
                           + (f": {reason}" if reason else ""), f"you were banned from {room.name}")

    def member(self, room: Room, target: str) -> Session | None:
        """The session of the account ``target`` in ``room``, or None."""
        key = name_key(target)
        for member in room.fanout.members():
            if member.name is not None and name_key(member.name) == key:
                return member
        return None

    def kick(self, room: Room, by: str, target: str, reason: str) -> None:
        """
        Take ``target`` (a member) out of ``room``: the room sees a KICK
        event, ``target`` is told and stays in chat mode until ``/exit``
        (as for a deleted room); a ``kick`` row. Raises NoSuchUser if
        ``target`` is not in the room.
        """
        member = self.member(room, target)
        if member is not None:
            name = member.name or target
        else:  # a member on another node (Bus.elsewhere): its node takes it out (chatd.nodes, kicked)
            key = name_key(target)
            name = next((there for there in self.factory.bus.elsewhere(room.name) if name_key(there) == key), "")
            if not name:
                raise errors.NoSuchUser(f"{target} is not in {room.name}.")
        self.factory.store.log_event("kick", by, room.name, target=name, reason=reason)
        self._publish(room, by, EventKind.KICK, reason, name)  # (the kicked member sees it too)
        self.factory.bus.share(["kick", room.name, by, name, reason])
        if member is not None:
            self._take_out(room, member, by, reason)

    def _take_out(self, room: Room, member: Session, by: str, reason: str) -> None:
        """The member ``member`` kicked from ``room`` by ``by`` (here or on another node) leaves it, told why."""
        self.factory.remove_member(room, member, "kicked")
        member.removed(room, f"You were kicked from {room.name} by {by or SERVER_NAME}"
                       + (f": {reason}" if reason else ""),
                       f"you were kicked from {room.name}")

    def _sanction_event(self, room: Room, kind: str, by: str, target: str, until: float, reason: str) -> LogEvent:
        name: EventName = "ban" if kind == "ban" else "mute"
        return LogEvent(name, by, room.name, {"target": target, "until": iso(until) if until else "",
                                              "reason": reason})

    def ban(self, room: Room, by: str, target: str, seconds: int, reason: str) -> defer.Deferred[str]:
        """
        Ban the account ``target`` from ``room`` for ``seconds`` (0: until
        lifted), durably; the room sees a BAN event, then, if it is in the
        room, a KICK by ``by`` (the reason, else "Banned") and it is taken out. Fires with the account's name as stored.
        """
        return self._sanction_change(room, "ban", by, target, seconds, reason)

    def mute(self, room: Room, by: str, target: str, seconds: int, reason: str) -> defer.Deferred[str]:
        """Mute the account ``target`` in ``room`` for ``seconds`` (0: until lifted), durably; a MUTE event."""
        return self._sanction_change(room, "mute", by, target, seconds, reason)

    def _sanction_change(self, room: Room, kind: RoomValueKind, by: str, target: str, seconds: int,
                         reason: str) -> defer.Deferred[str]:
        stored = self.known(target)
        if stored is None:
            return defer.fail(errors.NoSuchUser(f"There is no user called {target}."))
        name, key = stored, name_key(stored)
        until = self.factory.reactor.seconds() + seconds if seconds else 0.0
        sanction = Sanction(by, until, reason, self.factory.reactor.seconds())
        event = self._sanction_event(room, kind, by, name, until, reason)

        def saved() -> str:
            authority = room.authority
            (authority.bans if kind == "ban" else authority.mutes)[key] = sanction
            self._schedule(room, kind, key, until)
            self._publish(room, by, EventKind.BAN if kind == "ban" else EventKind.MUTE, reason, name, until)
            if kind == "ban":
                self._banned(room, name, by, seconds, reason)
            return name

        def change() -> defer.Deferred[str]:
            table = room.authority.bans if kind == "ban" else room.authority.mutes
            before = self._sanction(table, name)
            if before is not None and not before.until and not until and before.reason == reason:  # (else replaced)
                what = "banned from" if kind == "ban" else "muted in"
                raise errors.Unchanged(f"{name} is already {what} {room.name} until lifted.")
            return self.factory.concerning(name, lambda: self._save(
                room, [self._value(room, kind, key, sanction.encode())], event,
                f"Could not save the {kind}", saved))  # (BAN, a KICK here, then the change: see _save)

        return self._in_turn(room, change)

    def _schedule(self, room: Room, kind: str, key: str, until: float) -> None:
        """End the timed ban or mute (kind, key) of ``room`` at ``until`` (0: none; a timer before is replaced)."""
        timers = room.authority.timers
        old = timers.pop((kind, key), None)
        if old is not None and old.active():
            old.cancel()
        if until:
            reactor = self.factory.reactor
            timers[(kind, key)] = reactor.callLater(max(0.0, until - reactor.seconds()), self._expire, room, kind, key)

    def _expire(self, room: Room, kind: str, key: str) -> None:
        """A timed ban or mute ran out: lifted (memory now, the store next), an UNBAN/UNMUTE event by nobody."""
        room.authority.timers.pop((kind, key), None)
        self.lift(room, kind, "", key).addErrback(
            lambda failure: self.log.error("could not lift an expired {kind} in {room}: {why}", kind=kind,
                                           room=room.name, why=failure.getErrorMessage()))

    def unban(self, room: Room, by: str, target: str) -> defer.Deferred[str]:
        """Lift the ban of ``target`` in ``room`` (:meth:`lift`)."""
        return self.lift(room, "ban", by, target)

    def unmute(self, room: Room, by: str, target: str) -> defer.Deferred[str]:
        """Lift the mute of ``target`` in ``room`` (:meth:`lift`)."""
        return self.lift(room, "mute", by, target)

    def lift(self, room: Room, kind: str, by: str, target: str) -> defer.Deferred[str]:
        """
        Lift the ban (``kind`` "ban") or mute of ``target`` in ``room``
        (``by`` "": it ran out); fires with the account's name once that is
        durable. Fails with NoSuchUser if there is none.
        """
        key = name_key(target)
        authority = room.authority
        table = authority.bans if kind == "ban" else authority.mutes
        name = self.display(key)
        value_kind: RoomValueKind = "ban" if kind == "ban" else "mute"
        event_name: EventName = "unban" if kind == "ban" else "unmute"
        details = {"target": name, "reason": "expired"} if not by else {"target": name}
        if not by and key in table:  # ran out: it no longer counts, whether or not the store has caught up
            del table[key]
            self._schedule(room, kind, key, 0.0)
            ran_out = True
        else:
            ran_out = False

        def saved(_: None) -> str:
            if by:
                table.pop(key, None)
            self._publish(room, by, EventKind.UNBAN if kind == "ban" else EventKind.UNMUTE, "", name)
            return name

        def change() -> defer.Deferred[str]:
            if not ran_out and key not in table:
                what = "banned from" if kind == "ban" else "muted in"
                raise errors.NoSuchUser(f"{name} is not {what} {room.name}.")
            self._schedule(room, kind, key, 0.0)
            work = self._save(room, [self._value(room, value_kind, key, "")],
                              LogEvent(event_name, by, room.name, details), f"Could not lift the {kind}")
            return work.addCallback(saved)

        return self._in_turn(room, change)

    def set_topic(self, room: Room, by: str, text: str) -> defer.Deferred[None]:
        """
        Set ``room``'s topic to ``text`` ("": clear it), durably, with who set it and when (the ``topic`` value
        of key :data:`TOPIC_SET`: ``by=ann&at=1790000000``, IRC's 333); a TOPIC event.
        """
        at = int(self.factory.reactor.seconds())

        def saved(_: None) -> None:
            authority = room.authority
            authority.topic, authority.topic_by, authority.topic_at = text, by, float(at) if text else 0.0
            self._publish(room, by, EventKind.TOPIC, text)

        event = LogEvent("topic", by, room.name, {"text": text})
        values = [self._value(room, "topic", "", text),
                  self._value(room, "topic", TOPIC_SET, urlencode({"by": by, "at": str(at)}) if text else "")]
        return self._save(room, values, event, "Could not save the topic").addCallback(saved)

    def set_setting(self, room: Room, by: str, setting: str, on: bool) -> defer.Deferred[bool]:
        """
        Turn the setting ``setting`` (INVITE_ONLY, OPEN_TOPIC, SECRET, MODERATED) of ``room``
        on or off, durably; a SETTING event (target: its command name, text:
        on or off). Fires with whether it changed.
        """
        value = "on" if on else "off"
        return self._set_value(room, by, setting, on, "on" if on else "", value, setting.replace("_", "-"))

    def set_limit(self, room: Room, by: str, limit: int) -> defer.Deferred[bool]:
        """``room``'s member limit (0: none), durably; a SETTING event (target ``limit``, text N or off)."""
        return self._set_value(room, by, LIMIT, limit, str(limit) if limit else "", str(limit) if limit else "off")

    def set_key(self, room: Room, by: str, key: str) -> defer.Deferred[bool]:
        """
        ``room``'s key ("": none), durably; a SETTING event (target ``key``,
        text on or off: the key itself is in no event, history or log row).
        """
        return self._set_value(room, by, KEY, key, key, "on" if key else "off")

    def _set_value(self, room: Room, by: str, setting: str, new: Any, stored: str, text: str,
                   name: str = "") -> defer.Deferred[bool]:
        """
        Set the Authority field ``setting`` to ``new``, durably (stored as
        ``stored``); then a SETTING event and a ``room_setting`` row (name
        ``name``, default ``setting``; value ``text``). Fires with whether
        it changed.
        """
        authority = room.authority
        name = name or setting

        def saved(_: None) -> bool:
            setattr(authority, setting, new)
            self._publish(room, by, EventKind.SETTING, text, name)
            return True

        def change() -> defer.Deferred[bool]:
            if getattr(authority, setting) == new:
                return defer.succeed(False)
            event = LogEvent("room_setting", by, room.name, {"name": name, "value": text})
            work = self._save(room, [self._value(room, "setting", setting, stored)], event,
                              "Could not save the setting")
            return work.addCallback(saved)

        return self._in_turn(room, change)

    def invite(self, room: Room, by: str, target: str, on: bool = True) -> defer.Deferred[str]:
        """
        Invite ``target`` (:meth:`known`) to ``room`` (``on`` False: withdraw the
        invitation), durably; an INVITE event (text "withdrawn" for the
        latter); an invitee online is told. Fires with its name as stored.
        """
        stored = self.known(target)
        if stored is None:
            return defer.fail(errors.NoSuchUser(f"There is no user called {target}."))
        name, key = stored, name_key(stored)

        def saved(_: None) -> str:
            if on:
                room.authority.invites[key] = by
            else:
                room.authority.invites.pop(key, None)
            self._publish(room, by, EventKind.INVITE, "" if on else "withdrawn", name)
            session = self.factory.online.get(key)
            if on and session is not None:
                invited = getattr(session, "invited", None)  # (a front-end's own wording: IRC's INVITE line)
                if invited is not None:
                    invited(room, by)
                else:
                    session.notice(f"{by} invited you to {room.name}: type 'join {room.name}' at the menu to enter it.")
            return name

        event = LogEvent("invite" if on else "uninvite", by, room.name, {"target": name})
        value = urlencode({"by": by}) if on else ""

        def change() -> defer.Deferred[str]:
            if not on and key not in room.authority.invites:
                raise errors.NoSuchUser(f"{name} is not invited to {room.name}.")
            return self.factory.concerning(name, lambda: self._save(
                room, [self._value(room, "invite", key, value)], event, "Could not save the invitation").addCallback(
                saved))

        return self._in_turn(room, change)

    def set_operator(self, room: Room, by: str, target: str, on: bool) -> defer.Deferred[str]:
        """
        Make ``target`` an operator of ``room`` (``on`` False: no longer), durably; an OP/DEOP event. A guest
        (:meth:`known`) is one in memory only, until its session ends (never stored: a later account of its
        name inherits nothing). The owner ``by`` on itself puts its operator role down (:meth:`role`: it acts as
        a member) or takes it back (:meth:`_owner_role`); nobody else changes the owner's.
        """
        stored = self.known(target)
        if stored is None:
            return defer.fail(errors.NoSuchUser(f"There is no user called {target}."))
        name, key = stored, name_key(stored)
        if self.owns(room, name) and name_key(by) != key:
            return defer.fail(errors.NotAllowed(f"{name} owns {room.name}."))

        def change() -> defer.Deferred[str]:
            if self.owns(room, name):
                return self._owner_role(room, name, on)
            if (self.role(room, name) is Role.OPERATOR) == on:
                raise errors.Unchanged(f"{name} is {'already' if on else 'not'} an operator of {room.name}.")
            return self._set_role(room, by, name, on, "op")

        return self._in_turn(room, change)

    def set_voice(self, room: Room, by: str, target: str, on: bool) -> defer.Deferred[str]:
        """
        Give ``target`` (:meth:`known`) a voice in ``room`` (``on`` False: take it away), durably; a VOICE/DEVOICE
        event. Anyone may be voiced, an operator or the owner too (IRC's ``@+``); a guest in memory only, as
        :meth:`set_operator`.
        """
        stored = self.known(target)
        if stored is None:
            return defer.fail(errors.NoSuchUser(f"There is no user called {target}."))

        def change() -> defer.Deferred[str]:
            if (name_key(stored) in room.authority.voiced) == on:
                raise errors.Unchanged(f"{stored} is {'already' if on else 'not'} voiced in {room.name}.")
            return self._set_role(room, by, stored, on, "voice")

        return self._in_turn(room, change)

    def _set_role(self, room: Room, by: str, name: str, on: bool, kind: RoomValueKind) -> defer.Deferred[str]:
        """The role ``kind`` (op, voice) of ``name`` (as stored) in ``room`` on or off: stored (an account's), then event."""
        key = name_key(name)
        table = room.authority.operators if kind == "op" else room.authority.voiced

        def saved(_: None) -> str:
            if on:
                table[key] = "1"
            else:
                table.pop(key, None)
            kinds = (EventKind.OP, EventKind.DEOP) if kind == "op" else (EventKind.VOICE, EventKind.DEVOICE)
            self._publish(room, by, kinds[0] if on else kinds[1], "", name)
            return name

        if key not in self.factory.accounts:
            return defer.succeed(saved(None))
        event_name: EventName = ("op" if on else "deop") if kind == "op" else ("voice" if on else "devoice")
        event = LogEvent(event_name, by, room.name, {"target": name})
        what = "operator" if kind == "op" else "voice"
        return self.factory.concerning(name, lambda: self._save(
            room, [self._value(room, kind, key, "1" if on else "")], event, f"Could not save the {what}").addCallback(saved))

    def _owner_role(self, room: Room, name: str, on: bool) -> defer.Deferred[str]:
        """
        The owner ``name`` takes its operator role back (``on``) or puts it
        down, durably (the setting OWNER_DOWN); an OP/DEOP event of itself.
        It stays the owner either way (IRC: ``MODE #lab -o ann`` by ann, as
        ngIRCd and InspIRCd let a channel's creator drop its ``+o``; irctest
        testInviteInviteOnly).
        """
        authority = room.authority
        if authority.owner_down != on:
            return defer.fail(errors.Unchanged(
                f"{name} is {'already' if on else 'not'} an operator of {room.name}."))

        def saved(_: None) -> str:
            authority.owner_down = not on
            self._publish(room, name, EventKind.OP if on else EventKind.DEOP, "", name)
            return name

        event = LogEvent("op" if on else "deop", name, room.name, {"target": name})
        value = self._value(room, "setting", OWNER_DOWN, "" if on else "on")
        return self._save(room, [value], event, "Could not save the operator").addCallback(saved)

    def give(self, room: Room, by: str, target: str) -> defer.Deferred[str]:
        """
        Make the account ``target`` the owner of ``room`` (``by`` is its
        owner): the old owner becomes an operator, the new one is no longer
        one (one write), then the owner changes (``Store.set_room_owner``
        with the ``owner`` row); an OWNER event. Fires with the new owner's name. Refused (NotAllowed)
        while ``target`` is banned or muted there: nobody acts on the owner,
        and lifting it is for /unban or /unmute, which record it.
        """
        record = self.factory.accounts.get(name_key(target))
        if record is None:
            return defer.fail(errors.NoSuchUser(f"There is no user called {target}."))
        name, key = record.name, name_key(record.name)
        if self.owns(room, name):
            return defer.fail(errors.NotAllowed(f"{name} owns {room.name} already."))
        for table, what, undo in ((room.authority.bans, "banned from", "unban"), (room.muted, "muted in", "unmute")):
            if self._sanction(table, name) is not None:  # (lifted by its own command: an event and a row)
                return defer.fail(errors.NotAllowed(f"{name} is {what} {room.name}; /{undo} {name} first."))
        old = room.owner

        def roles_saved(_: None) -> defer.Deferred[None]:
            authority = room.authority
            authority.operators[name_key(old)] = "1"
            authority.owner_down = False  # (the new owner starts with its operator role)
            for table in (authority.operators, authority.bans, authority.mutes):
                table.pop(key, None)
            for kind in ("ban", "mute"):
                self._schedule(room, kind, key, 0.0)
            event = LogEvent("owner", by, room.name, {"target": name, "previous": old})
            return self.factory.store.set_room_owner(room.name, name, event)

        def owner_saved(_: None) -> str:
            room.owner = name
            self._share(room, [(value.kind, value.key, value.value) for value in values] + [("owner", "", name)])
            self._publish(room, by, EventKind.OWNER, "", name)
            return name

        values = [self._value(room, "op", name_key(old), "1"),
                  *(self._value(room, kind, key, "") for kind in ("op", "ban", "mute"))]
        if room.authority.owner_down:
            values.append(self._value(room, "setting", OWNER_DOWN, ""))
        return self.factory.concerning(name, lambda: self.factory.store.set_room_values(values).addCallback(
            roles_saved).addCallbacks(owner_saved, _not_saved("Could not give the room away")))

    # -- the flood limiter's escalation (chatd.limits) ------------------------------------------

    def flood_paused(self, session: Session, bucket: TokenBucket, paused: float, rooms: Sequence[Room]) -> None:
        """
        ``session``, over its flood allowance ``bucket``, is paused ``paused``
        more seconds while a member of ``rooms``: the escalation, one for
        every front-end (the line front-end's read pause, the WebSocket and
        IRC front-ends' Pacing). The pauses add up (``TokenBucket.overrun``);
        past the limit it is muted in each of ``rooms`` for --flood-mute
        seconds by the server (sender "", reason ``flooding``: the room, its
        operators too, sees why); again: kicked from them by the server, then
        disconnected. Nothing with --flood-mute 0, in no room, or before login.
        """
        mute = self.factory.settings.flood_mute
        if mute <= 0 or not rooms or not session.name:
            return
        level = bucket.overrun(self.factory.reactor.seconds(), paused, mute)
        if level:
            self.flooding(session, rooms, level == FLOOD_CUT)

    def flooding(self, session: Session, rooms: Sequence[Room], cut: bool) -> None:
        """``session`` kept flooding ``rooms``: muted there (``cut``: kicked from them, then disconnected)."""
        name = session.name or ""
        if cut:
            for room in rooms:
                if self.member(room, name) is not None:  # (its member there: the session or its IRC channel)
                    self.kick(room, "", name, "flooding")
            session.kick("Error: you kept sending too fast after being muted; goodbye.")
            return
        for room in rooms:
            if self._sanction(room.muted, name) is not None:
                continue
            self.mute(room, "", name, max(1, int(self.factory.settings.flood_mute)), "flooding").addErrback(
                self._mute_failed, room)

    def _mute_failed(self, failure: Failure, room: Room) -> None:
        self.log.error("could not mute a flooder in {room}: {why}", room=room.name, why=failure.getErrorMessage())

def names_marked(moderation: Moderation, room: Room, names: Iterable[str], shown: Iterable[str]) -> list[str]:
    """
    ``shown`` (``names`` as presence marked them) with the highest role's
    mark: ``~`` before the owner's, ``@`` before operators', ``+`` before voiced members'.
    """
    marks = {Role.OWNER: "~", Role.OPERATOR: "@", Role.VOICED: "+", Role.MEMBER: ""}
    return [marks[moderation.role(room, name)] + text for name, text in zip(names, shown)]
