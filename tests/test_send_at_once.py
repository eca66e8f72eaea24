"""chatd.frontends.pacing.send_at_once: output straight on an idle TCP socket, never overtaking queued output."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from chatd.frontends.pacing import send_at_once


@pytest.fixture
def pair():
    """(a tcp.Server on one end of a socket pair, under a MemoryReactor; the other end, non-blocking)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    reactor = MemoryReactor()
    port = SimpleNamespace(_realPortNumber=2)  # the listening port, as tcp.Server names itself
    server = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), port, 1, reactor)
    yield server, theirs, reactor
    ours.close()
    theirs.close()


def received(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return out
        if not chunk:
            return out
        out += chunk


def test_an_idle_connection_gets_the_bytes_at_once_without_the_reactor(pair) -> None:
    server, theirs, reactor = pair
    assert send_at_once(server, b":ann!ann@chatd PRIVMSG #lab :hi\r\n") == b""
    assert received(theirs) == b":ann!ann@chatd PRIVMSG #lab :hi\r\n"
    assert server not in reactor.writers  # no registration for writing, no wait for a turn


def test_queued_output_is_not_overtaken(pair) -> None:
    server, theirs, reactor = pair
    server.write(b"first\r\n")  # held by the transport until the reactor's next turn (never, in a MemoryReactor)
    assert send_at_once(server, b"second\r\n") == b"second\r\n"
    assert received(theirs) == b""


def test_what_the_kernel_does_not_take_is_returned_in_order(pair) -> None:
    server, theirs, reactor = pair
    data = bytes(range(256)) * 40000  # 10 MB: more than a socket pair's buffers hold
    rest = send_at_once(server, data)
    assert 0 < len(rest) < len(data)
    got = received(theirs)
    assert got + rest == data


def test_a_closing_or_closed_connection_and_other_transports_get_everything_back(pair) -> None:
    server, theirs, reactor = pair
    server.disconnecting = True
    assert send_at_once(server, b"x\r\n") == b"x\r\n"
    server.disconnecting = False
    server.connected = False
    assert send_at_once(server, b"x\r\n") == b"x\r\n"
    assert received(theirs) == b""
    assert send_at_once(StringTransport(), b"x\r\n") == b"x\r\n"  # TLS, tests: the transport's own write
