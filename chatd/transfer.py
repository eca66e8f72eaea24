"""
Files sent to a room: spooled, verified, then streamed to each recipient.

``/send SIZE NAME`` (from a tagged client or a browser, in a room) is checked against the
limits before any byte flows: the size against ``max_file_size`` and the
spool quotas (in all and per user), the sender's uploads in progress against
``max_uploads``. The client then sends raw ``/data ID LEN`` frames, which
:class:`PeerFiles` appends to a spool file under ``DATA_DIR/spool`` (in the
file thread pool, hashing exactly the bytes the disk took), and ``/done ID
SHA256``. The file is fsynced and its size on disk checked; once size and
SHA-256 match, it is logged and shared: every tagged member of the room (but
the sender) gets it through its own :class:`Outbox`, a streaming producer on
that connection's transport, so each recipient is paced by its own socket
and a slow one holds back nobody else. Plain (telnet) members only see a
line saying the file was shared. Each connection's side is a
:class:`FileParty` (what a transfer tells it, in its front-end's format):
:class:`PeerFiles` for line connections, chatd.frontends.web_files for
browsers, whose frames are binary WebSocket messages and who fetch shared
files over HTTP.

An upload that is cancelled, fails its checks, hits a spool error, stalls
(no frame for ``upload_timeout`` seconds), or whose sender leaves its room
(or disconnects, or the room is deleted) is deleted from the spool and the
room is told. A spool file is deleted once every recipient has it (or has
gone, or the ``delivery_timeout`` has passed); until then it counts against
its sender's spool quota.

With several nodes (``--bus``: :meth:`Transfers.across_nodes`) a verified
file is also copied into the store (``file_chunks``) before it is
announced, and the other nodes' members get it from there, chunk by chunk
(:class:`StoredFile`); docs/ARCHITECTURE.md, "Several nodes".

docs/PROTOCOL.md, "File transfer", is the prose version.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import os
import re
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatd.core.events import EventKind
from chatd.core.ports import LeaveReason
from chatd.errors import NotAllowed, failure_error
from chatd.limits import SPOOL_BACKLOG
from chatd.nodes import members_everywhere
from chatd.store import FILE_CHUNK_SIZE, FileRecord, StoreError
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
    FILE_SIZE_MAX,
    UPLOAD_DONE,
    UPLOAD_FAILED,
    UPLOAD_FRAME_MAX,
    UPLOAD_READY,
    Code,
    human_size,
    parse_count,
    safe_file_name,
)

#: Runs ``function(*args)`` in the file thread pool; returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]

SPOOL = "spool"
MiB = 1024 * 1024
#: Spool writes queued for one sender after which its socket is not read.
MAX_PENDING_WRITES = 8
#: Upload frames carrying at least this many bytes of their upload (or all that is left) are free of the
#: flood allowance: an upload costs at most one free frame per MIN_FREE_FRAME bytes of its (limited) size.
MIN_FREE_FRAME = 512
#: Files a connection was sent that it may still report with ``/failed`` (the most recent ones).
RECENT_DELIVERIES = 32
#: Files shared here whose senders other nodes' ``27`` reach (the most recent ones; files across nodes).
RECENT_SENDERS = 1024
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")
#: Why an upload that finishes while its room is being deleted is cancelled.
ROOM_CLOSING = "the room is being deleted"
#: Why an upload is cancelled when its sender leaves its room, by the reason of the leave.
_LEFT_REASONS: dict[LeaveReason, str] = {
    "disconnect": "the sender disconnected", "replaced": "the sender logged in elsewhere",
    "room deleted": "the room was deleted",
}
#: Leaves after which the sender's connection is still there to be told (``25``).
_SENDER_STAYS: frozenset[LeaveReason] = frozenset({"leave", "room deleted"})


@attrs.frozen
class TransferSettings:
    """
    Limits of file transfer (``--max-file-size``, ``--max-uploads``,
    ``--upload-timeout``, ``--spool-quota``, ``--user-spool-quota``,
    ``--delivery-timeout``); 0 turns a size limit or the delivery deadline off.
    """

    #: Largest file that may be sent, in bytes (0: no limit).
    max_file_size: int = 100 * MiB
    #: Uploads one user may have in progress at once.
    max_uploads: int = 2
    #: Seconds an accepted upload may go without a ``/data`` frame (while the server
    #: is not behind with its spool writes) before it fails and frees its slot.
    upload_timeout: float = 60.0
    #: Bytes all files in the spool may take together (announced sizes of uploads in
    #: progress and of shared files not yet taken by every recipient; 0: no limit).
    spool_quota: int = 1024 * MiB
    #: The same, for the files of one user (0: no limit).
    user_spool_quota: int = 256 * MiB
    #: Seconds after a file is shared within which each recipient must take it;
    #: then it gets ``23`` and the spool file is let go (0: no deadline).
    delivery_timeout: float = 1800.0


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


assert PIECE == FILE_CHUNK_SIZE, "a piece read for a recipient is one stored chunk (files across nodes)"
#: Seconds between two deletions of expired shared files from the store (files across nodes).
EXPIRE_INTERVAL = 60.0
#: Seconds a file shared across nodes is kept in the store beyond the delivery deadline (so a node's recipients
#: get ``23`` from the deadline before its data is gone), and how long when there is no deadline.
KEEP_MARGIN = 60.0
KEEP_WITHOUT_DEADLINE = 86400.0


def _encode_piece(path: str, offset: int, file_id: bytes) -> tuple[bytes, int]:
    """
    Read up to PIECE bytes of ``path`` at ``offset`` and render them as
    FILE_CHUNK lines; returns the lines and the number of raw bytes (0 at
    the end of the file). Runs in the thread pool.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(PIECE)
    return _encode_data(data, file_id)


