"""
Telnet (chatd/telnet.py and its use in chatd/protocol.py): RFC 854 parsing, RFC 1143
negotiation answered once per change, answers as counted output, never to a tagged
connection, CR NUL as a line end, and passwords hidden at every prompt for a scripted
peer that negotiates as netkit telnet does.
"""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatd.settings import Settings
from chatd.telnet import DO, DONT, ECHO, IAC, NO, SB, SE, WANTNO, WANTYES, WILL, WONT, YES, TelnetParser, command
from helpers import Client, make_factory

TTYPE = 0x18  # RFC 1091
STATUS = 0x05  # RFC 859
NOP = 241


def _tel(verb: int, option: int) -> bytes:
    return command(verb, option)


class Recorder:
    """A TelnetPeer that records what the parser hands on and sends."""

    paused = False

    def __init__(self) -> None:
        self.data = bytearray()
        self.sent = bytearray()
        self.commands = 0

    def telnet_data(self, data: bytes) -> None:
        self.data += data

    def telnet_send(self, data: bytes) -> None:
        self.sent += data

    def telnet_command(self) -> None:
        self.commands += 1


def _world(tmp_path, **overrides):
    factory, clock = make_factory(str(tmp_path), Settings(**overrides) if overrides else None)
    return factory, clock


# -- the parser --------------------------------------------------------------------------------


def test_empty_subnegotiation_is_skipped():
    """``FF FA FF F0`` (an empty subnegotiation) is skipped; the data around it passes."""
    peer = Recorder()
    parser = TelnetParser(peer)
    parser.feed(b"a\xff\xfa\xff\xf0b")
    assert bytes(peer.data) == b"ab" and peer.sent == b"" and peer.commands == 1


def test_subnegotiation_content_and_escaped_iac():
    """SB data (with IAC IAC inside) is skipped; IAC IAC outside is one 0xFF data byte."""
    peer = Recorder()
    parser = TelnetParser(peer)
    parser.feed(b"x\xff\xfa\x18\x00ab\xff\xffc\xff\xf0y\xff\xffz")
    assert bytes(peer.data) == b"xy\xffz"


def test_refused_option_answered_once_per_change_of_request():
    """RFC 1143: DO TTYPE a hundred times gets one WONT; DONT then DO gets a second one; WILL likewise."""
    peer = Recorder()
    parser = TelnetParser(peer)
    parser.feed(_tel(DO, TTYPE) * 100)
    assert bytes(peer.sent) == _tel(WONT, TTYPE)
    parser.feed(_tel(DONT, TTYPE) * 3 + _tel(DO, TTYPE) * 3)
    assert bytes(peer.sent) == _tel(WONT, TTYPE) * 2
    peer.sent.clear()
    parser.feed(_tel(DO, STATUS) * 50 + _tel(WILL, TTYPE) * 50 + _tel(WONT, TTYPE) + _tel(WILL, TTYPE))
    assert bytes(peer.sent) == _tel(WONT, STATUS) + _tel(DONT, TTYPE) * 2
    assert peer.commands == 100 + 6 + 102  # every command is charged, answered or not


def test_echo_q_method_change_of_mind_waits_for_the_answer():
    """RFC 1143: WONT ECHO in flight, we want it back: WILL is sent after the DONT arrives, not before."""
    peer = Recorder()
    parser = TelnetParser(peer)
    parser.want_echo(True)
    assert bytes(peer.sent) == _tel(WILL, ECHO) and parser.echo == WANTYES
    parser.feed(_tel(DO, ECHO))
    assert parser.echo == YES and parser.echoing
    peer.sent.clear()
    parser.want_echo(False)
    parser.want_echo(True)  # change of mind while WONT is unanswered: queued
    assert bytes(peer.sent) == _tel(WONT, ECHO) and parser.echo == WANTNO
    parser.feed(_tel(DONT, ECHO))
    assert bytes(peer.sent) == _tel(WONT, ECHO) + _tel(WILL, ECHO) and parser.echo == WANTYES
    parser.feed(_tel(DO, ECHO) * 5)  # repeated agreement: no answers
    assert parser.echo == YES and bytes(peer.sent) == _tel(WONT, ECHO) + _tel(WILL, ECHO)


