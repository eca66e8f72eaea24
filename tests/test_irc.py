"""
The IRC front-end (chatd.frontends.irc, issue 16): registration (guests,
PASS, SASL PLAIN), channels as rooms shared with telnet users, hostile input,
rendering once per batch; through StringTransport and a Clock, and once
against a real daemon over raw sockets.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.core.events import EventKind, RoomEvent
from chatd.frontends.irc import IrcFactory, IrcRenderer
from chatd.frontends.irc_wire import LineSplitter, line, parse, split_text
from chatd.limits import FLOOD_PAUSED_LIMIT, FLOOD_WINDOW
from chatd.moderation import Sanction
from chatd.settings import Settings
from chatd.twisted_internals import unsent_bytes
from daemon import Conn, Daemon, free_port
from helpers import Client, make_factory


class IrcClient:
    """An IRC client's connection on a StringTransport."""

    def __init__(self, irc: IrcFactory, clock: Any, port: int = 40000, host: str = "10.0.0.7",
                 lenient: bool = False) -> None:
        self.clock = clock
        # (lenient: pausing and resuming a closing connection is ignored, as on a real TCP connection)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port), lenient=lenient)
        self.protocol = irc.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, *lines: str | bytes) -> None:
        for text in lines:
            self.protocol.dataReceived(text if isinstance(text, bytes) else text.encode() + b"\r\n")
        self.clock.advance(0)

    def lines(self) -> list[str]:
        """Every line received since the last call."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        assert data == b"" or data.endswith(b"\r\n")
        return data.decode("utf-8", "replace").split("\r\n")[:-1]

    def register(self, nick: str, *before: str) -> list[str]:
        self.send(*before, f"NICK {nick}", f"USER {nick} 0 * :Real Name")
        return self.lines()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    return factory, clock, IrcFactory(factory, guests=True)


@pytest.fixture
def members_only(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    return factory, clock, IrcFactory(factory, guests=False)


def codes(lines: list[str]) -> list[str]:
    """The numerics among ``lines``, in order."""
    return [text.split()[1] for text in lines if text.startswith(":chatd ") and text.split()[1].isdigit()]


def test_a_guest_registers_and_gets_welcome_isupport_lusers_and_motd(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.send("CAP LS 302")
    assert alice.lines() == [":chatd CAP * LS :sasl=PLAIN server-time message-tags echo-message account-tag "
                             "draft/account-registration=before-connect batch labeled-response away-notify draft/chathistory "
                             "multi-prefix userhost-in-names"]
    got = alice.register("alice")
    assert got == []  # CAP negotiation is open: registration waits for CAP END
    alice.send("CAP END")
    got = alice.lines()
    assert codes(got)[:5] == ["001", "002", "003", "004", "005"] and codes(got)[-1] == "376"
    assert got[0] == ":chatd 001 alice :Welcome to the chatd IRC network, alice"
    tokens = " ".join(text for text in got if " 005 " in text)
    for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "UTF8ONLY", "NICKLEN=24", "CHANNELLEN=33", "PREFIX=(ov)@+",
                  "NETWORK=chatd", "LINELEN=512", "TOPICLEN=300", "CHANMODES=b,k,l,imnst"):
        assert f" {token} " in tokens
    assert {"251", "255", "375", "372"} <= set(codes(got))
    assert factory.online["alice"] is alice.protocol


def test_without_guests_an_unauthenticated_client_is_told_to_log_in(members_only):
    factory, clock, irc = members_only
    anon = IrcClient(irc, clock)
    got = anon.register("alice")
    assert any("NOTICE alice :This server needs an account" in text for text in got)
    assert codes(got) == ["451"]
    anon.send("JOIN #public")
    assert codes(anon.lines()) == ["451"]
    assert "alice" not in factory.online and not anon.closed


def test_pass_account_password_logs_in_and_the_nick_becomes_the_account(members_only):
    factory, clock, irc = members_only
    Client(factory, clock).register("ann")
    ann = IrcClient(irc, clock)
    got = ann.register("whatever", "PASS ann:secret1")
    assert got[0] == ":whatever!whatever@chatd NICK ann"
    assert got[1].startswith(":chatd 001 ann ")
    assert factory.online["ann"] is ann.protocol
    other = IrcClient(irc, clock, port=40001)
    got = other.register("ann", "PASS secret1")  # PASS password with NICK the account: a second login replaces
    assert codes(got)[0] == "001"
    assert factory.online["ann"] is other.protocol
    assert ann.closed and "ERROR :You logged in from another connection." in ann.lines()


def test_a_wrong_pass_gets_464_and_the_connection_closes(members_only):
    factory, clock, irc = members_only
    Client(factory, clock).register("ann")
    ann = IrcClient(irc, clock)
    got = ann.register("ann", "PASS ann:wrong-password")
    clock.advance(5)
    got += ann.lines()
    assert "464" in codes(got) and ann.closed
    assert "ann" not in factory.online or factory.online["ann"] is not ann.protocol


def test_lines_queued_before_a_login_closed_the_connection_are_not_run(tmp_path):
    # Pipelined SASL attempts: the last failure allowed (--max-login-failures) closes the connection while
    # the next attempt waits in the queue; on a real TCP connection it was then run, and logged in.
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_login_failures=2))
    irc = IrcFactory(factory, guests=False)
    Client(factory, clock).register("ann")
    ann = IrcClient(irc, clock, lenient=True)
    bad = base64.b64encode(b"\0ann\0not-the-password").decode()
    good = base64.b64encode(b"ann\0ann\0secret1").decode()
    ann.send("CAP LS 302", "NICK ann", "USER u 0 * :x", "CAP REQ :sasl",
             "AUTHENTICATE PLAIN", f"AUTHENTICATE {bad}", "AUTHENTICATE PLAIN", f"AUTHENTICATE {bad}",
             "AUTHENTICATE PLAIN", f"AUTHENTICATE {good}", "PING :still-there")
    clock.advance(60)
    got = ann.lines()
    assert ann.closed and factory.online.get("ann") is not ann.protocol
    assert "900" not in codes(got) and "903" not in codes(got) and not any("still-there" in text for text in got)


def test_sasl_plain_logs_in_and_a_wrong_password_gets_904(members_only):
    factory, clock, irc = members_only
    Client(factory, clock).register("ann")
    ann = IrcClient(irc, clock)
    ann.send("CAP LS 302", "NICK ann", "USER u 0 * :x", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    assert ann.lines()[-2:] == [":chatd CAP ann ACK :sasl", "AUTHENTICATE +"]
    bad = base64.b64encode(b"\0ann\0not-the-password").decode()
    ann.send(f"AUTHENTICATE {bad}")
    clock.advance(5)
    assert "904" in codes(ann.lines())
    ann.send("AUTHENTICATE PLAIN")
    ann.lines()
    good = base64.b64encode(b"ann\0ann\0secret1").decode()
    ann.send(f"AUTHENTICATE {good}")
    got = ann.lines()
    assert codes(got) == ["900", "903"]
    ann.send("CAP END")
    assert codes(ann.lines())[0] == "001"
    assert factory.online["ann"] is ann.protocol


def test_a_guest_cannot_take_an_account_name_nor_an_online_nick_and_holds_its_own(world):
    factory, clock, irc = world
    bob = Client(factory, clock)
    bob.register("bob")
    guest = IrcClient(irc, clock)
    assert codes(guest.register("BOB")) == ["433"]
    guest.send("NICK bad!nick")
    assert codes(guest.lines()) == ["432"]
    guest.send("NICK carol")
    assert codes(guest.lines())[0] == "001"
    second = IrcClient(irc, clock, port=40001)
    assert codes(second.register("Carol")) == ["433"]
    newcomer = Client(factory, clock)
    assert "The name carol is taken" in newcomer.register("carol")
    guest.send("QUIT :bye")
    assert guest.closed and "carol" not in factory.online
    assert "Registered and logged in as carol" in Client(factory, clock).register("carol")


def telnet_and_irc_in_public(world: Any, *before: str) -> tuple[Client, IrcClient]:
    """bob on the line front-end and the guest alice on IRC (sending ``before`` first), both in the public room."""
    factory, clock, irc = world
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    alice = IrcClient(irc, clock)
    alice.register("alice", *before)
    alice.send("JOIN #public")
    return bob, alice


def test_irc_and_telnet_users_chat_in_a_room(world):
    bob, alice = telnet_and_irc_in_public(world)
    got = alice.lines()
    assert got[0] == ":alice!alice@chatd JOIN #public"
    assert got[1:] == [":chatd 353 alice = #public :bob alice", ":chatd 366 alice #public :End of /NAMES list"]
    assert "alice joined public" in bob.output()
    alice.send("PRIVMSG #public :hello \x1b[31mbob")
    assert alice.lines() == []  # no echo without echo-message
    assert "alice: hello bob" in bob.output()
    bob.send("hi alice")
    bob.send("/me waves")
    assert alice.lines() == [":bob!bob@chatd PRIVMSG #public :hi alice",
                             ":bob!bob@chatd PRIVMSG #public :\x01ACTION waves\x01"]
    alice.send("PRIVMSG #public :\x01ACTION nods\x01")
    assert "* alice nods" in bob.output()
    alice.send("PRIVMSG bob :psst")
    assert "psst" in bob.output()
    bob.send("/msg alice back at you")
    assert alice.lines() == [":bob!bob@chatd PRIVMSG alice :back at you"]
    alice.send("PART #public :see you")
    assert alice.lines() == [":alice!alice@chatd PART #public :see you"]
    assert "alice left" in bob.output()


def test_one_connection_is_in_several_channels_and_a_quit_leaves_them_all(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    alice.send("JOIN #lab,#public")
    got = alice.lines()
    assert ":alice!alice@chatd JOIN #lab" in got and ":alice!alice@chatd JOIN #public" in got
    assert factory.rooms["lab"].owner == "alice"
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    bob.send("JOIN #lab", "JOIN #public")
    bob.lines()
    alice.lines()
    bob.send("PRIVMSG #lab,#public :both")
    assert alice.lines() == [":bob!bob@chatd PRIVMSG #lab :both", ":bob!bob@chatd PRIVMSG #public :both"]
    alice.send("QUIT :gone")
    assert alice.lines() == ["ERROR :Closing Link: gone"] and alice.closed
    got = bob.lines()
    assert got.count(":alice!alice@chatd QUIT :Quit: gone") == 1  # one QUIT for the two rooms they shared
    # A guest's rooms go with it, as a deleted account's do.
    assert "lab" not in factory.rooms and ":bob!bob@chatd PART #lab :room lab was deleted by alice" in got


def test_echo_message_returns_the_clients_own_lines(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :echo-message server-time", "CAP END")
    alice.send("JOIN #public")
    alice.lines()
    alice.send("PRIVMSG #public :mine")
    got = alice.lines()
    assert len(got) == 1 and re.fullmatch(r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                                          r":alice!alice@chatd PRIVMSG #public :mine", got[0])


def test_errors_get_numerics_never_tracebacks(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.send("JOIN #public")
    assert codes(alice.lines()) == ["451"]
    alice.register("alice")
    alice.send("FROB x", "JOIN", "PRIVMSG #public", "PRIVMSG #nowhere :x", "JOIN #bad!name", "PART #public",
               "PRIVMSG nobody :x", "PING :tok", "USER a b c d")
    got = alice.lines()
    assert codes(got) == ["421", "461", "412", "403", "403", "442", "401", "462"]
    assert ":chatd PONG chatd tok" in got


def test_hostile_input_is_cleaned_bounded_and_never_relayed_raw(world):
    bob, alice = telnet_and_irc_in_public(world)
    alice.lines()
    bob.output()
    alice.send(b"PRIVMSG #public :a\x00b\rPRIVMSG #public :c\r\n")  # CR ends a line; NUL is removed
    assert re.findall(r"alice: (\S+)", bob.output()) == ["ab", "c"]
    alice.send(b"PRIVMSG #public :\xff\xfebad utf8\r\n")
    assert "alice: \ufffd\ufffdbad utf8" in bob.output()
    alice.send("PRIVMSG #public :" + "x" * 600)
    assert codes(alice.lines()) == ["417"] and "xxx" not in bob.output()
    alice.send("@" + ";".join(f"k{i}=v" for i in range(2000)) + " PRIVMSG #public :tags")
    assert codes(alice.lines()) == ["417"]
    alice.send(b"y" * 100_000)  # no line end: bounded, reported once, dropped up to its end
    assert len(alice.protocol._lines._buffer) <= 512 + 8191
    alice.send(b"y" * 100_000 + b"\r\nPING :after\r\n")
    assert alice.lines() == [":chatd 417 alice :Input line was too long", ":chatd PONG chatd after"]


def test_the_wire_never_sends_a_line_end_inside_a_parameter():
    data = line("a\r\nb!u@h", "PRIVMSG", "#x y", "text\r\nQUIT\0")
    assert data == b":a__b!u@h PRIVMSG #x_y :text  QUIT \r\n"
    assert parse(b"@a=b\\sc;d :src privmsg #x :hi there") == ({"a": "b c", "d": ""}, "PRIVMSG", ["#x", "hi there"])
    assert parse(b"   ") is None
    assert parse(b"PING  a  b") == ({}, "PING", ["a", "b"])
    splitter = LineSplitter()
    assert list(splitter.feed(b"A\r\nB\nC\rD")) == [b"A", b"B", b"C"]
    assert list(splitter.feed(b"\n")) == [b"D"]
    pieces = split_text("é" * 400, 101)
    assert "".join(pieces) == "é" * 400 and all(len(p.encode()) <= 101 for p in pieces)


def test_a_batch_is_rendered_once_for_every_irc_member_with_the_same_capabilities(world, monkeypatch):
    factory, clock, irc = world
    calls = []
    real = IrcRenderer.render
    monkeypatch.setattr(IrcRenderer, "render", lambda self, events: calls.append(len(events)) or real(self, events))
    clients = []
    for index in range(5):
        client = IrcClient(irc, clock, port=41000 + index)
        client.register(f"user{index}")
        client.send("JOIN #public")
        clients.append(client)
    for client in clients:
        client.lines()
    calls.clear()
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    bob.send("one", "two")
    assert calls == [1, 2]  # bob's join; then his two lines in one batch: one rendering each for all five
    for client in clients:
        assert client.lines()[-2:] == [":bob!bob@chatd PRIVMSG #public :one", ":bob!bob@chatd PRIVMSG #public :two"]


def test_a_long_room_line_becomes_several_privmsgs_within_512_bytes():
    event = RoomEvent("public", 1, 0.0, "bob", EventKind.SAY, "word " * 300)
    lines = IrcRenderer().render([event]).data.split(b"\r\n")[:-1]
    assert len(lines) > 1 and all(len(text) + 2 <= 512 for text in lines)
    assert " ".join(text.split(b" :", 1)[1].decode() for text in lines).split() == ["word"] * 300


def test_each_piece_of_a_long_line_has_its_own_msgid_and_a_pieces_msgid_names_its_line(world):
    """Issue 16 (tester16u): the pieces carried one msgid twice; IRCv3 message-ids: a msgid is unique."""
    event = RoomEvent("public", 7, 0.0, "bob", EventKind.SAY, "word " * 300)
    lines = IrcRenderer(frozenset({"message-tags"})).render([event]).data.decode().split("\r\n")[:-1]
    assert [text.split(" ", 1)[0] for text in lines] == ["@msgid=public-7", "@msgid=public-7.2", "@msgid=public-7.3",
                                                        "@msgid=public-7.4"]
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :batch message-tags draft/chathistory", "CAP END")
    alice.send("JOIN #public", "PRIVMSG #public :first")
    alice.lines()
    alice.send("CHATHISTORY AROUND #public msgid=public-2.2 10")  # (a piece of public-2 names public-2)
    got = alice.lines()
    assert not any(" FAIL " in text or text.startswith("FAIL") for text in got)
    assert any(text.endswith("PRIVMSG #public :first") for text in got), got


def test_lines_pay_the_flood_allowance_and_reading_pauses_over_it(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=4))
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    alice = IrcClient(IrcFactory(factory, guests=True), clock)
    alice.register("alice")  # from now on the account's (the guest name's) allowance of 4
    alice.send("JOIN #public", *(f"PRIVMSG #public :n{i}" for i in range(8)))
    assert re.findall(r"alice: (n\d)", bob.output()) == ["n0", "n1", "n2", "n3"]  # n3 ran over: n4 waits
    assert any("you are sending too fast" in text for text in alice.lines())
    assert alice.transport.producerState == "paused"
    for _ in range(6):
        clock.advance(1)
    assert re.findall(r"alice: (n\d)", bob.output()) == ["n4", "n5", "n6", "n7"]
    assert alice.transport.producerState == "producing"


def test_an_unregistered_connection_is_closed_at_the_login_timeout(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, login_timeout=30))
    irc = IrcFactory(factory, guests=False)
    idle = IrcClient(irc, clock)
    idle.send("NICK someone", "USER u 0 * :x")
    clock.advance(31)
    assert "ERROR :you did not log in within 30 seconds; goodbye." in idle.lines() and idle.closed
    guest = IrcClient(IrcFactory(factory, guests=True), clock, port=40001)
    guest.register("guest1")
    clock.advance(31)
    assert not guest.closed


def test_a_client_that_stops_reading_is_cut_off_at_max_outbound(tmp_path):
    from test_web import Unread

    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_outbound=1 << 20))
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    stuck = Unread()
    protocol = IrcFactory(factory, guests=True).buildProtocol(stuck.getPeer())
    protocol.makeConnection(stuck)
    protocol.dataReceived(b"NICK ann\r\nUSER a 0 * :a\r\nJOIN #public\r\n")
    assert "ann" in factory.online and not stuck.aborted
    for _ in range(300):
        bob.send("x" * 4000)
    assert stuck.aborted and "ann" not in factory.online
    # (fix16a) output that would pass the limit is not queued, and the row says so, with the room.
    assert (1 << 20) - 20_000 < unsent_bytes(stuck) <= 1 << 20
    factory.store.flush_events()
    rows = [text.rstrip("\r\n").split(",") for text in open(tmp_path / "log.csv", encoding="utf-8")
            if ",sendq_exceeded," in text]
    assert len(rows) == 1 and rows[0][2:4] == ["ann", "public"]
    fields = dict(item.split("=") for item in rows[0][4].split("&"))
    assert int(fields["queued"]) == unsent_bytes(stuck) and int(fields["refused"]) > 0
    assert int(fields["queued"]) + int(fields["refused"]) > 1 << 20


def test_listen_irc_and_irc_guests_options():
    from twisted.python.usage import UsageError

    from chatd.tap import Options

    options = Options()
    options.parseOptions(["--listen-irc", "tcp:6667", "--listen-irc", "ssl:6697:privateKey=k:certKey=c",
                          "--irc-guests"])
    assert options["listen-irc"] == ["tcp:6667", "ssl:6697:privateKey=k:certKey=c"] and options["irc-guests"]
    assert Options()["irc-guests"] is False and Options()["listen-irc"] == []
    assert Options()["irc-server-name"] == "chatd"
    options = Options()
    options.parseOptions(["--irc-server-name", "My.Little.Server"])
    assert options["irc-server-name"] == "My.Little.Server"
    with pytest.raises(UsageError, match="--irc-server-name: 'two words' is not a name"):
        Options().parseOptions(["--irc-server-name", "two words"])


def test_a_real_irc_socket_over_tls_chats_with_a_telnet_user(tmp_path):
    from test_tls import TlsConn, make_certificate

    key, cert = make_certificate(str(tmp_path))
    irc_port, tls_port = free_port(), free_port()
    d = Daemon(str(tmp_path / "data"), "--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1", "--irc-guests",
               "--listen-irc", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}").start()
    try:
        bob = Conn(d.port)
        bob.register("bob")
        bob.enter("bob", "public")
        alice = TlsConn(tls_port, cert)
        alice.send("NICK alice", "USER a 0 * :Alice")
        alice.expect(r" 376 alice ")
        alice.send("JOIN #public")
        alice.expect(r" 366 alice #public ")
        bob.expect(r"alice joined public")
        alice.send("PRIVMSG #public :hello from irc")
        bob.expect(r"alice: hello from irc")
        bob.send("hello from telnet")
        alice.expect(r":bob!bob@chatd PRIVMSG #public :hello from telnet\r\n")
        plain = Conn(irc_port)
        plain.send("NICK carol", "USER c 0 * :Carol", "JOIN #public", "PRIVMSG #public :and over tcp")
        alice.expect(r":carol!c@chatd PRIVMSG #public :and over tcp\r\n")
        alice.send("QUIT :bye")
        alice.expect(r"ERROR :Closing Link: bye")
        bob.expect(r"alice left")
        assert d.unhandled_errors() == []
    finally:
        d.stop()


# -- slice 2: the rest of the commands ---------------------------------------------------------------


def two_in_lab(world: Any) -> tuple[IrcClient, IrcClient]:
    """The guests alice (who creates #lab: its owner) and bob, both in #lab, their output read."""
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    alice.send("JOIN #lab")
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    bob.send("JOIN #lab")
    alice.lines()
    bob.lines()
    return alice, bob


def test_topic_is_shown_and_set_by_operators_only(world):
    alice, bob = two_in_lab(world)
    bob.send("TOPIC #lab")
    assert bob.lines() == [":chatd 331 bob #lab :No topic is set"]
    bob.send("TOPIC #lab :mine now")
    assert codes(bob.lines()) == ["482"]
    alice.send("TOPIC #lab :plans for today")
    assert alice.lines() == [":alice!alice@chatd TOPIC #lab :plans for today"]
    assert bob.lines() == [":alice!alice@chatd TOPIC #lab :plans for today"]
    bob.send("TOPIC #lab", "TOPIC #nowhere")
    assert bob.lines() == [":chatd 332 bob #lab :plans for today", ":chatd 333 bob #lab alice 1790000000",
                           ":chatd 403 bob #nowhere :No such channel"]  # (333: who set it, when; RFC 2812 is silent)
    carol = IrcClient(world[2], world[1], port=40002)
    carol.register("carol")
    carol.send("JOIN #lab")
    assert carol.lines()[1:3] == [":chatd 332 carol #lab :plans for today", ":chatd 333 carol #lab alice 1790000000"]
    bob.lines()
    alice.send("TOPIC #lab :")
    assert bob.lines() == [":alice!alice@chatd TOPIC #lab :"]
    assert world[0].rooms["lab"].authority.topic == ""


def test_names_list_who_and_whois(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("join public")
    bob.send("NAMES #lab", "NAMES #nowhere")
    assert bob.lines() == [":chatd 353 bob = #lab :@alice bob", ":chatd 366 bob #lab :End of /NAMES list",
                           ":chatd 366 bob #nowhere :End of /NAMES list"]
    bob.send("LIST")
    got = bob.lines()
    assert got[0] == ":chatd 321 bob Channel :Users  Name" and got[-1] == ":chatd 323 bob :End of /LIST"
    assert set(got[1:-1]) == {":chatd 322 bob #public 1 :", ":chatd 322 bob #lab 2 :"}
    bob.send("WHO #lab")
    assert bob.lines() == [":chatd 352 bob #lab alice chatd chatd alice H@ :0 Real Name",
                           ":chatd 352 bob #lab bob chatd chatd bob H :0 Real Name",
                           ":chatd 315 bob #lab :End of WHO list"]
    bob.send("WHO CAR*")
    assert bob.lines() == [":chatd 352 bob * carol chatd chatd carol H :0 chatd user",
                           ":chatd 315 bob CAR* :End of WHO list"]
    alice.send("AWAY :lunch")
    assert alice.lines() == [":chatd 306 alice :You have been marked as being away"]
    bob.send("WHOIS alice", "WHOIS carol", "WHOIS nobody")
    assert bob.lines() == [
        ":chatd 311 bob alice alice chatd * :Real Name", ":chatd 319 bob alice :@#lab",
        ":chatd 312 bob alice chatd :chatd", ":chatd 301 bob alice :lunch", ":chatd 318 bob alice :End of /WHOIS list",
        ":chatd 311 bob carol carol chatd * :chatd user", ":chatd 319 bob carol :#public",
        ":chatd 312 bob carol chatd :chatd", ":chatd 330 bob carol carol :is logged in as",
        ":chatd 318 bob carol :End of /WHOIS list",
        ":chatd 401 bob nobody :No such nick/channel", ":chatd 318 bob nobody :End of /WHOIS list"]
    bob.send("WHO alice")
    assert bob.lines()[0] == ":chatd 352 bob * alice chatd chatd alice G :0 Real Name"
    bob.send("PRIVMSG alice :are you there?")
    assert bob.lines() == [":chatd 301 bob alice :lunch"]
    alice.send("AWAY")
    assert alice.lines()[-1] == ":chatd 305 alice :You are no longer marked as being away"
    bob.send("ISON alice nobody CAROL", "USERHOST alice carol")
    assert bob.lines() == [":chatd 303 bob :alice carol", ":chatd 302 bob :alice=+alice@chatd carol=+carol@chatd"]


def test_kick_invite_and_channel_modes_map_onto_chatd_moderation(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    bob.send("KICK #lab alice :no")
    assert codes(bob.lines()) == ["482"]
    alice.send("MODE #lab")
    assert alice.lines() == [":chatd 324 alice #lab +nt", ":chatd 329 alice #lab 1790000000"]
    alice.send("MODE #lab +i")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +i"]
    assert bob.lines() == [":alice!alice@chatd MODE #lab +i"]
    alice.send("KICK #lab bob :out you go")
    assert alice.lines() == [":alice!alice@chatd KICK #lab bob :out you go"]
    assert bob.lines() == [":alice!alice@chatd KICK #lab bob :out you go"]
    assert "lab" not in bob.protocol.channels
    bob.send("JOIN #lab")
    assert codes(bob.lines()) == ["473"]
    alice.send("INVITE bob #lab")
    assert alice.lines()[-1] == ":chatd 341 alice bob #lab"
    assert ":alice!alice@chatd INVITE bob #lab" in bob.lines()
    bob.send("JOIN #lab")
    assert bob.lines()[0] == ":bob!bob@chatd JOIN #lab"
    alice.lines()
    alice.send("MODE #lab +b bob!*@*")
    # Every member sees the banned member go: a KICK by the operator (as IRC servers that enforce bans do).
    assert alice.lines() == [":alice!alice@chatd MODE #lab +b bob!*@*", ":alice!alice@chatd KICK #lab bob :Banned"]
    assert bob.lines() == [":alice!alice@chatd MODE #lab +b bob!*@*", ":alice!alice@chatd KICK #lab bob :Banned"]
    assert "bob" not in factory.rooms["lab"].member_names()
    alice.send("MODE #lab +b")
    assert alice.lines() == [":chatd 367 alice #lab bob!*@* alice 1790000000",  # (who, when: RFC 2812 5.1 / modern)
                             ":chatd 368 alice #lab :End of channel ban list"]
    bob.send("JOIN #lab")
    assert codes(bob.lines()) == ["474"]
    alice.send("MODE #lab -b bob", "MODE #lab +x", "MODE #lab -t")
    assert alice.lines() == [":alice!alice@chatd MODE #lab -b bob!*@*",
                             ":chatd 472 alice x :is not a mode chatd knows for #lab", ":alice!alice@chatd MODE #lab -t"]
    bob.send("JOIN #lab")
    alice.lines()
    alice.send("MODE #lab +o bob")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +o bob"]  # a guest is one in memory, until it goes
    assert "bob" in factory.rooms["lab"].authority.operators
    bob.send("QUIT")
    assert "bob" not in factory.rooms["lab"].authority.operators
    assert alice.lines() == [":bob!bob@chatd QUIT :Quit"]
    alice.send("MODE alice", "MODE alice +i", "MODE bob")
    assert alice.lines() == [":chatd 221 alice +", ":alice!alice@chatd MODE alice +i",
                             ":chatd 401 alice bob :No such nick/channel"]  # (bob quit)


def test_a_secret_channel_is_plus_s_and_hidden_from_outsiders(world):
    """RFC 2812 §3.2.5/3.2.6 and §5.1 (353 '@'): MODE +s is chatd's /secret; LIST, NAMES, WHO, WHOIS hide it."""
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    bob.send("MODE #lab +s")
    assert codes(bob.lines()) == ["482"]
    alice.send("MODE #lab +s", "MODE #lab", "NAMES #lab")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +s", ":chatd 324 alice #lab +nst",
                             ":chatd 329 alice #lab 1790000000", ":chatd 353 alice @ #lab :@alice bob",
                             ":chatd 366 alice #lab :End of /NAMES list"]
    assert bob.lines() == [":alice!alice@chatd MODE #lab +s"]
    assert factory.rooms["lab"].authority.secret
    carol = IrcClient(irc, clock, port=40002)
    carol.register("carol")
    carol.send("LIST", "NAMES #lab", "WHO #lab", "WHOIS alice")
    got = carol.lines()
    assert not any("#lab" in text for text in got if " 366 " not in text and " 315 " not in text), got
    assert ":chatd 366 carol #lab :End of /NAMES list" in got and ":chatd 315 carol #lab :End of WHO list" in got
    bob.send("LIST")
    assert ":chatd 322 bob #lab 2 :" in bob.lines()
    alice.send("MODE #lab -s+i")
    assert alice.lines() == [":alice!alice@chatd MODE #lab -s", ":alice!alice@chatd MODE #lab +i"]
    alice.send("NAMES #lab")
    assert alice.lines()[0] == ":chatd 353 alice * #lab :@alice bob"


def test_key_and_member_limit_are_plus_k_and_plus_l(world):
    """RFC 2812 §3.2.3 (+k, +l), 471/475 on JOIN, 696 for a bad value (Modern); the key in 324 to members only."""
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    alice.send("MODE #lab +k :has space", "MODE #lab +l 0", "MODE #lab +kl beer 2", "MODE #lab")
    assert alice.lines() == [":chatd 696 alice #lab k * :a key is 1 to 23 ASCII letters, digits or signs, "
                             "without spaces or commas.",
                             ":chatd 696 alice #lab l 0 :a member limit is a number from 1 to 100000.",
                             ":alice!alice@chatd MODE #lab +k beer", ":alice!alice@chatd MODE #lab +l 2",
                             ":chatd 324 alice #lab +klnt beer 2", ":chatd 329 alice #lab 1790000000"]
    assert bob.lines() == [":alice!alice@chatd MODE #lab +k beer", ":alice!alice@chatd MODE #lab +l 2"]
    carol = IrcClient(irc, clock, port=40002)
    carol.register("carol")
    carol.send("MODE #lab", "JOIN #lab", "JOIN #lab bees", "JOIN #lab beer")
    got = carol.lines()
    assert got[0] == ":chatd 324 carol #lab +klnt * 2"
    assert [text.split(" :")[0] for text in got[2:]] == [
        ":chatd 475 carol #lab", ":chatd 475 carol #lab", ":chatd 471 carol #lab"]  # (the right key; full)
    alice.send("MODE #lab -l")
    carol.send("JOIN #lab beer")
    assert carol.lines()[0] == ":carol!carol@chatd JOIN #lab"
    alice.send("MODE #lab -k *", "MODE #lab +l 1")
    assert alice.lines()[-2:] == [":alice!alice@chatd MODE #lab -k *", ":alice!alice@chatd MODE #lab +l 1"]
    dave = IrcClient(irc, clock, port=40003)
    dave.register("dave")
    alice.send("INVITE dave #lab")  # an invitation passes the limit (Modern), as a key
    dave.send("JOIN #lab")
    assert ":dave!dave@chatd JOIN #lab" in dave.lines()
    assert "beer" not in str(factory.rooms["lab"].history.ring)


def test_oper_needs_a_server_admins_password(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, admins=("root",)))
    Client(factory, clock, peer=IPv4Address("TCP", "127.0.0.1", 50000)).register("root")  # (admins: from here)
    assert "root" in factory.accounts
    irc = IrcFactory(factory, guests=True)
    guest = IrcClient(irc, clock)
    guest.register("guest")
    guest.send("OPER root wrong-password")
    clock.advance(5)
    assert codes(guest.lines()) == ["464"]
    guest.send("OPER root secret1")
    assert guest.lines() == [":chatd 381 guest :You are now an IRC operator", ":guest!guest@chatd MODE guest +o"]
    other = IrcClient(irc, clock, port=40001)
    other.register("other")
    other.send("WHOIS guest")
    assert ":chatd 313 other guest :is an IRC operator" in other.lines()


def test_register_creates_an_account_before_connecting(members_only):
    factory, clock, irc = members_only
    ann = IrcClient(irc, clock)
    ann.send("CAP LS 302", "NICK ann", "USER ann 0 * :Ann", "REGISTER * * short")
    assert ann.lines()[-1].startswith(":chatd FAIL REGISTER UNACCEPTABLE_PASSWORD ann :")
    ann.send("REGISTER * * secret1")
    assert ann.lines() == [":chatd REGISTER SUCCESS ann :Registered and logged in as ann."]
    ann.send("CAP END")
    assert codes(ann.lines())[0] == "001" and "ann" in factory.accounts
    other = IrcClient(irc, clock, port=40001)
    other.send("REGISTER ann * secret1")
    assert other.lines()[-1] == ":chatd FAIL REGISTER ACCOUNT_EXISTS ann :The name ann is taken."


def test_user_needs_a_realname_and_the_server_name_is_an_option(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    irc = IrcFactory(factory, guests=True, server="My.Little.Server")
    foo = IrcClient(irc, clock)
    foo.send("NICK foo", "USER username * * :")
    assert foo.lines() == [":My.Little.Server 461 foo USER :Not enough parameters"]
    foo.send("USER username * * :Foo", "PING abc")
    got = foo.lines()
    assert got[0].startswith(":My.Little.Server 001 foo ") and got[-1] == ":My.Little.Server PONG My.Little.Server abc"
    assert ":My.Little.Server 004 foo My.Little.Server chatd-1.0.0 io biklmnostv bklov" in got


def test_account_tag_marks_lines_of_accounts(world):
    bob, alice = telnet_and_irc_in_public(world, "CAP REQ :account-tag", "CAP END")
    alice.lines()
    bob.send("hello")
    assert alice.lines() == ["@account=bob :bob!bob@chatd PRIVMSG #public :hello"]


def test_part_and_quit_reasons_reach_irc_members_and_a_quit_is_one_line(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    for client in (alice, bob):
        client.send("JOIN #public")
    alice.lines(), bob.lines()
    alice.send("PART #public :bye for now")
    assert bob.lines() == [":alice!alice@chatd PART #public :bye for now"]
    alice.send("JOIN #public")
    bob.lines()
    telnet = Client(factory, clock)
    telnet.register("carol")
    telnet.send("join public")
    alice.lines(), bob.lines()
    telnet.disconnect()
    assert alice.lines() == [":carol!carol@chatd QUIT :Connection closed"]  # (as docs/IRC.md says)
    alice.transport.loseConnection()
    alice.protocol.connectionLost(None)
    assert bob.lines().count(":alice!alice@chatd QUIT :Connection closed") == 1


def test_two_joins_of_a_new_channel_at_once_both_get_in(tmp_path):
    from helpers import Held
    writes = Held()
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0), store_runner=writes)
    writes.run_all()
    irc = IrcFactory(factory, guests=True)
    foo, bar = IrcClient(irc, clock), IrcClient(irc, clock, port=40001)
    foo.register("foo")
    bar.register("bar")
    foo.send("JOIN #chan")
    bar.send("JOIN #chan")  # while the store writes the room foo creates
    for _ in range(4):
        writes.run_all()
        clock.advance(0)
    assert foo.lines()[0] == ":foo!foo@chatd JOIN #chan"
    assert bar.lines()[0] == ":bar!bar@chatd JOIN #chan"  # (the join waited for the room, then went first)
    assert sorted(factory.rooms["chan"].member_names()) == ["bar", "foo"] and factory.rooms["chan"].owner == "foo"


def test_irc_limits_cut_long_text_tags_sasl_and_tell_of_invalid_utf8(world):
    factory, clock, irc = world
    bob, alice = telnet_and_irc_in_public(world, "CAP REQ :sasl", "CAP END")
    alice.lines(), bob.output()
    alice.send("AUTHENTICATE PLAIN")
    assert codes(alice.lines()) == ["462"]  # a guest stays one
    alice.send("PRIVMSG #public :" + "a" * 490)  # fits the input line, not the line relayed with alice's mask
    said = re.search(r"alice: (a+)", bob.output()).group(1)
    assert len(f":alice!alice@chatd PRIVMSG #public :{said}\r\n") == 512
    alice.send("@+tag=" + "x" * 4090 + " PRIVMSG #public :hi")
    assert codes(alice.lines()) == ["417"]
    alice.send(b"PRIVMSG bob :caf\xe9\r\n")
    assert alice.lines() == [":chatd WARN PRIVMSG INVALID_UTF8 :Invalid UTF-8 was replaced with U+FFFD"]
    assert "caf\ufffd" in bob.output()
    other = IrcClient(irc, clock, port=40001)
    other.send("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN")
    other.lines()
    for _ in range(6):
        other.send("AUTHENTICATE " + "A" * 400)
    assert codes(other.lines()) == ["904"]
    assert other.protocol.sasl is None


def test_lusers_counts_users_admins_unknown_connections_and_the_most_at_once(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    IrcClient(irc, clock, port=40002)  # connected, not registered
    bob.send("QUIT")
    alice.lines()
    alice.send("LUSERS")
    assert alice.lines() == [
        ":chatd 251 alice :There are 1 users and 0 invisible on 1 servers",
        ":chatd 253 alice 1 :unknown connection(s)", ":chatd 254 alice 1 :channels formed",
        ":chatd 255 alice :I have 1 clients and 0 servers",
        ":chatd 265 alice 1 2 :Current local users 1, max 2", ":chatd 266 alice 1 2 :Current global users 1, max 2"]
    Client(factory, clock).register("dave")
    alice.send("NICK alice", "NICK Dave")  # own nick: nothing; taken: 433
    assert codes(alice.lines()) == ["433"]
    alice.send("AWAY :out", "NICK malice")  # a guest in no room may take a free nick
    assert alice.lines()[-1] == ":alice!alice@chatd NICK malice"
    assert "alice" not in factory.online and factory.online["malice"] is alice.protocol
    assert factory.presence.message("malice") == "out"
    newcomer = IrcClient(irc, clock, port=40003)
    assert codes(newcomer.register("alice"))[0] == "001"  # the old nick is free
    alice.send("JOIN #public", "NICK other")
    assert codes(alice.lines())[-1] == "447"  # not while in a room


def test_labeled_responses_are_tagged_batched_or_acked(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :labeled-response batch echo-message", "CAP END")
    alice.send("@label=one PING x")
    assert alice.lines() == ["@label=one :chatd PONG chatd x"]
    alice.send("@label=two JOIN #public")
    got = alice.lines()
    assert got[0] == "@label=two :chatd BATCH +1 labeled-response" and got[-1] == ":chatd BATCH -1"
    assert got[1:-1] == ["@batch=1 :alice!alice@chatd JOIN #public", "@batch=1 :chatd 353 alice = #public :alice",
                         "@batch=1 :chatd 366 alice #public :End of /NAMES list"]
    alice.send("@label=three PRIVMSG #public :hi")  # the echo is the answer
    assert alice.lines() == ["@label=three :alice!alice@chatd PRIVMSG #public :hi"]
    alice.send("@label=four PONG x")
    assert alice.lines() == ["@label=four :chatd ACK"]


def test_chathistory_reads_the_rooms_durable_history(world):
    factory, clock, irc = world
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    for number in range(6):
        bob.send(f"line {number}")
        clock.advance(1)
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :batch server-time message-tags draft/chathistory", "CAP END")
    alice.send("JOIN #public")
    alice.lines()

    def history(request: str) -> list[str]:
        alice.send(request)
        got = alice.lines()
        assert re.fullmatch(r":chatd BATCH \+\d+ chathistory #public", got[0]) and got[-1].startswith(":chatd BATCH -")
        return [re.sub(r"^@batch=\d+;msgid=public-(\d+);time=\S+ :bob!bob@chatd PRIVMSG #public :", r"\1 ", text)
                for text in got[1:-1]]

    # (bob's join is event 1: line N is event N + 2)
    assert history("CHATHISTORY LATEST #public * 3") == ["5 line 3", "6 line 4", "7 line 5"]
    assert history("CHATHISTORY BEFORE #public msgid=public-4 2") == ["2 line 0", "3 line 1"]
    assert history("CHATHISTORY AFTER #public msgid=public-4 2") == ["5 line 3", "6 line 4"]
    assert history("CHATHISTORY BETWEEN #public msgid=public-2 msgid=public-5 10") == ["3 line 1", "4 line 2"]
    assert history("CHATHISTORY AROUND #public msgid=public-4 2") == ["3 line 1", "4 line 2"]
    at = datetime.fromtimestamp(factory.rooms["public"].history.ring[3].at, timezone.utc)  # event 4
    assert history(f"CHATHISTORY AFTER #public timestamp={at:%Y-%m-%dT%H:%M:%S.%f}Z 1") == ["5 line 3"]
    alice.send("CHATHISTORY LATEST #public msgid=public-5 10")
    assert len(alice.lines()) == 4  # the batch and lines 3 and 4
    alice.send("CHATHISTORY LATEST #nowhere * 10", "CHATHISTORY LATEST #public * x")
    assert [text.split(" :")[0] for text in alice.lines()] == [
        ":chatd FAIL CHATHISTORY INVALID_TARGET LATEST #nowhere", ":chatd FAIL CHATHISTORY INVALID_PARAMS LATEST"]
    # (fix16a) another room's msgid is no reference in this one; the room's own in any case is.
    alice.send("CHATHISTORY AFTER #public msgid=busy2-1 10", "CHATHISTORY AFTER #public msgid=publi-1 10")
    assert [text.split(" :")[0] for text in alice.lines()] == [
        ":chatd FAIL CHATHISTORY INVALID_PARAMS AFTER"] * 2
    assert history("CHATHISTORY AFTER #public msgid=PUBLIC-6 2") == ["7 line 5"]


def test_away_notify_tells_irc_clients_sharing_a_room(world):
    factory, clock, irc = world
    bob, alice = telnet_and_irc_in_public(world, "CAP REQ :away-notify", "CAP END")
    alice.lines()
    bob.send("/away lunch")
    assert alice.lines() == [":bob!bob@chatd AWAY :lunch"]
    bob.send("/back")
    assert alice.lines() == [":bob!bob@chatd AWAY"]
    carol = Client(factory, clock)
    carol.register("carol")  # in no room alice is in
    carol.send("away gone")
    assert alice.lines() == []


def test_only_the_invitee_hears_of_an_invitation_and_a_kick_defaults_to_the_kickers_name(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    carol = IrcClient(irc, clock, port=40002)
    carol.register("carol")
    carol.lines()
    alice.send("INVITE carol #lab")
    assert alice.lines() == [":chatd 341 alice carol #lab"]
    assert carol.lines()[0] == ":alice!alice@chatd INVITE carol #lab"
    assert bob.lines() == []
    bob.send("INVITE carol #nowhere")  # no such room: passed on, nothing kept
    assert bob.lines() == [":chatd 341 bob carol #nowhere"]
    assert carol.lines() == [":bob!bob@chatd INVITE carol #nowhere"]
    alice.send("KICK #lab bob")
    assert bob.lines() == [":alice!alice@chatd KICK #lab bob :alice"]


def test_kick_pairs_channels_with_nicks_and_refusals_are_numerics(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    for client in (bob, alice):  # bob creates #lab2: its owner
        client.send("JOIN #lab2")
    alice.lines(), bob.lines()
    bob.send("MODE #lab +o alice", "KICK #lab alice")
    assert codes(bob.lines()) == ["482", "482"]
    alice.send("MODE #lab +o nobody")
    assert codes(alice.lines()) == ["401"]
    alice.send("KICK #lab,#lab2 bob,bob :twice")
    got = alice.lines()
    assert got == [":alice!alice@chatd KICK #lab bob :twice", ":chatd 482 alice #lab2 :You're not channel operator"]


def test_a_private_message_has_one_msgid_and_one_to_oneself_arrives_as_echo_and_delivery(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :message-tags echo-message", "CAP END")
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob", "CAP REQ :message-tags", "CAP END")
    alice.lines(), bob.lines()
    alice.send("PRIVMSG bob :hey")
    (echo,), (delivered,) = alice.lines(), bob.lines()
    assert echo == delivered and re.fullmatch(r"@msgid=pm-[0-9a-f]{18} :alice!alice@chatd PRIVMSG bob :hey", echo)
    alice.send("PRIVMSG alice :note to self")
    echo, delivered = alice.lines()
    assert echo == delivered  # (the same msgid and time: clients drop one of them by its msgid)


def test_who_finds_an_invisible_user_by_its_exact_nick_or_through_a_shared_room(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    evan = IrcClient(irc, clock, port=40002)
    evan.register("evan")
    evan.send("MODE evan +i")
    evan.lines()
    alice.send("WHO eva*", "WHO evan")
    assert codes(alice.lines()) == ["315", "352", "315"]
    evan.send("JOIN #lab")
    alice.lines()
    alice.send("WHO eva*")
    assert codes(alice.lines()) == ["352", "315"]


def test_whowas_remembers_irc_users_who_left_and_kill_is_for_admins(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, admins=("root",)))
    Client(factory, clock, peer=IPv4Address("TCP", "127.0.0.1", 50000)).register("root")
    irc = IrcFactory(factory, guests=True)
    nick1 = IrcClient(irc, clock)
    nick1.register("nick1")
    for port, ident in ((40001, "ident2"), (40002, "ident3")):
        gone = IrcClient(irc, clock, port=port)
        gone.send("NICK nick2", f"USER {ident} 0 * :Realname", "QUIT :bye")
    nick1.lines()
    nick1.send("WHOWAS nick2 1", "WHOWAS *ck2", "WHOWAS nobody")
    got = nick1.lines()
    assert [text.split(" :")[0] for text in got] == [
        ":chatd 314 nick1 nick2 ident3 chatd *", ":chatd 312 nick1 nick2 chatd", ":chatd 369 nick1 nick2",
        ":chatd 314 nick1 nick2 ident3 chatd *", ":chatd 312 nick1 nick2 chatd",
        ":chatd 314 nick1 nick2 ident2 chatd *", ":chatd 312 nick1 nick2 chatd", ":chatd 369 nick1 *ck2",
        ":chatd 406 nick1 nobody", ":chatd 369 nick1 nobody"]
    victim = IrcClient(irc, clock, port=40003)
    victim.register("victim")
    nick1.send("KILL victim :no")
    assert codes(nick1.lines()) == ["481"]
    nick1.send("OPER root secret1", "KILL victim :spam")
    assert codes(nick1.lines()) == ["381"]
    assert victim.closed and "ERROR :You were disconnected by root, an admin: spam" in victim.lines()


def test_a_notice_to_a_channel_is_a_room_line_that_irc_members_get_as_a_notice(world):
    factory, clock, irc = world
    bob, alice = telnet_and_irc_in_public(world, "CAP REQ :echo-message", "CAP END")
    carol = IrcClient(irc, clock, port=40001)
    carol.register("carol")
    carol.send("JOIN #public")
    alice.lines(), carol.lines(), bob.output()
    alice.send("NOTICE #public :heads up")
    assert alice.lines() == [":alice!alice@chatd NOTICE #public :heads up"]
    assert carol.lines() == [":alice!alice@chatd NOTICE #public :heads up"]
    assert "alice: heads up" in bob.output()
    factory.rooms["public"].muted["alice"] = Sanction("", 0.0, "")
    alice.send("NOTICE #public :muted")
    assert alice.lines() == [] and carol.lines() == []


def test_input_waits_for_a_command_whose_answer_waits_on_the_store(tmp_path):
    """A Deferred already called but waiting on another (the store's write) is not an answer yet: PING waits."""
    from helpers import Held
    writes = Held()
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0), store_runner=writes)
    writes.run_all()
    irc = IrcFactory(factory, guests=True)
    foo = IrcClient(irc, clock)
    foo.register("foo")
    foo.send("JOIN #chan")
    for _ in range(3):
        writes.run_all()
        clock.advance(0)
    bar = IrcClient(irc, clock, port=40001)
    bar.register("bar")
    foo.lines()
    foo.send("INVITE bar #chan", "PING x")
    assert foo.lines() == []
    writes.run_all()
    assert foo.lines() == [":chatd 341 foo bar #chan", ":chatd PONG chatd x"]


def test_the_owner_drops_and_takes_back_its_op_and_an_operator_kicks_it(world):
    """irctest invite testInviteInviteOnly (the owner's -o of itself) and kick testKickPrivileges."""
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    alice.send("MODE #lab +i", "MODE #lab -o alice")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +i", ":alice!alice@chatd MODE #lab -o alice"]
    alice.send("INVITE carol #lab", "NAMES #lab")
    assert alice.lines() == [":chatd 401 alice carol :No such nick/channel", ":chatd 353 alice * #lab :alice bob",
                             ":chatd 366 alice #lab :End of /NAMES list"]
    carol = IrcClient(irc, clock, port=40002)
    carol.register("carol")
    alice.send("INVITE carol #lab")
    assert codes(alice.lines()) == ["482"]
    alice.send("MODE #lab +o bob", "MODE #lab +o alice")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +o bob", ":alice!alice@chatd MODE #lab +o alice"]
    bob.lines()
    bob.send("KICK #lab alice :bye")
    assert bob.lines() == [":bob!bob@chatd KICK #lab alice :bye"]
    assert alice.lines() == [":bob!bob@chatd KICK #lab alice :bye"]
    alice.send("JOIN #lab")  # invite-only, but its owner
    assert alice.lines()[0] == ":alice!alice@chatd JOIN #lab"
    assert factory.rooms["lab"].owner == "alice"


def test_refused_channel_changes_are_numerics(world):
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    carol = IrcClient(irc, clock, port=40002)
    carol.register("carol")
    alice.send("MODE #lab +o bob")
    alice.lines(), bob.lines()
    bob.send("MODE #lab +b alice", "MODE #lab +b nobody", "MODE #lab +o carol")
    assert [text.split(" :")[0] for text in bob.lines()] == [
        ":chatd 482 bob #lab", ":chatd 401 bob nobody", ":chatd 482 bob #lab"]
    alice.send("MODE #lab +o carol")
    assert alice.lines() == [":chatd 441 alice carol #lab :They aren't on that channel"]


def test_every_reply_to_a_labeled_line_is_labeled_and_a_joiner_who_is_away_is_announced(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :labeled-response batch away-notify", "CAP END")
    alice.send("JOIN #public")
    alice.lines()
    alice.send("@label=x NONEXISTENT", "@label=y JOIN")
    assert alice.lines() == ["@label=x :chatd 421 alice NONEXISTENT :Unknown command",
                             "@label=y :chatd 461 alice JOIN :Not enough parameters"]
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("away lunch", "join public")
    assert alice.lines() == [":bob!bob@chatd JOIN #public", ":bob!bob@chatd AWAY :lunch"]


def test_a_labeled_message_to_oneself_is_the_delivery_then_the_labeled_echo_without_a_batch(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :labeled-response batch echo-message", "CAP END")
    for command in ("PRIVMSG", "NOTICE"):
        alice.send(f"@label=self {command} alice :note")
        assert alice.lines() == [f":alice!alice@chatd {command} alice :note",
                                 f"@label=self :alice!alice@chatd {command} alice :note"]


def test_a_notice_to_a_nick_arrives_as_a_notice_and_is_never_queued_for_an_offline_account(world):
    factory, clock, irc = world
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("quit")
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :labeled-response batch echo-message", "CAP END")
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    telnet = Client(factory, clock)
    telnet.register("dave")
    alice.lines(), bob.lines(), telnet.output()
    alice.send("@label=n NOTICE bob :hi")
    assert alice.lines() == ["@label=n :alice!alice@chatd NOTICE bob :hi"]
    assert bob.lines() == [":alice!alice@chatd NOTICE bob :hi"]
    alice.send("NOTICE dave :psst")
    assert "psst" in telnet.output()  # (today's private line)
    alice.send("NOTICE carol :later?", "PRIVMSG carol :later!")
    assert [text for text in alice.lines() if "NOTICE carol" in text] == []  # no echo: not delivered
    assert [message.text for message in factory.offline.get("carol", [])] == ["later!"]


def test_a_case_change_of_ones_own_nick_is_answered_a_nick_or_447_and_the_same_nick_nothing(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    alice.lines()
    alice.send("NICK Alice")
    assert alice.lines() == [":alice!alice@chatd NICK Alice"]
    alice.send("NICK Alice")
    assert alice.lines() == []
    alice.send("JOIN #public")
    alice.lines()
    alice.send("NICK ALICE")
    assert codes(alice.lines()) == ["447"]


def test_chathistory_targets_lists_ones_rooms_by_their_latest_lines_time_within_the_bounds(world):
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice", "CAP REQ :batch server-time draft/chathistory", "CAP END")
    times = {}
    for channel in ("#one", "#two", "#three"):
        alice.send(f"JOIN {channel}")
        clock.advance(1)
    for channel in ("#two", "#one"):
        alice.send(f"PRIVMSG {channel} :hi", f"PRIVMSG {channel} :again")
        clock.advance(1)
    for channel in ("#two", "#one"):
        at = factory.rooms[channel[1:]].history.ring[-1].at
        times[channel] = datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    alice.lines()

    def targets(low: str, high: str, limit: int = 10) -> list[str]:
        alice.send(f"CHATHISTORY TARGETS timestamp={low} timestamp={high} {limit}")
        got = alice.lines()
        assert re.fullmatch(r":chatd BATCH \+\d+ draft/chathistory-targets", got[0]) and got[-1].startswith(":chatd BATCH -")
        return [re.sub(r"^@batch=\d+ :chatd CHATHISTORY TARGETS ", "", text) for text in got[1:-1]]

    everything = ("2020-01-01T00:00:00.000Z", "2262-01-01T00:00:00.000Z")
    assert targets(*everything) == [f"#two {times['#two']}", f"#one {times['#one']}"]
    assert targets(*everything, limit=1) == [f"#two {times['#two']}"]
    assert targets(times["#two"], everything[1]) == [f"#one {times['#one']}"]  # (bounds excluded)
    assert targets(everything[0], times["#one"]) == [f"#two {times['#two']}"]
    alice.send("CHATHISTORY TARGETS * * 10")
    assert [text.split(" :")[0] for text in alice.lines()] == [":chatd FAIL CHATHISTORY INVALID_PARAMS TARGETS"]


def test_a_file_shared_in_a_room_is_a_notice_with_the_web_pages_address_when_the_web_front_end_is_on(tmp_path):
    from chatd.frontends.irc import web_page_url
    assert web_page_url([], ["https://chat.example.org"], []) == ""  # (the web front-end is off)
    assert web_page_url(["tcp:8080"], ["https://chat.example.org"], ["x.org"]) == "https://chat.example.org/"
    assert web_page_url(["ssl:8443:privateKey=k.pem", "tcp:8080"], [], ["chat.example.org"]) == \
        "https://chat.example.org:8443/"
    assert web_page_url(["tcp:port=8080:interface=0.0.0.0"], [], [], machine="box") == "http://box:8080/"
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    for files_at, said in (("https://chat.example.org/", " (log in at https://chat.example.org/ to download it)"),
                           ("", "")):
        irc = IrcFactory(factory, guests=True, files_at=files_at)
        alice = IrcClient(irc, clock)
        alice.register("alice")
        alice.send("JOIN #public")
        alice.lines()
        factory.publish(factory.rooms["public"], "bob", EventKind.FILE, "notes.txt (1.2 KiB, sha256 ab12)")
        assert alice.lines() == [f":chatd NOTICE #public :bob shared a file: notes.txt (1.2 KiB, sha256 ab12){said}"]
        alice.send("QUIT")


def test_every_quit_of_a_nick_that_came_back_is_told(world):
    """Issue 16 (tester16u): a nick that quits, comes back and quits again is told each time, telnet or IRC."""
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    alice.send("JOIN #lab")
    Client(factory, clock).register("carol")
    for round in range(3):
        bob = IrcClient(irc, clock, port=40001 + round)
        bob.register("bob")
        bob.send("JOIN #lab")
        bob.send(f"QUIT :round {round}")
        telnet = Client(factory, clock)
        telnet.login("carol")
        telnet.send("join lab")
        telnet.disconnect()
        got = alice.lines()
        assert [text for text in got if " QUIT " in text] == [f":bob!bob@chatd QUIT :Quit: round {round}",
                                                               ":carol!carol@chatd QUIT :Connection closed"]
    # Back in a room the observer joins after it (a NAMES, no JOIN seen): its QUIT is told too.
    bob = IrcClient(irc, clock, port=40010)
    bob.register("bob")
    bob.send("JOIN #other")
    alice.send("JOIN #other")
    alice.lines()
    bob.send("QUIT :last")
    assert alice.lines()[0] == ":bob!bob@chatd QUIT :Quit: last"  # (then #other, a guest's room, is deleted)


def test_kept_private_messages_come_after_the_welcome_burst_with_sasl_and_pass(members_only):
    """Issue 16 (tester16u): with SASL they came between 903 and 001; docs/IRC.md says after 376."""
    factory, clock, irc = members_only
    first = Client(factory, clock)
    first.register("ann")
    first.disconnect()
    tel = Client(factory, clock)
    tel.register("tel")
    tel.send("join public")
    for way in ("sasl", "pass"):
        tel.send(f"/msg ann kept by {way}")
        ann = IrcClient(irc, clock, port=40100 if way == "sasl" else 40101)
        if way == "sasl":
            good = base64.b64encode(b"ann\0ann\0secret1").decode()
            ann.send("CAP LS 302", "NICK ann", "USER annie 0 * :x", "CAP REQ :sasl", "AUTHENTICATE PLAIN",
                     f"AUTHENTICATE {good}")
            got = ann.lines()
            assert codes(got) == ["900", "903"] and not any("PRIVMSG" in text for text in got)
            assert ":chatd 900 ann ann!annie@chatd ann :You are now logged in as ann" in got  # the prefix of its lines
            ann.send("CAP END")
            got = ann.lines()
        else:
            got = ann.register("ann", "PASS ann:secret1")
        numerics = [index for index, text in enumerate(got) if text.startswith(":chatd 376 ")]
        kept = [index for index, text in enumerate(got) if f"PRIVMSG ann :kept by {way}" in text]
        assert numerics and kept and kept[0] > numerics[0], got
        ann.send("QUIT")
        tel.output()


def test_a_quit_shows_the_same_prefix_as_the_users_other_lines(world):
    """Issue 16 (tester16u): QUIT showed nick!nick@chatd while JOIN and PRIVMSG showed nick!USERNAME@chatd."""
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    alice.send("JOIN #lab")
    bob = IrcClient(irc, clock, port=40001)
    bob.send("NICK bob", "USER robert 0 * :Bob")
    bob.send("JOIN #lab", "PRIVMSG #lab :hi", "QUIT :bye")
    got = alice.lines()
    assert [text for text in got if text.startswith(":bob")] == [
        ":bob!robert@chatd JOIN #lab", ":bob!robert@chatd PRIVMSG #lab :hi", ":bob!robert@chatd QUIT :Quit: bye"]


def test_a_ban_mask_bans_each_member_it_matches_and_a_mask_matching_nobody_is_told(world):
    """Issue 16 (tester16u): irssi's /ban sends *!*user@host, WeeChat's *!user@host; both were refused."""
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    telnet = Client(factory, clock)
    telnet.register("tel")
    telnet.send("join lab")
    carol = IrcClient(irc, clock, port=40002)
    carol.send("NICK carol", "USER Hotel 0 * :Carol", "JOIN #lab")
    alice.lines(), bob.lines(), carol.lines()
    alice.send("MODE #lab +b *!*TEL@chatd")  # irssi's /ban tel (ASCII case ignored): tel!tel@ and carol!Hotel@
    got = alice.lines()
    assert got[0] == ":chatd NOTICE #lab :*!*TEL@chatd bans tel, carol (chatd bans users by name)"
    assert ":alice!alice@chatd MODE #lab +b tel!*@*" in got and ":alice!alice@chatd KICK #lab tel :Banned" in got
    assert ":alice!alice@chatd MODE #lab +b carol!*@*" in got and ":alice!alice@chatd KICK #lab carol :Banned" in got
    assert set(factory.rooms["lab"].member_names()) == {"alice", "bob"}
    alice.send("@label=x1 MODE #lab +b *!nobody@*")  # WeeChat's form, matching nobody: said in the channel's context
    assert alice.lines() == [":chatd NOTICE #lab :*!nobody@* matches nobody in #lab: nobody was banned "
                             "(chatd bans users by name)"]
    alice.send("MODE #lab +b bob!x@y")  # a literal nick part names that user
    assert ":alice!alice@chatd MODE #lab +b bob!*@*" in alice.lines()
    alice.send("MODE #lab -b *!*@chatd")
    got = alice.lines()
    assert got[0] == ":chatd NOTICE #lab :*!*@chatd lifts the bans on tel, carol, bob (chatd bans users by name)"
    assert not factory.rooms["lab"].authority.bans


def test_an_invitation_from_another_front_end_is_an_invite_line_on_irc(world):
    """Issue 16 (tester16u): the invitee got telnet's wording, "type 'join priv' at the menu"."""
    factory, clock, irc = world
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("create priv", "join priv", "/invite-only on")
    bob = IrcClient(irc, clock)
    bob.register("bob")
    carol.send("/invite bob")
    assert bob.lines() == [":carol!carol@chatd INVITE bob #priv"]
    bob.send("JOIN #priv")
    assert bob.lines()[0] == ":bob!bob@chatd JOIN #priv"


def test_lusers_counts_the_invisible_users(world):
    """Issue 16 (tester16u): 251 said 0 invisible though the clients had set +i."""
    factory, clock, irc = world
    alice = IrcClient(irc, clock)
    alice.register("alice")
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    bob.send("MODE bob +i")
    alice.send("LUSERS")
    assert ":chatd 251 alice :There are 1 users and 1 invisible on 1 servers" in alice.lines()


def test_an_admin_name_without_its_account_gives_no_power_and_no_guest_takes_it(tmp_path):
    # (issue 16, fix16a) admin power is an account's: --admin root with no account root yet names nobody, and a
    # guest, even from this machine, may never take root (in any case) nor reach it by NICK.
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, admins=("root",)))
    assert not factory.is_admin("root")
    irc = IrcFactory(factory, guests=True)
    local = IrcClient(irc, clock, host="127.0.0.1")
    for nick in ("root", "ROOT"):
        local.send(f"NICK {nick}", "USER root 0 * :x")
        assert codes(local.lines()) == ["432"]
    local.send("NICK guest")
    assert codes(local.lines())[0] == "001"
    local.send("NICK Root", "KILL guest :x")
    assert codes(local.lines()) == ["432", "481"]
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    bob.send("WHOIS guest", "LUSERS")
    assert "313" not in codes(bob.lines()) and "252" not in codes(bob.lines())
    assert "Registered and logged in as root" in Client(
        factory, clock, peer=IPv4Address("TCP", "127.0.0.1", 50000)).register("root")
    assert factory.is_admin("root") and factory.is_admin("ROOT")


def test_voice_and_moderated_channels_are_chatd_rooms_rules_for_every_front_end(world):
    """
    ``MODE +m``/``+v`` are chatd's ``/moderated`` and ``/voice``: an unvoiced member
    gets 404 (IRC) or chatd's refusal (telnet); NAMES, WHO and WHOIS mark voice
    ``+`` (``@+`` with multi-prefix); 324 shows ``+m``; a voiced member still
    may not set the topic under ``+t`` (irctest testTopicPrivileges).
    """
    factory, clock, irc = world
    alice, bob = two_in_lab(world)
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("join lab")
    carol.output()
    alice.lines(), bob.lines()
    bob.send("MODE #lab +m")
    assert codes(bob.lines()) == ["482"]
    alice.send("MODE #lab +m", "MODE #lab")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +m", ":chatd 324 alice #lab +mnt",
                             ":chatd 329 alice #lab 1790000000"]
    assert bob.lines() == [":alice!alice@chatd MODE #lab +m"]
    assert carol.output().endswith("* alice turned moderated on\r\n")
    bob.send("PRIVMSG #lab :hello?", "NOTICE #lab :quietly")
    assert bob.lines() == [
        ":chatd 404 bob #lab :Cannot send to channel: lab is moderated: only voiced members and operators may speak."]
    carol.send("hello from telnet")
    assert carol.output() == "Error: lab is moderated: only voiced members and operators may speak.\r\n"
    assert alice.lines() == []
    alice.send("MODE #lab +v bob", "MODE #lab +v carol")
    assert alice.lines() == [":alice!alice@chatd MODE #lab +v bob", ":alice!alice@chatd MODE #lab +v carol"]
    assert re.findall(r"\* alice gave \w+ a voice", carol.output()) == ["* alice gave bob a voice",
                                                                        "* alice gave carol a voice"]
    bob.lines()
    bob.send("PRIVMSG #lab :now I may")
    carol.send("so may I")
    assert ":bob!bob@chatd PRIVMSG #lab :now I may" in alice.lines() and "bob: now I may" in carol.output()
    assert bob.lines() == [":carol!carol@chatd PRIVMSG #lab :so may I"]
    bob.send("TOPIC #lab :voiced is not enough")
    assert codes(bob.lines()) == ["482"]
    bob.send("NAMES #lab", "WHO #lab", "WHOIS bob")
    got = bob.lines()
    assert got[0] == ":chatd 353 bob = #lab :@alice +bob +carol"
    assert [text.split()[8] for text in got if " 352 " in text] == ["H@", "H+", "H+"]
    assert ":chatd 319 bob bob :+#lab" in got
    alice.send("MODE #lab +v alice", "CAP REQ :multi-prefix", "NAMES #lab", "WHO #lab")
    got = alice.lines()
    assert ":chatd 353 alice = #lab :@+alice +bob +carol" in got
    assert [text.split()[8] for text in got if " 352 " in text][0] == "H@+"
    assert bob.lines() == [":alice!alice@chatd MODE #lab +v alice"]
    bob.send("NAMES #lab")
    assert bob.lines()[0] == ":chatd 353 bob = #lab :@alice +bob +carol"  # (the highest mark without multi-prefix)
    alice.send("MODE #lab -v bob", "MODE #lab -m")
    assert alice.lines() == [":alice!alice@chatd MODE #lab -v bob", ":alice!alice@chatd MODE #lab -m"]
    carol.send("/who")
    assert carol.output().endswith("In lab (3): ~alice, bob, +carol\r\n")
    bob.send("QUIT")
    assert "bob" not in factory.rooms["lab"].authority.voiced  # (a guest's voice lives with its session)


def test_an_irc_flooder_is_muted_then_cut_off_as_on_every_front_end(tmp_path):
    # (issue 16, fix16a) the escalation (chatd.limits TokenBucket.overrun, Moderation.flooding) is one for every
    # front-end: an IRC member kept over its allowance is muted in its channels by the server, then kicked and cut.
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=5, flood_burst=10, flood_mute=60))
    irc = IrcFactory(factory, guests=True)
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("create lab", "join lab")
    bob = IrcClient(irc, clock)
    bob.register("bob")
    bob.send("JOIN #lab")
    ann.output(), bob.lines()
    room = factory.rooms["lab"]

    def run(until) -> float:
        ran = 0.0
        while ran < FLOOD_WINDOW and not until():
            clock.advance(0.05)
            ran += 0.05
        return ran

    bob.protocol.dataReceived(b"".join(b"PRIVMSG #lab :line %d\r\n" % index for index in range(1000)))
    assert FLOOD_PAUSED_LIMIT <= run(lambda: bool(room.muted)) < 2 * FLOOD_PAUSED_LIMIT
    assert "* chatd muted bob for 1m (flooding)\r\n" in ann.output()
    assert not bob.closed
    assert FLOOD_PAUSED_LIMIT <= run(lambda: bob.closed) < 2 * FLOOD_PAUSED_LIMIT
    assert "* chatd kicked bob (flooding)\r\n" in ann.output()
    assert any(text.startswith(":chatd KICK #lab bob :flooding") or " KICK #lab bob :flooding" in text
               for text in bob.lines())


def test_no_line_to_an_irc_client_passes_512_bytes_and_a_cut_keeps_whole_characters(world):
    # (issue 16, fix16a) the one place that formats outgoing lines (irc_wire.line) holds them to LINE_MAX bytes
    # without tags, cutting the last parameter between UTF-8 characters: a 300-emoji topic was sent at ~1,230.
    made = line("a" * 60 + "!b@chatd", "TOPIC", "#lab", "é" * 300)
    assert len(made) == 512 and made.endswith(b"\r\n") and made.decode().endswith("é\r\n")
    assert len(line("x", "PRIVMSG", "#lab", "😀" * 200, tags="time=x;" + "y" * 600)) <= 512 + 620
    factory, clock, irc = world
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("create lab", "join lab", "/topic " + "😀" * 300)
    assert factory.rooms["lab"].authority.topic == "😀" * 300
    long_nick = "a" * 24
    alice = IrcClient(irc, clock)
    alice.register(long_nick)
    alice.send("JOIN #lab")
    ann.send("/op " + long_nick, "/topic " + "😀" * 299)
    bob = IrcClient(irc, clock, port=40001)
    bob.register("bob")
    bob.send("JOIN #lab", "TOPIC #lab", "LIST #lab")
    got = alice.lines() + bob.lines()
    assert any(" TOPIC #lab :😀" in text for text in got) and any(" 332 bob #lab :😀" in text for text in got)
    assert any(" 322 bob #lab " in text for text in got)
    for text in got:
        assert len(text.encode()) + 2 <= 512, text
    alice.send("TOPIC #lab :" + "é" * 249)
    assert factory.rooms["lab"].authority.topic == "é" * 249
    got = alice.lines() + bob.lines()
    assert any(" TOPIC #lab :éé" in text for text in got)
    for text in got:
        assert len(text.encode()) + 2 <= 512, text


def test_with_guests_a_nick_of_an_account_waits_for_sasl_during_cap_negotiation(world):
    # (issue 16, fix16a) IRC.md's own order for an offline account under --irc-guests: NICK alice during CAP
    # negotiation was refused with 433 at once, SASL then succeeded and no 001 ever came.
    factory, clock, irc = world
    factory.register("alice", "secret1")
    alice = IrcClient(irc, clock)
    alice.send("CAP LS 302", "NICK alice", "USER u 0 * :x", "CAP REQ :sasl", "AUTHENTICATE PLAIN",
               "AUTHENTICATE " + base64.b64encode(b"alice\0alice\0secret1").decode(), "CAP END")
    got = codes(alice.lines())
    assert "433" not in got and got[:3] == ["900", "903", "001"]
    assert factory.online["alice"] is alice.protocol and not alice.protocol.guest
    # Not authenticated as that account by CAP END: 433 then, and another nick registers as a guest.
    other = IrcClient(irc, clock, port=40001)
    other.send("CAP LS 302", "NICK alice", "USER u 0 * :x", "CAP END")
    assert codes(other.lines()) == ["433"]
    other.send("NICK visitor")
    assert codes(other.lines())[0] == "001" and other.protocol.guest
    # SASL as another account than the nick: the nick becomes that account's.
    factory.register("bob", "secret1")
    bob = IrcClient(irc, clock, port=40002)
    bob.send("CAP LS 302", "NICK visitor", "USER u 0 * :x", "CAP REQ :sasl", "AUTHENTICATE PLAIN",
             "AUTHENTICATE " + base64.b64encode(b"bob\0bob\0secret1").decode(), "CAP END")
    got = bob.lines()
    assert codes(got)[:3] == ["900", "903", "001"] and ":visitor!u@chatd NICK bob" in got


def test_the_servers_and_irc_services_names_are_nobodys_on_every_front_end(tmp_path):
    # (issue 16, fix16a) impersonation: nobody registers or takes as a guest the server's own name (chatd, the
    # --irc-server-name) or an IRC service's (NickServ...), in any case, from any address; one rule for every
    # front-end (Administration.reserved_refusal). An existing account of such a name keeps working.
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    factory.register("global", "secret1")  # (made before the rule: it still logs in)
    irc = IrcFactory(factory, guests=True, server="irc-lab")
    for index, nick in enumerate(("chatd", "NickServ", "chanserv", "SaslServ", "Global", "IRC-LAB", "HistServ")):
        guest = IrcClient(irc, clock, port=40000 + index, host="127.0.0.1")
        assert [text.split()[1] for text in guest.register(nick)] == ["432"], nick
        if nick != "Global":
            assert "is reserved" in Client(factory, clock, peer=IPv4Address("TCP", "127.0.0.1", 50000)).register(
                nick), nick
            early = IrcClient(irc, clock, port=40050 + index, host="127.0.0.1")
            early.send(f"REGISTER {nick} * secret1")
            assert early.lines()[0].startswith(f":irc-lab FAIL REGISTER BAD_ACCOUNT_NAME {nick} :"), nick
    guest = IrcClient(irc, clock, port=40100)
    guest.register("visitor")
    guest.send("NICK OperServ")
    assert [text.split()[1] for text in guest.lines()] == ["432"]
    assert "Logged in as global" in Client(factory, clock).login("global", "secret1")


def test_parameters_past_fifteen_are_dropped_never_joined():
    # (issue 16, fix16a) RFC 2812 2.3 allows 15; the rest was joined into the 15th with spaces, which a middle
    # parameter then sent as a_b. Dropped now; the 15th is as sent.
    message = parse(b"MODE #x +bbbbbbbbbbbbbbbbbbbb " + b" ".join(bytes([97 + index]) for index in range(20)))
    assert message is not None and len(message.params) == 15
    assert message.params[2:] == list("abcdefghijklm")
    message = parse(b"PRIVMSG #x :a b c")
    assert message is not None and message.params == ["#x", "a b c"]
