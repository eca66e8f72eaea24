"""
The browser front-end (chatd.frontends.web, issue 15): JSON over a WebSocket,
driven through the real Site, handshake and framing (wsproto on the client
side) on a StringTransport, and once against a real daemon.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from twisted.internet import abstract, defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

from chatd.commands.table import Place
from chatd.core.events import EventKind
from chatd.frontends.web import FRAMING_ALLOWANCE, JsonRenderer, WebSession, origin_allowed, web_site
from chatd.limits import FLOOD_PAUSED_LIMIT, FLOOD_WINDOW
from chatd.settings import Settings
from chatd.twisted_internals import unsent_bytes
from daemon import Conn, Daemon, free_port
from helpers import Client, Held, make_factory


class WebClient:
    """A browser's WebSocket on a StringTransport: the server's Site, handshake and frames, no socket."""

    def __init__(self, site: Any, origin: str | None = "http://localhost", port: int = 40000,
                 lenient: bool = False) -> None:
        # (lenient: pausing and resuming a closing connection is ignored, as on a real TCP connection)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", port), lenient=lenient)
        self.protocol = site.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"origin", origin.encode())] if origin is not None else []
        self.protocol.dataReceived(self.ws.send(Request(host="localhost", target="/ws", extra_headers=headers)))
        self.status = 0
        self.received: list[dict[str, Any]] = []
        self.closed = False
        #: The close frame's code (None: none came); the payloads of the pings received (not answered).
        self.close_code: int | None = None
        self.pings: list[bytes] = []
        self._read()

    def _read(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        if not data:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.status = 101
            elif isinstance(event, RejectConnection):
                self.status = event.status_code
            elif isinstance(event, TextMessage):
                self.received.append(json.loads(event.data))
            elif isinstance(event, CloseConnection):
                self.closed = True
                self.close_code = event.code
            elif isinstance(event, Ping):
                self.pings.append(bytes(event.payload))

    def send_raw(self, text: str) -> None:
        self.protocol.dataReceived(self.ws.send(TextMessage(text)))

    def command(self, name: str, *args: str) -> list[dict[str, Any]]:
        """Send a command; what came back since the last call."""
        self.send_raw(json.dumps({"type": "command", "name": name, "args": list(args)}))
        return self.messages()

    def messages(self) -> list[dict[str, Any]]:
        self._read()
        out, self.received = self.received, []
        return out


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_line=2000))
    return factory, clock, web_site(factory)


def test_register_join_say_and_hear_a_line_user_both_ways(world):
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    ann = WebClient(site)
    assert ann.status == 101
    login = ann.command("register", "ann", "secret1")
    assert [(m["type"], m["name"]) for m in login] == [("login", "ann")] and "ann" in login[0]["text"]
    assert factory.online["ann"].name == "ann"
    assert ann.command("create", "lab")[-1]["type"] == "reply"
    entered = ann.command("join", "lab")
    assert entered[0] == {"type": "entered", "room": "lab", "here": 1, "topic": ""}
    assert entered[1] == {"type": "history", "room": "lab", "replay": True, "events": [], "older": None}
    bob.send("join lab")
    bob.send("hello <b>ann</b>")
    clock.advance(0)
    events = [event for message in ann.messages() if message["type"] == "events" for event in message["events"]]
    assert [(e["kind"], e["sender"], e["text"]) for e in events] == [
        ("join", "ann", ""), ("join", "bob", ""), ("say", "bob", "hello <b>ann</b>")]
    assert events[-1]["room"] == "lab" and events[-1]["at"] == clock.seconds()
    assert set(events[-1]) == {"room", "id", "at", "sender", "kind", "text", "target", "until"}
    ann.command("say", "hi bob\x1b[31m")
    clock.advance(0)
    assert "ann: hi bob" in bob.output() and "\x1b" not in bob.output()
    said = [e for m in ann.messages() if m["type"] == "events" for e in m["events"]]
    assert [(e["kind"], e["text"]) for e in said] == [("say", "hi bob")]


def test_a_session_whose_page_sent_its_close_frame_is_ended_from_elsewhere_without_a_traceback(world):
    """
    The page closed (its close frame answered, the TCP connection not yet gone) when its session is ended from
    elsewhere (a login on another node, chatd.nodes): nothing is sent (wsproto would refuse), the session ends.
    """
    factory, clock, site = world
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    ann.protocol.dataReceived(ann.ws.send(CloseConnection(1000)))
    assert ann.transport.disconnecting and factory.online["ann"] is not None
    factory.online["ann"].kick("You logged in from another connection.", "replaced")
    assert "ann" not in factory.online


def test_commands_refused_unknown_and_bad_messages_get_errors_never_tracebacks(world):
    factory, clock, site = world
    ann = WebClient(site)
    assert ann.command("join", "public") == [
        {"type": "error", "text": "please log in first (login) or create an account (register)."}]
    assert ann.command("frobnicate") == [
        {"type": "error", "text": "unknown command frobnicate; the help command lists them."}]
    ann.send_raw("{not json")
    assert ann.messages()[0]["text"].startswith("not JSON")
    for bad in ('[1, 2]', '{"type": "hello"}', '{"type": "command", "name": 5}',
                '{"type": "command", "name": "msg", "args": [1]}', '{"type": "command", "name": "msg", "args": "x"}'):
        ann.send_raw(bad)
        answers = ann.messages()
        assert len(answers) == 1 and answers[0]["type"] == "error", bad
    ann.protocol.dataReceived(ann.ws.send(__import__("wsproto").events.BytesMessage(b"\x00\x01")))
    assert ann.messages() == [{"type": "error", "text": "binary messages are not accepted; send JSON text."}]
    ann.command("register", "ann", "secret1")
    ann.command("public")
    assert ann.command("msg", "bob")[-1] == {"type": "error", "text": "usage: /msg NAME TEXT"}
    assert ann.command("send", "5", "notes.txt")[-1] == {"type": "error", "text": "this server does not accept files."}
    assert not ann.closed and "ann" in factory.online


def test_private_messages_and_history_as_json(world):
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    ann.command("public")
    sent = ann.command("msg", "bob", "psst")
    assert sent[-1]["type"] == "private" and sent[-1]["sent"] is True and sent[-1]["recipient"] == "bob"
    bob.send("public", "/msg ann hello back")
    got = [m for m in ann.messages() if m["type"] == "private"]
    assert got[-1]["sender"] == "bob" and got[-1]["text"] == "hello back" and got[-1]["sent"] is False
    for i in range(3):
        ann.command("say", f"line {i}")
    clock.advance(0)
    ann.messages()
    history = [m for m in ann.command("history") if m["type"] == "history"]
    assert history and history[0]["replay"] is False and history[0]["room"] == "public"
    assert [e["text"] for e in history[0]["events"] if e["kind"] == "say"] == ["line 0", "line 1", "line 2"]


def test_a_too_big_message_aborts_the_connection(world):
    factory, clock, site = world
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    ann.send_raw(json.dumps({"type": "command", "name": "users", "args": []}) + " " * 1500)  # under the limit
    assert ann.messages()[0]["type"] == "reply"
    assert not ann.transport.disconnecting
    # One message in fragments, never finished: counted across frames.
    limit = factory.settings.max_line + FRAMING_ALLOWANCE
    for _ in range(limit // 1000):
        ann.protocol.dataReceived(ann.ws.send(TextMessage("x" * 1000, message_finished=False)))
    assert not ann.transport.disconnecting and ann.messages() == []  # a message may take frames
    ann.protocol.dataReceived(ann.ws.send(TextMessage("x" * 1000, message_finished=False)))
    assert ann.transport.disconnecting
    ann.protocol.connectionLost(__import__("twisted.python.failure", fromlist=["Failure"]).Failure(
        ConnectionError("aborted")))
    assert "ann" not in factory.online and factory.open_transports == 0


@pytest.mark.parametrize("origin, status", [
    ("http://evil.test", 403), ("http://localhost.evil.test", 403), ("null", 403),
    ("http://localhost", 101), (None, 101)])
def test_the_origin_check(world, origin, status):
    factory, clock, site = world
    client = WebClient(site, origin=origin)
    assert client.status == status
    assert (factory.open_transports == 1) is (status == 101)


def test_origin_allowed_with_a_list():
    assert origin_allowed("https://Chat.Example.org", "x:1", ["https://chat.example.org/"])
    assert not origin_allowed("https://chat.example.org:444", "x", ["https://chat.example.org"])
    assert origin_allowed("http://h:8080", "h:8080", []) and not origin_allowed("http://h:8081", "h:8080", [])


def test_the_renderer_renders_a_batch_once_as_one_json_text(world):
    factory, clock, site = world
    clients = [WebClient(site, port=40000 + i) for i in range(3)]
    for i, client in enumerate(clients):
        client.command("register", f"w{i}", "secret1")
        client.command("public")
        client.messages()
    clock.advance(0)
    for client in clients:
        client.messages()
    calls = []
    renderer = factory.online["w0"].renderer
    assert isinstance(renderer, JsonRenderer) and all(factory.online[f"w{i}"].renderer is renderer for i in range(3))
    original = renderer.render
    renderer.render = lambda events: calls.append(len(events)) or original(events)  # type: ignore[method-assign]
    clients[0].command("say", "one")
    clients[1].command("say", "two")
    clock.advance(0)
    assert calls == [2]
    for client in clients:
        assert [e["text"] for m in client.messages() if m["type"] == "events" for e in m["events"]] == ["one", "two"]


def test_a_web_session_is_a_session_of_the_core(world):
    factory, clock, site = world
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    session = factory.online["ann"]
    assert isinstance(session, WebSession) and session.origin == {"address": "10.0.0.9", "port": "40000"}
    factory.shut_down("The server is shutting down. Bye.")
    assert ann.messages()[-1] == {"type": "error", "text": "The server is shutting down. Bye."}
    assert ann.transport.disconnecting and "ann" not in factory.online


def _ws_connect(port: int, origin: str) -> tuple[socket.socket, WSConnection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target="/ws",
                                 extra_headers=[(b"origin", origin.encode())])))
    return sock, ws


def _ws_until(sock: socket.socket, ws: WSConnection, wanted: Any, timeout: float = 10.0) -> list[Any]:
    """Read events until one satisfies ``wanted``; all read so far."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        ws.receive_data(data or None)
        for event in ws.events():
            seen.append(json.loads(event.data) if isinstance(event, TextMessage) else event)
            if wanted(seen[-1]):
                return seen
        if not data:
            break
    raise AssertionError(f"not seen; got {seen}")


