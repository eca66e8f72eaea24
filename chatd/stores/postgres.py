"""
:class:`PostgresStore`: the :class:`chatd.store.Store` on PostgreSQL, for
a server that shares its state with others (issue 17) or wants a database
of record. ``twistd chatd --store postgresql://USER:PASSWORD@HOST/DB``
(docs/OPERATIONS.md, "PostgreSQL store").

Every query runs in a thread of an ``twisted.enterprise.adbapi``
``ConnectionPool`` over psycopg 3 (:class:`Pools`), never on the reactor;
callers get Deferreds. Each method is one transaction
(:func:`transact`): a change fires only after its COMMIT, and the
:class:`~chatd.store.LogEvent` given with a change is inserted in the same
transaction, after the events queued before it. Changes run on one writer
connection, so they commit in the order they were asked for (as the CSV
store's writer thread writes); room history appends have a connection of
their own, and history reads a few more (:data:`READERS`).

The schema (:data:`MIGRATIONS`, one table per kind of record, a
``schema_version`` table) is created or brought up to date by
:meth:`PostgresStore.load`, inside a transaction holding an advisory lock
(:data:`SCHEMA_LOCK`): two nodes starting at once create it once. Account
and room names are unique through primary keys on their name key
(:func:`chatd.text.name_key`, stored as a column: PostgreSQL's ``lower``
would also fold non-ASCII letters): of two nodes registering one name at
once, exactly one commits, the other fails with
:class:`~chatd.store.NameTakenError`.

While PostgreSQL cannot be reached every call fails with
:class:`~chatd.store.StoreError` (``PostgreSQL is unavailable: ...``; logged
once per outage); a connection found broken is dropped, and the next call
connects again, so chatd recovers by itself once the server is back
(:func:`run_transaction`).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.datadir import TOKEN_KEY_BYTES
from chatd.persistence import ACCOUNT_KINDS, MAX_QUEUED_EVENTS, ROOM_ID, mark_row, room_value_row
from chatd.store import (
    FILE_CHUNK_SIZE, LINE_KINDS, PUBLIC_ROOM_ID, SERVER, AccountDict, EventName, FileRecord, HistoryBatch,
    HistoryTail, Loaded, LogEvent, NameTakenError, QueueFull, RoomRecord, RoomValue, StoreError, UserRecord,
)
from chatd.stores.jobs import HistoryJobs, Runner
from chatd.text import USER_NAME_MAX, check_name, clean_text, name_key

#: ``interaction(cursor, *args)``: work done inside one transaction, in a pool thread (or the calling thread);
#: a :data:`~chatd.stores.jobs.Runner` here runs one and returns a Deferred of its result.
Interaction = Callable[..., Any]

#: Connections reading room history beside the writer and the history appender (as the CSV store's readers).
READERS = 3
#: Connections copying and reading shared files' data (Store.store_file, read_file_chunk).
FILE_CONNECTIONS = 2
#: Seconds a connection attempt may take before the call fails (a host that drops packets).
CONNECT_TIMEOUT = 5
#: The key of the advisory lock held while the schema is created or migrated ("chat" in ASCII).
SCHEMA_LOCK = 0x63686174
#: The schema's version (``schema_version``): this chatd creates and reads it.
SCHEMA_VERSION = 4
#: The row of ``server_keys`` holding the resume tokens' key (chatd.tokens), hex.
TOKEN_KEY = "token"

#: The statements that bring the schema from the version before to each version. Times of log events are
#: ``timestamptz``; times of history events and offline messages are seconds since the epoch (``float8`` holds the
#: Python float exactly). ``name_key`` columns hold chatd.text.name_key of the name.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE users (
            name_key text PRIMARY KEY, name text NOT NULL, password_hash text NOT NULL, created text NOT NULL)""",
        """CREATE TABLE rooms (
            name_key text PRIMARY KEY, name text NOT NULL, owner text NOT NULL, created text NOT NULL,
            id text NOT NULL UNIQUE, seq bigserial NOT NULL)""",
        """CREATE TABLE log (
            seq bigserial PRIMARY KEY, at timestamptz NOT NULL, event text NOT NULL, user_name text NOT NULL,
            room text NOT NULL, details jsonb NOT NULL)""",
        """CREATE TABLE offline (
            seq bigserial PRIMARY KEY, at float8 NOT NULL, sender text NOT NULL, recipient text NOT NULL,
            recipient_key text NOT NULL, text text NOT NULL)""",
        "CREATE INDEX offline_recipient ON offline (recipient_key)",
        """CREATE TABLE marks (
            user_key text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (user_key, key))""",
        """CREATE TABLE room_values (
            room_id text NOT NULL, kind text NOT NULL, key text NOT NULL, value text NOT NULL,
            PRIMARY KEY (room_id, kind, key))""",
        "CREATE INDEX room_values_account ON room_values (key) WHERE kind IN ('op', 'ban', 'mute', 'invite')",
        # A page of history (newest first, below an id) is a backward scan of the primary key.
        """CREATE TABLE history (
            room_id text NOT NULL, id bigint NOT NULL, at float8 NOT NULL, kind text NOT NULL, sender text NOT NULL,
            text text NOT NULL, target text NOT NULL, until float8 NOT NULL, PRIMARY KEY (room_id, id))""",
        "CREATE INDEX history_at ON history (at)",
        # Where each room's history ends (kept when retention deletes every event: ids and line counts go on).
        """CREATE TABLE history_tails (
            room_id text PRIMARY KEY, last_id bigint NOT NULL, lines bigint NOT NULL)""",
    ],
    # Files shared across nodes (Store.store_file): one row per file, its data in FILE_CHUNK_SIZE rows.
    2: [
        """CREATE TABLE files (
            id text PRIMARY KEY, room_id text NOT NULL, name text NOT NULL, size bigint NOT NULL,
            sha256 text NOT NULL, sender text NOT NULL, created float8 NOT NULL, expires float8 NOT NULL)""",
        "CREATE INDEX files_expires ON files (expires)",
        """CREATE TABLE file_chunks (
            file_id text NOT NULL REFERENCES files (id) ON DELETE CASCADE, seq integer NOT NULL,
            data bytea NOT NULL, PRIMARY KEY (file_id, seq))""",
    ],
    # Voiced members (issue 16) are account values too: deleted with the account through the same index.
    3: [
        "DROP INDEX room_values_account",
        "CREATE INDEX room_values_account ON room_values (key) WHERE kind IN ('op', 'voice', 'ban', 'mute', 'invite')",
    ],
    # Keys every node uses alike (the resume tokens' key, TOKEN_KEY): made once, by whichever node loads first.
    4: ["CREATE TABLE server_keys (name text PRIMARY KEY, value text NOT NULL)"],
}


