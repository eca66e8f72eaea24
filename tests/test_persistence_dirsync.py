"""append_rows fsyncs the data directory when it creates a file, so a new file's name survives a power loss."""

from __future__ import annotations

import errno
import os
import stat

import attrs
import pytest

from chatd import persistence
from chatd.persistence import append_rows

ROW = ["ann", "hash", "2026-01-01T00:00:00Z"]
REAL_FSYNC = os.fsync


@attrs.define
class FsyncSpy:
    """Stands in for os.fsync: records "dir" or "file" per call; directory syncs fail with ``dir_error``."""

    calls: list[str] = attrs.field(factory=list)
    dir_error: int | None = None

    def __call__(self, fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        self.calls.append(kind)
        if kind == "dir" and self.dir_error is not None:
            raise OSError(self.dir_error, os.strerror(self.dir_error))
        REAL_FSYNC(fd)


@pytest.fixture
def fsyncs(monkeypatch):
    spy = FsyncSpy()
    monkeypatch.setattr(persistence.os, "fsync", spy)
    return spy


def test_creating_a_file_fsyncs_the_directory(tmp_path, fsyncs):
    path = str(tmp_path / "users.csv")
    append_rows(path, [ROW])
    assert fsyncs.calls == ["file", "dir"]  # the row first, then its directory entry
    fsyncs.calls.clear()
    append_rows(path, [ROW])
    assert fsyncs.calls == ["file"]  # the file exists: no directory sync
    assert open(path).read().count("\n") == 2


def test_directory_fsync_unsupported_is_skipped(tmp_path, fsyncs):
    """Filesystems that cannot fsync a directory (EINVAL) do not make the append fail."""
    fsyncs.dir_error = errno.EINVAL
    path = str(tmp_path / "rooms.csv")
    append_rows(path, [ROW])
    assert fsyncs.calls == ["file", "dir"]
    assert open(path).read() == "ann,hash,2026-01-01T00:00:00Z\n"


def test_directory_fsync_failure_fails_the_append(tmp_path, fsyncs):
    """
    An I/O error syncing the directory is a failed write: raised, and the
    row taken back; the next append (to the empty file) syncs the directory again.
    """
    fsyncs.dir_error = errno.EIO
    path = str(tmp_path / "users.csv")
    with pytest.raises(OSError):
        append_rows(path, [ROW])
    assert open(path).read() == ""
    fsyncs.dir_error = None
    fsyncs.calls.clear()
    append_rows(path, [ROW])
    assert fsyncs.calls == ["file", "dir"]
