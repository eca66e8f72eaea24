"""
The Store interface: what the shared state (chatd.factory) needs of the
place accounts, rooms and the event log are kept, and the values that cross
it. No file format lives here: ``chatd.persistence.CsvStore`` (the embedded
default) and ``chatd.stores.memory.MemoryStore`` (unit tests) implement it,
and only the composition root (chatd.service) names a concrete store.

Every method answers with a Deferred, the in-memory store too
(``defer.succeed``), so a store on a network changes no caller.
docs/ARCHITECTURE.md, "Stores".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Literal, Protocol

import attrs
from twisted.internet import defer

from chatd.core.events import EventKind, PrivateMessage, RoomEvent


@attrs.frozen(slots=True)
class UserRecord:
    """One account: its name as registered, its argon2 PHC hash, its ISO-8601 UTC creation time."""

    name: str
    password_hash: str
    created: str


@attrs.frozen(slots=True)
class RoomRecord:
    """
    One room: its name, its owner's name ("" for the public room), its
    ISO-8601 UTC creation time, and its id: a token of ASCII letters and
    digits (at most 32) that never changes and is never reused, which names
    the room's history (:meth:`Store.append_history`); the public room's
    is :data:`PUBLIC_ROOM_ID`. A store that loads a room without one gives
    it one (and keeps it).
    """

    name: str
    owner: str
    created: str
    id: str = ""


#: The id of the public room (chatd.settings.PUBLIC_ROOM), whose history is kept like any room's.
PUBLIC_ROOM_ID = "public"


#: The kinds of per-room values (:meth:`Store.set_room_values`, issue 14): the topic (key ""), a room setting
#: (key: its name, e.g. ``invite_only``), an operator (key: the account's name key), a voiced member, a ban, a
#: mute, an invite (the same). Values are short text the core encodes (chatd.moderation); "" deletes.
RoomValueKind = Literal["topic", "setting", "op", "voice", "ban", "mute", "invite"]
#: The room id under which server-wide values are kept (bans of an address or network).
SERVER = ""


@attrs.frozen(slots=True)
class RoomValue:
    """One per-room value: ``room_id`` (:attr:`RoomRecord.id`; :data:`SERVER`: server-wide), its kind, key, value."""

    room_id: str
    kind: RoomValueKind
    key: str
    value: str


@attrs.frozen(slots=True)
class HistoryTail:
    """
    Where a room's history ends, as loaded at start-up: the id of its last
    stored event (0: none) and how many lines (:data:`LINE_KINDS` events)
    it has had in all, counted from its first.
    """

    last_id: int = 0
    lines: int = 0


#: The kinds of room events that count as lines: what replay shows by
#: default and what unread counts count (joins, leaves and file offers are not).
LINE_KINDS: frozenset[EventKind] = frozenset({EventKind.SAY, EventKind.ME, EventKind.FILE})


@attrs.frozen(slots=True)
class HistoryBatch:
    """
    Events of one room to append to its history, in id order: the room's id
    (:attr:`RoomRecord.id`), the number of lines the room had before the
    first of them (so the store can keep the running count), the events.
    """

    room_id: str
    lines_before: int
    events: Sequence[RoomEvent]


#: The events of the event log (log.csv's ``event`` column): one row each,
#: docs/OPERATIONS.md, "The event log", lists their fields.
EventName = Literal[
    "register", "login", "rehash", "password_change", "account_delete", "login_failed", "logout", "disconnect", "replaced", "sendq_exceeded",
    "room_create", "room_delete", "join", "leave", "file_refused", "file", "file_aborted",
    # moderation and administration (issue 14): who did it is ``user``, to whom and why in the details
    "kick", "ban", "unban", "mute", "unmute", "topic", "room_setting", "invite", "uninvite", "op", "deop", "voice", "devoice",
    "owner",
    "lock", "unlock", "password_reset", "session_end", "address_ban", "address_unban", "notice", "make_admin",
    "remove_admin",
]


@attrs.frozen(slots=True)
class LogEvent:
    """
    One event for the event log, written with the change it belongs to
    (:meth:`Store.add_user` ...): ``event`` one of :data:`EventName`, the ``user``
    and ``room`` it concerns ("" if none), ``details`` short fields
    (docs/OPERATIONS.md lists them per event). The store stamps the time.
    """

    event: EventName
    user: str = ""
    room: str = ""
    details: Mapping[str, object] = attrs.field(factory=dict)


#: Bytes per row of a shared file's data in a store that shares files between nodes (``file_chunks``); the
#: same as chatd.transfer.PIECE, so a recipient's next piece is one row.
FILE_CHUNK_SIZE = 256 * 1024


@attrs.frozen(slots=True)
class FileRecord:
    """
    A verified file shared in a room, kept in the store for the other nodes'
    recipients (:meth:`Store.store_file`): its id (unique across nodes),
    room, name, size in bytes, SHA-256 (64 lowercase hex digits), sender,
    and when it was shared and stops being kept (seconds since the epoch).
    """

    id: str
    room_id: str
    name: str
    size: int
    sha256: str
    sender: str
    created: float
    expires: float


def address_fields(address: Any) -> dict[str, str]:
    """
    Event-log fields for a client's address (an ``IAddress``, from
    ``transport.getPeer()``): ``address`` (the IP) and ``port`` (the source
    port, which tells apart users behind one NAT; RFC 6302); ``{}`` for
    anything that is not an IP address (a UNIX socket).
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return {}
    return {"address": host, "port": str(port)}


