"""
Room history as the core keeps it: a ring of recent events per room in
memory, and the group commit that appends what happened to the store.

Each room's fan-out (``chatd.broadcast.Fanout``) hands its batch of events
to :meth:`RoomHistory.record` once per reactor turn: the batch joins the
ring (replay on join, recent ``/history``) and waits for the next commit.
Every :data:`COMMIT_INTERVAL` seconds :class:`History` gives the store
everything that waited, one :class:`~chatd.store.HistoryBatch` per room
(``Store.append_history``: one write and one fsync per room), and never
has more than one commit in flight: while one is being written, the next
batch grows. So history is on disk at most COMMIT_INTERVAL plus the time of
one commit after users saw it (docs/OPERATIONS.md, "Room history": the
0.5 s bound and what a crash loses). Per line this costs nothing but the
ring's ``extend`` and the line count, per room per turn one call.

A room's ring is filled from the store's tail lazily, the first time
someone joins the room or asks for its history (:meth:`History.fill`):
start-up reads only where each room's history ends (``Loaded.history``),
so it stays fast with years of history in thousands of rooms.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.core.events import RoomEvent
from chatd.settings import Settings
from chatd.store import LINE_KINDS, HistoryBatch, HistoryTail, Store, StoreError

#: Seconds between two commits of history to the store (the group commit; docs/OPERATIONS.md states the bound).
COMMIT_INTERVAL = 0.25
#: Seconds between two runs of the retention (``--history-days``): daily.
EXPIRY_INTERVAL = 86400.0
#: Events waiting for the store that are kept while it fails (the oldest are dropped beyond this, logged).
MAX_WAITING = 200_000
_LINE_KINDS = LINE_KINDS


def _merged(waiting: Iterable[tuple[RoomHistory, int, list[RoomEvent]]]) -> list[tuple[RoomHistory, HistoryBatch]]:
    """The batches recorded since the last commit, merged into one per room (in the order rooms first came)."""
    batches: dict[RoomHistory, tuple[int, list[RoomEvent]]] = {}
    for room, before, events in waiting:
        merged = batches.get(room)
        if merged is None:
            batches[room] = (before, list(events))
        else:
            merged[1].extend(events)
    return [(room, HistoryBatch(room.room_id, before, events)) for room, (before, events) in batches.items()]


class RoomHistory:
    """
    The history of one room in this process: ``ring`` (the newest events,
    at most ``--history-ring``, oldest first), ``lines`` (how many lines the
    room has had in all), ``stored_id`` (the last event id on disk at
    start-up: a ring fill reads up to it) and whether the ring has been
    filled from the store.
    """

    __slots__ = ("room_id", "ring", "lines", "stored_id", "filled", "_history", "_filling")

    def __init__(self, history: History, room_id: str, tail: HistoryTail, size: int) -> None:
        self._history = history
        self.room_id = room_id
        self.ring: deque[RoomEvent] = deque(maxlen=size)
        self.lines = tail.lines
        self.stored_id = tail.last_id
        #: Nothing older than the ring is on disk (a new room), or the ring was filled from it.
        self.filled = tail.last_id == 0
        self._filling: list[defer.Deferred[None]] | None = None

    def record(self, events: list[RoomEvent]) -> None:
        """A batch of the room's events, in id order (``Fanout.flush``, once per turn): remember and commit them."""
        self.ring.extend(events)
        before = self.lines
        lines = before
        for event in events:
            if event[4] in _LINE_KINDS:
                lines += 1
        self.lines = lines
        mine = self._history.mine
        if mine is not None:  # several nodes: the store gets each event once, from the node that published it
            events = [event for event in events if mine(event)]
            if not events:
                return
            before = lines - sum(1 for event in events if event[4] in _LINE_KINDS)
        self._history.waiting.append((self, before, events))

    def recent(self, count: int, since: float, newer: Iterable[RoomEvent] = (),
               kinds: frozenset[Any] = LINE_KINDS) -> list[RoomEvent]:
        """
        The last ``count`` events of ``kinds`` in memory that happened at or
        after ``since`` (seconds since the epoch), oldest first; ``newer``:
        events after the ring (the fan-out's queue of this turn).
        """
        found: list[RoomEvent] = []
        for event in reversed([*self.ring, *newer]):
            if len(found) >= count or event.at < since:
                break
            if event.kind in kinds:
                found.append(event)
        found.reverse()
        return found


