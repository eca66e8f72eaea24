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

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from twisted.internet import abstract, defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import __version__, errors
from chatd.commands import TABLE
from chatd.commands.table import Command, CommandTable, Place
from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.core.ports import SessionEnd
from chatd.frontends.pacing import Pacing, sendq_exceeded
from chatd.frontends.irc_wire import LINE_MAX, LineSplitter, Message, escape_tag, line, parse, split_text, too_long
from chatd.limits import TokenBucket
from chatd.moderation import REASON_MAX, TOPIC_MAX, Role
from chatd.presence import AWAY_MAX
from chatd.store import address_fields
from chatd.text import ROOM_NAME_MAX, USER_NAME_MAX, check_name, name_key
from chatd.twisted_internals import unsent_bytes

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

log = Logger()

#: The server's name in numerics and as the source of server messages.
SERVER = "chatd"
#: The host part of every user's ``nick!user@host``.
HOST = "chatd"
#: Channels one connection may be in at once (``CHANLIMIT``).
CHANNELS_MAX = 50
#: Targets one JOIN, PART, PRIVMSG... may name (``TARGMAX``).
TARGETS_MAX = 10
#: The capabilities offered (CAP LS 302); values where they have one.
CAPABILITIES: dict[str, str] = {
    "sasl": "PLAIN",
    "server-time": "",
    "message-tags": "",
    "echo-message": "",
}
#: The capabilities that change how room events are rendered (each set has its own renderer).
RENDERING_CAPS = frozenset({"server-time", "message-tags"})
#: ISUPPORT tokens (005), in order.
ISUPPORT = (
    "CASEMAPPING=ascii", "CHANTYPES=#", "UTF8ONLY", f"NICKLEN={USER_NAME_MAX}", f"CHANNELLEN={ROOM_NAME_MAX + 1}",
    f"TOPICLEN={TOPIC_MAX}", f"KICKLEN={REASON_MAX}", f"AWAYLEN={AWAY_MAX}", "PREFIX=(ov)@+", "CHANMODES=b,,,it",
    "NETWORK=chatd", f"LINELEN={LINE_MAX}", f"CHANLIMIT=#:{CHANNELS_MAX}",
    f"TARGMAX=JOIN:{TARGETS_MAX},PART:{TARGETS_MAX},PRIVMSG:{TARGETS_MAX},NOTICE:{TARGETS_MAX}",
)
#: Commands an unregistered connection may send (the rest: 451 ERR_NOTREGISTERED).
BEFORE_REGISTRATION = frozenset({"CAP", "NICK", "USER", "PASS", "AUTHENTICATE", "PING", "PONG", "QUIT", "REGISTER"})


def mask(name: str) -> str:
    """``name!name@chatd``: how a user is shown as a message's source."""
    return f"{name}!{name}@{HOST}"


def channel_name(room: str) -> str:
    return "#" + room


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Batch(NamedTuple):
    """
    What :class:`IrcRenderer` makes of a batch: ``data``, every line; and,
    for a member that sent some of its PRIVMSGs (``senders``: their name
    keys), ``parts`` to leave them out of (sender key, whether it is a
    PRIVMSG, the lines).
    """

    data: bytes
    senders: frozenset[str]
    parts: tuple[tuple[str, bool, bytes], ...]

    def without(self, key: str) -> bytes:
        """The lines without the PRIVMSGs of ``key`` (a member without echo-message)."""
        return b"".join(data for sender, said, data in self.parts if not (said and sender == key))


