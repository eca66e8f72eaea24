"""
The running server as a Twisted service: thread pools, the store, the
factory and the listening endpoints, started and stopped in order.

Start-up, all before the reactor runs (under twistd): bind the listening
ports (``privilegedStartService``, still as root under ``twistd --uid``, like
Twisted's ``StreamServerEndpointService``), then load the data directory,
then start the thread pools; connections that arrive meanwhile wait in the
listen backlog and are accepted once the reactor runs. A start that fails
raises :class:`StartError`: one line in the log and on stderr, exit status 1.
Shut-down (SIGTERM, SIGINT): stop listening, tell every connected user,
write the queued log events, stop the pools.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, globalLogPublisher
from twisted.python.logfile import BaseLogFile, LogFile
from twisted.python.threadpool import ThreadPool

from chatd.errors import failure_error
from chatd.factory import ChatFactory
from chatd.limits import raise_fd_limit
from chatd.passwords import Passwords
from chatd.protocol import ChatProtocol
from chatd.persistence import CsvStore, FormatError
from chatd.settings import Settings
from chatd.transfer import SPOOL, Transfers, TransferSettings


def _twistd_log_files() -> list[BaseLogFile]:
    """The log files twistd writes to (``--logfile``): it keeps them inside its log observers."""
    outs = (getattr(observer, "_outFile", None) for observer in list(getattr(globalLogPublisher, "_observers", ())))
    return [out for out in outs if isinstance(out, BaseLogFile)]


def reopen_log_files() -> int:
    """
    Reopen the log files twistd writes to (``--logfile``), for logrotate: it
    renames the file, then sends SIGHUP, and we start a new one under the
    old name. Returns how many files were reopened.
    """
    files = _twistd_log_files()
    for out in files:
        out.reopen()
    return len(files)


def stop_size_rotation() -> list[str]:
    """
    Stop twistd's log files from rotating by size (``LogFile`` renames
    ``chatd.log`` to ``chatd.log.1``, ``.2``, ... at every megabyte and never
    deletes them), so logrotate owns rotation; SIGUSR1 still rotates on
    demand. Returns the paths of the files changed.
    """
    changed = []
    for out in _twistd_log_files():
        if isinstance(out, LogFile) and out.rotateLength:
            out.rotateLength = None
            changed.append(out.path)
    return changed


#: Bytes of a :class:`StartError` summary. A daemonizing twistd's child reports a failed start to its
#: parent through a pipe as ``1 chatd.service.StartError: SUMMARY``, cut at 100 bytes (twistd's
#: ``_formatChildException``); the parent prints ``An error has occurred: b'...'`` with those bytes
#: but the first two. 100 - 2 - 26 = 72 bytes keep the summary whole.
SUMMARY_MAX = 72


def summarize(text: str, limit: int = SUMMARY_MAX) -> str:
    """
    ``text`` in at most ``limit`` ASCII bytes: non-ASCII characters as ``?``;
    if too long, cut at a space with ``...``, never inside a word.
    """
    text = text.encode("ascii", "replace").decode("ascii")
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" :,") + "..."


class StartError(Exception, SystemExit):
    """
    The server cannot start (a port in use, an unusable data directory).

    ``message`` is the whole line, for the log and the operator's terminal
    (``chatd could not start: REASON``); ``str()`` of the error is its
    ``summary`` (at most :data:`SUMMARY_MAX` ASCII bytes, see
    :func:`summarize`), which is all a daemonizing twistd can show. It is
    an ``Exception``, so twistd handles it like any failed start (removes
    the pid file, tells the parent of a daemonizing twistd, which prints
    the summary and exits 1), and a ``SystemExit`` with code 1, so Python
    ends the process with exit status 1 and no traceback (systemd's
    ``Restart=on-failure`` then sees a failure).
    """

    def __init__(self, message: str, summary: str = "") -> None:
        super().__init__(message)
        self.code = 1
        self.message = message
        self.summary = summarize(summary or message)

    def __str__(self) -> str:
        return self.summary


def _short_reason(error: BaseException) -> str:
    """
    The gist of an error for a :class:`StartError` summary: the socket
    error of a CannotListenError and an OSError's strerror with its file
    name, without Python's quotes and errno; anything else as :func:`_reason`.
    """
    if isinstance(error, CannotListenError):
        cause = error.socketError
        why = getattr(cause, "strerror", None) or str(cause)
        return f"{error.interface or 'any'}:{error.port}: {why}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return _reason(error)


def _reason(error: BaseException) -> str:
    """One line for an error: an OSError's (CannotListenError's, FormatError's) own text names the errno and the path."""
    text = str(error).splitlines()[0] if str(error).strip() else ""
    if isinstance(error, (OSError, CannotListenError, FormatError)) and text:
        return text
    return f"{type(error).__name__}: {text}".rstrip(": ")


