"""
Room history in CSV files, for :class:`chatd.persistence.CsvStore`.

Each room's history is a directory ``DATA_DIR/history/ROOM_ID`` (the room's
:attr:`~chatd.store.RoomRecord.id`, never its name) of **segments**, one per
UTC day: ``YYYY-MM-DD.csv``, append-only, each starting with the header row
``#chatd-history,2.2,id,time,kind,sender,text,lines,target,until``
(:data:`HISTORY_TABLE`). A row is one :class:`~chatd.core.events.RoomEvent`:
its id, its time (ISO-8601 UTC to the microsecond, like offline.csv), its
kind (:class:`~chatd.core.events.EventKind` value), sender and text
(formula-safe: one more leading ``'`` if it starts like a formula or with
``'``, taken off when read), ``lines``, the room's count of lines
(:data:`~chatd.store.LINE_KINDS` events) after it, and for a moderation event
its ``target`` (formula-safe) and ``until`` (ISO-8601 UTC like ``time``;
empty: 0.0). Format 2.2 added those two; a row without a target and an until
leaves both cells off (as every row of a 2.1 segment does), so a chat line is
the same six cells in either format, and the reader takes the cells by
position: ids, times and line counts of a segment written before read the
same. A 2.1 segment appended to by this version (the day of an upgrade) keeps
its header; rows with the two cells are read all the same.

An event goes to the segment of its day, or to the room's newest segment if
that is later (a clock set back): ids only grow along the segments, so the
last row of the newest segment is the room's last event, and every event of
segment ``D`` is older than ``D``'s end.

:class:`HistoryFiles` does the file work; :meth:`~HistoryFiles.append`,
:meth:`~HistoryFiles.expire` and :meth:`~HistoryFiles.delete` run in the
store's history thread (one thread: no locks), :meth:`~HistoryFiles.read`
in its reader threads (several, beside it: a read shares no state with the
writes, and ignores a last line without its newline, an append under way).
docs/OPERATIONS.md, "Room history files".
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from chatd.core.events import EventKind, RoomEvent
from chatd.stores.csv_files import (
    BOM, FORMULA_STARTS, VERSION, FormatError, Table, append_data, cell_text, encode_rows, fsync_dir, parse_line,
    parse_version, repair_tail,
)
from chatd.store import LINE_KINDS, HistoryBatch, HistoryTail, StoreError
from chatd.text import clean_text, without_surrogates

#: The directory of the rooms' histories, in the data directory.
HISTORY = "history"
#: A segment's file name: its UTC day.
SEGMENT = re.compile(r"\d{4}-\d{2}-\d{2}\.csv\Z")
#: A room id, as a history directory is named.
ROOM_DIR = re.compile(r"[A-Za-z0-9]{1,32}\Z")
#: 2.2 added ``target`` and ``until`` (moderation events, issue 14), both optional.
HISTORY_TABLE = Table("history", "YYYY-MM-DD.csv", ("id", "time", "kind", "sender", "text", "lines", "target", "until"),
                      frozenset({"target", "until"}), (VERSION[0], 2))
_HEADER = encode_rows([HISTORY_TABLE.header()])
#: The ``kind`` of a row that only keeps a room's last id and line count where retention deleted its every
#: segment (:meth:`HistoryFiles.expire`): start-up reads it as the tail, reading history skips it (no EventKind).
TAIL = "tail"
#: The largest id and line count a row may have (what ``/history before`` accepts): a row beyond is malformed.
ID_MAX = 2**63 - 1
#: Bytes read from a segment's end first when reading backwards; each further read doubles, up to READ_BLOCK_MAX.
READ_BLOCK = 8192
READ_BLOCK_MAX = 1 << 20
#: Bytes read per probe of the binary search for a page's place in a segment (``before``); a probe reads more,
#: doubling, while no whole row is in what it read, up to SEEK_SCAN.
SEEK_BLOCK = 4096
SEEK_SCAN = 1 << 16
#: The most bytes of rows one read looks at, over all the segments it reads: a read of one kind over a longer
#: run of others (a day of joins) returns what it found by then, so no read holds a reader thread for long.
SCAN_MAX = 16 << 20
#: Bytes read from a segment's end at start-up for its last row (more only if that row is longer or damaged).
TAIL_BLOCK = 1024
#: Threads reading the rooms' tails at start-up (4: the fastest cold start on 2 cores and a virtio disk, 2.1 s against
#: 3.5 s for one, 2.4 s for 8; warm, the threads contend for the GIL: 1.0 s against 0.8 s; docs/PERFORMANCE.md).
LOAD_THREADS = 4


def _cell(text: str) -> str:
    """
    A sender or text as its CSV cell: formula-safe (one more leading ``'``
    if it starts like a formula or with ``'``; :func:`cell_text` takes it
    off), quoted as ``csv.writer`` quotes (RFC 4180: a cell holding a comma,
    a quote or a line end is quoted, its quotes doubled). Written by hand
    because it is per event: half the cost of ``csv.writer`` for a row.
    """
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _is_number(cell: str) -> bool:
    return cell.isascii() and cell.isdigit()


class _Stamp:
    """ISO-8601 UTC times to the microsecond (``2026-11-29T12:00:00.250000Z``), the date part kept per second."""

    def __init__(self) -> None:
        self.second = -1
        #: ``YYYY-MM-DDTHH:MM:SS`` of :attr:`second`.
        self.prefix = ""

    def __call__(self, at: float) -> str:
        second, micro = divmod(int(at * 1_000_000 + 0.5), 1_000_000)
        if second != self.second:
            self.second, self.prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{micro:06d}Z"


def _day(at: float) -> str:
    """The UTC day of ``at`` (seconds since the epoch) as ``YYYY-MM-DD``, a segment's name without ``.csv``."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(at // 1)))