class IrcRenderer:
    """
    Renders a batch of room events as IRC lines, once for every IRC member
    with the same rendering capabilities (``server-time`` adds ``@time=``,
    ``message-tags`` a ``msgid`` too).
    """

    def __init__(self, caps: frozenset[str] = frozenset()) -> None:
        self.time = "server-time" in caps
        self.msgid = "message-tags" in caps

    def render(self, events: Sequence[RoomEvent]) -> Batch:
        parts = tuple((name_key(event.sender), event.kind is EventKind.SAY or event.kind is EventKind.ME,
                       self.event_lines(event)) for event in events)
        senders = frozenset(sender for sender, said, _ in parts if said)
        return Batch(b"".join(data for _, _, data in parts), senders, parts)

    def tags(self, event: RoomEvent) -> str:
        tags = []
        if self.time:
            tags.append("time=" + _iso(event.at))
        if self.msgid:
            tags.append(f"msgid={escape_tag(event.room)}-{event.id}")
        return ";".join(tags)

    def event_lines(self, event: RoomEvent) -> bytes:
        """The IRC lines of one room event (a long line of chat becomes several PRIVMSGs)."""
        kind, channel, tags = event.kind, channel_name(event.room), self.tags(event)
        source = mask(event.sender) if event.sender else SERVER
        if kind is EventKind.SAY or kind is EventKind.ME:
            return privmsg_lines(source, channel, event.text, kind is EventKind.ME, tags)
        if kind is EventKind.JOIN:
            return line(source, "JOIN", channel, tags=tags)
        if kind is EventKind.LEAVE:
            return line(source, "PART", channel, tags=tags)
        if kind is EventKind.KICK:
            return line(source, "KICK", channel, event.target, event.text or event.target, tags=tags)
        if kind is EventKind.TOPIC:
            return line(source, "TOPIC", channel, event.text, tags=tags)
        modes = _MODES.get(kind)
        if modes is not None:
            target = f"{event.target}!*@*" if modes[1] == "b" else event.target
            return line(source, "MODE", channel, modes, target, tags=tags)
        if kind is EventKind.SETTING:
            flag = _SETTING_MODES.get(event.target)
            if flag is not None:
                on = event.text == "on"
                sign = "+" if on != (flag == "t") else "-"  # open-topic on is -t
                return line(source, "MODE", channel, sign + flag, tags=tags)
        return line(SERVER, "NOTICE", channel, _notice_text(event), tags=tags)


#: Room events that are channel modes (RFC 2811 §4): +b bans, +o operators (the owner is an operator too).
_MODES = {EventKind.BAN: "+b", EventKind.UNBAN: "-b", EventKind.OP: "+o", EventKind.DEOP: "-o",
          EventKind.OWNER: "+o"}
#: Room settings that are channel modes: invite-only +i, open-topic -t (+t: only operators set the topic).
_SETTING_MODES = {"invite-only": "i", "open-topic": "t"}


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
    if kind is EventKind.INVITE:
        return f"{who} {'withdrew the invitation of' if event.text == 'withdrawn' else 'invited'} {event.target}"
    if kind is EventKind.SETTING:
        return f"{who} set {event.target} to {event.text}"
    return f"{who}: {kind} {event.target} {event.text}".strip()


def privmsg_lines(source: str, target: str, text: str, action: bool = False, tags: str = "",
                  command: str = "PRIVMSG") -> bytes:
    """A PRIVMSG (or an ACTION) of ``text``, as several lines if it would pass 512 bytes."""
    head = len(f":{source} {command} {target} :".encode()) + 2 + (9 if action else 0)
    out = []
    for piece in split_text(text, LINE_MAX - head):
        out.append(line(source, command, target, f"\x01ACTION {piece}\x01" if action else piece, tags=tags))
    return b"".join(out)


class Renderers:
    """One :class:`IrcRenderer` per set of rendering capabilities, shared by every IRC connection."""

    def __init__(self) -> None:
        self._by_caps: dict[frozenset[str], IrcRenderer] = {}

    def get(self, caps: Iterable[str]) -> IrcRenderer:
        key = frozenset(caps) & RENDERING_CAPS
        renderer = self._by_caps.get(key)
        if renderer is None:
            renderer = self._by_caps[key] = IrcRenderer(key)
        return renderer


