"""
Listeners behind a TCP load balancer that speaks HAProxy's PROXY protocol
(``send-proxy`` / ``send-proxy-v2``; https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).

``--listen haproxy:tcp:2323`` (``--listen-web``, ``--listen-irc`` alike): every
connection starts with the PROXY header naming the client's address; the
session starts only once it has been read, so everything that looks at the
client's address (the per-address limits, ``/banip``, the server's own
machine for admin names, the event log) sees the client's, not the load
balancer's. Twisted's own ``haproxy:`` endpoint (``proxyEndpoint``) starts
the wrapped protocol at once and answers ``getPeer`` with the load
balancer's address until the header has come, which is too late for a
session that reads it on connecting; :class:`HeaderFirst` waits. A
connection that sends no valid header within :data:`HEADER_WAIT` seconds,
or something else first, is closed without a word (it did not come
through the load balancer). docs/OPERATIONS.md, "Several nodes".
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv6Address
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from chatd.twisted_internals import proxy_header_parsers

#: The ``--listen`` prefix of a listener behind a load balancer that sends the PROXY header (Twisted's spelling).
PREFIX = "haproxy:"
#: Seconds a connection has to send its PROXY header.
HEADER_WAIT = 10.0
#: How a v1 header starts.
V1_START = b"PROXY "


class HeaderFirst(ProtocolWrapper):
    """Reads the PROXY header, then starts the wrapped protocol with the client's address as ``getPeer``."""

    factory: ProxiedFactory

    def __init__(self, factory: ProxiedFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._pending = b""
        self._parser: Any = None
        self._info: Any = None
        self._timer: Any = None
        #: The connection underneath (a TCP transport).
        self._raw: Any = None

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, except that the wrapped protocol is connected once the header is read.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self._raw = transport
        self.factory.registerProtocol(self)
        self._timer = self.factory.reactor.callLater(HEADER_WAIT, transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self._info is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        v1, v2, invalid = proxy_header_parsers()
        if self._parser is None:  # which version: v2's 12-byte signature (and 4 more bytes), or "PROXY "
            data = self._pending = self._pending + data
            if len(data) >= 16 and data.startswith(v2.PREFIX):
                self._parser = v2()
            elif data.startswith(V1_START):
                self._parser = v1()
            elif v2.PREFIX.startswith(data[:12]) or V1_START.startswith(data):
                return  # too short to tell yet
            else:
                self._raw.abortConnection()  # not through the load balancer
                return
            self._pending = b""
        try:
            info, rest = self._parser.feed(data)  # (it keeps a partial header, bounded: 107 bytes or v2's length)
        except invalid:
            self._raw.abortConnection()
            return
        if info is None:
            return
        self._info = info
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        wrapped: Any = self.wrappedProtocol
        wrapped.makeConnection(self)
        if rest:
            wrapped.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._info is not None:
            super().connectionLost(reason)
        else:  # the wrapped protocol never started: nothing to tell it
            self.factory.unregisterProtocol(self)

    def getPeer(self) -> IAddress:
        """The client's address from the header (the load balancer's for a LOCAL header: its health check)."""
        if self._info is not None and self._info.source is not None:
            return _compressed(self._info.source)
        peer: IAddress = self._raw.getPeer()
        return peer

    def getHost(self) -> IAddress:
        if self._info is not None and self._info.destination is not None:
            return _compressed(self._info.destination)
        host: IAddress = self._raw.getHost()
        return host


def _compressed(address: Any) -> Any:
    """An IPv6 address as ``getPeer`` gives it (``2001:db8::1``; the v2 header's parser spells out every group)."""
    if isinstance(address, IPv6Address):
        return IPv6Address(address.type, ipaddress.ip_address(address.host).compressed, address.port)
    return address


class ProxiedFactory(WrappingFactory[HeaderFirst]):
    """Wraps every connection of ``wrappedFactory`` in :class:`HeaderFirst`."""

    protocol = HeaderFirst

    def __init__(self, wrappedFactory: IProtocolFactory, reactor: Any) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor

    def logPrefix(self) -> str:
        inner = getattr(self.wrappedFactory, "logPrefix", None)
        return f"{inner() if inner else type(self.wrappedFactory).__name__} (PROXY)"


@implementer(IStreamServerEndpoint)
class ProxiedEndpoint:
    """``endpoint`` whose connections start with the PROXY header (:class:`ProxiedFactory`)."""

    def __init__(self, endpoint: IStreamServerEndpoint, reactor: Any) -> None:
        self.endpoint = endpoint
        self.reactor = reactor

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        return self.endpoint.listen(ProxiedFactory(factory, self.reactor))
