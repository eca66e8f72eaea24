"""
Files sent to a room: spooled, verified, then streamed to each recipient.

``/send SIZE NAME`` (from a tagged client, in a room) is checked against the
limits before any byte flows: the size against ``max_file_size``, the
sender's uploads in progress against ``max_uploads``. The client then sends
raw ``/data ID LEN`` frames, which :class:`PeerFiles` appends to a spool file
under ``DATA_DIR/spool`` (in the file thread pool, hashing as it writes),
and ``/done ID SHA256``. Once the size and SHA-256 match, the file is
fsynced, logged and shared: every tagged member of the room (but the
sender) gets it through its own :class:`Outbox`, a streaming producer on
that connection's transport, so each recipient is paced by its own socket
and a slow one holds back nobody else. Plain (telnet) members only see a
line saying the file was shared.

An upload that is cancelled, fails its checks, stalls (no frame for
``upload_timeout`` seconds) or whose sender disconnects is deleted from
the spool and the room is told. A spool file is deleted
once every recipient has it (or has gone).

docs/PROTOCOL.md, "File transfer", is the prose version.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.text import clean_line, name_key
from chatd.wire import (
    CANCEL_COMMAND,
    DATA_COMMAND,
    DELIVERY_FAILED,
    DONE_COMMAND,
    ENCODING,
    ERROR,
    FAILED_COMMAND,
    FAILED_REASON_MAX,
    FILE_ABORT,
    FILE_BEGIN,
    FILE_CHUNK,
    FILE_CHUNK_MAX,
    FILE_END,
    UPLOAD_DONE,
    UPLOAD_FAILED,
    UPLOAD_FRAME_MAX,
    UPLOAD_READY,
    safe_file_name,
)

#: Runs ``function(*args)`` in the file thread pool; returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]

SPOOL = "spool"
MiB = 1024 * 1024
#: Spool writes queued for one sender after which its socket is not read.
MAX_PENDING_WRITES = 8
#: Files a connection was sent that it may still report with ``/failed`` (the most recent ones).
RECENT_DELIVERIES = 32
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


@attrs.frozen
class TransferSettings:
    """Limits of file transfer (``--max-file-size``, ``--max-uploads``)."""

    #: Largest file that may be sent, in bytes.
    max_file_size: int = 100 * MiB
    #: Uploads one user may have in progress at once.
    max_uploads: int = 2
    #: Seconds an accepted upload may go without a ``/data`` frame (while the server
    #: is not behind with its spool writes) before it fails and frees its slot.
    upload_timeout: float = 60.0


def human_size(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def parse_size(text: str) -> int:
    """``100M``, ``512K``, ``2G`` or plain bytes, for the command line."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = {"K": 1024, "M": MiB, "G": 1024 * MiB}.get(text[-1:], 1)
    return int(text[:-1] if factor > 1 else text) * factor


class _Rejected(Exception):
    """An upload is refused or broken; the text is for the user."""


# -- blocking file work (runs in the file thread pool) --------------------------------------------


def _prepare_spool(path: str) -> int:
    """Create the spool directory and empty it of leftovers from a crash; returns how many were removed."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    removed = 0
    for entry in os.listdir(path):
        os.unlink(os.path.join(path, entry))
        removed += 1
    return removed


#: Raw bytes of a file read and encoded per thread-pool round trip (several FILE_CHUNK lines).
PIECE = 8 * FILE_CHUNK_MAX
#: Encoded pieces a shared file keeps for recipients that come behind (about 3 MB).
PIECES_KEPT = 8


def _encode_piece(path: str, offset: int, file_id: bytes) -> tuple[bytes, int]:
    """
    Read up to PIECE bytes of ``path`` at ``offset`` and render them as
    FILE_CHUNK lines; returns the lines and the number of raw bytes (0 at
    the end of the file). Runs in the thread pool.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(PIECE)
    head = FILE_CHUNK.encode() + b" " + file_id + b" "
    lines = [
        head + base64.b64encode(data[start : start + FILE_CHUNK_MAX]) + b"\r\n"
        for start in range(0, len(data), FILE_CHUNK_MAX)
    ]
    return b"".join(lines), len(data)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _SpoolFile:
    """One upload's file in the spool: written and hashed piece by piece (in the thread pool)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.hash = hashlib.sha256()

    def open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        self.hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self, sync: bool) -> str:
        """Close (after an fsync if ``sync``) and return the SHA-256 of what was written."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return self.hash.hexdigest()

    def discard(self) -> None:
        self.close(sync=False)
        _remove(self.path)