class IrcFactory(Factory):
    """What ``--listen-irc`` listens with: an :class:`IrcConnection` per connection."""

    def __init__(self, chat: ChatFactory, guests: bool = False) -> None:
        self.chat = chat
        #: ``--irc-guests``: connections without an account may chat under a free nick.
        self.guests = guests
        self.renderers = Renderers()
        self.created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

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
        if room.authority.bans.get(name_key(self.name or "")) is not None:
            self.connection.send_line(line(SERVER, "KICK", channel_name(room.name), self.name or "*", notice))
        self._out(room, "")

    def _out(self, room: Room, part: str) -> None:
        """No longer in ``room`` (deleted, kicked, banned): forget the channel; ``part``: tell the client why."""
        if self.room is room:
            self.room = None
            self.connection.channels.pop(room.key, None)
            if part:
                self.connection.send_line(line(mask(self.name or "*"), "PART", channel_name(room.name), part))

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
        room, self.room = self.room, None
        if room is None:
            return
        self.connection.channels.pop(room.key, None)
        self.connection.chat.leave(room, self)
        self.connection.send_line(line(mask(self.name or "*"), "PART", channel_name(room.name)))


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
        self.guest = False
        self.registered = False
        self.ended = False
        self._negotiating = False
        self._sasl: str | None = None
        #: What is being authenticated for now ("sasl", "pass", "register"), so failures get their numerics.
        self._auth = ""
        self._lines = LineSplitter()
        #: Received lines, taken one at a time within the flood allowance (``None``: one too long).
        self.pacing: Pacing[bytes | None] = Pacing(
            self.chat.reactor, self._run, lambda: self.transport,
            lambda: self.server_notice("you are sending too fast; your lines are being delayed."),
            lambda: self.ended)
        self._abort_timer: Any = None
        self._opened = False
        self._cut = False

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

    # -- input ---------------------------------------------------------------------------------

    def _run(self, raw: bytes | None) -> None:
        """One received line: parsed, then its command run; bad input gets a numeric, never a traceback."""
        if raw is None or too_long(raw):
            self.numeric("417", "Input line was too long")
            return
        message = parse(raw)
        if message is None:
            return
        handler = _HANDLERS.get(message.command)
        if handler is None:
            if self.registered:
                self.numeric("421", message.command[:30] or "*", "Unknown command")
            else:
                self.numeric("451", "You have not registered")
            return
        if not self.registered and message.command not in BEFORE_REGISTRATION:
            self.numeric("451", "You have not registered")
            return
        wanted = _PARAMS_NEEDED.get(message.command, 0)
        if len(message.params) < wanted or (wanted and not message.params[0]):
            self.numeric("461", message.command, "Not enough parameters")
            return
        try:
            handler(self, message)
        except Exception:
            self._failed(Failure())

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

        def answered(result: Any) -> Any:
            self.quiet = False
            return result

        result.addBoth(answered)

        def ok(_: Any) -> None:
            if done is not None and not self.ended:
                done()

        def bad(failure: Failure) -> None:
            if failure.check(errors.ChatError):
                if not self.ended:
                    on_error(cast(errors.ChatError, failure.value))
            else:
                self._failed(failure)

        if not result.called:
            self.pacing.hold("answer")
            result.addCallbacks(ok, bad).addBoth(lambda _: self.pacing.release("answer"))
        else:
            result.addCallbacks(ok, bad)

    # -- registration ----------------------------------------------------------------------------

    def try_registration(self) -> None:
        """NICK and USER are in and no CAP negotiation is open: log in (PASS), admit a guest, or say what to do."""
        if self.registered or self.ended or not self.nick or not self.user or self._negotiating:
            return
        if self.name is not None:
            self.welcome()
            return
        if self.password:
            account, _, password = self.password.partition(":")
            if not password:
                account, password = self.nick, self.password
            self.password = ""
            self._auth = "pass"
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
        self._auth = ""
        self.numeric("464", "Password incorrect")
        self.kick(str(error))

    def _pass_done(self) -> None:
        self._auth = ""
        if self.name is None and not self.ended:  # the login command told it already (a wrong password)
            self.numeric("464", "Password incorrect")
            self.close()

    def guest_refusal(self, nick: str) -> tuple[str, str] | None:
        """Why ``nick`` may not be a guest's: (numeric, text): 432 not a chatd name, 433 taken; or None."""
        chat = self.chat
        problem = check_name(nick, "user", USER_NAME_MAX) or chat.admin.reserved_refusal(
            nick, self.origin.get("address"))
        if problem:
            return "432", "Erroneous nickname: " + problem.rstrip(".")
        if chat.user_name_taken(nick) or name_key(nick) in chat.online:
            return "433", "Nickname is already in use"
        return None

    def logged_in(self, name: str, text: str) -> None:
        """The login (PASS, SASL) or REGISTER command succeeded: the session is the account's."""
        if self.ended:
            return
        self.name = name
        self.chat.attach(self)
        if self._auth == "sasl":
            self.numeric("900", mask(name), name, f"You are now logged in as {name}")
            self.numeric("903", "SASL authentication successful")
        elif self._auth == "register":
            self.send_line(line(SERVER, "REGISTER", "SUCCESS", name, text))
        self._auth = ""
        self.try_registration()

    def welcome(self) -> None:
        """001-005, LUSERS and MOTD; then what was kept for the account while it was offline."""
        self.registered = True
        nick = self.name or self.nick
        if nick != self.nick and self.nick:
            self.send_line(line(mask(self.nick), "NICK", nick))
        self.nick = nick
        self.renderer = self.irc.renderers.get(self.caps)
        self.numeric("001", f"Welcome to the chatd IRC network, {nick}")
        self.numeric("002", f"Your host is {SERVER}, running version chatd-{__version__}")
        self.numeric("003", f"This server was created {self.irc.created}")
        self.numeric("004", SERVER, f"chatd-{__version__}", "i", "biot")
        tokens = list(ISUPPORT)
        while tokens:
            self.numeric("005", *tokens[:12], "are supported by this server")
            tokens = tokens[12:]
        self.lusers()
        self.motd()
        if not self.guest:
            from chatd.commands.builtin import deliver_queued
            deliver_queued(self.direct)

    def lusers(self) -> None:
        chat = self.chat
        users = len(chat.online)
        self.numeric("251", f"There are {users} users and 0 invisible on 1 servers")
        self.numeric("254", str(len(chat.rooms)), "channels formed")
        self.numeric("255", f"I have {users} clients and 0 servers")
        self.numeric("265", str(users), str(users), f"Current local users {users}, max {users}")
        self.numeric("266", str(users), str(users), f"Current global users {users}, max {users}")

    def motd(self) -> None:
        self.numeric("375", f"- {SERVER} Message of the day -")
        self.numeric("372", "- chatd's rooms are channels: /list shows them, /join #public enters the public room.")
        self.numeric("376", "End of /MOTD command.")

    # -- output ------------------------------------------------------------------------------------

    def numeric(self, code: str, *params: str) -> None:
        self.send_line(line(SERVER, code, self.target, *params))

    def server_notice(self, text: str) -> None:
        self.send_line(line(SERVER, "NOTICE", self.target, text))

    def command_error(self, text: str) -> None:
        """A chatd command's refusal, as the numeric of what is being done, or a NOTICE."""
        if self._auth == "sasl":
            self.server_notice(text)
            self.numeric("904", "SASL authentication failed")
            self._sasl = None
            return
        if self._auth == "register":
            self.send_line(line(SERVER, "FAIL", "REGISTER", "INVALID_PARAMS", "*", text))
            return
        self.server_notice(text)

    def send_line(self, data: bytes) -> None:
        """Output of this connection's own: the events its rooms have queued so far go to it first."""
        for channel in list(self.channels.values()):
            room = channel.room
            if room is not None:
                room.fanout.catch_up(channel)
        self._write(data)

    def deliver(self, payload: Batch) -> None:
        if self.ended:
            return
        if self.name is not None and "echo-message" not in self.caps:
            key = name_key(self.name)
            if key in payload.senders:
                self._write(payload.without(key))
                return
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
        transport.write(data)
        if sendq_exceeded(self, transport):
            self._cut = True
            self._end_session("disconnect")
            transport.abortConnection()

    def joined(self, channel: Channel, room: Room) -> None:
        """The answer to a JOIN after the JOIN itself: the topic (332), the names (353, 366)."""
        if room.authority.topic:
            self.numeric("332", channel_name(room.name), room.authority.topic)
        self.names(room)

    def names(self, room: Room) -> None:
        """353 RPL_NAMREPLY (several if long) and 366 RPL_ENDOFNAMES: operators and the owner marked ``@``."""
        moderation = self.chat.moderation
        names = [("@" if moderation.role(room, name) is not Role.MEMBER else "") + name
                 for name in room.member_names()]
        kind = "@" if room.authority.invite_only else "="
        channel = channel_name(room.name)
        head = len(f":{SERVER} 353 {self.target} {kind} {channel} :".encode()) + 2
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
        if sent and "echo-message" not in self.caps:
            return
        tags = ("time=" + _iso(message.at)) if "server-time" in self.caps else ""
        self.send_line(privmsg_lines(mask(message.sender), message.recipient, message.text, tags=tags))

    def notice(self, text: str) -> None:
        self.server_notice(text)

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
                chat.leave(room, channel)
        chat.detach(self, event, None)
        if self.guest and self.name is not None:
            self._forget_guest(self.name)

    def _forget_guest(self, name: str) -> None:
        """A guest's session ended: the rooms it created go (as a deleted account's do), and its roles."""
        chat = self.chat
        key = name_key(name)
        for room in list(chat.rooms.values()):
            if room.owner and name_key(room.owner) == key:
                chat.delete_room(room.name, name).addErrback(
                    lambda failure: log.warn("could not delete a guest's room: {why}", why=failure.getErrorMessage()))
        chat.moderation.account_deleted(key)

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

    def _regroup(self) -> None:
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


