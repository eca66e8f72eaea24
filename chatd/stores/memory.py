"""
:class:`MemoryStore`: a :class:`chatd.store.Store` that keeps everything in
memory, for unit tests (and as the smallest example of a store). Nothing
survives the process; every answer is an already-fired Deferred.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from twisted.internet import defer

from collections.abc import Mapping

from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.store import (
    FILE_CHUNK_SIZE, LINE_KINDS, PUBLIC_ROOM_ID, AccountDict, EventName, FileRecord, HistoryBatch, HistoryTail,
    Loaded, LogEvent, QueueFull, RoomRecord, RoomValue, StoreError, UserRecord,
)
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
        #: Room id -> its stored history events, oldest first.
        self.history: dict[str, list[RoomEvent]] = {}
        #: Room id -> where its history ends (kept when expiry empties it, as the CSV store does).
        self.tails: dict[str, HistoryTail] = {}
        #: Name key -> per-account values (Store.set_marks).
        self.marks: dict[str, dict[str, str]] = {}
        #: Room id -> (kind, key) -> value (Store.set_room_values).
        self.room_values: dict[str, dict[tuple[str, str], str]] = {}
        #: File id -> its record and its chunks (Store.store_file).
        self.files: dict[str, tuple[FileRecord, list[bytes]]] = {}

    def load(self) -> defer.Deferred[Loaded]:
        return defer.succeed(Loaded(AccountDict(self.users), list(self.rooms.values()), [], private=list(self.private),
                                    history=dict(self.tails), marks={k: dict(v) for k, v in self.marks.items()},
                                    room_values={k: dict(v) for k, v in self.room_values.items() if v}))

    shares_files = True

    def store_file(self, record: FileRecord, path: str) -> defer.Deferred[None]:
        """Read ``path`` in chunks, synchronously (a test's small file)."""
        if self.broken is not None:
            return defer.fail(StoreError(self.broken))
        chunks = []
        with open(path, "rb") as handle:
            while data := handle.read(FILE_CHUNK_SIZE):
                chunks.append(data)
        if sum(map(len, chunks)) != record.size:
            return defer.fail(StoreError(f"{path} does not have {record.size} bytes"))
        self.files[record.id] = (record, chunks)
        return defer.succeed(None)

    def read_file_chunk(self, file_id: str, seq: int) -> defer.Deferred[bytes]:
        kept = self.files.get(file_id)
        if kept is None or not 0 <= seq < len(kept[1]):
            return defer.fail(StoreError(f"file {file_id} has no chunk {seq} (expired)"))
        return defer.succeed(kept[1][seq])

    def expire_files(self, now: float) -> defer.Deferred[int]:
        gone = [file_id for file_id, (record, _) in self.files.items() if record.expires < now]
        for file_id in gone:
            del self.files[file_id]
        return defer.succeed(len(gone))

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
            self.marks.pop(name_key(name), None)
            for values in self.room_values.values():
                for kind_key in [kk for kk in values if kk[0] != "setting" and kk[1] == name_key(name)]:
                    del values[kind_key]

        return self._change(remove, event)

    #: False: one process (set it to share one MemoryStore between two states in a test, as PostgreSQL does).
    shares_private = False

    def queue_private(self, message: PrivateMessage, limit: int = 0) -> defer.Deferred[None]:
        key = name_key(message.recipient)
        if limit and sum(1 for queued in self.private if name_key(queued.recipient) == key) >= limit:
            return defer.fail(QueueFull(f"{message.recipient} has {limit} messages queued"))
        return self._change(lambda: self.private.append(message), None)

    def take_private(self, name: str) -> defer.Deferred[list[PrivateMessage]]:
        if self.broken:
            return defer.fail(StoreError(self.broken))
        key = name_key(name)
        taken = [message for message in self.private if name_key(message.recipient) == key]
        self.private = [message for message in self.private if name_key(message.recipient) != key]
        return defer.succeed(taken)

    def remove_private(self, messages: Sequence[PrivateMessage]) -> defer.Deferred[None]:
        def remove() -> None:
            self.private = [m for m in self.private if m not in messages]

        return self._change(remove, None)

    def add_room(self, record: RoomRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        return self._change(lambda: self.rooms.__setitem__(name_key(record.name), record), event)

    def delete_room(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        def remove() -> None:
            record = self.rooms.pop(name_key(name), None)
            if record is not None:
                self.history.pop(record.id, None)
                self.tails.pop(record.id, None)
                self.room_values.pop(record.id, None)

        return self._change(remove, event)

    def log_event(self, event: EventName, user: str = "", room: str = "", **details: object) -> defer.Deferred[None]:
        self._queued.append((self._now(), LogEvent(event, user, room, dict(details))))
        return defer.succeed(None)

    def flush_events(self) -> defer.Deferred[None]:
        self.events.extend(self._queued)
        self._queued = []
        return defer.succeed(None)

    def append_history(self, batches: Sequence[HistoryBatch]) -> defer.Deferred[None]:
        def append() -> None:
            stored = {PUBLIC_ROOM_ID} | {record.id for record in self.rooms.values()}
            for batch in batches:
                if batch.room_id in stored and batch.events:  # a room deleted meanwhile: dropped
                    held = self.history.setdefault(batch.room_id, [])
                    ids = {event.id for event in held}  # (an id the room has already is skipped, as PostgreSQL's)
                    held.extend(event for event in batch.events if event.id not in ids)
                    held.sort(key=lambda event: event.id)
                    lines = batch.lines_before + sum(event.kind in LINE_KINDS for event in batch.events)
                    if batch.events[-1].id > self.tails.get(batch.room_id, HistoryTail()).last_id:
                        self.tails[batch.room_id] = HistoryTail(batch.events[-1].id, lines)

        return self._change(append, None)

    def read_history(self, room_id: str, room: str, count: int, before: int | None = None,
                     kinds: frozenset[EventKind] | None = None, since: float = 0.0) -> defer.Deferred[list[RoomEvent]]:
        found = [event._replace(room=room) for event in self.history.get(room_id, ())
                 if (before is None or event.id < before) and (kinds is None or event.kind in kinds)
                 and event.at >= since]
        return defer.succeed(found[-count:] if count > 0 else [])

    def expire_history(self, before: float) -> defer.Deferred[int]:
        expired = 0
        for room_id, events in self.history.items():
            kept = [event for event in events if event.at >= before]
            expired += len(kept) < len(events)
            self.history[room_id] = kept
        return defer.succeed(expired)

    def set_marks(self, user: str, marks: Mapping[str, str], durable: bool = False) -> defer.Deferred[None]:
        def change() -> None:
            values = self.marks.setdefault(name_key(user), {})
            for key, value in marks.items():
                if value:
                    values[key] = value
                else:
                    values.pop(key, None)

        return self._change(change, None)

    def set_room_values(self, values: Sequence[RoomValue], event: LogEvent | None = None) -> defer.Deferred[None]:
        def change() -> None:
            for value in values:
                room = self.room_values.setdefault(value.room_id, {})
                if value.value:
                    room[(value.kind, value.key)] = value.value
                else:
                    room.pop((value.kind, value.key), None)

        return self._change(change, event)

    def set_room_owner(self, name: str, owner: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        def change() -> None:
            key = name_key(name)
            if key in self.rooms:
                self.rooms[key] = attrs.evolve(self.rooms[key], owner=owner)

        return self._change(change, event)
