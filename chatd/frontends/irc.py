"""
The IRC front-end: chatd's rooms as IRC channels for irssi, WeeChat, HexChat
and bots, served by ``--listen-irc`` (docs/IRC.md).

- :class:`IrcConnection`, one per TCP (or TLS) connection, is the core's
  ``Session`` (it is what ``ChatFactory.online`` holds) and the command
  table's ``Caller`` for what is not about a channel (login, private
  messages). IRC commands map onto commands of ``chatd.commands.TABLE`` by
  name, with the same rules as every front-end.
- :class:`Channel`, one per channel the connection is in, is the member of
  that room's fan-out and the ``Caller`` of the room's commands (``say``,
  ``me``, ``exit``, ``topic``, ``kick``...). A chatd session is in one room
  at a time on the other front-ends; an IRC connection is in several: each
  of its channels is a member of one room, under the account's name.
- :class:`IrcRenderer` renders a batch of room events once, as IRC lines,
  for every IRC member sharing its capabilities; a member leaves out its
  own PRIVMSGs unless it asked for ``echo-message``.

The same limits as the line front-end apply (``chatd.limits``): admission,
the flood allowance (one token a line), the login and idle timeouts and
``--max-outbound`` (the SendQ).
"""

from __future__ import annotations

import hashlib
import socket
from collections import deque
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from twisted.internet import abstract, defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import __version__, errors
from chatd.commands import TABLE
from chatd.commands.builtin import deliver_queued
from chatd.commands.table import Command, CommandTable, Place
from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.core.ports import SessionEnd
from chatd.frontends.pacing import Pacing, send_at_once, sendq_exceeded
from chatd.frontends.irc_commands import (BEFORE_REGISTRATION, CHANNELS_MAX, HANDLERS, HISTORY_MAX, PARAMS_NEEDED,
                                         TARGETS_MAX)
from chatd.frontends.irc_wire import (HOST, LINE_MAX, LineSplitter, Message, channel_name, escape_tag, line, parse, split_text,
                                     tagged, too_long, valid_utf8)
from chatd.frontends.irc_wire import iso_time as _iso  # noqa: E402 (server-time, shared with irc_commands)
from chatd.limits import TokenBucket
from chatd.moderation import REASON_MAX, TOPIC_MAX
from chatd.nodes import members_everywhere
from chatd.presence import AWAY_MAX
from chatd.store import address_fields
from chatd.text import ROOM_NAME_MAX, USER_NAME_MAX, check_name, name_key
from chatd.twisted_internals import unsent_bytes

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

log = Logger()

#: The server's name in numerics and as the source of server messages, unless ``--irc-server-name`` says otherwise.
SERVER = "chatd"
#: IRC users remembered after they leave, for WHOWAS.
GONE_MAX = 100
#: The capabilities that change how room events are rendered (each set has its own renderer).
RENDERING_CAPS = frozenset({"server-time", "message-tags", "account-tag", "away-notify"})
#: ISUPPORT tokens (005), in order.
ISUPPORT = (
    "CASEMAPPING=ascii", "CHANTYPES=#", "UTF8ONLY", f"NICKLEN={USER_NAME_MAX}", f"CHANNELLEN={ROOM_NAME_MAX + 1}",
    f"TOPICLEN={TOPIC_MAX}", f"KICKLEN={REASON_MAX}", f"AWAYLEN={AWAY_MAX}", "PREFIX=(ov)@+", "CHANMODES=b,k,l,imnst",
    "NETWORK=chatd", f"LINELEN={LINE_MAX}", f"CHANLIMIT=#:{CHANNELS_MAX}",
    f"TARGMAX=JOIN:{TARGETS_MAX},PART:{TARGETS_MAX},PRIVMSG:{TARGETS_MAX},NOTICE:{TARGETS_MAX},"
    f"WHOIS:{TARGETS_MAX},KICK:{TARGETS_MAX}", f"CHATHISTORY={HISTORY_MAX}", "MSGREFTYPES=msgid,timestamp",
)


def private_id(message: PrivateMessage) -> str:
    """A private message's ``msgid`` (after ``pm-``): the same for its sender's echo and its recipient."""
    identity = f"{message.at!r} {message.sender} {message.recipient} {message.text}".encode("utf-8", "replace")
    return hashlib.blake2s(identity, digest_size=9).hexdigest()


def user_mask(name: str, user: str = "") -> str:
    """``name!user@chatd``: how a user is shown as a source (``user``: its IRC USER name; "": ``name``)."""
    return f"{name}!{user or name}@{HOST}"


def default_mask(name: str) -> str:
    """``name!name@chatd``: how a user without an IRC connection of its own is shown as a source."""
    return user_mask(name)


#: What a part of a :class:`Batch` is, for the members that leave some out: a PRIVMSG, a QUIT, a JOIN, anything else.
SAID, QUIT, JOINED, OTHER = 1, 2, 3, 0


class Batch(NamedTuple):
    """
    What :class:`IrcRenderer` makes of a batch: ``data``, every line; and,
    for a member that must leave some out, ``parts`` (sender key, SAID /
    QUIT / OTHER, the lines): its own PRIVMSGs without echo-message
    (``senders``: who said something), a QUIT it had from another room
    already (``quits``: who quit; ``joins``: who joined, back after a QUIT).
    """

    data: bytes
    senders: frozenset[str]
    quits: frozenset[str]
    joins: frozenset[str]
    parts: tuple[tuple[str, int, bytes], ...]

    def without(self, said: str, quits: Container[str]) -> bytes:
        """The lines without the PRIVMSGs of ``said`` and the QUITs of ``quits``."""
        return b"".join(data for sender, what, data in self.parts
                        if not (what == SAID and sender == said or what == QUIT and sender in quits))


