"""Building blocks for unit tests: a factory on a temp dir with a fake clock, and fake connections."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatd.buses.local import LocalBus
from chatd.factory import ChatFactory
from chatd.passwords import Passwords
from chatd.persistence import CsvStore
from chatd.protocol import ChatProtocol
from chatd.settings import Settings
from chatd.store import Store


def run_now(function: Any, *args: Any) -> defer.Deferred[Any]:
    """A synchronous stand-in for a thread pool."""
    return defer.maybeDeferred(function, *args)


class Held:
    """A runner that keeps each call until the test releases it (to interleave work)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], defer.Deferred[Any]]] = []

    def __call__(self, function: Any, *args: Any) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((function, args, d))
        return d

    def run_all(self) -> None:
        while self.calls:
            function, args, d = self.calls.pop(0)
            defer.maybeDeferred(function, *args).chainDeferred(d)


#: Cheap argon2 parameters for tests (the defaults cost ~50 ms a hash).
CHEAP_HASH = {"time_cost": 1, "memory_kib": 8, "parallelism": 1}


def make_factory(data_dir: str, settings: Settings | None = None, hash_runner: Any = run_now,
                 store_runner: Any = run_now, hash_params: dict[str, int] | None = None,
                 store: Store | None = None) -> tuple[ChatFactory, Clock]:
    """
    A loaded factory on ``data_dir`` (a CsvStore; or on ``store``) with
    (cheap, unless given) argon2 parameters and a Clock.
    """
    clock = Clock()
    clock.advance(1_790_000_000)
    if store is None:
        store = CsvStore(data_dir, run=store_runner, clock=clock, now=lambda: factory.now())
    passwords = Passwords(run=hash_runner, **(hash_params or CHEAP_HASH))
    factory = ChatFactory(store, passwords, settings or Settings(), clock, ChatProtocol, bus=LocalBus())
    store.load().addCallback(factory.restore)
    store.start()
    return factory, clock


class Client:
    """One fake connection: a protocol on a StringTransport."""

    def __init__(self, factory: ChatFactory, clock: Clock, tagged: bool = False, peer: Any = None,
                 transport: Any = None) -> None:
        self.factory = factory
        self.clock = clock
        self.protocol = factory.buildProtocol(None)
        # peer None: IPv4 192.168.1.1 port 54321
        self.transport = StringTransport(peerAddress=peer) if transport is None else transport
        self.protocol.makeConnection(self.transport)
        if tagged:
            self.send("/client test 1.0")

    def send(self, *lines: str | bytes) -> None:
        for line in lines:
            data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
            self.protocol.dataReceived(data)
        self.clock.advance(0)

    def output(self) -> str:
        """Everything received since the last call, decoded."""
        self.clock.advance(0)
        data = self.transport.value()
        self.transport.clear()
        return data.decode("utf-8", "replace")

    def register(self, name: str, password: str = "secret1") -> str:
        self.send(f"register {name}", password, password)
        return self.output()

    def login(self, name: str, password: str = "secret1") -> str:
        self.send(f"login {name}", password)
        return self.output()

    def disconnect(self) -> None:
        self.transport.loseConnection()
        self.protocol.connectionLost(None)


def counted_room_ids(monkeypatch: Any) -> None:
    """Make the CSV store give rooms without an id the ids ``r1``, ``r2``, ... (instead of random ones)."""
    import itertools

    from chatd import persistence
    count = itertools.count(1)
    monkeypatch.setattr(persistence, "new_room_id", lambda taken=(): f"r{next(count)}")


def data_rows(path: Any) -> list[list[str]]:
    """The data rows of a chatd CSV file (its ``#chatd-...`` header row left out); [] if it is missing."""
    import csv
    import os
    if not os.path.exists(path):
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[1:] if rows and rows[0] and rows[0][0].startswith("#chatd-") else rows


def fired(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that has already fired (raises its failure's exception; AssertionError if pending)."""
    from twisted.python.failure import Failure
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, f"{d!r} has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