def masked_dsn(dsn: str) -> str:
    """
    ``dsn`` with its password replaced by ``***``, to log or show: the
    ``USER:PASSWORD@`` of a URL, a ``password=`` query parameter or keyword
    (libpq connection strings, PostgreSQL manual 34.1.1).
    """
    text = dsn
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            text = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)", r"\1***", text)


def _reason(error: BaseException) -> str:
    """One line saying why psycopg failed (its first line: no hints, no query)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _unavailable(error: psycopg.Error) -> bool:
    """Whether ``error`` says the server cannot be reached (rather than that a statement failed)."""
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


def _password(dsn: str) -> str:
    """The password ``dsn`` holds ("" if none, or if it does not parse: then psycopg refuses it anyway)."""
    try:
        return str(conninfo_to_dict(dsn).get("password") or "")
    except psycopg.Error:
        return ""


class _Health:
    """
    Turns psycopg errors into StoreErrors, the DSN's password never in their
    text (libpq's messages do not hold it; this makes sure); logs the first
    failure of an outage and the recovery after it (not every failed call).
    """

    log = Logger()

    def __init__(self, dsn: str) -> None:
        self._where = masked_dsn(dsn)
        self._password = _password(dsn)
        self._failing = False
        self._lock = threading.Lock()

    def _why(self, error: psycopg.Error) -> str:
        why = _reason(error)
        return why.replace(self._password, "***") if self._password else why

    def failed(self, error: psycopg.Error) -> StoreError:
        """The StoreError for ``error``: ``PostgreSQL is unavailable: WHY`` or ``PostgreSQL: WHY``."""
        why = self._why(error)
        if not _unavailable(error):
            return StoreError(f"PostgreSQL: {why}")
        with self._lock:
            first, self._failing = not self._failing, True
        if first:
            self.log.error("PostgreSQL at {where} is unavailable: {why}; changes fail until it is back",
                           where=self._where, why=why)
        return StoreError(f"PostgreSQL is unavailable: {why}")

    def worked(self) -> None:
        if self._failing:
            with self._lock:
                back, self._failing = self._failing, False
            if back:
                self.log.info("PostgreSQL at {where} is reachable again", where=self._where)


class _Stale(Exception):
    """BEGIN failed on a connection the server had closed (it restarted): nothing was done, so a retry is safe."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


def transact(connection: psycopg.Connection[Any], interaction: Interaction, *args: Any) -> Any:
    """
    ``interaction(cursor, *args)`` in one transaction on ``connection`` (an
    autocommit connection: ``connection.transaction()`` is the BEGIN):
    COMMIT when it returns, ROLLBACK when it raises. Raises :class:`_Stale`
    if the BEGIN found the connection closed by the server.
    """
    begun = False
    try:
        with connection.transaction():
            begun = True
            with connection.cursor() as cursor:
                return interaction(cursor, *args)
    except psycopg.OperationalError as error:
        if not begun and connection.broken:
            raise _Stale(error) from None
        raise


def run_transaction(get: Callable[[], psycopg.Connection[Any]], drop: Callable[[psycopg.Connection[Any]], None],
                    health: _Health, interaction: Interaction, *args: Any) -> Any:
    """
    :func:`transact` on the connection ``get`` gives (an open one, or a
    new one); a broken connection is given to ``drop``. A connection found
    stale at the BEGIN (PostgreSQL restarted since its last use) is
    replaced and the transaction tried once more: nothing had been done.
    Raises StoreError for a psycopg error (:meth:`_Health.failed`).
    """
    for again in (True, False):
        connection = None
        try:
            connection = get()
            result = transact(connection, interaction, *args)
        except (_Stale, psycopg.Error) as error:
            if connection is not None and connection.broken:
                drop(connection)
            if isinstance(error, _Stale):
                if again:
                    continue
                error = error.error
            raise health.failed(error) from None
        health.worked()
        return result


#: How chatd connects: autocommit (the transactions are :func:`transact`'s), a bounded connect time, its name in
#: ``pg_stat_activity``.
CONNECT_ARGS: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": "chatd"}
#: libpq's TCP settings (PostgreSQL manual 34.1.2) unless the DSN sets them: a server that vanishes without
#: closing the connection (powered off, a network cut) fails the call within about 30 s, where Linux's own
#: retransmission timeout would hold the writer, and every change behind it, for some 15 minutes.
TCP_ARGS: dict[str, int] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 4,
                            "tcp_user_timeout": 30_000}