def test_unwanted_do_echo_refused_once():
    """DO ECHO when we don't want to echo: one WONT ECHO per change of the peer's request."""
    peer = Recorder()
    parser = TelnetParser(peer)
    parser.feed(_tel(DO, ECHO) * 10)
    assert bytes(peer.sent) == _tel(WONT, ECHO) and parser.echo == NO


_TELNET_BYTES = st.sampled_from([IAC, DO, DONT, WILL, WONT, SB, SE, NOP, ECHO, TTYPE, 0, 10, 13, 0x41, 0xF9])
_CHUNK = st.one_of(st.binary(max_size=40), st.lists(_TELNET_BYTES, max_size=40).map(bytes))



@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(_CHUNK, max_size=12), want=st.lists(st.booleans(), max_size=3))
def test_parser_never_raises_and_ignores_how_input_is_split(chunks, want):
    """Any bytes, split anywhere: the parser never raises, and data and answers are those of one whole read."""
    whole, split = Recorder(), Recorder()
    one, many = TelnetParser(whole), TelnetParser(split)
    for wanted in want:
        one.want_echo(wanted)
        many.want_echo(wanted)
    one.feed(b"".join(chunks))
    for chunk in chunks:
        for i in range(0, len(chunk), 3):
            many.feed(chunk[i:i + 3])
    assert bytes(split.data) == bytes(whole.data) and bytes(split.sent) == bytes(whole.sent)
    assert split.commands == whole.commands
    assert one.echo in (NO, YES, WANTNO, WANTYES)


class Pausing(Recorder):
    """A peer that pauses after some of the parser's calls (``pattern``), as a throttled connection does."""

    def __init__(self, pattern: list[bool]) -> None:
        super().__init__()
        self.pattern = pattern
        self.calls = 0

    def _maybe_pause(self) -> None:
        self.calls += 1
        if self.pattern and self.pattern[self.calls % len(self.pattern)]:
            self.paused = True

    def telnet_data(self, data: bytes) -> None:
        super().telnet_data(data)
        self._maybe_pause()

    def telnet_command(self) -> None:
        super().telnet_command()
        self._maybe_pause()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(_CHUNK, max_size=12), pattern=st.lists(st.booleans(), max_size=5))
def test_pausing_loses_and_reorders_nothing(chunks, pattern):
    """Paused anywhere (after data or a command) and resumed: the same data, answers and charges as one read."""
    whole, paused = Recorder(), Pausing(pattern)
    TelnetParser(whole).feed(b"".join(chunks))
    parser = TelnetParser(paused)
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(10_000):  # the connection reads again: what was held is parsed first
            if not paused.paused:
                break
            paused.paused = False
            parser.feed(b"")
    assert bytes(paused.data) == bytes(whole.data) and bytes(paused.sent) == bytes(whole.sent)
    assert paused.commands == whole.commands and not parser.held


def test_escaped_iac_pairs_are_handed_on_in_one_piece():
    """A run of ``IAC IAC`` (data 0xFF) between commands is one call, not one per pair."""
    peer = Recorder()
    calls = []
    peer.telnet_data = calls.append  # type: ignore[method-assign]
    TelnetParser(peer).feed(b"a" + b"\xff\xff" * 10_000 + b"b\xff\xf1c")
    assert calls == [b"a" + b"\xff" * 10_000 + b"b", b"c"]


def _lines_run(data: bytes) -> tuple[int, Recorder]:
    """Feed ``data`` to a parser; the Python lines of chatd/telnet.py it executed (its interpreted work)."""
    import chatd.telnet

    peer = Recorder()
    parser = TelnetParser(peer)
    lines = 0

    def trace(frame, event, arg):
        nonlocal lines
        if frame.f_code.co_filename != chatd.telnet.__file__:
            return None
        if event == "line":
            lines += 1
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        parser.feed(data)
    finally:
        sys.settrace(previous)
    return lines, peer


