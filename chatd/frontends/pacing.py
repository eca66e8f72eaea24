"""
Flow control for the front-ends that take whole units (a WebSocket message,
an IRC line) rather than the line front-end's bytes.

- :class:`Pacing` takes queued units one at a time: each costs one token of
  the session's flood allowance (``chatd.limits.TokenBucket``); while over
  it, or while a command waits for its answer, nothing more is taken and the
  connection is not read (TCP pushes back on the sender).
- :func:`sendq_exceeded` says when a connection's unsent output has passed
  ``--max-outbound`` (the SendQ), and logs it as the line front-end does.
- :func:`send_at_once` sends output straight on an idle TCP socket, as the
  line front-end does, instead of through the reactor's next turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet import abstract, tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.limits import TokenBucket
from chatd.twisted_internals import nothing_unsent, unsent_bytes

log = Logger()

U = TypeVar("U")


class Pacing(Generic[U]):
    """
    The received units of one connection and why they are not taken now.

    ``run(unit)`` handles one unit; ``stream()`` is the transport to pause
    (None: none yet). Once it is closing (``disconnecting``: loseConnection,
    abortConnection; a wrong PASS, too many failed logins, a kick) nothing
    more is taken, not even what was queued before, and it is neither paused
    nor resumed, as the line front-end reads no line then
    (``ChatProtocol.lineReceived``); ``too_fast()`` tells the user once in a while that input
    is being delayed; ``ended()`` says whether the session is over (nothing
    more is taken); ``paused(seconds)`` is told each flood pause, as it
    adds up to the escalation (``Moderation.flood_paused``). :attr:`bucket`
    is the session's flood allowance (``Limits.flood_bucket``; the
    account's after login: :meth:`share`).
    """

    def __init__(self, reactor: IReactorTime, run: Callable[[U], None], stream: Callable[[], Any],
                 too_fast: Callable[[], None], ended: Callable[[], bool],
                 paused: Callable[[float], None] = lambda seconds: None) -> None:
        self.reactor = reactor
        self._paused = paused
        self.queue: deque[U] = deque()
        #: The flood allowance drawn on (None: no limit; the idle timeout reads its last use).
        self.bucket: TokenBucket | None = None
        #: Why units are not taken now: "flood" (over the allowance), "answer" (a command is waiting).
        self.holds: set[str] = set()
        self._run, self._stream, self._too_fast, self._ended = run, stream, too_fast, ended
        self._waiting: Any = None

    @property
    def held(self) -> bool:
        """Units wait (flood, or a command's answer): the login timeout does not count a wait for the server."""
        return bool(self.holds)

    def received(self, *units: U) -> None:
        """Queue ``units`` and take what may be taken now."""
        self.queue.extend(units)
        if not self.holds:
            self.take()

    def take(self) -> None:
        """Take queued units one at a time: each pays the flood allowance; over it, the rest waits."""
        queue = self.queue
        while queue and not self.holds and not self._ended() and not self._closing():
            bucket = self.bucket
            unit = queue.popleft()
            if bucket is not None:
                wait = bucket.take(self.reactor.seconds())
                if wait:
                    self.hold_for(wait)
                    if self._ended():  # (the escalation may have ended the session)
                        return
            self._run(unit)

    def _closing(self) -> bool:
        """The stream is closing (``disconnecting``): nothing more is taken, paused or resumed."""
        stream = self._stream()
        return stream is not None and stream.disconnecting

    def hold(self, reason: str) -> None:
        if not self.holds and not self._closing():
            stream = self._stream()
            if stream is not None:
                stream.pauseProducing()
        self.holds.add(reason)

    def release(self, reason: str) -> None:
        self.holds.discard(reason)
        if not self.holds and not self._ended() and not self._closing():
            stream = self._stream()
            if stream is not None:
                stream.resumeProducing()
            self.take()

    def hold_for(self, wait: float, escalate: bool = True) -> None:
        """
        Over the flood limit: take nothing more for ``wait`` seconds (the unit
        taken still counts); ``escalate``: the pause counts toward the escalation.
        """
        paused = wait
        if self._waiting is not None and self._waiting.active():
            paused -= max(0.0, self._waiting.getTime() - self.reactor.seconds())  # (counted already)
        self.cancel()
        self.hold("flood")
        bucket = self.bucket
        if bucket is not None and bucket.notice_due(self.reactor.seconds()):
            self._too_fast()

        def resume() -> None:
            self._waiting = None
            self.release("flood")

        self._waiting = self.reactor.callLater(wait, resume)
        if escalate:
            self._paused(paused)

    def spend(self) -> None:
        """Charge one token for something others see that no unit paid for (``Session.spend_allowance``)."""
        if self.bucket is not None:
            self.bucket.take(self.reactor.seconds())

    def share(self, bucket: TokenBucket | None, wait: float = 0.0) -> None:
        """Draw on ``bucket`` (the account's) from now on; ``wait``: its debt, paid by taking nothing meanwhile."""
        self.bucket = bucket
        if wait:
            self.hold_for(wait, escalate=False)  # (a debt, paid before anything was sent: as the line front-end)

    def cancel(self) -> None:
        """Stop the flood wait's timer (the connection is gone, or a new wait replaces it)."""
        if self._waiting is not None and self._waiting.active():
            self._waiting.cancel()
        self._waiting = None


def lowest_transport(transport: Any) -> abstract.FileDescriptor | None:
    """The TCP connection at or under ``transport`` (under TLS too), whose unsent bytes count; None if unknown."""
    for _ in range(4):
        if isinstance(transport, abstract.FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def sendq_exceeded(session: Any, transport: Any, size: int, room: Callable[[], str] = str) -> bool:
    """
    Whether writing ``size`` more bytes to ``transport`` would leave more
    than ``--max-outbound`` unsent on it (or the TCP connection under it):
    a peer that stopped reading. Asked before the write (``size`` 0: after
    it, for what TLS adds). If so it is logged, with a ``sendq_exceeded``
    row (queued: the bytes unsent, at most the limit; refused: ``size``, not
    written; ``room()``: the room or rooms ``session`` is in, space-separated,
    if any, asked only then), as the line front-end does; the caller does not write and cuts
    the connection off.
    """
    lowest = lowest_transport(transport)
    if lowest is None:
        return False
    queued = unsent_bytes(lowest)
    if queued + size <= session.factory.settings.max_outbound:
        return False
    log.warn("send queue exceeded: {queued} bytes unsent to {who} and {refused} more would pass --max-outbound; "
             "disconnecting", queued=queued, refused=size,
             who=session.name or session.origin.get("address", "a connection"))
    session.factory.store.log_event("sendq_exceeded", session.name or "", room(), queued=queued, refused=size,
                                    **session.origin)
    return True


def send_at_once(transport: Any, data: bytes) -> bytes:
    """
    Send ``data`` straight on the socket of ``transport`` if it is a plain TCP
    connection (``tcp.Server``) that is open and holds nothing unsent, as the
    line front-end does (``ChatProtocol.deliver``); ``transport.write`` would
    instead register the socket for writing and send on the reactor's next
    turn: two ``epoll_ctl`` calls and a turn per member per batch
    (docs/PERFORMANCE.md, "Issue 16: IRC members"). Returns the bytes still
    to write with ``transport.write``: b"" if all went, all of ``data`` under
    TLS, while output is queued (nothing overtakes it), while the connection
    closes, or on a socket error (the transport finds and reports it itself).
    """
    if not isinstance(transport, tcp.Server) or not transport.connected or transport.disconnecting \
            or not nothing_unsent(transport):
        return data
    try:
        sent = transport.socket.send(data)
    except OSError:  # BlockingIOError (the kernel's buffer is full) included
        return data
    return data[sent:]
