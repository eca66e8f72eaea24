"""
The running server as a Twisted service: thread pools, the store, the
factory and the listening endpoints, started and stopped in order.

Start-up: start the thread pools, load the data directory (in the writer
thread), then listen. Shut-down (SIGTERM, SIGINT): stop listening, tell
every connected user, write the queued log events, stop the pools.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger, globalLogPublisher
from twisted.python.logfile import BaseLogFile, LogFile
from twisted.python.threadpool import ThreadPool

from chatd.factory import ChatFactory
from chatd.limits import raise_fd_limit
from chatd.passwords import Passwords
from chatd.protocol import ChatProtocol
from chatd.persistence import CsvStore
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
        self.factory.transfers = Transfers(
            self.factory,
            os.path.join(data_dir, SPOOL),
            run=lambda f, *a: deferToThreadPool(reactor, self._files_pool, f, *a),
            settings=transfer_settings or TransferSettings(),
        )
        self.ports: list[Any] = []
        #: Fires once the server listens on every endpoint (for embedding and tests).
        self.ready: defer.Deferred[list[Any]] = defer.Deferred()

    _previous_sighup: Any = None

    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        for path in stop_size_rotation():
            self.log.info(
                "log file {path}: rotation by size turned off; rotate it with logrotate and SIGHUP (or SIGUSR1)",
                path=path,
            )
        raise_fd_limit(self.settings.max_connections)
        self._store_pool.start()
        self._hash_pool.start()
        self._files_pool.start()
        d = self.store.load()
        d.addCallback(self._loaded)
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    def _loaded(self, loaded: Any) -> defer.Deferred[list[Any]]:
        self.factory.restore(loaded)
        self.factory.transfers.start().addErrback(
            lambda failure: self.log.failure("could not prepare the file spool", failure)
        )
        self.store.start()
        listening = [
            endpoints.serverFromString(self.reactor, description).listen(self.factory)
            for description in self.listen
        ]
        return defer.gatherResults(listening, consumeErrors=True).addCallback(self._listening)

    def _sighup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.reopen_logs)

    def reopen_logs(self) -> None:
        """SIGHUP: reopen the log file (after logrotate moved it)."""
        count = reopen_log_files()
        self.log.info("SIGHUP: reopened {count} log file(s)", count=count)

    def _listening(self, ports: list[Any]) -> list[Any]:
        self.ports = ports
        for port in ports:
            self.log.info("chatd listening on {address}", address=port.getHost())
        return ports

    def _failed_to_start(self, failure: Any) -> None:
        self.log.failure("chatd could not start", failure)
        self.ready.errback(failure)
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