def test_a_browser_and_a_telnet_user_chat_through_a_real_daemon(tmp_path):
    web_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), web_port=web_port).start()
    try:
        evil, evil_ws = _ws_connect(web_port, "http://evil.test")
        assert isinstance(_ws_until(evil, evil_ws, lambda e: isinstance(e, RejectConnection))[-1], RejectConnection)
        evil.close()
        sock, ws = _ws_connect(web_port, f"http://127.0.0.1:{web_port}")
        _ws_until(sock, ws, lambda e: isinstance(e, AcceptConnection))

        def command(name: str, *args: str) -> None:
            sock.sendall(ws.send(TextMessage(json.dumps({"type": "command", "name": name, "args": list(args)}))))

        command("register", "ann", "secret1")
        _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "login")
        command("public")
        _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "entered")
        bob = Conn(daemon.port)
        bob.register("bob")
        bob.send("public")
        bob.send("hello from telnet")
        seen = _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "events"
                         and any(x["text"] == "hello from telnet" for x in e["events"]))
        assert any(x["kind"] == EventKind.SAY for e in seen if isinstance(e, dict) and e.get("type") == "events"
                   for x in e["events"])
        command("say", "hello from the browser")
        bob.expect("ann: hello from the browser")
        bob.close()
        sock.close()
        page = socket.create_connection(("127.0.0.1", web_port), timeout=10)
        page.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        body = b""
        while chunk := page.recv(65536):
            body += chunk
        page.close()
        assert body.startswith(b"HTTP/1.0 200") and b"content-security-policy" in body.lower()
    finally:
        daemon.stop()
    assert daemon.unhandled_errors() == [], daemon.log()