class IrcRenderer:
    """
    Renders a batch of room events as IRC lines, once for every IRC member
    with the same rendering capabilities (``server-time`` adds ``@time=``,
    ``message-tags`` a ``msgid`` too).
    """

    def __init__(self, caps: frozenset[str] = frozenset(), server: str = SERVER,
                 mask: Callable[[str], str] | None = None, is_account: Callable[[str], bool] | None = None,
                 away_of: Callable[[str], str | None] | None = None) -> None:
        """
        ``mask(name)``: how a user is shown (``nick!user@host``); ``is_account(name)``: for ``account-tag``;
        ``away_of(name)``: the away message, for ``away-notify``.
        """
        self.time = "server-time" in caps
        self.msgid = "message-tags" in caps
        self.account = "account-tag" in caps and is_account is not None
        self.server = server
        self.mask = mask or default_mask
        self.is_account = is_account or (lambda name: False)
        #: away-notify: a user who joins while away is followed by its AWAY (``away_of(name)``: its message).
        self.away_notify = "away-notify" in caps and away_of is not None
        self.away_of = away_of or (lambda name: None)
        #: The web page where a member logs in to download a shared file (``web_page_url``; "": no link).
        self.files_at = ""
        #: A room's key as a ``MODE +k`` shows it to the members (its key now, not in the event: never stored there).
        self.key_of: Callable[[str], str] = lambda room: "*"

    def render(self, events: Sequence[RoomEvent]) -> Batch:
        parts = tuple((name_key(event.sender), _what(event), self.event_lines(event)) for event in events)
        senders = frozenset(sender for sender, what, _ in parts if what == SAID)
        quits = frozenset(sender for sender, what, _ in parts if what == QUIT)
        joins = frozenset(sender for sender, what, _ in parts if what == JOINED)
        return Batch(b"".join(data for _, _, data in parts), senders, quits, joins, parts)

    def tags(self, event: RoomEvent) -> str:
        tags = []
        if self.account and event.sender and self.is_account(event.sender):
            tags.append("account=" + event.sender)
        if self.msgid:
            tags.append(f"msgid={escape_tag(event.room)}-{event.id}")
        if self.time:
            tags.append("time=" + _iso(event.at))
        return ";".join(tags)

    def event_lines(self, event: RoomEvent) -> bytes:
        """The IRC lines of one room event (a long line of chat becomes several PRIVMSGs)."""
        kind, channel, tags = event.kind, channel_name(event.room), self.tags(event)
        source = self.mask(event.sender) if event.sender else self.server
        if kind is EventKind.SAY or kind is EventKind.ME:
            command = "NOTICE" if event.target == "notice" else "PRIVMSG"
            return privmsg_lines(source, channel, event.text, kind is EventKind.ME, tags, command)
        if kind is EventKind.JOIN:
            away = self.away_of(event.sender) if self.away_notify else None
            return line(source, "JOIN", channel, tags=tags) + (line(source, "AWAY", away) if away else b"")
        if kind is EventKind.LEAVE:
            if event.target == "quit":
                return line(source, "QUIT", event.text or "Quit", tags=tags)
            return line(source, "PART", channel, *([event.text] if event.text else []), tags=tags)
        if kind is EventKind.KICK:  # (no reason: the kicker's name, RFC 2812 §3.2.8)
            return line(source, "KICK", channel, event.target, event.text or event.sender or self.server, tags=tags)
        if kind is EventKind.INVITE:  # only the inviter and the invitee are told (RFC 2812 §3.2.7)
            return b""
        if kind is EventKind.TOPIC:
            return line(source, "TOPIC", channel, event.text, tags=tags)
        modes = _MODES.get(kind)
        if modes is not None:
            target = f"{event.target}!*@*" if modes[1] == "b" else event.target
            return line(source, "MODE", channel, modes, target, tags=tags)
        if kind is EventKind.SETTING:
            flag = _SETTING_MODES.get(event.target)
            if event.target == "limit" or event.target == "key":
                on = event.text != "off"
                value = (event.text if event.target == "limit" else self.key_of(event.room)) if on else "*"
                sign = "+" if on else "-"
                modes = sign + event.target[0]
                return line(source, "MODE", channel, modes, *([value] if on or event.target == "key" else []),
                            tags=tags)
            if flag is not None:
                on = event.text == "on"
                sign = "+" if on != (flag == "t") else "-"  # open-topic on is -t
                return line(source, "MODE", channel, sign + flag, tags=tags)
        text = _notice_text(event)
        if kind is EventKind.FILE and self.files_at:
            text += f" (log in at {self.files_at} to download it)"
        return line(self.server, "NOTICE", channel, text, tags=tags)


#: Room events that are channel modes (RFC 2811 §4): +b bans, +o operators (the owner is an operator too), +v voice.
_MODES = {EventKind.BAN: "+b", EventKind.UNBAN: "-b", EventKind.OP: "+o", EventKind.DEOP: "-o",
          EventKind.OWNER: "+o", EventKind.VOICE: "+v", EventKind.DEVOICE: "-v"}
#: Room settings that are channel modes: invite-only +i, open-topic -t (+t: only operators set the topic), secret +s,
#: moderated +m.
_SETTING_MODES = {"invite-only": "i", "open-topic": "t", "secret": "s", "moderated": "m"}


def _what(event: RoomEvent) -> int:
    kind = event.kind
    if kind is EventKind.SAY or kind is EventKind.ME:
        return SAID
    if kind is EventKind.JOIN:
        return JOINED
    return QUIT if kind is EventKind.LEAVE and event.target == "quit" else OTHER


def _notice_text(event: RoomEvent) -> str:
    """What an event without an IRC form says, as a NOTICE to the channel (files, mutes, invitations)."""
    who = event.sender or "the server"
    kind = event.kind
    if kind is EventKind.FILE_OFFER:
        return f"{who} offers a file: {event.text}"
    if kind is EventKind.FILE:
        return f"{who} shared a file: {event.text}"
    if kind is EventKind.FILE_FAILED:
        return f"{who}'s file was not shared: {event.text}"
    if kind is EventKind.MUTE:
        until = f" until {_iso(event.until)}" if event.until else ""
        return f"{event.target} was muted by {who}{until}" + (f": {event.text}" if event.text else "")
    if kind is EventKind.UNMUTE:
        return f"{event.target} may speak again"
    if kind is EventKind.SETTING:
        return f"{who} set {event.target} to {event.text}"
    return f"{who}: {kind} {event.target} {event.text}".strip()


def privmsg_lines(source: str, target: str, text: str, action: bool = False, tags: str = "",
                  command: str = "PRIVMSG") -> bytes:
    """
    A PRIVMSG (or an ACTION) of ``text``, as several lines if it would pass
    512 bytes; each piece after the first has its own ``msgid``, the line's
    with ``.N`` (N = 2, 3, ...): IRCv3 message-ids says a msgid is unique.
    """
    head = len(f":{source} {command} {target} :".encode()) + 2 + (9 if action else 0)
    out = []
    for number, piece in enumerate(split_text(text, LINE_MAX - head), 1):
        if number > 1 and "msgid=" in tags:
            tags = ";".join(tag.partition(".")[0] + f".{number}" if tag.startswith("msgid=") else tag
                            for tag in tags.split(";"))
        out.append(line(source, command, target, f"\x01ACTION {piece}\x01" if action else piece, tags=tags))
    return b"".join(out)