def _encode_data(data: bytes, file_id: bytes) -> tuple[bytes, int]:
    """``data`` as FILE_CHUNK lines of file ``file_id``, and its length. Runs in the thread pool."""
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


class SpoolError(Exception):
    """The spool file does not hold what was sent (found after the fsync); the text says how."""


#: What the sender is told for expected spool errors (errno -> reason); others get their strerror.
_STORAGE_REASONS = {
    errno.ENOSPC: "its disk is full",
    errno.EDQUOT: "its disk quota is used up",
    errno.EFBIG: "the file is too large for its disk",
    errno.EROFS: "its spool is read-only",
    errno.EACCES: "its spool is not writable",
    errno.EPERM: "its spool is not writable",
    errno.EIO: "its disk failed",
}


def storage_reason(error: BaseException) -> str:
    """The ``25`` reason for a spool failure: ``the server could not store the file (its disk is full)``."""
    if isinstance(error, OSError):
        detail = _STORAGE_REASONS.get(error.errno or 0) or (error.strerror or "input/output error").lower()
    else:
        detail = str(error) or type(error).__name__
    return f"the server could not store the file ({detail})"


def log_storage_error(log: Logger, failure: Failure, text: str, **fields: Any) -> None:
    """
    Log a failed spool operation: a file-system error (disk full, read-only,
    ...) as an error with its reason, no traceback; anything else, a bug,
    with its traceback.
    """
    if failure.check(OSError, SpoolError, StoreError):
        log.error(text + ": {error}", error=failure.value, **fields)
    else:
        log.failure(text, failure, **fields)