# -- commands --------------------------------------------------------------------------------------

#: Parameters each command needs (fewer: 461 ERR_NEEDMOREPARAMS).
_PARAMS_NEEDED = {"USER": 4, "PASS": 1, "JOIN": 1, "PART": 1, "PRIVMSG": 1, "NOTICE": 1, "AUTHENTICATE": 1,
                  "PING": 1, "KICK": 2, "INVITE": 2, "CAP": 1}
_HANDLERS: dict[str, Callable[[IrcConnection, Message], None]] = {}


def handles(*names: str) -> Callable[[Callable[[IrcConnection, Message], None]], Callable[[IrcConnection, Message], None]]:
    def add(handler: Callable[[IrcConnection, Message], None]) -> Callable[[IrcConnection, Message], None]:
        for name in names:
            _HANDLERS[name] = handler
        return handler

    return add


@handles("CAP")
def cap(self: IrcConnection, message: Message) -> None:
    """CAP LS [302], LIST, REQ, END (IRCv3 capability negotiation)."""
    sub = message.params[0].upper()
    if sub == "LS":
        if not self.registered:
            self._negotiating = True
        version = message.params[1] if len(message.params) > 1 else ""
        offered = " ".join(name + ("=" + value if value and version >= "302" else "")
                           for name, value in CAPABILITIES.items())
        self.send_line(line(SERVER, "CAP", self.target, "LS", offered))
    elif sub == "LIST":
        self.send_line(line(SERVER, "CAP", self.target, "LIST", " ".join(sorted(self.caps))))
    elif sub == "REQ":
        if not self.registered:
            self._negotiating = True
        wanted = message.params[1].split() if len(message.params) > 1 else []
        names = [want.removeprefix("-") for want in wanted]
        if not wanted or any(name not in CAPABILITIES for name in names):
            self.send_line(line(SERVER, "CAP", self.target, "NAK", " ".join(wanted)))
            return
        for want in wanted:
            if want.startswith("-"):
                self.caps.discard(want[1:])
            else:
                self.caps.add(want)
        self.send_line(line(SERVER, "CAP", self.target, "ACK", " ".join(wanted)))
        if self.registered:
            self._regroup()
    elif sub == "END":
        if not self.registered:
            self._negotiating = False
            self.try_registration()
    else:
        self.numeric("410", sub[:30], "Invalid CAP command")


