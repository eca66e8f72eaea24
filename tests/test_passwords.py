"""
Passwords: what was typed is what is compared (issue 11, kind 9). Not UTF-8 or
over the limit: refused at registration and login; rehashed on login when the
argon2 parameters changed, durably; the dummy hash for unknown names has the
stored hashes' parameters.
"""

from __future__ import annotations


import argon2
import pytest
from twisted.internet import defer

from chatd.persistence import StoreError
from chatd.text import PASSWORD_MAX

from helpers import data_rows, CHEAP_HASH, Client, make_factory

#: Cheap too, but different from CHEAP_HASH (as after --hash-time-cost/--hash-memory-kib change).
NEWER_HASH = {"time_cost": 2, "memory_kib": 16, "parallelism": 1}
NOT_UTF8 = b"p\xe4ssw\xf6rd"  # "passwörd" in Latin-1
OTHER_NOT_UTF8 = b"p\xe5ssw\xf7rd"  # other invalid bytes of the same shape
UTF8_ERROR = "Error: a password must be valid UTF-8 text"
LENGTH_ERROR = "Error: a password has 6 to 256 characters."


def _fresh(factory, clock) -> Client:
    client = Client(factory, clock)
    client.output()
    return client


def _rows(path):
    return list(data_rows(path / "users.csv"))