@pytest.mark.parametrize("data, want", [
    (b"\xff\xff" * 32768, b"\xff" * 32768),  # 64 KiB of escaped 0xFF
    (b"A\xff\xff" * 21845, b"A\xff" * 21845),  # escaped 0xFF between plain bytes
    (b"\xff\xfa\x18" + b"\xff\xff" * 32768 + b"\xff\xf0z", b"z"),  # IAC IAC in a subnegotiation body
    (b"\xff\xfa\x18" + b"A\xff\x01" * 21845 + b"\xff\xf0z", b"z"),  # IAC x pairs in a body
])
def test_escaped_data_and_subnegotiation_bodies_are_parsed_in_bulk(data, want):
    """64 KiB of FF FF (as data or in a subnegotiation) costs a bounded number of interpreted steps, not one per byte."""
    lines, peer = _lines_run(data)
    assert bytes(peer.data) == want
    assert lines < 100  # per pair, as before, it was over 200,000


def test_subnegotiation_body_is_charged_per_4_kib():
    """An SB body never becomes a line: it costs one command per 4 KiB, like lines of that length, however split."""
    body = b"\xff\xfa\x18" + b"\xff\xff" * 32768  # 64 KiB, unterminated
    whole, split = Recorder(), Recorder()
    TelnetParser(whole).feed(body)
    assert whole.commands == 1 + 65536 // 4096
    parser = TelnetParser(split)
    for i in range(0, len(body), 999):
        parser.feed(body[i:i + 999])
    assert split.commands == whole.commands


# -- the connection ------------------------------------------------------------------------------


def test_empty_subnegotiation_before_login_keeps_the_connection(tmp_path):
    """Before login, ``FF FA FF F0`` is skipped; the next line is answered as usual."""
    factory, clock = _world(tmp_path)
    c = Client(factory, clock)
    c.output()
    c.send(b"\xff\xfa\xff\xf0", "ping")
    assert c.output() == "pong\r\nmenu> "
    assert not c.transport.disconnecting


def test_do_echo_around_a_failed_password_is_answered_once(tmp_path):
    """``login x``, ``FF FD 01``, ``pw``, ``FF FD 01``: no error; the login fails politely; no duplicate WILL ECHO."""
    factory, clock = _world(tmp_path)
    c = Client(factory, clock)
    c.output()
    c.send("login x", _tel(DO, ECHO), "pw", _tel(DO, ECHO))
    assert c.transport.value().startswith(_tel(WILL, ECHO) + b"Password: \r\nError: ")  # refused politely
    clock.advance(1)  # any delay after a failed login
    raw = c.transport.value()
    assert raw.count(_tel(WILL, ECHO)) == 1  # before "Password:", never again
    # Back at the menu: echo is handed back to the client (its DO ECHO was honoured once).
    assert raw.endswith(_tel(WONT, ECHO) + b"menu> ")
    c.output()
    c.send(_tel(DONT, ECHO), "ping")
    assert c.output() == "pong\r\nmenu> "


def test_negotiation_answers_are_counted_output(tmp_path):
    """Every telnet answer goes through deliver (the --max-outbound accounting), none straight to the transport."""
    factory, clock = _world(tmp_path)
    c = Client(factory, clock)
    c.output()
    delivered: list[bytes] = []
    real = c.protocol.deliver

    def counting(data: bytes) -> None:
        delivered.append(data)
        real(data)

    c.protocol.deliver = counting
    c.send(_tel(DO, TTYPE) + _tel(DO, STATUS) + _tel(WILL, TTYPE))
    assert c.transport.value() == _tel(WONT, TTYPE) + _tel(WONT, STATUS) + _tel(DONT, TTYPE)
    assert b"".join(delivered) == c.transport.value()