@handles("PASS")
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
        if wanted != self.name:
            self.numeric("447", wanted, "chatd nicks are account names: they cannot be changed")
        return
    problem = check_name(wanted, "user", USER_NAME_MAX)
    if problem:
        self.numeric("432", wanted, "Erroneous nickname: " + problem.rstrip("."))
        return
    if self.irc.guests and not self.password and self.name is None:
        refused = self.guest_refusal(wanted)
        if refused:
            self.numeric(refused[0], wanted, refused[1])
            return
    self.nick = wanted
    self.try_registration()


@handles("USER")
def user(self: IrcConnection, message: Message) -> None:
    if self.registered:
        self.numeric("462", "You may not reregister")
        return
    self.user = message.params[0] or "user"
    self.try_registration()


@handles("AUTHENTICATE")
def authenticate(self: IrcConnection, message: Message) -> None:
    """SASL PLAIN (IRCv3 sasl-3.1): ``AUTHENTICATE PLAIN``, ``+``, then base64 of authzid NUL authcid NUL password."""
    import base64
    import binascii

    value = message.params[0]
    if self.registered or self.name is not None:
        self.numeric("907", "You have already authenticated")
        return
    if "sasl" not in self.caps:
        self.numeric("904", "SASL authentication failed: request the sasl capability first")
        return
    if value == "*":
        self._sasl = None
        self.numeric("906", "SASL authentication aborted")
        return
    if self._sasl is None:
        if value.upper() != "PLAIN":
            self.numeric("908", "PLAIN", "are available SASL mechanisms")
            self.numeric("904", "SASL authentication failed")
            return
        self._sasl = ""
        self.send_line(line("", "AUTHENTICATE", "+"))
        return
    if len(value) > 400:
        self._sasl = None
        self.numeric("905", "SASL message too long")
        return
    chunk = "" if value == "+" else value
    self._sasl += chunk
    if len(value) == 400:
        return  # more follows
    data, self._sasl = self._sasl, None
    try:
        fields = base64.b64decode(data, validate=True).decode("utf-8").split("\0")
    except (binascii.Error, UnicodeDecodeError):
        fields = []
    if len(fields) != 3 or not fields[1] or (fields[0] and fields[0] != fields[1]):
        self.numeric("904", "SASL authentication failed")
        return
    self._auth = "sasl"
    self.run_command(self, "login", [fields[1], fields[2]], done=_sasl_done(self))