def test_messages_pay_the_flood_allowance_like_lines(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=2))
    ann = WebClient(web_site(factory))
    ann.command("register", "ann", "secret1")
    ann.command("public")
    ann.messages()
    for i in range(4):
        ann.send_raw(json.dumps({"type": "command", "name": "say", "args": [f"n{i}"]}))
    clock.advance(0)
    said = lambda: [e["text"] for m in ann.received if m["type"] == "events" for e in m["events"]  # noqa: E731
                    if e["kind"] == "say"]
    ann._read()
    assert said() == ["n0", "n1"]  # the account's burst of 2 went on public and n0; n1 ran over it: n2 waits
    assert {"type": "error", "text": "you are sending too fast; your messages are being delayed."} in ann.received
    assert ann.transport.producerState == "paused"
    for _ in range(4):
        clock.advance(1)
    ann._read()
    assert said() == ["n0", "n1", "n2", "n3"] and ann.transport.producerState == "producing"


def test_a_browser_flooder_is_muted_then_cut_off_as_on_every_front_end(tmp_path):
    # (issue 16, fix16a) one escalation for every front-end (Moderation.flood_paused).
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=5, flood_burst=10, flood_mute=60))
    ann = Client(factory, clock)
    ann.register("ann")
    ann.send("public")
    bob = WebClient(web_site(factory))
    bob.command("register", "bob", "secret1")
    bob.command("public")
    ann.output()
    room = factory.rooms["public"]
    for index in range(1000):
        bob.send_raw(json.dumps({"type": "command", "name": "say", "args": [f"n{index}"]}))

    def run(until) -> float:
        ran = 0.0
        while ran < FLOOD_WINDOW and not until():
            clock.advance(0.05)
            ran += 0.05
        return ran

    assert FLOOD_PAUSED_LIMIT <= run(lambda: bool(room.muted)) < 2 * FLOOD_PAUSED_LIMIT
    assert "* chatd muted bob for 1m (flooding)\r\n" in ann.output()
    assert FLOOD_PAUSED_LIMIT <= run(lambda: bob.transport.disconnecting) < 2 * FLOOD_PAUSED_LIMIT
    assert "* chatd kicked bob (flooding)\r\n" in ann.output()