class Accounts(MutableMapping[str, UserRecord]):
    """
    Accounts by name key (chatd.text.name_key). A store may keep them in a
    compact form and build the :class:`UserRecord` when one is read (a
    million accounts then load in about a second, one string each), so read
    single accounts, not :meth:`values`, on a hot path.
    """

    def hash_texts(self) -> Iterable[str]:
        """For each account a text holding its password hash (the hash, or the stored form around it); cheap."""
        return (record.password_hash for record in self.values())


class AccountDict(Accounts):
    """:class:`Accounts` as a plain dict of records (the in-memory store, a fresh server)."""

    def __init__(self, records: Mapping[str, UserRecord] | None = None) -> None:
        self._records: dict[str, UserRecord] = dict(records or {})

    def __getitem__(self, key: str) -> UserRecord:
        return self._records[key]

    def __setitem__(self, key: str, record: UserRecord) -> None:
        self._records[key] = record

    def __delitem__(self, key: str) -> None:
        del self._records[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


@attrs.frozen(slots=True)
class Loaded:
    """What the store held at start-up."""

    users: Accounts
    rooms: list[RoomRecord]
    #: Human-readable notes about damage that was repaired (torn lines).
    repairs: list[str]
    #: Human-readable notes about files brought to the current format.
    migrations: list[str] = attrs.field(factory=list)
    #: Private messages queued for offline accounts, oldest first.
    private: list[PrivateMessage] = attrs.field(factory=list)
    #: Where each room's history ends, by room id (rooms without history may be missing).
    history: Mapping[str, HistoryTail] = attrs.field(factory=dict)
    #: Per-account settings and read marks (:meth:`Store.set_marks`): name key -> key -> value.
    marks: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict)
    #: Per-room values (:meth:`Store.set_room_values`): room id -> (kind, key) -> value.
    room_values: Mapping[str, Mapping[tuple[str, str], str]] = attrs.field(factory=dict)
    #: The resume tokens' key (chatd.tokens) when the store keeps one for every node (PostgreSQL); b"": the
    #: data directory's (``chatd.datadir.load_token_key``).
    token_key: bytes = b""


class StoreError(Exception):
    """A change could not be made durable; nothing was acknowledged."""


class NameTakenError(StoreError):
    """
    :meth:`Store.add_user` or :meth:`Store.add_room`: the name (its name
    key) is stored already, by another node sharing the store (a store of
    one process never raises it: the state checks its own names first).
    """


class QueueFull(StoreError):
    """:meth:`Store.queue_private` with a ``limit``: the recipient has that many messages queued already."""