def connection_args(dsn: str) -> dict[str, Any]:
    """The keyword arguments of psycopg.connect for ``dsn``: :data:`CONNECT_ARGS`, and :data:`TCP_ARGS` it lacks."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.Error:  # psycopg.connect says why
        given = {}
    return {**CONNECT_ARGS, **{key: value for key, value in TCP_ARGS.items() if key not in given}}


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection as chatd uses them (:func:`connection_args`)."""
    return psycopg.connect(dsn, **connection_args(dsn))


class Direct:
    """
    A :data:`Runner` on one connection in the calling thread (opened at the
    first call, again after it broke): every Deferred has fired when
    returned. For start-up (:meth:`PostgresStore.load_now`), chatd-admin and
    tests; a server's other work runs on :class:`Pools`.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: psycopg.Connection[Any] | None = None
        self._health = _Health(dsn)

    def __call__(self, interaction: Interaction, *args: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self.call, interaction, *args)

    def call(self, interaction: Interaction, *args: Any) -> Any:
        """Run it now; raises StoreError (or what ``interaction`` raises that is no psycopg error)."""
        return run_transaction(self._open, lambda _: self.close(), self._health, interaction, *args)

    def _open(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            self._connection = connect(self._dsn)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class Pools:
    """
    The connection pools of a running server's store: one writer
    connection (changes, log events, marks: committed in order), one for
    history appends (in order, never behind a change), up to
    :data:`READERS` for history reads, up to :data:`FILE_CONNECTIONS` for
    shared files' data (a long copy delays no change nor history read). Each is an adbapi
    ``ConnectionPool("psycopg", ...)``: its threads and per-thread
    connections, started when the reactor runs and closed by :meth:`close`.
    The transaction is ours (:func:`run_transaction`, not adbapi's
    ``runInteraction``, whose rollback of a dead connection logs tracebacks
    and hides the reason; so adbapi's ``cp_reconnect``, which only that
    path reads, is not used): a connection found broken is dropped
    (``ConnectionPool.disconnect``) and the next call in that thread
    connects again.
    """

    def __init__(self, dsn: str, reactor: Any) -> None:
        self._reactor = reactor
        self._health = _Health(dsn)
        self._pools = [self._pool(dsn, reactor, low, high)
                       for low, high in ((1, 1), (1, 1), (0, READERS), (0, FILE_CONNECTIONS))]

    @staticmethod
    def _pool(dsn: str, reactor: Any, low: int, high: int) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool("psycopg", dsn, cp_min=low, cp_max=high, cp_noisy=False,
                                     cp_reactor=reactor, **connection_args(dsn))

    def _runner(self, pool: adbapi.ConnectionPool) -> Runner:
        def run(interaction: Interaction, *args: Any) -> defer.Deferred[Any]:
            return deferToThreadPool(self._reactor, pool.threadpool, self._call, pool, interaction, *args)

        return run

    @property
    def write(self) -> Runner:
        return self._runner(self._pools[0])

    @property
    def history(self) -> Runner:
        return self._runner(self._pools[1])

    @property
    def read(self) -> Runner:
        return self._runner(self._pools[2])

    @property
    def files(self) -> Runner:
        return self._runner(self._pools[3])

    def _call(self, pool: adbapi.ConnectionPool, interaction: Interaction, *args: Any) -> Any:
        """In a pool thread: its connection (made if needed), the transaction (:func:`run_transaction`)."""
        return run_transaction(pool.connect, pool.disconnect, self._health, interaction, *args)

    def close(self) -> None:
        """Stop the pools' threads and close their connections (the store has stopped: nothing is queued)."""
        for pool in self._pools:
            pool.close()


