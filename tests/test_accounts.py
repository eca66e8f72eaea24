"""Accounts (issue 13): change the password, log out without disconnecting, delete one's own account."""

from __future__ import annotations

import os

import pytest

from chatd import errors
from chatd.settings import Settings
from chatd.stores.memory import MemoryStore
from helpers import Client, Held, data_rows, make_factory
from test_frontend_events import EventSession, Structured

MENU = "11 menu>\r\n"


@pytest.fixture
def world(tmp_path):
    return make_factory(str(tmp_path))


def _client(factory, clock, name, tagged=True):
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.output()
    return c


def _events(path, event):
    return [row for row in data_rows(os.path.join(path, "log.csv")) if row[1] == event]


def test_change_password_asks_the_old_one_then_the_new_twice(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    ann = _client(factory, clock, "ann")
    ann.send("password")
    assert ann.output() == "01 Current password:\r\n"
    ann.send("secret1")
    assert ann.output() == "01 New password (at least 6 characters):\r\n"
    ann.send("better-one")
    assert ann.output() == "01 Repeat the new password:\r\n"
    ann.send("better-one")
    assert ann.output() == "00 Password changed.\r\n" + MENU
    assert [row[2] for row in _events(str(tmp_path), "password_change")] == ["ann"]
    assert "address=192.168.1.1" in _events(str(tmp_path), "password_change")[0][4]
    # After a restart (a new server on the same files) only the new password works.
    factory, clock = make_factory(str(tmp_path))
    assert "Login failed" in Client(factory, clock).login("ann", "secret1")
    assert "Logged in as ann." in Client(factory, clock).login("ann", "better-one")


def test_a_wrong_old_password_or_a_mismatch_changes_nothing(world):
    factory, clock = world
    ann = _client(factory, clock, "ann")
    ann.send("password", "wrong-one", "newpass", "newpass")
    out = ann.output()
    assert out.startswith("01 Current password:\r\n01 New password (at least 6 characters):\r\n")
    assert out.endswith("02 Error: wrong password; nothing was changed.\r\n" + MENU)
    ann.send("13", "secret1", "newpass", "newpasS")
    assert ann.output().endswith("02 Error: the passwords do not match; nothing was changed.\r\n" + MENU)
    ann.send("password", "secret1", "short")
    assert ann.output().endswith("02 Error: a password has 6 to 256 characters.\r\n" + MENU)
    assert "Logged in as ann." in Client(factory, clock).login("ann", "secret1")


def test_the_new_password_is_hashed_off_the_reactor_and_durable_before_changed(tmp_path):
    hashes, writes = Held(), Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=hashes, store_runner=writes)
    ann = Client(factory, clock, tagged=True)
    ann.send("register ann", "secret1", "secret1")
    hashes.run_all()
    writes.run_all()
    ann.output()
    ann.send("password", "secret1", "newpass", "newpass", "ping")
    assert ann.output().endswith("01 Repeat the new password:\r\n")  # checking the old one, in the pool
    hashes.run_all()  # the old password checked, the new one hashed
    hashes.run_all()
    assert ann.output() == "" and len(writes.calls) == 1  # the new hash is being written: not told yet
    writes.run_all()
    assert ann.output() == "00 Password changed.\r\n" + MENU + "00 pong\r\n" + MENU  # input held until then


def test_a_password_that_cannot_be_stored_is_not_changed(tmp_path):
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    ann = _client(factory, clock, "ann")
    store.broken = "disk full"
    ann.send("password", "secret1", "newpass", "newpass")
    assert ann.output().endswith(
        "02 Error: Could not save the new password (server storage problem); try again later.\r\n" + MENU)
    store.broken = None
    assert "Logged in as ann." in Client(factory, clock).login("ann", "secret1")


def test_password_and_deleteme_are_menu_commands(world):
    factory, clock = world
    ann = _client(factory, clock, "ann")
    ann.send("public")
    ann.output()
    ann.send("/password", "/deleteme")
    assert ann.output() == ("02 Error: unknown command /password. Type /help for the list.\r\n"
                            "02 Error: unknown command /deleteme. Type /help for the list.\r\n")
    nobody = Client(factory, clock, tagged=True)
    nobody.output()
    nobody.send("password")
    assert nobody.output() == ("02 Error: please log in first (login) or create an account (register).\r\n"
                               + MENU)


