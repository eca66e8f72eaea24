"""
The CSV store: accounts, rooms, the event log, queued private messages,
per-account marks, per-room values and room history, on disk, off the
reactor.

These files live in the data directory (and ``history/``, the rooms'
history: :mod:`chatd.stores.csv_history`):

``users.csv``
    ``name,password_hash,created``, appended at registration, and again
    whenever an account's password hash is replaced (a login rehashes a
    password whose hash has older argon2 parameters): the last line of a
    name is the account. Appending one line is the whole update, so a crash
    at any moment leaves the old line or the new one, never neither.
``rooms.csv``
    ``name,owner,created,id``, appended on create, rewritten atomically on
    delete; ``id`` (format 2.1) names the room's history, a room without
    one gets one at load (:func:`read_rooms`).
``log.csv``
    ``timestamp,event,user,room,detail``, appended in batches. The detail
    is ``key=value`` fields joined by ``&``, form-urlencoded (WHATWG URL
    standard, application/x-www-form-urlencoded): :func:`encode_detail`,
    :func:`decode_detail`; every event's fields are in docs/OPERATIONS.md.
``offline.csv``
    ``time,sender,recipient,text``: private messages kept for offline accounts.
``marks.csv``
    ``user,key,value``, appended (:meth:`CsvStore.set_marks`): the last row
    of a name and key counts; compacted at load (:func:`read_marks`).
``room_values.csv``
    ``room,kind,key,value``, appended (:meth:`CsvStore.set_room_values`):
    the rooms' topics, settings, operators, bans, mutes and invitations;
    the last row of a room, kind and key counts; compacted at load
    (:func:`read_room_values`).

Each file starts with a header row, ``#chatd-KIND,MAJOR.MINOR,COLUMN,...``
(:class:`Table`, :data:`VERSION`): rows are read by column name, a newer
minor version may add columns at the end (read as before), a newer major
version is refused at start-up (:class:`FormatError`), and files of format 1
(before the header) are migrated on load (:func:`open_table`).

chatd never writes a row over several lines, so every file is read one
physical line = one row (:func:`parse_line`): a damaged line never hides the
lines after it. One leading UTF-8 BOM is read past. Rows are checked on
load (names, owners, duplicates: :func:`read_rooms`,
:func:`read_user_lines`); a row that fails is skipped, reported and moved
to ``FILE.rejected``. A log.csv line that would swallow the rows appended
after it becomes one quoted cell (:func:`_mend_last_line`).

:class:`CsvStore` implements :class:`chatd.store.Store`. Every file
operation runs in one dedicated writer thread, so writes happen
in the order they were asked for and the reactor thread never waits on the
disk; room history has a thread of its own (``history_run``). Callers get
Deferreds. ``add_user``, ``add_room``, ``delete_room``, ``set_room_values``
and ``set_room_owner`` fire only after the data is fsynced; log events and
marks not asked to be durable are queued and written at most
``log_interval`` seconds later (and on shutdown).

The store knows nothing about connections.
"""

from __future__ import annotations

import csv
import operator
import os
import re
import secrets
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast, get_args
from urllib.parse import parse_qsl, quote, urlencode

from datetime import datetime, timedelta, timezone

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.settings import PUBLIC_ROOM
from chatd.store import (
    PUBLIC_ROOM_ID, SERVER, Accounts, EventName, FileRecord, HistoryBatch, Loaded, LogEvent, RoomRecord, RoomValue,
    RoomValueKind, StoreError, UserRecord, address_fields,
)
from chatd.stores.csv_files import (  # noqa: F401  (also known from here: tests, chatd-admin)
    BOM, HEADERLESS, REJECTED, TORN, VERSION, FormatError, Table, append_data, append_rows, parse_line,
    repair_tail, replace_data, replace_rows, _DIR_SYNC_UNSUPPORTED,
    FORMULA_STARTS as _FORMULA_STARTS, ascii_number as _ascii_number, cell_text as _unsafe,
    encode_rows as _encode_rows, formula_safe as _formula_safe, fsync_dir as _fsync_dir,
    keep_aside as _keep_aside, line_start as _line_start, open_sized as _open_sized,
    parse_version as _parse_version,
)
from chatd.stores.csv_history import HistoryFiles
from chatd.stores.jobs import HistoryJobs
from chatd.text import ROOM_NAME_MAX, USER_NAME_MAX, check_name, clean_text, name_key, spreadsheet_safe

__all__ = ["CsvStore", "Loaded", "RoomRecord", "StoreError", "UserRecord", "address_fields"]

#: Runs ``f(*args)`` somewhere (the writer thread) and returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]

USERS = "users.csv"
ROOMS = "rooms.csv"
EVENTS = "log.csv"
OFFLINE = "offline.csv"
MARKS = "marks.csv"
ROOM_VALUES = "room_values.csv"




USERS_TABLE = Table("users", USERS, ("name", "password_hash", "created"))
#: ``id`` came with format 2.1 (room history is kept by id); a 2.0 file gets ids at load (:func:`read_rooms`).
ROOMS_TABLE = Table("rooms", ROOMS, ("name", "owner", "created", "id"), frozenset({"id"}))
EVENTS_TABLE = Table("log", EVENTS, ("timestamp", "event", "user", "room", "detail"))
OFFLINE_TABLE = Table("offline", OFFLINE, ("time", "sender", "recipient", "text"))
MARKS_TABLE = Table("marks", MARKS, ("user", "key", "value"))
ROOM_VALUES_TABLE = Table("room-values", ROOM_VALUES, ("room", "kind", "key", "value"))


def user_from_row(row: str, indices: tuple[int, int, int] = (0, 1, 2)) -> UserRecord | None:
    """Parse one users.csv line (``indices``: where name, hash and created are); None if malformed."""
    fields = parse_line(row)
    if fields is None or len(fields) <= max(indices):
        return None
    return UserRecord(*(fields[index] for index in indices))


