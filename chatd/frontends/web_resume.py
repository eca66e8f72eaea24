"""
Keeping a browser session going across a dropped connection (issue 15;
docs/PROTOCOL.md, "Resuming a session" and "Pings"):

- :func:`token_fields`: the resume token (chatd.tokens) a ``login`` message
  carries; :class:`Keeper` sends a fresh one (``{"type": "token"}``) to each
  logged-in page every few minutes, so a connected page always holds one
  valid for minutes yet.
- :func:`resume`: the ``resume`` message, a login by token, then back into
  the room with what was missed (:func:`catch_up`: the events after the last
  id the page saw, read through the factory's history, not the usual replay).
- :class:`Keeper` also pings: every ``--web-ping`` seconds each connection
  that sent nothing since the last round gets a WebSocket ping; one that
  answers nothing (no pong, no message) by the round after is a dead network
  path and is closed. A pong is not input for ``--idle-timeout`` (as TCP
  keepalive is not on the line front-end): pings only find dead peers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd import errors
from chatd.commands.builtin import deliver_queued
from chatd.commands.history import ID_MAX
from chatd.commands.table import Caller
from chatd.core.events import RoomEvent
from chatd.core.ports import Session
from chatd.limits import try_again
from chatd.text import ROOM_NAME_MAX

if TYPE_CHECKING:
    from twisted.web.websocket import WebSocketTransport

    from chatd.factory import ChatFactory, Room

log = Logger()

#: What a page is told when its token is not taken (bad, expired or void): it shows the login form again.
RESUME_EXPIRED = "your session expired; please log in again."
#: Events a catch-up shows at most (the newest of those missed; ``older`` says where to page back from).
CATCH_UP_MAX = 200
#: Seconds between two rounds of token refreshes, and the age at which a page's token is replaced.
REFRESH_EVERY = 60.0
REFRESH_AGE = 240.0
#: The payload of the server's pings.
PING_PAYLOAD = b"chatd"


class WebSession(Caller, Session, Protocol):
    """
    What this module needs of a browser session (chatd.frontends.web.WebSession, which imports this module:
    described here so that nothing imports web.py back): a command's caller and a session, with these.
    """
    #: The resume token last sent ("" for none) and when (seconds since the epoch).
    token: str
    token_issued: float
    #: Pings: something came since the last round; a ping is unanswered.
    heard: bool
    pinged: bool
    #: The TCP or TLS transport underneath (aborted when a ping goes unanswered).
    stream: Any
    transport: WebSocketTransport | None

    @property
    def held(self) -> bool: ...

    def send(self, value: dict[str, Any]) -> None: ...

    def logged_in(self, name: str, text: str, resumed: bool = False) -> None: ...

    def entered(self, room: Room, replay: Sequence[RoomEvent] = (), older: int | None = ...) -> None: ...


def token_fields(session: WebSession) -> dict[str, Any]:
    """
    ``{"token", "expires"}`` for ``session``'s account (expires: seconds since the epoch), noted as its
    token; ``{}`` if the account is gone (deleted meanwhile).
    """
    try:
        token, expires = session.factory.tokens.issue(session.name or "")
    except KeyError:
        return {}
    session.token, session.token_issued = token, session.factory.reactor.seconds()
    return {"token": token, "expires": expires}


def send_token(session: WebSession) -> None:
    """Send ``session`` a fresh token: ``{"type": "token", "token", "expires"}``."""
    session.send({"type": "token", **token_fields(session)})


def renew_if_void(result: Any, session: WebSession) -> Any:
    """
    A callback after a command with a secret argument (a password change):
    if the logged-in ``session``'s token no longer holds (its password hash
    changed), send it a fresh one. Passes ``result`` on.
    """
    if session.name is not None and session.token and session.factory.tokens.check(session.token)[1]:
        send_token(session)
    return result


def _problem(value: dict[str, Any]) -> str:
    """What is wrong with a ``resume`` message's fields; "" if nothing."""
    room, after = value.get("room"), value.get("after")
    if not isinstance(value.get("token"), str):
        return "a resume message needs \"token\": the token of your last login (a string)."
    if room is not None and (not isinstance(room, str) or len(room) > ROOM_NAME_MAX * 4):
        return "\"room\" is the name of the room to go back to (a string), or null."
    if after is not None and (type(after) is not int or not 0 <= after <= ID_MAX):
        return "\"after\" is the id of the last event you saw (a whole number), or null."
    return ""


