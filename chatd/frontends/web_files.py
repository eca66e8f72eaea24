"""
Files from and to the browser (docs/PROTOCOL.md, "Files in the browser").

- Upload: the web session's ``send`` command (``args: [SIZE, NAME]``) goes
  through :meth:`chatd.transfer.Transfers.offer` like a line client's
  ``/send``; the data comes as WebSocket binary messages ``ID`` + ``\\n`` +
  at most 64 KiB (:meth:`WebFiles.frame`), the end as ``{"type": "done",
  "id", "sha256"}`` (:meth:`WebFiles.control`). The same
  :class:`~chatd.transfer.Upload` spools, hashes, checks and shares it, with
  the same limits and back-pressure (the session's reading is held while its
  spool writes lag behind).
- Download: a file shared in a room comes to each browser member as
  ``{"type": "file", ..., "ticket"}``: a random secret for that session and
  that file (a :class:`Ticket`, holding the spool file until it is taken).
  The page fetches ``GET /files/ID`` with ``Authorization: Bearer TICKET``;
  :class:`FileResource` serves it as an attachment, read from the spool in
  the file thread pool and paced by the HTTP connection
  (:class:`SpoolSender`, a streaming producer). A completed response, the
  session leaving that room or ending, or the delivery deadline lets the
  ticket go.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from zope.interface import implementer

from chatd.transfer import (
    MIN_FREE_FRAME, PIECE, FileParty, SharedFile, StoredFile, Transfers, Upload, log_storage_error,
)
from chatd.wire import UPLOAD_FRAME_MAX, safe_file_name

if TYPE_CHECKING:
    from chatd.factory import Room

log = Logger()

#: Bytes an upload frame's ``ID`` and newline may take (IDs are ``f`` and digits).
FRAME_HEADER_MAX = 32
#: The largest binary message a web session takes: a frame header and UPLOAD_FRAME_MAX bytes.
BINARY_MESSAGE_MAX = FRAME_HEADER_MAX + UPLOAD_FRAME_MAX
#: Text message types about uploads (besides commands).
CONTROL_TYPES = frozenset({"done", "cancel"})
#: Upload IDs a session remembers after they ended, whose late frames and messages are dropped quietly.
RECENT_UPLOADS = 32
BAD_FRAME = (f"a binary message is an upload frame: the upload's ID, a newline, then 1 to {UPLOAD_FRAME_MAX} "
             "bytes of the file.")


class WebSession(Protocol):
    """
    What this module needs of a browser session (chatd.frontends.web.WebSession, which imports this module:
    described here so that nothing imports web.py back).
    """

    @property
    def name(self) -> str | None: ...

    @property
    def room(self) -> Room | None: ...

    def send(self, value: dict[str, Any]) -> None: ...


class WebFiles(FileParty):
    """
    A browser session's side of file transfer (``session.files``): frames
    and control messages in, JSON messages out, a :class:`Ticket` per file
    shared with it.
    """

    def __init__(self, transfers: Transfers, session: WebSession, tickets: FileTickets) -> None:
        super().__init__(transfers, session)
        self.session = session
        self.tickets = tickets
        #: Files shared with this session and not yet taken, by file ID.
        self.held: dict[str, Ticket] = {}
        self._recent: deque[str] = deque(maxlen=RECENT_UPLOADS)

    # -- in -------------------------------------------------------------------------------------

    def _split(self, data: bytes) -> tuple[str, memoryview] | None:
        """(upload ID, file bytes) of a binary message, or None when it is no upload frame."""
        newline = data.find(b"\n", 0, FRAME_HEADER_MAX)
        if newline <= 0:
            return None
        upload_id = bytes(data[:newline])
        chunk = memoryview(data)[newline + 1:]
        if not upload_id.isascii() or not upload_id.isalnum() or not 1 <= len(chunk) <= UPLOAD_FRAME_MAX:
            return None
        return upload_id.decode("ascii"), chunk

    def free_frame(self, data: bytes) -> bool:
        """Whether ``data`` is a frame of an active upload carrying a fair share of it (no flood token)."""
        parts = self._split(data)
        upload = self.uploads.get(parts[0]) if parts is not None else None
        if upload is None or parts is None:
            return False
        size = len(parts[1])
        return size >= MIN_FREE_FRAME or size >= upload.size - upload.received

    def frame(self, data: bytes) -> str:
        """A binary message: the next bytes of an upload; returns a problem for the user, or ""."""
        parts = self._split(data)
        if parts is None:
            return BAD_FRAME
        upload_id, chunk = parts
        upload = self.uploads.get(upload_id)
        if upload is not None:
            upload.data(bytes(chunk))
            return ""
        if upload_id in self._recent or upload_id in self.verifying:
            return ""  # in flight when it ended, or after its "done": dropped
        return f"no upload {upload_id} is in progress."

    def control(self, value: dict[str, Any]) -> str:
        """``{"type": "done", "id", "sha256"}`` or ``{"type": "cancel", "id"}``; returns a problem, or ""."""
        upload_id, digest = value.get("id"), value.get("sha256", "")
        if not isinstance(upload_id, str) or not isinstance(digest, str):
            return "\"id\" (and \"sha256\") are strings."
        upload = self.uploads.get(upload_id)
        if upload is None:
            known = upload_id in self._recent or upload_id in self.verifying
            return "" if known else f"no upload {upload_id[:30]} is in progress."
        if value["type"] == "done":
            upload.done(digest)
        else:
            self._recent.append(upload_id)
            upload.fail("the sender cancelled it", tell_sender=False)
            self.session.send({"type": "upload", "state": "cancelled", "id": upload_id})
        return ""

    # -- what a transfer tells the session ------------------------------------------------------

    def upload_ready(self, upload: Upload) -> None:
        self._recent.append(upload.id)
        self.session.send({"type": "upload", "state": "ready", "id": upload.id, "size": upload.size,
                           "name": upload.name})

    def upload_failed(self, upload_id: str, why: str) -> None:
        self.session.send({"type": "upload", "state": "failed", "id": None if upload_id == "-" else upload_id,
                           "text": why})

    def upload_done(self, upload: Upload, digest: str, recipients: int, elsewhere: int = 0) -> None:
        done = {"type": "upload", "state": "done", "id": upload.id, "sha256": digest, "recipients": recipients}
        if elsewhere:  # (several nodes: the room's members on the others)
            done["elsewhere"] = elsewhere
        self.session.send(done)

    def not_delivered(self, file_id: str, text: str) -> None:
        self.session.send({"type": "upload", "state": "undelivered", "id": file_id, "text": text})

    def receive(self, shared: SharedFile) -> None:
        room = self.session.room
        if room is None or shared.id in self.held:
            shared.release()
            return
        ticket = Ticket(self, shared, room, secrets.token_urlsafe(32))
        shared.holders.add(ticket)
        self.held[shared.id] = ticket
        self.tickets.issued[ticket.secret] = ticket
        self.session.send({"type": "file", "id": shared.id, "room": room.name, "name": shared.name,
                           "size": shared.size, "sha256": shared.sha256, "sender": shared.sender,
                           "ticket": ticket.secret})

    def left_room(self, room: Any) -> None:
        """Files shared in ``room`` are no longer this session's to take."""
        for ticket in [ticket for ticket in self.held.values() if ticket.room is room]:
            ticket.end()

    def connection_lost(self) -> None:
        super().connection_lost()
        for ticket in list(self.held.values()):
            ticket.end()