def _sasl_done(self: IrcConnection) -> Callable[[], None]:
    def done() -> None:
        if self._auth == "sasl":  # no logged_in: refused (told) already
            self._auth = ""
    return done


@handles("PING")
def ping(self: IrcConnection, message: Message) -> None:
    self.send_line(line(SERVER, "PONG", SERVER, message.params[0]))


@handles("PONG")
def pong(self: IrcConnection, message: Message) -> None:
    pass


@handles("QUIT")
def quit_(self: IrcConnection, message: Message) -> None:
    self.quit(message.params[0] if message.params else "")


def _room_of(self: IrcConnection, target: str) -> str | None:
    """The room name of channel ``target`` (``#lab`` -> ``lab``); None (403 sent) if it is not a channel name."""
    if not target.startswith("#") or check_name(target[1:], "room", ROOM_NAME_MAX):
        self.numeric("403", target or "*", "No such channel")
        return None
    return target[1:]


@handles("JOIN")
def join(self: IrcConnection, message: Message) -> None:
    """JOIN #a,#b (keys ignored; JOIN 0 leaves every channel): a room that does not exist is created first."""
    targets = message.params[0].split(",")[:TARGETS_MAX]
    if targets == ["0"]:
        for channel in list(self.channels.values()):
            self.run_command(channel, "exit", [])
        return
    for target in targets:
        name = _room_of(self, target)
        if name is None or name_key(name) in self.channels:
            continue
        if len(self.channels) >= CHANNELS_MAX:
            self.numeric("405", target, "You have joined too many channels")
            continue
        channel = Channel(self, name)

        def refused(error: errors.ChatError, target: str = target, name: str = name) -> None:
            room = self.chat.rooms.get(name_key(name))
            if isinstance(error, errors.NoSuchRoom):
                self.numeric("403", target, "No such channel")
            elif room is not None and room.authority.invite_only and "invite-only" in str(error):
                self.numeric("473", target, "Cannot join channel (+i): " + str(error))
            elif isinstance(error, errors.NotAllowed):
                self.numeric("474", target, "Cannot join channel (+b): " + str(error))
            else:
                self.numeric("403", target, str(error))

        if name_key(name) in self.chat.rooms:
            self.run_command(channel, "join", [name], failed=refused)
        else:
            self.run_command(self, "create", [name], failed=refused, quiet=True,
                             done=_then_join(self, channel, name, refused))


