"""
The running server as a Twisted service: thread pools, the store, the
factory and the listening endpoints, started and stopped in order.

Start-up: start the thread pools, load the data directory (in the writer
thread), then listen. Shut-down (SIGTERM, SIGINT): stop listening, tell
every connected user, write the queued log events, stop the pools.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints, task
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from chatd.factory import ChatFactory
from chatd.passwords import Passwords
from chatd.persistence import CsvStore
from chatd.settings import Settings


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
        self.factory = ChatFactory(self.store, self.passwords, settings, reactor)
        self.ports: list[Any] = []
        #: Fires once the server listens on every endpoint (for embedding and tests).
        self.ready: defer.Deferred[list[Any]] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        self._store_pool.start()
        self._hash_pool.start()
        d = self.store.load()
        d.addCallback(self._loaded)
        d.addCallbacks(self.ready.callback, self._failed_to_start)

    def _loaded(self, loaded: Any) -> defer.Deferred[list[Any]]:
        self.factory.restore(loaded)
        self.store.start()
        listening = [
            endpoints.serverFromString(self.reactor, description).listen(self.factory)
            for description in self.listen
        ]
        return defer.gatherResults(listening, consumeErrors=True).addCallback(self._listening)

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
        for port in self.ports:
            yield port.stopListening()
        if self.factory.connections:
            self.factory.shut_down("The server is shutting down. Bye.")
            # Give the goodbye lines a moment to leave the socket buffers.
            yield task.deferLater(self.reactor, 0.2, lambda: None)
        yield self.store.stop()
        self._hash_pool.stop()
        self._store_pool.stop()
        self.log.info("chatd stopped cleanly")