def resume(session: WebSession, value: dict[str, Any]) -> defer.Deferred[None] | None:
    """
    A ``resume`` message (``{"type": "resume", "token", "room", "after"}``):
    log in as the token's account, as a login does (an older session of the
    account ends; private messages kept meanwhile are delivered); then, if
    ``room`` is given, enter it with the rules of ``join`` (a refusal is an
    ``error``, at the menu) and a catch-up (:func:`catch_up`) instead of the
    usual replay. A token not taken is answered :data:`RESUME_EXPIRED` and
    the connection stays at the menu; one the server never made counts as a
    failed login of the address (``--address-login-failures``).
    """
    factory = session.factory
    if session.name is not None:
        session.error("you are logged in already; log out first.")
        return None
    problem = _problem(value)
    if problem:
        session.error(problem)
        return None
    address = session.address_key or ""
    wait = factory.limits.login_refused(address)
    if wait:
        session.error("too many failed logins from your address; " + try_again(wait))
        return None
    name, why = factory.tokens.check(value["token"])
    if why:
        if why == "bad":
            factory.limits.login_failed(address)
        factory.store.log_event("login_failed", name, reason=f"token_{why}", **session.origin)
    try:
        if name:  # (a token of the server: a locked account is told so, as at a login)
            factory.admin.unlocked(name)
    except errors.NotAllowed as refused:
        session.error(str(refused))
        return None
    if why:
        session.error(RESUME_EXPIRED)
        return None
    session.logged_in(name, f"Logged in again as {name}.", resumed=True)
    deliver_queued(session)
    room, after = value.get("room"), value.get("after")
    if not room:
        return None
    return factory.enter(room, session).addCallback(lambda found: _entered(session, found[0], found[1], after))


def _entered(session: WebSession, room: Room, replay: Sequence[RoomEvent], after: int | None) -> None:
    """In the callback that found ``room`` open to ``session`` (no event in between): enter it, caught up."""
    if after is None or after > room.last_id:  # (no id, or one of a room deleted and made again: the replay)
        session.entered(room, replay)
        return
    events, older = catch_up(session.factory, room, after)
    session.entered(room, events, older)


def catch_up(factory: ChatFactory, room: Room, after: int) -> tuple[list[RoomEvent], int | None]:
    """
    The events of ``room`` (every kind: lines, joins, leaves, moderation)
    with an id above ``after``, oldest first, at most :data:`CATCH_UP_MAX`
    (the newest) and within ``--history-days``, from its history in memory
    (the ring, filled from the store by ``ChatFactory.enter``, and this
    turn's events); and ``older``: the id to page back from (``history
    before ID``) when events after ``after`` are not among them (more were
    missed, or the ring no longer holds them), else None.
    """
    if not factory.history.enabled:
        return [], None
    since = factory.reactor.seconds() - factory.settings.history_days * 86400.0
    held = [*room.history.ring, *room.fanout.pending()]
    shown = [event for event in held if event.id > after and event.at >= since][-CATCH_UP_MAX:]
    first = shown[0].id if shown else room.last_id + 1
    return shown, first if first > after + 1 else None


class Keeper:
    """
    Pings and token refreshes for the open web sessions of one
    ``WebSessions``: two LoopingCalls on the factory's reactor, running
    while any session is open (none: no timer at all).
    """

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        self.sessions: set[WebSession] = set()
        self._loops: list[LoopingCall] = []

    def opened(self, session: WebSession) -> None:
        """``session`` was admitted: ping it and refresh its token from now on."""
        self.sessions.add(session)
        if not self._loops:
            interval = self.factory.settings.web_ping
            for call, every in ((self.ping, interval), (self.refresh, REFRESH_EVERY)):
                if every > 0:
                    loop = LoopingCall(call)
                    loop.clock = self.factory.reactor
                    loop.start(every, now=False)
                    self._loops.append(loop)

    def closed(self, session: WebSession) -> None:
        """``session``'s connection is gone."""
        self.sessions.discard(session)
        if not self.sessions:
            for loop in self._loops:
                if loop.running:
                    loop.stop()
            self._loops = []

    def ping(self) -> None:
        """One round: ping each session silent since the last; close each silent since the ping before."""
        for session in list(self.sessions):
            if session.heard or session.held:  # (held: not being read, its pong waits unread)
                session.heard = session.pinged = False
            elif session.pinged:
                log.info("no answer to a ping from {who} in {seconds:g} seconds; closing the connection",
                         who=session.name or session.origin.get("address", "a web connection"),
                         seconds=self.factory.settings.web_ping)
                self.sessions.discard(session)
                session.stream.abortConnection()
            elif session.transport is not None:
                session.pinged = True
                session.transport.ping(PING_PAYLOAD)

    def refresh(self) -> None:
        """One round: each logged-in session whose token is :data:`REFRESH_AGE` seconds old gets a fresh one."""
        due = self.factory.reactor.seconds() - REFRESH_AGE
        for session in list(self.sessions):
            if session.name is not None and session.token and session.token_issued <= due:
                send_token(session)