class Renderers:
    """One :class:`IrcRenderer` per set of rendering capabilities, shared by every IRC connection."""

    def __init__(self, server: str = SERVER, mask: Callable[[str], str] | None = None,
                 is_account: Callable[[str], bool] | None = None,
                 away_of: Callable[[str], str | None] | None = None) -> None:
        self._by_caps: dict[frozenset[str], IrcRenderer] = {}
        self.server, self.mask, self.is_account, self.away_of = server, mask, is_account, away_of
        self.files_at = ""
        self.key_of: Callable[[str], str] = lambda room: "*"

    def get(self, caps: Iterable[str]) -> IrcRenderer:
        key = frozenset(caps) & RENDERING_CAPS
        renderer = self._by_caps.get(key)
        if renderer is None:
            renderer = self._by_caps[key] = IrcRenderer(key, self.server, self.mask, self.is_account, self.away_of)
            renderer.files_at, renderer.key_of = self.files_at, self.key_of
        return renderer


def web_page_url(listen_web: Sequence[str], origins: Sequence[str], hosts: Sequence[str],
                 machine: str | None = None) -> str:
    """
    The browser front-end's page, as a shared file's NOTICE links to it:
    the first ``--web-origin``; else the first ``--web-host`` (else this
    machine's name, ``socket.gethostname()``, which the web front-end
    answers to) with the first ``--listen-web`` TCP or TLS endpoint's port
    (``ssl``: ``https``); "" when the web front-end is off or has no port.
    No ticket: a member logs in there and downloads the file.
    """
    if not listen_web:
        return ""
    if origins:
        return origins[0].rstrip("/") + "/"
    for description in listen_web:
        kind, _, rest = description.partition(":")
        port = next((part.partition("=")[2] or part for part in rest.split(":")
                     if part.isdigit() or part.startswith("port=")), "")
        if kind in ("tcp", "ssl") and port.isdigit():
            host = hosts[0] if hosts else machine or socket.gethostname()
            return f"{'https' if kind == 'ssl' else 'http'}://{host}:{port}/"
    return ""


class IrcFactory(Factory):
    """What ``--listen-irc`` listens with: an :class:`IrcConnection` per connection."""

    def __init__(self, chat: ChatFactory, guests: bool = False, server: str = SERVER, files_at: str = "") -> None:
        """``files_at``: the web page's address a shared file's NOTICE gives (:func:`web_page_url`; "": none)."""
        self.chat = chat
        #: ``--irc-guests``: connections without an account may chat under a free nick.
        self.guests = guests
        #: ``--irc-server-name``: the source of server messages.
        self.server = server
        #: The registered IRC connections, by name key (for their user names and real names).
        self.users: dict[str, IrcConnection] = {}
        #: The last GONE_MAX IRC users who left (nick, user name, real name, when), oldest first: WHOWAS.
        self.gone: deque[tuple[str, str, str, float]] = deque(maxlen=GONE_MAX)
        #: The USER names of IRC users who left, by name key (the last GONE_MAX): their QUIT, rendered after
        #: they went, shows the prefix their other lines had (:meth:`mask`).
        self.left_users: dict[str, str] = {}
        #: The most users online at once since start (LUSERS 265/266), as seen by the IRC front-end.
        self.most_users = 0
        self.renderers = Renderers(server, self.mask, lambda name: name_key(name) in chat.accounts,
                                   chat.presence.message)
        self.renderers.files_at = files_at
        self.renderers.key_of = self.key_of
        chat.admin.reserve(server)
        chat.presence.watchers.append(self.away_changed)
        self.created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    def key_of(self, room: str) -> str:
        """The key of the room ``room`` now, as ``MODE +k`` shows it to its members ("*" if none)."""
        found = self.chat.rooms.get(name_key(room))
        return found.authority.key if found is not None and found.authority.key else "*"

    def mask(self, name: str) -> str:
        """How the user ``name`` is shown as a source: ``nick!user@host`` (``user``: an IRC user's USER name)."""
        key = name_key(name)
        connection = self.users.get(key)
        return user_mask(name, connection.user if connection is not None else self.left_users.get(key, ""))

    def user_info(self, name: str) -> tuple[str, str, str]:
        """(user name, host, real name) of the online user ``name``: an IRC user's from USER, others' made up."""
        connection = self.users.get(name_key(name))
        if connection is not None:
            return connection.user, HOST, connection.realname
        return name, HOST, "chatd user"

    def away_changed(self, name: str, message: str | None) -> None:
        """IRCv3 away-notify: ``AWAY :message`` (or ``AWAY``: back) to the IRC clients sharing a room with ``name``."""
        session = self.chat.online.get(name_key(name))
        if session is None:
            return
        told: set[IrcConnection] = set()
        data = line(self.mask(name), "AWAY", *([message] if message is not None else []))
        for room in self.rooms_of(session):
            for member in room.fanout.members():
                connection = getattr(member, "connection", None)
                if (isinstance(connection, IrcConnection) and connection is not session and connection not in told
                        and "away-notify" in connection.caps):
                    told.add(connection)
                    connection.send_line(data)

    def rooms_of(self, session: Any) -> list[Room]:
        """The rooms ``session`` is in: an IRC connection's channels, another front-end's one room."""
        if isinstance(session, IrcConnection):
            return [channel.room for channel in session.channels.values() if channel.room is not None]
        room = getattr(session, "room", None) or getattr(getattr(session, "dialogue", None), "room", None)
        return [room] if room is not None else []

    def buildProtocol(self, addr: Any) -> IrcConnection:
        return IrcConnection(self)


