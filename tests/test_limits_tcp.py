"""The limits on real TCP connections (in-process server on 127.0.0.1, real reactor)."""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet.task import deferLater

from helpers import make_factory


@pytest_twisted.inlineCallbacks
def test_keepalive_set_on_accepted_connections(tmp_path):
    """Every accepted connection gets TCP keepalive with the configured idle time, so dead peers are found."""
    from twisted.internet import reactor

    factory, _ = make_factory(str(tmp_path))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        for _ in range(200):
            if factory.connections:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        (server,) = factory.connections
        sock = server.transport.socket
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == int(factory.settings.keepalive)
    finally:
        client.close()
        factory.limits.stop()
        factory.store.stop()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_nodelay_only_for_talkers(tmp_path):
    """TCP_NODELAY goes on a connection once it says something in a room; listeners keep Nagle."""
    from twisted.internet import reactor

    factory, clock = make_factory(str(tmp_path))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    talker = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    listener = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        for client, name in ((talker, "talker"), (listener, "listener")):
            client.sendall(f"register {name}\r\nsecret1\r\nsecret1\r\npublic\r\n".encode())
        talker.sendall(b"hello\r\n")
        for _ in range(300):
            said = [p for p in factory.connections if p.name == "talker" and p._nodelay]
            if said and len(factory.rooms["public"].fanout) == 2:
                break
            yield deferLater(reactor, 0.01, lambda: None)
        nodelay = {p.name: p.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                   for p in factory.connections}
        assert nodelay["talker"] != 0
        assert nodelay["listener"] == 0
    finally:
        talker.close()
        listener.close()
        factory.limits.stop()
        factory.store.stop()
        yield port.stopListening()