class Unread(abstract.FileDescriptor):
    """A connection whose peer reads nothing: everything written stays unsent (what --max-outbound measures)."""

    connected = 1
    aborted = False

    def startWriting(self) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "10.0.0.9", 40001)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)

    def abortConnection(self) -> None:
        self.aborted = True


def test_a_browser_that_stops_reading_is_cut_off_at_max_outbound(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_outbound=1 << 20))
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("public")
    site = web_site(factory)
    stuck = Unread()
    protocol = site.buildProtocol(stuck.getPeer())
    protocol.makeConnection(stuck)
    ws = WSConnection(ConnectionType.CLIENT)
    protocol.dataReceived(ws.send(Request(host="localhost", target="/ws")))
    ws.receive_data(b"".join(stuck._tempDataBuffer))  # the handshake's answer, taken
    assert isinstance(next(ws.events()), AcceptConnection)
    stuck._tempDataBuffer, stuck._tempDataLen = [], 0
    for message in ({"type": "command", "name": "register", "args": ["ann", "secret1"]},
                    {"type": "command", "name": "public", "args": []}):
        protocol.dataReceived(ws.send(TextMessage(json.dumps(message))))
    assert "ann" in factory.online and not stuck.aborted
    for i in range(300):
        bob.send("x" * 4000)
        clock.advance(0)
    assert stuck.aborted
    assert 1 << 20 < unsent_bytes(stuck) < (1 << 20) + 20_000