# -- the shared state --------------------------------------------------------------------------------


class Transfers:
    """
    Every transfer of one server. The factory holds it as ``factory.transfers``
    (set up by ``tap.makeService``); without it ``/send`` says files are off.
    """

    log = Logger()

    def __init__(self, factory: Any, spool_dir: str, run: Runner, settings: TransferSettings | None = None) -> None:
        self.factory = factory
        self.spool_dir = spool_dir
        self.run = run
        self.settings = settings or TransferSettings()
        self._ids = itertools.count(1)
        #: Uploads in progress per user (name key).
        self.uploading: dict[str, int] = {}

    def start(self) -> defer.Deferred[None]:
        """Create the spool directory and delete what an earlier run left in it."""

        def prepared(removed: int) -> None:
            if removed:
                self.log.warn("removed {count} unfinished upload(s) from the spool", count=removed)

        return self.run(_prepare_spool, self.spool_dir).addCallback(prepared)

    def files_of(self, peer: Any) -> PeerFiles:
        """The transfer state of one connection, created on first use."""
        if peer.files is None:
            peer.files = PeerFiles(self, peer)
        return peer.files

    def announce(self, room: Any, text: str) -> None:
        room.fanout.send(f"[{self.factory.clock.short()}] * {text}")

    def offer(self, peer: Any, room: Any, argument: str) -> None:
        """``/send SIZE NAME`` in ``room``: accept it (``24``) or refuse it (``25 -``)."""
        if not peer.tagged or getattr(peer, "_telnet", None) is not None:
            peer.show(ERROR, "Error: sending files needs the chat client (type /send PATH in chat).")
            return
        size_text, _, name = argument.partition(" ")
        try:
            size = int(size_text)
            if size < 0 or not name.strip():
                raise ValueError
        except ValueError:
            peer.show(UPLOAD_FAILED, "- usage: /send SIZE NAME (the chat client sends this for /send PATH)")
            return
        name = safe_file_name(name)
        limit = self.settings.max_file_size
        key = name_key(peer.name or "")
        if size > limit:
            why = f"{name} is {human_size(size)}; the largest file this server accepts is {human_size(limit)}"
        elif self.uploading.get(key, 0) >= self.settings.max_uploads:
            why = f"you already have {self.settings.max_uploads} upload(s) in progress; wait for one to finish"
        else:
            why = ""
        if why:
            self.factory.store.log_event("file_refused", peer.name or "", room.name, f"{name} {size} bytes: {why}")
            peer.show(UPLOAD_FAILED, f"- {why}")
            return
        upload = Upload(self, peer, room, f"f{next(self._ids)}", name, size)
        self.uploading[key] = self.uploading.get(key, 0) + 1
        self.files_of(peer).uploads[upload.id] = upload
        upload.start()
        peer.show(UPLOAD_READY, f"{upload.id} {size} {name}")
        self.announce(room, f"{peer.name} is sending {name} ({human_size(size)})")

    def finished(self, upload: Upload) -> None:
        """``upload`` is over, one way or the other."""
        key = name_key(upload.sender)
        count = self.uploading.get(key, 0) - 1
        if count > 0:
            self.uploading[key] = count
        else:
            self.uploading.pop(key, None)

    def share(self, upload: Upload, digest: str) -> None:
        """A verified upload: log it and hand it to every tagged member of its room but the sender."""
        room = upload.room
        self.log.info(
            "file shared: {sender} in {room}: {name}, {size} bytes, sha256 {sha256}",
            sender=upload.sender, room=room.name, name=upload.name, size=upload.size, sha256=digest,
        )
        self.factory.store.log_event("file", upload.sender, room.name, f"{upload.name} {upload.size} bytes sha256 {digest}")
        recipients = [member for member in room.fanout.tagged if member is not upload.peer]
        shared = SharedFile(self, upload.id, upload.path, upload.name, upload.size, digest, upload.sender,
                            len(recipients), upload.peer)
        self.announce(room, f"{upload.sender} shared {upload.name} ({human_size(upload.size)}, sha256 {digest[:16]}...)")
        upload.peer.show(UPLOAD_DONE, f"{upload.id} {digest} {len(recipients)}")
        for member in recipients:
            self.files_of(member).outbox().add(shared)
        if not recipients:
            shared.release()

    def not_delivered(self, delivery: Delivery, text: str) -> None:
        """Tell the sender of a file (if that connection is still open) that a recipient did not get it: ``text``."""
        self.log.info("file {id} from {sender} not delivered: {text}", id=delivery.id, sender=delivery.sender,
                      text=text)
        if delivery.sender_peer in self.factory.connections:
            delivery.sender_peer.show(DELIVERY_FAILED, f"{delivery.id} {text}")