class _SpoolFile:
    """
    One upload's file in the spool, written and hashed piece by piece (in the
    thread pool). The hash covers exactly the bytes the kernel took. Once an
    operation fails the file is broken: later writes do nothing and
    :meth:`finish` raises that first error, so a short write can never be
    followed by a "verified" file.
    """

    #: ``os.write``; a test replaces it to simulate a disk that fills up.
    write_fd: Callable[[int, Any], int] = staticmethod(os.write)

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.fd: int | None = None
        self.hash = hashlib.sha256()
        self.written = 0
        self.error: BaseException | None = None

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            self.error = error
            raise

    def write(self, data: bytes) -> None:
        """Append ``data``; raises the OSError of the first failure (later calls do nothing)."""
        if self.error is not None or self.fd is None:
            return
        view = memoryview(data)
        try:
            while view:
                count = self.write_fd(self.fd, view)
                if count <= 0:
                    raise OSError(errno.EIO, "the disk took no bytes")
                self.hash.update(view[:count])
                self.written += count
                view = view[count:]
        except BaseException as error:
            self.error = error
            raise

    def finish(self) -> str:
        """
        fsync, check the size on disk and close; returns the SHA-256 of what
        was written. Raises the first write error, or SpoolError when the
        file on disk does not have the announced size.
        """
        if self.error is not None:
            self.close()
            raise self.error
        if self.fd is None:
            raise SpoolError("the spool file was never opened")
        try:
            os.fsync(self.fd)
            on_disk = os.fstat(self.fd).st_size
        except OSError as error:
            self.error = error
            raise
        finally:
            self.close()
        if on_disk != self.size or self.written != self.size:
            self.error = SpoolError(f"the spool file has {on_disk} bytes, not {self.size}")
            raise self.error
        return self.hash.hexdigest()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def discard(self) -> None:
        self.close()
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
        #: Bytes held in the spool (announced sizes), in all and per user (name key):
        #: an upload counts from its ``24`` until it fails or its shared file is let go.
        self.spooled = 0
        self.spooled_by: dict[str, int] = {}
        #: Files reach other nodes' members through the store (:meth:`across_nodes`).
        self.nodes = False
        #: Ends upload ids (``f12`` alone in one process): unique across nodes and restarts with several.
        self._id_suffix = ""
        self._expiry: LoopingCall | None = None
        #: The senders' connections of the files shared here most recently, by id (a ``27`` from another node).
        self._senders: dict[str, Any] = {}

    def across_nodes(self) -> None:
        """
        Share files with other nodes (``--bus``): a verified file is copied
        into the store before it is announced (:meth:`Upload.done`), and the
        store's expired files are deleted every :data:`EXPIRE_INTERVAL`
        seconds. Called before :meth:`start`.
        """
        self.nodes = True
        self._id_suffix = "-" + secrets.token_hex(4)

    def start(self) -> defer.Deferred[None]:
        """Create the spool directory and delete what an earlier run left in it; start the store's file expiry."""

        def prepared(removed: int) -> None:
            if removed:
                self.log.warn("removed {count} unfinished upload(s) from the spool", count=removed)

        if self.nodes:
            self._expiry = LoopingCall(self.expire)
            self._expiry.clock = self.factory.reactor
            self._expiry.start(EXPIRE_INTERVAL, now=True)
        return self.run(_prepare_spool, self.spool_dir).addCallback(prepared)

    def stop(self) -> None:
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()

    def expire(self) -> defer.Deferred[None]:
        """Delete the files the store keeps past their time (any node may; logged, never raised)."""

        def expired(count: int) -> None:
            if count:
                self.log.info("deleted {count} expired shared file(s) from the store", count=count)

        def failed(failure: Failure) -> None:
            self.log.error("could not delete expired shared files from the store: {why}",
                           why=failure.getErrorMessage())

        return self.factory.store.expire_files(self.factory.reactor.seconds()).addCallbacks(expired, failed)

    def keep_until(self, now: float) -> float:
        """When a file shared at ``now`` may be deleted from the store (the delivery deadline and a margin)."""
        timeout = self.settings.delivery_timeout
        return now + (timeout + KEEP_MARGIN if timeout else KEEP_WITHOUT_DEADLINE)

    def store(self, upload: Upload, digest: str) -> defer.Deferred[None]:
        """Copy a verified upload into the store for the other nodes (:meth:`chatd.store.Store.store_file`)."""
        now = self.factory.reactor.seconds()
        record = FileRecord(upload.id, upload.room.history.room_id, upload.name, upload.size, digest, upload.sender,
                            now, self.keep_until(now))
        return self.factory.store.store_file(record, upload.path)

    def stored_shared(self, room: Any, file_id: str, name: str, size: int, sha256: str, sender: str) -> None:
        """
        Another node shared a file in ``room`` and stored it (chatd.nodes):
        every member here that takes files gets it, read from the store.
        """
        recipients = [member for member in room.fanout.members() if getattr(member, "receives_files", False)]
        if not recipients:
            return
        shared = StoredFile(self, file_id, "", name, size, sha256, sender, len(recipients))
        shared.start_deadline()
        for member in recipients:
            self.files_of(member).receive(shared)

    def files_of(self, peer: Any) -> FileParty:
        """The transfer state of one connection (a line connection's is created on first use)."""
        if peer.files is None:
            peer.files = PeerFiles(self, peer)
        return peer.files

    def announce(self, room: Any, sender: str, kind: EventKind, text: str) -> None:
        """A file event in ``room`` (chatd.core.events: ``text`` after the sender); nothing if the room is gone."""
        if self.factory.rooms.get(room.key) is room:
            self.factory.publish(room, sender, kind, text)

    def offer(self, peer: Any, room: Any, argument: str) -> None:
        """``/send SIZE NAME`` in ``room``: accept it (``24``) or refuse it (``25 -``)."""
        if not getattr(peer, "sends_files", False):
            raise NotAllowed("sending files needs the chat client (type /send PATH in chat).")
        files = self.files_of(peer)
        size_text, _, name = argument.partition(" ")
        size = parse_count(size_text, FILE_SIZE_MAX)
        if size is None or not name.strip():
            files.upload_failed("-", f"usage: /send SIZE NAME, SIZE in bytes as ASCII digits (at most "
                                     f"{FILE_SIZE_MAX}); the chat client sends this for /send PATH")
            return
        name = safe_file_name(name)
        key = name_key(peer.name or "")
        why = self._refusal(key, name, size)
        if why:
            self.factory.store.log_event("file_refused", peer.name or "", room.name, name=name, size=size, reason=why)
            files.upload_failed("-", why)
            return
        upload = Upload(self, peer, room, f"f{next(self._ids)}{self._id_suffix}", name, size)
        self.uploading[key] = self.uploading.get(key, 0) + 1
        self.hold(key, size)
        files.uploads[upload.id] = upload
        upload.start()
        files.upload_ready(upload)
        self.announce(room, peer.name or "", EventKind.FILE_OFFER, f"{name} ({human_size(size)})")

    def _refusal(self, key: str, name: str, size: int) -> str:
        """Why user ``key`` may not send a file ``name`` of ``size`` bytes now; "" if it may."""
        settings = self.settings
        limit, total, mine = settings.max_file_size, settings.spool_quota, settings.user_spool_quota
        held = self.spooled_by.get(key, 0)
        if limit and size > limit:
            return f"{name} is {human_size(size)}; the largest file this server accepts is {human_size(limit)}"
        if self.uploading.get(key, 0) >= settings.max_uploads:
            return f"you already have {settings.max_uploads} upload(s) in progress; wait for one to finish"
        if mine and held + size > mine:
            return (f"{name} ({human_size(size)}) does not fit in your space on the server: your files not yet "
                    f"delivered take {human_size(held)} of {human_size(mine)}; wait until they are delivered")
        if total and self.spooled + size > total:
            return (f"{name} ({human_size(size)}) does not fit in the server's file spool: "
                    f"{human_size(self.spooled)} of {human_size(total)} is in use; try again later")
        return ""

    def hold(self, key: str, size: int) -> None:
        """Count ``size`` bytes of user ``key`` against the spool quotas."""
        self.spooled += size
        self.spooled_by[key] = self.spooled_by.get(key, 0) + size

    def let_go(self, key: str, size: int) -> None:
        """``size`` bytes of user ``key`` no longer take spool space."""
        self.spooled -= size
        left = self.spooled_by.get(key, 0) - size
        if left > 0:
            self.spooled_by[key] = left
        else:
            self.spooled_by.pop(key, None)

    def left_room(self, peer: Any, room: Any, event: LeaveReason = "leave") -> None:
        """
        ``peer`` is no longer in ``room`` (``event``: ``leave``, ``disconnect``,
        ``replaced`` or ``room deleted``): its uploads offered there are cancelled, even one
        being verified, so no file reaches a room its sender is not in.
        """
        files = peer.files
        if files is None:
            return
        files.left_room(room)
        if not (files.uploads or files.verifying):
            return
        why = _LEFT_REASONS.get(event, "the sender left the room")
        for upload in files.all_uploads():
            if upload.room is room:
                upload.fail(why, tell_sender=event in _SENDER_STAYS)

    def finished(self, upload: Upload) -> None:
        """``upload`` is over, one way or the other."""
        key = name_key(upload.sender)
        count = self.uploading.get(key, 0) - 1
        if count > 0:
            self.uploading[key] = count
        else:
            self.uploading.pop(key, None)

    def share(self, upload: Upload, digest: str) -> None:
        """
        A verified upload: log it and hand it to every member of its room but
        the sender that takes files (``receives_files``: tagged line
        connections, browser sessions).
        """
        room = upload.room
        self.log.info(
            "file shared: {sender} in {room}: {name}, {size} bytes, sha256 {sha256}",
            sender=upload.sender, room=room.name, name=upload.name, size=upload.size, sha256=digest,
        )
        self.factory.store.log_event(
            "file", upload.sender, room.name, id=upload.id, name=upload.name, size=upload.size, sha256=digest)
        recipients = [member for member in room.fanout.members()
                      if member is not upload.peer and getattr(member, "receives_files", False)]
        shared = SharedFile(self, upload.id, upload.path, upload.name, upload.size, digest, upload.sender,
                            len(recipients), upload.peer)
        shared.start_deadline()
        self.announce(room, upload.sender, EventKind.FILE,
                      f"{upload.name} ({human_size(upload.size)}, sha256 {digest[:16]}...)")
        # The room's members on other nodes: their nodes offer it to those whose connection takes files.
        elsewhere = len(members_everywhere(self.factory, room)) - len(room.fanout) if self.nodes else 0
        self.files_of(upload.peer).upload_done(upload, digest, len(recipients), elsewhere)
        for member in recipients:
            self.files_of(member).receive(shared)
        if not recipients:
            shared.release()
        if self.nodes:  # after the FILE event: other nodes offer it to their members (stored_shared)
            self.factory.bus.share(["file", room.name, upload.id, upload.name, upload.size, digest, upload.sender])
            self._senders[upload.id] = upload.peer
            while len(self._senders) > RECENT_SENDERS:
                del self._senders[next(iter(self._senders))]

    def not_delivered(self, delivery: Delivery, text: str) -> None:
        """
        Tell the sender of a file (if that connection is still open) that a
        recipient did not get it: ``text``. A file from another node: its
        node is told through the bus (:meth:`undelivered_elsewhere` there).
        """
        self.log.info("file {id} from {sender} not delivered: {text}", id=delivery.id, sender=delivery.sender,
                      text=text)
        if delivery.sender_peer is None and self.nodes:
            self.factory.bus.share(["file_undelivered", delivery.id, text])
        elif delivery.sender_peer in self.factory.connections:
            self.files_of(delivery.sender_peer).not_delivered(delivery.id, text)

    def undelivered_elsewhere(self, file_id: str, text: str) -> None:
        """A recipient on another node did not get file ``file_id``: its sender here (if still connected) gets ``27``."""
        sender = self._senders.get(file_id)
        if sender is not None and sender in self.factory.connections:
            self.files_of(sender).not_delivered(file_id, text)


