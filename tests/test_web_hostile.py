"""
What an attacker found in the browser front-end (issue 15, tester15a), each
fault fixed by kind: lone UTF-16 surrogates (JSON's ``"\\ud800"``) in every
string a browser sends, JSON shapes that ended the connection with a
traceback, and a history commit that one unencodable event blocked for every
room. Unit tests through StringTransport and Clock (tests/test_web.py's
WebClient); a real-daemon test with the attacker's repro.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from chatd.core.events import EventKind
from chatd.frontends.web_host import host_name, machine_names
from chatd.history import COMMIT_INTERVAL
from chatd.settings import Settings
from chatd.store import PUBLIC_ROOM_ID, HistoryBatch
from chatd.stores.memory import MemoryStore
from chatd.text import check_name, clean_line, clean_text, without_surrogates
from chatd.transfer import TransferSettings, Transfers
from helpers import Client, make_factory, run_now
from daemon import Conn, Daemon, free_port
from test_web import WebClient, _ws_connect, _ws_until, web_site
from wsproto.events import AcceptConnection, TextMessage

SURROGATE_SAY = '{"type": "command", "name": "say", "args": ["hi \\ud800 there"]}'


@pytest.fixture
def failures():
    """Every event logged at error or critical level (tracebacks included) while the test runs."""
    seen: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "")
        if "log_failure" in event or level in ("error", "critical"):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_line=4096))
    factory.transfers = Transfers(factory, str(tmp_path / "spool"), run_now, TransferSettings(max_file_size=1000))
    factory.transfers.start()
    factory.history.start()
    return factory, clock, web_site(factory)


def events_of(client: WebClient) -> list[dict[str, Any]]:
    return [event for message in client.messages() if message["type"] == "events" for event in message["events"]]


def test_cleaning_replaces_lone_surrogates_and_keeps_pairs_and_names_refuse_them():
    assert clean_text("hi \ud800 there") == "hi \ufffd there"
    assert clean_text("\udfff\ud83d") == "\ufffd\ufffd"
    assert clean_text("ok \U0001f600") == "ok \U0001f600"
    assert without_surrogates("a\ud800b\x1b") == "a\ufffdb\x1b" and without_surrogates("plain") == "plain"
    assert clean_line(b"\xed\xa0\x80 x") == "\ufffd\ufffd\ufffd x"  # (UTF-8 of a surrogate is invalid UTF-8)
    clean_text("x\ud800").encode("utf-8")
    assert check_name("ab\ud800", "user", 24) is not None


def test_a_surrogate_said_from_the_web_reaches_everyone_as_u_fffd_and_history_keeps_it(world, tmp_path, failures):
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("create lab", "join lab")
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("create other", "join other")
    ann, dan = WebClient(site), WebClient(site, port=40001)
    ann.command("register", "ann", "secret1")
    dan.command("register", "dan", "secret1")
    ann.command("join", "lab")
    dan.command("join", "lab")
    clock.advance(0)
    dan.messages()
    bob.output()
    ann.send_raw(SURROGATE_SAY)
    ann.send_raw('{"type": "line", "text": "and \\udc00 again"}')
    carol.send("elsewhere")
    clock.advance(0)
    assert [e["text"] for e in events_of(dan) if e["kind"] == "say"] == ["hi \ufffd there", "and \ufffd again"]
    assert "ann: hi \ufffd there" in bob.output()
    assert not ann.closed and not dan.closed and {"ann", "dan", "bob"} <= set(factory.online)
    clock.advance(COMMIT_INTERVAL)
    files = {os.path.basename(os.path.dirname(path)): open(path, encoding="utf-8").read()
             for path in glob.glob(str(tmp_path / "history" / "*" / "*.csv"))}
    assert any("hi \ufffd there" in text and "and \ufffd again" in text for text in files.values())
    assert any("elsewhere" in text for text in files.values())
    assert failures == []


def test_surrogates_in_away_private_messages_topic_and_secrets(world, failures):
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    ann = WebClient(site)
    assert ann.command("register", "ann", "pass\ud800word")[-1]["type"] == "login"
    for name, *args in [("away", "out \ud800"), ("password", "pass\ud800word", "other\udc00pass"),
                        ("create", "lab"), ("join", "lab"), ("msg", "bob", "psst \udbff"),
                        ("msg", "carol", "later \ud800"), ("topic", "new \ud800 topic")]:
        ann.send_raw(json.dumps({"type": "command", "name": name, "args": args}))
        clock.advance(0)
        answers = ann.messages()
        assert answers and all("went wrong" not in m.get("text", "") for m in answers), (name, answers)
    assert "psst \ufffd" in bob.output()
    bob.send("whois ann")
    assert "out \ufffd" in bob.output()
    assert factory.rooms["lab"].authority.topic == "new \ufffd topic"
    ann.command("leave")
    ann.command("logout")
    assert ann.command("login", "ann", "other\udc00pass")[-1]["type"] == "login"
    ann.send_raw('{"type": "command", "name": "\\ud800x"}')
    assert ann.messages() == [{"type": "error", "text": "unknown command \ufffdx; the help command lists them."}]
    assert failures == []


@pytest.mark.parametrize("raw", [
    '{"type": ["command"]}', '{"type": {"a": 1}}', '{"type": 5}', '{"type": null}', "[" * 2400 + "]" * 2400,
    "[" * 20 + "]" * 20, '{"type": "command", "name": "help", "args": [[[[[[[[[[]]]]]]]]]]}',
    '{"type": "command", "name": "\\ud800"}', '{"type": "resume", "token": ["x"]}', '{"type": "done", "id": 1}',
    '"just a string"', "null", "1e999", '{"type": "line", "text": {"x": 1}}', '{"\\ud800": 1, "type": "line"}'])
def test_a_malformed_message_gets_an_error_and_the_connection_stays(world, raw, failures):
    factory, clock, site = world
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    ann.send_raw(raw)
    answers = ann.messages()
    assert [m["type"] for m in answers] == ["error"] and not ann.closed
    if raw.startswith("[[[[[[[[[") or "[[[[[[[[[" in raw:
        assert answers[0]["text"] == "a message nests arrays and objects at most 8 deep."
    assert ann.command("help")[-1]["type"] == "help"
    assert "ann" in factory.online and failures == []


def test_a_commit_that_fails_for_a_reason_no_retry_mends_blocks_no_room(failures):
    """A fault other than StoreError: each room is tried on its own, the one that fails again loses its batch."""
    from test_history import start, user
    factory, clock, store = start()
    ann, bob = user(factory, clock, "ann", "public"), user(factory, clock, "bob")
    bob.send("create lab", "join lab")
    clock.advance(COMMIT_INTERVAL)
    calls: list[list[str]] = []
    append = store.append_history

    def append_history(batches: list[HistoryBatch]) -> defer.Deferred[None]:
        calls.append([batch.room_id for batch in batches])
        if any("poison" in event.text for batch in batches for event in batch.events):
            raise UnicodeEncodeError("utf-8", "poison", 0, 1, "surrogates not allowed")
        return append(batches)

    store.append_history = append_history
    ann.send("poison")
    bob.send("fine")
    clock.advance(COMMIT_INTERVAL)
    lab = factory.rooms["lab"].history.room_id
    assert [e.text for e in store.history[lab]][-1] == "fine"
    assert len(calls) == 3 and sorted(map(len, calls)) == [1, 1, 2]
    assert len(failures) == 2 and factory.history.waiting == []
    ann.send("later")
    clock.advance(COMMIT_INTERVAL * 4)
    assert [e.text for e in store.history[PUBLIC_ROOM_ID]][-1] == "later" and len(calls) == 4
    store.broken = "disk full"  # (a StoreError is still retried)
    bob.send("kept")
    clock.advance(COMMIT_INTERVAL)
    store.broken = None
    clock.advance(COMMIT_INTERVAL)
    assert [e.text for e in store.history[lab]][-1] == "kept"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(), max_size=12)
    | st.sampled_from(["command", "line", "resume", "done", "cancel", "say", "help", "type", "name", "args"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "name", "args", "text", "token", "id", "sha256", "room", "after"]) | st.text(max_size=4),
        children, max_size=5),
    max_leaves=12))
def test_any_json_value_sent_as_a_message_is_answered_or_ignored_never_a_failure(world, failures, value):
    """Random JSON values (lone surrogates in strings included) from a logged-in member in a room."""
    factory, clock, site = world
    ann = WebClient(site, port=41000 + len(factory.online))
    ann.command("register", f"u{len(factory.accounts)}", "secret1")
    ann.command("public")
    ann.send_raw(json.dumps(value))
    clock.advance(1)
    for message in ann.messages():
        json.dumps(message, ensure_ascii=False).encode("utf-8")
    assert not ann.closed and failures == []
    ann.protocol.connectionLost(Failure(ConnectionDone()))


def test_the_attackers_surrogate_line_through_a_real_daemon(tmp_path):
    """tester15a's repro_surrogate_say.py: a telnet and a web member hear it, history keeps every room."""
    web_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), web_port=web_port).start()
    try:
        socks = []
        for name in ("ann", "dan"):
            sock, ws = _ws_connect(web_port, f"http://127.0.0.1:{web_port}")
            _ws_until(sock, ws, lambda e: isinstance(e, AcceptConnection))
            sock.sendall(ws.send(TextMessage(json.dumps({"type": "command", "name": "register",
                                                         "args": [name, "secret1"]}))))
            _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "login")
            sock.sendall(ws.send(TextMessage('{"type": "command", "name": "public"}')))
            _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "entered")
            socks.append((sock, ws))
        bob = Conn(daemon.port)
        bob.register("bob")
        bob.send("public")
        carol = Conn(daemon.port)
        carol.register("carol")
        carol.send("create lab", "join lab")
        (ann, ann_ws), (dan, dan_ws) = socks
        ann.sendall(ann_ws.send(TextMessage(SURROGATE_SAY)))
        bob.expect("ann: hi \ufffd there")
        _ws_until(dan, dan_ws, lambda e: isinstance(e, dict) and e.get("type") == "events"
                  and any(x["text"] == "hi \ufffd there" for x in e["events"]))
        carol.send("in another room")
        dave = Conn(daemon.port)
        dave.register("dave")
        dave.send("public")
        dave.expect("ann: hi \ufffd there")  # (the replay)
        bob.close(), carol.close(), dave.close(), ann.close(), dan.close()
    finally:
        daemon.stop()
    assert daemon.unhandled_errors() == [] and "History" not in daemon.log(), daemon.log()
    stored = [open(path, encoding="utf-8").read() for path in glob.glob(str(tmp_path / "data" / "history" / "*" / "*.csv"))]
    assert any("hi \ufffd there" in text for text in stored) and any("in another room" in text for text in stored)


