"""
Telnet, as much as a line-based chat server needs: RFC 854 parsing and
RFC 1143 option negotiation.

:class:`TelnetParser` takes the bytes of one connection that has sent an
IAC byte (0xFF), hands the application data on and answers the commands:

- ``IAC IAC`` is one data byte 0xFF; ``IAC SB ... IAC SE`` (of any length,
  empty included) is skipped, its body charged one command per
  SUB_CHARGE_BYTES (it never becomes a line); every other command (``NOP``, ``AYT``,
  ``GA``, ...) is ignored. No byte sequence makes it raise: a command byte
  it does not know is ignored like NOP.
- The server negotiates one option, ``ECHO`` on its own side ("the server
  echoes", so the client stops echoing: how passwords are hidden), with
  RFC 1143's Q method: four states (NO, YES, WANTNO, WANTYES) and a
  one-bit queue, so a request is never answered twice and a change of mind
  while a request is in flight is sent after the answer, never lost.
- Every other option is refused (``WILL X`` is answered ``DONT X``,
  ``DO X`` is answered ``WONT X``) once per change of the peer's request:
  a repeated ``DO X`` gets no second answer until the peer has said
  ``DONT X`` (RFC 1143: we are already in state NO). So the answers to a
  peer never outnumber its own changes of mind.

The parser does not write: it calls its peer (:class:`TelnetPeer`), which
counts every answer against its output limit, charges every command to its
flood allowance, and may stop the parser (``paused``); the bytes not
parsed yet are kept in :attr:`TelnetParser.held` until the peer reads again.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Protocol

IAC = 255
DONT = 254
DO = 253
WONT = 252
WILL = 251
SB = 250
SE = 240
#: RFC 857.
ECHO = 1

_IAC_BYTE = b"\xff"
_IAC_PAIR = b"\xff\xff"
#: From an IAC: plain bytes and ``IAC IAC`` pairs (escaped 0xFF data), up to a
#: command's IAC (an IAC followed by another byte) or the end. Possessive, so
#: the match never backtracks: one pass at C speed.
_DATA_RUN = re.compile(rb"[^\xff]*+(?:(?:\xff\xff)++[^\xff]*+)*+")
#: A subnegotiation body: plain bytes and ``IAC x`` pairs (x not SE), up to
#: ``IAC SE`` or an IAC that is the last byte received so far.
_SUB_RUN = re.compile(rb"[^\xff]*+(?:\xff[^\xf0][^\xff]*+)*+")

#: A subnegotiation body is charged one command per this many bytes (like
#: lines of that length: it never becomes one).
SUB_CHARGE_BYTES = 4096

# Parser states.
_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)

# RFC 1143 option states, for ECHO on our side.
OptionState = Literal["no", "yes", "wantno", "wantyes"]
NO: Final = "no"
YES: Final = "yes"
WANTNO: Final = "wantno"
WANTYES: Final = "wantyes"

# Bits of TelnetParser.refused: requests of the peer already refused.
_REFUSED_WILL = 1
_REFUSED_DO = 2


class TelnetPeer(Protocol):
    """What the parser needs from its connection."""

    #: True while the connection does not read (the parser stops too).
    paused: bool

    def telnet_data(self, data: bytes) -> None:
        """Application data (telnet commands removed)."""

    def telnet_send(self, data: bytes) -> None:
        """Send a negotiation answer (the peer counts it as output)."""

    def telnet_command(self) -> None:
        """A command was received: charge it (the peer may pause, which stops the parser)."""


def _run_end(run: re.Pattern[bytes], data: bytes, start: int) -> int:
    """Where ``run`` (_DATA_RUN or _SUB_RUN: each matches the empty string too) ends in ``data`` from ``start``."""
    found = run.match(data, start)
    assert found is not None
    return found.end()


def command(verb: int, option: int) -> bytes:
    """``IAC verb option`` as bytes."""
    return bytes((IAC, verb, option))


class TelnetParser:
    """
    The telnet state of one connection (see the module docstring).

    :attr:`echo` is our ECHO option's RFC 1143 state; :attr:`echo_wanted`
    is what the server wants it to be (input hidden or not).
    """

    __slots__ = ("peer", "state", "verb", "echo", "echo_queued", "echo_wanted", "refused", "held", "sub_bytes")

    def __init__(self, peer: TelnetPeer, echo: OptionState = NO) -> None:
        self.peer = peer
        self.state = _DATA
        self.verb = 0
        #: RFC 1143 state of ECHO on our side, and its one-bit queue ("OPPOSITE").
        self.echo: OptionState = echo
        self.echo_queued = False
        self.echo_wanted = echo in (YES, WANTYES)
        #: Per option, the peer's requests already refused (_REFUSED_* bits).
        self.refused = bytearray(256)
        #: Bytes received but not parsed yet (the peer stopped reading).
        self.held = b""
        #: Bytes of the current subnegotiation's body so far (it is charged by the 4 KiB).
        self.sub_bytes = 0

    # -- input ------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """
        Parse ``data``. The work is done on runs, at C speed (``bytes.find``,
        two regular expressions, ``bytes.replace``), never byte by byte, so
        escaped 0xFF data and subnegotiation bodies cost about what plain
        bytes cost. Application data is handed on in one piece per run
        between commands (so ``IAC IAC`` pairs cost no call each); a
        subnegotiation body is charged one command per SUB_CHARGE_BYTES
        bytes (it never becomes a line, so it is charged as lines would
        be); parsing stops, keeping the rest in :attr:`held`, when the
        peer pauses.
        """
        if self.held:
            data, self.held = self.held + data, b""
        peer = self.peer
        if peer.paused:
            self.held = data
            return
        text: list[bytes] = []  # application data not handed on yet
        i, end = 0, len(data)
        while i < end:
            state = self.state
            if state == _DATA:
                j = data.find(IAC, i)
                if j < 0:
                    text.append(data[i:] if i else data)
                    break
                # Plain bytes and IAC IAC pairs up to the next command IAC (or the end).
                j = _run_end(_DATA_RUN, data, j)
                if j > i:
                    run = data[i:j]
                    text.append(run.replace(_IAC_PAIR, _IAC_BYTE) if IAC in run else run)
                if j == end:
                    break
                self.state = _COMMAND
                i = j + 1
            elif state == _COMMAND:
                byte = data[i]
                i += 1
                if byte == IAC:  # an escaped 0xFF (split from its pair by a read): data
                    text.append(_IAC_BYTE)
                    self.state = _DATA
                    continue
                if text:  # the data before this command first: its lines may pause the peer
                    peer.telnet_data(b"".join(text))
                    text = []
                    if peer.paused:  # then this command waits too (its IAC was in this read: i >= 2)
                        self.state = _DATA
                        self.held = data[i - 2:]
                        return
                if byte in (WILL, WONT, DO, DONT):
                    self.verb = byte
                    self.state = _OPTION
                    continue  # charged with its option byte
                if byte == SB:
                    self.state = _SUB
                    self.sub_bytes = 0
                else:
                    self.state = _DATA
                peer.telnet_command()
                if peer.paused:
                    self.held = data[i:]
                    return
            elif state == _OPTION:
                option = data[i]
                i += 1
                self.state = _DATA
                self._negotiate(self.verb, option)
                peer.telnet_command()
                if peer.paused:
                    self.held = data[i:]
                    return
            else:
                if state == _SUB:
                    # The body up to IAC SE: skipped (IAC and any byte but SE is a pair in it).
                    j = data.find(IAC, i)
                    j = end if j < 0 else _run_end(_SUB_RUN, data, j)
                    skipped = j - i
                    if j < end:  # data[j] is an IAC: IAC SE, or the last byte of this read
                        self.state = _SUB_IAC
                        j += 1
                else:  # _SUB_IAC: the byte after an IAC in a body, in the next read
                    j = i
                    skipped = 0
                if self.state == _SUB_IAC and j < end:
                    byte = data[j]
                    j += 1
                    # IAC SE ends it; IAC IAC is a 0xFF inside it; anything else is not
                    # allowed there (RFC 854) and is skipped with it.
                    if byte == SE:
                        self.state = _DATA
                    else:
                        self.state = _SUB
                        skipped += 2
                i = j
                if skipped:
                    cost = (self.sub_bytes + skipped) // SUB_CHARGE_BYTES - self.sub_bytes // SUB_CHARGE_BYTES
                    self.sub_bytes += skipped
                    for _ in range(cost):
                        peer.telnet_command()
                    if cost and peer.paused:
                        self.held = data[i:]
                        return
        if text:
            peer.telnet_data(b"".join(text))

    def _negotiate(self, verb: int, option: int) -> None:
        if option == ECHO and verb in (DO, DONT):
            if verb == DO:
                self._do_echo()
            else:
                self._dont_echo()
            return
        if verb in (WILL, DO):
            bit = _REFUSED_WILL if verb == WILL else _REFUSED_DO
            if not self.refused[option] & bit:
                self.refused[option] |= bit
                self.peer.telnet_send(command(DONT if verb == WILL else WONT, option))
        else:  # WONT, DONT: the option stays off, nothing to answer (RFC 1143)
            self.refused[option] &= ~(_REFUSED_WILL if verb == WONT else _REFUSED_DO)

    # -- ECHO on our side (RFC 1143, section 7, "us") ------------------------------------

    def want_echo(self, wanted: bool) -> None:
        """Ask for ECHO on (``True``: the client stops echoing) or off, as RFC 1143 allows."""
        self.echo_wanted = wanted
        state = self.echo
        if wanted:
            if state == NO:
                self.echo = WANTYES
                self.peer.telnet_send(command(WILL, ECHO))
            elif state == WANTNO:
                self.echo_queued = True
            elif state == WANTYES:
                self.echo_queued = False
        else:
            if state == YES:
                self.echo = WANTNO
                self.peer.telnet_send(command(WONT, ECHO))
            elif state == WANTYES:
                self.echo_queued = True
            elif state == WANTNO:
                self.echo_queued = False

    def _do_echo(self) -> None:
        state = self.echo
        if state == NO:
            if self.echo_wanted:
                self.echo = YES
                self.peer.telnet_send(command(WILL, ECHO))
            elif not self.refused[ECHO] & _REFUSED_DO:
                self.refused[ECHO] |= _REFUSED_DO
                self.peer.telnet_send(command(WONT, ECHO))
        elif state == WANTNO:
            # An answer to our WONT that is no agreement (RFC 1143: an error); or our queued change of mind.
            self.echo = YES if self.echo_queued else NO
            self.echo_queued = False
        elif state == WANTYES:
            if self.echo_queued:
                self.echo, self.echo_queued = WANTNO, False
                self.peer.telnet_send(command(WONT, ECHO))
            else:
                self.echo = YES

    def _dont_echo(self) -> None:
        self.refused[ECHO] &= ~_REFUSED_DO
        state = self.echo
        if state == YES:
            self.echo = NO
            self.peer.telnet_send(command(WONT, ECHO))
        elif state == WANTNO:
            if self.echo_queued:
                self.echo, self.echo_queued = WANTYES, False
                self.peer.telnet_send(command(WILL, ECHO))
            else:
                self.echo = NO
        elif state == WANTYES:
            self.echo, self.echo_queued = NO, False

    @property
    def echoing(self) -> bool:
        """Whether the client has agreed that we echo (so it does not)."""
        return self.echo == YES