class ChatService(service.Service):
    """The whole chat server: create it, hand it to twistd (or start it yourself)."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        listen: list[str],
        data_dir: str,
        settings: Settings,
        hash_threads: int = 1,
        hash_params: dict[str, int] | None = None,
        transfer_settings: TransferSettings | None = None,
    ) -> None:
        self.reactor = reactor
        self.listen = listen
        self.data_dir = data_dir
        self.settings = settings
        self._store_pool = ThreadPool(1, 1, name="chatd-store")
        self._hash_pool = ThreadPool(0, hash_threads, name="chatd-hash")
        self.store = CsvStore(
            data_dir,
            run=lambda f, *a: deferToThreadPool(reactor, self._store_pool, f, *a),
            clock=reactor,
            now=lambda: self.factory.now(),
        )
        self.passwords = Passwords(
            run=lambda f, *a: deferToThreadPool(reactor, self._hash_pool, f, *a), **(hash_params or {})
        )
        self.factory = ChatFactory(self.store, self.passwords, settings, reactor, ChatProtocol)
        self._files_pool = ThreadPool(0, 4, name="chatd-files")
        self.transfers = self.factory.transfers = Transfers(
            self.factory,
            os.path.join(data_dir, SPOOL),
            run=lambda f, *a: deferToThreadPool(reactor, self._files_pool, f, *a),
            settings=transfer_settings or TransferSettings(),
        )
        self.ports: list[Any] = []
        self._bound = False

    _previous_sighup: Any = None

    def privilegedStartService(self) -> None:
        """Bind every ``--listen`` endpoint (as root under ``twistd --uid``, so ports below 1024 work)."""
        super().privilegedStartService()
        self._bind()

    def _bind(self) -> None:
        """
        Listen on every endpoint now. Twisted's tcp, ssl and unix endpoints
        listen synchronously; one that has not answered by the time its
        ``listen`` returns is waited for, and a later failure only logged.
        Raises :class:`StartError` (after closing the ports already bound).
        """
        self._bound = True
        raise_fd_limit(self.settings.max_connections)
        for description in self.listen:
            outcome: list[Any] = []
            try:
                listening = endpoints.serverFromString(self.reactor, description).listen(self.factory)
            except Exception as error:
                outcome.append(Failure(error))
            else:
                listening.addBoth(outcome.append)
            if not outcome:
                listening.addCallback(self._listening_late).addErrback(self._failed_late, description)
            elif isinstance(outcome[0], Failure):
                self._close_ports()
                cause = failure_error(outcome[0])
                raise self._fail(f"cannot listen on {description}: {_reason(cause)}",
                                 f"cannot listen on {_short_reason(cause)}")
            else:
                self.ports.append(outcome[0])

    def startService(self) -> None:
        """Load the data directory, then start serving; raises :class:`StartError`."""
        if not self._bound:
            self._bind()
        try:
            loaded = self.store.load_now()
        except Exception as error:
            self._close_ports()
            raise self._fail(f"data directory {self.data_dir}: {_reason(error)}",
                             f"data directory: {_short_reason(error)}") from error
        super().startService()
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        for path in stop_size_rotation():
            self.log.info(
                "log file {path}: rotation by size turned off; rotate it with logrotate and SIGHUP (or SIGUSR1)",
                path=path,
            )
        self._store_pool.start()
        self._hash_pool.start()
        self._files_pool.start()
        self.factory.restore(loaded)
        self.transfers.start().addErrback(
            lambda failure: self.log.failure("could not prepare the file spool", failure)
        )
        self.store.start()
        for port in self.ports:
            self.log.info("chatd listening on {address}", address=port.getHost())

    def _fail(self, reason: str, summary: str) -> StartError:
        """
        Log ``chatd could not start: REASON`` and write it to the terminal;
        return the error to raise, with ``summary`` (the reason in short)
        for a daemonizing twistd's parent.
        """
        message = f"chatd could not start: {reason}"
        self.log.error("{message}", message=message)
        if sys.__stderr__ is not None:  # the real stderr: twistd points sys.stderr at its log
            try:
                sys.__stderr__.write(message + "\n")
                sys.__stderr__.flush()
            except (OSError, ValueError):
                pass
        return StartError(message, summary)

    def _close_ports(self) -> None:
        for port in self.ports:
            port.stopListening()
        self.ports = []

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopen_logs)

    def reopen_logs(self) -> None:
        """SIGHUP: reopen the log file (after logrotate moved it)."""
        count = reopen_log_files()
        self.log.info("SIGHUP: reopened {count} log file(s)", count=count)

    def _listening_late(self, port: Any) -> None:
        self.ports.append(port)
        self.log.info("chatd listening on {address}", address=port.getHost())

    def _failed_late(self, failure: Failure, description: str) -> None:
        self.log.error("chatd could not start: cannot listen on {description}: {reason}",
                       description=description, reason=_reason(failure_error(failure)))
        if self.reactor.running:
            self.reactor.stop()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        for port in self.ports:
            yield port.stopListening()
        if self.factory.connections:
            self.factory.shut_down("The server is shutting down. Bye.")
            # Give the goodbye lines a moment to leave the socket buffers.
            yield task.deferLater(self.reactor, 0.2, lambda: None)
        yield self.store.stop()
        self._hash_pool.stop()
        self._files_pool.stop()
        self._store_pool.stop()
        self.log.info("chatd stopped cleanly")