class CsvAccounts(Accounts):
    """
    Accounts as loaded from users.csv: each the raw line, parsed into a
    :class:`UserRecord` only when read (a million accounts load in about a
    second and take one string each); accounts set later are records.
    A malformed line reads as no account.
    """

    def __init__(self, lines: dict[str, str], indices: tuple[int, int, int] = (0, 1, 2)) -> None:
        self._lines = cast("dict[str, str | UserRecord]", lines)
        #: No record set yet: every value is a line (hash_texts can hand out the values as they are).
        self._all_lines = True
        self._indices = indices

    def __getitem__(self, key: str) -> UserRecord:
        value = self._lines[key]
        if isinstance(value, UserRecord):
            return value
        record = user_from_row(value, self._indices)
        if record is None:
            raise KeyError(key)
        return record

    def __setitem__(self, key: str, record: UserRecord) -> None:
        self._lines[key] = record
        self._all_lines = False

    def __delitem__(self, key: str) -> None:
        del self._lines[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def hash_texts(self) -> Iterable[str]:
        """The raw lines (each holds its hash) and the hashes of records set since."""
        if self._all_lines:
            return cast("Iterable[str]", self._lines.values())
        return (value if isinstance(value, str) else value.password_hash for value in self._lines.values())


#: Events kept in memory while log.csv cannot be written; the oldest are dropped beyond this.
MAX_QUEUED_EVENTS = 100_000


def encode_detail(fields: Mapping[str, object]) -> str:
    """
    The detail column of log.csv: ``key=value&key=value`` in the order
    given, values form-urlencoded (``%20`` for a space; ``&``, ``=``, ``,``,
    quotes and line ends encoded, ``:`` kept for IPv6 addresses), so the
    cell never needs CSV quoting and never starts like a formula.
    """
    return urlencode({key: str(value) for key, value in fields.items()}, quote_via=quote, safe=":")


def decode_detail(detail: str) -> dict[str, str]:
    """The fields of a log.csv detail cell (:func:`encode_detail`'s inverse; ``urllib.parse.parse_qsl``)."""
    return dict(parse_qsl(detail, keep_blank_values=True))


def _first_row(path: str) -> tuple[list[str], int, bool] | None:
    """
    The first CSV row of ``path`` (after one leading UTF-8 BOM), its length
    in bytes (with the BOM and its newline) and whether a BOM was there;
    None if the file is empty. A first line that is no whole row reads as [].
    """
    with open(path, "rb") as handle:
        line = handle.readline()
    if not line:
        return None
    bom = line.startswith(BOM)
    row = parse_line(line[len(BOM) if bom else 0:].decode("utf-8", "replace").rstrip("\n"))
    return row or [], len(line), bom


def _reject(path: str, lines: Iterable[bytes]) -> None:
    """Append ``lines`` (without their newlines) to ``path``'s side file ``PATH.rejected`` (0600) and sync it."""
    lines = list(lines)
    if lines:
        _keep_aside(path + REJECTED, b"\n".join(lines))


def _swallows(line: str) -> bool:
    """
    Whether a CSV reader of the whole file would take the lines after
    ``line`` into one of its cells (a quote left open at its end). A field
    over ``csv.field_size_limit()`` stops the reader first: then an odd
    number of quotes says so.
    """
    try:
        return len(list(csv.reader([line, ""]))) < 2
    except csv.Error:
        return line.count('"') % 2 == 1


def _as_one_cell(line: bytes) -> bytes:
    """A line that is no whole row, as a row of one quoted, formula-safe cell (its text unchanged otherwise)."""
    return _encode_rows([[spreadsheet_safe(line.decode("utf-8", "replace").rstrip("\r"))]]).rstrip(b"\n").replace(
        b"\r", b"")


def _line_numbers(numbers: list[int]) -> str:
    """``line 3`` or ``lines 3, 7, 9`` (the first ten, then ``...``)."""
    shown = ", ".join(str(number) for number in numbers[:10]) + (", ..." if len(numbers) > 10 else "")
    return f"line {shown}" if len(numbers) == 1 else f"lines {shown}"


@attrs.define
class Skipped:
    """
    The lines of one data file that were not loaded, by why: each becomes a
    note ``FILE: skipped N WHY (lines ...); moved to FILE.rejected``.
    """

    file: str
    #: why (``malformed row(s)``, ``row(s) with an invalid name``, ...) -> line numbers (the header is line 1).
    why: dict[str, list[int]] = attrs.field(factory=dict)
    #: The index (in the data lines) of every skipped line.
    indices: set[int] = attrs.field(factory=set)

    def add(self, why: str, index: int, number: int) -> None:
        self.why.setdefault(why, []).append(number)
        self.indices.add(index)

    def notes(self) -> list[str]:
        return [f"{self.file}: skipped {len(numbers)} {why} ({_line_numbers(numbers)}); moved to {self.file}{REJECTED}"
                for why, numbers in self.why.items()]


MALFORMED = "malformed row(s)"
INVALID_NAME = "row(s) with an invalid name"
DUPLICATE_NAME = "row(s) with a duplicate name"
NO_OWNER = "row(s) of a room without an owner"


def _migrate_headerless(path: str, table: Table, bom: bool) -> tuple[str, list[str]]:
    """
    Give a file of format 1 (no header) today's header: write the header and
    the old bytes aside, fsync, rename over the old file, fsync the
    directory (a kill at any instant leaves the old file or the new one).
    Format 1's columns are version 2.0's, so the rows are kept byte for byte;
    a leading BOM is dropped. In log.csv (which chatd only ever appends to), a
    line that is no whole row would swallow every row appended after it in
    any CSV reader: it becomes one quoted cell (:func:`_as_one_cell`), its
    bytes kept in ``log.csv.rejected``. Returns the migration note and notes
    on what was repaired.
    """
    aside = path + ".new"
    rows = 0
    mended: list[int] = []
    originals: list[bytes] = []
    with open(path, "rb") as old, open(aside, "wb") as new:
        os.chmod(aside, 0o600)
        new.write(_encode_rows([table.header()]))
        if bom:
            old.seek(len(BOM))
        rest = b""
        while chunk := old.read(1 << 20):
            block, newline, rest = (rest + chunk).rpartition(b"\n")
            if not newline:
                rest = block + rest
                continue
            block += b"\n"
            if table is EVENTS_TABLE and (b'"' in block or b"\r" in block):
                lines = block.split(b"\n")[:-1]
                for index, line in enumerate(lines):
                    if (b'"' in line or b"\r" in line) and _swallows(line.decode("utf-8", "replace")):
                        mended.append(rows + index + 2)  # the header is line 1
                        originals.append(line)
                        lines[index] = _as_one_cell(line)
                block = b"".join(line + b"\n" for line in lines)
            rows += block.count(b"\n")
            new.write(block)
        new.write(rest)  # repair_tail left none: the file ends with a newline
        new.flush()
        os.fsync(new.fileno())
    _reject(path, originals)
    os.replace(aside, path)
    _fsync_dir(os.path.dirname(path) or ".")
    notes = [] if not mended else [
        f"{table.file}: {len(mended)} malformed row(s) ({_line_numbers(mended)}) rewritten as one quoted cell each, "
        f"so they cannot swallow the rows after them; their bytes are in {table.file}{REJECTED}"]
    return (f"{table.file}: migrated from format {HEADERLESS} (no header) to {'%d.%d' % VERSION}: "
            f"added the header row, kept {rows} row(s) as they were"
            + ("; dropped the UTF-8 byte order mark at its start" if bom else "")), notes


def _mend_last_line(path: str, header_length: int) -> list[str]:
    """
    log.csv is only appended to: if its last line is no whole row (an
    unclosed quote), every event appended after it would land inside that
    quoted cell for any CSV reader. Rewrite that line in place as one quoted
    cell (:func:`_as_one_cell`, which is longer, so it only overwrites and
    extends), after keeping its bytes in ``log.csv.rejected``. Returns notes.
    """
    opened = _open_sized(path)
    if opened is None:
        return []
    handle, size = opened
    with handle:
        if size <= header_length:
            return []
        start = max(_line_start(handle, size - 1), header_length)
        handle.seek(start)
        line = handle.read(size - start).rstrip(b"\n")
        if not _swallows(line.decode("utf-8", "replace")):
            return []
        _reject(path, [line])
        handle.seek(start)
        handle.write(_as_one_cell(line) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    name = os.path.basename(path)
    return [f"{name}: its last line was a malformed row (it would swallow the rows appended after it): "
            f"rewrote it as one quoted cell; its bytes are in {name}{REJECTED}"]


def open_table(path: str, table: Table, migrations: list[str] | None = None) -> tuple[list[str], int, list[str]]:
    """
    Prepare the data file ``path`` of ``table`` for reading and appending:
    cut a torn last line (:func:`repair_tail`), read past one leading UTF-8
    BOM, migrate a file without a header (:func:`_migrate_headerless`),
    mend log.csv's last line (:func:`_mend_last_line`); a missing or empty
    file gets its header with its first row (:func:`append_rows`).
    Returns its column names (from its header), the byte length of the
    header row (with a BOM before it), and notes on what was repaired; what
    was migrated is appended to ``migrations``. Raises :class:`FormatError`
    for a file of another major version than 2, of another kind, or whose
    header lacks a column this version needs; OSError.
    """
    notes = repair_tail(path)
    try:
        first = _first_row(path)
    except FileNotFoundError:
        first = None
    if first is None:  # the first append writes the header (append_rows)
        return list(table.columns), 0, notes
    row, length, bom = first
    if not row or not row[0].startswith("#chatd-"):
        note, repaired = _migrate_headerless(path, table, bom)
        if migrations is not None:
            migrations.append(note)
        return list(table.columns), len(_encode_rows([table.header()])), notes + repaired
    if bom:
        notes.append(f"{table.file}: read past a UTF-8 byte order mark at its start "
                     "(dropped when chatd next rewrites the file)")
    version = _parse_version(row[1]) if len(row) > 1 else None
    if row[0] != f"#chatd-{table.kind}" or version is None:
        raise FormatError(f"{table.file}: not a chatd {table.kind} file (its header is {','.join(row)[:80]!r})")
    if version[0] > VERSION[0]:
        raise FormatError(f"{table.file} is format {row[1]}, newer than this chatd reads "
                          f"({VERSION[0]}.x); run a newer chatd or restore a backup")
    if version[0] < VERSION[0]:
        raise FormatError(f"{table.file}: its header claims format {row[1]}, which never existed (format "
                          f"{HEADERLESS} had no header; this chatd reads {VERSION[0]}.x); fix the header or "
                          "restore a backup")
    columns = row[2:]
    missing = [column for column in table.columns if column not in columns and column not in table.optional]
    if missing:
        raise FormatError(f"{table.file}: its header lacks the column(s) {', '.join(missing)}")
    if table is EVENTS_TABLE:
        notes += _mend_last_line(path, length)
    return columns, length, notes


def _indices(columns: list[str], table: Table) -> tuple[int, ...]:
    """Where each column of ``table`` is in a file with these ``columns`` (-1: an optional column it lacks)."""
    return tuple(columns.index(column) if column in columns else -1 for column in table.columns)


def _needed(indices: tuple[int, ...], table: Table) -> int:
    """The index of the last cell a row must have: that of its last column that is not optional."""
    return max(index for index, column in zip(indices, table.columns) if column not in table.optional)


def _pick(row: list[str], indices: tuple[int, ...]) -> list[str]:
    """The cells of ``row`` at ``indices``; "" for a missing one (an optional column, a short row)."""
    return [row[index] if 0 <= index < len(row) else "" for index in indices]


def _data_lines(path: str, header_length: int) -> list[bytes]:
    """The lines of ``path`` after its header, without their newlines ([] if there is no file)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(header_length)
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()  # after the final newline (repair_tail cut a torn last line)
    return lines


def _move_out(path: str, header_length: int, lines: list[bytes], skipped: Skipped) -> None:
    """
    Keep the bytes of the skipped lines in ``PATH.rejected`` (appended,
    fsynced), then rewrite ``path`` without them (atomically, its header
    without a BOM), so no later rewrite or CSV reader can mix them into
    other rows.
    """
    if not skipped.indices:
        return
    _reject(path, (line for index, line in enumerate(lines) if index in skipped.indices))
    first = _first_row(path)
    header = _encode_rows([first[0]]) if header_length and first is not None else b""
    replace_data(path, header + b"".join(line + b"\n" for index, line in enumerate(lines)
                                         if index not in skipped.indices))


def read_rows(path: str, table: Table, migrations: list[str] | None = None,
              check: Callable[[list[str]], str | None] | None = None) -> tuple[list[tuple[int, list[str]]], list[str]]:
    """
    The rows of the data file ``path`` (:func:`open_table` first), each
    with its line number (the header is line 1) and cut down to ``table``'s
    columns in its order, read by column name: a file of a newer minor
    version with more columns reads the same. Each physical line is one row,
    parsed on its own (:func:`parse_line`). A line that is no whole row or
    has too few cells (``malformed row(s)``), or that ``check`` (given the
    row) names a reason for, is skipped, reported and moved to
    ``PATH.rejected`` (:func:`_move_out`); blank lines are ignored.
    Returns the rows and notes.
    """
    columns, header_length, notes = open_table(path, table, migrations)
    indices = _indices(columns, table)
    needed = _needed(indices, table)
    lines = _data_lines(path, header_length)
    skipped = Skipped(table.file)
    first = 2 if header_length else 1
    rows: list[tuple[int, list[str]]] = []
    for index, line in enumerate(lines):
        if not line.strip(b"\r"):
            continue
        row = parse_line(line.decode("utf-8", "replace"))
        if row is None or len(row) <= needed:
            skipped.add(MALFORMED, index, first + index)
            continue
        picked = _pick(row, indices)
        why = check(picked) if check is not None else None
        if why is not None:
            skipped.add(why, index, first + index)
            continue
        rows.append((first + index, picked))
    _move_out(path, header_length, lines, skipped)
    return rows, notes + skipped.notes()


def event_rows(data_dir: str) -> Iterator[list[str] | None]:
    """
    The rows of the data directory's log.csv in order, each as its cells
    ``timestamp, event, user, room, detail`` (read by column name), None for
    a line that is no whole row; reads only (nothing is moved aside, unlike
    :func:`read_rows`). For copying the log elsewhere (chatd-admin
    migrate-to-postgres). Raises OSError and FormatError.
    """
    path = os.path.join(data_dir, EVENTS)
    if not os.path.exists(path):
        return
    columns, header_length, _ = open_table(path, EVENTS_TABLE)
    indices = _indices(columns, EVENTS_TABLE)
    needed = _needed(indices, EVENTS_TABLE)
    with open(path, "rb") as handle:
        handle.seek(header_length)
        for line in handle:  # streamed: a log of gigabytes is never in memory at once
            if not line.endswith(b"\n"):
                return  # a torn last line (the server's start cuts it)
            if line.strip(b"\r\n"):
                row = parse_line(line[:-1].decode("utf-8", "replace"))
                yield _pick(row, indices) if row is not None and len(row) > needed else None


def read_rooms(path: str, migrations: list[str] | None = None) -> tuple[list[tuple[int, RoomRecord]], list[str]]:
    """
    rooms.csv (:func:`read_rows`) as records with their line numbers. Rows
    skipped (and moved to ``rooms.csv.rejected``): a name that breaks the
    naming rule (:func:`chatd.text.check_name`), a room other than the
    public one without an owner, a name already taken case-insensitively
    (by an earlier row or the built-in public room: the first row counts),
    an id that is not 1-32 ASCII letters and digits, an id already taken
    (by an earlier row, or ``public``: the public room's). A room without
    an id (a file of format 2.0, a row an older chatd appended) gets a fresh
    one (:func:`new_room_id`) and the file is rewritten with it
    (:func:`_give_room_ids`; noted in ``migrations``).
    """
    seen = {name_key(PUBLIC_ROOM)}
    ids = {PUBLIC_ROOM_ID}

    def check(row: list[str]) -> str | None:
        name, owner, _, room_id = row
        if check_name(name, "room", ROOM_NAME_MAX) is not None:
            return INVALID_NAME
        if name_key(name) in seen:
            return DUPLICATE_NAME
        if not owner:
            return NO_OWNER
        if room_id and not ROOM_ID.match(room_id):
            return INVALID_ID
        if room_id in ids:
            return DUPLICATE_ID
        seen.add(name_key(name))
        if room_id:
            ids.add(room_id)
        return None

    rows, notes = read_rows(path, ROOMS_TABLE, migrations, check)
    records: list[tuple[int, RoomRecord]] = []
    fresh = 0
    for number, (name, owner, created, room_id) in rows:
        if not room_id:
            room_id = new_room_id(ids)
            ids.add(room_id)
            fresh += 1
        records.append((number, RoomRecord(name, owner, created, room_id)))
    first = _first_row(path) if os.path.exists(path) else None
    if first is not None and "id" not in first[0][2:] or fresh:
        note = _give_room_ids(path, [record for _, record in records])
        if migrations is not None:
            migrations.append(f"{ROOMS}: {note}gave {fresh} room(s) an id (their history is kept by id)")
    return records, notes


#: A room id (:attr:`chatd.store.RoomRecord.id`): 1 to 32 ASCII letters and digits.
ROOM_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
INVALID_ID = "row(s) with an invalid id"
DUPLICATE_ID = "row(s) with a duplicate id"


def new_room_id(taken: Container[str] = ()) -> str:
    """A fresh room id: 16 random hex digits (64 bits, ``secrets.token_hex``), none of ``taken``."""
    while True:
        room_id = secrets.token_hex(8)
        if room_id not in taken:
            return room_id


def _give_room_ids(path: str, records: list[RoomRecord]) -> str:
    """
    Rewrite rooms.csv (aside, fsync, rename: :func:`replace_data`) with the
    ids of ``records`` (its rows after :func:`read_rows`, in order) in its
    ``id`` column; a header without one gets it at its end and version 2.1.
    Rows that had an id, and any other columns, are kept as they were.
    Returns the start of the migration note: ``migrated from format 2.0 to
    2.1: added the id column; `` if the header changed, else "".
    """
    header, header_length, _ = _first_row(path) or (ROOMS_TABLE.header(), 0, False)  # read_rows gave it a header
    old = header[1]
    columns = header[2:]
    note = ""
    if "id" not in columns:
        columns.append("id")
        header = [header[0], "%d.%d" % max(_parse_version(old) or VERSION, VERSION), *columns]
        note = f"migrated from format {old} to {header[1]}: added the id column; "
    at = columns.index("id")
    kept = [line for line in _data_lines(path, header_length) if line.strip(b"\r")]
    assert len(kept) == len(records), "read_rows left a row it did not return"
    lines = []
    for line, record in zip(kept, records):
        row = parse_line(line.decode("utf-8", "replace")) or []
        if len(row) > at and row[at]:
            lines.append(line + b"\n")
        else:
            row += [""] * (at + 1 - len(row))
            row[at] = record.id
            lines.append(_encode_rows([row]))
    replace_data(path, _encode_rows([header]) + b"".join(lines))
    return note


#: How a message's time is kept in offline.csv: ISO-8601 UTC to the microsecond.
_MESSAGE_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
BAD_TIME = "a time that is not ISO-8601 UTC"


def private_row(message: PrivateMessage) -> list[str]:
    """The offline.csv row of ``message`` (the text formula-safe: :func:`read_private` takes the mark off)."""
    return [datetime.fromtimestamp(message.at, timezone.utc).strftime(_MESSAGE_TIME), message.sender,
            message.recipient, _formula_safe(message.text)]


def _message_time(text: str) -> float:
    return datetime.strptime(text, _MESSAGE_TIME).replace(tzinfo=timezone.utc).timestamp()


def read_private(path: str, migrations: list[str] | None = None) -> tuple[list[PrivateMessage], list[str]]:
    """
    offline.csv (:func:`read_rows`) as messages, oldest first. Rows skipped
    (and moved to ``offline.csv.rejected``): a time that does not parse.
    """

    def check(row: list[str]) -> str | None:
        try:
            _message_time(row[0])
        except ValueError:
            return BAD_TIME
        return None

    rows, notes = read_rows(path, OFFLINE_TABLE, migrations, check)
    messages = [PrivateMessage(_message_time(at), sender, recipient, _unsafe(text))
                for _, (at, sender, recipient, text) in rows]
    return messages, notes


#: Names, each followed by a newline, all valid (:func:`chatd.text.check_name`): one pass in C.
_USER_NAMES = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_-]{0,%d}\n)*\Z" % (USER_NAME_MAX - 1))
#: One users.csv line that starts with a valid name and a comma.
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,%d}," % (USER_NAME_MAX - 1))


def read_user_lines(path: str, migrations: list[str] | None = None) -> tuple[CsvAccounts, list[str]]:
    """
    users.csv as :class:`CsvAccounts` (``{name key: line}``, parsed when
    read), after :func:`open_table`; of several lines of one name (a
    replaced password hash), the last.

    Rows skipped, reported and moved to ``users.csv.rejected``: a line that
    is no whole row or has too few cells (``malformed``), a name that breaks
    the naming rule (:func:`chatd.text.check_name`), a name spelt otherwise
    than the first row of its name key (``Alice`` after ``alice``: a
    ``duplicate``; chatd never registers both).

    Fast path: where the name is the first column (format 2.x), the name is
    everything before the first comma; one regular expression over all the
    names checks them, every line must have a comma and the file an even
    number of quotes (an unclosed quote makes it odd); the rest of a line
    is parsed only at login (a line whose rest is no whole row then reads as
    no account). Anything else (a bad line, an odd number of quotes, a second
    spelling, columns in another order) takes the slow path, which parses
    and checks every line.
    """
    columns, header_length, notes = open_table(path, USERS_TABLE, migrations)
    indices = cast("tuple[int, int, int]", _indices(columns, USERS_TABLE))
    try:
        with open(path, "rb") as handle:
            handle.seek(header_length)
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return CsvAccounts({}, indices), notes
    if indices[0] == 0 and text.count('"') % 2 == 0:
        lines = text.split("\n")
        lines.pop()  # after the final newline
        names = [line.partition(",")[0] for line in lines]
        joined = "\n".join(names) + "\n"
        # Every name valid (one pass in C), every line with a comma (a line without one is its own "name").
        if _USER_NAMES.match(joined) and not any(map(operator.eq, names, lines)):
            keys = joined.lower().split("\n")  # name_key of an ASCII name
            keys.pop()
            users = dict(zip(keys, lines))
            if len(users) == len(lines) or len(users) == len(set(names)):
                return CsvAccounts(users, indices), notes
    return _read_user_lines_slowly(path, header_length, indices, notes)


def _read_user_lines_slowly(path: str, header_length: int, indices: tuple[int, int, int], notes: list[str]
                            ) -> tuple[CsvAccounts, list[str]]:
    """
    :func:`read_user_lines` line by line: a line that starts with a valid
    name and a comma and has an even number of quotes is kept as it is (as
    on the fast path), any other is parsed and checked; bad lines are moved
    out (:func:`_move_out`).
    """
    lines = _data_lines(path, header_length)
    skipped = Skipped(USERS)
    first = 2 if header_length else 1
    name_first = indices[0] == 0
    spelling: dict[str, str] = {}
    users: dict[str, str] = {}
    for index, raw in enumerate(lines):
        line = raw.decode("utf-8", "replace")
        if name_first and _USER_NAME.match(line) and line.count('"') % 2 == 0:
            name = line[: line.find(",")]
        elif not line.strip("\r"):
            continue
        else:
            record = user_from_row(line, indices)
            if record is None:
                skipped.add(MALFORMED, index, first + index)
                continue
            if check_name(record.name, "user", USER_NAME_MAX) is not None:
                skipped.add(INVALID_NAME, index, first + index)
                continue
            name = record.name
        key = name_key(name)
        if spelling.setdefault(key, name) != name:
            skipped.add(DUPLICATE_NAME, index, first + index)
        else:
            users[key] = line
    _move_out(path, header_length, lines, skipped)
    return CsvAccounts(users, indices), notes + skipped.notes()


class CsvStore(HistoryJobs):
    """
    Deferred-based access to the data directory.

    :param data_dir: the directory (created owner-only if missing).
    :param run: runs a function in the writer thread and returns a Deferred;
        production passes a one-thread pool, tests a synchronous stand-in.
    :param clock: schedules the periodic flush of the event log.
    :param now: returns the current ISO-8601 UTC timestamp for log rows.
    :param log_interval: seconds an event may wait before it is written.
    :param history_run: runs a function in the history thread (room
        history: :meth:`append_history`, :meth:`read_history`,
        :meth:`expire_history`, the removal of a deleted room's history);
        production passes a second one-thread pool, so appends never wait
        behind a rewrite of users.csv; default ``run``.
    :param history_read_run: runs a function in a history reader thread
        (:meth:`read_history`); production passes a pool of a few threads,
        so a read (a deep page of a long day) never delays a commit, nor a
        commit a read; default ``history_run``.
    """

    log = Logger()
    #: One process reads its own spool: no file is kept for other nodes (chatd.store.Store.store_file).
    shares_files = False

    def store_file(self, record: FileRecord, path: str) -> defer.Deferred[None]:
        """Not supported: one process reads its own spool (chatd.transfer); fails with StoreError."""
        return defer.fail(StoreError("the CSV store keeps no files for other nodes (use --store postgresql://...)"))

    def read_file_chunk(self, file_id: str, seq: int) -> defer.Deferred[bytes]:
        """Not supported (:meth:`store_file`); fails with StoreError."""
        return defer.fail(StoreError("the CSV store keeps no files for other nodes"))

    def expire_files(self, now: float) -> defer.Deferred[int]:
        """Nothing to expire: fires with 0."""
        return defer.succeed(0)

    def __init__(
        self,
        data_dir: str,
        run: Runner,
        clock: IReactorTime,
        now: Callable[[], str],
        log_interval: float = 0.5,
        history_run: Runner | None = None,
        history_read_run: Runner | None = None,
    ) -> None:
        self.data_dir = data_dir
        self._run = run
        self._history_run = history_run or run
        self._history_read_run = history_read_run or self._history_run
        self._clock = clock
        self._now = now
        self._log_interval = log_interval
        self._events: list[list[str]] = []
        self._event_flush: defer.Deferred[None] | None = None
        super().__init__()
        self._events_failing = False
        #: marks.csv rows of set_marks(durable=False), written with the events.
        self._marks: list[list[str]] = []
        self._history = HistoryFiles(data_dir)
        self._history_failing = False
        #: The ids of the stored rooms (the public one's too): history of any other id is dropped.
        self._room_ids: set[str] = {PUBLIC_ROOM_ID}
        #: Room name key -> id, for delete_room.
        self._room_id_of: dict[str, str] = {}
        #: rooms.csv's columns (as its header names them): where an appended room's cells go.
        self._room_columns: list[str] = list(ROOMS_TABLE.columns)

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    # -- start-up -------------------------------------------------------

    def load(self) -> defer.Deferred[Loaded]:
        """Create the data directory if needed and read users and rooms."""
        return self._run(self._load)

    def load_now(self) -> Loaded:
        """
        :meth:`load` in the calling thread, for start-up before the reactor
        runs (a migration of old files happens here); raises OSError and
        :class:`FormatError` (a file of a newer major version).
        """
        return self._load()

    def _load(self) -> Loaded:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        migrations: list[str] = []
        users, notes = read_user_lines(self._path(USERS), migrations)
        rooms, room_notes = read_rooms(self._path(ROOMS), migrations)
        _, _, event_notes = open_table(self._path(EVENTS), EVENTS_TABLE, migrations)
        private, private_notes = read_private(self._path(OFFLINE), migrations)
        marks, mark_notes = read_marks(self._path(MARKS), migrations)
        ownerless = [f"line {number}: {room.name}" for number, room in rooms if name_key(room.owner) not in users]
        if ownerless:
            room_notes.append(f"{ROOMS}: kept {len(ownerless)} room(s) whose owner has no account "
                              f"({', '.join(ownerless[:10])}{', ...' if len(ownerless) > 10 else ''}); "
                              "whoever registers that name owns the room")
        first = _first_row(self._path(ROOMS)) if os.path.exists(self._path(ROOMS)) else None
        if first is not None and first[0][:1] == [f"#chatd-{ROOMS_TABLE.kind}"]:
            self._room_columns = first[0][2:]
        self._room_id_of = {name_key(room.name): room.id for _, room in rooms}
        self._room_ids = {PUBLIC_ROOM_ID, *self._room_id_of.values()}
        room_values, value_notes = read_room_values(self._path(ROOM_VALUES), self._room_ids, migrations)
        history, history_notes = self._history.load(self._room_ids)
        return Loaded(users, [room for _, room in rooms],
                      notes + room_notes + event_notes + private_notes + mark_notes + value_notes + history_notes,
                      migrations, private, history, marks, room_values)

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
            append_rows(self._path(EVENTS), rows, header=EVENTS_TABLE.header())
        except OSError as error:
            unwritten.append((rows, str(error)))

    def add_user(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Append an account; fires once it and its ``event`` row (``register``;
        see :meth:`_durable`) are fsynced, fails with StoreError.
        """
        row = [record.name, record.password_hash, record.created]
        return self._durable(append_rows, self._path(USERS), [row], True, USERS_TABLE.header(),
                             event=self._event_row(event))

    def replace_password(self, record: UserRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Append a new version of the account (the last line of a name counts:
        one appended line is the whole update, so a crash leaves the old line
        or the new one); fires once it and its ``event`` row (``rehash``) are
        fsynced, fails with StoreError.
        """
        return self.add_user(record, event)

    def add_room(self, record: RoomRecord, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Append a room (its cells where rooms.csv's header puts them); fires
        once it and its ``event`` row are fsynced, fails with StoreError.
        Raises ValueError if ``record.id`` is not 1-32 ASCII letters and
        digits (empty too), or is the public room's: the caller makes the id.
        """
        if not ROOM_ID.match(record.id) or record.id == PUBLIC_ROOM_ID:
            raise ValueError(f"room {record.name!r}: {record.id!r} is no room id (1-32 ASCII letters and digits)")
        row = _in_columns(self._room_columns, ROOMS_TABLE, [record.name, record.owner, record.created, record.id])
        key = name_key(record.name)
        self._room_ids.add(record.id)  # now: its history may come before this fires
        self._room_id_of[key] = record.id

        def failed(failure: Any) -> Any:
            self._room_ids.discard(record.id)
            self._room_id_of.pop(key, None)
            return failure

        return self._durable(append_rows, self._path(ROOMS), [row], True, ROOMS_TABLE.header(),
                             event=self._event_row(event)).addErrback(failed)

    def delete_room(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Rewrite rooms.csv without ``name``, atomically (the commit point);
        fires once it and its ``event`` row are durable. Then the room's
        history directory is removed in the history thread, after the
        appends queued before, and room_values.csv is rewritten without the
        room's values in the writer thread (a failure of either is logged; a
        crash before either leaves files the next start removes or drops:
        :meth:`chatd.stores.csv_history.HistoryFiles.load`,
        :func:`read_room_values`). History and values given for the room
        from this call on are dropped.
        """
        key = name_key(name)
        room_id = self._room_id_of.get(key)
        if room_id is not None:
            self._room_ids.discard(room_id)

        def deleted(_: None) -> None:
            self._room_id_of.pop(key, None)
            if room_id is not None:
                self._in_history_thread(self._history.delete, room_id).addErrback(
                    lambda failure: self.log.error("could not remove the history of deleted room {room} ({id}): "
                                                   "{why}; it is removed at the next start", room=name, id=room_id,
                                                   why=failure.getErrorMessage()))
                self._run(self._delete_values, lambda row: row[0] == room_id).addErrback(
                    lambda failure: self.log.error("could not remove the values of deleted room {room} ({id}) from "
                                                   "{file}: {why}; they are dropped at the next start", room=name,
                                                   id=room_id, file=ROOM_VALUES, why=failure.getErrorMessage()))

        def failed(failure: Any) -> Any:
            if room_id is not None:
                self._room_ids.add(room_id)
            return failure

        return self._durable(self._delete_rows, ROOMS_TABLE, lambda row: name_key(row[0]) == key,
                             event=self._event_row(event)).addCallbacks(deleted, failed)

    def delete_user(self, name: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Rewrite offline.csv without the messages queued for ``name``,
        marks.csv without its marks (and forget those queued),
        room_values.csv without the operator roles, bans, mutes and
        invitations of its name key (in every room and server-wide), then
        users.csv without any line of ``name`` (every version of the
        account), each atomically; fires once all and the ``event`` row
        (``account_delete``) are durable, fails with StoreError. The account
        goes last: a crash half-way never leaves a role or ban for whoever
        registers the name next.
        """
        key = name_key(name)
        self._marks = [row for row in self._marks if name_key(row[0]) != key]

        def delete() -> None:
            if os.path.exists(self._path(OFFLINE)):
                self._delete_rows(OFFLINE_TABLE, lambda row: name_key(row[2]) == key)
            if os.path.exists(self._path(MARKS)):
                self._delete_rows(MARKS_TABLE, lambda row: name_key(row[0]) == key)
            self._delete_values(lambda row: row[1] in ACCOUNT_KINDS and _unsafe(row[2]) == key)
            self._delete_rows(USERS_TABLE, lambda row: name_key(row[0]) == key)

        return self._durable(delete, event=self._event_row(event))

    #: One process: the state keeps the loaded private messages and checks the limit itself.
    shares_private = False

    def queue_private(self, message: PrivateMessage, limit: int = 0) -> defer.Deferred[None]:
        """Append ``message`` to offline.csv; fires once it is fsynced, fails with StoreError (``limit``: unused)."""
        return self._durable(append_rows, self._path(OFFLINE), [private_row(message)], True, OFFLINE_TABLE.header())

    def remove_private(self, messages: Sequence[PrivateMessage]) -> defer.Deferred[None]:
        """Rewrite offline.csv without ``messages``, atomically; fires once that is durable."""
        rows = {tuple(private_row(message)) for message in messages}
        return self._durable(self._delete_rows, OFFLINE_TABLE, lambda row: tuple(row) in rows)

    def take_private(self, name: str) -> defer.Deferred[list[PrivateMessage]]:
        """Not used (:attr:`shares_private` is false: the state keeps what :meth:`load` read); fails with StoreError."""
        return defer.fail(StoreError("the CSV store's private messages are read at start-up"))

    def _delete_rows(self, table: Table, drop: Callable[[list[str]], bool]) -> None:
        """
        In the writer thread: ``table``'s file without the rows ``drop``
        (given the row's cells in ``table``'s columns) says to drop, written
        aside, fsynced and renamed; its header and other columns kept.
        """
        self._rewrite_rows(table, lambda row: None if drop(row) else row)

    def _delete_values(self, drop: Callable[[list[str]], bool]) -> None:
        """In the writer thread: :meth:`_delete_rows` of room_values.csv, if there is one."""
        if os.path.exists(self._path(ROOM_VALUES)):
            self._delete_rows(ROOM_VALUES_TABLE, drop)

    def _rewrite_rows(self, table: Table, edit: Callable[[list[str]], list[str] | None]) -> None:
        """
        In the writer thread: rewrite ``table``'s file (aside, fsync,
        rename) with each row as ``edit`` returns it, given its cells in
        ``table``'s columns: None drops it, a changed list puts the new cells
        in their columns (the row's other cells kept), the same list keeps
        the line byte for byte. Its header is kept; a line that is no whole
        row stays apart, as it was.
        """
        path = self._path(table.file)
        columns, header_length, _ = open_table(path, table)
        first = _first_row(path)
        header = first[0] if first is not None else table.header()
        indices = _indices(columns, table)
        needed = _needed(indices, table)
        kept = []
        for line in _data_lines(path, header_length):
            row = parse_line(line.decode("utf-8", "replace"))
            if row is None or len(row) <= needed:
                kept.append(line + b"\n")
                continue
            picked = _pick(row, indices)
            cells = edit(picked)
            if cells is None:
                continue
            if cells == picked:
                kept.append(line + b"\n")
                continue
            for index, cell in zip(indices, cells):
                if index >= 0:
                    row += [""] * (index + 1 - len(row))
                    row[index] = cell
            kept.append(_encode_rows([row]))
        replace_data(path, _encode_rows([header]) + b"".join(kept))

    # -- the event log --------------------------------------------------

    def event_row(self, event: EventName, user: str = "", room: str = "", **details: object) -> list[str]:
        """
        One log.csv row, stamped now. ``details`` become the detail column
        (:func:`encode_detail`): the client's ``address`` and ``port``, sizes
        in bytes, reasons as lower_case words; docs/OPERATIONS.md lists them
        per event.
        """
        return [self._now(), event, spreadsheet_safe(user), spreadsheet_safe(room), encode_detail(details)]

    def _event_row(self, event: LogEvent | None) -> list[str] | None:
        if event is None:
            return None
        return self.event_row(event.event, event.user, event.room, **event.details)

    def log_event(self, event: EventName, user: str = "", room: str = "", **details: object) -> defer.Deferred[None]:
        """Queue one row (:meth:`event_row`) for log.csv; it is written within ``log_interval``. Fires at once."""
        self._events.append(self.event_row(event, user, room, **details))
        return defer.succeed(None)

    def flush_events(self) -> defer.Deferred[None]:
        """Write the queued events and marks (:meth:`set_marks`) now (in the writer thread)."""
        marks = self._flush_marks()
        return self._flush_log().addCallback(lambda _: marks)

    def _flush_log(self) -> defer.Deferred[None]:
        if not self._events:
            return defer.succeed(None)
        rows, self._events = self._events, []

        def written(_: None) -> None:
            if self._events_failing:
                self._events_failing = False
                self.log.info("log.csv is writable again; queued events written")

        def failed(failure: Any) -> None:
            self._keep_events(rows, failure.getErrorMessage())

        return self._run(append_rows, self._path(EVENTS), rows, True, EVENTS_TABLE.header()).addCallbacks(written, failed)

    def _keep_events(self, rows: list[list[str]], why: str) -> None:
        """log.csv refused ``rows``: keep them for the next try (the disk may recover), up to a bound."""
        room = MAX_QUEUED_EVENTS - len(self._events)
        if room > 0:
            self._events[:0] = rows[-room:]
        if not self._events_failing:
            self._events_failing = True
            self.log.error("could not write {count} event(s) to log.csv: {why}; will retry", count=len(rows), why=why)

    # -- per-account marks ----------------------------------------------

    def set_marks(self, user: str, marks: Mapping[str, str], durable: bool = False) -> defer.Deferred[None]:
        """
        Append a marks.csv row ``user,key,value`` per mark (the last row of
        a name key and key counts; value "" deletes it). ``durable``: written
        and fsynced, with the marks queued before it, before this fires
        (fails with StoreError); else queued and written with the events
        (:meth:`flush_events`, within ``log_interval``). Raises ValueError
        for a key outside ``[A-Za-z0-9:_]{1,64}`` or a value that is not
        clean text (:func:`chatd.text.clean_text`) of at most
        :data:`MARK_VALUE_MAX` characters.
        """
        rows = [mark_row(user, key, value) for key, value in marks.items()]
        if not durable:
            self._marks += rows
            return defer.succeed(None)
        earlier, self._marks = self._marks, []

        def failed(failure: Any) -> Any:
            self._marks[:0] = earlier
            return failure

        return self._durable(append_rows, self._path(MARKS), earlier + rows, True, MARKS_TABLE.header()
                             ).addErrback(failed)

    def _flush_marks(self) -> defer.Deferred[None]:
        if not self._marks:
            return defer.succeed(None)
        rows, self._marks = self._marks, []

        def failed(failure: Any) -> None:
            self.log.error("could not write {count} mark(s) to marks.csv: {why}; will retry", count=len(rows),
                           why=failure.getErrorMessage())
            self._marks[:0] = rows[-MAX_QUEUED_EVENTS:]

        return self._run(append_rows, self._path(MARKS), rows, True, MARKS_TABLE.header()).addErrback(failed)

    # -- room authority (issue 14) ----------------------------------------

    def set_room_values(self, values: Sequence[RoomValue], event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Append one room_values.csv row ``room,kind,key,value`` per value
        (:func:`room_value_row`; the last row of a room, kind and key counts,
        a value "" deletes it), all in one write and one fsync, then the
        ``event`` row (:meth:`_durable`); fires once all are durable. Fails
        with StoreError: then none of them is stored (a write that fails
        half-way is cut back). A crash during the write (never told to the
        caller) may leave the first rows of a call of several, its torn last
        row cut at the next start. Values of a room that is no longer stored
        (deleted meanwhile) are dropped; the event is written all the same.
        Raises ValueError for a value :func:`room_value_row` refuses (before
        anything is written).
        """
        checked = [(value.room_id, room_value_row(value)) for value in values]  # all refused or none
        rows = [row for room_id, row in checked if room_id == SERVER or room_id in self._room_ids]
        if not rows:
            return self._durable(_nothing, event=self._event_row(event))
        return self._durable(append_rows, self._path(ROOM_VALUES), rows, True, ROOM_VALUES_TABLE.header(),
                             event=self._event_row(event))

    def set_room_owner(self, name: str, owner: str, event: LogEvent | None = None) -> defer.Deferred[None]:
        """
        Rewrite rooms.csv with ``owner`` as the owner of the room ``name``
        (any case; no change if no row has that name), atomically (aside,
        fsync, rename); fires once it and the ``event`` row are durable,
        fails with StoreError. The row's other cells are kept. Raises
        ValueError if ``owner`` breaks the naming rule.
        """
        if check_name(owner, "user", USER_NAME_MAX) is not None:
            raise ValueError(f"{owner!r} is no user name")
        key = name_key(name)

        def edit(row: list[str]) -> list[str]:
            return [row[0], owner, *row[2:]] if name_key(row[0]) == key else row

        return self._durable(self._rewrite_rows, ROOMS_TABLE, edit, event=self._event_row(event))

    # -- room history (chatd.stores.csv_history) --------------------------

    def append_history(self, batches: Sequence[HistoryBatch]) -> defer.Deferred[None]:
        """
        Append each batch to its room's history files in the history thread
        (:meth:`chatd.stores.csv_history.HistoryFiles.append`: one write and
        one fsync per room, or per day file where a batch spans midnight);
        batches of ids that are no stored room (deleted meanwhile) are
        dropped. Fires once all are durable; fails with StoreError naming
        the rooms that failed (the others are stored). The batches and their
        events must not change after the call (they are read in the thread).
        """
        kept = [batch for batch in batches if batch.events and batch.room_id in self._room_ids]
        if not kept:
            return defer.succeed(None)

        def written(_: None) -> None:
            if self._history_failing:
                self._history_failing = False
                self.log.info("room history is writable again")

        def failed(failure: Any) -> None:
            if not self._history_failing:
                self._history_failing = True
                self.log.error("room history write failed: {why}", why=failure.getErrorMessage())
            raise StoreError(failure.getErrorMessage())

        return self._in_history_thread(self._history.append, kept).addCallbacks(written, failed)

    def read_history(self, room_id: str, room: str, count: int, before: int | None = None,
                     kinds: frozenset[EventKind] | None = None, since: float = 0.0) -> defer.Deferred[list[RoomEvent]]:
        """
        :meth:`chatd.store.Store.read_history`, in a history reader thread
        (beside the history thread: appends never wait for a read), reading
        segments backwards from ``before``'s place, found by binary search
        (:meth:`chatd.stores.csv_history.HistoryFiles.read`); [] for an id
        that is no stored room. Fails with StoreError.
        """
        if room_id not in self._room_ids:
            return defer.succeed([])
        return self._in_history_thread(self._history.read, room_id, room, count, before, kinds, since,
                                       run=self._history_read_run).addErrback(self._history_error, "read")

    def expire_history(self, before: float) -> defer.Deferred[int]:
        """
        Delete the day files of every room whose day ended at or before
        ``before`` (:meth:`chatd.stores.csv_history.HistoryFiles.expire`: a
        room that loses all keeps its last id and line count); fires with
        their number, fails with StoreError.
        """
        return self._in_history_thread(self._history.expire, before, time.time()).addErrback(
            self._history_error, "expire")

    def _history_error(self, failure: Any, what: str) -> Any:
        self.log.error("could not {what} room history: {why}", what=what, why=failure.getErrorMessage())
        raise StoreError(failure.getErrorMessage())


def _in_columns(columns: list[str], table: Table, values: list[str]) -> list[str]:
    """
    A row of ``values`` (``table``'s columns, in its order) laid out for a
    file whose header names ``columns``: each cell under its column's name,
    "" under a column ``table`` does not know, trailing ones left off.
    """
    cells = dict(zip(table.columns, values))
    row = [cells.get(column, "") for column in columns]
    while row and columns[len(row) - 1] not in cells:
        row.pop()
    return row


#: A marks.csv key: ASCII letters, digits, ``:`` and ``_``, 1 to 64.
MARK_KEY = re.compile(r"[A-Za-z0-9:_]{1,64}\Z")
#: The longest value a mark may have, in characters.
MARK_VALUE_MAX = 1000
#: The largest line count a read mark may hold, and how far after the load's time a ``seen`` may be (seconds).
MARK_COUNT_MAX = 2**63 - 1
SEEN_AHEAD_MAX = 86400.0
INVALID_KEY = "row(s) with an invalid key"


INVALID_VALUE = "row(s) with an invalid value"


def _mark_value_ok(value: str) -> bool:
    return len(value) <= MARK_VALUE_MAX and clean_text(value) == value


def mark_row(user: str, key: str, value: str) -> list[str]:
    """The marks.csv row of one mark (the value formula-safe); raises ValueError for a bad key or value."""
    if not MARK_KEY.match(key):
        raise ValueError(f"{key!r} is no mark key (1-64 ASCII letters, digits, ':' and '_')")
    if not _mark_value_ok(value):
        raise ValueError(f"mark {key}: the value is not clean text of at most {MARK_VALUE_MAX} characters")
    return [user, key, _formula_safe(value)]


def _server_mark_ok(key: str, value: str, latest: float) -> bool:
    """
    Whether a mark the server keeps has a value it could have written (an
    empty one deletes): a ``read:ROOM_ID`` mark ASCII digits of a line
    count in 0..2**63-1; ``seen`` an ISO-8601 UTC time no later than
    ``latest`` (seconds since the epoch). Other keys: True.
    """
    if not value:
        return True
    if key.startswith("read:"):
        return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MARK_COUNT_MAX
    if key == "seen":
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return False
        return moment.utcoffset() == timedelta(0) and moment.timestamp() <= latest
    return True


def read_marks(path: str, migrations: list[str] | None = None,
               now: float | None = None) -> tuple[dict[str, dict[str, str]], list[str]]:
    """
    marks.csv (:func:`read_rows`) as name key -> key -> value: the last row
    of a name key and key counts, an empty value deletes. Rows skipped (and
    moved to ``marks.csv.rejected``): a user name that breaks the naming
    rule, a key that is not a mark key, a value :meth:`CsvStore.set_marks`
    would refuse (not clean text, too long), a read mark that is no line
    count (ASCII digits, 0..2**63-1), a ``seen`` that is no ISO-8601 UTC
    time or is more than a day after ``now`` (seconds since the epoch;
    default: the time of the call). A file with more than twice as many
    rows as values (and 100 more) is rewritten with just the values
    (aside, fsync, rename). Returns the marks and notes.
    """
    latest = (time.time() if now is None else now) + SEEN_AHEAD_MAX

    def check(row: list[str]) -> str | None:
        if check_name(row[0], "user", USER_NAME_MAX) is not None:
            return INVALID_NAME
        if not MARK_KEY.match(row[1]):
            return INVALID_KEY
        value = _unsafe(row[2])
        return None if _mark_value_ok(value) and _server_mark_ok(row[1], value, latest) else INVALID_VALUE

    rows, notes = read_rows(path, MARKS_TABLE, migrations, check)
    marks: dict[str, dict[str, str]] = {}
    names: dict[str, str] = {}
    for _, (user, key, value) in rows:
        values = marks.setdefault(name_key(user), {})
        names[name_key(user)] = user
        if value:
            values[key] = _unsafe(value)
        else:
            values.pop(key, None)
    marks = {user: values for user, values in marks.items() if values}
    live = sum(len(values) for values in marks.values())
    if len(rows) > 2 * live + 100:
        replace_rows(path, [MARKS_TABLE.header()] + [mark_row(names[user], key, value)
                                                     for user, values in marks.items() for key, value in values.items()])
    return marks, notes


def _nothing() -> None:
    """A data write with nothing to write (:meth:`CsvStore.set_room_values` of values all dropped)."""


#: The kinds of room values (:data:`chatd.store.RoomValueKind`).
ROOM_VALUE_KINDS: frozenset[str] = frozenset(get_args(RoomValueKind))
#: The kinds whose key is an account's name key: deleted with the account (:meth:`CsvStore.delete_user`).
ACCOUNT_KINDS = frozenset({"op", "voice", "ban", "mute", "invite"})
#: The longest key and value of a room value, in characters (a value fits well in one CSV cell: Python's
#: csv module reads cells of up to 128 KiB).
ROOM_KEY_MAX = 256
ROOM_VALUE_MAX = 65536
INVALID_ROOM = "row(s) with an invalid room id"
UNKNOWN_KIND = "row(s) of an unknown kind"
UNCLEAN_TEXT = "row(s) whose key or value is not clean text"


def _room_value_problem(room: str, kind: str, key: str, value: str) -> str | None:
    """Why a room value cannot be stored (one of the reasons :func:`read_room_values` reports), or None."""
    if room != SERVER and not ROOM_ID.match(room):
        return INVALID_ROOM
    if kind not in ROOM_VALUE_KINDS:
        return UNKNOWN_KIND
    if len(key) > ROOM_KEY_MAX or len(value) > ROOM_VALUE_MAX or clean_text(key) != key or clean_text(value) != value:
        return UNCLEAN_TEXT
    return None


def room_value_row(value: RoomValue) -> list[str]:
    """
    The room_values.csv row of ``value``: ``room,kind,key,value``, the key
    and value formula-safe. Raises ValueError for a room id that is neither
    :data:`chatd.store.SERVER` ("") nor 1-32 ASCII letters and digits, a
    kind that is no :data:`chatd.store.RoomValueKind`, a key or value that is
    not clean text (:func:`chatd.text.clean_text`: no line break, no escape)
    or longer than :data:`ROOM_KEY_MAX` or :data:`ROOM_VALUE_MAX` characters.
    """
    problem = _room_value_problem(value.room_id, value.kind, value.key, value.value)
    if problem is not None:
        raise ValueError(f"room value {value.room_id!r} {value.kind!r} {value.key[:40]!r}: cannot be stored: "
                         f"{problem.replace('row(s) ', '', 1)}")
    return [value.room_id, value.kind, _formula_safe(value.key), _formula_safe(value.value)]


def read_room_values(path: str, room_ids: Container[str], migrations: list[str] | None = None
                     ) -> tuple[dict[str, dict[tuple[str, str], str]], list[str]]:
    """
    room_values.csv (:func:`read_rows`) as room id -> (kind, key) -> value:
    the last row of a room, kind and key counts, an empty value deletes.
    Rows skipped (and moved to ``room_values.csv.rejected``): a room id
    that is neither "" (server-wide) nor 1-32 ASCII letters and digits, a
    kind that is none of :data:`ROOM_VALUE_KINDS`, a key or value that is
    not clean text or too long (:func:`_room_value_problem`). Rows of a room
    id not in ``room_ids`` (a room deleted just before chatd stopped) are
    dropped, with a note. The file is rewritten with just the values (aside,
    fsync, rename) when rows were dropped, or when it has more than twice
    as many rows as values (and 100 more). Returns the values and notes.
    """

    def check(row: list[str]) -> str | None:
        return _room_value_problem(row[0], row[1], _unsafe(row[2]), _unsafe(row[3]))

    rows, notes = read_rows(path, ROOM_VALUES_TABLE, migrations, check)
    values: dict[str, dict[tuple[str, str], str]] = {}
    gone: set[str] = set()
    dropped = 0
    for _, (room, kind, key, value) in rows:
        if room != SERVER and room not in room_ids:
            gone.add(room)
            dropped += 1
            continue
        room_values = values.setdefault(room, {})
        if value:
            room_values[(kind, _unsafe(key))] = _unsafe(value)
        else:
            room_values.pop((kind, _unsafe(key)), None)
    values = {room: room_values for room, room_values in values.items() if room_values}
    live = sum(len(room_values) for room_values in values.values())
    if dropped:
        shown = ", ".join(sorted(gone)[:10]) + (", ..." if len(gone) > 10 else "")
        notes.append(f"{ROOM_VALUES}: dropped {dropped} row(s) of {len(gone)} room(s) no longer stored (deleted just "
                     f"before chatd stopped): {shown}")
    if dropped or len(rows) > 2 * live + 100:
        replace_rows(path, [ROOM_VALUES_TABLE.header()] + [
            room_value_row(RoomValue(room, cast(RoomValueKind, kind), key, value))
            for room, room_values in values.items() for (kind, key), value in room_values.items()])
    return values, notes