def _then_join(self: IrcConnection, channel: Channel, name: str,
               refused: Callable[[errors.ChatError], None]) -> Callable[[], None]:
    """Once the room ``name`` is created: join it."""
    return lambda: self.run_command(channel, "join", [name], failed=refused)


@handles("PART")
def part(self: IrcConnection, message: Message) -> None:
    for target in message.params[0].split(",")[:TARGETS_MAX]:
        channel = self.channels.get(name_key(target[1:])) if target.startswith("#") else None
        if channel is None:
            if _room_of(self, target) is not None:
                self.numeric("442", target, "You're not on that channel")
            continue
        self.run_command(channel, "exit", [])


@handles("PRIVMSG", "NOTICE")
def privmsg(self: IrcConnection, message: Message) -> None:
    """To a channel: a room line (``say``; CTCP ACTION: ``me``); to a nick: a chatd private message (``msg``)."""
    notice = message.command == "NOTICE"
    if len(message.params) < 2 or not message.params[1]:
        if not notice:
            self.numeric("412" if len(message.params) >= 1 else "411", "No text to send")
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
        if target.startswith("#"):
            channel = self.channels.get(name_key(target[1:]))
            if channel is None:
                if not notice:
                    room = self.chat.rooms.get(name_key(target[1:]))
                    self.numeric("404" if room is not None else "403", target,
                                 "Cannot send to channel: you are not in it" if room is not None
                                 else "No such channel")
                continue

            def refused(error: errors.ChatError, target: str = target) -> None:
                if not notice:
                    self.numeric("404", target, "Cannot send to channel: " + str(error))

            self.run_command(channel, "me" if action else "say", [text], failed=refused)
        else:
            def unknown(error: errors.ChatError, target: str = target) -> None:
                if notice:
                    return
                if isinstance(error, errors.NoSuchUser):
                    self.numeric("401", target, "No such nick/channel")
                else:
                    self.server_notice(str(error))

            said = f"* {self.name} {text}" if action else text  # (chatd's private messages have no actions)
            self.run_command(self.direct, "msg", [target, said], failed=unknown)