class Store(Protocol):
    """
    Accounts, rooms and the event log. Changes fire once durable and fail
    with :class:`StoreError`; a change given a :class:`LogEvent` has that
    event stored no later than the change (an acknowledged change always has
    its log row).
    """

    def load(self) -> defer.Deferred[Loaded]:
        """Everything stored, at start-up."""

    def start(self) -> defer.Deferred[None]:
        """Start writing batched events (:meth:`log_event`)."""

    def stop(self) -> defer.Deferred[None]:
        """Stop; fires once every queued event is written."""

    def add_user(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Store a new account."""

    def replace_password(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Store ``record.password_hash`` as the new hash of the account ``record.name``."""

    def delete_user(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Remove the account ``name`` (any case) and the private messages
        queued for it; its rooms are the caller's to delete first.
        """

    #: Whether the queued private messages are shared by several nodes (PostgreSQL): the state never keeps
    #: the loaded copy, it takes an account's messages from the store at each login (:meth:`take_private`) and
    #: the store enforces ``queue_private``'s ``limit``. False (CSV, memory): one process keeps them in memory.
    shares_private: bool

    def queue_private(self, message: PrivateMessage, limit: int = 0) -> defer.Deferred[None]:
        """
        Keep ``message`` for its offline recipient; fires once it is durable.
        ``limit`` (a store with :attr:`shares_private`; 0: none): fails with
        :class:`QueueFull` if the recipient has that many queued already.
        """

    def remove_private(self, messages: Sequence[PrivateMessage]) -> defer.Deferred[None]:
        """Forget the queued ``messages`` (delivered); fires once that is durable."""

    def take_private(self, name: str) -> defer.Deferred[list[PrivateMessage]]:
        """
        The private messages queued for the account ``name`` (any case),
        oldest first, deleted in the same transaction: of several nodes
        taking at once each message goes to exactly one, once. Fails with
        StoreError (then nothing was deleted).
        """

    def add_room(self, record: RoomRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Store a new room."""

    def delete_room(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Remove the room ``name`` (any case) and its history."""

    def log_event(self, event: EventName, user: str = "", room: str = "", **details: object) -> defer.Deferred[None]:
        """Queue one event (:class:`LogEvent`'s fields); fires once queued, it is written in the next batch."""

    def flush_events(self) -> defer.Deferred[None]:
        """Write the queued events now; fires once they are written (or kept for a retry)."""

    # -- moderation (issue 14) --

    def set_room_values(self, values: Sequence[RoomValue], event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Set per-room values (a value "" deletes its key), all together; fires
        once they and ``event`` are durable, fails with StoreError (none of
        them then counts). Deleting a room deletes its values; deleting an
        account deletes the values keyed by its name key.
        """

    def set_room_owner(self, name: str, owner: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Make ``owner`` the owner of the room ``name`` (any case); fires once that and ``event`` are durable."""

    # -- room history (docs/ARCHITECTURE.md, "History") --

    def append_history(self, batches: Sequence[HistoryBatch]) -> defer.Deferred[None]:
        """
        Append each batch to its room's history (rooms in any order, each
        room's events in id order, never an id twice); fires once all of them
        are durable (one write and one fsync per room), fails with StoreError
        (nothing of a failed room's batch may be assumed stored). Events of a
        room no longer stored are dropped.
        """

    def read_history(self, room_id: str, room: str, count: int, before: int | None = None,
                     kinds: frozenset[EventKind] | None = None, since: float = 0.0) -> defer.Deferred[list[RoomEvent]]:
        """
        The newest ``count`` stored events of room ``room_id`` with an id below
        ``before`` (None: any), of ``kinds`` (None: every kind), that happened
        at or after ``since`` (seconds since the epoch), oldest first, each
        with ``room`` as its room name. Reads only as much of the end of the
        history as it needs. Fails with StoreError.
        """

    def expire_history(self, before: float) -> defer.Deferred[int]:
        """
        Delete the stored history older than ``before`` (seconds since the
        epoch), in whole segments: a segment goes once its newest event is
        older. Fires with the number of segments deleted.
        """

    # -- files across nodes (issue 17; docs/ARCHITECTURE.md, "Several nodes") --

    #: Whether the store keeps shared files for other nodes (PostgreSQL, memory); the CSV store does not (its
    #: three methods below are never called: one process reads its spool).
    shares_files: bool

    def store_file(self, record: FileRecord, path: str) -> defer.Deferred[None]:
        """
        Copy the file at ``path`` (``record.size`` bytes) into the store in
        :data:`FILE_CHUNK_SIZE` rows, streamed (never the whole file in
        memory), with its record, in one transaction; fires once committed.
        Fails with StoreError (nothing kept), or OSError (the file).
        """

    def read_file_chunk(self, file_id: str, seq: int) -> defer.Deferred[bytes]:
        """Row ``seq`` (0, 1, ...) of the data of file ``file_id``; fails with StoreError if it is not kept (expired)."""

    def expire_files(self, now: float) -> defer.Deferred[int]:
        """Delete the files (and their data) kept until before ``now``; fires with how many. Safe on several nodes."""

    def set_marks(self, user: str, marks: Mapping[str, str], durable: bool = False) -> defer.Deferred[None]:
        """
        Set per-account values of ``user`` (keys of ASCII letters, digits, ``:``
        and ``_``; values short text; "" deletes a key): a read mark
        (``read:ROOM_ID`` -> lines count) or a setting (``replay`` -> ``off``).
        ``durable``: fires once on disk (a setting the user is told about);
        else batched like log events. Deleting the account deletes them.
        """