@attrs.frozen
class Delivery:
    """What a recipient's ``/failed`` needs of a file it was sent: whom to tell."""

    id: str
    name: str
    sender: str
    sender_peer: Any


@attrs.define(eq=False)
class SharedFile:
    """A verified file in the spool, deleted once each recipient is done with it."""

    transfers: Transfers
    id: str
    path: str
    name: str
    size: int
    sha256: str
    sender: str
    refs: int
    #: The sender's connection (told when a recipient does not get the file).
    sender_peer: Any = None
    #: Encoded pieces by offset, shared by every recipient: the file is read
    #: and base64-encoded once, not once per recipient.
    _pieces: dict[int, tuple[bytes, int]] = attrs.field(factory=dict)
    _reading: dict[int, list[defer.Deferred[tuple[bytes, int]]]] = attrs.field(factory=dict)

    def piece(self, offset: int) -> defer.Deferred[tuple[bytes, int]]:
        """The FILE_CHUNK lines for the piece at ``offset`` and its raw length (0: the end)."""
        if offset in self._pieces:
            return defer.succeed(self._pieces[offset])
        waiting: defer.Deferred[tuple[bytes, int]] = defer.Deferred()
        if offset in self._reading:
            self._reading[offset].append(waiting)
            return waiting
        self._reading[offset] = [waiting]

        def done(result: Any) -> None:
            waiters = self._reading.pop(offset)
            if not isinstance(result, Failure):
                self._pieces[offset] = result
                while len(self._pieces) > PIECES_KEPT:
                    del self._pieces[min(self._pieces)]
            for d in waiters:
                d.callback(result) if not isinstance(result, Failure) else d.errback(result)

        self.transfers.run(_encode_piece, self.path, offset, self.id.encode()).addBoth(done)
        return waiting

    def delivery(self) -> Delivery:
        return Delivery(self.id, self.name, self.sender, self.sender_peer)

    def release(self) -> None:
        self.refs -= 1
        if self.refs <= 0:
            self.transfers.run(_remove, self.path)


