"""
Socket options of the line front-end's TCP connections, and what it uses of
its transport (:class:`ILineTransport`). The core knows no sockets.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer, ITransport
from zope.interface import Attribute


def tcp_socket(transport: Any) -> socket.socket | None:
    """The TCP socket under ``transport`` (also under TLS), or None (tests, UNIX sockets)."""
    for _ in range(4):
        if transport is None:
            return None
        if isinstance(transport, tcp.Connection):
            sock = transport.socket
            return sock if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        transport = getattr(transport, "transport", None)
    return None


def set_keepalive(sock: socket.socket, idle: float) -> None:
    """
    Turn on TCP keepalive: probes after ``idle`` quiet seconds, then every
    idle/4 s; four unanswered probes and the kernel reports the peer dead
    (so a vanished client is found in about 2 * idle seconds).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle / 4)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


class ILineTransport(ITransport, IPushProducer):
    """
    What the line front-end (chatd.protocol.ChatProtocol) uses of its
    transport: ITransport, reading paused and resumed (IPushProducer),
    ``abortConnection`` and ``disconnecting``. A TCP connection (``tcp.Server``)
    declares all of it but ``disconnecting``, which it has; TLS
    (``TLSMemoryBIOProtocol``) declares only ITransport and has the rest, the
    producer methods through its wrapper's delegation to the TCP connection;
    so has the tests' ``StringTransport``. tests/test_types.py checks each.
    """

    disconnecting = Attribute("True once the connection is being closed (loseConnection or abortConnection).")

    def abortConnection() -> None:
        """Close the connection at once, dropping what is unsent (ITCPTransport.abortConnection)."""
