"""
The browser front-end's output path (chatd.frontends.web, issue 15 "the
browser front-end's cost"): a batch of room events is framed once
(JsonRenderer) and every member is written the same bytes, in order with
the replies framed by the WebSocket transport; idle sessions keep little.
"""

from __future__ import annotations

from typing import Any

import pytest
from wsproto.events import CloseConnection
from wsproto.frame_protocol import FrameProtocol, Opcode

from chatd.frontends.web import JsonRenderer, WebSession, frame_text, web_site
from chatd.settings import Settings
from helpers import make_factory
from test_web import WebClient


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_line=2000))
    return factory, clock, web_site(factory)


def _in_room(site: Any, clock: Any, names: list[str]) -> list[WebClient]:
    clients = [WebClient(site, port=40000 + i) for i in range(len(names))]
    for name, client in zip(names, clients):
        client.command("register", name, "secret1")
        client.command("public")
    clock.advance(0)
    for client in clients:
        client.messages()
    return clients


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_a_frame_is_one_whole_unmasked_text_frame_wsproto_decodes(length):
    """RFC 6455 section 5.2: the 7-bit length up to 125, then 126 + 16 bits up to 65535, then 127 + 64 bits."""
    text = ("é" + "x" * length)[-length:] if length else ""
    frame = frame_text(FrameProtocol(client=False, extensions=[]), text)
    payload = text.encode()
    header = 2 if len(payload) <= 125 else 4 if len(payload) <= 65535 else 10
    assert len(frame) == header + len(payload) and frame[header:] == payload
    assert frame[0] == 0x81 and not frame[1] & 0x80  # FIN + text; no mask (a server's frame, section 5.1)
    browser = FrameProtocol(client=True, extensions=[])
    browser.receive_bytes(frame)
    frames = list(browser.received_frames())
    assert [(f.opcode, f.payload, f.message_finished) for f in frames] == [(Opcode.TEXT, text, True)]


def test_a_batch_is_framed_once_and_every_member_is_written_the_same_bytes(world):
    factory, clock, site = world
    clients = _in_room(site, clock, ["w0", "w1", "w2"])
    renderer = factory.online["w0"].renderer
    assert isinstance(renderer, JsonRenderer)
    frames: list[bytes] = []
    original = renderer.render
    renderer.render = lambda events: frames.append(original(events)) or frames[-1]  # type: ignore[method-assign]
    clients[0].command("say", "one")
    clients[1].command("say", "two ünïcode")
    for client in clients:
        client.transport.clear()
    clock.advance(0)
    assert len(frames) == 1 and isinstance(frames[0], bytes)
    for client in clients:
        assert client.transport.value() == frames[0]
        texts = [e["text"] for m in client.messages() if m["type"] == "events" for e in m["events"]]
        assert texts == ["one", "two ünïcode"]


def test_frames_and_replies_go_out_in_order_on_one_transport(world):
    factory, clock, site = world
    ann, bob = _in_room(site, clock, ["ann", "bob"])
    session = factory.online["bob"]
    # The frame is written where Twisted's WebSocket writes the replies (TLS is a layer below both).
    assert session.transport.transport is session.stream
    ann.command("say", "first")  # queued for the end of the turn
    bob.send_raw('{"type": "command", "name": "ping", "args": []}')  # answered at once: before the batch
    clock.advance(0)  # the batch
    bob.send_raw("{bad")  # an error: after the batch
    ann.command("say", "second")
    clock.advance(0)
    seen = [(m["type"], m.get("text") or [e["text"] for e in m.get("events", [])]) for m in bob.messages()]
    assert [kind for kind, _ in seen] == ["reply", "events", "error", "events"]
    assert seen[1][1] == ["first"] and seen[3][1] == ["second"]


def test_no_frame_is_written_after_the_browser_closed(world):
    factory, clock, site = world
    ann, bob = _in_room(site, clock, ["ann", "bob"])
    bob.protocol.dataReceived(bob.ws.send(CloseConnection(1000)))  # answered, and the connection is closing
    bob.messages()
    assert bob.closed and bob.transport.disconnecting
    bob.transport.clear()
    ann.command("say", "after")
    clock.advance(0)
    assert bob.transport.value() == b""  # (wsproto would refuse a message now; no frame after the close)
    assert [m["type"] for m in ann.messages()] == ["events"]


def test_an_idle_session_keeps_no_dict_queue_holds_or_request_headers(world):
    factory, clock, site = world
    sessions = site.wrappedFactory.resource.children[b"ws"].factory
    requests = []
    build = sessions.buildProtocol
    sessions.buildProtocol = lambda request: requests.append(request) or build(request)
    ann, = _in_room(site, clock, ["ann"])
    ann.send_raw('{"type": "command", "name": "ping", "args": []}')
    assert ann.messages()[0]["type"] == "reply"
    session = factory.online["ann"]
    assert isinstance(session, WebSession) and not hasattr(session, "__dict__")
    assert session._queue is None and session._holds is None
    request, = requests
    assert list(request.requestHeaders.getAllRawHeaders()) == []
    assert list(request.responseHeaders.getAllRawHeaders()) == []
    ann.command("say", "still works")
    clock.advance(0)
    assert [e["text"] for m in ann.messages() for e in m.get("events", [])] == ["still works"]