class _Caller:
    """What both callers share: the connection's factory, table, answers and session-wide methods."""

    connection: IrcConnection
    #: The shared state (the ChatFactory).
    factory: ChatFactory

    @property
    def commands(self) -> CommandTable:
        return TABLE

    @property
    def login_failures(self) -> int:
        return self.connection.failures

    @login_failures.setter
    def login_failures(self, value: int) -> None:
        self.connection.failures = value

    def reply(self, text: str) -> None:
        if not self.connection.quiet:
            self.connection.server_notice(text)

    def error(self, text: str) -> None:
        self.connection.command_error(text)

    def logged_in(self, name: str, text: str) -> None:
        self.connection.logged_in(name, text)

    def logged_out(self, text: str) -> None:
        self.connection.server_notice(text)

    def show_help(self, table: CommandTable) -> None:
        self.connection.server_notice("See docs/IRC.md for the IRC commands chatd answers.")

    def later(self, seconds: float) -> defer.Deferred[None]:
        return self.connection.later(seconds)

    def close(self) -> None:
        self.connection.close()

    def show_history(self, room: str, events: Sequence[RoomEvent], older: int | None) -> None:
        self.connection.history_lines(events)


class Channel(_Caller):
    """
    One channel an IRC connection is in: the member of its room's fan-out
    (under the account's name) and the ``Caller`` of the room's commands.
    Session methods the core calls on a member go to the connection.
    """

    def __init__(self, connection: IrcConnection, name: str) -> None:
        self.connection = connection
        self.factory = connection.chat
        # Session: the connection's (a channel is made once it is registered, and these never change then).
        self.name: str | None = connection.name
        self.origin: Mapping[str, str] = connection.origin
        self.address_key: str | None = connection.address_key
        #: The room's name as typed (until entered), then as stored.
        self.name_typed = name
        self.room: Room | None = None
        #: The reason of the PART being run (chatd's ``exit`` has none of its own).
        self.part_message = ""
        self._gone = ""

    def __repr__(self) -> str:
        return f"<Channel #{self.name_typed} of {self.connection.name}>"

    @property
    def renderer(self) -> IrcRenderer:
        return self.connection.renderer

    @property
    def session(self) -> Channel:
        return self

    @property
    def files(self) -> None:
        return None

    def deliver(self, payload: Batch) -> None:
        self.connection.deliver(payload)

    def drop(self) -> None:
        self.connection.drop()

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        self.connection.private(message, sent)

    def notice(self, text: str) -> None:
        self.connection.notice(text)

    def spend_allowance(self) -> None:
        self.connection.spend_allowance()

    def share_allowance(self, bucket: Any, wait: float = 0.0) -> None:
        self.connection.share_allowance(bucket, wait)

    def kick(self, reason: str, event: SessionEnd = "disconnect") -> None:
        self.connection.kick(reason, event)

    def room_deleted(self, room: Room, by: str) -> None:
        self._out(room, f"room {room.name} was deleted by {by}")

    def removed(self, room: Room, notice: str, gone: str) -> None:
        self._out(room, "")  # (the room's KICK, a kick's or a ban's, tells the client)

    def _out(self, room: Room, part: str) -> None:
        """No longer in ``room`` (deleted, kicked, banned): forget the channel; ``part``: tell the client why."""
        if self.room is room:
            self.room = None
            self.connection.channels.pop(room.key, None)
            if part:
                self.connection.send_line(line(self.connection.irc.mask(self.name or "*"), "PART", channel_name(room.name), part))

    # Caller
    @property
    def place(self) -> Place:
        return Place.ROOM if self.room is not None else Place.MENU

    @property
    def room_gone(self) -> str:
        return ""

    def entered(self, room: Room, replay: Sequence[RoomEvent] = ()) -> None:
        connection = self.connection
        if connection.ended or room.key in connection.channels:
            return
        self.room = room
        connection.channels[room.key] = self
        connection.chat.join(room, self)
        room.fanout.catch_up(self)  # its own JOIN first, then the topic and names
        connection.joined(self, room)

    def left(self) -> None:
        """PART (chatd's ``exit``): the room is told, with the reason :attr:`part_message` if the client gave one."""
        room, self.room = self.room, None
        if room is None:
            return
        reason, self.part_message = self.part_message, ""
        self.connection.channels.pop(room.key, None)
        self.connection.chat.leave(room, self, reason)
        self.connection.send_line(line(self.connection.irc.mask(self.name or "*"), "PART", channel_name(room.name),
                                       *([reason] if reason else [])))


class Direct(_Caller):
    """The caller of commands that are not about a channel but are room commands in chatd (``msg``)."""

    room: Room | None = None
    place = Place.ROOM
    room_gone = ""

    def __init__(self, connection: IrcConnection) -> None:
        self.connection = connection
        self.factory = connection.chat

    @property
    def session(self) -> IrcConnection:
        return self.connection

    def entered(self, room: Room, replay: Sequence[RoomEvent] = ()) -> None:
        pass

    def left(self) -> None:
        pass