def _time(cell: str) -> float | None:
    """A ``time`` cell as seconds since the epoch; None if it is no ISO-8601 time."""
    try:
        moment = datetime.fromisoformat(cell)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _row(line: bytes) -> list[str] | None:
    """
    One segment line as a row of at least the six columns, with an id in
    1..:data:`ID_MAX` and a line count in 0..:data:`ID_MAX` (ASCII digits);
    None otherwise (a malformed row).
    """
    row = parse_line(line.rstrip(b"\r").decode("utf-8", "replace"))
    if row is None or len(row) < 6 or not _in_range(row[0], 1) or not _in_range(row[5], 0):
        return None
    return row


def _in_range(cell: str, low: int) -> bool:
    """Whether ``cell`` is ASCII digits of a number in ``low``..:data:`ID_MAX` (no int() of thousands of digits)."""
    return _is_number(cell) and len(cell) <= 19 and low <= int(cell) <= ID_MAX


def _lines_backwards(fd: int, end: int, block: int, last: bytes = b"") -> Iterator[bytes]:
    """
    The non-empty lines of the open file ``fd`` before offset ``end``, last
    first, read in blocks from the end (``block`` bytes, doubling up to
    :data:`READ_BLOCK_MAX`): only as much of the file as is consumed. A line
    cut by a block's start is completed by the next read. What follows the
    last newline before ``end`` is no line (a row being appended, a torn
    one): it is left out. ``last``: the bytes just before ``end``, already
    read (the first block).
    """
    position, carry, whole = end, b"", False
    while position > 0:
        if last:
            data, last = last, b""
        else:
            data = os.pread(fd, min(block, position), position - min(block, position))
        position -= len(data)
        lines = (data + carry).split(b"\n")
        carry = lines.pop(0) if position > 0 else b""
        if not whole and (lines or position == 0):
            whole = True
            if lines:
                lines.pop()  # after the last newline
            else:
                carry = b""  # no newline at all
        for line in reversed(lines):
            if line:
                yield line
        block = min(block * 2, READ_BLOCK_MAX)


