"""
Faults, in memory: disk errors injected into the store (ENOSPC, EIO, read-only),
clients vanishing mid-login and mid-room. StringTransport and a Clock, no sleeps.
"""

from __future__ import annotations

import errno
import os

import pytest

from chatd import persistence
from helpers import data_rows, Client, Held, make_factory


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock, tmp_path


def _snapshot(directory):
    return {name: (directory / name).read_bytes() for name in os.listdir(directory) if name.endswith(".csv")}


class Faulty:
    """Makes os.write write a few bytes and then fail with ``code`` (or os.fsync / os.open fail), until healed."""

    def __init__(self, monkeypatch, code: int, where: str = "write") -> None:
        self.code = code
        self.where = where
        self.broken = True
        real_write, real_fsync, real_open = os.write, os.fsync, os.open

        def write(fd, data):
            if self.broken and where == "write":
                if len(data) > 3:
                    real_write(fd, bytes(data[:3]))  # a torn write first
                raise OSError(code, os.strerror(code))
            return real_write(fd, data)

        def fsync(fd):
            if self.broken and where == "fsync":
                raise OSError(code, os.strerror(code))
            return real_fsync(fd)

        def open_(path, flags, mode=0o777, **kwargs):
            if self.broken and where == "open" and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(code, os.strerror(code))
            return real_open(path, flags, mode, **kwargs)

        monkeypatch.setattr(persistence.os, "write", write)
        monkeypatch.setattr(persistence.os, "fsync", fsync)
        monkeypatch.setattr(persistence.os, "open", open_)


@pytest.mark.parametrize("code,where", [(errno.ENOSPC, "write"), (errno.EIO, "fsync"), (errno.EROFS, "open")])
def test_failed_registration_is_clear_harmless_and_recovers(world, monkeypatch, code, where):
    """
    Disk full / I/O error / read-only while registering: the user is told, the
    server keeps serving, users.csv is byte-for-byte unchanged, and the same
    registration works once the disk is healthy again.
    """
    factory, clock, data = world
    Client(factory, clock).register("existing")
    clock.advance(1)  # event log written
    before = _snapshot(data)
    fault = Faulty(monkeypatch, code, where)
    c = Client(factory, clock)
    out = c.register("newbie")
    assert "Could not save the account (server storage problem); try again later." in out
    assert "menu>" in out and not c.transport.disconnecting
    assert "newbie" not in factory.accounts and "newbie" not in factory.online
    assert _snapshot(data)["users.csv"] == before["users.csv"]
    c.send("ping")
    assert "pong" in c.output()  # still serving
    fault.broken = False
    assert "Registered and logged in as newbie." in c.register("newbie")
    rows = list(data_rows(data / "users.csv"))
    assert [row[0] for row in rows] == ["existing", "newbie"]


@pytest.mark.parametrize("code,where", [(errno.ENOSPC, "write"), (errno.EIO, "fsync"), (errno.EROFS, "open")])
def test_failed_room_changes_keep_rooms_csv(world, monkeypatch, code, where):
    """Creating and deleting a room on a failing disk: a clear error, rooms.csv unchanged, no stray file."""
    factory, clock, data = world
    owner = Client(factory, clock)
    owner.register("olga")
    owner.send("create keep", "create other")
    owner.output()
    before = (data / "rooms.csv").read_bytes()
    fault = Faulty(monkeypatch, code, where)
    owner.send("create lost")
    assert "Could not save the room" in owner.output()
    owner.send("delete keep")
    assert "Could not delete the room" in owner.output()
    assert (data / "rooms.csv").read_bytes() == before
    assert "keep" in factory.rooms and "lost" not in factory.rooms
    assert not os.path.exists(data / "rooms.csv.new")
    fault.broken = False
    owner.send("delete keep")
    assert "Room keep deleted." in owner.output()


def test_event_log_kept_while_disk_fails_and_written_after(world, monkeypatch):
    """Events that cannot be written are kept (bounded) and written once the disk recovers; logged once, not per try."""
    from twisted.logger import globalLogPublisher

    factory, clock, data = world
    errors = []
    observer = lambda event: errors.append(event) if event.get("log_level").name == "error" else None  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        fault = Faulty(monkeypatch, errno.ENOSPC)
        Client(factory, clock).send("login ghost", "nopassword")
        for _ in range(10):
            clock.advance(0.5)
        assert not os.path.exists(data / "log.csv") or b"login_failed" not in (data / "log.csv").read_bytes()
        assert len([e for e in errors if "log.csv" in e.get("log_format", "")]) == 1
        fault.broken = False
        clock.advance(0.5)
    finally:
        globalLogPublisher.removeObserver(observer)
    events = [row[1] for row in data_rows(data / "log.csv")]
    assert events.count("login_failed") == 1


def test_events_queued_are_bounded(world, monkeypatch):
    factory, clock, _ = world
    monkeypatch.setattr(persistence, "MAX_QUEUED_EVENTS", 5)
    Faulty(monkeypatch, errno.EIO)
    for i in range(20):
        factory.store.log_event("x", detail=str(i))
        clock.advance(0.5)
    assert len(factory.store._events) <= 6


# -- clients that vanish ---------------------------------------------------------------


def test_vanish_while_login_hash_pending(tmp_path):
    """A client gone while its password is being checked is not logged in afterwards and leaves no trace."""
    held = Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=held)
    first = Client(factory, clock)
    first.send("register vera", "secret1", "secret1")
    held.run_all()
    first.disconnect()
    for name, lines in (("vera", ("login vera", "secret1")), ("newer", ("register newer", "secret1", "secret1"))):
        c = Client(factory, clock)
        c.send(*lines)
        assert held.calls
        c.disconnect()
        held.run_all()
        assert name not in factory.online
        assert c.protocol not in factory.connections and c.protocol not in factory.limits.all
    assert not factory.limits.unauthenticated


def test_vanish_in_a_room_leaves_no_member(world):
    factory, clock, _ = world
    stays = Client(factory, clock)
    stays.register("stay")
    stays.send("public")
    for i in range(5):
        c = Client(factory, clock, tagged=bool(i % 2))
        c.register(f"gone{i}")
        c.send("public", "bye")
        c.disconnect()
    assert factory.rooms["public"].member_names() == ["stay"]
    assert set(factory.online) == {"stay"}
    assert len(factory.connections) == 1 and len(factory.limits.all) == 1