class Ticket:
    """
    One file shared with one browser session: the secret that fetches it,
    and the response sending it (one at a time). A holder of the shared file
    until :meth:`end`.
    """

    def __init__(self, files: WebFiles, shared: SharedFile, room: Any, secret: str) -> None:
        self.files = files
        self.shared = shared
        self.room = room
        self.secret = secret
        self.sender: SpoolSender | None = None
        self.ended = False

    def drop(self, shared: SharedFile, why: str) -> None:
        """It will not be taken (the delivery deadline passed, the spool file unreadable): both sides are told."""
        if self.ended:
            return
        self.end()
        self.files.session.send({"type": "file_gone", "id": shared.id, "text": why})
        transfers = self.files.transfers
        assert transfers is not None
        transfers.not_delivered(shared.delivery(), f"{self.files.session.name} did not get {shared.name}: {why}")

    def end(self) -> None:
        """Let the file go: the secret fetches nothing more, a response under way is cut off."""
        if self.ended:
            return
        self.ended = True
        self.files.tickets.issued.pop(self.secret, None)
        self.files.held.pop(self.shared.id, None)
        sender, self.sender = self.sender, None
        if sender is not None:
            sender.abandon()
        self.shared.release(self)

    def serve(self, request: server.Request) -> None:
        """Send the file as the body of ``request`` (its headers set); a whole response ends the ticket."""
        transfers = self.files.transfers
        assert transfers is not None
        shared = self.shared
        sender = self.sender = SpoolSender(transfers, shared.path, shared.size, request,
                                           shared.chunk if isinstance(shared, StoredFile) else None)

        def sent(_: Any) -> None:
            if self.sender is sender:
                self.sender = None
                self.end()

        def failed(failure: Failure) -> None:
            if self.sender is not sender:
                return
            self.sender = None
            if failure.check(BrowserGone):
                return  # the ticket stays for another try
            log_storage_error(log, failure, "could not read {path} for {who}", path=self.shared.where(),
                              who=self.files.session.name)
            self.drop(self.shared, "the server could not read the file")

        sender.start().addCallbacks(sent, failed)


