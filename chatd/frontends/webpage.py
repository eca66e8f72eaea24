"""
The browser client's page: its static files (``chatd/web/static``, package
data) served with security headers, and the command only the page uses
(``rooms``: the room list as data). docs/PROTOCOL.md, "WebSocket (browser)
protocol"; docs/ARCHITECTURE.md, "The browser client".

- :class:`StaticFiles` is ``twisted.web.static.File`` without directory
  listings (404), with UTF-8 content types for the page's text files.
- :class:`PageSite` is the ``server.Site`` that puts :data:`SECURITY_HEADERS`
  on every response (files, 404s, the WebSocket's 403) and refuses a Host
  that is not this server's (chatd.frontends.web_host); :class:`Health` is
  ``/health``, for a load balancer's checks, left out of the access log.
- :data:`WEB_TABLE` is ``chatd.commands.TABLE`` plus ``rooms`` (a copy, as
  docs/ARCHITECTURE.md allows a front-end).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.web import http, pages, resource, server, static

from chatd.commands import TABLE
from chatd.commands.table import Caller, Login, Place
from chatd.frontends.web_host import HostCheck
from chatd.nodes import members_everywhere

if TYPE_CHECKING:
    from chatd.factory import Room

#: The page's files (index.html, app.js, connection.js, style.css ...), installed with chatd as package data.
STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web", "static")

#: Sent with every HTTP response of ``--listen-web``. The page runs no inline script or style and loads nothing
#: from elsewhere; ``blob:``/``data:`` images are for files shown in the page; it may not be framed (clickjacking).
SECURITY_HEADERS = (
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class StaticFiles(static.File):
    """The page's files: a directory is never listed (404), text files are UTF-8, JavaScript is ``text/javascript``."""

    contentTypes = {
        **static.File.contentTypes,
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
    }

    #: (Twisted's own answers here are deprecated for not escaping HTML; it types them as those classes.)
    childNotFound = pages.notFound()  # type: ignore[assignment]  # a resource, not File's deprecated class
    forbidden = pages.forbidden()  # type: ignore[assignment]  # a resource, not File's deprecated class

    def directoryListing(self) -> resource.IResource:
        return self.childNotFound


#: The path a load balancer checks a node's web front-end at (deploy/haproxy.cfg): answered, never logged.
HEALTH_PATH = b"/health"


class Health(resource.Resource):
    """
    ``GET /health``: ``200 ok`` while the node serves, ``503 stopping`` once it shuts down (a load balancer
    takes it out before its port closes). A node answers at all only once it accepts users (caught up with
    the bus: chatd.service holds its ports until then).
    """

    isLeaf = True

    def __init__(self, factory: Any) -> None:
        super().__init__()
        self.factory = factory

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self.factory.closing:
            request.setResponseCode(503)
            return b"stopping\n"
        return b"ok\n"

    render_HEAD = render_GET


class PageSite(server.Site):
    """
    A Site that sets :data:`SECURITY_HEADERS` on every response before finding its resource, answers a request
    whose Host is not allowed with 400 or 421 (``host_check``: chatd.frontends.web_host) and a path with a NUL
    byte (``%00``, which no file name holds) with 404. Requests of :data:`HEALTH_PATH` are not logged (a load
    balancer asks every few seconds).
    """

    def __init__(self, *args: Any, host_check: HostCheck | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host_check = host_check or HostCheck()

    def log(self, request: http.Request) -> None:
        if getattr(request, "path", None) != HEALTH_PATH:
            super().log(request)

    def getResourceFor(self, request: server.Request) -> Any:
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        refusal = self.host_check.refusal(request)
        if refusal is not None:
            return refusal
        if not all(_servable(segment) for segment in request.postpath or ()):
            return pages.notFound()
        return super().getResourceFor(request)


def _servable(segment: bytes) -> bool:
    """
    Whether a path segment may name a file: no NUL byte, and UTF-8 (``static.File`` logs a traceback for a
    segment it cannot decode, on every such request). Anything else is answered 404 before a resource sees it.
    """
    if b"\x00" in segment:
        return False
    try:
        segment.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def page_root(directory: str = STATIC_DIR) -> StaticFiles:
    """The root resource: ``index.html`` at ``/``, the other files by name (the WebSocket is put beside them)."""
    return StaticFiles(directory)


# -- the commands only the page uses --------------------------------------------------------


class RoomsCaller(Caller, Protocol):
    """A caller that can show the room list as data (the web front-end's session)."""

    def show_rooms(self, rooms: list[dict[str, Any]]) -> None:
        """Send the room list (one object per room, the fields of :func:`room_value`)."""


def room_value(caller: Caller, room: Room) -> dict[str, Any]:
    """
    A room as the page lists it: name, members (in it now), topic, unread (None: never left), owner,
    invite_only, secret, keyed (a key is needed: never the key), limit (0: none).
    """
    factory = caller.factory
    return {"name": room.name, "members": len(members_everywhere(factory, room)), "topic": room.authority.topic,
            "unread": factory.unread(caller.session.name, room), "owner": room.owner,
            "invite_only": room.authority.invite_only, "secret": room.authority.secret,
            "keyed": bool(room.authority.key), "limit": room.authority.limit}


WEB_TABLE = TABLE.copy()


@WEB_TABLE.command("rooms", "the rooms as data (the page's room list; the same rooms as list)", Place.ANYWHERE,
                   login=Login.REQUIRED, listed=False)
def rooms(caller: RoomsCaller) -> defer.Deferred[None]:
    """The rooms ``list`` shows to this user (``Moderation.may_see``), as one ``rooms`` message."""
    factory, name = caller.factory, caller.session.name
    may_see = factory.moderation.may_see

    def show(found: list[Room]) -> None:
        caller.show_rooms([room_value(caller, room) for room in found if may_see(room, name)])

    return factory.list_rooms().addCallback(show)
