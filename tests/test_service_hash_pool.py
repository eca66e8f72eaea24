"""--hash-threads really bounds how many passwords are hashed at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from twisted.internet.task import Clock

from chatd import passwords
from chatd.service import ChatService
from chatd.settings import Settings

CALLS = 6


class ThreadedClock(Clock):
    """A Clock that keeps what pool threads hand back (callFromThread) instead of running it."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        self.from_threads.append((f, args, kwargs))

    def deliver(self) -> None:
        while self.from_threads:
            f, args, kwargs = self.from_threads.pop(0)
            f(*args, **kwargs)


class Gate:
    """Holds every hashing call until opened; records how many were inside at once."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.active = self.peak = self.done = 0
        self.open = False

    def pass_through(self) -> None:
        with self.condition:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.open, timeout=10)
            self.active -= 1
            self.done += 1
            self.condition.notify_all()


class GatedHasher:
    """Stands in for argon2.PasswordHasher: each hash and verify passes the gate."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def hash(self, password: str) -> str:
        self.gate.pass_through()
        return "$fake$" + password

    def verify(self, password_hash: str, password: str) -> bool:
        self.gate.pass_through()
        return password_hash == "$fake$" + password


@pytest.mark.parametrize("hash_threads", [1, 3])
def test_hash_pool_is_bounded_by_hash_threads(tmp_path, monkeypatch, hash_threads):
    gate = Gate()
    monkeypatch.setattr(passwords.argon2, "PasswordHasher", lambda **kwargs: GatedHasher(gate))
    reactor = ThreadedClock()
    service = ChatService(reactor, [], str(tmp_path / "data"), Settings(), hash_threads=hash_threads)
    service.startService()
    try:
        results = [service.passwords.hash(f"pw{i}") for i in range(CALLS - 2)]
        results += [service.passwords.verify("$fake$pw", "pw"), service.passwords.verify("$fake$pw", "nope")]
        with gate.condition:
            assert gate.condition.wait_for(lambda: gate.active == hash_threads, timeout=10)
        time.sleep(0.3)  # time for any further thread to enter, were the pool not bounded
        with gate.condition:
            assert gate.active == hash_threads
            gate.open = True
            gate.condition.notify_all()
            assert gate.condition.wait_for(lambda: gate.done == CALLS, timeout=10)
        assert gate.peak == hash_threads
        reactor.deliver()
        answers: list[Any] = []
        for d in results:
            d.addBoth(answers.append)
        assert answers == [f"$fake$pw{i}" for i in range(CALLS - 2)] + [True, False]
    finally:
        with gate.condition:
            gate.open = True
            gate.condition.notify_all()
        service.stopService()