def _probe(fd: int, mid: int, hi: int) -> tuple[int, tuple[int, int] | None] | None:
    """
    One step of :func:`_page_end`: the first line start at or after ``mid``
    (> 0) and before ``hi`` with the (start, id) of the first valid row that
    starts there or later, before ``hi`` (None: none does); None if no line
    starts in ``[mid, hi)`` within :data:`SEEK_SCAN` bytes. Reads
    :data:`SEEK_BLOCK` bytes, more only while no whole row is in them.
    """
    size = SEEK_BLOCK
    while True:
        count = min(size, hi - (mid - 1))
        data = os.pread(fd, count, mid - 1)
        cut = data.find(b"\n")
        reached = mid - 1 + len(data) >= hi or len(data) < count
        if cut >= 0:
            first = start = mid + cut
            lines = data[cut + 1:].split(b"\n")
            for line in lines[:-1]:  # the last: cut by the read's end (or the part of a line at hi)
                row = _row(line)
                if row is not None:
                    return first, (start, int(row[0]))
                start += len(line) + 1
            if reached:
                return first, None
        elif reached:
            return None
        if size >= SEEK_SCAN:
            return None
        size *= 2


def _page_end(fd: int, size: int, before: int) -> int:
    """
    The offset of a line start in the segment (``size`` bytes) such that
    every row with an id below ``before`` starts before it, and at most
    about :data:`SEEK_BLOCK` bytes of rows with higher ids do: a binary search on the file offset (ids grow along
    a segment), each step one :func:`_probe`, so O(log size) reads of
    :data:`SEEK_BLOCK` bytes. Rows that do not parse are stepped over; the
    search stops after 64 steps (where the rows are that long).
    """
    lo, hi = 0, size
    for _ in range(64):
        if hi - lo <= SEEK_BLOCK:
            break
        mid = (lo + hi) // 2
        probe = _probe(fd, mid, hi)
        if probe is None:
            lo = mid
        elif probe[1] is None:
            hi = probe[0]
        elif probe[1][1] >= before:
            hi = probe[1][0]
        else:
            lo = probe[1][0]
    return hi


def _check_header(fd: int, name: str, start: bytes | None = None) -> None:
    """
    Refuse (:class:`FormatError`) a segment whose header is another kind's
    or of a newer major version; ``start``: the file's first bytes if
    already read (else its first 256 are).
    """
    first = (os.pread(fd, 256, 0) if start is None else start).split(b"\n", 1)[0]
    if first.startswith(BOM):
        first = first[len(BOM):]
    if not first.startswith(b"#chatd-"):
        return  # no header: rows only (read as such)
    row = parse_line(first.decode("utf-8", "replace").rstrip("\r")) or [""]
    version = parse_version(row[1]) if len(row) > 1 else None
    if row[0] != "#chatd-history" or version is None:
        raise FormatError(f"{name}: not a chatd history file (its header is {first[:80].decode('utf-8', 'replace')!r})")
    if version[0] != VERSION[0]:
        raise FormatError(f"{name} is format {row[1]}, which this chatd does not read ({VERSION[0]}.x); "
                          "run a newer chatd, or move the room's history directory away")