def test_register_refuses_a_password_that_is_not_utf8(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    c = _fresh(factory, clock)
    c.send(b"register kate\r\n", NOT_UTF8 + b"\r\n")
    out = c.output()
    assert UTF8_ERROR in out and out.endswith("menu> ")
    c.send(NOT_UTF8 + b"\r\n")  # not taken as the repeated password: we are back in the menu
    assert "unknown choice" in c.output()
    assert "kate" not in factory.accounts
    assert not (tmp_path / "users.csv").exists()


def test_login_refuses_a_password_that_is_not_utf8(tmp_path):
    """An account stored by the old server for NOT_UTF8 (as U+FFFD) does not open for other invalid bytes."""
    legacy = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("p\ufffdssw\ufffdrd")
    (tmp_path / "users.csv").write_text(f'kate,"{legacy}",2026-01-01T00:00:00Z\n')
    factory, clock = make_factory(str(tmp_path))
    for attempt in (OTHER_NOT_UTF8, NOT_UTF8):
        c = _fresh(factory, clock)
        c.send(b"login kate\r\n", attempt + b"\r\n")
        out = c.output()
        assert UTF8_ERROR in out and "Logged in" not in out
        assert c.protocol.name is None


def test_login_refuses_a_password_over_the_limit(tmp_path):
    """A 256-character password plus X is refused, not cut to the registered password."""
    factory, clock = make_factory(str(tmp_path))
    password = "a" * PASSWORD_MAX
    assert "Registered and logged in as kate." in _fresh(factory, clock).register("kate", password)
    c = _fresh(factory, clock)
    out = c.login("kate", password + "X")
    assert LENGTH_ERROR in out and "Logged in" not in out
    assert "Logged in as kate." in c.login("kate", password)


def test_a_password_is_compared_as_typed(tmp_path):
    """Spaces at either end count; control characters are refused, not dropped."""
    factory, clock = make_factory(str(tmp_path))
    _fresh(factory, clock).register("kate", " secret1 ")
    c = _fresh(factory, clock)
    assert "Login failed" in c.login("kate", "secret1")
    clock.advance(60)
    assert "Logged in as kate." in c.login("kate", " secret1 ")
    c = _fresh(factory, clock)
    out = c.register("bob", "secr\tet1")
    assert "Error: a password cannot contain control characters" in out
    assert "bob" not in factory.accounts


def test_login_rehashes_with_new_parameters_durably(tmp_path):
    """After the parameters change, a login stores a new hash (a newer users.csv line); a restart keeps it."""
    factory, clock = make_factory(str(tmp_path))
    _fresh(factory, clock).register("kate")
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    assert "Logged in as kate." in _fresh(factory, clock).login("kate")
    rows = _rows(tmp_path)
    assert [row[0] for row in rows] == ["kate", "kate"]
    assert rows[1][2] == rows[0][2]  # same creation time
    old, new = (argon2.extract_parameters(row[1]) for row in rows)
    assert (old.time_cost, old.memory_cost) == (1, 8)
    assert (new.time_cost, new.memory_cost) == (2, 16)
    # A restart loads the newer line; logging in again needs no rehash.
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    assert not factory.passwords.needs_rehash(_rows(tmp_path)[-1][1])
    assert "Logged in as kate." in _fresh(factory, clock).login("kate")
    assert len(_rows(tmp_path)) == 2


@pytest.mark.parametrize("torn", [True, False])
def test_kill_during_rehash_leaves_old_or_new_hash(tmp_path, torn):
    """A crash while the new line is appended: a torn line is dropped at start (old hash), a whole one counts."""
    factory, clock = make_factory(str(tmp_path))
    _fresh(factory, clock).register("kate")
    before = (tmp_path / "users.csv").read_bytes()
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    _fresh(factory, clock).login("kate")
    after = (tmp_path / "users.csv").read_bytes()
    (tmp_path / "users.csv").write_bytes(after[: len(before) + 40] if torn else after)
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    stored = argon2.extract_parameters(factory.accounts["kate"].password_hash)
    assert stored.time_cost == (1 if torn else 2)
    assert "Logged in as kate." in _fresh(factory, clock).login("kate")


def test_rehash_that_cannot_be_stored_still_logs_in(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    _fresh(factory, clock).register("kate")
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    factory.store.replace_password = lambda record, event=None: defer.fail(StoreError("disk full"))
    assert "Logged in as kate." in _fresh(factory, clock).login("kate")
    assert argon2.extract_parameters(factory.accounts["kate"].password_hash).time_cost == 1


def _dummy(factory) -> tuple[int, int]:
    parameters = factory.passwords.dummy_parameters()
    return parameters.time_cost, parameters.memory_cost


def test_dummy_hash_has_the_stored_parameters(tmp_path):
    """Unknown names are checked against a dummy with the parameters most stored hashes have."""
    factory, clock = make_factory(str(tmp_path))
    assert _dummy(factory) == (1, 8)  # nothing stored: the current parameters
    _fresh(factory, clock).register("kate")
    _fresh(factory, clock).register("bob")
    factory, clock = make_factory(str(tmp_path), hash_params=NEWER_HASH)
    assert _dummy(factory) == (1, 8)  # both stored hashes are old, whatever new hashes get
    assert "Login failed" in _fresh(factory, clock).login("nobody")
    [dummy] = factory.passwords._dummies.values()  # the hash that was actually checked
    assert (argon2.extract_parameters(dummy).time_cost, argon2.extract_parameters(dummy).memory_cost) == (1, 8)
    _fresh(factory, clock).login("kate")  # rehashed: one old, one new: a tie goes to the current
    assert _dummy(factory) == (2, 16)
    _fresh(factory, clock).register("carol")
    _fresh(factory, clock).login("bob")
    assert _dummy(factory) == (2, 16)
    factory, clock = make_factory(str(tmp_path), hash_params=CHEAP_HASH)  # back to the old settings
    assert _dummy(factory) == (2, 16)  # now the stored majority


def test_client_hello_at_a_password_prompt_is_the_password(tmp_path):
    """Every answer to a password prompt is the password, even one that looks like /client."""
    factory, clock = make_factory(str(tmp_path))
    c = _fresh(factory, clock)
    assert "Registered and logged in as kate." in c.register("kate", "/client x 1")
    assert not c.protocol.tagged
    assert "Logged in as kate." in _fresh(factory, clock).login("kate", "/client x 1")


def test_after_stop_queued_hashes_are_not_computed_and_fail_with_shutting_down(monkeypatch):
    """Attacker: 150 queued registrations held a SIGTERM for 12 s and created accounts after "Bye"."""
    from chatd import errors
    from chatd.passwords import Passwords
    from helpers import CHEAP_HASH, Held

    import argon2

    held = Held()
    passwords = Passwords(run=held, **CHEAP_HASH)
    computed = []
    monkeypatch.setattr(argon2.PasswordHasher, "hash", lambda self, password: computed.append(password))
    monkeypatch.setattr(argon2.PasswordHasher, "verify", lambda self, stored, password: computed.append(password))
    results = []
    for d in (passwords.hash("secret1"), passwords.verify(None, "secret2"), passwords.hash("secret3")):
        d.addBoth(results.append)
    passwords.stop()
    held.run_all()
    assert computed == []
    assert [type(getattr(result, "value", result)) for result in results] == [errors.ShuttingDown] * 3


def test_a_registration_waiting_for_its_hash_at_shutdown_creates_no_account(tmp_path):
    from helpers import Client, Held, data_rows, make_factory

    held = Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=held)
    c = Client(factory, clock)
    c.send("register late", "secret1", "secret1")
    assert held.calls
    factory.passwords.stop()
    factory.shut_down("The server is shutting down. Bye.")
    held.run_all()
    assert "late" not in factory.accounts
    assert data_rows(tmp_path / "users.csv") == []