def test_listen_web_and_web_origin_options():
    from twisted.python import usage

    from chatd.tap import Options

    options = Options()
    options.parseOptions(["--listen-web", "tcp:8080", "--listen-web", "unix:/tmp/x.sock",
                          "--web-origin", "https://chat.example.org"])
    assert options["listen-web"] == ["tcp:8080", "unix:/tmp/x.sock"]
    assert options["web-origin"] == ["https://chat.example.org"]
    default = Options()
    default.parseOptions([])
    assert default["listen-web"] == ["tcp:8080:backlog=1024"]  # on by default, on every interface like --listen
    off = Options()
    off.parseOptions(["--listen-web", "none"])
    assert off["listen-web"] == []
    with pytest.raises(usage.UsageError, match="--listen-web none turns the browser client off"):
        Options().parseOptions(["--listen-web", "none", "--listen-web", "tcp:8080"])
    with pytest.raises(usage.UsageError, match="--web-origin: 'chat.example.org' is not an origin"):
        Options().parseOptions(["--web-origin", "chat.example.org"])


@pytest.mark.parametrize("lenient", [False, True])
def test_messages_queued_before_a_login_closed_the_connection_are_not_run(tmp_path, lenient):
    # Pipelined logins: the last failure allowed (--max-login-failures) closes the connection while the next
    # login waits in the queue; it was then run, and logged in (wsproto then refused to send in LOCAL_CLOSING).
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_login_failures=2))
    Client(factory, clock).register("ann")
    ann = WebClient(web_site(factory), lenient=lenient)
    for password in ("wrong-1", "wrong-2", "secret1"):
        ann.send_raw(json.dumps({"type": "command", "name": "login", "args": ["ann", password]}))
    clock.advance(60)
    assert [m["text"] for m in ann.messages()] == [
        "Login failed: unknown name or wrong password.", "too many failed logins; goodbye."]
    assert ann.closed and not isinstance(factory.online.get("ann"), WebSession)


def test_a_command_that_waits_holds_the_next_messages_and_the_connection(tmp_path):
    hashes = Held()
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0), hash_runner=hashes)
    ann = WebClient(web_site(factory))
    ann.send_raw(json.dumps({"type": "command", "name": "register", "args": ["ann", "secret1"]}))
    ann.send_raw(json.dumps({"type": "command", "name": "public", "args": []}))
    assert ann.messages() == [] and hashes.calls and ann.transport.producerState == "paused"
    hashes.run_all()
    clock.advance(0)
    types = [m["type"] for m in ann.messages()]
    assert types[:3] == ["login", "entered", "history"]  # in order: public ran once logged in
    assert ann.transport.producerState == "producing"


def test_a_command_answered_by_a_deferred_waiting_on_another_holds_the_next_messages(tmp_path, monkeypatch):
    """
    A handler's Deferred that has fired but waits on an inner one (``called`` is True, no result yet) holds the
    next message until the answer is there, as one that has not fired does (irc16 found ``not done.called``).
    """
    inner: defer.Deferred[None] = defer.Deferred()
    table = WebSession.commands.copy()

    @table.command("slow", "answers once a store write behind it is done", Place.MENU)
    def slow(caller: Any) -> defer.Deferred[None]:
        return defer.succeed(None).addCallback(lambda _: inner).addCallback(lambda _: caller.reply("slow done"))

    monkeypatch.setattr(WebSession, "commands", table)
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    ann = WebClient(web_site(factory))
    ann.send_raw(json.dumps({"type": "command", "name": "slow", "args": []}))
    ann.send_raw(json.dumps({"type": "command", "name": "help", "args": []}))
    assert ann.messages() == [] and ann.transport.producerState == "paused"
    inner.callback(None)
    assert [m["type"] for m in ann.messages()] == ["reply", "help"]
    assert ann.transport.producerState == "producing"