class FileTickets:
    """The tickets of the browser sessions of one site, by secret."""

    def __init__(self) -> None:
        self.issued: dict[str, Ticket] = {}


class BrowserGone(Exception):
    """The browser's connection closed before the whole file was sent."""


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if not data:
        raise EOFError(f"the spool file ended at {offset} bytes")
    return data


@implementer(IPushProducer)
class SpoolSender:
    """
    Streams a spool file into an HTTP response: each piece (PIECE bytes) is
    read in the file thread pool, and the next only once the connection
    takes more (the request's streaming producer), so a slow browser holds
    back nothing but itself. :meth:`start` fires when the response is
    complete, or fails: BrowserGone for a browser that went away, else the
    spool's error (OSError; EOFError for a file shorter than its size).
    """

    def __init__(self, transfers: Transfers, path: str, size: int, request: server.Request,
                 chunk: Callable[[int], defer.Deferred[bytes]] | None = None) -> None:
        self.run = transfers.run
        #: Reads the piece at an offset from the store instead (a file shared on another node: StoredFile).
        self.chunk = chunk
        self.path = path
        self.size = size
        self.request = request
        self.offset = 0
        self._fd: int | None = None
        self._paused = False
        self._busy = False
        self._stopped = False
        self._done: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        self.request.notifyFinish().addErrback(self._gone)
        self.request.registerProducer(self, True)
        self._busy = True
        if self.chunk is not None:
            self._opened(-1)  # no spool file: pieces come from the store
        else:
            self.run(os.open, self.path, os.O_RDONLY).addCallbacks(self._opened, self._failed)
        return self._done

    def _opened(self, fd: int) -> None:
        self._busy = False
        self._fd = fd
        if self._stopped:
            self._close()
            return
        self._next()

    def _next(self) -> None:
        if self._paused or self._busy or self._stopped or self._fd is None:
            return
        if self.offset >= self.size:
            self._stopped = True
            self._close()
            self.request.unregisterProducer()
            self.request.finish()
            self._done.callback(None)
            return
        self._busy = True
        reading = self.chunk(self.offset) if self.chunk is not None else \
            self.run(_pread, self._fd, min(PIECE, self.size - self.offset), self.offset)
        reading.addCallbacks(self._read, self._failed)

    def _read(self, data: bytes) -> None:
        self._busy = False
        if self._stopped:
            self._close()
            return
        self.offset += len(data)
        self.request.write(data)
        self._next()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        if self._stopped:
            self._close()
            return
        self._stop()
        if not self.request.startedWriting:
            self.request.setResponseCode(500)
            self.request.setHeader(b"content-length", b"0")
            self.request.finish()
        else:
            self.request.loseConnection()
        self._done.errback(failure)

    def _gone(self, reason: Failure) -> None:
        """The browser went away before the end."""
        if not self._stopped:
            self._stop()
            self._done.errback(Failure(BrowserGone(str(reason.value))))

    def _stop(self) -> None:
        self._stopped = True
        if not self._busy:
            self._close()
        if self.request.channel is not None:
            self.request.unregisterProducer()

    def abandon(self) -> None:
        """Cut the response off (the ticket ended meanwhile)."""
        if not self._stopped:
            self._stop()
            self.request.loseConnection()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and fd >= 0:
            self.run(os.close, fd).addErrback(lambda failure: None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        """The connection is going away (the HTTP channel says so before the request does)."""
        self._gone(Failure(ConnectionDone("the connection closed")))


def content_disposition(name: str) -> bytes:
    """
    ``attachment; filename="ASCII"; filename*=UTF-8''PERCENT-ENCODED`` for a
    file name (RFC 6266, RFC 8187): the name reduced by
    ``chatd.wire.safe_file_name`` first; the ASCII fallback has no quote,
    backslash, percent sign or non-ASCII character (each an ``_``).
    """
    name = safe_file_name(name)
    fallback = "".join(c if " " <= c <= "~" and c not in "\"\\%" else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='!#$&+-.^_`|~')}".encode("ascii")