class Upload:
    """One file being received from its sender into the spool."""

    log = Logger()

    def __init__(self, transfers: Transfers, peer: Any, room: Any, upload_id: str, name: str, size: int) -> None:
        self.transfers = transfers
        self.peer = peer
        self.room = room
        self.sender = peer.name or "?"
        self.id = upload_id
        self.name = name
        self.size = size
        self.received = 0
        self.pending = 0
        self.path = os.path.join(transfers.spool_dir, f"{upload_id}.upload")
        self.over = False
        self._spool = _SpoolFile(self.path)
        self._tail: defer.Deferred[Any] = defer.succeed(None)
        self._reactor = transfers.factory.reactor
        self._last_frame = 0.0
        self._idle_timer: Any = None

    def _then(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``function`` in the pool after the previous step of this upload."""
        self._tail.addCallback(lambda _: self.transfers.run(function, *args))
        return self._tail

    def start(self) -> None:
        self._then(self._spool.open)
        self._tail.addErrback(self._disk_failed)
        self._last_frame = self._reactor.seconds()
        self._idle_timer = self._reactor.callLater(self.transfers.settings.upload_timeout, self._check_idle)

    def _check_idle(self) -> None:
        """No frame for ``upload_timeout`` seconds (and the server is not behind): the upload has stalled."""
        self._idle_timer = None
        if self.over:
            return
        timeout = self.transfers.settings.upload_timeout
        now = self._reactor.seconds()
        if self.transfers.files_of(self.peer).writes_pending:
            self._last_frame = now  # the server is behind and not reading: not the sender's fault
        left = self._last_frame + timeout - now
        if left > 0:
            self._idle_timer = self._reactor.callLater(left, self._check_idle)
            return
        self.fail(f"no data arrived for {timeout:g} seconds")

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            if self._idle_timer.active():
                self._idle_timer.cancel()
            self._idle_timer = None

    def _disk_failed(self, failure: Any) -> None:
        if not self.over:
            self.log.failure("could not write upload {id} to the spool", failure, id=self.id)
            self.fail("the server could not store the file")

    def data(self, data: bytes) -> None:
        """A frame's bytes (may be part of a frame)."""
        if self.over:
            return
        self._last_frame = self._reactor.seconds()
        self.received += len(data)
        if self.received > self.size:
            self.fail(f"more data than the announced {self.size} bytes")
            return
        self.pending += 1
        files = self.transfers.files_of(self.peer)
        files.writes_queued(1)

        def written(result: Any) -> Any:
            self.pending -= 1
            files.writes_queued(-1)
            return result

        self._tail.addCallback(lambda _: self.transfers.run(self._spool.write, data).addBoth(written))
        self._tail.addErrback(self._disk_failed)

    def done(self, declared: str) -> None:
        """``/done ID SHA256``: check size and hash, then share."""
        if self.over:
            return
        declared = declared.strip().lower()
        if self.received != self.size:
            self.fail(f"only {self.received} of {self.size} bytes arrived")
            return
        if not _SHA256.match(declared):
            self.fail("no valid SHA-256 was given")
            return
        self.over = True
        self._stop_idle_timer()
        self.transfers.files_of(self.peer).uploads.pop(self.id, None)
        self.transfers.finished(self)

        def closed(digest: str) -> None:
            if digest != declared:
                self.transfers.run(_remove, self.path)
                self._failed_after_close(f"SHA-256 mismatch: the server got {digest}")
                return
            self.transfers.share(self, digest)

        def failed(failure: Any) -> None:
            self.log.failure("could not finish upload {id}", failure, id=self.id)
            self.transfers.run(_remove, self.path)
            self._failed_after_close("the server could not store the file")

        self._tail.addCallback(lambda _: self.transfers.run(self._spool.close, True))
        self._tail.addCallbacks(closed, failed)

    def _failed_after_close(self, why: str) -> None:
        self.peer.show(UPLOAD_FAILED, f"{self.id} {why}")
        self._aborted(why)

    def fail(self, why: str, tell_sender: bool = True) -> None:
        """Abandon the upload: delete the spool file (after queued writes) and tell the room."""
        if self.over:
            return
        self.over = True
        self._stop_idle_timer()
        if self.peer.files is not None:
            self.peer.files.uploads.pop(self.id, None)
        self.transfers.finished(self)
        self._tail.addBoth(lambda _: self.transfers.run(self._spool.discard))
        self._tail.addErrback(lambda failure: self.log.failure("could not delete {path}", failure, path=self.path))
        if tell_sender:
            self.peer.show(UPLOAD_FAILED, f"{self.id} {why}")
        self._aborted(why)

    def _aborted(self, why: str) -> None:
        self.transfers.factory.store.log_event("file_aborted", self.sender, self.room.name, f"{self.name}: {why}")
        self.log.info("upload {id} of {name} by {sender} aborted: {why}", id=self.id, name=self.name,
                      sender=self.sender, why=why)
        self.transfers.announce(self.room, f"{self.sender}'s file {self.name} was not sent ({why})")


# -- one connection ----------------------------------------------------------------------------------


class PeerFiles:
    """
    The transfers of one connection (``protocol.files``): its uploads, the
    upload frame being read, and its outbox of files to receive.
    """

    def __init__(self, transfers: Transfers, peer: Any) -> None:
        self.transfers = transfers
        self.peer = peer
        self.uploads: dict[str, Upload] = {}
        self._frame: Upload | None = None
        self._frame_left = 0
        self._pending = 0
        self._reading_paused = False
        self._outbox: Outbox | None = None
        #: The files most recently sent to this connection, by ID (for ``/failed``).
        self.delivered: dict[str, Delivery] = {}

    def line_received(self, line: bytes) -> bool:
        """Handle ``/data``, ``/done``, ``/cancel`` or ``/failed``; False for any other line."""
        command, _, rest = line.partition(b" ")
        if command == DATA_COMMAND.encode():
            self._data_header(rest)
        elif command == DONE_COMMAND.encode():
            upload_id, _, digest = rest.decode(ENCODING, "replace").partition(" ")
            upload = self.uploads.get(upload_id)
            if upload is not None:
                upload.done(digest)
        elif command == CANCEL_COMMAND.encode():
            upload = self.uploads.get(rest.decode(ENCODING, "replace").strip())
            if upload is not None:
                upload.fail("the sender cancelled it", tell_sender=False)
        elif command == FAILED_COMMAND.encode():
            file_id, _, reason = rest.partition(b" ")
            self._failed(file_id.decode(ENCODING, "replace"), reason)
        else:
            return False
        return True

    def sending(self, shared: SharedFile) -> None:
        """``shared`` is being sent to this connection (it may report it with ``/failed``)."""
        self.delivered[shared.id] = shared.delivery()
        while len(self.delivered) > RECENT_DELIVERIES:
            del self.delivered[next(iter(self.delivered))]

    def _failed(self, file_id: str, reason: bytes) -> None:
        """``/failed ID REASON``: this recipient could not save file ID; its sender is told (once)."""
        delivery = self.delivered.pop(file_id, None)
        if delivery is None:
            return
        why = clean_line(reason)[:FAILED_REASON_MAX].rstrip() or "no reason given"
        self.transfers.not_delivered(delivery, f"{self.peer.name} could not save {delivery.name}: {why}")

    def _data_header(self, rest: bytes) -> None:
        upload_id, _, length = rest.decode(ENCODING, "replace").strip().partition(" ")
        if not length.isdigit() or not 0 < int(length) <= UPLOAD_FRAME_MAX:
            # The stream can no longer be followed.
            self.peer.show(ERROR, f"Error: bad upload frame (at most {UPLOAD_FRAME_MAX} bytes); closing.")
            self.peer.close()
            return
        # Frames of an upload that has just been refused are read and dropped.
        self._frame = self.uploads.get(upload_id)
        self._frame_left = int(length)
        self.peer.setRawMode()

    def frame_data(self, data: bytes) -> bytes | None:
        """Bytes of the current frame; returns what follows the frame once it is complete, else None."""
        piece, rest = data[: self._frame_left], data[self._frame_left:]
        self._frame_left -= len(piece)
        if self._frame is not None and piece:
            self._frame.data(piece)
        if self._frame_left:
            return None
        self._frame = None
        return rest

    @property
    def writes_pending(self) -> int:
        """Spool writes of this connection's uploads not done yet."""
        return self._pending

    def writes_queued(self, delta: int) -> None:
        """Stop reading this connection while its spool writes lag behind."""
        self._pending += delta
        transport = self.peer.transport
        if transport is None:
            return
        if not self._reading_paused and self._pending > MAX_PENDING_WRITES:
            self._reading_paused = True
            transport.pauseProducing()
        elif self._reading_paused and self._pending <= MAX_PENDING_WRITES // 4:
            self._reading_paused = False
            if not getattr(self.peer, "paused", False):
                transport.resumeProducing()

    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.transfers, self.peer)
        return self._outbox

    def connection_lost(self) -> None:
        """The connection is gone: abandon its uploads and its downloads."""
        for upload in list(self.uploads.values()):
            upload.fail("the sender disconnected", tell_sender=False)
        if self._outbox is not None:
            self._outbox.stopProducing()