class HistoryFiles:
    """
    The history directory of one data directory. Keeps, per room id, its
    newest segment's day and the id of its last stored event (filled by
    :meth:`load`), so appends need no directory listing.
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.root = os.path.join(data_dir, HISTORY)
        self._newest: dict[str, str] = {}
        self._last_id: dict[str, int] = {}

    def _dir(self, room_id: str) -> str:
        return os.path.join(self.root, room_id)

    def _segments(self, room_id: str) -> list[str]:
        """The room's segment file names, oldest first ([] if it has no directory)."""
        try:
            names = os.listdir(self._dir(room_id))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(name for name in names if SEGMENT.match(name))

    # -- start-up -------------------------------------------------------

    def load(self, room_ids: set[str]) -> tuple[dict[str, HistoryTail], list[str]]:
        """
        Where each stored room's history ends, from the last row of its
        newest non-empty segment (read from the end: a few KiB per room,
        :data:`LOAD_THREADS` rooms at a time);
        a torn last line of the newest segment is cut (:func:`repair_tail`),
        a malformed last row skipped for the one before. The directories of
        ids not in ``room_ids`` (a room deleted just before a crash) are
        removed. Returns the tails by room id and notes. Raises OSError and
        :class:`FormatError` (a newest segment of another major version).
        """
        if not os.path.isdir(self.root):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            fsync_dir(self.data_dir)
        tails: dict[str, HistoryTail] = {}
        notes: list[str] = []
        orphans: list[str] = []
        rooms: list[str] = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or not ROOM_DIR.match(entry.name):
                    continue
                (rooms if entry.name in room_ids else orphans).append(entry.name)
        rooms.sort()
        # Concurrently: the reads are system calls (the GIL let go), and a disk serves many at once faster.
        with ThreadPoolExecutor(LOAD_THREADS, thread_name_prefix="chatd-history-load") as pool:
            for room_id, (tail, room_notes) in zip(rooms, pool.map(self._load_room, rooms)):
                notes += room_notes
                if tail is not None:
                    tails[room_id] = tail
        for room_id in sorted(orphans):
            try:
                shutil.rmtree(self._dir(room_id))
            except OSError as error:
                notes.append(f"{HISTORY}/{room_id}: could not remove the history of a room no longer stored: "
                             f"{error.strerror or error}; remove it by hand")
        if orphans:
            fsync_dir(self.root)
            shown = ", ".join(sorted(orphans)[:10]) + (", ..." if len(orphans) > 10 else "")
            notes.append(f"{HISTORY}: removed the history of {len(orphans)} room(s) no longer stored "
                         f"(deleted just before chatd stopped): {shown}")
        return tails, notes

    def _load_room(self, room_id: str) -> tuple[HistoryTail | None, list[str]]:
        """One room's tail and notes (in a load thread: a room's own keys of the dicts only)."""
        notes: list[str] = []
        segments = self._segments(room_id)
        if not segments:
            return None, notes
        self._newest[room_id] = segments[-1][:10]
        for index, name in enumerate(reversed(segments)):
            path = os.path.join(self._dir(room_id), name)
            tail = self._tail(path, f"{HISTORY}/{room_id}/{name}", notes, newest=index == 0)
            if tail is not None:
                self._last_id[room_id] = tail.last_id
                return tail, notes
        return None, notes

    def _tail(self, path: str, name: str, notes: list[str], newest: bool) -> HistoryTail | None:
        """The last valid row of a segment as a tail (None: it has none); cuts the newest one's torn line."""
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            last = os.pread(fd, min(size, TAIL_BLOCK), max(size - TAIL_BLOCK, 0)) if size else b""
            if newest:
                _check_header(fd, name, last if size <= TAIL_BLOCK else None)
                if last and not last.endswith(b"\n"):
                    notes += [f"{HISTORY}/{os.path.basename(os.path.dirname(path))}/{note}" for note in repair_tail(path)]
                    size, last = os.fstat(fd).st_size, b""
            skipped = 0
            for line in _lines_backwards(fd, size, TAIL_BLOCK, last):
                row = _row(line)
                if row is not None:
                    if skipped:
                        notes.append(f"{name}: skipped {skipped} malformed last row(s)")
                    return HistoryTail(int(row[0]), int(row[5]))
                if not line.startswith((b"#chatd-", BOM)):
                    skipped += 1
            return None
        finally:
            os.close(fd)

    # -- the history thread ---------------------------------------------

    def append(self, batches: Sequence[HistoryBatch]) -> None:
        """
        Append each batch to its room's segments: per segment touched, one
        write and one fsync (:func:`chatd.stores.csv_files.append_data`, which
        cuts back a failed write; a new file or directory has its directory
        fsynced). Events with an id the room already stored are skipped (a
        batch retried after a partial failure). One room's failure does not
        stop the others: raises :class:`StoreError` naming every room that
        failed, after trying all.
        """
        stamp = _Stamp()
        failed: list[str] = []
        for batch in batches:
            try:
                self._append_room(batch, stamp)
            except OSError as error:
                failed.append(f"room {batch.room_id}: {error.strerror or error}")
        if failed:
            raise StoreError(f"could not append to the history of {len(failed)} room(s): " + "; ".join(failed))

    def _append_room(self, batch: HistoryBatch, stamp: _Stamp) -> None:
        room_id = batch.room_id
        last = self._last_id.get(room_id, 0)
        lines = batch.lines_before
        day = self._newest.get(room_id, "")
        rows: list[str] = []
        for event in batch.events:
            if event.kind in LINE_KINDS:
                lines += 1
            if event.id <= last:
                continue
            at = stamp(event.at)
            if at[:10] > day:  # a later day: a new segment (an earlier one, a clock set back: the newest)
                if rows:
                    self._write(room_id, day, rows, last)
                    rows = []
                day = at[:10]
            if event.target or event.until:
                until = _Stamp()(event.until) if event.until else ""
                rows.append(f"{event.id},{at},{event.kind.value},{_cell(event.sender)},{_cell(event.text)},{lines},"
                            f"{_cell(event.target)},{until}\n")
            else:
                rows.append(f"{event.id},{at},{event.kind.value},{_cell(event.sender)},{_cell(event.text)},{lines}\n")
            last = event.id
        if rows:
            self._write(room_id, day, rows, last)

    def _write(self, room_id: str, day: str, rows: list[str], last_id: int) -> None:
        """Append ``rows`` (encoded lines) to the room's segment ``day``; ``last_id``: the id of the last."""
        path = os.path.join(self._dir(room_id), day + ".csv")
        text = "".join(rows)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which no front-end lets through (chatd.text): U+FFFD
            data = without_surrogates(text).encode("utf-8")
        try:
            append_data(path, data, True, _HEADER)
        except FileNotFoundError:  # the room's first event (or its directory was removed by hand)
            self._make_dir(self._dir(room_id))
            append_data(path, data, True, _HEADER)
        self._newest[room_id] = day
        self._last_id[room_id] = last_id

    def _make_dir(self, path: str) -> None:
        """Create ``path`` (0700) and its missing parents, each parent fsynced after."""
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self._make_dir(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
        fsync_dir(parent)

    def read(self, room_id: str, room: str, count: int, before: int | None, kinds: frozenset[EventKind] | None,
             since: float) -> list[RoomEvent]:
        """
        :meth:`chatd.store.Store.read_history`: the newest matching events,
        oldest first. With ``before``, the segments whose first id is not
        below it are passed over by a binary search on their first ids, and
        in the newest of the rest the place of ``before`` is found by a
        binary search on the file offset (:func:`_page_end`), so a page
        costs the same deep in a long segment as at its end. From there the
        rows are read backwards, then the older segments', stopping at
        ``count`` matches, at the first event older than ``since`` (a
        segment whose day ended before ``since`` is not read), or after
        :data:`SCAN_MAX` bytes of rows (what was found by then). Rows that
        do not parse (an ``until`` that is no ISO time too) are skipped.
        Runs in a reader thread, beside appends: a last line without its
        newline is left out. Raises OSError.
        """
        found: list[RoomEvent] = []
        if count <= 0:
            return found
        since_day = _day(since) if since > 0 else ""
        segments = self._segments(room_id)
        if before is not None:
            segments = segments[:bisect.bisect_left(segments, before, key=lambda name: self._first_id(room_id, name))]
        budget = SCAN_MAX
        for name in reversed(segments):
            if name[:10] < since_day or budget <= 0:
                break
            try:
                fd = os.open(os.path.join(self._dir(room_id), name), os.O_RDONLY)
            except FileNotFoundError:  # expired meanwhile
                continue
            try:
                end = os.fstat(fd).st_size
                if before is not None:
                    end = _page_end(fd, end, before)
                done, budget = self._read_segment(fd, end, room, count, before, kinds, since, found, budget)
                if done:
                    break
            finally:
                os.close(fd)
        found.reverse()
        return found

    def _first_id(self, room_id: str, name: str) -> int:
        """
        The id of the segment's first row, from its first KiB (0 if none is
        there, or the segment is gone: it is read, and a later segment's
        first id still orders the search, ids growing along the segments).
        """
        try:
            fd = os.open(os.path.join(self._dir(room_id), name), os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            for line in os.pread(fd, 1024, 0).split(b"\n")[:-1]:
                row = _row(line)
                if row is not None:
                    return int(row[0])
            return 0
        finally:
            os.close(fd)

    @staticmethod
    def _read_segment(fd: int, end: int, room: str, count: int, before: int | None,
                      kinds: frozenset[EventKind] | None, since: float, found: list[RoomEvent],
                      budget: int) -> tuple[bool, int]:
        """
        Add the matching events of the segment's rows before offset ``end``
        to ``found``, newest first, looking at no more than ``budget`` bytes
        of rows; returns (True once the read is done, the budget left).
        """
        for line in _lines_backwards(fd, end, READ_BLOCK):
            budget -= len(line) + 1
            if budget < 0:
                return True, budget
            row = _row(line)
            if row is None:
                continue
            event_id = int(row[0])
            if before is not None and event_id >= before:
                continue
            at = _time(row[1])
            if at is None:
                continue
            if at < since:
                return True, budget
            try:
                kind = EventKind(row[2])
            except ValueError:
                continue
            if kinds is not None and kind not in kinds:
                continue
            until = _time(row[7]) if len(row) > 7 and row[7] else 0.0
            if until is None:
                continue
            # Cleaned again (a no-op for what chatd wrote): an escape sequence edited into a file never reaches a terminal.
            found.append(RoomEvent(room, event_id, at, clean_text(cell_text(row[3])), kind, clean_text(cell_text(row[4])),
                                   clean_text(cell_text(row[6])) if len(row) > 6 else "", until))
            if len(found) >= count:
                return True, budget
        return False, budget

    def expire(self, before: float, now: float) -> int:
        """
        Delete every segment whose day ended at or before ``before``
        (seconds since the epoch): ``D.csv`` once ``D+1 00:00 UTC <=
        before``; each room directory touched is fsynced. A room that would
        lose every segment first gets a :data:`TAIL` row (its last id and
        line count, stamped ``now``) in the segment of ``now``'s day (or of
        ``before``'s, if later), so its ids and line count go on after a
        restart. Returns how many segments went.
        """
        cutoff = _day(before)
        expired = 0
        try:
            rooms = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        for room_id in rooms:
            segments = self._segments(room_id)
            old = [name for name in segments if name[:10] < cutoff]
            if not old:
                continue
            if len(old) == len(segments):
                self._keep_tail(room_id, old, now, max(_day(now), cutoff))
            for name in old:
                os.unlink(os.path.join(self._dir(room_id), name))
            fsync_dir(self._dir(room_id))
            expired += len(old)
        return expired

    def _keep_tail(self, room_id: str, segments: list[str], now: float, day: str) -> None:
        """Write the room's tail (from the last of ``segments`` with a valid row) as a TAIL row in segment ``day``."""
        for name in reversed(segments):
            tail = self._tail(os.path.join(self._dir(room_id), name), name, [], newest=False)
            if tail is not None:
                self._write(room_id, day, [f"{tail.last_id},{_Stamp()(now)},{TAIL},,,{tail.lines}\n"], tail.last_id)
                return

    def delete(self, room_id: str) -> None:
        """Remove the room's history directory (``shutil.rmtree``) and fsync the history directory."""
        self._newest.pop(room_id, None)
        self._last_id.pop(room_id, None)
        try:
            shutil.rmtree(self._dir(room_id))
        except FileNotFoundError:
            return
        fsync_dir(self.root)