def _event_row(at: str, event: EventName, user: str, room: str, details: Mapping[str, object]) -> tuple[str, ...]:
    return (at, event, user, room, json.dumps({key: str(value) for key, value in details.items()}))


def _insert_events(cursor: psycopg.Cursor[Any], rows: Sequence[tuple[str, ...]]) -> None:
    """One INSERT of every row (at, event, user, room, details as JSON), in their order."""
    if rows:
        cursor.execute(
            "INSERT INTO log (at, event, user_name, room, details) SELECT a, e, u, r, d FROM "
            "unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::jsonb[]) WITH ORDINALITY "
            "AS t(a, e, u, r, d, n) ORDER BY n", [list(column) for column in zip(*rows)])


def _set_marks(cursor: psycopg.Cursor[Any], rows: Iterable[tuple[str, str, str]]) -> None:
    """Upsert (user key, key, value) rows, the last of a user key and key counting; value "" deletes."""
    last: dict[tuple[str, ...], str] = {(user, key): value for user, key, value in rows}
    _upsert(cursor, "marks", ("user_key", "key"), last)


def _upsert(cursor: psycopg.Cursor[Any], table: str, keys: tuple[str, ...], values: Mapping[tuple[str, ...], str]
            ) -> None:
    """Set ``table``'s ``value`` of each key tuple (one INSERT ... ON CONFLICT), delete those set to ""."""
    columns = ", ".join(keys)
    kept = [(*key, value) for key, value in values.items() if value]
    gone = [key for key, value in values.items() if not value]
    types = ", ".join(["%s::text[]"] * len(keys))
    if kept:
        cursor.execute(f"INSERT INTO {table} ({columns}, value) SELECT * FROM unnest({types}, %s::text[]) "
                       f"ON CONFLICT ({columns}) DO UPDATE SET value = excluded.value",
                       [list(column) for column in zip(*kept)])
    if gone:
        cursor.execute(f"DELETE FROM {table} WHERE ({columns}) IN (SELECT * FROM unnest({types}))",
                       [list(column) for column in zip(*gone)])


def _stored_rooms(cursor: psycopg.Cursor[Any], room_ids: Iterable[str]) -> set[str]:
    """
    Which of ``room_ids`` are stored (the public room and :data:`SERVER`
    always are), their rows locked against a delete until the commit.
    """
    cursor.execute("SELECT id FROM rooms WHERE id = ANY(%s) FOR SHARE", (sorted(set(room_ids)),))
    return {PUBLIC_ROOM_ID, SERVER} | {row[0] for row in cursor.fetchall()}


def ensure_schema(cursor: psycopg.Cursor[Any]) -> list[str]:
    """
    Create or migrate the schema to :data:`SCHEMA_VERSION` under the
    advisory lock :data:`SCHEMA_LOCK` (held to the COMMIT: a second node
    waits, then finds it done); returns notes of what was done. Raises
    StoreError if the database's schema is newer than this chatd's.
    """
    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
    cursor.execute("SELECT version FROM schema_version")
    row = cursor.fetchone()
    version = row[0] if row is not None else 0
    if version > SCHEMA_VERSION:
        raise StoreError(f"the database's chatd schema is version {version}, newer than this chatd's "
                         f"({SCHEMA_VERSION}): upgrade chatd")
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target]:
            cursor.execute(statement)
    notes = []
    if version == 0:
        notes.append(f"PostgreSQL schema created (version {SCHEMA_VERSION})")
    elif version < SCHEMA_VERSION:
        notes.append(f"PostgreSQL schema migrated from version {version} to {SCHEMA_VERSION}")
    if row is None:
        cursor.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
    elif version < SCHEMA_VERSION:
        cursor.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return notes


def _load(cursor: psycopg.Cursor[Any]) -> Loaded:
    notes = ensure_schema(cursor)
    cursor.execute("SELECT name_key, name, password_hash, created FROM users")
    users = AccountDict({key: UserRecord(name, password_hash, created)
                         for key, name, password_hash, created in cursor.fetchall()})
    cursor.execute("SELECT name, owner, created, id FROM rooms ORDER BY seq")
    rooms = [RoomRecord(*row) for row in cursor.fetchall()]
    cursor.execute("SELECT at, sender, recipient, text FROM offline ORDER BY seq")
    private = [PrivateMessage(*row) for row in cursor.fetchall()]
    cursor.execute("SELECT room_id, last_id, lines FROM history_tails")
    history = {room_id: HistoryTail(last_id, lines) for room_id, last_id, lines in cursor.fetchall()}
    marks: dict[str, dict[str, str]] = {}
    cursor.execute("SELECT user_key, key, value FROM marks")
    for user, key, value in cursor.fetchall():
        marks.setdefault(user, {})[key] = value
    room_values: dict[str, dict[tuple[str, str], str]] = {}
    cursor.execute("SELECT room_id, kind, key, value FROM room_values")
    for room_id, kind, key, value in cursor.fetchall():
        room_values.setdefault(room_id, {})[(kind, key)] = value
    return Loaded(users, rooms, [], notes, private, history, marks, room_values, _token_key(cursor))


