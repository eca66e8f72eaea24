"""
The CSV store: accounts, rooms and the event log, on disk, off the reactor.

Three files live in the data directory:

``users.csv``
    ``name,password_hash,created``, appended at registration, and again
    whenever an account's password hash is replaced (a login rehashes a
    password whose hash has older argon2 parameters): the last line of a
    name is the account. Appending one line is the whole update, so a crash
    at any moment leaves the old line or the new one, never neither.
``rooms.csv``
    ``name,owner,created``, appended on create, rewritten atomically on delete.
``log.csv``
    ``timestamp,event,user,room,detail``, appended in batches. The detail
    is ``key=value`` fields joined by ``&``, form-urlencoded (WHATWG URL
    standard, application/x-www-form-urlencoded): :func:`encode_detail`,
    :func:`decode_detail`; every event's fields are in docs/OPERATIONS.md.

Every file operation runs in one dedicated writer thread, so writes happen
in the order they were asked for and the reactor thread never waits on the
disk. Callers get Deferreds. ``add_user``, ``add_room`` and ``delete_room``
fire only after the data is fsynced; log events are queued and written at
most ``log_interval`` seconds later (and on shutdown).

The store knows nothing about connections.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.text import name_key, spreadsheet_safe

T = TypeVar("T")
#: Runs ``f(*args)`` somewhere (the writer thread) and returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]

USERS = "users.csv"
ROOMS = "rooms.csv"
EVENTS = "log.csv"


@attrs.frozen(slots=True)
class UserRecord:
    """One account as stored in users.csv."""

    name: str
    password_hash: str
    created: str


@attrs.frozen(slots=True)
class RoomRecord:
    """One room as stored in rooms.csv."""

    name: str
    owner: str
    created: str


def user_from_row(row: str) -> UserRecord | None:
    """Parse one users.csv line (as kept in :attr:`Loaded.users`); None if malformed."""
    fields = next(csv.reader([row]), [])
    return UserRecord(*fields) if len(fields) == 3 else None


def user_row(record: UserRecord) -> str:
    """The users.csv line of ``record``, without its line end."""
    return _encode_rows([[record.name, record.password_hash, record.created]]).decode("utf-8")[:-1]


@attrs.frozen(slots=True)
class Loaded:
    """What the data directory held at start-up."""

    #: users.csv lines by name key, parsed only when needed (:func:`user_from_row`):
    #: a million accounts load in about a second and take one string each.
    users: dict[str, str]
    rooms: list[RoomRecord]
    #: Human-readable notes about damage that was repaired (torn lines).
    repairs: list[str]


#: Events kept in memory while log.csv cannot be written; the oldest are dropped beyond this.
MAX_QUEUED_EVENTS = 100_000


class StoreError(Exception):
    """A change could not be made durable; nothing was acknowledged."""


def encode_detail(fields: Mapping[str, object]) -> str:
    """
    The detail column of log.csv: ``key=value&key=value`` in the order
    given, values form-urlencoded (``%20`` for a space; ``&``, ``=``, ``,``,
    quotes and line ends encoded, ``:`` kept for IPv6 addresses), so the
    cell never needs CSV quoting and never starts like a formula.
    """
    return urlencode({key: str(value) for key, value in fields.items()}, quote_via=quote, safe=":")


def address_fields(address: Any) -> dict[str, str]:
    """
    log.csv fields for a client's address (an ``IAddress``, from
    ``transport.getPeer()``): ``address`` (the IP) and ``port`` (the source
    port, which tells apart users behind one NAT; RFC 6302); ``{}`` for
    anything that is not an IP address (a UNIX socket).
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return {}
    return {"address": host, "port": str(port)}


def decode_detail(detail: str) -> dict[str, str]:
    """The fields of a log.csv detail cell (:func:`encode_detail`'s inverse; ``urllib.parse.parse_qsl``)."""
    return dict(parse_qsl(detail, keep_blank_values=True))


