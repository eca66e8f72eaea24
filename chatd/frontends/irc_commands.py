"""
The IRC commands of the IRC front-end (``chatd.frontends.irc``), one
handler each, registered in :data:`HANDLERS` by :func:`handles`.

A handler gets the :class:`~chatd.frontends.irc_types.IrcConnection` and the
parsed :class:`~chatd.frontends.irc_wire.Message`; what changes chatd's state
runs a command of ``chatd.commands.TABLE`` by name (``run_command``), with
the same rules as every front-end; the IRC answers (numerics) come from the
handler. Numerics follow RFC 1459/2812 and the Modern IRC documentation
(modern.ircdocs.horse); capabilities the IRCv3 specifications.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import re
from datetime import datetime, timezone
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import defer

from chatd import __version__, errors
from chatd.commands import TABLE
from chatd.commands.builtin import SAY as _SAY_COMMAND
from chatd.commands.moderation import CLEAR_TOPIC
from chatd.core.events import EventKind, RoomEvent
from chatd.frontends.irc_wire import HOST, LINE_MAX, Message, channel_name, iso_time, line, split_text, tagged
from chatd.moderation import REASON_MAX, Role, key_problem, limit_problem
from chatd.nodes import members_everywhere, online_user, online_users
from chatd.passwords import password_problem
from chatd.text import ROOM_NAME_MAX, USER_NAME_MAX, check_name, name_key

if TYPE_CHECKING:
    from chatd.factory import Room
    from chatd.frontends.irc_types import Channel, IrcConnection

Handler = Callable[["IrcConnection", Message], None]

#: The handler of each IRC command.
HANDLERS: dict[str, Handler] = {}
#: Parameters each command needs (fewer, or an empty first one: 461 ERR_NEEDMOREPARAMS).
PARAMS_NEEDED: dict[str, int] = {}
#: Commands an unregistered connection may send (the rest: 451 ERR_NOTREGISTERED).
BEFORE_REGISTRATION = frozenset({"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT", "REGISTER"})
#: Channels one connection may be in at once (``CHANLIMIT``).
CHANNELS_MAX = 50
#: Targets one JOIN, PART, PRIVMSG, NOTICE, WHOIS... may name (``TARGMAX``).
TARGETS_MAX = 10
#: The capabilities offered (CAP LS 302), with their values.
CAPABILITIES: dict[str, str] = {
    "sasl": "PLAIN",
    "server-time": "",
    "message-tags": "",
    "echo-message": "",
    "account-tag": "",
    "draft/account-registration": "before-connect",
    "batch": "",
    "labeled-response": "",
    "away-notify": "",
    "draft/chathistory": "",
    # multi-prefix: 353 and 352 show every mark (@+), else the highest; userhost-in-names puts masks in 353.
    "multi-prefix": "",
    "userhost-in-names": "",
}
#: Base64 characters an AUTHENTICATE PLAIN payload may take in all: two names (24 characters each) and a
#: password (PASSWORD_MAX code points, at most 4 bytes each) with their NULs, encoded, rounded up.
SASL_MAX = 2048
#: Channel modes with a parameter (RFC 2811 §4: bans and the operator status), and those without.
_LIST_MODES = "b"
_MEMBER_MODES = "ov"
_FLAG_MODES = "imst"


def handles(*names: str, params: int = 0) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``names``, which need ``params`` parameters."""

    def add(handler: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = handler
            if params:
                PARAMS_NEEDED[name] = params
        return handler

    return add


def _room(self: IrcConnection, target: str, missing: bool = True) -> Room | None:
    """The room of channel ``target`` (``#lab``); None, with ``403 ERR_NOSUCHCHANNEL`` if ``missing``, if none."""
    room = self.chat.rooms.get(name_key(target[1:])) if target.startswith("#") else None
    if room is None and missing:
        self.numeric("403", target or "*", "No such channel")
    return room


def _member(self: IrcConnection, target: str) -> tuple[Room | None, Channel | None]:
    """The room of ``target`` and this connection's channel in it (``403``, ``442`` sent if either is missing)."""
    room = _room(self, target)
    if room is None:
        return None, None
    channel = self.channels.get(room.key)
    if channel is None:
        self.numeric("442", target, "You're not on that channel")
    return room, channel


def _operator(self: IrcConnection, room: Room, target: str, needed: Role = Role.OPERATOR) -> bool:
    """Whether this user acts as an operator (or ``needed``: Moderation.allowed) in ``room``; if not, ``482``."""
    if self.chat.moderation.allowed(room, self.name, needed):
        return True
    owner = " (only its owner may do that)" if needed is Role.OWNER else ""
    self.numeric("482", target, "You're not channel operator" + owner)
    return False


def _notice_error(self: IrcConnection) -> Callable[[errors.ChatError], None]:
    return lambda error: self.server_notice(str(error))


def _mode_error(self: IrcConnection, channel: str, name: str) -> Callable[[errors.ChatError], None]:
    """
    A refused change to someone in ``channel``: 401 no such user; a change that changes nothing
    (Unchanged: already voiced, not an operator) a NOTICE with chatd's words (ngIRCd and InspIRCd drop such a
    change silently); 482 with chatd's reason for a rule of the room's rights (``ann owns lab.``).
    """

    def refused(error: errors.ChatError) -> None:
        if isinstance(error, errors.NoSuchUser) or self.chat.moderation.known(name) is None:
            self.numeric("401", name or "*", "No such nick/channel")
        elif isinstance(error, errors.Unchanged):
            self.server_notice(str(error))
        elif isinstance(error, (errors.NotAllowed, errors.BadArguments)):  # (a rule of the room, of its owner)
            self.numeric("482", channel, str(error))
        else:
            self.server_notice(str(error))

    return refused


# -- registration ------------------------------------------------------------------------------------


@handles("CAP", params=1)
def cap(self: IrcConnection, message: Message) -> None:
    """CAP LS [302], LIST, REQ, END (IRCv3 capability negotiation); registration waits for END."""
    sub = message.params[0].upper()
    if sub == "LS":
        if not self.registered:
            self.negotiating = True
        version = message.params[1] if len(message.params) > 1 else ""
        offered = " ".join(name + ("=" + value if value and version >= "302" else "")
                           for name, value in CAPABILITIES.items())
        self.from_server("CAP", self.target, "LS", offered)
    elif sub == "LIST":
        self.from_server("CAP", self.target, "LIST", " ".join(sorted(self.caps)))
    elif sub == "REQ":
        if not self.registered:
            self.negotiating = True
        wanted = message.params[1].split() if len(message.params) > 1 else []
        if not wanted or any(want.removeprefix("-") not in CAPABILITIES for want in wanted):
            self.from_server("CAP", self.target, "NAK", " ".join(wanted))
            return
        for want in wanted:
            if want.startswith("-"):
                self.caps.discard(want[1:])
            else:
                self.caps.add(want)
        self.from_server("CAP", self.target, "ACK", " ".join(wanted))
        self.regroup()
    elif sub == "END":
        if not self.registered:
            self.negotiating = False
            self.try_registration()
    else:
        self.numeric("410", sub[:30], "Invalid CAP command")


@handles("PASS", params=1)
def pass_(self: IrcConnection, message: Message) -> None:
    if self.registered:
        self.numeric("462", "You may not reregister")
        return
    self.password = message.params[0]


@handles("NICK")
def nick(self: IrcConnection, message: Message) -> None:
    wanted = message.params[0] if message.params else ""
    if not wanted:
        self.numeric("431", "No nickname given")
        return
    if self.registered:
        if wanted == self.name:
            return  # (its own nick: nothing changes, nothing is said)
        # Its own nick in another case (RFC 2812 3.1.2 allows it, as ngIRCd does): a guest in no room takes it.
        refused = None if name_key(wanted) == name_key(self.name or "") else self.guest_refusal(wanted)
        if refused:
            self.numeric(refused[0], wanted, refused[1])
        elif self.guest and not self.channels and not any(
                name_key(room.owner) == name_key(self.name or "") for room in self.chat.rooms.values()):
            self.rename(wanted)
        else:
            self.numeric("447", wanted, "chatd nicks are account names, and a guest's while it is in a room: "
                                        "they cannot be changed")
        return
    problem = check_name(wanted, "user", USER_NAME_MAX)
    if problem:
        self.numeric("432", wanted, "Erroneous nickname: " + problem.rstrip("."))
        return
    # A guest's nick is checked now, except during CAP negotiation: SASL may yet log in as that account, so
    # it is checked once negotiation ends (try_registration: 433 then if still no account's session).
    if self.irc.guests and not self.password and self.name is None and not self.negotiating:
        refused = self.guest_refusal(wanted)
        if refused:
            self.numeric(refused[0], wanted, refused[1])
            return
    self.nick = wanted
    self.try_registration()


@handles("USER", params=4)
def user(self: IrcConnection, message: Message) -> None:
    """USER username 0 * :realname; an empty username or realname gets 461 (Modern)."""
    if self.registered:
        self.numeric("462", "You may not reregister")
        return
    if not message.params[3].strip():
        self.numeric("461", "USER", "Not enough parameters")
        return
    self.user = "".join(char for char in message.params[0] if char.isascii() and (char.isalnum() or char in "_.-"))
    self.user = self.user[:USER_NAME_MAX] or "user"
    self.realname = message.params[3].strip()[:100]
    self.try_registration()


@handles("AUTHENTICATE", params=1)
def authenticate(self: IrcConnection, message: Message) -> None:
    """SASL PLAIN (IRCv3 sasl 3.1): ``AUTHENTICATE PLAIN``, ``+``, then base64 of authzid NUL authcid NUL password."""
    value = message.params[0]
    if self.name is not None and not self.guest:
        self.numeric("907", "You have already authenticated")
        return
    if self.registered:  # a guest: it stays one (chatd does not turn a session into an account's)
        self.numeric("462", "You may not reregister")
        return
    if "sasl" not in self.caps:
        self.numeric("904", "SASL authentication failed: request the sasl capability first")
        return
    if value == "*":
        self.sasl = None
        self.numeric("906", "SASL authentication aborted")
        return
    if self.sasl is None:
        if value.upper() != "PLAIN":
            self.numeric("908", "PLAIN", "are available SASL mechanisms")
            self.numeric("904", "SASL authentication failed")
            return
        self.sasl = ""
        self.send_line(line("", "AUTHENTICATE", "+"))
        return
    if len(value) > 400 or len(self.sasl) + len(value) > SASL_MAX:
        self.sasl = None
        self.numeric("904", "SASL authentication failed: the message is too long")
        return
    self.sasl += "" if value == "+" else value
    if len(value) == 400:
        return  # more follows
    data, self.sasl = self.sasl, None
    try:
        fields = base64.b64decode(data, validate=True).decode("utf-8").split("\0")
    except (binascii.Error, UnicodeDecodeError):
        fields = []
    if len(fields) != 3 or not fields[1] or (fields[0] and fields[0] != fields[1]):
        self.numeric("904", "SASL authentication failed")
        return
    self.auth = "sasl"
    self.run_command(self, "login", [fields[1], fields[2]], done=lambda: setattr(self, "auth", ""))


@handles("REGISTER", params=3)
def register(self: IrcConnection, message: Message) -> None:
    """
    ``REGISTER <account> <email> <password>`` (IRCv3 draft/account-registration,
    before-connect): creates the account (chatd's ``register``; the email is
    not kept) and logs in; ``*`` for the account: the nick given.
    """
    account, _, password = message.params[0], message.params[1], message.params[2]
    if account == "*":
        account = self.nick
    chat = self.chat

    def fail(code: str, text: str) -> None:
        self.from_server("FAIL", "REGISTER", code, account or "*", text)

    if self.registered or self.name is not None:
        fail("ALREADY_AUTHENTICATED", "register an account before connecting, not as a guest or logged in")
        return
    if not account:
        fail("NEED_NICK", "send NICK first, or name the account")
        return
    problem = check_name(account, "user", USER_NAME_MAX) or chat.admin.reserved_refusal(
        account, self.origin.get("address"))
    if problem:
        fail("BAD_ACCOUNT_NAME", problem)
        return
    taken = chat.user_name_taken(account)
    if taken:
        fail("ACCOUNT_EXISTS", taken)
        return
    problem = password_problem(password)
    if problem:
        fail("UNACCEPTABLE_PASSWORD", problem)
        return
    self.auth = "register"
    self.run_command(self, "register", [account, password], quiet=True,
                     failed=lambda error: fail("TEMPORARILY_UNAVAILABLE", str(error)),
                     done=lambda: setattr(self, "auth", ""))


@handles("OPER", params=2)
def oper(self: IrcConnection, message: Message) -> None:
    """
    ``OPER name password``: ``381`` if ``name`` is a chatd server admin and
    the password is its account's (the login checks and limits apply);
    ``464`` a wrong password, ``491`` not an admin. The connection is shown
    as an operator (``WHOIS`` 313, ``*`` in ``WHO``); chatd's admin commands
    stay the admin account's.
    """
    name, password = message.params[0], message.params[1]
    chat = self.chat
    d = chat.authenticate(name[: USER_NAME_MAX * 2], password, self.address_key or "", self.origin)

    def checked(stored: str) -> None:
        if not chat.is_admin(stored):
            self.numeric("491", "No O-lines for your host")
            return
        self.oper = True
        self.oper_as = stored
        self.numeric("381", "You are now an IRC operator")
        self.send_line(line(self.irc.mask(self.target), "MODE", self.target, "+o"))

    def refused(error: errors.ChatError) -> None:
        if isinstance(error, errors.LoginFailed):
            self.numeric("464", "Password incorrect")
        else:
            self.server_notice(str(error))

    self.wait_for(d, checked, refused)


@handles("PING", params=1)
def ping(self: IrcConnection, message: Message) -> None:
    self.send_line(line(self.irc.server, "PONG", self.irc.server, message.params[0], text=False))


@handles("PONG")
def pong(self: IrcConnection, message: Message) -> None:
    pass


@handles("QUIT")
def quit_(self: IrcConnection, message: Message) -> None:
    self.quit(message.params[0] if message.params else "")


# -- channels -------------------------------------------------------------------------------------------


@handles("JOIN", params=1)
def join(self: IrcConnection, message: Message) -> None:
    """
    ``JOIN #a,#b [key1,key2]`` (a room's key: chatd's ``join ROOM KEY``; ``JOIN 0`` leaves every channel): a
    room that does not exist is created first.
    """
    targets = message.params[0].split(",")[:TARGETS_MAX]
    keys = message.params[1].split(",") if len(message.params) > 1 else []
    if targets == ["0"]:
        for channel in list(self.channels.values()):
            self.run_command(channel, "exit", [])
        return
    for number, target in enumerate(targets):
        name = target[1:]
        key = keys[number] if number < len(keys) else ""
        if not target.startswith("#") or check_name(name, "room", ROOM_NAME_MAX):
            self.numeric("403", target or "*", "No such channel")
            continue
        if name_key(name) in self.channels:
            continue
        if len(self.channels) >= CHANNELS_MAX:
            self.numeric("405", target, "You have joined too many channels")
            continue
        channel = self.new_channel(name)
        refused = _join_refused(self, target, name)
        if name_key(name) in self.chat.rooms:
            self.run_command(channel, "join", [name] + ([key] if key and " " not in key else []), failed=refused)
        else:
            self.run_command(self, "create", [name], failed=_join_refused(self, target, name, channel), quiet=True,
                             done=_then_join(self, channel, name, refused))


def _join_refused(self: IrcConnection, target: str, name: str,
                  channel: Channel | None = None) -> Callable[[errors.ChatError], None]:
    """
    What a refused JOIN answers: 403 no such room, 471 full, 475 a key
    missing or wrong, 473 invite-only, 474 banned (or anything else);
    ``channel``: the room was being created by
    someone else (NameTaken): join it instead.
    """

    def refused(error: errors.ChatError) -> None:
        room = self.chat.rooms.get(name_key(name))
        if isinstance(error, errors.NameTaken) and channel is not None:  # created meanwhile (by another JOIN)
            self.run_command(channel, "join", [name], failed=_join_refused(self, target, name))
        elif isinstance(error, errors.NoSuchRoom):
            self.numeric("403", target, "No such channel")
        elif isinstance(error, errors.RoomFull):
            self.numeric("471", target, "Cannot join channel (+l): " + str(error))
        elif isinstance(error, errors.BadRoomKey):
            self.numeric("475", target, "Cannot join channel (+k): " + str(error))
        elif room is not None and room.authority.invite_only and "invite-only" in str(error):
            self.numeric("473", target, "Cannot join channel (+i): " + str(error))
        elif isinstance(error, errors.NotAllowed):
            self.numeric("474", target, "Cannot join channel (+b): " + str(error))
        else:
            self.numeric("403", target, str(error))

    return refused


def _then_join(self: IrcConnection, channel: Channel, name: str,
               refused: Callable[[errors.ChatError], None]) -> Callable[[], None]:
    """Once the room ``name`` is created: join it."""
    return lambda: self.run_command(channel, "join", [name], failed=refused)


@handles("PART", params=1)
def part(self: IrcConnection, message: Message) -> None:
    """``PART #a,#b [:reason]``: chatd's ``exit`` of each; the reason goes to the room (LEAVE's text)."""
    reason = message.params[1].strip()[:REASON_MAX] if len(message.params) > 1 else ""
    for target in message.params[0].split(",")[:TARGETS_MAX]:
        _, channel = _member(self, target)
        if channel is not None:
            channel.part_message = reason
            self.run_command(channel, "exit", [])


@handles("PRIVMSG", "NOTICE")
def privmsg(self: IrcConnection, message: Message) -> None:
    """
    To a channel: a room line (``say``; CTCP ACTION: ``me``); to a nick: a
    chatd private message (``msg``; kept for an offline account; a NOTICE is
    one marked ``notice``, for an online user only). A NOTICE is never
    answered with an error (RFC 2812 §3.3.2).
    """
    notice = message.command == "NOTICE"
    if not message.params or not message.params[0]:
        if not notice:
            self.numeric("411", "No recipient given (PRIVMSG)")
        return
    if len(message.params) < 2 or not message.params[1]:
        if not notice:
            self.numeric("412", "No text to send")
        return
    text = message.params[1]
    action = text.startswith("\x01ACTION ")
    if text.startswith("\x01"):
        if not action:
            return  # other CTCP requests are not relayed
        text = text[len("\x01ACTION "):].rstrip("\x01")
    text = text.strip()
    if not text:
        return
    for target in message.params[0].split(",")[:TARGETS_MAX]:
        # What does not fit in one IRC line once prefixed is cut here, so every front-end sees the same text.
        room = LINE_MAX - len(f":{self.irc.mask(self.target)} PRIVMSG {target} :\r\n".encode()) - \
            (len("\x01ACTION \x01") if action else 0)
        said = split_text(text, room)[0]
        if target.startswith("#"):
            _to_channel(self, target, said, action, notice)
        else:
            _to_nick(self, target, said, action, notice)


def _to_channel(self: IrcConnection, target: str, text: str, action: bool, notice: bool) -> None:
    channel = self.channels.get(name_key(target[1:]))
    if channel is None:
        if not notice:
            room = _room(self, target)
            if room is not None:
                self.numeric("404", target, "Cannot send to channel: you are not in it")
        return

    def refused(error: errors.ChatError) -> None:
        if not notice:
            self.numeric("404", target, "Cannot send to channel: " + str(error))

    if notice and not action:
        _notice_to(self, channel, text)
        return
    self.run_command(channel, "me" if action else "say", [text], failed=refused)


#: The ``target`` of a SAY event an IRC client sent as a NOTICE (shown as a NOTICE to IRC members).
NOTICE_TARGET = "notice"


def _notice_to(self: IrcConnection, channel: Channel, text: str) -> None:
    """
    A NOTICE to a channel: a room line (SAY) under the same rules as chatd's
    ``say`` (``CommandTable.refusal``: a muted member is refused, silently,
    as a NOTICE is never answered with an error), marked ``notice``.
    """
    room = channel.room
    if room is None or TABLE.refusal(channel, _SAY_COMMAND) is not None:
        return
    self.chat.publish(room, self.name or "", EventKind.SAY, text, NOTICE_TARGET)


def _to_nick(self: IrcConnection, target: str, text: str, action: bool, notice: bool) -> None:
    chat = self.chat

    def unknown(error: errors.ChatError) -> None:
        if notice:
            return
        if isinstance(error, errors.NoSuchUser):
            self.numeric("401", target, "No such nick/channel")
        else:
            self.server_notice(str(error))

    def sent() -> None:
        recipient = online_user(chat, target)  # (here or on another node)
        if recipient is None:
            self.server_notice(f"{target} is offline: they get your message at their next login.")
        elif not notice:
            away = chat.presence.message(recipient.name)
            if away is not None:
                self.numeric("301", recipient.name, away)

    said = f"* {self.name} {text}" if action else text  # (chatd's private messages have no actions)
    if notice:  # to an online user only, never queued, never answered with an error (RFC 1459 4.4.2)
        chat.private_message(self, target, said, notice=True).addCallbacks(
            lambda message: self.private(message, sent=True), lambda failure: failure.trap(errors.ChatError))
        return
    self.run_command(self.direct, "msg", [target, said], failed=unknown, done=sent, quiet=True)


@handles("TOPIC", params=1)
def topic(self: IrcConnection, message: Message) -> None:
    """``TOPIC #lab`` shows it (332, or 331); ``TOPIC #lab :text`` sets it (``topic``; empty: cleared)."""
    target = message.params[0]
    if len(message.params) == 1:
        room = _room(self, target)
        if room is None:
            return
        if room.key not in self.channels and not self.chat.moderation.may_see(room, self.name):
            self.numeric("442", target, "You're not on that channel")
        elif room.authority.topic:
            self.show_topic(room)
        else:
            self.numeric("331", channel_name(room.name), "No topic is set")
        return
    room, channel = _member(self, target)
    if room is None or channel is None:
        return
    if not room.authority.open_topic and not _operator(self, room, target):
        return
    self.run_command(channel, "topic", [message.params[1].strip() or CLEAR_TOPIC], failed=_topic_refused(self, target))


def _topic_refused(self: IrcConnection, target: str) -> Callable[[errors.ChatError], None]:
    """A refused TOPIC: 482 with chatd's reason for a rule of the room (muted; moderated), else a NOTICE."""

    def refused(error: errors.ChatError) -> None:
        if isinstance(error, errors.NotAllowed):
            self.numeric("482", target, str(error))
        else:
            self.server_notice(str(error))

    return refused


@handles("NAMES")
def names(self: IrcConnection, message: Message) -> None:
    if not message.params or not message.params[0]:
        self.numeric("366", "*", "End of /NAMES list")
        return
    for target in message.params[0].split(",")[:TARGETS_MAX]:
        room = _room(self, target, missing=False)
        if room is not None and (room.key in self.channels or self.chat.moderation.may_see(room, self.name)):
            self.names(room)
        else:
            self.numeric("366", target, "End of /NAMES list")


@handles("LIST")
def list_(self: IrcConnection, message: Message) -> None:
    """321, a 322 per room the user may see (``#name members :topic``), 323; ``LIST #a,#b``: those only."""
    chat = self.chat
    wanted = {name_key(target[1:]) for target in message.params[0].split(",")} if message.params and \
        message.params[0].startswith("#") else None
    self.numeric("321", "Channel", "Users  Name")
    for room in chat.rooms.values():
        if (wanted is None or room.key in wanted) and chat.moderation.may_see(room, self.name):
            self.numeric("322", channel_name(room.name), str(len(members_everywhere(chat, room))),
                         room.authority.topic)
    self.numeric("323", "End of /LIST")


@handles("INVITE", params=2)
def invite(self: IrcConnection, message: Message) -> None:
    """
    ``INVITE nick #lab``: chatd's ``invite`` (operators; a guest too while
    online); the invitee gets ``INVITE`` (an IRC client; others chatd's
    notice), the inviter ``341``, nobody else anything (RFC 2812 §3.2.7). A
    channel that does not exist needs no rights: the INVITE is only passed on.
    """
    target, channel_target = message.params[0], message.params[1]
    chat = self.chat
    known = chat.moderation.known(target)
    if known is None:
        self.numeric("401", target, "No such nick/channel")
        return
    invitee = self.irc.users.get(name_key(known))
    notice = line(self.irc.mask(self.target), "INVITE", known, channel_target)
    room = _room(self, channel_target, missing=False)
    if room is None:
        if invitee is not None:
            invitee.send_line(notice)
        else:
            session = chat.online.get(name_key(known))
            if session is not None:
                session.notice(f"{self.target} invites you to {channel_target} (no such room yet).")
        self.numeric("341", known, channel_target, text=False)
        return
    room, channel = _member(self, channel_target)
    if room is None or channel is None:
        return
    if chat.moderation.member(room, known) is not None:
        self.numeric("443", known, channel_name(room.name), "is already on channel")
        return
    if not _operator(self, room, channel_target):
        return
    self.run_command(channel, "invite", [known], quiet=True, failed=_mode_error(self, channel_target, known),
                     done=lambda: self.numeric("341", known, channel_name(room.name), text=False))


@handles("KICK", params=2)
def kick(self: IrcConnection, message: Message) -> None:
    """
    ``KICK #lab nick[,nick] [:reason]``, or ``KICK #a,#b nick1,nick2`` (in
    pairs, RFC 2812 §3.2.8): chatd's ``kick`` (operators); 441 for someone
    not in the room.
    """
    channels = message.params[0].split(",")[:TARGETS_MAX]
    victims = message.params[1].split(",")[:TARGETS_MAX]
    pairs = list(zip(channels, victims)) if len(channels) > 1 else [(channels[0], victim) for victim in victims]
    reason = message.params[2].strip() if len(message.params) > 2 else ""
    for target, victim in pairs:
        room, channel = _member(self, target)
        if room is None or channel is None or not _operator(self, room, target):
            continue
        if self.chat.moderation.member(room, victim) is None:
            self.numeric("441", victim, target, "They aren't on that channel")
            continue
        self.run_command(channel, "kick", [victim, reason], failed=_mode_error(self, target, victim))


@handles("MODE", params=1)
def mode(self: IrcConnection, message: Message) -> None:
    """
    A user's own modes (``221``; ``+i`` is accepted and means nothing more
    here); a channel's: ``324`` (``+i`` invite-only, ``+t`` only operators set
    the topic), the ban list (``367``/``368``), and changes mapped onto
    chatd's moderation: ``+b``/``-b`` ban/unban (``nick!*@*``: chatd bans
    names), ``+o``/``-o`` op/deop (the owner's), ``+v``/``-v`` voice/devoice,
    ``+i``/``-i`` invite-only, ``+m``/``-m`` moderated, ``+s``/``-s`` secret,
    ``+t``/``-t`` open-topic off/on, ``+k KEY``/``-k`` the key, ``+l N``/``-l``
    the member limit (``696`` for a bad value). Other modes: ``472``.
    """
    target = message.params[0]
    if not target.startswith("#"):
        _user_mode(self, target, message.params[1:])
        return
    room = _room(self, target)
    if room is None:
        return
    shown = channel_name(room.name)
    if len(message.params) == 1:
        authority = room.authority
        flags = ("i" if authority.invite_only else "") + ("k" if authority.key else "") + (
            "l" if authority.limit else "") + ("m" if authority.moderated else "") + "n" + ("s" if authority.secret else "") + (
            "" if authority.open_topic else "t")
        values = ([authority.key if room.key in self.channels else "*"] if authority.key else []) + (
            [str(authority.limit)] if authority.limit else [])  # (the key to members only, as InspIRCd)
        self.numeric("324", shown, "+" + flags, *values, text=False)
        if room.created:  # (the public room has always been there: no 329)
            created = datetime.fromisoformat(room.created.replace("Z", "+00:00"))
            self.numeric("329", shown, str(int(created.timestamp())), text=False)
        return
    changes = _mode_changes(self, shown, message.params[1], message.params[2:])
    if not changes:
        return
    channel = self.channels.get(room.key)
    if changes == [("+", "b", "")] or changes == [("-", "b", "")]:
        _ban_list(self, room)
        return
    if channel is None:
        self.numeric("442", shown, "You're not on that channel")
        return
    for sign, letter, argument in changes:
        if letter == "b" and not argument:
            _ban_list(self, room)
            continue
        needed = Role.OWNER if letter == "o" or letter == "t" else Role.OPERATOR
        if not _operator(self, room, shown, needed):
            return
        if letter == "b":
            _ban_mask(self, channel, room, sign, argument)
        elif letter == "o" or letter == "v":
            known = self.chat.moderation.known(argument)
            if known is None:
                self.numeric("401", argument, "No such nick/channel")
                continue
            if self.chat.is_guest(known) and self.chat.moderation.member(room, known) is None:
                self.numeric("441", known, shown, "They aren't on that channel")  # (a guest's role is while here)
                continue
            command = ("op" if sign == "+" else "deop") if letter == "o" else ("voice" if sign == "+" else "devoice")
            self.run_command(channel, command, [argument], quiet=True, failed=_mode_error(self, shown, argument))
        elif letter == "k" or letter == "l":
            self.run_command(channel, "key" if letter == "k" else "limit", [argument if sign == "+" else "off"],
                             quiet=True, failed=_notice_error(self))
        elif letter in "ims":
            setting = {"i": "invite-only", "m": "moderated", "s": "secret"}[letter]
            self.run_command(channel, setting, ["on" if sign == "+" else "off"], quiet=True, failed=_notice_error(self))
        elif letter == "t":
            self.run_command(channel, "open-topic", ["off" if sign == "+" else "on"], quiet=True,
                             failed=_notice_error(self))


def _mode_changes(self: IrcConnection, channel: str, modes: str, arguments: list[str]) -> list[tuple[str, str, str]]:
    """(sign, letter, argument) for each change in ``modes``; unknown letters get 472 and are left out."""
    changes = []
    sign = "+"
    arguments = list(arguments)
    for letter in modes[:20]:
        if letter in "+-":
            sign = letter
        elif letter in _LIST_MODES or letter in _MEMBER_MODES:
            argument = arguments.pop(0) if arguments else ""
            if letter in _MEMBER_MODES and not argument:
                continue
            changes.append((sign, letter, argument))
        elif letter == "k" or letter == "l":
            argument = arguments.pop(0) if arguments and (sign == "+" or letter == "k") else ""
            problem = (key_problem(argument) if letter == "k" else limit_problem(argument)) if sign == "+" else None
            if problem is None and letter == "k" and argument.lower() == "off" and sign == "+":
                problem = "off means no key in chatd: choose another key."
            if problem:  # (a key is never echoed: *; Modern IRC, ERR_INVALIDMODEPARAM)
                self.numeric("696", channel, letter, "*" if letter == "k" or not argument else argument, problem)
                continue
            changes.append((sign, letter, argument))
        elif letter in _FLAG_MODES:
            changes.append((sign, letter, ""))
        elif letter == "n":  # every chatd room takes lines from its members only
            if sign == "-":
                self.numeric("472", "n", f"every room takes lines from its members only: {channel} stays +n")
        else:
            self.numeric("472", letter, f"is not a mode chatd knows for {channel}")
    return changes


def _ban_mask(self: IrcConnection, channel: Channel, room: Room, sign: str, mask: str) -> None:
    """
    ``+b MASK`` / ``-b MASK``: chatd bans users by name, so a mask bans (or
    unbans) each user it names: a literal nick part names that user (``tel``,
    ``tel!*@*``, ``tel!x@y``); a mask with wildcards (``*!*tel@chatd``, irssi's
    ``/ban``; ``*!tel@chatd``, WeeChat's) is matched, ``*`` and ``?`` with ASCII
    case ignored (CASEMAPPING=ascii), against the full ``nick!user@host`` of
    the room's members (``-b``: of its banned users). A mask other than a
    plain nick is answered with a NOTICE to the channel saying whom it named,
    or that it named nobody.
    """
    shown = channel_name(room.name)
    nick, user, host = _mask_parts(mask)
    moderation = self.chat.moderation
    literal = not any(char in nick for char in "*?")
    plain = literal and (mask == nick or mask == f"{nick}!*@*")
    if sign == "+":
        if literal and moderation.known(nick) is None and plain:
            self.numeric("401", nick, "No such nick/channel (chatd bans accounts and users online by name)")
            return
        candidates = members_everywhere(self.chat, room)
    else:
        candidates = [moderation.display(key) for key in room.authority.bans]
    named = moderation.known(nick) if literal else None  # (the user a literal nick part names)
    if sign == "-" and plain:
        names = [named or nick]  # (unban says whether it was banned)
    else:
        names = [named] if named and (sign == "+" or name_key(named) in room.authority.bans) else []
    if not plain:
        pattern = _mask_pattern(nick, user, host)
        names += [name for name in candidates if name_key(name) not in {name_key(found) for found in names}
                  and pattern.fullmatch(_ascii_lower(self.irc.mask(name)))]
    if not plain:
        did = "bans" if sign == "+" else "lifts the bans on"
        self.from_server("NOTICE", shown, f"{mask} {did} {', '.join(names)} (chatd bans users by name)" if names
                         else f"{mask} matches nobody {'in' if sign == '+' else 'banned from'} {shown}: nobody was "
                              f"{'banned' if sign == '+' else 'unbanned'} (chatd bans users by name)")
    for name in names:
        self.run_command(channel, "ban" if sign == "+" else "unban", [name] + ([""] if sign == "+" else []),
                         quiet=True, failed=_mode_error(self, shown, name))


def _ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered only (IRC's CASEMAPPING=ascii)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _mask_parts(mask: str) -> tuple[str, str, str]:
    """A ban mask's (nick, user, host): ``nick``, ``nick!user``, ``user@host``, ``nick!user@host``; missing: ``*``."""
    nick, _, rest = mask.partition("!") if "!" in mask else ("", "", mask) if "@" in mask else (mask, "", "")
    user, _, host = rest.partition("@")
    return nick or "*", user or "*", host or "*"


def _mask_pattern(nick: str, user: str, host: str) -> re.Pattern[str]:
    """A ban mask's parts as a regular expression for ``nick!user@host``: ``*`` any, ``?`` one, ASCII case ignored."""
    full = f"{nick}!{user}@{host}"
    return re.compile("".join(".*" if char == "*" else "." if char == "?" else re.escape(char)
                              for char in _ascii_lower(full)), re.DOTALL)


def _ban_list(self: IrcConnection, room: Room) -> None:
    """367 per ban that has not run out (``nick!*@*``, who set it, when: seconds since the epoch), then 368."""
    moderation = self.chat.moderation
    now = self.chat.reactor.seconds()
    shown = channel_name(room.name)
    for key, ban in sorted(room.authority.bans.items()):
        if not ban.over(now):
            self.numeric("367", shown, f"{moderation.display(key)}!*@*", ban.by or self.irc.server,
                         *([str(int(ban.at))] if ban.at else []), text=False)
    self.numeric("368", shown, "End of channel ban list")


def _user_mode(self: IrcConnection, target: str, changes: list[str]) -> None:
    if name_key(target) != name_key(self.target):
        self.numeric("502" if name_key(target) in self.chat.online else "401", target,
                     "Can't change mode for other users" if name_key(target) in self.chat.online
                     else "No such nick/channel")
        return
    if changes and changes[0]:
        for part in changes[0].lstrip("+-"):
            if part not in "i":
                self.numeric("501", "Unknown MODE flag")
                return
        adding = not changes[0].startswith("-")
        if adding != ("i" in self.umodes):
            self.umodes = "i" if adding else ""
            self.send_line(line(self.irc.mask(self.target), "MODE", self.target, ("+" if adding else "-") + "i"))
        return
    self.numeric("221", "+" + self.umodes + ("o" if self.oper else ""), text=False)


# -- users ----------------------------------------------------------------------------------------------


@handles("AWAY")
def away(self: IrcConnection, message: Message) -> None:
    """``AWAY :message`` (``306``; chatd's ``away``), ``AWAY`` alone: back (``305``)."""
    text = message.params[0].strip() if message.params else ""
    if text:
        self.run_command(self, "away", [text], quiet=True, failed=_notice_error(self),
                         done=lambda: self.numeric("306", "You have been marked as being away"))
    else:
        self.chat.presence.back(self.name or "")
        self.numeric("305", "You are no longer marked as being away")


@handles("WHOIS", params=1)
def whois(self: IrcConnection, message: Message) -> None:
    """311, 319 (the channels the asker may see), 312, 313 (an admin or OPER), 301, 330 (an account), 318; or 401."""
    chat = self.chat
    for target in message.params[-1].split(",")[:TARGETS_MAX]:
        found = online_user(chat, target)  # (here or on another node: chatd.nodes)
        if found is None:
            self.numeric("401", target, "No such nick/channel")
            self.numeric("318", target, "End of /WHOIS list")
            continue
        name, session = found.name, found.session
        user, host, realname = self.irc.user_info(name)
        self.numeric("311", name, user, host, "*", realname)
        every = 2 if "multi-prefix" in self.caps else 1
        rooms = [chat.moderation.marks(room, name)[:every] + channel_name(room.name)
                 for room in (self.irc.rooms_of(session) if session is not None else found.rooms_there(chat))
                 if room.key in self.channels or chat.moderation.may_see(room, self.name)]
        if rooms:
            self.numeric("319", name, " ".join(rooms))
        self.numeric("312", name, self.irc.server, "chatd")
        if chat.is_admin(name) or getattr(session, "oper", False):
            self.numeric("313", name, "is an IRC operator")
        away_message = chat.presence.message(name)
        if away_message is not None:
            self.numeric("301", name, away_message)
        if name_key(name) in chat.accounts:
            self.numeric("330", name, name, "is logged in as")
        self.numeric("318", name, "End of /WHOIS list")


@handles("WHO")
def who(self: IrcConnection, message: Message) -> None:
    """
    ``WHO #lab``: a 352 per member; ``WHO mask``: a 352 per online user
    whose nick, username, host or realname matches (``*``, ``?``; ASCII case
    ignored); then 315. Flags: ``H`` here or ``G`` away, ``*`` an operator
    of the server, ``@`` of the channel, ``+`` voiced (``@+`` both, with
    multi-prefix; else the highest).
    """
    chat = self.chat
    mask = message.params[0] if message.params and message.params[0] else "*"
    if mask.startswith("#"):
        room = _room(self, mask, missing=False)
        if room is not None and (room.key in self.channels or chat.moderation.may_see(room, self.name)):
            for name in members_everywhere(chat, room):
                _who_line(self, name, channel_name(room.name), chat.moderation.marks(room, name))
    else:
        pattern = mask.lower()
        for found in online_users(chat):  # (here or on another node: chatd.nodes)
            name, session = found.name, found.session
            user, host, realname = self.irc.user_info(name)
            exact = name_key(name) == name_key(mask)
            if not exact and "i" in getattr(session, "umodes", "") and not _shares_a_room(self, session):
                continue  # (+i: found by its exact nick only, or by those sharing a room with it)
            if any(fnmatch.fnmatchcase(field.lower(), pattern) for field in (name, user, host, realname)):
                _who_line(self, name, "*", "")
    self.numeric("315", mask, "End of WHO list")


def _shares_a_room(self: IrcConnection, session: object) -> bool:
    return session is self or any(room.key in self.channels for room in self.irc.rooms_of(session))


def _who_line(self: IrcConnection, name: str, channel: str, marks: str) -> None:
    chat = self.chat
    user, host, realname = self.irc.user_info(name)
    session = chat.online.get(name_key(name))
    flags = ("G" if chat.presence.message(name) is not None else "H")
    if chat.is_admin(name) or getattr(session, "oper", False):
        flags += "*"
    flags += marks if "multi-prefix" in self.caps else marks[:1]
    self.numeric("352", channel, user, host, self.irc.server, name, flags, f"0 {realname}")


@handles("ISON", params=1)
def ison(self: IrcConnection, message: Message) -> None:
    found = [online_user(self.chat, nick) for nick in " ".join(message.params).split()[:50]]
    self.numeric("303", " ".join(user.name for user in found if user is not None))


@handles("USERHOST", params=1)
def userhost(self: IrcConnection, message: Message) -> None:
    chat = self.chat
    replies = []
    for nick in message.params[:5]:
        found = online_user(chat, nick)
        if found is None:
            continue
        name = found.name
        user, host, _ = self.irc.user_info(name)
        oper = "*" if chat.is_admin(name) or getattr(found.session, "oper", False) else ""
        away_mark = "-" if chat.presence.message(name) is not None else "+"
        replies.append(f"{name}{oper}={away_mark}{user}@{host}")
    self.numeric("302", " ".join(replies))


@handles("MOTD")
def motd(self: IrcConnection, message: Message) -> None:
    self.motd()


@handles("LUSERS")
def lusers(self: IrcConnection, message: Message) -> None:
    self.lusers()


@handles("TAGMSG", params=1)
def tagmsg(self: IrcConnection, message: Message) -> None:
    """Accepted and not relayed: chatd's events carry no client-only tags (docs/IRC.md)."""


@handles("TIME")
def time_(self: IrcConnection, message: Message) -> None:
    now = datetime.fromtimestamp(self.chat.reactor.seconds(), timezone.utc)
    self.numeric("391", self.irc.server, now.strftime("%A %B %d %Y -- %H:%M:%S +00:00"))


@handles("VERSION")
def version(self: IrcConnection, message: Message) -> None:
    self.numeric("351", f"chatd-{__version__}.", self.irc.server, "chatd's IRC front-end")
    self.isupport()


@handles("INFO")
def info(self: IrcConnection, message: Message) -> None:
    self.numeric("371", f"chatd {__version__}: a multi-room chat server; this is its IRC front-end.")
    self.numeric("374", "End of INFO list")


#: Lines one CHATHISTORY answer may hold (ISUPPORT ``CHATHISTORY``).
HISTORY_MAX = 100
#: Lines of a room a CHATHISTORY request looks through, newest first (within ``--history-days``).
HISTORY_SCAN = 1000


@handles("CHATHISTORY", params=3)
def chathistory(self: IrcConnection, message: Message) -> None:
    """
    IRCv3 ``draft/chathistory`` from chatd's durable room history:
    ``LATEST|BEFORE|AFTER|AROUND target ref limit``, ``BETWEEN target ref
    ref limit`` (``ref``: ``*`` for LATEST, ``msgid=ROOM-ID``,
    ``timestamp=ISO``); the lines (PRIVMSGs, ``/me`` as ACTION) in a
    ``chathistory`` batch, oldest first. Looks through the room's newest
    :data:`HISTORY_SCAN` lines; a nick's history is empty (chatd keeps no
    private messages once delivered). ``TARGETS``: :func:`_targets`.
    """
    sub, params = message.params[0].upper(), message.params[1:]
    fail = lambda code, *rest: self.from_server("FAIL", "CHATHISTORY", code, *rest)  # noqa: E731
    if sub == "TARGETS":
        _targets(self, params)
        return
    if sub not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN") or len(params) < (4 if sub == "BETWEEN" else 3):
        fail("INVALID_PARAMS", sub[:20] or "*", "usage: CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN target ...")
        return
    target = params[0]
    limit_text = params[-1]
    refs = [_history_ref(ref, target[1:] if target.startswith("#") else "") for ref in params[1:-1]]
    if not limit_text.isdigit() or any(ref is None for ref in refs) or (sub != "LATEST" and refs[0] == ("*", 0.0)):
        fail("INVALID_PARAMS", sub, "a reference is *, msgid=ROOM-ID or timestamp=YYYY-MM-DDThh:mm:ss.sssZ; "
                                    "the limit a number")
        return
    limit = min(int(limit_text), HISTORY_MAX)
    if not target.startswith("#"):
        if online_user(self.chat, target) is None and name_key(target) not in self.chat.accounts:
            fail("INVALID_TARGET", sub, target, "No such nick or channel")
            return
        _history_batch(self, "chathistory", target, [])
        return
    room = _room(self, target, missing=False)
    if room is None or room.key not in self.channels:  # (chatd's /history too is for a room one is in)
        fail("INVALID_TARGET", sub, target, "No such channel, or you are not in it")
        return
    d = self.chat.room_history(room, HISTORY_SCAN)

    def answer(events: list[RoomEvent]) -> None:
        lines = [event for event in events if event.kind in _HISTORY_KINDS]
        chosen = _select(sub, lines, [ref for ref in refs if ref is not None], limit) if limit else []
        _history_batch(self, "chathistory", channel_name(room.name), chosen)

    self.wait_for(d, answer, _notice_error(self))


_HISTORY_KINDS = frozenset({EventKind.SAY, EventKind.ME})


def _history_ref(text: str, room: str = "") -> tuple[str, float] | None:
    """
    ``*``, ``msgid=lab-42`` (an event id of the room ``room``; another
    room's msgid is none; ``lab-42.2``, a piece of a long line, names its
    line), ``timestamp=2026-...Z`` (seconds since the epoch) as (kind,
    value); None if it is none of them.
    """
    if text == "*":
        return ("*", 0.0)
    kind, _, value = text.partition("=")
    if kind == "msgid":
        of, _, number = value.rpartition("-")
        if room and name_key(of) != name_key(room):
            return None
        number = number.partition(".")[0]
        return ("msgid", float(number)) if number.isdigit() else None
    if kind == "timestamp":
        try:
            return ("timestamp", float(round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)))
        except ValueError:
            return None
    return None


def _select(sub: str, events: list[RoomEvent], refs: list[tuple[str, float]], limit: int) -> list[RoomEvent]:
    """The events a CHATHISTORY subcommand asks for (oldest first), by event id or time; bounds excluded."""

    def key(event: RoomEvent, ref: tuple[str, float]) -> float:
        return float(event.id) if ref[0] == "msgid" else _milliseconds(event.at)

    first = refs[0]
    if sub == "LATEST":
        after = events if first[0] == "*" else [event for event in events if key(event, first) > first[1]]
        return after[-limit:]
    if sub == "BEFORE":
        return [event for event in events if key(event, first) < first[1]][-limit:]
    if sub == "AFTER":
        return [event for event in events if key(event, first) > first[1]][:limit]
    if sub == "AROUND":
        before = [event for event in events if key(event, first) < first[1]]
        rest = [event for event in events if key(event, first) >= first[1]]
        half = limit // 2
        taken = before[-half:] if half else []
        return (taken + rest)[:limit]
    low, high = sorted((first[1], refs[1][1]))
    between = [event for event in events if low < key(event, first) and key(event, refs[1]) < high]
    return between[:limit] if first[1] <= refs[1][1] else between[-limit:]


def _milliseconds(at: float) -> float:
    """``at`` in whole milliseconds, as ``server-time`` shows it (cut, not rounded: the bounds are exclusive)."""
    moment = datetime.fromtimestamp(at, timezone.utc)
    return float(int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000)


def _targets(self: IrcConnection, params: list[str]) -> None:
    """
    ``CHATHISTORY TARGETS timestamp=A timestamp=B limit`` (IRCv3
    draft/chathistory): the channels the client is in whose latest line is
    between A and B (bounds excluded, in either order), each as
    ``CHATHISTORY TARGETS #room timestamp=T`` in a
    ``draft/chathistory-targets`` batch, the earliest first, at most
    ``limit`` (and :data:`HISTORY_MAX`). No nicks: chatd keeps no private
    messages once delivered.
    """
    refs = [_history_ref(ref) for ref in params[:2]]
    if len(params) < 3 or not params[2].isdigit() or any(ref is None or ref[0] != "timestamp" for ref in refs):
        self.from_server("FAIL", "CHATHISTORY", "INVALID_PARAMS", "TARGETS",
                         "usage: CHATHISTORY TARGETS timestamp=... timestamp=... limit")
        return
    low, high = sorted(ref[1] for ref in refs if ref is not None)
    limit = min(int(params[2]), HISTORY_MAX)
    rooms = [channel.room for channel in self.channels.values() if channel.room is not None]

    def answer(latest: list[list[RoomEvent]]) -> None:
        found = sorted((events[-1].at, channel_name(room.name)) for room, events in zip(rooms, latest)
                       if events and low < _milliseconds(events[-1].at) < high)[:limit]
        data = b"".join(line(self.irc.server, "CHATHISTORY", "TARGETS", name, iso_time(at), text=False)
                        for at, name in found)
        _batch(self, "draft/chathistory-targets", None, data)

    self.wait_for(defer.gatherResults([self.chat.room_history(room, 1) for room in rooms], consumeErrors=True),
                  answer, _notice_error(self))


def _history_batch(self: IrcConnection, kind: str, target: str | None, events: list[RoomEvent]) -> None:
    """``events`` in a batch of ``kind`` (plain lines without the ``batch`` capability)."""
    renderer = self.renderer
    _batch(self, kind, target, b"".join(renderer.event_lines(event) for event in events))


def _batch(self: IrcConnection, kind: str, target: str | None, data: bytes) -> None:
    """The lines ``data`` in a batch of ``kind`` (plain lines without the ``batch`` capability)."""
    if "batch" not in self.caps:
        self.send_line(data)
        return
    reference = self.new_batch()
    lines = [part + b"\r\n" for part in data.split(b"\r\n") if part]
    self.send_line(line(self.irc.server, "BATCH", "+" + reference, kind, *([target] if target else []), text=False)
                   + b"".join(tagged(part, "batch=" + reference) for part in lines)
                   + line(self.irc.server, "BATCH", "-" + reference))


@handles("WHOWAS", params=1)
def whowas(self: IrcConnection, message: Message) -> None:
    """
    ``WHOWAS nick [count]``: the IRC users who left under a nick matching
    ``nick`` (``*``, ``?``), newest first, ``count`` of them (none, 0 or
    less: all the server remembers, the last :data:`~chatd.frontends.irc.GONE_MAX`
    sign-offs): 314, 312 per entry; 406 if none; then 369.
    """
    pattern = message.params[0].lower()
    count = message.params[1] if len(message.params) > 1 else ""
    wanted = int(count) if count.lstrip("-").isdigit() and int(count) > 0 else 0
    found = 0
    for nick, user, realname, at in reversed(self.irc.gone):
        if not fnmatch.fnmatchcase(nick.lower(), pattern):
            continue
        self.numeric("314", nick, user, HOST, "*", realname)
        when = datetime.fromtimestamp(at, timezone.utc).strftime("%a %b %d %H:%M:%S %Y UTC")
        self.numeric("312", nick, self.irc.server, when)
        found += 1
        if found == wanted:
            break
    if not found:
        self.numeric("406", message.params[0], "There was no such nickname")
    self.numeric("369", message.params[0], "End of WHOWAS")


@handles("KILL", params=1)
def kill(self: IrcConnection, message: Message) -> None:
    """
    ``KILL nick :reason``: chatd's ``/disconnect`` (the session ends; a
    ``session_end`` row), for a server admin's session or one that OPERed as
    one (by that admin); others get ``481``.
    """
    chat = self.chat
    admin = self.oper_as or (self.name if chat.is_admin(self.name) else "")
    if not admin:
        self.numeric("481", "Permission Denied- You're not an IRC operator")
        return
    reason = message.params[1].strip() if len(message.params) > 1 else ""
    try:
        chat.admin.disconnect(admin, message.params[0], reason)
    except errors.NoSuchUser:
        self.numeric("401", message.params[0], "No such nick/channel")
    except errors.ChatError as error:
        self.server_notice(str(error))