class FileResource(resource.Resource):
    """
    ``GET /files/ID`` with ``Authorization: Bearer TICKET``: the file ID
    shared with the browser session holding that ticket. 401 without a
    bearer token, 403 for a ticket that is not one (any more) or is for
    another file, 409 while the same ticket is being served, 404 for other
    paths, 405 for other methods.
    """

    isLeaf = True

    def __init__(self, tickets: FileTickets) -> None:
        super().__init__()
        self.tickets = tickets

    @staticmethod
    def _refuse(request: server.Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": text}).encode()

    def render(self, request: server.Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET")
            return self._refuse(request, 405, "only GET")
        return super().render(request)

    def render_GET(self, request: server.Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        path = request.postpath or []
        if len(path) != 1 or not path[0]:
            return self._refuse(request, 404, "no such file")
        if len(request.requestHeaders.getRawHeaders(b"authorization") or ()) > 1:
            return self._refuse(request, 400, "one Authorization header, please")
        scheme, _, secret = (request.getHeader(b"authorization") or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not secret.strip():
            request.setHeader(b"www-authenticate", b'Bearer realm="chatd"')
            return self._refuse(request, 401, "a bearer ticket is needed")
        ticket = self.tickets.issued.get(secret.strip().decode("ascii", "replace"))
        if ticket is None or ticket.shared.id.encode() != path[0]:
            return self._refuse(request, 403, "this ticket does not fetch this file (any more)")
        if ticket.sender is not None:
            return self._refuse(request, 409, "this file is being sent on another request")
        shared = ticket.shared
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-disposition", content_disposition(shared.name))
        request.setHeader(b"content-length", str(shared.size).encode())
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        ticket.serve(request)
        return server.NOT_DONE_YET

    def render_HEAD(self, request: server.Request) -> bytes:
        """Refused: a HEAD answer is complete without its body, and would let the ticket go."""
        request.setHeader(b"allow", b"GET")
        return self._refuse(request, 405, "only GET")