def _encode_rows(rows: Iterable[Iterable[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


#: fsync on a directory is not supported here (some filesystems, FUSE): skip it.
_DIR_SYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def _fsync_dir(path: str) -> None:
    """fsync the directory ``path`` (its entries: new and renamed names); skipped where unsupported."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: directories cannot be opened or synced
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as error:
        if error.errno not in _DIR_SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def append_rows(path: str, rows: list[list[str]], sync: bool = True) -> None:
    """
    Append CSV rows to ``path`` and (by default) fsync them.

    If the file was empty (just created), the directory is fsynced too, so
    the file's name survives a power loss as well as its first rows.

    If the write fails half-way (disk full, I/O error) the file is cut back
    to its previous length, so a failed append never leaves a torn line
    in front of the next one.
    """
    data = _encode_rows(rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                os.fsync(fd)
                if start == 0:
                    _fsync_dir(os.path.dirname(path) or ".")
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def replace_rows(path: str, rows: list[list[str]]) -> None:
    """Atomically replace ``path`` by these rows: write aside, fsync, rename, fsync the directory."""
    aside = path + ".new"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(_encode_rows(rows))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(aside, path)
    except OSError:
        # Disk full, I/O error: the old file is untouched; leave no half-written copy.
        try:
            os.unlink(aside)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(path) or ".")


def repair_tail(path: str) -> list[str]:
    """
    Cut a torn last line (no final newline, as a crash mid-write leaves it)
    off ``path``, so later appends start on a clean line. Returns notes.
    """
    try:
        handle = open(path, "r+b")
    except FileNotFoundError:
        return []
    with handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return []
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return []
        keep = 0
        position = size
        while position > 0:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            newline = handle.read(step).rfind(b"\n")
            if newline >= 0:
                keep = position + newline + 1
                break
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return [f"{os.path.basename(path)}: dropped a torn last line ({size - keep} bytes)"]


def read_rows(path: str, width: int) -> tuple[list[list[str]], list[str]]:
    """
    Read the rows of a CSV file written by this module, after
    :func:`repair_tail`. Rows of the wrong width are skipped and reported.
    Returns the rows and notes about what was repaired.
    """
    notes = repair_tail(path)
    try:
        handle = open(path, encoding="utf-8", errors="replace", newline="")
    except FileNotFoundError:
        return [], notes
    rows = []
    bad = 0
    with handle:
        for row in csv.reader(handle):
            if len(row) == width:
                rows.append(row)
            elif row:
                bad += 1
    if bad:
        notes.append(f"{os.path.basename(path)}: skipped {bad} malformed row(s)")
    return rows, notes


def read_user_lines(path: str) -> tuple[dict[str, str], list[str]]:
    """
    users.csv as ``{name key: line}``, after :func:`repair_tail`; of
    several lines of one name (a replaced password hash), the last.

    The name is the first field and is never quoted (names are plain ASCII
    letters, digits, ``_`` and ``-``), so the key is everything before the
    first comma; the rest of the line is parsed only at login.
    """
    notes = repair_tail(path)
    try:
        with open(path, "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return {}, notes
    lines = text.split("\n")
    lines.pop()  # after the final newline
    users = {name_key(line[: line.find(",")]): line for line in lines if "," in line}
    nameless = sum(1 for line in lines if "," not in line)
    if nameless:
        notes.append(f"{os.path.basename(path)}: skipped {nameless} line(s) without a name")
    return users, notes


class CsvStore:
    """
    Deferred-based access to the data directory.

    :param data_dir: the directory (created owner-only if missing).
    :param run: runs a function in the writer thread and returns a Deferred;
        production passes a one-thread pool, tests a synchronous stand-in.
    :param clock: schedules the periodic flush of the event log.
    :param now: returns the current ISO-8601 UTC timestamp for log rows.
    :param log_interval: seconds an event may wait before it is written.
    """

    log = Logger()

    def __init__(
        self,
        data_dir: str,
        run: Runner,
        clock: IReactorTime,
        now: Callable[[], str],
        log_interval: float = 0.5,
    ) -> None:
        self.data_dir = data_dir
        self._run = run
        self._clock = clock
        self._now = now
        self._log_interval = log_interval
        self._events: list[list[str]] = []
        self._event_flush: defer.Deferred[None] | None = None
        self._ticker: LoopingCall | None = None
        self._events_failing = False

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    # -- start-up -------------------------------------------------------

    def load(self) -> defer.Deferred[Loaded]:
        """Create the data directory if needed and read users and rooms."""
        return self._run(self._load)

    def load_now(self) -> Loaded:
        """:meth:`load` in the calling thread, for start-up before the reactor runs; raises OSError."""
        return self._load()

    def _load(self) -> Loaded:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        users, notes = read_user_lines(self._path(USERS))
        room_rows, room_notes = read_rows(self._path(ROOMS), 3)
        event_notes = repair_tail(self._path(EVENTS))
        rooms = [RoomRecord(*row) for row in room_rows]
        return Loaded(users, rooms, notes + room_notes + event_notes)

    def start(self) -> None:
        """Start writing queued log events every ``log_interval`` seconds."""
        self._ticker = LoopingCall(self.flush_events)
        self._ticker.clock = self._clock
        self._ticker.start(self._log_interval, now=False)

    def stop(self) -> defer.Deferred[None]:
        """Stop the ticker and write every queued event."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        return self.flush_events()

    # -- durable changes ------------------------------------------------

    def _durable(self, function: Callable[..., None], *args: Any, event: list[str] | None = None
                 ) -> defer.Deferred[None]:
        """
        Run ``function(*args)`` (a data write that fsyncs) in the writer
        thread; fires once it is durable, fails with StoreError. With an
        ``event`` row (:meth:`event_row`), the same job then appends to
        log.csv, and fsyncs, the events queued so far and that row, so an
        acknowledged change always has its row on disk before the user is
        told (a ``kill -9`` right after cannot leave one without the other
        in that order); other events keep their batch. If the data write
        fails, the queued events are still written (not the row: nothing
        changed); rows log.csv refuses are kept for the next flush.
        """
        job: Callable[..., None] = function
        unwritten: list[tuple[list[list[str]], str]] = []
        if event is not None:
            earlier, self._events = self._events, []

            def job(*args: Any) -> None:
                try:
                    function(*args)
                except BaseException:
                    self._append_events(earlier, unwritten)
                    raise
                self._append_events(earlier + [event], unwritten)

        def logged(result: Any) -> Any:
            for rows, why in unwritten:
                self._keep_events(rows, why)
            return result

        def failed(failure: Any) -> None:
            if failure.check(OSError):  # disk full, I/O error, read-only: no traceback, the reason
                self.log.error("store write failed: {why}", why=failure.getErrorMessage())
            else:
                self.log.failure("store write failed", failure)
            raise StoreError(str(failure.value))

        return self._run(job, *args).addBoth(logged).addErrback(failed)

    def _append_events(self, rows: list[list[str]], unwritten: list[tuple[list[list[str]], str]]) -> None:
        """In the writer thread: append ``rows`` to log.csv; on an OSError note them in ``unwritten``."""
        if not rows:
            return
        try:
            append_rows(self._path(EVENTS), rows)
        except OSError as error:
            unwritten.append((rows, str(error)))

    def add_user(self, record: UserRecord, event: list[str] | None = None) -> defer.Deferred[None]:
        """
        Append an account, or a new version of one (the last line of a name
        counts); fires once it and its ``event`` row (``register``,
        ``rehash``; see :meth:`_durable`) are fsynced, fails with StoreError.
        """
        row = [record.name, record.password_hash, record.created]
        return self._durable(append_rows, self._path(USERS), [row], event=event)

    def add_room(self, record: RoomRecord, event: list[str] | None = None) -> defer.Deferred[None]:
        """Append a room; fires once it and its ``event`` row are fsynced, fails with StoreError."""
        row = [record.name, record.owner, record.created]
        return self._durable(append_rows, self._path(ROOMS), [row], event=event)

    def delete_room(self, name: str, event: list[str] | None = None) -> defer.Deferred[None]:
        """Rewrite rooms.csv without ``name``, atomically; fires once it and its ``event`` row are durable."""
        return self._durable(self._delete_room, name_key(name), event=event)

    def _delete_room(self, key: str) -> None:
        path = self._path(ROOMS)
        rows, _ = read_rows(path, 3)
        replace_rows(path, [row for row in rows if name_key(row[0]) != key])

    # -- the event log --------------------------------------------------

    def event_row(self, event: str, user: str = "", room: str = "", **details: object) -> list[str]:
        """
        One log.csv row, stamped now. ``details`` become the detail column
        (:func:`encode_detail`): the client's ``address`` and ``port``, sizes
        in bytes, reasons as lower_case words; docs/OPERATIONS.md lists them
        per event.
        """
        return [self._now(), event, spreadsheet_safe(user), spreadsheet_safe(room), encode_detail(details)]

    def log_event(self, event: str, user: str = "", room: str = "", **details: object) -> None:
        """Queue one row (:meth:`event_row`) for log.csv; it is written within ``log_interval``."""
        self._events.append(self.event_row(event, user, room, **details))

    def flush_events(self) -> defer.Deferred[None]:
        """Write the queued events now (in the writer thread)."""
        if not self._events:
            return defer.succeed(None)
        rows, self._events = self._events, []

        def written(_: None) -> None:
            if self._events_failing:
                self._events_failing = False
                self.log.info("log.csv is writable again; queued events written")

        def failed(failure: Any) -> None:
            self._keep_events(rows, failure.getErrorMessage())

        return self._run(append_rows, self._path(EVENTS), rows).addCallbacks(written, failed)

    def _keep_events(self, rows: list[list[str]], why: str) -> None:
        """log.csv refused ``rows``: keep them for the next try (the disk may recover), up to a bound."""
        room = MAX_QUEUED_EVENTS - len(self._events)
        if room > 0:
            self._events[:0] = rows[-room:]
        if not self._events_failing:
            self._events_failing = True
            self.log.error("could not write {count} event(s) to log.csv: {why}; will retry", count=len(rows), why=why)