def _http(site: Any, raw: bytes) -> bytes:
    """One raw HTTP request to ``site`` on a StringTransport; the response's bytes."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 40100))
    protocol = site.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    return transport.value()


UPGRADE = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n")


@pytest.mark.parametrize("head, status", [
    (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nHost: evil.example\r\nOrigin: http://evil.example\r\n" + UPGRADE, 400),
    (b"GET /ws HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\n" + UPGRADE,
     400),
    (b"GET /ws HTTP/1.1\r\n" + UPGRADE, 400),
    (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\nOrigin: http://evil.example\r\n"
     + UPGRADE, 403),
    (b"GET /app.js%00.html HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    (b"GET /%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    # tester15r: a path segment that is not UTF-8 (a traceback from static.File on every request)
    (b"GET /%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    (b"GET /%ed%a0%80 HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    (b"GET /files/%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n", 404),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:x\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: \r\n", 400),
])
def test_http_inputs_that_were_500s_are_400_403_or_404_without_a_traceback(world, failures, head, status):
    factory, clock, site = world
    answer = _http(site, head + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"content-security-policy" in answer.lower() and failures == [] and factory.open_transports == 0


@pytest.mark.parametrize("host, status", [
    ("attacker.example:8080", 421), ("attacker.example", 421), ("localhost.attacker.example", 421),
    ("127.0.0.1:8080", 101), ("[::1]:8080", 101), ("[::ffff:10.0.0.1]", 101), ("LOCALHOST:1", 101),
    ("localhost.", 101), ("10.1.2.3", 101), ("chat.example.org:443", 421)])
def test_dns_rebinding_a_host_that_is_not_this_server_is_refused(world, failures, host, status):
    """tester15a's repro_rebinding.py: Host and Origin both the attacker's name passed the Origin check."""
    factory, clock, site = world
    head = f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host.lower()}\r\n".encode() + UPGRADE + b"\r\n"
    assert _http(site, head).startswith(b"HTTP/1.1 %d %s" % (status, b"Misdirected Request" if status == 421 else b""))
    page = _http(site, f"GET /none.js HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())  # (a file would need a reactor)
    assert page.startswith(b"HTTP/1.1 %d " % (404 if status == 101 else status))
    assert failures == []


def test_web_host_names_are_answered_and_others_still_refused(tmp_path):
    factory, _ = make_factory(str(tmp_path), Settings(flood_rate=0))
    site = web_site(factory, ["https://chat.example.org"], ["Chat.Example.org"])
    assert _http(site, b"GET /none.js HTTP/1.1\r\nHost: chat.example.org:443\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert _http(site, b"GET / HTTP/1.1\r\nHost: other.example.org\r\n\r\n").startswith(b"HTTP/1.1 421 ")
    head = b"GET /ws HTTP/1.1\r\nHost: chat.example.org\r\nOrigin: https://chat.example.org\r\n" + UPGRADE + b"\r\n"
    assert _http(site, head).startswith(b"HTTP/1.1 101 ")
    assert host_name("[::1]:80") == "::1" and host_name("Host.Example.:8080") == "host.example"
    assert host_name("a:b:c") is None and host_name("[::1]x") is None and host_name("") is None
    assert machine_names() >= {"localhost", socket.gethostname().lower()}


def test_the_web_host_option():
    from twisted.python import usage

    from chatd.tap import Options
    options = Options()
    options.parseOptions(["--web-host", "chat.example.org", "--web-host", "chat2.example.org"])
    assert options["web-host"] == ["chat.example.org", "chat2.example.org"]
    for bad in ("https://chat.example.org", "chat.example.org:443", "a b", ""):
        with pytest.raises(usage.UsageError, match="--web-host"):
            Options().parseOptions(["--web-host", bad])


def test_a_refused_connection_is_told_why_without_error_prefix(tmp_path):
    """tester15a: "Too many connections" reached the page as "Error: too many connections from your address."."""
    factory, _ = make_factory(str(tmp_path), Settings(flood_rate=0, max_per_address=1))
    site = web_site(factory)
    first = WebClient(site)
    second = WebClient(site, port=40001)
    assert first.status == 101 and not first.messages()
    assert second.messages() == [{"type": "error", "text": "too many connections from your address."}]
    assert second.closed and second.close_code == 1000


def test_the_flood_notice_comes_at_most_once_every_10_seconds(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=2))
    ann = WebClient(web_site(factory))
    notices = []
    for _ in range(60):
        ann.send_raw('{"type": "command", "name": "help"}')
        clock.advance(0.5)
        notices += [clock.seconds() for m in ann.messages() if "too fast" in m.get("text", "")]
    assert len(notices) >= 2 and all(b - a >= 10 for a, b in zip(notices, notices[1:]))


def test_an_event_utf8_cannot_encode_poisons_no_delivery(world, failures):
    """Defence in depth: an event with a lone surrogate that got past the cleaning reaches everyone, '?' or U+FFFD."""
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("public")
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    ann.command("public")
    clock.advance(0)
    ann.messages(), bob.output()
    factory.publish(factory.rooms["public"], "ann", EventKind.SAY, "raw \ud800 text")
    clock.advance(0)
    assert "ann: raw ? text" in bob.output()
    assert [e["text"] for e in events_of(ann)] == ["raw \ufffd text"]
    assert not ann.closed and {"ann", "bob"} <= set(factory.online) and failures == []
