"""
Listeners behind a load balancer that sends HAProxy's PROXY header
(chatd.proxied): the session starts once the header is read, with the
client's address; anything else is closed without a word. The real HAProxy
in front of two nodes: tests/test_haproxy.py.
"""

from __future__ import annotations

import struct

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport

from chatd.proxied import HEADER_WAIT, ProxiedEndpoint, ProxiedFactory

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class Session(Protocol):
    """Records when it started, the address it saw then, and what it received."""

    def __init__(self) -> None:
        self.peer = None
        self.received = b""
        self.lost = False

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def _connect() -> tuple[object, Session, StringTransport, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    session = Session()
    factory = ProxiedFactory(Factory.forProtocol(lambda: session), reactor)
    wrapper = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    wrapper.makeConnection(transport)
    return wrapper, session, transport, reactor


def test_the_session_starts_after_a_v1_header_with_the_clients_address():
    wrapper, session, transport, _ = _connect()
    assert session.peer is None  # not started before the header
    wrapper.dataReceived(b"PROXY TCP4 192.0.2.7 10.0.0.5 51234 ")
    assert session.peer is None
    wrapper.dataReceived(b"2323\r\nlogin ann\r\n")
    assert session.peer == IPv4Address("TCP", "192.0.2.7", 51234)
    assert session.received == b"login ann\r\n"
    assert wrapper.getHost() == IPv4Address("TCP", "10.0.0.5", 2323)
    wrapper.dataReceived(b"more\r\n")
    assert session.received == b"login ann\r\nmore\r\n" and not transport.disconnecting


def test_a_v2_header_split_over_reads_names_an_ipv6_client():
    wrapper, session, _, _ = _connect()
    addresses = bytes.fromhex("20010db8" + "0" * 23 + "1") + bytes.fromhex("20010db8" + "0" * 23 + "2") \
        + struct.pack("!HH", 51234, 6667)
    header = V2_SIGNATURE + bytes([0x21, 0x21]) + struct.pack("!H", len(addresses)) + addresses
    for i in range(0, len(header), 5):
        wrapper.dataReceived(header[i:i + 5])
    assert session.peer == IPv6Address("TCP", "2001:db8::1", 51234)
    assert session.received == b""


def test_a_connection_that_does_not_start_with_the_header_is_closed_unstarted():
    for first in (b"login ann\r\n", b"PROXY nonsense here\r\n", b"GET / HTTP/1.1\r\n"):
        wrapper, session, transport, _ = _connect()
        wrapper.dataReceived(first)
        assert transport.disconnected or transport.disconnecting, first
        assert session.peer is None
        wrapper.connectionLost(None)
        assert not session.lost  # never started: nothing to tell it (no counts to undo)


def test_a_connection_without_a_header_is_closed_after_the_wait():
    wrapper, session, transport, reactor = _connect()
    wrapper.dataReceived(b"PROX")
    reactor.advance(HEADER_WAIT - 0.1)
    assert not transport.disconnected
    reactor.advance(0.2)
    assert transport.disconnected and session.peer is None


def test_the_endpoint_wraps_the_factory_it_listens_with():
    reactor = MemoryReactorClock()

    class Inner:
        def listen(self, factory):
            self.factory = factory
            return "port"

    inner = Inner()
    factory = Factory.forProtocol(Session)
    assert ProxiedEndpoint(inner, reactor).listen(factory) == "port"
    assert isinstance(inner.factory, ProxiedFactory) and inner.factory.wrappedFactory is factory