class History:
    """
    The rooms' histories (:class:`RoomHistory`) and their commits to
    ``store``. Off (``--history-days 0``): rooms get no history, nothing
    is written, replay and ``/history`` find nothing.
    """

    log = Logger()

    def __init__(self, store: Store, reactor: IReactorTime, settings: Settings) -> None:
        self.store = store
        self.reactor = reactor
        self.settings = settings
        self.enabled = settings.history_days > 0
        #: Whether this node commits an event to the store (a networked bus's ``mine``); None: every event.
        self.mine: Callable[[RoomEvent], bool] | None = None
        #: A networked bus's position up to which every event it delivered is recorded here (``RedisBus.
        #: recorded``), and the last such position whose events are all in the store (:meth:`stored_through`).
        self.position: Callable[[], str] | None = None
        self._stored_mark: str | None = None
        #: Batches recorded since the last commit: (room, its line count before them, the events).
        self.waiting: list[tuple[RoomHistory, int, list[RoomEvent]]] = []
        self._committing: defer.Deferred[None] | None = None
        self._commit_started = 0.0
        #: When the store began failing the commits (reactor seconds; None: it takes them): logged once per outage.
        self._failing_since: float | None = None
        self._commits = LoopingCall(self.commit)
        self._commits.clock = reactor
        self._expiry = LoopingCall(self.expire)
        self._expiry.clock = reactor

    def room(self, room_id: str, tail: HistoryTail | None = None) -> RoomHistory:
        """The history of the room ``room_id``, which ends at ``tail`` (as loaded; None: a new room)."""
        return RoomHistory(self, room_id, tail or HistoryTail(), self.settings.history_ring)

    # -- commits ---------------------------------------------------------

    def start(self) -> None:
        """Commit every COMMIT_INTERVAL seconds; apply the retention now and daily."""
        if not self.enabled:
            return
        self._commits.start(COMMIT_INTERVAL, now=False)
        self._expiry.start(EXPIRY_INTERVAL, now=True)

    def stop(self) -> defer.Deferred[None]:
        """Stop the loops; fires once everything recorded is committed (or has failed, logged)."""
        for loop in (self._commits, self._expiry):
            if loop.running:
                loop.stop()
        return self._commit_all()

    @defer.inlineCallbacks
    def _commit_all(self) -> Any:
        while self._committing is not None or self.waiting:
            if self._committing is not None:
                yield self._committing
            else:
                failed = yield self.commit()
                if failed:
                    return  # the store is failing: what waits is logged as lost at shutdown
        return None

    def commit(self) -> defer.Deferred[bool]:
        """
        Hand everything waiting to the store, one batch per room (unless a
        commit is in flight: then it waits for the next). Fires with True if
        the store failed (the events wait for the next commit).
        """
        if self._committing is not None:
            return defer.succeed(False)
        mark = self.position() if self.position is not None else None
        if not self.waiting:
            self._stored_mark = mark  # (everything recorded up to it is stored)
            return defer.succeed(False)
        waiting, self.waiting = self.waiting, []
        work = [batch for _, batch in _merged(waiting)]
        self._commit_started = self.reactor.seconds()
        self._committing = defer.maybeDeferred(self.store.append_history, work)

        def done(_: None) -> bool:
            if self._failing_since is not None:
                self.log.info("room history stored again ({count} event(s) had waited {waited:.0f} s)",
                              count=sum(len(batch.events) for batch in work),
                              waited=self.reactor.seconds() - self._failing_since)
                self._failing_since = None
            took = self.reactor.seconds() - self._commit_started
            if took > COMMIT_INTERVAL:
                self.log.warn("a history commit of {rooms} room(s) took {took:.2f} s (more than {interval} s): "
                              "history is falling behind the chat", rooms=len(work), took=took,
                              interval=COMMIT_INTERVAL)
            # Every event recorded before this commit started was in it or in an earlier one (a failed
            # commit's events wait again, and go in the next): stored up to the position it started at.
            self._stored_mark = mark
            return False

        def failed(failure: Any) -> Any:
            if not failure.check(StoreError):  # no failure of the store's files: retrying cannot mend it
                return self._sift(waiting, failure)
            if self._failing_since is None:  # (retried every COMMIT_INTERVAL: said once, then once it is stored)
                self._failing_since = self.reactor.seconds()
                self.log.error("could not store room history: {why}; will retry (logged again once stored)",
                               why=failure.getErrorMessage())
            self.waiting[:0] = waiting
            excess = sum(len(events) for _, _, events in self.waiting) - MAX_WAITING
            while excess > 0 and self.waiting:
                _, _, events = self.waiting.pop(0)
                excess -= len(events)
                self.log.error("dropped {count} history event(s) the store could not take", count=len(events))
            return True

        def finished(result: bool) -> bool:
            self._committing = None
            return result

        return self._committing.addCallbacks(done, failed).addBoth(finished)

    def stored_through(self) -> str | None:
        """
        Several nodes: the bus position (:attr:`position`) up to which every
        event this node published is in the store (None: not known yet).
        Other nodes keep this node's events read after it, to store them if
        this node dies (``RedisBus``'s heartbeat carries it; docs/ARCHITECTURE.md,
        "Several nodes"). With history off, nothing waits: the position itself.
        """
        if not self.enabled:
            return self.position() if self.position is not None else None
        return self._stored_mark

    def adopt(self, history: RoomHistory, events: list[RoomEvent]) -> None:
        """
        Commit ``events`` of ``history``'s room that another node published
        and may not have stored (it died): the store skips the ids it has
        (``Store.append_history`` is idempotent per room and id).
        """
        if self.enabled and events:
            lines = sum(1 for event in events if event[4] in _LINE_KINDS)
            self.waiting.append((history, max(0, history.lines - lines), events))

    @defer.inlineCallbacks
    def _sift(self, waiting: list[tuple[RoomHistory, int, list[RoomEvent]]], failure: Any) -> Any:
        """
        A commit failed with something other than StoreError (a fault no
        retry mends): log it once and hand the store each room's batch on its
        own; a room whose batch fails the same way again loses it (logged),
        one that fails with StoreError waits for the next commit, the others
        are stored. Fires with True if any room failed.
        """
        self.log.failure("storing room history failed; storing each room on its own", failure)
        again: list[tuple[RoomHistory, int, list[RoomEvent]]] = []
        lost = False
        for room, batch in _merged(waiting):
            try:
                yield defer.maybeDeferred(self.store.append_history, [batch])
            except StoreError:
                again.append((room, batch.lines_before, list(batch.events)))
            except Exception:
                lost = True
                self.log.failure("dropped {count} history event(s) of room {room} that the store cannot take",
                                 count=len(batch.events), room=batch.room_id)
        self.waiting[:0] = again
        return lost or bool(again)

    def expire(self) -> defer.Deferred[None]:
        """Delete the history older than ``--history-days`` (whole segments; the store says how many)."""
        cutoff = self.reactor.seconds() - self.settings.history_days * 86400.0

        def expired(count: int) -> None:
            if count:
                self.log.info("deleted {count} day(s) of room history older than {days} days", count=count,
                              days=self.settings.history_days)

        def failed(failure: Any) -> None:
            self.log.error("could not delete old room history: {why}", why=failure.getErrorMessage())

        return self.store.expire_history(cutoff).addCallbacks(expired, failed)

    # -- reading ----------------------------------------------------------

    def fill(self, history: RoomHistory, room: str) -> defer.Deferred[None]:
        """
        Fill ``history``'s ring from the store's tail if it has not been
        (events up to ``stored_id``, before what the ring holds since
        start-up); fires once it is. A store failure is logged: the ring
        keeps what it has.
        """
        if history.filled or not self.enabled:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        if history._filling is not None:
            history._filling.append(d)
            return d
        history._filling = [d]
        size = history.ring.maxlen or 0

        def filled(events: list[RoomEvent]) -> None:
            history.ring = deque([*events, *history.ring], maxlen=size)

        def failed(failure: Any) -> None:
            self.log.error("could not read the history of {room}: {why}", room=room, why=failure.getErrorMessage())

        def done(_: None) -> None:
            history.filled = True
            waiting, history._filling = history._filling or [], None
            for each in waiting:
                each.callback(None)

        read = self.store.read_history(history.room_id, room, size, before=history.stored_id + 1)
        read.addCallbacks(filled, failed).addCallback(done)
        return d

    def read(self, history: RoomHistory, room: str, count: int, before: int | None, kinds: frozenset[Any],
             since: float, newer: Sequence[RoomEvent] = ()) -> defer.Deferred[list[RoomEvent]]:
        """
        The newest ``count`` events of ``kinds`` with an id below ``before``
        (None: any) at or after ``since``, oldest first: from the ring where
        it holds them, the rest from the store. ``newer``: the fan-out's
        queue of this turn.
        """
        if not self.enabled or count <= 0:
            return defer.succeed([])

        def search(_: None) -> defer.Deferred[list[RoomEvent]]:
            held = [*history.ring, *newer]
            first = held[0].id if held else (before or history.stored_id + 1)
            found = [event for event in held if (before is None or event.id < before) and event.kind in kinds
                     and event.at >= since][-count:]
            complete = len(held) < (history.ring.maxlen or 0) and history.filled
            if len(found) >= count or complete or (held and held[0].at < since):
                return defer.succeed(found)
            limit = first if before is None else min(first, before)
            older = self.store.read_history(history.room_id, room, count - len(found), before=limit, kinds=kinds,
                                            since=since)
            return older.addCallback(lambda events: [*events, *found])

        return self.fill(history, room).addCallback(search)
