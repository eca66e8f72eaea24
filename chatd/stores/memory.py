"""
:class:`MemoryStore`: a :class:`chatd.store.Store` that keeps everything in
memory, for unit tests (and as the smallest example of a store). Nothing
survives the process; every answer is an already-fired Deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet import defer

from chatd.core.events import PrivateMessage
from chatd.store import AccountDict, EventName, Loaded, LogEvent, RoomRecord, StoreError, UserRecord
from chatd.text import name_key


class MemoryStore:
    """
    Accounts, rooms and events in dicts and lists. :attr:`events` holds
    the written events as ``(time, LogEvent)``; :meth:`log_event` queues
    until :meth:`flush_events` (or :meth:`stop`), as the CSV store batches.
    Set :attr:`broken` to a reason to make every change fail with
    StoreError (a full disk, in tests).

    :param now: the current ISO-8601 UTC time, for events.
    """

    def __init__(self, now: Callable[[], str] = lambda: "") -> None:
        self._now = now
        self.users: dict[str, UserRecord] = {}
        self.rooms: dict[str, RoomRecord] = {}
        self.private: list[PrivateMessage] = []
        self.events: list[tuple[str, LogEvent]] = []
        self._queued: list[tuple[str, LogEvent]] = []
        self.broken: str | None = None

    def load(self) -> defer.Deferred[Loaded]:
        return defer.succeed(Loaded(AccountDict(self.users), list(self.rooms.values()), [], private=list(self.private)))

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        return self.flush_events()

    def _change(self, change: Callable[[], None], event: LogEvent | None) -> defer.Deferred[None]:
        if self.broken is not None:
            self.flush_events()
            return defer.fail(StoreError(self.broken))
        change()
        self.flush_events()
        if event is not None:
            self.events.append((self._now(), event))
        return defer.succeed(None)

    def add_user(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        return self._change(lambda: self.users.__setitem__(name_key(record.name), record), event)

    def replace_password(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        key = name_key(record.name)
        return self._change(lambda: self.users.__setitem__(key, attrs.evolve(
            self.users.get(key, record), password_hash=record.password_hash)), event)

    def delete_user(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        def remove() -> None:
            self.users.pop(name_key(name), None)
            self.private = [m for m in self.private if name_key(m.recipient) != name_key(name)]

        return self._change(remove, event)

    def queue_private(self, message: PrivateMessage) -> defer.Deferred[None]:
        return self._change(lambda: self.private.append(message), None)

    def remove_private(self, messages: Sequence[PrivateMessage]) -> defer.Deferred[None]:
        def remove() -> None:
            self.private = [m for m in self.private if m not in messages]

        return self._change(remove, None)

    def add_room(self, record: RoomRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        return self._change(lambda: self.rooms.__setitem__(name_key(record.name), record), event)

    def delete_room(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        def remove() -> None:
            self.rooms.pop(name_key(name), None)

        return self._change(remove, event)

    def log_event(self, event: EventName, user: str = "", room: str = "", **details: object) -> defer.Deferred[None]:
        self._queued.append((self._now(), LogEvent(event, user, room, dict(details))))
        return defer.succeed(None)

    def flush_events(self) -> defer.Deferred[None]:
        self.events.extend(self._queued)
        self._queued = []
        return defer.succeed(None)
