"""
Which ``Host`` the browser front-end answers (docs/OPERATIONS.md, "The
browser front-end", ``--web-host``): a defence against DNS rebinding, where
a foreign page makes its own name resolve to this server and then talks to
it as its own origin (the Origin check alone trusts the request's Host, so
it would pass). Every request of ``--listen-web`` (the page, ``/files`` and
the WebSocket alike) must carry exactly one Host header, naming:

- an IP address literal (IPv4, or IPv6 in brackets), any port;
- ``localhost``, or this machine's host name or fully qualified name
  (``socket.gethostname()``, ``socket.getfqdn()``), any port;
- a name given with ``--web-host`` (repeatable), any port.

Names compare without case and without a trailing dot. Anything else is
answered 421 Misdirected Request (RFC 9110, 15.5.20); no Host, two of them
or an unparseable one 400 Bad Request (RFC 9112, 3.2: "A server MUST
respond with a 400 ... to any HTTP/1.1 request message that lacks a Host
header field and to any request message that contains more than one Host
header field line or a Host header field with an invalid field value").
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final

from twisted.web import resource, server

#: A host name as DNS writes one (letters, digits, ``-``, dots), optionally fully qualified (a trailing dot).
_NAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?\Z")
_PORT: Final = re.compile(r"[0-9]{1,5}\Z")


@functools.cache
def machine_names() -> frozenset[str]:
    """``localhost`` and this machine's names (``socket.gethostname()``, ``socket.getfqdn()``), lower case; once."""
    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    return frozenset(name.lower().rstrip(".") for name in names if name)


def host_name(value: str) -> str | None:
    """
    The host of a ``Host`` header value without its port, lower case
    without a trailing dot (an IPv6 literal without its brackets), or None
    if it is no ``host[:port]``.
    """
    if value.startswith("["):
        literal, _, rest = value[1:].partition("]")
        if rest and not (rest.startswith(":") and _PORT.match(rest[1:])):
            return None
        try:
            return str(ipaddress.IPv6Address(literal))
        except ValueError:
            return None
    name, colon, port = value.rpartition(":") if ":" in value else (value, "", "")
    if colon and not _PORT.match(port):
        return None
    if not _NAME.match(name):
        return None
    return name.lower().rstrip(".")


def host_allowed(name: str, names: frozenset[str]) -> bool:
    """Whether ``name`` (:func:`host_name`'s) is an IP literal or one of ``names`` (lower case, no trailing dot)."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names


class Refusal(resource.Resource):
    """A plain-text answer with ``code`` and its ``reason`` phrase (Twisted's table lacks 421)."""

    isLeaf = True

    def __init__(self, code: int, reason: bytes, text: str) -> None:
        super().__init__()
        self.code, self.reason, self.text = code, reason, text

    def render(self, request: server.Request) -> bytes:
        request.setResponseCode(self.code, self.reason)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.text.encode() + b"\n"


class HostCheck:
    """The Host rule of a site: :meth:`refusal` of a request, None if it may go on."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        #: The names answered: this machine's (looked up here, at start-up, never in a request: getfqdn may ask
        #: DNS) and the ``--web-host`` ones, lower case without a trailing dot.
        self.names = machine_names() | {name.lower().rstrip(".") for name in names}

    def refusal(self, request: server.Request) -> resource.IResource | None:
        """A 400 or 421 page for ``request`` if its Host is not exactly one allowed value, else None."""
        values = request.requestHeaders.getRawHeaders(b"host") or []
        if len(values) != 1:
            return Refusal(400, b"Bad Request", "A request carries exactly one Host header.")
        name = host_name(values[0].decode("latin-1").strip())
        if name is None:
            return Refusal(400, b"Bad Request", "The Host header is no host[:port].")
        if not host_allowed(name, self.names):
            return Refusal(421, b"Misdirected Request", "This server does not answer to that name (see --web-host).")
        return None


def valid_web_host(name: str) -> bool:
    """Whether ``name`` may be given to ``--web-host``: a DNS name (not an IP address, which is always allowed)."""
    return bool(_NAME.match(name)) and host_name(name) == name.lower().rstrip(".")
