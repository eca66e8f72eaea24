"""
The wire: bytes in, bytes out.

:class:`ChatProtocol` splits input into lines (LF or CRLF), strips telnet
negotiation, enforces the line limit, cleans each line into safe text and
hands it to the connection's :class:`~chatd.menu.Dialogue`. On the way out
it renders lines for plain (people) or tagged (client) mode and writes
them, straight to the socket when nothing is queued for this connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.conch import telnet
from twisted.internet import defer, tcp
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from chatd.limits import TokenBucket
from chatd.menu import Dialogue
from chatd.text import clean_line
from chatd.wire import CHAT, CLIENT_HELLO, CREDENTIALS, DATA_COMMAND, ENCODING, ERROR, LISTEN, PRIVATE

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

_IAC = telnet.IAC
#: The start of an upload frame header line (``/data ID LEN``).
_DATA_FRAME = DATA_COMMAND.encode() + b" "


class _TelnetFilter(telnet.Telnet):
    """
    Parses telnet commands out of the input of one connection (created only
    once the peer sends an IAC byte or we negotiate ECHO) and passes the
    remaining application data on. We agree to do ECHO (to hide passwords)
    and refuse every other option.
    """

    def __init__(self, receiver: Callable[[bytes], None], transport: Any) -> None:
        super().__init__()
        self._receiver = receiver
        self.transport = transport

    def applicationDataReceived(self, data: bytes) -> None:
        self._receiver(data)

    def enableLocal(self, option: bytes) -> bool:
        return option == telnet.ECHO

    def enableRemote(self, option: bytes) -> bool:
        return False

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def unhandledCommand(self, command: bytes, argument: bytes | None) -> None:
        pass

    def unhandledSubnegotiation(self, command: bytes, data: Any) -> None:
        pass

    def echoing(self) -> bool:
        """Whether the peer agreed that we echo (so it does not)."""
        return bool(self.getOptionState(telnet.ECHO).us.state == "yes")


class ChatProtocol(LineReceiver):
    """One connection: a line receiver speaking plain or tagged text."""

    delimiter = b"\n"
    log = Logger()
    factory: ChatFactory

    # Class-level defaults keep idle connections small: an instance only
    # stores what differs from these.
    name: str | None = None
    tagged = False
    dialogue: Dialogue | None = None
    _telnet: _TelnetFilter | None = None
    _prompt: tuple[str, str] | None = None
    _hiding_input = False
    _discarding = False
    _refeed: bytes | None = None
    _timer: Any = None
    _socket: socket.socket | None = None
    _tcp: tcp.Server | None = None
    _nodelay = False
    #: The per-address limit key ("" if exempt); None until admitted.
    address_key: str | None = None
    _bucket: TokenBucket | None = None
    _held = False
    _throttled = False
    _throttle_timer: Any = None
    #: File transfers of this connection (chatd.transfer.PeerFiles), once it has any.
    files: Any = None

    # -- connection life ------------------------------------------------

    def connectionMade(self) -> None:
        # One byte more than --max-line, for the CR of a CRLF line end (LF is
        # the delimiter); lineReceived refuses a line still too long without it.
        self.MAX_LENGTH = self.factory.settings.max_line + 1
        limits = self.factory.limits
        key = limits.address_key(self.transport)
        refusal = limits.admit(self, key)
        if refusal is not None:
            self.transport.write(self._render(ERROR, refusal))
            self.transport.loseConnection()
            return
        self.address_key = key
        self._bucket = limits.flood_bucket()
        # The TCP connection underneath (under TLS too): its buffer is what
        # the outbound limit measures.
        lowest = getattr(self.transport, "transport", self.transport)
        if isinstance(lowest, tcp.Server):
            self._tcp = lowest
        if isinstance(self.transport, tcp.Server):
            self._socket = self.transport.socket
            if self.factory.settings.tcp_nodelay == "all":
                self.talking()
        self.factory.connections.add(self)
        self.dialogue = Dialogue(self, self.factory)
        self.dialogue.start()

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.discard(self)
        if self.address_key is not None:
            self.factory.limits.release(self, self.address_key)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._throttle_timer is not None and self._throttle_timer.active():
            self._throttle_timer.cancel()
        if self.dialogue is not None:
            self.dialogue.connection_lost()
        if self.files is not None:
            self.files.connection_lost()
        self._socket = None
        self._tcp = None

    # -- input --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.files is not None and self._telnet is None:
            # A file client: binary upload frames may follow any line, so no telnet parsing.
            self._line_data(data)
        elif self._telnet is not None and (self._telnet.state != "data" or _IAC in data):
            self._parse_telnet(data)
        elif _IAC in data:
            self._start_telnet()
            self._parse_telnet(data)
        else:
            self._line_data(data)

    def _parse_telnet(self, data: bytes) -> None:
        """
        Feed the telnet parser, each IAC and the byte after it on their own:
        the parser raises ValueError on a byte after IAC that is no command,
        and would lose the rest of the chunk with it; this way only the two
        bytes are dropped.
        """
        telnet_filter = self._telnet
        assert telnet_filter is not None
        start, end = 0, len(data)
        while start < end:
            if telnet_filter.state == "escaped":
                cut = start + 1
            else:
                cut = data.find(_IAC, start)
                if cut == start:
                    cut = start + 2
                elif cut < 0:
                    cut = end
            try:
                telnet_filter.dataReceived(data[start:cut])
            except ValueError:
                telnet_filter.state = "data"
            start = cut

    def _line_data(self, data: bytes) -> None:
        if self._discarding:
            _, found, data = data.partition(self.delimiter)
            if not found:
                return
            self._discarding = False
        LineReceiver.dataReceived(self, data)
        while self._refeed is not None:
            data, self._refeed = self._refeed, None
            LineReceiver.dataReceived(self, data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse an over-long line but keep the connection."""
        self._refuse_long_line()
        _, found, rest = line.partition(self.delimiter)
        if found:
            self._refeed = rest
        else:
            self._discarding = True

    def _refuse_long_line(self) -> None:
        """Tell the user a line over --max-line (line end not counted) was dropped."""
        limit = self.factory.settings.max_line
        self.show(ERROR, f"Error: that line was longer than {limit} bytes and was ignored.")

    def lineReceived(self, line: bytes) -> None:
        if self.dialogue is None or self.transport is None or self.transport.disconnecting:
            return
        if line[-1:] == b"\r":  # CRLF: the delimiter is LF
            line = line[:-1]
        bucket = self._bucket
        if bucket is not None:
            now = self.factory.reactor.seconds()  # type: ignore[attr-defined]
            if self.files is not None and line.startswith(_DATA_FRAME):
                # An upload frame header: uploads have their own limits (file
                # size, uploads at once, spool backpressure), not the line rate.
                bucket.touch(now)
            else:
                wait = bucket.take(now)
                if wait:
                    self._throttle(wait)
        if len(line) >= self.MAX_LENGTH:  # over --max-line without the CR
            self._refuse_long_line()
            return
        if self.files is not None and line[:1] == b"/" and self.files.line_received(line):
            return
        if self._hiding_input:
            self._show_input()
        if line and self._prompt is not None and self._prompt[0] == CREDENTIALS:
            self.dialogue.secret_received(line)  # a password: compared as typed, never cleaned
            return
        text = clean_line(line)
        if not text:
            if self._prompt is not None and not self.tagged and self._prompt[0] != CHAT:
                self._send_prompt()
            return
        if text == CLIENT_HELLO or text.startswith(CLIENT_HELLO + " "):
            self._client_hello(text)
            return
        self.dialogue.line_received(text)

    def rawDataReceived(self, data: bytes) -> None:
        """Bytes of a binary upload frame (``/data ID LEN``, see chatd.transfer)."""
        rest = self.files.frame_data(data)
        if rest is not None:
            self.setLineMode(rest)

    def _throttle(self, wait: float) -> None:
        """Over the flood limit: read nothing more for ``wait`` seconds (this line still counts)."""
        assert self._bucket is not None
        reactor = self.factory.reactor
        if self._throttle_timer is not None and self._throttle_timer.active():
            self._throttle_timer.cancel()
        self._throttled = True
        self.pauseProducing()
        if self._bucket.notice_due(reactor.seconds()):  # type: ignore[attr-defined]
            self.show(ERROR, "Error: you are sending too fast; your lines are being delayed.")
        self._throttle_timer = reactor.callLater(wait, self._unthrottle)  # type: ignore[attr-defined]

    def _unthrottle(self) -> None:
        self._throttled = False
        self._throttle_timer = None
        if not self._held:
            self._resume()

    def _client_hello(self, text: str) -> None:
        """``/client NAME VERSION``: switch to tagged mode and repeat the prompt."""
        if not self.tagged:
            self.tagged = True
            room = self.dialogue.room if self.dialogue else None
            if room is not None:
                room.fanout.regroup(self)
        client = text[len(CLIENT_HELLO) :].strip()[:60] or "unknown client"
        self.show(LISTEN, f"Tagged mode on for {client}.")
        if self._prompt is not None:
            self._send_prompt()

    # -- output --------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """
        Send encoded lines: straight to the socket when nothing is queued for
        this connection (no wait for the next reactor turn), otherwise through
        the transport's buffer. A connection whose unsent output passes the
        limit is cut off.
        """
        transport = self.transport
        sock = self._socket
        if sock is not None and not transport.dataBuffer and not transport._tempDataLen:
            if transport.disconnecting or not transport.connected:
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
        transport.write(data)
        lowest = self._tcp
        if lowest is not None:
            queued = len(lowest.dataBuffer) - lowest.offset + lowest._tempDataLen
            if queued > self.factory.settings.max_outbound:
                self._cut_off(queued)

    def _cut_off(self, queued: int) -> None:
        self.log.warn(
            "send queue exceeded: {queued} bytes unsent to {who}; disconnecting",
            queued=queued,
            who=self.name or self.transport.getPeer(),
        )
        self.factory.store.log_event("sendq_exceeded", self.name or "", detail=f"{queued} bytes queued")
        self._socket = None
        self._tcp = None
        self.transport.abortConnection()

    def _render(self, code: str, text: str) -> bytes:
        if self.tagged:
            return f"{code} {text}\r\n".encode(ENCODING)
        return f"{text}\r\n".encode(ENCODING)

    def show(self, code: str, text: str) -> None:
        """Send one line (the text must already be clean)."""
        self.deliver(self._render(code, text))

    def show_private(self, text: str) -> None:
        """A private message from another user."""
        self.show(PRIVATE, text)

    def ask(self, code: str, text: str) -> None:
        """Send a prompt and remember it (it is repeated after ``/client``)."""
        self._prompt = (code, text)
        self._send_prompt()

    def _send_prompt(self) -> None:
        assert self._prompt is not None
        code, text = self._prompt
        if self.tagged or code == CHAT:
            self.deliver(self._render(code, text))
            return
        if code == CREDENTIALS:
            self._hide_input()
        self.deliver((text + " ").encode(ENCODING))

    def _start_telnet(self) -> None:
        """
        The peer speaks telnet: parse its commands from now on. The parser
        (about 1.5 KiB) exists only for such peers; if we already offered
        ECHO with raw bytes, it learns that the answer is on its way.
        """
        self._telnet = _TelnetFilter(self._line_data, self.transport)
        if self._hiding_input:
            offer = self._telnet.getOptionState(telnet.ECHO).us
            offer.negotiating = True
            offer.onResult = defer.Deferred().addErrback(lambda _: None)

    def _hide_input(self) -> None:
        """Ask a telnet client to stop echoing (we "will echo", and don't)."""
        self._hiding_input = True
        if self._telnet is None:
            self.transport.write(_IAC + telnet.WILL + telnet.ECHO)
        else:
            self._telnet.will(telnet.ECHO).addErrback(lambda _: None)

    def _show_input(self) -> None:
        self._hiding_input = False
        if self._telnet is not None and self._telnet.echoing():
            self._telnet.wont(telnet.ECHO).addErrback(lambda _: None)
            self.deliver(b"\r\n")

    # -- what the dialogue and the factory ask of a connection ----------------------

    def hold(self) -> None:
        """Stop reading lines until :meth:`release`."""
        self._held = True
        if not self.transport.disconnecting:
            self.pauseProducing()

    def release(self) -> None:
        """Read lines again (including any already received), unless throttled."""
        self._held = False
        if not self._throttled:
            self._resume()

    def _resume(self) -> None:
        transport = self.transport
        if transport is not None and getattr(transport, "connected", True) and not transport.disconnecting:
            self.resumeProducing()

    def call_later(self, seconds: float, function: Callable[[], None]) -> Any:
        self._timer = self.factory.reactor.callLater(seconds, function)  # type: ignore[attr-defined]
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
            self.transport.setTcpNoDelay(True)

    def close(self) -> None:
        self.transport.loseConnection()

    def kick(self, reason: str) -> None:
        """Tell the user why, then close the connection."""
        self.show(ERROR, reason)
        self.close()

    def room_deleted(self, room: Room, by: str) -> None:
        if self.dialogue is not None:
            self.dialogue.room_deleted(room, by)