def test_repeated_do_gets_one_answer(tmp_path):
    """``FF FD 18`` and ``FF FD 05`` sent over and over: one WONT each, nothing more."""
    factory, clock = _world(tmp_path, flood_rate=0)
    c = Client(factory, clock)
    c.output()
    for _ in range(100):
        c.send((_tel(DO, TTYPE) + _tel(DO, STATUS)) * 10)
    assert c.transport.value() == _tel(WONT, TTYPE) + _tel(WONT, STATUS)


def test_tagged_connection_never_gets_telnet_bytes(tmp_path):
    """
    A telnet program that sent /client (it negotiated on connect), in a room, ``x FF FB 01 y``: the room
    sees ``xy``; every line to the sender starts with a code, no telnet answer.
    """
    factory, clock = _world(tmp_path)
    tim = Client(factory, clock)
    tim.send(_tel(DO, TTYPE))  # as telnet programs do on connect
    tim.send("/client telnet 1.0")
    tim.register("tim")
    tim.send("public")
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("public")
    tim.output(), ann.output()
    tim.send(b"x\xff\xfb\x01y\r\n", _tel(DO, TTYPE) + _tel(DO, ECHO) + b"z\r\n")
    tim.send("/who")
    raw = tim.transport.value()
    assert b"\xff" not in raw
    assert all(re.match(r"\d\d\d? ", line) for line in raw.decode().split("\r\n") if line)
    seen = ann.output()
    assert "tim: xy" in seen and "tim: z" in seen


def test_client_that_sent_no_telnet_before_its_hello_is_binary_clean(tmp_path):
    """
    A client (tagged before any telnet command) may send frames with any byte, so 0xFF there is data: the
    line ``x FF FB 01 y`` reaches the room cleaned (invalid UTF-8 shown as U+FFFD, the control removed), and
    nothing is answered.
    """
    factory, clock = _world(tmp_path)
    tim = Client(factory, clock, tagged=True)
    tim.register("tim")
    tim.send("public")
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("public")
    tim.output(), ann.output()
    tim.send(b"x\xff\xfb\x01y\r\n")
    assert b"\xff" not in tim.transport.value()
    assert "tim: x\ufffd\ufffdy\r\n" in ann.output()


def test_tagged_telnet_login_gets_no_echo_negotiation(tmp_path):
    """A tagged connection that sent telnet commands is never sent WILL/WONT ECHO around its password."""
    factory, clock = _world(tmp_path)
    Client(factory, clock).register("kit")
    c = Client(factory, clock)
    c.send(_tel(DO, TTYPE), "/client telnet 1.0", "login kit", _tel(DO, ECHO), "secret1")
    raw = c.transport.value()
    tagged = raw[raw.index(b"00 Tagged mode on"):]  # before /client it was a plain telnet connection
    assert b"\xff" not in tagged and b"00 Logged in as kit." in tagged


# -- line ends (RFC 854: CR NUL is a bare CR; telnet's Enter) --------------------------------------


def _said(tmp_path, *chunks: bytes) -> list[str]:
    factory, clock = _world(tmp_path)
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("public")
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("public")
    ann.output()
    for chunk in chunks:
        bob.send(chunk)
    return re.findall(r"bob: (.*?)\r\n", ann.output())


def test_cr_nul_ends_a_line(tmp_path):
    """``a CR NUL`` then ``b CR LF`` are two lines ``a`` and ``b``."""
    assert _said(tmp_path, b"a\r\0", b"b\r\n") == ["a", "b"]


def test_cr_nul_cr_lf_and_lf_all_end_lines(tmp_path):
    """Mixed line ends in one read, and a CR NUL split between reads, also after telnet commands."""
    assert _said(tmp_path, b"one\r\0two\r\nthree\nfour\r", b"\0five\xff\xf1six\r", b"\xff\xf1\0") == [
        "one", "two", "three", "four", "five" + "six"]


