"""log.csv after a crash: an acknowledged change (register, rehash, room create, room delete) and its log row are
made durable in one writer-thread job before the user is told; other events keep their half-second batch."""

from __future__ import annotations

import os

from twisted.internet import defer

from chatd.settings import Settings
from helpers import data_rows, Client, Held, make_factory

NEWER_HASH = {"time_cost": 2, "memory_kib": 16, "parallelism": 1}


def _on_disk(data_dir, name: str) -> list[list[str]]:
    """What a crash right now would leave in ``name`` (nothing more is run: no batch, no callbacks)."""
    return data_rows(os.path.join(data_dir, name))


def _held_world(tmp_path, **kwargs):
    held = Held()
    factory, clock = make_factory(str(tmp_path), store_runner=held, **kwargs)
    held.run_all()  # the load
    return factory, clock, held


def _run_next_job(held: Held) -> None:
    """Run the writer thread's next job (and its callbacks): the data write, and what it writes to log.csv."""
    function, args, d = held.calls.pop(0)
    defer.maybeDeferred(function, *args).chainDeferred(d)


def test_every_confirmed_account_has_its_register_row_after_a_crash(tmp_path):
    """36 registrations confirmed in a burst, then kill -9 before the log batch: 36 accounts, 36 register rows."""
    factory, clock, held = _held_world(tmp_path, settings=Settings(address_registrations=100))
    clients = [Client(factory, clock) for _ in range(36)]
    for number, client in enumerate(clients):
        client.output()
        client.send(f"register user{number}", "secret1", "secret1")
    assert not any("Registered" in client.output() for client in clients)  # nothing told before the write
    while held.calls:
        _run_next_job(held)
    # The crash: no batch has run (the clock has not moved), nothing else is written.
    assert all("Registered and logged in" in client.output() for client in clients)
    accounts = [row[0] for row in _on_disk(tmp_path, "users.csv")]
    registered = [row[2] for row in _on_disk(tmp_path, "log.csv") if row[1] == "register"]
    assert len(accounts) == 36 and registered == accounts
    assert all(row[1] == "register" for row in _on_disk(tmp_path, "log.csv"))
    # The other events keep their batch: the logins that followed are written with it.
    clock.advance(0.5)
    held.run_all()
    assert sum(row[1] == "login" for row in _on_disk(tmp_path, "log.csv")) == 36


def test_rooms_created_and_deleted_have_their_rows_when_the_owner_is_told(tmp_path):
    factory, clock, held = _held_world(tmp_path)
    owner = Client(factory, clock)
    owner.output()
    owner.send("register olga", "secret1", "secret1")
    held.run_all()
    owner.output()
    owner.send("create lab")
    _run_next_job(held)
    assert "Room lab created." in owner.output()
    rows = _on_disk(tmp_path, "log.csv")
    # Queued before it (the login), then the room_create row: log.csv keeps the order things happened.
    assert [row[1] for row in rows] == ["register", "login", "room_create"]
    assert rows[-1][2:4] == ["olga", "lab"]
    owner.send("delete lab")
    _run_next_job(held)
    assert "Room lab deleted." in owner.output()
    assert _on_disk(tmp_path, "rooms.csv") == []
    assert [row[1] for row in _on_disk(tmp_path, "log.csv")][-1] == "room_delete"


def test_a_rehash_has_its_row_when_the_login_is_answered(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    Client(factory, clock).register("kate")
    clock.advance(1)
    factory, clock, held = _held_world(tmp_path, hash_params=NEWER_HASH)
    c = Client(factory, clock)
    c.output()
    c.send("login kate", "secret1")
    _run_next_job(held)
    assert "Logged in as kate." in c.output()
    assert len(_on_disk(tmp_path, "users.csv")) == 2
    assert [row[1:3] for row in _on_disk(tmp_path, "log.csv")][-1] == ["rehash", "kate"]


def test_a_failed_data_write_writes_no_row_but_still_the_queued_ones(tmp_path):
    """rooms.csv cannot be written: no room_create row, the user gets the storage error, earlier rows are written."""
    factory, clock, held = _held_world(tmp_path)
    owner = Client(factory, clock)
    owner.output()
    owner.send("register olga", "secret1", "secret1")
    held.run_all()
    owner.output()
    os.mkdir(tmp_path / "rooms.csv")  # appending to it fails (IsADirectoryError)
    owner.send("create lab")
    _run_next_job(held)
    assert "Error: Could not save the room (server storage problem); try again later." in owner.output()
    assert [row[1] for row in _on_disk(tmp_path, "log.csv")] == ["register", "login"]
    assert "lab" not in factory.rooms and not held.calls
