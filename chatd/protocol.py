"""
The wire: bytes in, bytes out.

:class:`ChatProtocol` splits input into lines (LF, CR LF or CR NUL), hands
telnet commands to :class:`~chatd.telnet.TelnetParser` (created only for a
peer that sends an IAC byte: the no-IAC path stays a single scan), charges
lines and telnet commands to the flood allowance, enforces the line limit,
cleans each line into safe text and hands it to the connection's
:class:`~chatd.menu.Dialogue`. Whether the transport reads is decided in one
place, :meth:`ChatProtocol.pause_reading` / :meth:`~ChatProtocol.resume_reading`,
from a set of reasons. On the way out it renders lines for plain (people) or
tagged (client) mode and writes them through :meth:`ChatProtocol.deliver`
(telnet answers too), straight to the socket when nothing is queued for this
connection, counting what waits against ``--max-outbound``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IDelayedCall, ITCPTransport
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from chatd.commands import TABLE
from chatd.commands.table import CommandTable
from chatd.core.events import PrivateMessage
from chatd.core.ports import Renderer, SessionEnd
from chatd.limits import ANSWER, CONSUMER, FLOOD, TokenBucket
from chatd.menu import Dialogue
from chatd.render import PLAIN, TAGGED, private_line
from chatd.sockets import ILineTransport, set_keepalive, tcp_socket
from chatd.store import address_fields
from chatd.telnet import ECHO, WANTYES, WILL, TelnetParser, command
from chatd.text import clean_line
from chatd.transfer import MIN_FREE_FRAME, PeerFiles, Transfers
from chatd.twisted_internals import line_buffer, nothing_unsent, unsent_bytes
from chatd.wire import (
    CHAT, CLIENT_HELLO, CREDENTIALS, DATA_COMMAND, ENCODING, ERROR, LISTEN, PRIVATE, TAGGED_ON, UPLOAD_FRAME_MAX, Code,
    parse_count,
)

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

#: IAC and NUL as ints: ``255 in data`` is a plain memchr, while ``b"\xff" in data``
#: first tries (and fails) to read its argument as an int, several times slower.
_IAC = 255
_NUL = 0
_WILL_ECHO = command(WILL, ECHO)
#: The start of an upload frame header line (``/data ID LEN``).
_DATA_FRAME = DATA_COMMAND.encode() + b" "



class ChatProtocol(LineReceiver):
    """One connection: a line receiver speaking plain or tagged text."""

    delimiter = b"\n"
    log = Logger()
    factory: ChatFactory
    #: Set by makeConnection before any other method runs (chatd.sockets.ILineTransport says what is used of it).
    transport: ILineTransport

    #: What users of this front-end can do (a subclass may use a copy of the table that declares more).
    commands: CommandTable = TABLE

    # Class-level defaults keep idle connections small: an instance only
    # stores what differs from these.
    name: str | None = None
    tagged = False
    dialogue: Dialogue | None = None
    _telnet: TelnetParser | None = None
    _echo_offered = False
    _echo_hidden = False
    _prompt: tuple[Code, str] | None = None
    _hiding_input = False
    #: Plain mode: a prompt of ours (not chat mode's) is on the user's screen, not answered yet.
    _prompt_open = False
    #: Plain mode: the user's cursor is not at the start of a line (after our prompt, or after a
    #: password whose Enter the client did not echo): our next output starts with CRLF.
    _mid_line = False
    #: Plain mode: when the open prompt was sent, a whole line after the one it answers had already
    #: arrived (typed ahead): the user's screen shows that line before the prompt, not after it.
    _typed_ahead = False
    _discarding = False
    #: Bytes of the over-long line being dropped not charged yet (see :meth:`_charge_dropped`).
    _dropped = 0
    _refeed: bytes | None = None
    _timer: IDelayedCall | None = None
    _socket: socket.socket | None = None
    _tcp: abstract.FileDescriptor | None = None
    _nodelay = False
    #: The per-address limit key ("" if exempt); None until admitted.
    address_key: str | None = None
    #: The client's address as log.csv fields (chatd.store.address_fields); set on connect.
    origin: Mapping[str, str] = MappingProxyType({})
    _bucket: TokenBucket | None = None
    #: Why reading is paused (pause_reading); empty: reading.
    _pause_reasons: frozenset[str] = frozenset()
    _catching_up = False
    _throttle_timer: IDelayedCall | None = None
    #: The timer that aborts the transport if a close has not completed (see :meth:`close`).
    _abort_timer: IDelayedCall | None = None
    #: The session ended (kicked, replaced or dropped) before the connection closed.
    _ended = False
    #: File transfers of this connection (chatd.transfer.PeerFiles), once it has any.
    files: PeerFiles | None = None

    # -- connection life ------------------------------------------------

    def connectionMade(self) -> None:
        self.factory.transport_opened()
        # One byte more than --max-line, for the CR of a CRLF line end (LF is
        # the delimiter); lineReceived refuses a line still too long without it.
        self.MAX_LENGTH = self.factory.settings.max_line + 1
        self.origin = address_fields(self.transport.getPeer())
        limits = self.factory.limits
        key = limits.address_key(self.transport)
        refusal = self.factory.admin.address_refusal(self.origin.get("address")) or limits.admit(self, key)
        if refusal is not None:
            self.transport.write(self._render(ERROR, refusal))
            self.close()
            return
        self.address_key = key
        self._bucket = limits.flood_bucket()
        keepalive = self.factory.settings.keepalive
        sock = tcp_socket(self.transport)
        if sock is not None and keepalive:
            try:
                set_keepalive(sock, keepalive)
            except OSError:
                pass
        # The TCP connection underneath (under TLS too): its buffer is what
        # the outbound limit measures.
        lowest = getattr(self.transport, "transport", self.transport)
        if isinstance(lowest, abstract.FileDescriptor):
            self._tcp = lowest
        if isinstance(self.transport, tcp.Server):
            self._socket = self.transport.socket
            if self.factory.settings.tcp_nodelay == "all":
                self.talking()
        self.factory.connections.add(self)
        self.dialogue = Dialogue(self, self.factory)
        self.dialogue.start()

    def connectionLost(self, reason: Any = None) -> None:
        for timer in (self._timer, self._throttle_timer, self._abort_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._end_session("disconnect")
        self._socket = None
        self._tcp = None
        self.factory.transport_closed()

    def _end_session(self, event: SessionEnd) -> None:
        """
        Everything this connection holds in the shared state goes, at once
        and only once: its room, the online list (one ``event`` row in
        log.csv), its connection slots, its file transfers.
        """
        if self._ended:
            return
        self._ended = True
        self.factory.connection_ended(self)
        if self.dialogue is not None:
            self.dialogue.connection_lost(event)
        if self.files is not None:
            self.files.connection_lost()

    # -- input --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._telnet is None:
            if self.tagged or self.files is not None:
                # A client (tagged, no telnet command so far): binary frames may follow
                # any line, so the bytes go to the line receiver untouched (no telnet, no
                # CR NUL): a frame's LEN counts the bytes as sent.
                self._line_data(data)
                return
            if _IAC not in data:  # the hot path: no telnet
                if _NUL in data:
                    data = self._cr_nul(data)
                self._line_data(data)
                return
            first = data.index(_IAC)
            if first:
                # What comes before the first IAC is handled first: it may be the
                # `/client` hello (and a frame header) of a client whose following
                # bytes are frame data, not telnet.
                head, data = data[:first], data[first:]
                self.dataReceived(head)
                if self._telnet is None and (self.tagged or self.files is not None):
                    self._line_data(data)
                    return
            if self._telnet is None:
                self._telnet = self._start_telnet()
        self._telnet.feed(data)

    def _start_telnet(self) -> TelnetParser:
        """
        The peer speaks telnet: parse its commands from now on (the parser
        exists only for such peers). If we offered ECHO with raw bytes, its
        answer may be on the way: the parser starts in RFC 1143's WANTYES.
        """
        if not self._echo_offered:
            return TelnetParser(self)
        parser = TelnetParser(self, WANTYES)
        parser.want_echo(self._echo_hidden)
        return parser

    def telnet_data(self, data: bytes) -> None:
        """Text input from the telnet parser (commands removed)."""
        if _NUL in data:
            data = self._cr_nul(data)
        self._line_data(data)

    def _cr_nul(self, data: bytes) -> bytes:
        """
        CR NUL (how RFC 854 sends a bare CR, and telnet's Enter key) ends a
        line like CR LF: it becomes CR LF (LF is the delimiter, lineReceived
        drops the CR), also when CR and NUL arrive in different reads.
        """
        if data[:1] == b"\0" and line_buffer(self)[-1:] == b"\r":
            data = b"\n" + data[1:]
        return data.replace(b"\r\0", b"\r\n")

    def telnet_send(self, data: bytes) -> None:
        """A telnet negotiation answer: counted output, and never to a tagged connection."""
        if not self.tagged:
            self.deliver(data)

    def telnet_command(self) -> None:
        """A telnet command costs one token of the flood allowance, like a line."""
        self._charge()

    def _charge(self, cost: int = 1) -> None:
        """Spend ``cost`` tokens of the flood allowance; past it, stop reading for a while."""
        bucket = self._bucket
        if bucket is not None:
            wait = bucket.take(self.factory.reactor.seconds(), cost)
            if wait:
                self._throttle(wait)

    def _charge_dropped(self, size: int) -> None:
        """
        ``size`` more bytes of an over-long line were dropped: input that
        never becomes a line costs a token per ``--max-line`` bytes, as
        lines of that length would, so flooding it is slowed like lines.
        """
        dropped = self._dropped + size
        cost, self._dropped = divmod(dropped, self.MAX_LENGTH)
        if cost:
            self._charge(cost)

    def _line_data(self, data: bytes) -> None:
        if self._discarding:
            dropped, found, data = data.partition(self.delimiter)
            self._charge_dropped(len(dropped))
            if not found:
                return
            self._discarding = False
        LineReceiver.dataReceived(self, data)
        while self._refeed is not None:
            data, self._refeed = self._refeed, None
            LineReceiver.dataReceived(self, data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse an over-long line but keep the connection (it costs a token per --max-line bytes)."""
        dropped, found, rest = line.partition(self.delimiter)
        self._dropped = 0
        self._charge(max(1, len(dropped) // self.MAX_LENGTH))
        self._refuse_long_line()
        if found:
            self._refeed = rest
        else:
            self._discarding = True

    def _refuse_long_line(self) -> None:
        """Tell the user a line over --max-line (line end not counted) was dropped."""
        limit = self.factory.settings.max_line
        self.show(ERROR, f"Error: that line was longer than {limit} bytes and was ignored.")

    def lineReceived(self, line: bytes) -> None:
        if self._ended or self.dialogue is None or self.transport is None or self.transport.disconnecting:
            return
        if line[-1:] == b"\r":  # CRLF: the delimiter is LF
            line = line[:-1]
        if self._mid_line or self._hiding_input:  # plain mode, at a prompt (never in chat mode)
            self._input_line_ended()
        bucket = self._bucket
        if bucket is not None:
            now = self.factory.reactor.seconds()
            if self.files is not None and line.startswith(_DATA_FRAME) and self._own_upload_frame(line):
                # A frame of this connection's own active upload: uploads have their own
                # limits (file size, uploads at once, spool backpressure), not the line
                # rate. Any other frame costs a token like a line.
                bucket.touch(now)
            else:
                wait = bucket.take(now)
                if wait:
                    self._throttle(wait)
        if len(line) >= self.MAX_LENGTH:  # over --max-line without the CR
            self._refuse_long_line()
            return
        if (line[:1] == b"/" and (self.files is not None or self.tagged and line.startswith(_DATA_FRAME))
                and (self._prompt is None or self._prompt[0] != CREDENTIALS)):
            # A tagged connection's every /data header starts a frame, whether or not
            # it has file state yet: its bytes are never read as lines. (The answer to
            # a password prompt is a password, whatever it starts with.)
            if self._files().line_received(line):
                return
        if line and self._prompt is not None and self._prompt[0] == CREDENTIALS:
            self.dialogue.secret_received(line)  # a password: compared as typed, never cleaned
            return
        text = clean_line(line)
        if not text:
            if self._prompt is not None and not self.tagged and self._prompt[0] != CHAT:
                self._send_prompt()
            return
        if text[:1] == "/" and text[:len(CLIENT_HELLO)].lower() == CLIENT_HELLO and text[len(CLIENT_HELLO):][:1] in ("", " "):
            self._client_hello(text)
            return
        self.dialogue.line_received(text)

    def _files(self) -> PeerFiles:
        """This connection's file transfer state (chatd.transfer), made on first use."""
        if self.files is None:
            transfers = self.factory.transfers
            # The core sees file sharing as RoomFiles; frames are this front-end's own (chatd.transfer).
            self.files = PeerFiles(transfers if isinstance(transfers, Transfers) else None, self)
        return self.files

    def rawDataReceived(self, data: bytes) -> None:
        """Bytes of a binary upload frame (``/data ID LEN``, see chatd.transfer)."""
        rest = self._files().frame_data(data)  # made with the frame's header line
        if rest is not None:
            self.setLineMode(rest)

    def _own_upload_frame(self, line: bytes) -> bool:
        """
        Whether ``line`` (``/data ID LEN``) is a frame header of an active
        upload of this connection that carries a fair share of it: at least
        MIN_FREE_FRAME bytes, or all that is left. Only such frames are free
        of the flood allowance, so an upload costs at most one free frame per
        MIN_FREE_FRAME bytes of its (limited) size.
        """
        upload_id, _, length = line[len(_DATA_FRAME):].decode(ENCODING, "replace").partition(" ")
        upload = self._files().uploads.get(upload_id)
        if upload is None:
            return False
        size = parse_count(length.strip(), UPLOAD_FRAME_MAX)
        return size is not None and (size >= MIN_FREE_FRAME or size >= upload.size - upload.received)

    def _throttle(self, wait: float, notice: bool = True) -> None:
        """
        Over the flood limit: read nothing more for ``wait`` seconds (this
        line still counts). In a room the pauses add up to the escalation
        (chatd.limits ``TokenBucket.overrun``): a mute there, then the end.
        """
        assert self._bucket is not None
        reactor = self.factory.reactor
        now = reactor.seconds()
        paused = wait
        timer = self._throttle_timer
        if timer is not None and timer.active():
            paused -= max(0.0, timer.getTime() - now)  # (the pause it replaces is counted already)
            timer.cancel()
        self.pause_reading(FLOOD)
        if notice and self._bucket.notice_due(now):
            self.show(ERROR, "Error: you are sending too fast; your lines are being delayed.")
        self._throttle_timer = reactor.callLater(wait, self._unthrottle)
        room = self.dialogue.room if self.dialogue is not None else None
        if notice and room is not None:
            self.factory.moderation.flood_paused(self, self._bucket, paused, [room])

    def _unthrottle(self) -> None:
        self._throttle_timer = None
        self.resume_reading(FLOOD)

    # -- whether the transport reads: one owner, one set of reasons ---------------------

    def pause_reading(self, reason: str) -> None:
        """
        Stop reading this connection for ``reason`` (FLOOD, SPOOL_BACKLOG,
        ANSWER, CONSUMER). Lines already received wait too; TCP pushes back
        on the sender.
        """
        reasons = self._pause_reasons
        if reason in reasons:
            return
        self._pause_reasons = reasons | {reason}
        if not reasons:
            self.paused = True
            transport = self.transport
            if transport is not None and not transport.disconnecting:
                transport.pauseProducing()

    def resume_reading(self, reason: str) -> None:
        """``reason`` no longer holds; read again (input already received first) if no other does."""
        reasons = self._pause_reasons
        if reason not in reasons:
            return
        self._pause_reasons = reasons = reasons - {reason}
        if reasons:
            return
        self.paused = False
        transport = self.transport
        if transport is None or not getattr(transport, "connected", True) or transport.disconnecting:
            return
        transport.resumeProducing()
        self._catch_up()

    def _catch_up(self) -> None:
        """Handle the input that arrived while paused: buffered lines, then unparsed telnet bytes."""
        if self._catching_up:
            return  # the caller further up the stack carries on
        self._catching_up = True
        try:
            self._line_data(b"")
            parser = self._telnet
            if parser is not None and parser.held and not self.paused:
                parser.feed(b"")
        finally:
            self._catching_up = False

    def pauseProducing(self) -> None:
        self.pause_reading(CONSUMER)

    def resumeProducing(self) -> None:
        self.resume_reading(CONSUMER)

    @property
    def held(self) -> bool:
        """Whether the connection waits for an answer of the server (see :meth:`hold`)."""
        return ANSWER in self._pause_reasons

    def _client_hello(self, text: str) -> None:
        """
        ``/client NAME VERSION``: switch to tagged mode and repeat the prompt
        waiting for an answer (a menu or password prompt). In chat mode
        nothing is repeated: the chat prompt (``Entered room ...``) would read
        as a second join.
        """
        if not self.tagged:
            room = self.dialogue.room if self.dialogue else None
            if room is not None:
                room.fanout.catch_up(self)  # lines said before the switch, in the old mode
            self.tagged = True
            if room is not None:
                room.fanout.regroup(self)
        client = text[len(CLIENT_HELLO) :].strip()[:60] or "unknown client"
        self.show(LISTEN, f"{TAGGED_ON}{client}.")
        if self._prompt is not None and self._prompt[0] != CHAT:
            self._send_prompt()

    # -- output --------------------------------------------------------------

    def _direct(self, data: bytes) -> None:
        """
        Output of this connection's own (a reply, a private message, a
        prompt): the lines its room has queued so far go to it first, so its
        output stays in the order things happened (chatd.broadcast); the
        rest of the room gets them in the batch as usual.
        """
        dialogue = self.dialogue
        if dialogue is not None and dialogue.room is not None:
            dialogue.room.fanout.catch_up(self)
        self.deliver(data)

    def deliver(self, data: bytes) -> None:
        """
        Send encoded lines: straight to the socket when nothing is queued for
        this connection (no wait for the next reactor turn), otherwise through
        the transport's buffer. Output that would take the connection's unsent
        bytes past ``--max-outbound`` is not queued: the connection is cut off
        instead, so no connection ever holds more than the limit.
        """
        transport = self.transport
        sock = self._socket
        lowest = self._tcp  # the transport itself when sock is set (a tcp.Server)
        if sock is not None and lowest is not None and nothing_unsent(lowest):
            if lowest.disconnecting or not lowest.connected:
                return
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = 0  # the transport finds and reports the error itself
            if sent == len(data):
                return
            data = data[sent:]
        if lowest is None:
            transport.write(data)
            return
        queued = unsent_bytes(lowest)
        if queued + len(data) > self.factory.settings.max_outbound:
            self._cut_off(queued, len(data))
            return
        transport.write(data)
        # Under TLS what is queued is the encrypted form, a little longer.
        queued = unsent_bytes(lowest)
        if queued > self.factory.settings.max_outbound:
            self._cut_off(queued, 0)

    def _cut_off(self, queued: int, refused: int) -> None:
        """Unsent output would pass --max-outbound: log it (with the room, if in one) and abort the connection."""
        self.log.warn(
            "send queue exceeded: {queued} bytes unsent to {who} and {refused} more to send; disconnecting",
            queued=queued,
            refused=refused,
            who=self.name or self.transport.getPeer(),
        )
        dialogue = self.dialogue
        room = dialogue.room.name if dialogue is not None and dialogue.room is not None else ""
        self.factory.store.log_event(
            "sendq_exceeded", self.name or "", room, queued=queued, refused=refused, **self.origin)
        self._socket = None
        self._tcp = None
        self.transport.abortConnection()

    def drop(self) -> None:
        """Delivering room lines to this connection raised (chatd.broadcast): end it now."""
        self._socket = None
        self._tcp = None
        self._end_session("disconnect")
        if self.transport is not None:
            self.transport.abortConnection()

    def _render(self, code: Code, text: str) -> bytes:
        if self.tagged:  # ("replace": as LineRenderer.render)
            return f"{code} {text}\r\n".encode(ENCODING, "replace")
        return f"{text}\r\n".encode(ENCODING, "replace")

    def show(self, code: Code, text: str) -> None:
        """
        Send one line (the text must already be clean). In plain mode it
        starts on a line of its own; one that arrives while a prompt waits
        for an answer (a private message, a notice) is followed by the
        prompt again.
        """
        self._show(self._render(code, text))

    def show_lines(self, lines: Sequence[tuple[Code, str]]) -> None:
        """Several lines (a block of room history) as :meth:`show` sends each, in one write."""
        if lines:
            self._show(b"".join(self._render(code, text) for code, text in lines))

    def _show(self, data: bytes) -> None:
        if self._mid_line:
            data = b"\r\n" + data
            if self._prompt_open:
                data += self._prompt_bytes()  # the cursor is after it again
            else:
                self._mid_line = False
        self._direct(data)

    @property
    def renderer(self) -> Renderer:
        """Room events are rendered as tagged lines for the bundled client, as plain lines for people."""
        return TAGGED if self.tagged else PLAIN

    @property
    def sends_files(self) -> bool:
        """``/send`` may offer a file: a tagged connection whose bytes carry binary frames (no telnet, chatd.transfer)."""
        return self.tagged and self._telnet is None

    @property
    def receives_files(self) -> bool:
        """Files shared in the room come to tagged connections (chatd.transfer)."""
        return self.tagged

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        """A private message to this user (code PRIVATE), or the echo of one it ``sent`` (code CHAT)."""
        if sent:
            self.show(CHAT, private_line(message, True))
        else:
            self.show(PRIVATE, private_line(message, False))

    def notice(self, text: str) -> None:
        """An unprompted line of information."""
        self.show(LISTEN, text)

    def ask(self, code: Code, text: str) -> None:
        """Send a prompt and remember it (it is repeated after ``/client``)."""
        self._prompt = (code, text)
        self._send_prompt()

    def _send_prompt(self) -> None:
        assert self._prompt is not None
        code, text = self._prompt
        if self.tagged:
            self._direct(self._render(code, text))
            return
        # Before the prompt, so a telnet client has switched its echo when it shows it.
        self._hide_echo(code == CREDENTIALS)
        if code == CHAT:
            data = self._render(code, text)
            if self._mid_line:
                data = b"\r\n" + data
            self._mid_line = self._prompt_open = False
            self._direct(data)
            return
        self._hiding_input = code == CREDENTIALS
        data = self._prompt_bytes()
        if self._mid_line:
            data = b"\r\n" + data
        self._mid_line = self._prompt_open = True
        self._typed_ahead = self._line_waiting()
        self._direct(data)

    def _line_waiting(self) -> bool:
        """Whether a whole line has arrived that is not handled yet (in the line buffer, or held by the parser)."""
        if self.delimiter in line_buffer(self):
            return True
        parser = self._telnet
        return parser is not None and (self.delimiter in parser.held or b"\r\0" in parser.held)

    def _prompt_bytes(self) -> bytes:
        """A plain-mode prompt as sent: its text and a space, no line end (the user types after it)."""
        assert self._prompt is not None
        return (self._prompt[1] + " ").encode(ENCODING)

    def _hide_echo(self, hidden: bool) -> None:
        """
        Hide what a telnet user types (we "will echo", and don't) or show it
        again. The state follows the prompts: from one password prompt to the
        next (registration's "Repeat the password:") echo stays off, and it
        comes back before the next prompt that is no password prompt. A peer
        that has sent no telnet command yet gets ``IAC WILL ECHO`` before
        every password prompt and never ``WONT``; once it speaks telnet, the
        RFC 1143 negotiation of :class:`~chatd.telnet.TelnetParser` decides.
        """
        self._echo_hidden = hidden
        parser = self._telnet
        if parser is not None:
            parser.want_echo(hidden)
        elif hidden:
            self._echo_offered = True
            self.deliver(_WILL_ECHO)

    def _input_line_ended(self) -> None:
        """
        A line arrived at a plain-mode prompt: the prompt is answered, and
        the client's echo of the Enter put the cursor at the start of a line,
        unless the line was typed ahead (it had arrived before the prompt
        was sent: the prompt was shown after it) or it was a password read
        while a telnet client had agreed that we echo (it echoed nothing):
        then a line end is due, sent at the start of our next output in the
        same write, so output never continues a prompt's line and a line end
        never lands apart from (or inside) a line.
        """
        self._prompt_open = False
        self._mid_line = self._typed_ahead or (
            self._hiding_input and self._telnet is not None and self._telnet.echoing)
        self._hiding_input = self._typed_ahead = False

    # -- what the dialogue and the factory ask of a connection ----------------------

    def hold(self) -> None:
        """Stop reading lines until :meth:`release` (the server is working on an answer)."""
        self.pause_reading(ANSWER)

    def release(self) -> None:
        """Read lines again (including any already received), unless another reason holds."""
        self.resume_reading(ANSWER)

    def share_allowance(self, bucket: TokenBucket, wait: float = 0.0) -> None:
        """
        From now on take the flood allowance from ``bucket`` (the account's,
        see chatd.limits); if ``wait`` (the account is in debt), read nothing
        more for that many seconds (without a notice: nothing was sent yet).
        """
        self._bucket = bucket
        if wait:
            self._throttle(wait, notice=False)

    def spend_allowance(self) -> None:
        """
        Charge one token for something the others see that no line paid
        for (leaving a room by going away): the account's next connection
        pays the debt by waiting (see :meth:`share_allowance`).
        """
        if self._bucket is not None:
            self._bucket.take(self.factory.reactor.seconds())

    def call_later(self, seconds: float, function: Callable[[], None]) -> IDelayedCall:
        self._timer = self.factory.reactor.callLater(seconds, function)
        return self._timer

    def talking(self) -> None:
        """
        This connection talks in a room. A peer that sends data delays its
        ACKs to piggyback them, and with Nagle's algorithm on, our next small
        write then waits for that delayed ACK (up to 40 ms): so talkers get
        TCP_NODELAY. Listen-only peers ACK as soon as they read, and for them
        Nagle merges lines queued meanwhile into fewer packets (less CPU).
        """
        if not self._nodelay and self._socket is not None and self.factory.settings.tcp_nodelay != "never":
            self._nodelay = True
            ITCPTransport(self.transport).setTcpNoDelay(True)  # a tcp.Server: it has a socket

    def close(self) -> None:
        """
        Close after sending what is queued; if the peer has not taken it
        within ``--close-grace`` seconds (it stopped reading, or a TLS peer
        never finished its handshake), abort the connection.
        """
        transport = self.transport
        transport.loseConnection()
        if self._abort_timer is None:
            grace = self.factory.settings.close_grace
            self._abort_timer = self.factory.reactor.callLater(
                grace, self._abort_late)

    def _abort_late(self) -> None:
        self._abort_timer = None
        self.log.info("{who} did not close within {grace:g} seconds; aborting the connection",
                      who=self.name or self.address_key or "a connection", grace=self.factory.settings.close_grace)
        self._socket = None
        self._tcp = None
        self.transport.abortConnection()

    def kick(self, reason: str, event: SessionEnd = "disconnect") -> None:
        """
        Tell the user why and close the connection. The session ends at
        once (room, online list, connection slots; logged as ``event`` if
        it was logged in); the connection itself within ``--close-grace``.
        """
        if self._ended:
            return
        self._prompt_open = False  # no prompt again after the last words
        self.show(ERROR, reason)
        self._end_session(event)
        self.close()

    def room_deleted(self, room: Room, by: str) -> None:
        if self.dialogue is not None:
            self.dialogue.room_deleted(room, by)

    def removed(self, room: Room, notice: str, gone: str) -> None:
        if self.dialogue is not None:
            self.dialogue.removed(room, notice, gone)