def _token_key(cursor: psycopg.Cursor[Any]) -> bytes:
    """
    The resume tokens' key (chatd.tokens), the same for every node: a random one is inserted unless one is
    there (the primary key settles two nodes' first start at once: the later insert does nothing), then read.
    """
    cursor.execute("INSERT INTO server_keys VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                   (TOKEN_KEY, secrets.token_bytes(TOKEN_KEY_BYTES).hex()))
    cursor.execute("SELECT value FROM server_keys WHERE name = %s", (TOKEN_KEY,))
    row = cursor.fetchone()
    return bytes.fromhex(row[0]) if row is not None else b""


class PostgresStore(HistoryJobs):
    """
    The Store on PostgreSQL.

    :param dsn: a libpq connection string or ``postgresql://`` URL.
    :param run: runs an interaction on the writer connection
        (:meth:`Pools.write`); default a :class:`Direct` runner on ``dsn``
        (synchronous: chatd-admin, tests).
    :param clock: schedules the periodic flush of queued log events and marks.
    :param now: the current ISO-8601 UTC time, for log events.
    :param log_interval: seconds an event may wait before it is written.
    :param history_run: runs history appends and expiry (:meth:`Pools.history`); default ``run``.
    :param history_read_run: runs history reads (:meth:`Pools.read`); default ``history_run``.
    :param file_run: copies and reads shared files (:meth:`Pools.files`); default ``history_read_run``.
    """

    shares_files = True

    log = Logger()

    def __init__(self, dsn: str, clock: IReactorTime, now: Callable[[], str], run: Runner | None = None,
                 log_interval: float = 0.5, history_run: Runner | None = None,
                 history_read_run: Runner | None = None, file_run: Runner | None = None) -> None:
        self.dsn = dsn
        self._run = run or Direct(dsn)
        self._history_run = history_run or self._run
        self._history_read_run = history_read_run or self._history_run
        self._file_run = file_run or self._history_read_run
        self._clock = clock
        self._now = now
        self._log_interval = log_interval
        super().__init__()
        #: Log events and non-durable marks waiting for the next flush.
        self._events: list[tuple[str, ...]] = []
        self._marks: list[tuple[str, str, str]] = []
        self._flushing = False

    # -- start-up -------------------------------------------------------

    def load(self) -> defer.Deferred[Loaded]:
        """Create or migrate the schema (:func:`ensure_schema`), then read everything; fails with StoreError."""
        return self._run(_load)

    def load_now(self) -> Loaded:
        """:meth:`load` in the calling thread on a connection of its own (start-up before the reactor runs)."""
        direct = Direct(self.dsn)
        try:
            return direct.call(_load)
        finally:
            direct.close()

    # -- durable changes ------------------------------------------------

    def _change(self, work: Interaction | None, *args: Any, event: LogEvent | None = None,
                marks: Sequence[tuple[str, str, str]] = ()) -> defer.Deferred[None]:
        """
        ``work(cursor, *args)`` in one transaction on the writer connection,
        with the events queued so far and ``event``'s row after them (if an
        event is given), and ``marks``; fires (None) after the COMMIT, fails with StoreError (then the queued events go back to the
        queue, in front). ``work`` may raise NameTakenError or StoreError.
        """
        earlier: list[tuple[str, ...]] = []
        rows: list[tuple[str, ...]] = []
        if event is not None:
            earlier, self._events = self._events, []
            rows = earlier + [_event_row(self._now(), event.event, event.user, event.room, event.details)]

        def interaction(cursor: psycopg.Cursor[Any]) -> None:
            if work is not None:
                work(cursor, *args)
            if marks:
                _set_marks(cursor, marks)
            _insert_events(cursor, rows)

        def failed(failure: Any) -> Any:
            self._events[:0] = earlier
            if not failure.check(StoreError):
                self.log.failure("store write failed", failure)
                raise StoreError(str(failure.value))
            if not failure.check(NameTakenError, QueueFull):
                self.log.error("store write failed: {why}", why=failure.getErrorMessage())
            return failure

        return self._run(interaction).addErrback(failed)

    def add_user(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Insert an account; fails with NameTakenError if its name key is stored (another node), else StoreError."""

        def insert(cursor: psycopg.Cursor[Any]) -> None:
            try:
                cursor.execute("INSERT INTO users (name_key, name, password_hash, created) VALUES (%s, %s, %s, %s)",
                               (name_key(record.name), record.name, record.password_hash, record.created))
            except psycopg.errors.UniqueViolation:
                raise NameTakenError(f"the name {record.name} is taken") from None

        return self._change(insert, event=event)

    def replace_password(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Update the account's hash; fails with StoreError if there is no such account (deleted meanwhile)."""

        def update(cursor: psycopg.Cursor[Any]) -> None:
            cursor.execute("UPDATE users SET password_hash = %s WHERE name_key = %s",
                           (record.password_hash, name_key(record.name)))
            if cursor.rowcount == 0:
                raise StoreError(f"there is no account {record.name} (deleted)")

        return self._change(update, event=event)

    def delete_user(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Delete the account ``name`` (any case), the private messages queued
        for it, its marks, and the room values keyed by its name key of the
        kinds :data:`chatd.persistence.ACCOUNT_KINDS` (roles, bans, mutes,
        invitations, in every room and server-wide), in one transaction.
        """
        key = name_key(name)
        self._marks = [mark for mark in self._marks if mark[0] != key]

        def delete(cursor: psycopg.Cursor[Any]) -> None:
            cursor.execute("DELETE FROM offline WHERE recipient_key = %s", (key,))
            cursor.execute("DELETE FROM marks WHERE user_key = %s", (key,))
            cursor.execute("DELETE FROM room_values WHERE key = %s AND kind = ANY(%s)", (key, sorted(ACCOUNT_KINDS)))
            cursor.execute("DELETE FROM users WHERE name_key = %s", (key,))

        return self._change(delete, event=event)

    #: Several nodes share the queued private messages: each login takes its own (:meth:`take_private`).
    shares_private = True

    def queue_private(self, message: PrivateMessage, limit: int = 0) -> defer.Deferred[None]:
        """
        One INSERT; with ``limit``, only if the recipient has fewer queued
        (one statement: two nodes queueing at once may both pass; the
        limit bounds a queue, it is no exact count), else QueueFull.
        """
        key = name_key(message.recipient)

        def insert(cursor: psycopg.Cursor[Any]) -> None:
            cursor.execute(
                "INSERT INTO offline (at, sender, recipient, recipient_key, text) SELECT %s, %s, %s, %s, %s "
                "WHERE %s = 0 OR (SELECT count(*) FROM offline WHERE recipient_key = %s) < %s",
                (message.at, message.sender, message.recipient, key, message.text, limit, key, limit))
            if cursor.rowcount == 0:
                raise QueueFull(f"{message.recipient} has {limit} messages queued")

        return self._change(insert)

    def take_private(self, name: str) -> defer.Deferred[list[PrivateMessage]]:
        """
        One ``DELETE ... RETURNING`` (committed before it fires): a second
        node taking at once waits for the first's row locks and then finds
        the rows gone, so each message is taken once.
        """
        taken: list[PrivateMessage] = []

        def take(cursor: psycopg.Cursor[Any]) -> None:
            cursor.execute("DELETE FROM offline WHERE recipient_key = %s RETURNING seq, at, sender, recipient, text",
                           (name_key(name),))
            taken[:] = [PrivateMessage(*row[1:]) for row in sorted(cursor.fetchall())]  # (a rerun replaces)

        return self._change(take).addCallback(lambda _: taken)

    def remove_private(self, messages: Sequence[PrivateMessage]) -> defer.Deferred[None]:
        """Delete the queued ``messages`` (equal time, sender, recipient and text), one statement."""
        if not messages:
            return defer.succeed(None)
        columns = [list(column) for column in zip(*((m.at, m.sender, m.recipient, m.text) for m in messages))]
        return self._change(lambda cursor: cursor.execute(
            "DELETE FROM offline WHERE (at, sender, recipient, text) IN "
            "(SELECT * FROM unnest(%s::float8[], %s::text[], %s::text[], %s::text[]))", columns))

    def add_room(self, record: RoomRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Insert a room; fails with NameTakenError if its name key is stored
        (another node), else StoreError. Raises ValueError if ``record.id`` is
        not 1-32 ASCII letters and digits, or is the public room's.
        """
        if not ROOM_ID.match(record.id) or record.id == PUBLIC_ROOM_ID:
            raise ValueError(f"room {record.name!r}: {record.id!r} is no room id (1-32 ASCII letters and digits)")

        def insert(cursor: psycopg.Cursor[Any]) -> None:
            try:
                cursor.execute("INSERT INTO rooms (name_key, name, owner, created, id) VALUES (%s, %s, %s, %s, %s)",
                               (name_key(record.name), record.name, record.owner, record.created, record.id))
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name == "rooms_pkey":
                    raise NameTakenError(f"a room called {record.name} exists") from None
                raise

        return self._change(insert, event=event)

    def delete_room(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Delete the room ``name`` (any case), its history and its values, in one transaction."""

        def delete(cursor: psycopg.Cursor[Any]) -> None:
            cursor.execute("DELETE FROM rooms WHERE name_key = %s RETURNING id", (name_key(name),))
            for (room_id,) in cursor.fetchall():
                for table in ("history", "history_tails", "room_values"):
                    cursor.execute(f"DELETE FROM {table} WHERE room_id = %s", (room_id,))

        return self._change(delete, event=event)

    # -- the event log --------------------------------------------------

    def log_event(self, event: EventName, user: str = "", room: str = "", **details: object) -> defer.Deferred[None]:
        """Queue one event; it is written within ``log_interval`` (in order, one INSERT per flush). Fires at once."""
        self._events.append(_event_row(self._now(), event, user, room, details))
        return defer.succeed(None)

    def flush_events(self) -> defer.Deferred[None]:
        """
        Write the queued events and marks now, in one transaction; if that
        fails they are kept (up to :data:`chatd.persistence.MAX_QUEUED_EVENTS`
        events) for the next flush, and the failure is logged (fires all the
        same).
        """
        if not self._events and not self._marks:
            return defer.succeed(None)
        events, self._events = self._events, []
        marks, self._marks = self._marks, []

        def written(_: None) -> None:
            if self._flushing:
                self._flushing = False
                self.log.info("queued events and marks written")

        def failed(failure: Any) -> None:
            room = MAX_QUEUED_EVENTS - len(self._events)
            if room > 0:
                self._events[:0] = events[-room:]
            self._marks[:0] = marks[-MAX_QUEUED_EVENTS:]
            if not self._flushing:
                self._flushing = True
                self.log.error("could not write {count} event(s) and {marks} mark(s): {why}; will retry",
                               count=len(events), marks=len(marks), why=failure.getErrorMessage())

        def interaction(cursor: psycopg.Cursor[Any]) -> None:
            _set_marks(cursor, marks)
            _insert_events(cursor, events)

        return self._run(interaction).addCallbacks(written, failed)

    # -- per-account marks ----------------------------------------------

    def set_marks(self, user: str, marks: Mapping[str, str], durable: bool = False) -> defer.Deferred[None]:
        """
        Set ``user``'s marks (value "" deletes); ``durable``: in a
        transaction with the marks queued before, fires after its COMMIT;
        else queued and written with the events. Raises ValueError for a key
        or value the CSV store refuses (:func:`chatd.persistence.mark_row`).
        """
        for key, value in marks.items():
            mark_row(user, key, value)
        rows = [(name_key(user), key, value) for key, value in marks.items()]
        if not durable:
            self._marks += rows
            return defer.succeed(None)
        earlier, self._marks = self._marks, []

        def failed(failure: Any) -> Any:
            self._marks[:0] = earlier
            return failure

        return self._change(None, marks=earlier + rows).addErrback(failed)

    # -- room authority (issue 14) ----------------------------------------

    def set_room_values(self, values: Sequence[RoomValue], event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Set the values (the last of a room, kind and key counts; "" deletes)
        of the rooms still stored (and server-wide ones), with ``event``, in
        one transaction. Raises ValueError for a value the CSV store refuses
        (:func:`chatd.persistence.room_value_row`), before anything is written.
        """
        for value in values:
            room_value_row(value)

        def change(cursor: psycopg.Cursor[Any]) -> None:
            stored = _stored_rooms(cursor, (value.room_id for value in values))
            last: dict[tuple[str, ...], str] = {(value.room_id, value.kind, value.key): value.value
                                                for value in values if value.room_id in stored}
            _upsert(cursor, "room_values", ("room_id", "kind", "key"), last)

        return self._change(change if values else None, event=event)

    def set_room_owner(self, name: str, owner: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """Make ``owner`` the owner of the room ``name`` (any case; none: no change). Raises ValueError for a bad name."""
        if check_name(owner, "user", USER_NAME_MAX) is not None:
            raise ValueError(f"{owner!r} is no user name")
        return self._change(lambda cursor: cursor.execute("UPDATE rooms SET owner = %s WHERE name_key = %s",
                                                          (owner, name_key(name))), event=event)

    # -- room history -----------------------------------------------------

    def append_history(self, batches: Sequence[HistoryBatch]) -> defer.Deferred[None]:
        """
        Append the batches of every room still stored in one transaction: one
        INSERT of all their events (an id a room has already is skipped: a
        batch retried) and one upsert of the rooms' tails (last id, line
        count). Fires after the COMMIT; fails with StoreError (nothing of the
        call is stored then).
        """
        kept = [batch for batch in batches if batch.events]
        if not kept:
            return defer.succeed(None)

        def append(cursor: psycopg.Cursor[Any]) -> None:
            stored = _stored_rooms(cursor, (batch.room_id for batch in kept))
            events: list[tuple[Any, ...]] = []
            tails: list[tuple[str, int, int]] = []
            for batch in kept:
                if batch.room_id not in stored:
                    continue
                lines = batch.lines_before + sum(event.kind in LINE_KINDS for event in batch.events)
                tails.append((batch.room_id, batch.events[-1].id, lines))
                events += [(batch.room_id, e.id, e.at, e.kind.value, e.sender, e.text, e.target, e.until)
                           for e in batch.events]
            if not events:
                return
            cursor.execute(
                "INSERT INTO history (room_id, id, at, kind, sender, text, target, until) SELECT * FROM unnest("
                "%s::text[], %s::int8[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[]) "
                "ON CONFLICT DO NOTHING", [list(column) for column in zip(*events)])
            cursor.execute(
                "INSERT INTO history_tails (room_id, last_id, lines) SELECT * FROM unnest("
                "%s::text[], %s::int8[], %s::int8[]) ON CONFLICT (room_id) DO UPDATE SET last_id = excluded.last_id, "
                "lines = excluded.lines WHERE excluded.last_id > history_tails.last_id",
                [list(column) for column in zip(*tails)])

        return self._in_history_thread(append)  # a failure: the caller (chatd.history) logs it and retries

    def read_history(self, room_id: str, room: str, count: int, before: int | None = None,
                     kinds: frozenset[EventKind] | None = None, since: float = 0.0) -> defer.Deferred[list[RoomEvent]]:
        """
        :meth:`chatd.store.Store.read_history`: one query, a backward scan of
        the primary key from ``before``. Sender, text and target are cleaned
        again (:func:`chatd.text.clean_text`: a row edited by hand never
        reaches a terminal); rows of an unknown kind are skipped.
        """
        if count <= 0:
            return defer.succeed([])
        query = "SELECT id, at, kind, sender, text, target, until FROM history WHERE room_id = %s AND at >= %s"
        params: list[Any] = [room_id, since]
        if before is not None:
            query += " AND id < %s"
            params.append(before)
        if kinds is not None:
            query += " AND kind = ANY(%s)"
            params.append(sorted(kind.value for kind in kinds))
        query += " ORDER BY id DESC LIMIT %s"
        params.append(count)

        def read(cursor: psycopg.Cursor[Any]) -> list[RoomEvent]:
            cursor.execute(query, params)
            found = []
            for event_id, at, kind, sender, text, target, until in reversed(cursor.fetchall()):
                try:
                    found.append(RoomEvent(room, event_id, at, clean_text(sender), EventKind(kind), clean_text(text),
                                           clean_text(target), until))
                except ValueError:
                    continue
            return found

        return self._in_history_thread(read, run=self._history_read_run)

    def expire_history(self, before: float) -> defer.Deferred[int]:
        """
        Delete the events of every UTC day that ended at or before
        ``before`` (as the CSV store deletes day segments); fires with the
        number of (room, day) pairs deleted. The tails stay: ids and line
        counts go on.
        """
        cutoff = before // 86400 * 86400

        def expire(cursor: psycopg.Cursor[Any]) -> int:
            cursor.execute(
                "WITH gone AS (DELETE FROM history WHERE at < %s RETURNING room_id, floor(at / 86400) AS day) "
                "SELECT count(*) FROM (SELECT DISTINCT room_id, day FROM gone) AS segments", (cutoff,))
            row = cursor.fetchone()
            return int(row[0]) if row is not None else 0

        return self._in_history_thread(expire)

    # -- files across nodes ---------------------------------------------

    def store_file(self, record: FileRecord, path: str) -> defer.Deferred[None]:
        """
        :meth:`chatd.store.Store.store_file`: the record and one INSERT per
        :data:`~chatd.store.FILE_CHUNK_SIZE` read from ``path`` (one chunk in
        memory at a time), in one transaction on a file connection. Fails
        with StoreError (also when ``path`` does not have ``record.size``
        bytes: nothing is kept) or OSError.
        """
        return self._in_history_thread(_copy_file, record, path, run=self._file_run)

    def read_file_chunk(self, file_id: str, seq: int) -> defer.Deferred[bytes]:
        def read(cursor: psycopg.Cursor[Any]) -> bytes:
            cursor.execute("SELECT data FROM file_chunks WHERE file_id = %s AND seq = %s", (file_id, seq))
            row = cursor.fetchone()
            if row is None:
                raise StoreError(f"file {file_id} has no chunk {seq} (expired)")
            return bytes(row[0])

        return self._file_run(read)

    def expire_files(self, now: float) -> defer.Deferred[int]:
        """Delete the files kept until before ``now`` (their chunks by ``ON DELETE CASCADE``); fires with how many."""

        def expire(cursor: psycopg.Cursor[Any]) -> int:
            cursor.execute("DELETE FROM files WHERE expires < %s", (now,))
            return cursor.rowcount

        return self._in_history_thread(expire, run=self._file_run)


def _copy_file(cursor: psycopg.Cursor[Any], record: FileRecord, path: str) -> None:
    """In a transaction: insert ``record`` and the data of ``path`` chunk by chunk; StoreError if its size is not it."""
    cursor.execute("INSERT INTO files (id, room_id, name, size, sha256, sender, created, expires) "
                   "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                   (record.id, record.room_id, record.name, record.size, record.sha256, record.sender,
                    record.created, record.expires))
    copied = 0
    with open(path, "rb") as handle:
        for seq in itertools.count():
            data = handle.read(FILE_CHUNK_SIZE)
            if not data:
                break
            cursor.execute("INSERT INTO file_chunks (file_id, seq, data) VALUES (%s, %s, %s)", (record.id, seq, data))
            copied += len(data)
    if copied != record.size:
        raise StoreError(f"{path} has {copied} bytes, not {record.size}")