@attrs.frozen
class Delivery:
    """What a recipient's ``/failed`` needs of a file it was sent: whom to tell."""

    id: str
    name: str
    sender: str
    sender_peer: Any


@attrs.define(eq=False)
class SharedFile:
    """
    A verified file in the spool, deleted once each recipient is done with it
    or the delivery deadline (``delivery_timeout``) has passed; until then it
    counts against its sender's spool quota.
    """

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
    #: The recipients that still hold this file (line outboxes queuing or sending it, browser tickets).
    holders: set[Holder] = attrs.field(factory=set)
    #: Encoded pieces by offset, shared by every recipient: the file is read
    #: and base64-encoded once, not once per recipient.
    _pieces: dict[int, tuple[bytes, int]] = attrs.field(factory=dict)
    _reading: dict[int, list[defer.Deferred[tuple[bytes, int]]]] = attrs.field(factory=dict)
    _deadline: Any = None
    _released: bool = False

    def start_deadline(self) -> None:
        """Recipients that have not taken the file within ``delivery_timeout`` seconds will not get it."""
        timeout = self.transfers.settings.delivery_timeout
        if timeout and self.refs > 0:
            self._deadline = self.transfers.factory.reactor.callLater(timeout, self._expired)

    def _expired(self) -> None:
        self._deadline = None
        why = f"it was not taken within {self.transfers.settings.delivery_timeout:g} seconds"
        for holder in list(self.holders):
            holder.drop(self, why)

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

        self._read_piece(offset).addBoth(done)
        return waiting

    def _read_piece(self, offset: int) -> defer.Deferred[tuple[bytes, int]]:
        return self.transfers.run(_encode_piece, self.path, offset, self.id.encode())

    def where(self) -> str:
        """Where the file is read from, for the log."""
        return self.path

    def delivery(self) -> Delivery:
        return Delivery(self.id, self.name, self.sender, self.sender_peer)

    def release(self, holder: Holder | None = None) -> None:
        """One recipient (``holder``) is done with the file; the last one deletes it and frees its quota."""
        self.holders.discard(holder)
        self.refs -= 1
        if self.refs <= 0 and not self._released:
            self._released = True
            self._pieces.clear()
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
            self._let_go()

    def _let_go(self) -> None:
        """Free the spool file and its quota."""
        self.transfers.let_go(name_key(self.sender), self.size)
        self.transfers.run(_remove, self.path)