class IrcConnection(Protocol, _Caller):
    """One IRC client: the core's Session and the Caller of the commands not about a channel."""

    name: str | None = None
    address_key: str | None = None
    room: Room | None = None
    room_gone = ""
    transport: Any = None
    files = None
    failures = 0
    #: Replies of the command being run are not shown (an IRC command whose answer is its numerics).
    quiet = False

    def __init__(self, irc: IrcFactory) -> None:
        self.irc = irc
        self.chat = irc.chat
        #: The shared state (``Caller.factory``), not the IrcFactory that built this connection (:attr:`irc`).
        self.factory = irc.chat
        self.connection = self
        self.origin: Mapping[str, str] = MappingProxyType({})
        self.renderer = irc.renderers.get(())
        #: The channels it is in, by room name key.
        self.channels: dict[str, Channel] = {}
        self.direct = Direct(self)
        self.caps: set[str] = set()
        self.nick = ""
        self.user = ""
        self.password = ""
        self.realname = ""
        self.guest = False
        #: OPER succeeded (chatd.frontends.irc_commands.oper), as the admin account ``oper_as``.
        self.oper = False
        self.oper_as = ""
        #: User modes set (``i`` or nothing).
        self.umodes = ""
        self.registered = False
        self.ended = False
        self.negotiating = False
        self.sasl: str | None = None
        #: What is being authenticated for now ("sasl", "pass", "register"), so failures get their numerics.
        self.auth = ""
        self._lines = LineSplitter()
        #: Received lines, taken one at a time within the flood allowance (``None``: one too long).
        self.pacing: Pacing[bytes | None] = Pacing(
            self.chat.reactor, self._run, lambda: self.transport,
            lambda: self.server_notice("you are sending too fast; your lines are being delayed."),
            lambda: self.ended, self._flood_paused)
        self._abort_timer: Any = None
        self._opened = False
        self._cut = False
        #: Answers the line being run waits for (its commands' Deferreds); input waits until none.
        self._waits = 0
        #: labeled-response: the label of the line being run, and what its command sent meanwhile (None: not held).
        self._label = ""
        self._labeled: list[bytes] | None = None
        self._batches = 0
        #: Who was last seen quitting (name keys, the newest last): their QUIT from another room is left out.
        self._quits: dict[str, None] = {}
        #: The QUIT message the client gave (told to the rooms it leaves).
        self.quit_message = ""

    @property
    def session(self) -> IrcConnection:
        return self

    @property
    def place(self) -> Place:
        return Place.MENU

    @property
    def _bucket(self) -> TokenBucket | None:
        """The flood allowance (``chatd.limits``'s idle sweep reads its last use)."""
        return self.pacing.bucket

    @property
    def held(self) -> bool:
        return self.pacing.held

    @property
    def queued_later(self) -> bool:
        """Kept private messages wait for the welcome (after 376, whichever way it logged in: deliver_queued)."""
        return not self.registered

    @property
    def target(self) -> str:
        """How numerics address this client: its nick, ``*`` before it has one."""
        return self.name or self.nick or "*"

    # -- connection -----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        chat = self.chat
        chat.transport_opened()
        self._opened = True
        self.origin = MappingProxyType(address_fields(self.transport.getPeer()))
        key = chat.limits.address_key(self.transport)
        refusal = chat.admin.address_refusal(self.origin.get("address")) or chat.limits.admit(self, key)
        if refusal is not None:
            self.ended = True
            self.send_line(line("", "ERROR", refusal.removeprefix("Error: ")))
            self.close()
            return
        self.address_key = key
        self.pacing.bucket = chat.limits.flood_bucket()
        chat.connections.add(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.pacing.cancel()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._end_session("disconnect")
        if self._opened:
            self._opened = False
            self.chat.transport_closed()

    def dataReceived(self, data: bytes) -> None:
        if not self.ended:
            self.pacing.received(*self._lines.feed(data))

    def _flood_paused(self, seconds: float) -> None:
        """Paused ``seconds`` over the flood allowance: the escalation in its channels (as on every front-end)."""
        if self.pacing.bucket is not None:
            self.chat.moderation.flood_paused(self, self.pacing.bucket, seconds, self.irc.rooms_of(self))

    # -- input ---------------------------------------------------------------------------------

    def _run(self, raw: bytes | None) -> None:
        """One received line: parsed, then its command run; bad input gets a numeric, never a traceback."""
        if raw is None or too_long(raw):
            self.numeric("417", "Input line was too long")
            return
        message = parse(raw)
        if message is None:
            return
        label = message.tags.get("label", "") if "labeled-response" in self.caps else ""
        if label:
            self._start_label(label[:64])
        try:
            self._dispatch(raw, message)
        finally:
            if label and not self._waits and self._labeled is not None:
                self._end_label()

    def _dispatch(self, raw: bytes, message: Message) -> None:
        """Run ``message``'s command, or answer why not (421, 451, 461)."""
        handler = HANDLERS.get(message.command)
        if handler is None:
            if self.registered:
                self.numeric("421", message.command[:30] or "*", "Unknown command")
            else:
                self.numeric("451", "You have not registered")
            return
        if not self.registered and message.command not in BEFORE_REGISTRATION:
            self.numeric("451", "You have not registered")
            return
        wanted = PARAMS_NEEDED.get(message.command, 0)
        if len(message.params) < wanted or (wanted and not message.params[0]):
            self.numeric("461", message.command, "Not enough parameters")
            return
        try:
            handler(self, message)
        except Exception:
            self._failed(Failure())
        if not valid_utf8(raw):  # (UTF8ONLY: the client is told its bytes were replaced, and they still went)
            self.from_server("WARN", message.command, "INVALID_UTF8", "Invalid UTF-8 was replaced with U+FFFD")

    def _failed(self, failure: Failure) -> None:
        log.failure("unexpected error running an IRC command", failure)
        self.server_notice("something went wrong on the server; please try again.")

    def run_command(self, caller: Any, name: str, values: Sequence[str],
                    failed: Callable[[errors.ChatError], None] | None = None,
                    done: Callable[[], None] | None = None, quiet: bool = False) -> None:
        """
        Run the chatd command ``name`` for ``caller`` (the connection, a
        channel, :attr:`direct`) with ``values``. A refusal goes to
        ``failed`` (default: a NOTICE); ``done`` runs once the command is done (not after a refusal).
        Input waits meanwhile, so answers come in the order asked; ``quiet``: its replies are not shown.
        """
        command: Command | None = TABLE.find(name, caller.place)
        on_error = failed or (lambda error: self.command_error(str(error)))
        if command is None:
            on_error(errors.NotAllowed(f"/{name} cannot be used here."))
            return
        self.quiet = quiet
        try:
            result = TABLE.call(caller, command, values)
        except errors.ChatError as error:
            self.quiet = False
            on_error(error)
            return
        except BaseException:
            self.quiet = False
            raise
        if not isinstance(result, defer.Deferred):
            self.quiet = False
            if done is not None:
                done()
            return

        def answered(result: Any) -> None:
            self.quiet = False
            if done is not None:
                done()

        self.wait_for(result, answered, on_error)

    def wait_for(self, d: defer.Deferred[Any], ok: Callable[[Any], None],
                 failed: Callable[[errors.ChatError], None]) -> None:
        """
        Call ``ok`` with what ``d`` fires with, or ``failed`` with its
        ChatError (anything else is logged: a NOTICE says something went
        wrong); neither once the session has ended. Input waits meanwhile.
        """

        def fired(result: Any) -> None:
            self.quiet = False
            if not self.ended:
                ok(result)

        def bad(failure: Failure) -> None:
            self.quiet = False
            if not failure.check(errors.ChatError):
                self._failed(failure)
            elif not self.ended:
                failed(cast(errors.ChatError, failure.value))

        # (Not ``d.called``: a Deferred that fired with another Deferred still pending is "called" too.)
        waiting = [True]

        def finished(_: Any) -> None:
            if waiting[0]:
                waiting[0] = False
            else:
                self._answered(None)

        d.addCallbacks(fired, bad).addBoth(finished)
        if waiting[0]:
            waiting[0] = False
            self._waits += 1
            self.pacing.hold("answer")

    def _answered(self, _: Any) -> None:
        """A command's answer came: input goes on once every answer the line waited for has come."""
        self._waits -= 1
        if not self._waits:
            if self._labeled is not None:
                self._end_label()
            self.pacing.release("answer")

    def _start_label(self, label: str) -> None:
        """IRCv3 labeled-response: what this line's command sends is held, to be sent labeled (:meth:`_end_label`)."""
        self._label = label
        self._labeled = []

    def _end_label(self) -> None:
        """
        Send what the labeled command sent: one line tagged ``label``; several
        in a ``labeled-response`` batch (plain if the client has no ``batch``);
        nothing: ``ACK``. The lines its rooms queued meanwhile (its echo) first.
        """
        self._catch_up()
        held, self._labeled = self._labeled or [], None
        label = f"label={escape_tag(self._label)}"
        lines = [part + b"\r\n" for part in b"".join(held).split(b"\r\n") if part]
        if not lines:
            self._write(line(self.irc.server, "ACK", tags=label))
        elif len(lines) == 1:
            self._write(tagged(lines[0], label))
        elif "batch" not in self.caps:
            self._write(b"".join(lines))
        else:
            reference = self.new_batch()
            self._write(line(self.irc.server, "BATCH", "+" + reference, "labeled-response", tags=label, text=False)
                        + b"".join(tagged(part, "batch=" + reference) for part in lines)
                        + line(self.irc.server, "BATCH", "-" + reference))

    def new_batch(self) -> str:
        """A reference for a new BATCH of this connection (IRCv3 batch)."""
        self._batches += 1
        return str(self._batches)

    def new_channel(self, name: str) -> Channel:
        """A channel of the room called ``name`` (a member once the room is entered: ``Channel.entered``)."""
        return Channel(self, name)

    # -- registration ----------------------------------------------------------------------------

    def try_registration(self) -> None:
        """NICK and USER are in and no CAP negotiation is open: log in (PASS), admit a guest, or say what to do."""
        if self.registered or self.ended or not self.user or self.negotiating:
            return
        if self.name is not None:  # (logged in: the nick becomes the account's, whatever NICK said)
            self.welcome()
            return
        if not self.nick:
            return
        if self.password:
            account, _, password = self.password.partition(":")
            if not password:
                account, password = self.nick, self.password
            self.password = ""
            self.auth = "pass"
            self.run_command(self, "login", [account, password], failed=self._pass_failed,
                             done=self._pass_done)
            return
        if self.irc.guests:
            refused = self.guest_refusal(self.nick)
            if refused:
                code, text = refused
                self.numeric(code, self.nick, text)
                return
            self.guest = True
            self.name = self.nick
            self.chat.attach(self)
            self.welcome()
            return
        self.server_notice("This server needs an account: send PASS account:password before NICK and USER "
                           "(or use SASL PLAIN), or create one with REGISTER * * PASSWORD.")
        self.numeric("451", "You have not registered: log in or register an account")

    def _pass_failed(self, error: errors.ChatError) -> None:
        self.auth = ""
        self.numeric("464", "Password incorrect")
        self.kick(str(error))

    def _pass_done(self) -> None:
        self.auth = ""
        if self.name is None and not self.ended:  # the login command told it already (a wrong password)
            self.numeric("464", "Password incorrect")
            self.close()

    def guest_refusal(self, nick: str) -> tuple[str, str] | None:
        """Why ``nick`` may not be a guest's: (numeric, text): 432 not a chatd name, 433 taken; or None."""
        chat = self.chat
        problem = check_name(nick, "user", USER_NAME_MAX) or chat.admin.reserved_refusal(nick, None, guest=True)
        if problem:
            return "432", "Erroneous nickname: " + problem.rstrip(".")
        if chat.user_name_taken(nick) or name_key(nick) in chat.online:
            return "433", "Nickname is already in use"
        return None

    def rename(self, new: str) -> None:
        """
        A guest in no room takes the free nick ``new`` (NICK): the online
        list, presence and this front-end know it by that name from now on;
        its away message goes with it. (In a room it may not: chatd has no
        rename event to show the other front-ends.)
        """
        chat, old = self.chat, self.name or self.nick
        source = self.irc.mask(old)
        away = chat.presence.message(old)
        chat.online.pop(name_key(old), None)
        for room in chat.rooms.values():
            room.authority.drop_roles(name_key(old))
        chat.presence.logged_out(old, "")
        self.irc.users.pop(name_key(old), None)
        self.name = self.nick = new
        chat.online[name_key(new)] = self
        chat.presence.logged_in(new, chat.reactor.seconds())
        if away is not None:
            chat.presence.set_away(new, away)
        self.irc.users[name_key(new)] = self
        self.send_line(line(source, "NICK", new))

    def logged_in(self, name: str, text: str) -> None:
        """The login (PASS, SASL) or REGISTER command succeeded: the session is the account's."""
        if self.ended:
            return
        self.name = name
        self.chat.attach(self)
        if self.auth == "sasl":
            self.numeric("900", user_mask(name, self.user), name, f"You are now logged in as {name}")
            self.numeric("903", "SASL authentication successful")
        elif self.auth == "register":
            self.from_server("REGISTER", "SUCCESS", name, text)
        self.auth = ""
        self.try_registration()

    def welcome(self) -> None:
        """001-005, LUSERS and MOTD; then what was kept for the account while it was offline."""
        self.registered = True
        nick = self.name or self.nick
        self.irc.users[name_key(nick)] = self
        self.irc.most_users = max(self.irc.most_users, len(self.chat.online))
        if nick != self.nick and self.nick:
            self.send_line(line(self.irc.mask(self.nick), "NICK", nick))
        self.nick = nick
        self.renderer = self.irc.renderers.get(self.caps)
        self.numeric("001", f"Welcome to the chatd IRC network, {nick}")
        self.numeric("002", f"Your host is {self.irc.server}, running version chatd-{__version__}")
        self.numeric("003", f"This server was created {self.irc.created}")
        self.numeric("004", self.irc.server, f"chatd-{__version__}", "io", "biklmnostv", "bklov", text=False)
        self.isupport()
        self.lusers()
        self.motd()
        if not self.guest:
            deliver_queued(self.direct)

    def isupport(self) -> None:
        """005 RPL_ISUPPORT, twelve tokens a line."""
        tokens = list(ISUPPORT)
        while tokens:
            self.numeric("005", *tokens[:12], "are supported by this server")
            tokens = tokens[12:]

    def lusers(self) -> None:
        """251 (users on every front-end: visible, and IRC users with +i), 252 (server admins online), 253 (connections not logged in), 254, 255, 265/266."""
        chat, irc = self.chat, self.irc
        users = len(chat.online)
        irc.most_users = max(irc.most_users, users)
        admins = sum(1 for session in chat.online.values()
                     if chat.is_admin(session.name) or getattr(session, "oper", False))
        unknown = sum(1 for connection in chat.connections if getattr(connection, "name", None) is None)
        most = irc.most_users
        invisible = sum(1 for session in chat.online.values() if "i" in getattr(session, "umodes", ""))
        self.numeric("251", f"There are {users - invisible} users and {invisible} invisible on 1 servers")
        if admins:
            self.numeric("252", str(admins), "operator(s) online")
        if unknown:
            self.numeric("253", str(unknown), "unknown connection(s)")
        self.numeric("254", str(len(chat.rooms)), "channels formed")
        self.numeric("255", f"I have {users} clients and 0 servers")
        self.numeric("265", str(users), str(most), f"Current local users {users}, max {most}")
        self.numeric("266", str(users), str(most), f"Current global users {users}, max {most}")

    def motd(self) -> None:
        self.numeric("375", f"- {self.irc.server} Message of the day -")
        self.numeric("372", "- chatd's rooms are channels: /list shows them, /join #public enters the public room.")
        self.numeric("376", "End of /MOTD command.")

    # -- output ------------------------------------------------------------------------------------

    def numeric(self, code: str, *params: str, text: bool = True) -> None:
        """``:server CODE nick params...``; ``text`` False: the last parameter is a name or modes (no ``:``)."""
        self.send_line(line(self.irc.server, code, self.target, *params, text=text))

    def server_notice(self, text: str) -> None:
        self.send_line(line(self.irc.server, "NOTICE", self.target, text))

    def from_server(self, command: str, *params: str) -> None:
        """A line of ``command`` from the server (CAP, PONG, FAIL...)."""
        self.send_line(line(self.irc.server, command, *params))

    def command_error(self, text: str) -> None:
        """A chatd command's refusal, as the numeric of what is being done, or a NOTICE."""
        if self.auth == "sasl":
            self.server_notice(text)
            self.numeric("904", "SASL authentication failed")
            self.sasl = None
            return
        if self.auth == "register":
            self.from_server("FAIL", "REGISTER", "INVALID_PARAMS", "*", text)
            return
        self.server_notice(text)

    def send_line(self, data: bytes) -> None:
        """Output of this connection's own: the events its rooms have queued so far go to it first."""
        self._catch_up()
        self._write(data)

    def _catch_up(self) -> None:
        for channel in list(self.channels.values()):
            room = channel.room
            if room is not None:
                room.fanout.catch_up(channel)

    def deliver(self, payload: Batch) -> None:
        """
        Room events from one of its channels: without its own PRIVMSGs
        unless it asked for echo-message, and a user quitting several rooms
        shared with it is one QUIT (the first room's; ``_quits``, forgotten
        when the user joins a room again: its next QUIT is told).
        """
        if self.ended:
            return
        said = name_key(self.name) if self.name is not None and "echo-message" not in self.caps else ""
        quits = self._quits
        seen = set()
        if payload.quits or (quits and payload.joins):
            for sender, what, _ in payload.parts:  # (in order: a JOIN then a QUIT in one batch is a new QUIT)
                if what == QUIT:
                    if sender in quits:
                        seen.add(sender)
                    quits[sender] = None
                elif what == JOINED:
                    quits.pop(sender, None)
            if len(quits) > 64:  # (only quits of this turn matter: a quitter's rooms are told at once)
                for key in list(quits)[:-64]:
                    del quits[key]
        if (said and said in payload.senders) or seen:
            self._write(payload.without(said, seen))
        else:
            self._write(payload.data)

    def _write(self, data: bytes) -> None:
        """
        Write ``data``; output that would leave more than ``--max-outbound``
        bytes unsent (a client that stopped reading) cuts the connection off
        instead, as the line front-end does (a ``sendq_exceeded`` row).
        """
        transport = self.transport
        if transport is None or self._cut or not data:
            return
        if self._labeled is not None:
            self._labeled.append(data)
            return
        data = send_at_once(transport, data)
        if not data:
            return
        if sendq_exceeded(self, transport, len(data), self._rooms_text):
            self._cut_off()
            return
        transport.write(data)
        if sendq_exceeded(self, transport, 0, self._rooms_text):  # (under TLS what is queued is the encrypted form)
            self._cut_off()

    def _rooms_text(self) -> str:
        """The rooms of this connection's channels, space-separated (a ``sendq_exceeded`` row's room)."""
        return " ".join(channel.room.name for channel in self.channels.values() if channel.room is not None)

    def _cut_off(self) -> None:
        """Past --max-outbound: the session ends and the connection is aborted (nothing more is written)."""
        self._cut = True
        self._end_session("disconnect")
        if self.transport is not None:
            self.transport.abortConnection()

    def joined(self, channel: Channel, room: Room) -> None:
        """The answer to a JOIN after the JOIN itself: the topic (332, 333), the names (353, 366)."""
        if self._quits:  # (a member seen quitting before is back: its next QUIT is told)
            for name in room.member_names():
                self._quits.pop(name_key(name), None)
        if room.authority.topic:
            self.show_topic(room)
        self.names(room)

    def show_topic(self, room: Room) -> None:
        """332 RPL_TOPIC, then 333 RPL_TOPICWHOTIME (who set it, when: seconds) if chatd knows (set since issue 16)."""
        authority, channel = room.authority, channel_name(room.name)
        self.numeric("332", channel, authority.topic)
        if authority.topic_at:
            self.numeric("333", channel, authority.topic_by or self.irc.server, str(int(authority.topic_at)), text=False)

    def names(self, room: Room) -> None:
        """
        353 RPL_NAMREPLY (several if long) and 366 RPL_ENDOFNAMES: operators and the owner marked ``@``, voiced
        members ``+`` (both ``@+`` with multi-prefix, else the highest); the room's kind ``@`` secret, ``*``
        invite-only (hidden from those not invited, as a private channel), ``=``.
        """
        marks = self.chat.moderation.marks
        full = "userhost-in-names" in self.caps
        every = 2 if "multi-prefix" in self.caps else 1
        names = [marks(room, name)[:every] + (self.irc.mask(name) if full else name)
                 for name in members_everywhere(self.chat, room)]
        kind = "@" if room.authority.secret else "*" if room.authority.invite_only else "="  # (RFC 2812 §5.1, 353)
        channel = channel_name(room.name)
        head = len(f":{self.irc.server} 353 {self.target} {kind} {channel} :".encode()) + 2
        chunk: list[str] = []
        size = head
        for name in names:
            if chunk and size + len(name) + 1 > LINE_MAX:
                self.numeric("353", kind, channel, " ".join(chunk))
                chunk, size = [], head
            chunk.append(name)
            size += len(name) + 1
        if chunk:
            self.numeric("353", kind, channel, " ".join(chunk))
        self.numeric("366", channel, "End of /NAMES list")

    def history_lines(self, events: Sequence[RoomEvent]) -> None:
        renderer = self.renderer
        self.send_line(b"".join(renderer.event_lines(event) for event in events))

    # Session
    def drop(self) -> None:
        self._end_session("disconnect")
        if self.transport is not None:
            self.transport.abortConnection()

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        """A private message as a PRIVMSG or a NOTICE (``sent``: the echo of one this user sent: with
        echo-message only; one to oneself arrives as both, the delivery unlabeled, IRCv3 labeled-response);
        its ``msgid`` is the same for its sender and its recipient."""
        if sent and "echo-message" not in self.caps:
            return
        tags = []
        if "account-tag" in self.caps and name_key(message.sender) in self.chat.accounts:
            tags.append("account=" + message.sender)
        if "message-tags" in self.caps:
            tags.append("msgid=pm-" + private_id(message))
        if "server-time" in self.caps:
            tags.append("time=" + _iso(message.at))
        data = privmsg_lines(self.irc.mask(message.sender), message.recipient, message.text, tags=";".join(tags),
                             command="NOTICE" if message.notice else "PRIVMSG")
        held = self._labeled
        if not sent and held is not None and "echo-message" in self.caps and message.sender == message.recipient:
            # To oneself under labeled-response: the delivery goes out as it is, only the echo answers the label.
            self._labeled = None
            self.send_line(data)
            self._labeled = held
            return
        self.send_line(data)

    def notice(self, text: str) -> None:
        self.server_notice(text)

    def invited(self, room: Room, by: str) -> None:
        """Invited to ``room`` by ``by`` (on any front-end): an ``INVITE`` line (RFC 2812 §3.2.7), IRC's wording."""
        self.send_line(line(self.irc.mask(by) if by else self.irc.server, "INVITE", self.name or self.nick,
                            channel_name(room.name)))

    def room_deleted(self, room: Room, by: str) -> None:
        channel = self.channels.get(room.key)
        if channel is not None:
            channel.room_deleted(room, by)

    def removed(self, room: Room, notice: str, gone: str) -> None:
        channel = self.channels.get(room.key)
        if channel is not None:
            channel.removed(room, notice, gone)

    def spend_allowance(self) -> None:
        self.pacing.spend()

    def share_allowance(self, bucket: Any, wait: float = 0.0) -> None:
        self.pacing.share(bucket, wait)

    def kick(self, reason: str, event: SessionEnd = "disconnect") -> None:
        if self.ended:
            return
        self.send_line(line("", "ERROR", reason.removeprefix("Error: ")))
        self._end_session(event)
        self.close()

    def quit(self, reason: str) -> None:
        """The client's QUIT: ``ERROR``, then the connection closes."""
        if self.ended:
            return
        self.quit_message = f"Quit: {reason}" if reason else "Quit"
        self.send_line(line("", "ERROR", f"Closing Link: {reason}" if reason else "Closing Link"))
        self._end_session("logout" if self.name is not None else "disconnect")
        self.close()

    def _end_session(self, event: SessionEnd) -> None:
        if self.ended:
            return
        self.ended = True
        chat = self.chat
        chat.connection_ended(self)
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            room, channel.room = channel.room, None
            if room is not None:
                chat.leave(room, channel, self.quit_message or "Connection closed", quit=True)
        chat.detach(self, event, None)
        if self.name is not None and self.irc.users.get(name_key(self.name)) is self:
            del self.irc.users[name_key(self.name)]
            self.irc.gone.append((self.name, self.user, self.realname, chat.reactor.seconds()))
            left = self.irc.left_users
            left.pop(name_key(self.name), None)
            left[name_key(self.name)] = self.user
            if len(left) > GONE_MAX:
                del left[next(iter(left))]
        if self.guest and self.name is not None:
            self._forget_guest(self.name)

    def _forget_guest(self, name: str) -> None:
        """
        A guest's session ended: the rooms it created go, as a deleted
        account's do, so that a later account of that name inherits none, and
        its operator roles (kept in memory only). (Bans and invitations naming
        it stay: they name a nick, not a person.)
        """
        chat = self.chat
        key = name_key(name)
        for room in list(chat.rooms.values()):
            room.authority.drop_roles(key)  # (a guest's roles were never stored)
            if room.owner and name_key(room.owner) == key:
                chat.delete_room(room.name, name).addErrback(
                    lambda failure: log.warn("could not delete a guest's room: {why}", why=failure.getErrorMessage()))

    def later(self, seconds: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        call = self.chat.reactor.callLater(seconds, d.callback, None)
        d.addErrback(lambda failure: call.cancel() if call.active() else None)
        return d

    def close(self) -> None:
        """Close after what is queued; aborted if not closed within ``--close-grace`` seconds."""
        if self.transport is not None:
            self.transport.loseConnection()
        if self._abort_timer is None and self.transport is not None:
            self._abort_timer = self.chat.reactor.callLater(
                self.chat.settings.close_grace, self.transport.abortConnection)

    def regroup(self) -> None:
        """Capabilities changed after registration: the channels move to the matching renderer."""
        self.renderer = self.irc.renderers.get(self.caps)
        for channel in self.channels.values():
            if channel.room is not None:
                channel.room.fanout.regroup(channel)

    # Caller
    def entered(self, room: Room, replay: Sequence[RoomEvent] = ()) -> None:
        pass

    def left(self) -> None:
        pass