def test_logout_in_a_room_leaves_it_and_the_online_list_and_keeps_the_connection(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    ann = _client(factory, clock, "ann")
    bob = _client(factory, clock, "bob")
    ann.send("public")
    bob.send("public", "/away lunch")
    ann.output()
    bob.output()
    bob.send("/logout")
    out = bob.output()
    assert out.startswith("00 Logged out.\r\n00 Main menu (type a number or a keyword):\r\n")
    assert out.endswith(MENU) and out.count("menu>") == 1
    assert ann.output().endswith("* bob left public\r\n")
    ann.send("/users")
    assert ann.output() == "111 Online (1): ann (in public)\r\n"
    bob.send("public")
    assert bob.output() == ("02 Error: please log in first (login) or create an account (register).\r\n" + MENU)
    assert "00 Logged in as bob." in bob.login("bob")
    bob.send("users")
    assert bob.output() == "00 Online (2): ann (in public), bob\r\n" + MENU  # no longer away
    factory.store.flush_events()
    assert [(row[2], row[3]) for row in _events(str(tmp_path), "logout")] == [("bob", "public")]


def test_logout_at_the_menu_prompts_once_and_the_login_timeout_applies_again(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(login_timeout=60))
    ann = _client(factory, clock, "ann", tagged=False)
    clock.advance(100)  # logged in: no timeout
    ann.send("14")
    out = ann.output()
    assert out.startswith("Logged out.\r\nMain menu") and out.endswith("menu> ") and out.count("menu>") == 1
    assert factory.online == {}
    clock.advance(61)
    assert "you did not log in within 60 seconds; goodbye." in ann.output()


def test_deleteme_deletes_the_rooms_then_the_account(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    ann = _client(factory, clock, "ann")
    bob = _client(factory, clock, "bob")
    ann.send("create lab", "create Attic")
    bob.send("create bobs", "join lab")
    ann.output()
    bob.output()
    ann.send("deleteme")
    assert ann.output() == "01 Your password, to delete your account and every room you own:\r\n"
    ann.send("secret1")
    out = ann.output()
    assert out.startswith("00 Account ann deleted.\r\n00 Main menu (type a number or a keyword):\r\n")
    assert out.endswith(MENU)
    assert bob.output() == "00 Room lab was deleted by ann; type /exit to go back to the main menu.\r\n"
    assert [row[0] for row in data_rows(tmp_path / "users.csv")] == ["bob"]
    assert [row[0] for row in data_rows(tmp_path / "rooms.csv")] == ["bobs"]
    factory.store.flush_events()
    rows = [(row[1], row[2], row[3]) for row in data_rows(tmp_path / "log.csv")]
    assert rows.index(("room_delete", "ann", "Attic")) < rows.index(("room_delete", "ann", "lab")) \
        < rows.index(("account_delete", "ann", "")) < rows.index(("logout", "ann", ""))
    assert factory.online.keys() == {"bob"}
    assert "Login failed" in Client(factory, clock).login("ann")
    # The name is free again, and owns nothing; after a restart too.
    factory, clock = make_factory(str(tmp_path))
    assert "Registered and logged in as ann." in Client(factory, clock).register("ann", "another1")
    assert [room.owner for room in factory.rooms.values() if room.owner] == ["bob"]


def test_deleteme_with_a_wrong_password_deletes_nothing(world):
    factory, clock = world
    ann = _client(factory, clock, "ann")
    ann.send("create lab")
    ann.send("15", "wrong-one")
    assert ann.output().endswith("02 Error: wrong password; nothing was changed.\r\n" + MENU)
    assert "ann" in factory.accounts and "lab" in factory.rooms and "ann" in factory.online


def test_an_account_that_cannot_be_deleted_stays(tmp_path):
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    ann = _client(factory, clock, "ann")
    store.broken = "disk full"
    ann.send("deleteme", "secret1")
    assert ann.output().endswith(
        "02 Error: Could not delete the account (server storage problem); try again later.\r\n" + MENU)
    store.broken = None
    assert "ann" in store.users and "ann" in factory.online


def test_a_login_during_the_deletion_is_closed_when_it_is_done(tmp_path):
    writes = Held()
    factory, clock = make_factory(str(tmp_path), store_runner=writes)
    ann = Client(factory, clock, tagged=True)
    ann.send("register ann", "secret1", "secret1")
    writes.run_all()
    ann.send("deleteme", "secret1")
    assert len(writes.calls) == 1  # users.csv being rewritten
    again = Client(factory, clock, tagged=True)
    assert "Logged in as ann." in again.login("ann")  # (the deleting session is replaced, its deletion goes on)
    writes.run_all()
    assert "02 Your account was deleted.\r\n" in again.output()
    assert factory.online == {} and "ann" not in factory.accounts


def test_the_structured_front_end_changes_the_password_logs_out_and_deletes(world):
    factory, clock = world
    ann = EventSession(factory, Structured())
    ann.run("register", "ann", "secret1")
    ann.run("password", "secret1", "newpass")
    with pytest.raises(errors.LoginFailed, match="wrong password"):
        ann.run("password", "secret1", "newpass")
    ann.run("public")
    ann.run("logout")
    assert ann.name is None and ann.room is None and factory.online == {}
    ann.run("login", "ann", "newpass")
    ann.run("deleteme", "newpass")
    assert ann.replies[-2:] == ["Logged out.", "Account ann deleted."] and ann.name is None
    assert "ann" not in factory.accounts


def _two_changes_at_once(tmp_path, password_first: bool):
    """A password change and a deletion of one account in flight together, their steps interleaved by hand."""
    from helpers import Held, data_rows
    hashes, writes = Held(), Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=hashes, store_runner=writes)
    writes.run_all()
    ann = Client(factory, clock)
    ann.output()
    ann.send("register ann", "secret1", "secret1")
    hashes.run_all()
    writes.run_all()
    session = ann.protocol
    results: dict[str, object] = {}
    changed = factory.change_password(session, "secret1", "newpass1")
    changed.addBoth(lambda result: results.__setitem__("password", result))
    if password_first:
        hashes.run_all()  # both hashes: the new one is written before the deletion is asked for
    deleted = factory.delete_account(session, "secret1")
    deleted.addBoth(lambda result: results.__setitem__("deleteme", result))
    for _ in range(4):
        hashes.run_all()
        writes.run_all()
    rows = [row for row in data_rows(tmp_path / "users.csv") if row[0] == "ann"]
    return factory, results, rows


@pytest.mark.parametrize("password_first", [True, False])
def test_a_password_change_racing_a_deletion_never_brings_the_account_back(tmp_path, password_first):
    """Attacker: deleteme and password on one account at once left two users.csv rows and a live account."""
    from twisted.python.failure import Failure
    factory, results, rows = _two_changes_at_once(tmp_path, password_first)
    assert rows == [] and "ann" not in factory.accounts
    assert results["deleteme"] == "ann"
    if not password_first:
        assert isinstance(results["password"], Failure)
        assert str(results["password"].value) == "this account was deleted; nothing was changed."
    reloaded, _ = make_factory(str(tmp_path))
    assert "ann" not in reloaded.accounts


def test_a_login_checked_against_a_hash_replaced_meanwhile_fails(tmp_path):
    """Attacker: a login with the old password racing an admin's /resetpw went through and chose the new one."""
    from helpers import Held
    import attrs
    hashes = Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=hashes)
    ann = Client(factory, clock)
    ann.output()
    ann.send("register ann", "secret1", "secret1")
    hashes.run_all()
    ann.output()
    thief = Client(factory, clock)
    thief.output()
    thief.send("login ann", "secret1")  # its check is queued in the hash pool...
    record = factory.accounts["ann"]
    factory.accounts["ann"] = attrs.evolve(record, password_hash=record.password_hash + "x")  # ...a reset lands
    hashes.run_all()
    assert "Login failed: unknown name or wrong password." in thief.output()
