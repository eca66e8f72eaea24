"""
Copy a CSV data directory into an empty PostgreSQL database: ``chatd-admin
--data-dir DIR migrate-to-postgres DSN`` (chatd.admin_tool; docs/OPERATIONS.md,
"PostgreSQL store").

The directory is read through the CSV store itself (``CsvStore.load_now``:
the repairs and format migrations a server start would make, noted), its
log.csv row by row (:func:`chatd.persistence.event_rows`) and each room's
history page by page (``CsvStore.read_history``), so nothing is held in
memory whole but what the load holds. Everything is written in one
transaction with COPY (PostgreSQL manual, "COPY"), under the schema's
advisory lock: the database gets all of it or nothing, and a chatd starting
on it meanwhile waits. A database that holds any chatd data already is
refused (:class:`NotEmpty`), so a second run never doubles anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import attrs
import psycopg

from chatd.persistence import CsvStore, decode_detail, event_rows
from chatd.store import Loaded, StoreError
from chatd.stores.jobs import fired
from chatd.stores.postgres import Direct, ensure_schema, masked_dsn
from chatd.text import name_key

#: Events of history read from the files per page.
PAGE = 5000
#: The tables the copy fills; each must be empty before (schema_version aside).
TABLES = ("users", "rooms", "log", "offline", "marks", "room_values", "history", "history_tails")


class NotEmpty(StoreError):
    """The database holds chatd data already; ``str(error)`` says which."""


@attrs.define
class Copied:
    """
    How much was copied where: rows per table, the database (its DSN without
    the password), and notes (the load's repairs and migrations, the schema's
    creation, log rows skipped).
    """

    where: str
    counts: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(TABLES, 0))
    notes: list[str] = attrs.field(factory=list)


def _history(store: CsvStore, room_id: str) -> Iterator[tuple[Any, ...]]:
    """The room's stored events as ``history`` rows, newest page first (ids never repeat)."""
    before = None
    while True:
        page = fired(store.read_history(room_id, "", PAGE, before))
        if not page:
            return
        for event in page:
            yield room_id, event.id, event.at, event.kind.value, event.sender, event.text, event.target, event.until
        before = page[0].id


def _log(data_dir: str, copied: Copied) -> Iterator[tuple[Any, ...]]:
    """log.csv's rows as ``log`` rows; a row that is no whole row or has no ISO time is skipped, and noted."""
    skipped = 0
    for row in event_rows(data_dir):
        try:
            if row is None:
                raise ValueError
            at = datetime.fromisoformat(row[0])
            if at.tzinfo is None:
                raise ValueError
        except ValueError:
            skipped += 1
            continue
        yield at, row[1], row[2], row[3], json.dumps(decode_detail(row[4]))
    if skipped:
        copied.notes.append(f"log.csv: skipped {skipped} row(s) that are no whole row or have no ISO-8601 time")


def _copy(cursor: psycopg.Cursor[Any], store: CsvStore, loaded: Loaded, copied: Copied) -> None:
    copied.notes += ensure_schema(cursor)
    held = []
    for table in TABLES:
        cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
        row = cursor.fetchone()
        if row is not None and row[0]:
            held.append(table)
    if held:
        raise NotEmpty(f"the database holds chatd data already (in {', '.join(held)}): migrate into an empty one")
    accounts = []
    for key in loaded.users:
        record = loaded.users.get(key)
        if record is not None:
            accounts.append((key, record.name, record.password_hash, record.created))
    sources: dict[str, tuple[str, Any]] = {
        "users": ("name_key, name, password_hash, created", accounts),
        "rooms": ("name_key, name, owner, created, id",
                  ((name_key(room.name), room.name, room.owner, room.created, room.id) for room in loaded.rooms)),
        "offline": ("at, sender, recipient, recipient_key, text",
                    ((m.at, m.sender, m.recipient, name_key(m.recipient), m.text) for m in loaded.private)),
        "marks": ("user_key, key, value",
                  ((user, key, value) for user, marks in loaded.marks.items() for key, value in marks.items())),
        "room_values": ("room_id, kind, key, value",
                        ((room_id, kind, key, value) for room_id, values in loaded.room_values.items()
                         for (kind, key), value in values.items())),
        "history_tails": ("room_id, last_id, lines",
                          ((room_id, tail.last_id, tail.lines) for room_id, tail in loaded.history.items())),
        "history": ("room_id, id, at, kind, sender, text, target, until",
                    (row for room_id in sorted(loaded.history) for row in _history(store, room_id))),
        "log": ("at, event, user_name, room, details", _log(store.data_dir, copied)),
    }
    for table, (columns, rows) in sources.items():
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                copied.counts[table] += 1


def copy_data_dir(store: CsvStore, loaded: Loaded, dsn: str) -> Copied:
    """
    Copy what ``store`` (a CsvStore on a synchronous runner) ``loaded`` and
    its files hold into the database ``dsn``, in one transaction; returns
    what was copied. Raises :class:`NotEmpty`, StoreError (PostgreSQL cannot
    be reached or refused the data: nothing was copied), OSError.
    """
    copied = Copied(masked_dsn(dsn), notes=list(loaded.repairs) + list(loaded.migrations))
    direct = Direct(dsn)
    try:
        direct.call(_copy, store, loaded, copied)
    finally:
        direct.close()
    return copied
