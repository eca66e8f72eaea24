"""
The client's side of file transfer: uploads it sends, downloads it saves.

All file work (open, read, write, hash, fsync, rename) runs through one
``run`` function, which in the real client hands it to a one-thread pool, so
the reactor thread never waits on the disk and the work for one file runs
in the order it was asked for. Nothing here ever holds a whole file.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.wire import DATA_COMMAND, DONE_COMMAND, UPLOAD_FRAME_MAX, human_size, safe_file_name

#: Runs ``function(*args)`` off the reactor thread; returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]


def claim_name(partial: str, directory: str, name: str) -> str:
    """
    Give the finished ``partial`` file its final name in ``directory``:
    ``name``, or ``name (1).ext``, ``name (2).ext``... An existing file is
    never overwritten (the name is taken with a hard link, which fails if it
    exists; where links are not supported, by creating it exclusively).
    Returns the final path.
    """
    stem, dot, extension = name.rpartition(".")
    if not stem:
        stem, dot, extension = name, "", ""
    for number in range(10000):
        candidate = name if number == 0 else f"{stem} ({number}){dot}{extension}"
        path = os.path.join(directory, candidate)
        try:
            os.link(partial, path)
        except FileExistsError:
            continue
        except OSError:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            os.replace(partial, path)
        else:
            os.unlink(partial)
        return path
    raise OSError(f"no free name for {name} in {directory}")


def failure_reason(failure: Failure) -> str:
    """Why a download failed, short and without local paths (it is sent to the file's sender)."""
    error = failure.value
    if isinstance(error, OSError) and error.strerror:
        return f"could not write the file ({error.strerror})"
    return failure.getErrorMessage()


class Progress:
    """
    A progress bar on stderr, for transfers that take more than a moment:
    drawn only when stderr is a terminal, first after ``delay`` seconds,
    then at most ``rate`` times a second.
    """

    def __init__(self, label: str, total: int, enabled: bool | None = None,
                 now: Callable[[], float] = time.monotonic, delay: float = 0.5, rate: float = 5.0,
                 write: Callable[[str], None] | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._now = now
        self._start = now()
        self._delay = delay
        self._interval = 1.0 / rate
        self._last = 0.0
        self.shown = False
        self._write = write or _write_stderr

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self._now()
        if now - self._start < self._delay or (now - self._last < self._interval and done < self.total):
            return
        self._last = now
        self.shown = True
        width = 30
        filled = int(width * min(done, self.total) / self.total)
        percent = 100 * min(done, self.total) // self.total
        self._write(f"\r\x1b[K{self.label} [{'#' * filled}{'-' * (width - filled)}] {percent:3d}% "
                    f"{human_size(done)}/{human_size(self.total)}")

    def close(self) -> None:
        """Erase the bar (if it was ever drawn)."""
        if self.shown:
            self._write("\r\x1b[K")
            self.shown = False


def _write_stderr(text: str) -> None:
    # Best effort: a progress frame that would block is simply skipped.
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except (BlockingIOError, OSError):
        pass


class Download:
    """
    One incoming file: written to ``NAME.ID.part`` in the downloads folder,
    hashed as it arrives, and renamed to a free final name only once its
    size and SHA-256 match what the server announced. If the file cannot be
    opened or written, the download is over for good: the partial file is
    removed, later pieces are dropped unwritten, and ``on_failed`` is told.
    """

    log = Logger()

    def __init__(self, run: Runner, directory: str, file_id: str, size: int, sha256: str, sender: str,
                 name: str, progress: Progress | None = None,
                 on_failed: Callable[[Download, str], None] | None = None) -> None:
        self.run = run
        self.directory = directory
        self.id = file_id
        self.size = size
        self.sha256 = sha256.lower()
        self.sender = sender
        self.name = safe_file_name(name)
        self.partial = os.path.join(directory, f"{self.name}.{safe_file_name(file_id)}.part")
        self.received = 0
        #: Writes queued but not yet done (the client stops reading when too many are).
        self.pending = 0
        self.on_written: Callable[[], None] | None = None
        self.progress = progress
        #: Called once with the reason if the file cannot be written (the download is then over).
        self.on_failed = on_failed
        #: Why the download failed (None while it is fine); nothing more is written after that.
        self.failed: str | None = None
        self._fd: int | None = None
        self._created = False  # (a partial file that is not ours is never removed)
        self._hash = hashlib.sha256()
        self._tail: defer.Deferred[Any] = run(self._open)
        self._tail.addErrback(self._broken)

    def _broken(self, failure: Failure) -> defer.Deferred[Any] | None:
        """Opening or writing failed: remove the partial file, skip every later write, say why (once)."""
        if self.failed is not None:
            return None
        self.failed = failure_reason(failure)
        self.log.warn("download {id} of {name} failed: {error}", id=self.id, name=self.name,
                      error=failure.getErrorMessage())
        self._close_progress()
        if self.on_failed is not None:
            self.on_failed(self, self.failed)
        return self.run(self._discard).addErrback(
            lambda f: self.log.failure("could not remove {path}", f, path=self.partial))

    def _open(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._created = True

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        self._hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def write(self, data: bytes) -> defer.Deferred[Any]:
        """Queue a piece of the file; fires once it is written (or skipped, once the download failed)."""
        if self.failed is not None:
            return defer.succeed(None)
        self.received += len(data)
        self.pending += 1
        if self.progress is not None:
            self.progress.update(self.received)

        def step(_: Any) -> defer.Deferred[Any] | None:
            return None if self.failed is not None else self.run(self._write, data)

        def written(result: Any) -> Any:
            self.pending -= 1
            if self.on_written is not None:
                self.on_written()
            return result

        self._tail.addCallback(step)
        self._tail.addErrback(self._broken)
        self._tail.addBoth(written)
        return self._tail

    def _finish(self) -> str:
        assert self._fd is not None
        fd, self._fd = self._fd, None
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            digest = self._hash.hexdigest()
            if self.received != self.size:
                raise ValueError(f"size mismatch: got {self.received} bytes, expected {self.size}")
            if digest != self.sha256:
                raise ValueError(f"SHA-256 mismatch: got {digest}, expected {self.sha256}")
            return claim_name(self.partial, self.directory, self.name)
        except BaseException:
            self._discard()
            raise

    def finish(self) -> defer.Deferred[str]:
        """Check and keep the file; fires with its final path, or fails (and the partial is gone)."""
        self._close_progress()

        def step(_: Any) -> defer.Deferred[str]:
            if self.failed is not None:
                raise OSError(self.failed)
            return self.run(self._finish)

        self._tail.addCallback(step)
        return self._tail

    def _discard(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._created:
            self._created = False
            try:
                os.unlink(self.partial)
            except FileNotFoundError:
                pass

    def abort(self) -> defer.Deferred[None]:
        """Throw away what arrived (after any queued writes)."""
        self._close_progress()
        self._tail.addBoth(lambda _: self.run(self._discard))
        return self._tail

    def _close_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()


class Upload:
    """One file this client sends: opened when offered, read piece by piece, hashed as it goes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = safe_file_name(os.path.basename(path))
        self.id: str | None = None
        self.size = 0
        self.sent = 0
        self.progress: Progress | None = None
        self._file: Any = None
        self._hash = hashlib.sha256()

    def open(self) -> None:
        """(In the worker thread.) Open the file and note its size; raises OSError or ValueError."""
        handle = open(self.path, "rb")
        try:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ValueError(f"{self.path} is not a regular file")
        except BaseException:
            handle.close()
            raise
        self._file = handle
        self.size = info.st_size

    def read(self, size: int = UPLOAD_FRAME_MAX) -> bytes:
        """(In the worker thread.) The next piece, hashed; b"" at the end."""
        data = self._file.read(size)
        self._hash.update(data)
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Sender:
    """
    The one streaming producer for this client's uploads: it reads the
    next piece of the first accepted upload only while the connection's
    transport wants more, and writes it as a ``/data ID LEN`` frame. Chat
    lines the user types are written between frames.
    """

    log = Logger()

    def __init__(self, transport: Any, run: Runner, on_done: Callable[[Upload], None],
                 on_failed: Callable[[Upload, str], None]) -> None:
        self.transport = transport
        self.run = run
        self.on_done = on_done
        self.on_failed = on_failed
        self.queue: deque[Upload] = deque()
        self._paused = False
        self._reading = False
        self._registered = False
        self._stopped = False

    def add(self, upload: Upload) -> None:
        """Start (or queue) sending an accepted upload."""
        self.queue.append(upload)
        if not self._registered:
            self._registered = True
            self._paused = False
            self.transport.registerProducer(self, True)
        self._next()

    def cancel(self, upload: Upload) -> None:
        """Stop sending ``upload`` (the server refused or failed it)."""
        if upload in self.queue:
            self.queue.remove(upload)
            self.run(upload.close)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        self._stopped = True
        for upload in self.queue:
            self.run(upload.close)
        self.queue.clear()

    def _next(self) -> None:
        if self._paused or self._reading or self._stopped:
            return
        if not self.queue:
            if self._registered:
                self._registered = False
                self.transport.unregisterProducer()
            return
        upload = self.queue[0]
        self._reading = True
        self.run(upload.read).addCallbacks(lambda data: self._read(upload, data),
                                           lambda failure: self._failed(upload, failure))

    def _read(self, upload: Upload, data: bytes) -> None:
        self._reading = False
        if self._stopped or not self.queue or self.queue[0] is not upload:
            return
        if data and upload.sent + len(data) <= upload.size:
            upload.sent += len(data)
            self.transport.write(f"{DATA_COMMAND} {upload.id} {len(data)}\r\n".encode() + data)
            if upload.progress is not None:
                upload.progress.update(upload.sent)
        elif upload.sent == upload.size:
            self.queue.popleft()
            self.transport.write(f"{DONE_COMMAND} {upload.id} {upload.hexdigest()}\r\n".encode())
            self.run(upload.close)
            self.on_done(upload)
        else:
            self.queue.popleft()
            self.run(upload.close)
            self.on_failed(upload, "the file changed size while it was being sent")
        self._next()

    def _failed(self, upload: Upload, failure: Any) -> None:
        self._reading = False
        if upload in self.queue:
            self.queue.remove(upload)
        self.on_failed(upload, failure.getErrorMessage())
        self._next()