# -- passwords are hidden in a real telnet -----------------------------------------------------------


class NetkitTelnet:
    """
    A scripted telnet user: it negotiates as netkit telnet does (WILL ECHO is
    answered DO ECHO and turns local echo off, WONT ECHO is answered DONT ECHO
    and turns it back on, each only on a change; any other WILL gets DONT, any
    DO gets WONT), echoes what the user types unless the server echoes, and
    records, at each password prompt, whether a WILL ECHO it accepted was in force.
    """

    PROMPTS = ("Choose a password", "Repeat the password:", "Password:")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.server_echoes = False
        self.screen = bytearray()
        self.at_prompts: list[tuple[str, bool]] = []

    def read(self) -> None:
        """Everything the server has sent, answering negotiation at once (as telnet does)."""
        for _ in range(20):
            transport = self.client.transport
            self.client.clock.advance(0)
            data = transport.value()
            transport.clear()
            if not data:
                return
            i = 0
            while i < len(data):
                if data[i] == IAC and i + 2 < len(data) + 0 and data[i + 1] in (WILL, WONT, DO, DONT):
                    self._negotiate(data[i + 1], data[i + 2])
                    i += 3
                    continue
                j = data.find(b"\xff", i)
                j = len(data) if j < 0 else j
                text = data[i:j].decode()
                for prompt in self.PROMPTS:
                    if prompt in text:
                        self.at_prompts.append((prompt, self.server_echoes))
                self.screen += data[i:j]
                i = j

    def _negotiate(self, verb: int, option: int) -> None:
        answer = None
        if option == ECHO and verb == WILL:
            if not self.server_echoes:
                self.server_echoes = True
                answer = _tel(DO, ECHO)
        elif option == ECHO and verb == WONT:
            if self.server_echoes:
                self.server_echoes = False
                answer = _tel(DONT, ECHO)
        elif verb == WILL:
            answer = _tel(DONT, option)
        elif verb == DO:
            answer = _tel(WONT, option)
        if answer is not None:
            self.client.protocol.dataReceived(answer)

    def type(self, line: str) -> None:
        """The user types ``line`` and Enter (echoed locally unless the server echoes)."""
        self.read()
        if not self.server_echoes:
            self.screen += line.encode() + b"\r\n"
        self.client.protocol.dataReceived(line.encode() + b"\r\n")
        self.read()


def test_netkit_telnet_never_shows_a_password(tmp_path):
    """
    Registration (both prompts), a mismatch and a retry, an empty line at the
    prompt, then a login elsewhere: at every password prompt the peer had
    accepted WILL ECHO, no password is ever on its screen, and echo is back
    at the menu.
    """
    factory, clock = _world(tmp_path)
    kim = NetkitTelnet(Client(factory, clock))
    kim.type("register kim")
    kim.type("first-pass1")
    kim.type("other-pass2")  # mismatch: back to the menu
    assert not kim.server_echoes
    kim.type("register kim")
    kim.type("")  # repeats the prompt, still hidden
    kim.type("real-pass3")
    kim.type("real-pass3")
    assert b"Registered and logged in as kim." in kim.screen
    assert not kim.server_echoes  # the menu: what the user types is shown again
    again = NetkitTelnet(Client(factory, clock))
    again.type("login kim")
    again.type("real-pass3")
    assert b"Logged in as kim." in again.screen
    kim.read()
    prompts = kim.at_prompts + again.at_prompts
    assert [p for p, _ in prompts] == [
        "Choose a password", "Repeat the password:", "Choose a password", "Choose a password",
        "Repeat the password:", "Password:"]
    assert all(hidden for _, hidden in prompts)
    for screen in (kim.screen, again.screen):
        for password in (b"first-pass1", b"other-pass2", b"real-pass3"):
            assert password not in screen
    assert b"register kim" in kim.screen and b"login kim" in again.screen  # other input is echoed
