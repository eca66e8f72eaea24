"""
The file primitives of chatd's CSV data files, shared by the CSV store
(``chatd.persistence``) and its room history (``chatd.stores.csv_history``):
the format header (:class:`Table`, :data:`VERSION`), one physical line = one
row (:func:`parse_line`), appends that fsync and cut back a failed write
(:func:`append_data`), atomic replacement (:func:`replace_data`), torn-tail
repair (:func:`repair_tail`), and formula-safe cells. No record types and no
store: only files.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections.abc import Iterable
from typing import BinaryIO

import attrs


#: The format version this chatd writes: ``(major, minor)``. A file of a newer
#: minor version (columns added at the end) is read; a newer major is refused.
VERSION = (2, 1)
#: The version of the files written before the header existed (no header row).
HEADERLESS = "1"


@attrs.frozen(slots=True)
class Table:
    """
    One data file's format: its kind (in the header), its file name, the
    columns this version writes, which of them a file or row of an earlier
    minor version may lack (``optional``: read as ""), and the version its
    header says (:data:`VERSION`, or a later minor one where the kind of
    file got columns since).
    """

    kind: str
    file: str
    columns: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    version: tuple[int, int] = VERSION

    def header(self) -> list[str]:
        """The header row: ``#chatd-KIND,MAJOR.MINOR,COLUMN,...`` (a CSV row a spreadsheet shows as titles)."""
        return [f"#chatd-{self.kind}", "%d.%d" % self.version, *self.columns]


class FormatError(Exception):
    """A data file this chatd cannot read (a newer major version, a header missing a column); start-up stops."""


def parse_line(line: str) -> list[str] | None:
    """
    One physical line of a data file as one CSV row (RFC 4180, strict), or
    None if it is not one whole row: an unclosed or stray quote, a field
    over ``csv.field_size_limit()``, a lone CR inside. chatd never writes a
    row over several lines, so a line is read alone and can never swallow
    the lines after it.
    """
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def encode_rows(rows: Iterable[Iterable[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


#: fsync on a directory is not supported here (some filesystems, FUSE): skip it.
_DIR_SYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def fsync_dir(path: str) -> None:
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


def append_rows(path: str, rows: list[list[str]], sync: bool = True, header: list[str] | None = None) -> None:
    """
    Append CSV rows to ``path`` and (by default) fsync them; an empty (or
    new) file gets the ``header`` row first, in the same write.

    If the file was empty (just created), the directory is fsynced too, so
    the file's name survives a power loss as well as its first rows.

    If the write fails half-way (disk full, I/O error) the file is cut back
    to its previous length, so a failed append never leaves a torn line
    in front of the next one.
    """
    append_data(path, encode_rows(rows), sync, encode_rows([header]) if header is not None else b"")


def append_data(path: str, data: bytes, sync: bool = True, header: bytes = b"") -> None:
    """:func:`append_rows` for lines already encoded (``data`` and ``header`` end with a newline)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        start = os.fstat(fd).st_size
        if start == 0:
            data = header + data
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if sync:
                os.fsync(fd)
                if start == 0:
                    fsync_dir(os.path.dirname(path) or ".")
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
    replace_data(path, encode_rows(rows))


def replace_data(path: str, data: bytes) -> None:
    """:func:`replace_rows` for lines already encoded."""
    aside = path + ".new"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
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
    fsync_dir(os.path.dirname(path) or ".")


def open_sized(path: str) -> tuple[BinaryIO, int] | None:
    """``path`` opened to read and write, and its size in bytes; None if there is no such file."""
    try:
        handle = open(path, "r+b")
    except FileNotFoundError:
        return None
    return handle, handle.seek(0, os.SEEK_END)


def repair_tail(path: str) -> list[str]:
    """
    Cut a torn last line (no final newline, as a crash mid-write leaves it)
    off ``path``, so later appends start on a clean line; the bytes cut are
    first appended (with a newline) to ``PATH.torn`` (mode 0600) and synced,
    so nothing is lost for good: a line that was whole after all (a file
    edited by hand without its last newline) can be put back. Returns notes.
    """
    opened = open_sized(path)
    if opened is None:
        return []
    handle, size = opened
    with handle:
        if size == 0:
            return []
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return []
        keep = line_start(handle, size)
        handle.seek(keep)
        keep_aside(path + TORN, handle.read())
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return [f"{os.path.basename(path)}: dropped a torn last line ({size - keep} bytes, kept in "
            f"{os.path.basename(path) + TORN})"]


#: The suffix of the file where :func:`repair_tail` keeps the torn lines it cut.
TORN = ".torn"


def keep_aside(path: str, data: bytes) -> None:
    """Append ``data`` and a newline to ``path`` (created 0600: it may hold a password hash) and sync it."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "ab") as side:
        side.write(data + b"\n")
        side.flush()
        os.fsync(side.fileno())
    fsync_dir(os.path.dirname(path) or ".")


def line_start(handle: BinaryIO, end: int) -> int:
    """The offset where the line holding byte ``end - 1`` of the open file starts (after the newline before it)."""
    position = end
    while position > 0:
        step = min(65536, position)
        position -= step
        handle.seek(position)
        newline = handle.read(step).rfind(b"\n")
        if newline >= 0:
            return position + newline + 1
    return 0


#: What a spreadsheet or editor may put in front of a UTF-8 file (U+FEFF as UTF-8); chatd reads past one.
BOM = b"\xef\xbb\xbf"
#: Appended to a data file's name for the side file that keeps the bytes of lines chatd could not load.
REJECTED = ".rejected"


def parse_version(text: str) -> tuple[int, int] | None:
    """``MAJOR.MINOR`` (or ``MAJOR``) in ASCII digits, else None (``str.isdigit`` takes other scripts' digits)."""
    major, _, minor = text.partition(".")
    if not (ascii_number(major) and (ascii_number(minor) or not minor)):
        return None
    return int(major), int(minor or 0)


def ascii_number(text: str) -> bool:
    return text.isascii() and text.isdigit()


#: A text cell a spreadsheet would take for a formula (or that starts with the mark itself) is kept with a leading "'".
FORMULA_STARTS = ("=", "+", "-", "@", "'")


def cell_text(cell: str) -> str:
    """A formula-safe cell's text (one leading ``'`` taken off)."""
    return cell[1:] if cell.startswith("'") else cell


def formula_safe(text: str) -> str:
    """``text`` as a cell a spreadsheet never runs: one more leading ``'`` if it starts like a formula or with ``'``."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text