@implementer(IPushProducer)
class Outbox:
    """
    The files waiting for one recipient, sent one after the other as
    ``20``/``21``/``22`` lines. It is the streaming producer of that
    connection's transport: it reads the next piece (in the thread pool)
    only while the transport is not paused, so file data never piles up in
    the send buffer of a slow reader: about one piece at most is queued
    beyond what the socket took. That piece does count against
    ``max_outbound`` (it goes through ``deliver``), which must stay well
    above it. Chat lines go out between pieces.
    """

    log = Logger()

    def __init__(self, transfers: Transfers, peer: Any) -> None:
        self.transfers = transfers
        self.peer = peer
        self.queue: deque[SharedFile] = deque()
        self._current: SharedFile | None = None
        self._sent = 0
        self._paused = False
        self._busy = False
        self._stopped = False
        self._registered = False

    def add(self, shared: SharedFile) -> None:
        if self._stopped:
            shared.release()
            return
        self.queue.append(shared)
        if not self._registered:
            self._registered = True
            self._paused = False
            self.peer.transport.registerProducer(self, True)
        self._next()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        """The connection is gone: let go of every file."""
        if self._stopped:
            return
        self._stopped = True
        if self._current is not None:
            self._close()
        while self.queue:
            self.queue.popleft().release()

    def _send(self, code: str, text: str) -> None:
        self.peer.deliver(f"{code} {text}\r\n".encode(ENCODING))

    def _next(self) -> None:
        if self._paused or self._busy or self._stopped:
            return
        self._busy = True
        if self._current is None:
            if not self.queue:
                self._busy = False
                if self._registered:
                    self._registered = False
                    self.peer.transport.unregisterProducer()
                return
            shared = self._current = self.queue.popleft()
            self._sent = 0
            if self.peer.files is not None:
                self.peer.files.sending(shared)
            self._send(FILE_BEGIN, f"{shared.id} {shared.size} {shared.sha256} {shared.sender} {shared.name}")
        self._current.piece(self._sent).addCallbacks(self._read, self._failed)

    def _read(self, piece: tuple[bytes, int]) -> None:
        self._busy = False
        shared = self._current
        if self._stopped or shared is None:
            return
        lines, length = piece
        if length:
            self._sent += length
            if self._sent < shared.size:
                # Read ahead: the next piece is ready when the socket drains.
                shared.piece(self._sent).addErrback(lambda _: None)
            self.peer.deliver(lines)
        else:
            self._send(FILE_END, shared.id)
            self._close()
        self._next()

    def _failed(self, failure: Any) -> None:
        self._busy = False
        shared = self._current
        if shared is None or self._stopped:
            return
        self.log.failure("could not read {path} for {who}", failure, path=shared.path, who=self.peer.name)
        self._send(FILE_ABORT, f"{shared.id} the server could not read the file")
        if self.peer.files is not None:
            self.peer.files.delivered.pop(shared.id, None)
        self.transfers.not_delivered(shared.delivery(),
                                     f"{self.peer.name} did not get {shared.name}: the server could not read the file")
        self._close()
        self._next()

    def _close(self) -> None:
        shared, self._current = self._current, None
        if shared is not None:
            shared.release()