@attrs.define(eq=False)
class StoredFile(SharedFile):
    """
    A file shared on another node, read from the store (a
    :data:`~chatd.store.FILE_CHUNK_SIZE` row per piece) as each recipient
    here drains; it takes no spool space here, and the store deletes it
    once expired (:meth:`Transfers.expire`), whoever took it.
    """

    def _read_piece(self, offset: int) -> defer.Deferred[tuple[bytes, int]]:
        if offset >= self.size:
            return defer.succeed((b"", 0))
        return self.chunk(offset).addCallback(
            lambda data: self.transfers.run(_encode_data, data, self.id.encode()))

    def chunk(self, offset: int) -> defer.Deferred[bytes]:
        """The raw bytes of the piece at ``offset`` (a multiple of PIECE); fails with StoreError."""
        return self.transfers.factory.store.read_file_chunk(self.id, offset // PIECE)

    def where(self) -> str:
        return f"the store (file {self.id})"

    def _let_go(self) -> None:
        pass


class Upload:
    """
    One file being received from its sender into the spool. Its spool work
    (open, writes, the final fsync) runs in order in the thread pool; the
    first spool error fails the upload and no later step is run.
    """

    log = Logger()

    def __init__(self, transfers: Transfers, peer: Any, room: Any, upload_id: str, name: str, size: int) -> None:
        self.transfers = transfers
        self.peer = peer
        self.room = room
        self.sender = peer.name or "?"
        self.key = name_key(self.sender)
        self.id = upload_id
        self.name = name
        self.size = size
        self.received = 0
        self.pending = 0
        self.path = os.path.join(transfers.spool_dir, f"{upload_id}.upload")
        #: No more frames are taken (after ``/done`` or once it failed).
        self.over = False
        #: Shared or failed: nothing more happens to it.
        self.ended = False
        self._broken = False
        self._spool = _SpoolFile(self.path, size)
        self._tail: defer.Deferred[Any] = defer.succeed(None)
        self._reactor = transfers.factory.reactor
        self._last_frame = 0.0
        self._idle_timer: Any = None

    def _then(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """Run ``function`` in the pool after the previous step of this upload, unless the spool has failed."""

        def step(_: Any) -> Any:
            return None if self._broken else self.transfers.run(function, *args)

        return self._tail.addCallback(step).addErrback(self._spool_failed)

    def start(self) -> None:
        self._then(self._spool.open)
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

    def _spool_failed(self, failure: Failure) -> None:
        """The first spool error: logged once (a traceback only for the unexpected), the upload fails."""
        if self._broken:
            return
        self._broken = True
        log_storage_error(self.log, failure, "could not store upload {id} in the spool ({path})", id=self.id,
                          path=self.path)
        self.fail(storage_reason(failure_error(failure)))

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

        def write(_: Any) -> Any:
            return None if self._broken else self.transfers.run(self._spool.write, data)

        def written(result: Any) -> Any:
            self.pending -= 1
            files.writes_queued(-1)
            return result

        self._tail.addCallback(write).addBoth(written).addErrback(self._spool_failed)

    def done(self, declared: str) -> None:
        """``/done ID SHA256``: check the size and hash of what is on disk (after an fsync), then share."""
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
        files = self.transfers.files_of(self.peer)
        files.verifying[self.id] = files.uploads.pop(self.id, self)

        def verified(digest: str | None) -> None:
            if self.ended or digest is None:  # failed meanwhile (spool error, sender left the room)
                return
            if digest != declared:
                self.fail(f"SHA-256 mismatch: the server got {digest}")
                return
            if self.transfers.nodes:  # copied into the store first, for the other nodes' recipients
                self.transfers.store(self, digest).addCallbacks(self._stored, self._not_stored, (digest,))
                return
            self._stored(None, digest)

        self._then(self._spool.finish).addCallback(verified)

    def _stored(self, _: Any, digest: str) -> None:
        if self.ended:  # failed meanwhile (the sender left); a copy in the store expires
            return
        if self.room.closing:
            self.fail(ROOM_CLOSING)
            return
        self._end()
        self.transfers.share(self, digest)

    def _not_stored(self, failure: Failure) -> None:
        if self.ended:
            return
        log_storage_error(self.log, failure, "could not copy upload {id} into the store", id=self.id)
        self.fail(storage_reason(failure_error(failure)))

    def _not_deleted(self, failure: Failure) -> None:
        log_storage_error(self.log, failure, "could not delete {path}", path=self.path)

    def _end(self) -> None:
        """The upload no longer counts against ``--max-uploads`` and takes no more commands."""
        self.ended = self.over = True
        self._stop_idle_timer()
        if self.peer.files is not None:
            self.peer.files.uploads.pop(self.id, None)
            self.peer.files.verifying.pop(self.id, None)
        self.transfers.finished(self)

    def fail(self, why: str, tell_sender: bool = True) -> None:
        """Abandon the upload: delete the spool file (after queued writes), free its quota and tell the room."""
        if self.ended:
            return
        self._end()
        self.transfers.let_go(self.key, self.size)
        self._tail.addBoth(lambda _: self.transfers.run(self._spool.discard))
        self._tail.addErrback(self._not_deleted)
        if tell_sender:
            self.transfers.files_of(self.peer).upload_failed(self.id, why)
        self.transfers.factory.store.log_event(
            "file_aborted", self.sender, self.room.name, id=self.id, name=self.name, reason=why)
        self.log.info("upload {id} of {name} by {sender} aborted: {why}", id=self.id, name=self.name,
                      sender=self.sender, why=why)
        self.transfers.announce(self.room, self.sender, EventKind.FILE_FAILED, f"{self.name} was not sent ({why})")


# -- one connection ----------------------------------------------------------------------------------


class Holder(Protocol):
    """A recipient holding a shared file (in :attr:`SharedFile.holders`) until it has it."""

    def drop(self, shared: SharedFile, why: str) -> None:
        """``shared`` will not be delivered to this recipient (``why``: the delivery deadline passed)."""


class FileParty:
    """
    One connection's side of file transfer, as :class:`Transfers` and
    :class:`Upload` see it: its uploads, the spool writes they have queued
    (reading the connection pauses while those lag behind), and what a
    transfer tells it. Each front-end renders the telling its own way: the
    line protocol as numbered lines (:class:`PeerFiles`), the browser as
    JSON (``chatd.frontends.web_files.WebFiles``). The peer provides
    ``transport``, ``pause_reading(reason)`` and ``resume_reading(reason)``.
    """

    def __init__(self, transfers: Transfers | None, peer: Any) -> None:
        self.transfers = transfers
        self.peer = peer
        #: Uploads taking frames, by ID.
        self.uploads: dict[str, Upload] = {}
        #: Uploads after their ``/done``, while the size and hash are checked (no frames, no ``/cancel``).
        self.verifying: dict[str, Upload] = {}
        self._pending = 0
        self._reading_paused = False

    def all_uploads(self) -> list[Upload]:
        """Every upload of this connection that has not ended (taking frames or being verified)."""
        return [*self.uploads.values(), *self.verifying.values()]

    @property
    def writes_pending(self) -> int:
        """Spool writes of this connection's uploads not done yet."""
        return self._pending

    def writes_queued(self, delta: int) -> None:
        """Stop reading this connection while its spool writes lag behind."""
        self._pending += delta
        if self.peer.transport is None:
            return
        if not self._reading_paused and self._pending > MAX_PENDING_WRITES:
            self._reading_paused = True
            self.peer.pause_reading(SPOOL_BACKLOG)
        elif self._reading_paused and self._pending <= MAX_PENDING_WRITES // 4:
            self._reading_paused = False
            self.peer.resume_reading(SPOOL_BACKLOG)

    # What a transfer tells the connection (each front-end renders it).

    def upload_ready(self, upload: Upload) -> None:
        """``upload`` was accepted: its data may flow (``24``)."""
        raise NotImplementedError

    def upload_failed(self, upload_id: str, why: str) -> None:
        """Upload ``upload_id`` (``-``: an offer refused before it had one) failed or was refused (``25``)."""
        raise NotImplementedError

    def upload_done(self, upload: Upload, digest: str, recipients: int, elsewhere: int = 0) -> None:
        """
        ``upload`` was verified (SHA-256 ``digest``) and goes to ``recipients`` members here (``26``);
        ``elsewhere``: the room's members on other nodes, whose nodes offer it to those taking files.
        """
        raise NotImplementedError

    def not_delivered(self, file_id: str, text: str) -> None:
        """A recipient did not get this connection's file ``file_id``: ``text`` says who and why (``27``)."""
        raise NotImplementedError

    def receive(self, shared: SharedFile) -> None:
        """``shared`` is a file for this connection; it calls ``shared.release(holder)`` once done with it."""
        raise NotImplementedError

    def left_room(self, room: Any) -> None:
        """The connection left ``room`` (after its uploads there were cancelled)."""

    def connection_lost(self) -> None:
        """The connection is gone: abandon its uploads."""
        for upload in self.all_uploads():
            upload.fail("the sender disconnected", tell_sender=False)


class PeerFiles(FileParty):
    """
    The transfers of one line connection (``protocol.files``): its uploads,
    the upload frame being read, and its outbox of files to receive; it
    tells the connection with the tagged codes ``24``-``27``. Without
    ``transfers`` (a server without file transfer) it only reads and drops
    upload frames: it never has an upload, a delivery or an outbox.
    """

    def __init__(self, transfers: Transfers | None, peer: Any) -> None:
        super().__init__(transfers, peer)
        self._frame: Upload | None = None
        self._frame_left = 0
        self._outbox: Outbox | None = None
        #: The files most recently sent to this connection, by ID (for ``/failed``).
        self.delivered: dict[str, Delivery] = {}

    def upload_ready(self, upload: Upload) -> None:
        self.peer.show(UPLOAD_READY, f"{upload.id} {upload.size} {upload.name}")

    def upload_failed(self, upload_id: str, why: str) -> None:
        self.peer.show(UPLOAD_FAILED, f"{upload_id} {why}")

    def upload_done(self, upload: Upload, digest: str, recipients: int, elsewhere: int = 0) -> None:
        self.peer.show(UPLOAD_DONE, f"{upload.id} {digest} {recipients}" + (f" {elsewhere}" if elsewhere else ""))

    def not_delivered(self, file_id: str, text: str) -> None:
        self.peer.show(DELIVERY_FAILED, f"{file_id} {text}")

    def receive(self, shared: SharedFile) -> None:
        self.outbox().add(shared)

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
        if delivery is None or self.transfers is None:
            return
        why = clean_line(reason)[:FAILED_REASON_MAX].rstrip() or "no reason given"
        self.transfers.not_delivered(delivery, f"{self.peer.name} could not save {delivery.name}: {why}")

    def _data_header(self, rest: bytes) -> None:
        upload_id, _, length_text = rest.decode(ENCODING, "replace").strip().partition(" ")
        length = parse_count(length_text, UPLOAD_FRAME_MAX)
        if not length:
            # The stream can no longer be followed.
            self.peer.show(ERROR, f"Error: bad upload frame (LEN must be 1 to {UPLOAD_FRAME_MAX} in ASCII digits); "
                                  "closing.")
            self.peer.close()
            return
        # Frames of an upload that has just been refused are read and dropped.
        self._frame = self.uploads.get(upload_id)
        self._frame_left = length
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

    def outbox(self) -> Outbox:
        """The files waiting to be sent to this connection (asked for by :class:`Transfers` only)."""
        if self._outbox is None:
            assert self.transfers is not None, "an outbox without file transfer"
            self._outbox = Outbox(self.transfers, self.peer)
        return self._outbox

    def connection_lost(self) -> None:
        """The connection is gone: abandon its uploads and its downloads."""
        super().connection_lost()
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
        shared.holders.add(self)
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
            self.queue.popleft().release(self)

    def drop(self, shared: SharedFile, why: str) -> None:
        """
        ``shared`` will not be sent (or finished) to this recipient: it gets
        ``23 ID WHY`` and the sender ``27``; the next file follows.
        """
        if shared is self._current:
            self._close()
        elif shared in self.queue:
            self.queue.remove(shared)
            shared.release(self)
        else:
            return
        self._send(FILE_ABORT, f"{shared.id} {why}")
        if self.peer.files is not None:
            self.peer.files.delivered.pop(shared.id, None)
        self.transfers.not_delivered(shared.delivery(), f"{self.peer.name} did not get {shared.name}: {why}")
        self._next()

    def _send(self, code: Code, text: str) -> None:
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
        current = self._current
        current.piece(self._sent).addCallbacks(self._read, self._failed, (current,), errbackArgs=(current,))

    def _read(self, piece: tuple[bytes, int], shared: SharedFile) -> None:
        self._busy = False
        if self._stopped:
            return
        if shared is not self._current:  # dropped while the piece was read
            self._next()
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

    def _failed(self, failure: Any, shared: SharedFile) -> None:
        self._busy = False
        if self._stopped:
            return
        if shared is not self._current:
            self._next()
            return
        log_storage_error(self.log, failure, "could not read {path} for {who}", path=shared.where(), who=self.peer.name)
        self.drop(shared, "the server could not read the file")

    def _close(self) -> None:
        shared, self._current = self._current, None
        if shared is not None:
            shared.release(self)
