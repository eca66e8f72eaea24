"""
The browser front-end: JSON over a WebSocket (``twisted.web.websocket``),
served beside a page by ``--listen-web`` (docs/PROTOCOL.md, "WebSocket
(browser) protocol").

- :class:`WebSession`, one per WebSocket, is the core's ``Session`` and the
  command table's ``Caller``: a ``{"type": "command"}`` message runs a
  command of ``chatd.commands.TABLE`` by name with the same rules as every
  front-end; answers, errors, history and private messages go back as JSON.
- :class:`JsonRenderer` (one instance shared by every web session) renders a
  batch of room events once, to the WebSocket frame every member is sent.
- :class:`OriginCheckedResource` refuses a handshake from a foreign Origin
  (or with two Origin or Host headers) with 403 (Twisted checks none:
  /work/shared/RESEARCH.md "Browser client"); every request's Host is
  checked before (chatd.frontends.web_host, against DNS rebinding).
- :class:`SizeLimited` counts the bytes received since the last whole
  message and aborts the connection past a limit (Twisted's WebSocket
  reassembles fragments without bound): an upload frame's size where files
  are on, a text message is checked against ``--max-line`` + 1 KiB once whole.
- Files from and to the browser: chatd.frontends.web_files.
- chatd.frontends.web_resume: resume tokens, the ``resume`` message and its
  catch-up, server pings (:class:`~chatd.frontends.web_resume.Keeper`).

The same connection, login, flood and idle limits as the line front-end
apply (``chatd.limits``): a connection is admitted like a line connection,
and each message costs one token of the flood allowance.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet import abstract, defer
from twisted.logger import Logger
from twisted.protocols import policies
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto.frame_protocol import FrameProtocol

from chatd import errors
from chatd.commands.table import CommandTable, Place
from chatd.core.events import PrivateMessage, RoomEvent
from chatd.core.ports import SessionEnd
from chatd.frontends import web_resume
from chatd.frontends.web_files import BINARY_MESSAGE_MAX, CONTROL_TYPES, FileResource, FileTickets, WebFiles
from chatd.frontends.web_host import HostCheck
from chatd.nodes import count_entering
from chatd.frontends.web_resume import Keeper
from chatd.frontends.webpage import HEALTH_PATH, WEB_TABLE, Health, PageSite, page_root
from chatd.limits import TokenBucket
from chatd.store import address_fields
from chatd.text import clean_text, without_surrogates
from chatd.transfer import Transfers
from chatd.twisted_internals import unsent_bytes

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

log = Logger()

#: Bytes a message may take on the wire beyond ``--max-line``: its JSON around the text and the frame headers.
FRAMING_ALLOWANCE = 1024
#: ``WebSession.entered``'s ``older`` for a usual replay: worked out from the replay itself.
REPLAY_OLDER = -1
#: Arguments a command message may carry (no command declares more than a few).
ARGS_MAX = 8
#: How deeply arrays and objects may nest in a message (the deepest well-formed one nests 1: args in a command).
NESTING_MAX = 8
#: The answer to a message that is no object with a known "type".
MESSAGE_SHAPE = "a message is an object with \"type\": \"command\" or \"line\" (or \"resume\")."
#: Commands whose arguments are sent as several strings but taken as one text (``send``: SIZE, NAME).
JOINED_ARGS = frozenset({"send"})


def event_value(event: RoomEvent) -> dict[str, Any]:
    """A room event as a JSON object: room, id, at (seconds since the epoch), sender, kind, text, target, until."""
    return {"room": event.room, "id": event.id, "at": event.at, "sender": event.sender, "kind": str(event.kind),
            "text": event.text, "target": event.target, "until": event.until}


def decode_message(message: str) -> tuple[Any, str]:
    """
    (value, problem) of a received text message: its JSON value with every
    string (object keys too) free of lone surrogates
    (:func:`chatd.text.without_surrogates`: ``"\\ud800"`` becomes U+FFFD),
    or a problem ("" if none) for text that is no JSON, or nests arrays and
    objects deeper than :data:`NESTING_MAX` (the parser itself stops at
    Python's recursion limit: RecursionError is a problem too).
    """
    too_deep = f"a message nests arrays and objects at most {NESTING_MAX} deep."
    try:
        value = json.loads(message)
    except ValueError:
        return None, "not JSON: send an object such as {\"type\": \"command\", \"name\": \"help\", \"args\": []}."
    except RecursionError:
        return None, too_deep
    try:
        return _cleaned(value, NESTING_MAX), ""
    except _TooDeep:
        return None, too_deep


class _TooDeep(Exception):
    pass


def _cleaned(value: Any, depth: int) -> Any:
    """``value`` (decoded JSON) with its strings :func:`without_surrogates`; raises _TooDeep past ``depth`` levels."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, list):
        if not depth:
            raise _TooDeep()
        return [_cleaned(item, depth - 1) for item in value]
    if isinstance(value, dict):
        if not depth:
            raise _TooDeep()
        return {without_surrogates(key): _cleaned(item, depth - 1) for key, item in value.items()}
    return value


def dumps(value: dict[str, Any]) -> str:
    """
    Compact JSON text (non-ASCII kept as is) that UTF-8 can encode: a lone surrogate (which
    :func:`decode_message` and chatd.text keep out) becomes U+FFFD rather than fail a room's delivery.
    """
    return without_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class JsonRenderer:
    """
    Renders a batch of room events as one ``{"type": "events", "events": [...]}`` JSON text, framed: the
    bytes of one WebSocket text frame (RFC 6455 section 5.2: FIN, opcode 1, the 7, 16 or 64-bit length,
    unmasked as a server's frames are, section 5.1), made by wsproto's own frame serializer once per batch.
    Every member's :meth:`WebSession.deliver` writes these same bytes: no extension (compression) is ever
    negotiated (Twisted's handshake accepts none), so a server frame is the same for every connection.
    """

    def __init__(self) -> None:
        #: Only its serializer is used; a whole message per call (fin) keeps it stateless.
        self._frames = FrameProtocol(client=False, extensions=[])

    def render(self, events: Sequence[RoomEvent]) -> bytes:
        return frame_text(self._frames, dumps({"type": "events", "events": [event_value(event) for event in events]}))


def frame_text(frames: FrameProtocol, text: str) -> bytes:
    """``text`` as one whole server-to-client WebSocket text frame (``frames``: a server's FrameProtocol)."""
    return bytes(frames.send_data(text, fin=True))


class SizeLimited(policies.ProtocolWrapper):
    """
    Counts the bytes received since the last whole WebSocket message
    (:meth:`delivered`) and aborts the connection when they pass ``limit``
    (set once the handshake is done: HTTP requests before it have Twisted's
    own header limits). A read is passed on in slices of at most ``SLICE``
    bytes, and a slice that completes a message starts the count again:
    several messages in one read are each counted on their own, and a
    message is cut off before it passes ``limit`` by more than a slice.
    """

    SLICE = 4096
    limit = 0
    received = 0
    _whole = False

    def dataReceived(self, data: bytes) -> None:
        if not self.limit:
            super().dataReceived(data)
            return
        for start in range(0, len(data), self.SLICE):
            piece = data[start:start + self.SLICE] if len(data) > self.SLICE else data
            self._whole = False
            super().dataReceived(piece)
            if not self.limit or self.disconnecting:
                return
            # (Of a slice that ended a message, the bytes after its end are not counted.)
            self.received = 0 if self._whole else self.received + len(piece)
            if self.received > self.limit:
                log.info("a WebSocket message from {peer} passed {limit} bytes; aborting the connection",
                         peer=self.getPeer(), limit=self.limit)
                self.limit = 0
                self.abortConnection()
                return

    def delivered(self) -> None:
        """A whole message arrived: count again from zero."""
        self.received = 0
        self._whole = True


class SizeLimitedFactory(policies.WrappingFactory):
    protocol = SizeLimited


def _size_limited(request: server.Request) -> SizeLimited | None:
    """The :class:`SizeLimited` wrapper under ``request``'s channel, if there is one."""
    transport = getattr(request.channel, "transport", None)
    while transport is not None and not isinstance(transport, SizeLimited):
        transport = getattr(transport, "transport", None)
    return transport


class WebSession:
    """
    One browser connection: a WebSocketProtocol, the core's Session and the table's Caller.
    ``__slots__`` (every attribute is set in ``__init__``, those of web_resume and web_files too): one
    is kept per idle connection; its queue and holds are made on first use.
    """

    __slots__ = ("factory", "renderer", "limiter", "keeper", "stream", "origin", "room", "name", "address_key",
                 "login_failures", "files", "transport", "heard", "pinged", "token", "token_issued", "_bucket",
                 "_gone", "_in_room", "_ended", "_opened", "_queue", "_holds", "_abort_timer", "_cut", "_waiting")

    commands: CommandTable = WEB_TABLE
    tagged = False

    def __init__(self, factory: ChatFactory, renderer: JsonRenderer, request: server.Request,
                 limiter: SizeLimited | None = None, tickets: FileTickets | None = None,
                 keeper: Keeper | None = None) -> None:
        self.name: str | None = None
        self.address_key: str | None = None
        self.login_failures = 0
        #: File transfers (chatd.frontends.web_files), None where the server takes no files.
        self.files: WebFiles | None = None
        self.transport: WebSocketTransport | None = None
        self._bucket: TokenBucket | None = None
        #: Pings (chatd.frontends.web_resume.Keeper): something came since the last round; a ping is unanswered.
        self.heard = True
        self.pinged = False
        #: The resume token last sent (in memory only, never logged) and when (seconds since the epoch).
        self.token = ""
        self.token_issued = 0.0
        self.factory = factory
        self.renderer = renderer
        self.limiter = limiter
        self.keeper = keeper
        #: The connection underneath (its TCP or TLS transport): paused while over the flood limit.
        self.stream: Any = request.channel.transport
        self.origin: Mapping[str, str] = MappingProxyType(address_fields(request.getClientAddress()))
        self.room: Room | None = None
        self._gone = ""
        self._in_room = False
        self._ended = False
        self._opened = False
        #: Messages received and not yet handled: text (JSON) and binary (upload frames); None when empty.
        self._queue: deque[str | bytes] | None = None
        #: Why messages are not taken now: "flood" (over the allowance), "answer" (a command is waiting);
        #: the connection is not read meanwhile. None until the first hold.
        self._holds: set[str] | None = None
        self._abort_timer: Any = None
        #: Cut off for not reading (--max-outbound): nothing more is written.
        self._cut = False
        self._waiting: Any = None
        if isinstance(factory.transfers, Transfers) and tickets is not None:
            self.files = WebFiles(factory.transfers, self, tickets)

    @property
    def session(self) -> WebSession:
        return self

    @property
    def sends_files(self) -> bool:
        """Whether ``send`` may offer a file (chatd.transfer): where the server takes files."""
        return self.files is not None

    receives_files = sends_files

    # -- WebSocketProtocol --------------------------------------------------------------------

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        """The handshake was answered: admit the connection (the line front-end's limits) or refuse it."""
        self.factory.transport_opened()
        self._opened = True
        limits = self.factory.limits
        key = limits.address_key(self.stream)
        if self.limiter is not None:
            self.limiter.limit = self.text_limit + (BINARY_MESSAGE_MAX if self.files is not None else 0)
        refusal = self.factory.admin.address_refusal(self.origin.get("address")) or limits.admit(self, key)
        if refusal is not None:
            self._ended = True
            self.error(refusal)
            self.close()
            return
        self.address_key = key
        self._bucket = limits.flood_bucket()
        self.factory.connections.add(self)
        if self.keeper is not None:
            self.keeper.opened(self)

    @property
    def text_limit(self) -> int:
        """Bytes a text message may take: ``--max-line`` and its JSON around it."""
        return self.factory.settings.max_line + FRAMING_ALLOWANCE

    def textMessageReceived(self, message: str) -> None:
        self.heard = True
        if self.limiter is not None:
            self.limiter.delivered()
        if self._ended:
            return
        if len(message) > self.text_limit // 4 and len(message.encode()) > self.text_limit:
            # (SizeLimited let it through, as it might have been an upload frame.)
            log.info("a WebSocket text message from {peer} passed {limit} bytes; aborting the connection",
                     peer=self.origin.get("address"), limit=self.text_limit)
            self.stream.abortConnection()
            return
        self._take(message)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self.heard = True
        if self.limiter is not None:
            self.limiter.delivered()
        if self._ended:
            return
        if self.files is None:
            self.error("binary messages are not accepted; send JSON text.")
            return
        self._take(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        self.heard = True

    def connectionLost(self, reason: Failure) -> None:
        if self.keeper is not None:
            self.keeper.closed(self)
        for timer in (self._waiting, self._abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._end_session("disconnect")
        if self._opened:
            self._opened = False
            self.factory.transport_closed()

    # -- input ---------------------------------------------------------------------------------

    def _take(self, message: str | bytes) -> None:
        """Queue a message received; handled now unless messages are held."""
        if self._queue is None:
            self._queue = deque()
        self._queue.append(message)
        if not self.held:
            self._next()

    def _next(self) -> None:
        """Take queued messages one at a time: each pays the flood allowance; a command that waits holds the rest."""
        while self._queue and not self.held and not self._ended and not self.stream.disconnecting:
            # (closing: a message received before is not run, as chatd.frontends.pacing.Pacing.take)
            bucket = self._bucket
            message = self._queue[0]
            if isinstance(message, bytes) and self.files is not None and self.files.free_frame(message):
                # Upload frames carrying a fair share of their upload cost no token (as /data frames).
                if bucket is not None:
                    bucket.touch(self.factory.reactor.seconds())
                self._run(self._queue.popleft())
                continue
            if bucket is not None:
                wait = bucket.take(self.factory.reactor.seconds())
                if wait:
                    self._hold_for(wait)
                    message = self._queue.popleft()
                    if not self._ended:  # (the escalation may have ended the session)
                        self._run(message)
                    return
            self._run(self._queue.popleft())
        if not self._queue:
            self._queue = None  # (an idle connection keeps no deque)

    @property
    def held(self) -> bool:
        """Messages wait (flood, or a command's answer): the login timeout does not count a wait for the server."""
        return bool(self._holds)

    def _hold(self, reason: str) -> None:
        if not self._holds and not self.stream.disconnecting:
            self.stream.pauseProducing()
        if self._holds is None:
            self._holds = set()
        self._holds.add(reason)

    def _release(self, reason: str) -> None:
        if self._holds:
            self._holds.discard(reason)
        if not self._holds:
            self._holds = None  # (an idle connection keeps no set)
        if not self._holds and not self._ended and not self.stream.disconnecting:
            self.stream.resumeProducing()
            self._next()

    def _hold_for(self, wait: float) -> None:
        """Over the flood limit: read nothing more for ``wait`` seconds (this message still counts)."""
        paused = wait
        if self._waiting is not None and self._waiting.active():
            paused -= max(0.0, self._waiting.getTime() - self.factory.reactor.seconds())  # (counted already)
            self._waiting.cancel()
        self._hold("flood")
        if self._bucket is not None and self._bucket.notice_due(self.factory.reactor.seconds()):
            self.error("you are sending too fast; your messages are being delayed.")

        def resume() -> None:
            self._waiting = None
            self._release("flood")

        self._waiting = self.factory.reactor.callLater(wait, resume)
        if self._bucket is not None and self.room is not None:  # (the escalation, as on every front-end)
            self.factory.moderation.flood_paused(self, self._bucket, paused, [self.room])

    def _run(self, message: str | bytes) -> None:
        """Parse one message and run its command; a bad message gets an error, never a traceback."""
        if isinstance(message, bytes):
            problem = self.files.frame(message) if self.files is not None else ""
            if problem:
                self.error(problem)
            return
        value, problem = decode_message(message)
        if problem:
            self.error(problem)
            return
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            self.error(MESSAGE_SHAPE)
            return
        if self.files is not None and value["type"] in CONTROL_TYPES:
            problem = self.files.control(value)
            if problem:
                self.error(problem)
            return
        if value["type"] == "resume":
            self._answered(web_resume.resume(self, value))
            return
        problem, name, values = self._parse(value)
        if problem:
            self.error(problem)
            return
        if value["type"] == "line":
            command, values, problem = self.commands.parse_line(clean_text(name), self.place)
        else:
            command = self.commands.find(name, self.place)
            problem = f"unknown command {name[:30]}; the help command lists them."
        if command is None:
            self.error(problem)
            return
        if command.name in JOINED_ARGS:
            values = [" ".join(values)]
        values = [value if arg.secret else clean_text(value).strip() for arg, value in zip(command.args, values)] \
            + values[len(command.args):]
        try:
            done = self.commands.call(self, command, values)
        except errors.ChatError as error:
            self.error(str(error))
            return
        except Exception:
            self._failed(Failure())
            return
        if any(arg.secret for arg in command.args):  # a password changed: a fresh token if the last is void
            done = defer.maybeDeferred(lambda: done).addCallback(web_resume.renew_if_void, self)
        self._answered(done)

    def _answered(self, done: Any) -> None:
        """A command's result: messages wait while it is an unfired Deferred; a failure is an ``error``."""
        if not isinstance(done, defer.Deferred):
            return
        # Not ``done.called``: a Deferred that fired with another Deferred still pending (a store write behind
        # the answer) is "called" too, and the next message must still wait for it (as IrcConnection.wait_for).
        waiting = [True]

        def finished(_: Any) -> None:
            if waiting[0]:
                waiting[0] = False  # answered at once: nothing held
            else:
                self._command_done(None)

        done.addErrback(self._failed_command).addBoth(finished)
        if waiting[0]:
            waiting[0] = False
            self._hold("answer")

    @staticmethod
    def _parse(value: Any) -> tuple[str, str, list[str]]:
        """
        (problem, command name, arguments) of a decoded message; problem "" if it is a well-formed command.
        A ``line`` message: (problem, its text, []).
        """
        if isinstance(value, dict) and value.get("type") == "line":
            text = value.get("text")
            if not isinstance(text, str):
                return "a line message needs \"text\": the line as typed (a string).", "", []
            return "", text, []
        if not isinstance(value, dict) or value.get("type") != "command":
            return MESSAGE_SHAPE, "", []
        name, args = value.get("name"), value.get("args", [])
        if not isinstance(name, str) or not name or len(name) > 30:
            return "a command message needs \"name\": the command's name (a string).", "", []
        if (not isinstance(args, list) or len(args) > ARGS_MAX
                or not all(isinstance(arg, str) for arg in args)):
            return f"\"args\" is a list of at most {ARGS_MAX} strings.", "", []
        return "", name, args

    def _failed_command(self, failure: Failure) -> None:
        if failure.check(errors.ChatError):
            self.error(str(failure.value))
        else:
            self._failed(failure)

    def _failed(self, failure: Failure) -> None:
        log.failure("unexpected error running a web command", failure)
        self.error("something went wrong on the server; please try again.")

    def _command_done(self, _: Any) -> None:
        self._release("answer")

    # -- output --------------------------------------------------------------------------------

    def _send(self, value: dict[str, Any]) -> None:
        self._write(dumps(value))

    def send(self, value: dict[str, Any]) -> None:
        """One JSON message to the browser (``value`` with its ``type``)."""
        self._send(value)

    def pause_reading(self, reason: str) -> None:
        """Take no more messages for ``reason`` (chatd.transfer: SPOOL_BACKLOG) until :meth:`resume_reading`."""
        self._hold(reason)

    def resume_reading(self, reason: str) -> None:
        self._release(reason)

    def _write(self, message: str | bytes) -> None:
        """
        Send one text message: ``str`` (framed by the WebSocket transport), or ``bytes``, a whole frame
        already made (:class:`JsonRenderer`), written as is to the connection underneath. Both are written
        to the same transport (``self.stream``, the one Twisted's WebSocket writes to) at once, so they go
        out in the order sent; nothing is written once the connection is closing (after the peer's close
        frame too: wsproto refuses text then, and a session ended from elsewhere, a login on another node,
        may be told why before the connection is lost). Output that would leave more than ``--max-outbound``
        bytes unsent on the connection underneath (a browser that stopped reading) cuts the connection off
        instead, as the line front-end does (a ``sendq_exceeded`` row in log.csv).
        """
        transport = self.transport
        if transport is None or self._cut or self.stream.disconnecting:
            return
        if isinstance(message, bytes):
            self.stream.write(message)
        else:
            transport.sendTextMessage(message)
        lowest = self._lowest()
        if lowest is not None:
            queued = unsent_bytes(lowest)
            if queued > self.factory.settings.max_outbound:
                self._cut = True
                log.warn("send queue exceeded: {queued} bytes unsent to {who}; disconnecting",
                         queued=queued, who=self.name or self.origin.get("address", "a web connection"))
                room = self.room.name if self.room is not None else ""
                self.factory.store.log_event("sendq_exceeded", self.name or "", room, queued=queued, refused=0,
                                             **self.origin)
                self.stream.abortConnection()  # (the connection as chatd sees it, TLS included)

    def _lowest(self) -> abstract.FileDescriptor | None:
        """The TCP connection underneath (under TLS too), whose unsent bytes --max-outbound bounds; None if unknown."""
        transport = getattr(self.stream, "transport", None)
        for _ in range(3):
            if isinstance(transport, abstract.FileDescriptor):
                return transport
            transport = getattr(transport, "transport", None)
        return None

    # Session
    def deliver(self, payload: bytes | str) -> None:
        """A batch of room events: the frame :class:`JsonRenderer` made (or a JSON text, framed here)."""
        if not self._ended:
            self._write(payload)

    def drop(self) -> None:
        self.kick("Your connection could not take what was sent to it.")

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        self._send({"type": "private", "at": message.at, "sender": message.sender, "recipient": message.recipient,
                    "text": message.text, "sent": sent})

    def notice(self, text: str) -> None:
        self._send({"type": "notice", "text": text})

    def room_deleted(self, room: Room, by: str) -> None:
        self.removed(room, f"Room {room.name} was deleted by {by}", f"room {room.name} was deleted")

    def removed(self, room: Room, notice: str, gone: str) -> None:
        if self.room is room:
            self.room = None
            self._gone = gone
            self._send({"type": "removed", "room": room.name, "text": notice})

    def spend_allowance(self) -> None:
        if self._bucket is not None:
            self._bucket.take(self.factory.reactor.seconds())

    def share_allowance(self, bucket: Any, wait: float = 0.0) -> None:
        self._bucket = bucket
        if wait:
            self._hold_for(wait)

    def kick(self, reason: str, event: SessionEnd = "disconnect") -> None:
        if self._ended:
            return
        self.error(reason)
        self._end_session(event)
        self.close()

    def _end_session(self, event: SessionEnd) -> None:
        if self._ended:
            return
        self._ended = True
        self.factory.connection_ended(self)
        room, self.room = self.room, None
        self._in_room = False
        self.factory.detach(self, event, room)
        if self.files is not None:
            self.files.connection_lost()

    # Caller
    @property
    def place(self) -> Place:
        return Place.ROOM if self._in_room else Place.MENU

    @property
    def room_gone(self) -> str:
        return self._gone if self._in_room and self.room is None else ""

    def reply(self, text: str) -> None:
        self._send({"type": "reply", "text": text})

    def error(self, text: str) -> None:
        """An ``error`` message: ``text`` without the ``Error: `` the line front-end's refusals carry (PROTOCOL.md)."""
        self._send({"type": "error", "text": text.removeprefix("Error: ")})

    def logged_in(self, name: str, text: str, resumed: bool = False) -> None:
        """Logged in (``resumed``: by a resume token): the ``login`` message carries a resume token."""
        if self._ended:
            return
        self.name = name
        self.factory.attach(self)
        self._send({"type": "login", "name": name, "text": text, **web_resume.token_fields(self),
                    **({"resumed": True} if resumed else {})})

    def entered(self, room: Room, replay: Sequence[RoomEvent] = (), older: int | None = REPLAY_OLDER) -> None:
        """
        In ``room``, shown ``replay`` first; ``older``: where to page back from (a resume's catch-up says),
        REPLAY_OLDER: the replay's first id unless it is the room's first.
        """
        if self._ended:
            return
        self.room, self._in_room, self._gone = room, True, ""
        here = count_entering(self.factory, room, self.name)  # (on every node: chatd.nodes)
        self._send({"type": "entered", "room": room.name, "here": here, "topic": room.authority.topic})
        if older == REPLAY_OLDER:
            older = replay[0].id if replay and replay[0].id > 1 else None
        self._history(room.name, replay, older, replay=True)
        self.factory.join(room, self)

    def show_history(self, room: str, events: Sequence[RoomEvent], older: int | None) -> None:
        self._history(room, events, older, replay=False)

    def _history(self, room: str, events: Iterable[RoomEvent], older: int | None, replay: bool) -> None:
        self._send({"type": "history", "room": room, "replay": replay,
                    "events": [event_value(event) for event in events], "older": older})

    def left(self) -> None:
        room, self.room = self.room, None
        if room is not None:
            self.factory.leave(room, self)
        self._send({"type": "left", "room": room.name if room is not None else None})
        self._in_room, self._gone = False, ""

    def logged_out(self, text: str) -> None:
        if self._ended:
            return
        room, self.room = self.room, None
        self._in_room, self._gone = False, ""
        self.factory.log_out(self, room)
        self.name, self.token = None, ""
        self._send({"type": "logout", "text": text})

    def show_rooms(self, rooms: list[dict[str, Any]]) -> None:
        self._send({"type": "rooms", "rooms": rooms})

    def show_help(self, table: CommandTable) -> None:
        admin = self.factory.is_admin(self.name)
        self._send({"type": "help", "commands": [
            {"name": command.name, "usage": command.usage(), "help": command.help,
             "args": [arg.name for arg in command.args]}
            for command in table.listed(self.place, admin)]})

    def later(self, seconds: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        call = self.factory.reactor.callLater(seconds, d.callback, None)
        d.addErrback(lambda failure: call.cancel() if call.active() else None)  # (cancelled: the session ended)
        return d

    def close(self) -> None:
        """
        Close after what is queued; aborted if not closed within ``--close-grace`` seconds (a peer not reading).
        The close code says whether the page should resume (docs/PROTOCOL.md, "Resuming a session"): 1001
        (going away) at a shut-down, else 1000 (the session was ended: replaced, kicked, quit, refused).
        """
        if self.transport is not None and not self.stream.disconnecting:  # (closing already: the peer's close)
            self.transport.loseConnection(1001 if self.factory.closing else 1000)
        if self._abort_timer is None:
            self._abort_timer = self.factory.reactor.callLater(
                self.factory.settings.close_grace, self.stream.abortConnection)


class WebSessions:
    """The WebSocketServerFactory: a :class:`WebSession` per handshake, all with one :class:`JsonRenderer`."""

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.renderer = JsonRenderer()
        #: The tickets of files shared with these sessions (served at ``/files``).
        self.tickets = FileTickets()
        self.keeper = Keeper(factory)

    def buildProtocol(self, request: server.Request) -> WebSession:
        return WebSession(self.factory, self.renderer, request, _size_limited(request), self.tickets, self.keeper)


def origin_allowed(origin: str, host: str, allowed: Sequence[str]) -> bool:
    """
    Whether a handshake's ``Origin`` may connect: one of ``allowed``
    (``https://chat.example.org``, compared without case), or with none
    configured, the same host and port as the request's ``Host`` (the page's
    own origin). A request without an Origin is not from a browser page and
    is let through (a browser always sends one on a WebSocket handshake).
    """
    if not origin:
        return True
    if allowed:
        return origin.lower().rstrip("/") in {entry.lower().rstrip("/") for entry in allowed}
    parts = urlsplit(origin)
    return bool(parts.scheme in ("http", "https") and parts.netloc and parts.netloc.lower() == host.lower())


class OriginCheckedResource(WebSocketResource):
    """The WebSocket endpoint, answering 403 to a handshake whose Origin is not allowed (:func:`origin_allowed`)."""

    def __init__(self, sessions: WebSessions, allowed: Sequence[str] = ()) -> None:
        super().__init__(sessions)
        self.allowed = tuple(allowed)

    def render_GET(self, request: server.Request) -> bytes | int:
        origins = request.requestHeaders.getRawHeaders(b"origin") or [b""]
        hosts = request.requestHeaders.getRawHeaders(b"host") or [b""]
        origin, host = origins[0].decode("latin-1"), hosts[0].decode("latin-1")
        if len(origins) > 1 or len(hosts) > 1 or not origin_allowed(origin, host, self.allowed):
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"origin not allowed\n"
        result = super().render_GET(request)
        if result == server.NOT_DONE_YET:
            forget_headers(request)
        return result


def forget_headers(request: server.Request) -> None:
    """
    Drop an upgraded request's headers: Twisted's HTTP channel keeps the request for as long as the
    WebSocket lives, and nothing reads its headers after the handshake (about 1 KiB per connection).
    """
    for headers in (request.requestHeaders, request.responseHeaders):
        for name, _ in list(headers.getAllRawHeaders()):
            headers.removeHeader(name)


def web_site(factory: ChatFactory, allowed_origins: Sequence[str] = (), hosts: Sequence[str] = ()) -> SizeLimitedFactory:
    """
    What ``--listen-web`` listens with: a ``server.Site`` serving the page's
    files (``chatd.frontends.webpage``), the WebSocket at ``/ws`` and shared
    files at ``/files/ID``, wrapped to limit message sizes. ``allowed_origins``:
    ``--web-origin``; ``hosts``: ``--web-host`` (chatd.frontends.web_host).
    """
    root = page_root()
    sessions = WebSessions(factory)
    root.putChild(b"ws", OriginCheckedResource(sessions, allowed_origins))
    root.putChild(b"files", FileResource(sessions.tickets))
    root.putChild(HEALTH_PATH[1:], Health(factory))
    site = PageSite(root, reactor=factory.reactor, host_check=HostCheck(hosts))
    site.displayTracebacks = False
    return SizeLimitedFactory(site)
