"""
chatd-admin (chatd.admin_tool) on a stopped server's data directory: each
subcommand, what the server then loads (the same files, through the same
store), its refusals and exit statuses; and the data directory's lock
(chatd.datadir): the tool holding it stops a server's start. The real
daemon's side (the tool refused while it runs, a second server refused):
tests/test_admin_daemon.py.
"""

from __future__ import annotations

import io
import os
import re

import pytest
from twisted.internet import reactor
from twisted.internet.address import IPv4Address

from chatd.admin_tool import main
from chatd.datadir import LOCK_FILE, DataDirInUse, lock_data_dir, unlock_data_dir
from chatd.service import StartError, StoreService
from chatd.settings import Settings
from helpers import Client, Held, data_rows, make_factory

#: A client on the server's own machine (only there may an --admin name be registered).
LOCAL = IPv4Address("TCP", "127.0.0.1", 40000)


def run(data_dir, *argv):
    """(exit status, stdout, stderr) of ``chatd-admin --data-dir DATA_DIR ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    status = main(["--data-dir", str(data_dir), *argv], out, err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def data(tmp_path):
    """A data directory with the accounts ann and bob (bob owns the room lab), written by a server that stopped."""
    factory, clock = make_factory(str(tmp_path))
    Client(factory, clock).register("ann")
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("create lab")
    factory.store.stop()
    return tmp_path


def server(data_dir):
    """A fresh server state loaded from ``data_dir``, and its clock."""
    return make_factory(str(data_dir))


def events(data_dir, name):
    return [row for row in data_rows(os.path.join(data_dir, "log.csv")) if row[1] == name]


def test_list_users(data):
    status, out, err = run(data, "lock", "bob", "spam")
    assert status == 0
    run(data, "make-admin", "ann")
    status, out, err = run(data, "list-users")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "name\tcreated\tflags"
    assert re.fullmatch(r"ann\t\S+Z\tadmin", lines[1]) and re.fullmatch(r"bob\t\S+Z\tlocked \(spam\)", lines[2])


def test_lock_and_unlock_are_what_the_server_loads(data):
    assert run(data, "lock", "BOB", "spam", "from", "a", "script")[:2] == (0, "Account bob locked.\n")
    factory, clock = server(data)
    assert "Error: this account is locked: spam from a script" in Client(factory, clock).login("bob")
    factory.store.stop()
    (row,) = events(data, "lock")
    assert row[2] == "" and "target=bob&reason=spam%20from%20a%20script&via=chatd-admin&os_user=" in row[4]
    assert run(data, "unlock", "bob")[:2] == (0, "Account bob unlocked.\n")
    factory, clock = server(data)
    assert "Logged in as bob." in Client(factory, clock).login("bob")
    assert run(data, "unlock", "bob") == (1, "", "chatd-admin: bob is not locked.\n")


def test_reset_password_prints_a_one_time_password_the_server_takes_once(data):
    status, out, _ = run(data, "reset-password", "bob")
    assert status == 0
    password = re.match(r"One-time password for bob: ([a-z0-9]{12})\n", out).group(1)
    factory, clock = server(data)
    assert "Login failed" in Client(factory, clock).login("bob", "secret1")
    text = Client(factory, clock).login("bob", password)
    assert "Logged in as bob." in text and "Choose a new password" in text
    assert "used already" in Client(factory, clock).login("bob", password)
    factory.store.stop()
    assert [row[4].split("&")[0] for row in events(data, "password_reset")] == ["target=bob"]


def test_delete_user_deletes_the_rooms_it_owns(data):
    status, out, _ = run(data, "delete-user", "bob")
    assert (status, out) == (0, "Room lab deleted.\nAccount bob deleted.\n")
    factory, clock = server(data)
    assert "bob" not in factory.accounts and "lab" not in factory.rooms and "ann" in factory.accounts
    assert [(row[2], row[3]) for row in events(data, "room_delete")] == [("", "lab")]
    assert "target=bob" in events(data, "account_delete")[0][4]


def test_make_admin_and_remove_admin(data):
    assert run(data, "make-admin", "ann")[:2] == (0, "ann is now an admin (from the server's next start).\n")
    assert run(data, "make-admin", "ann")[0] == 1
    factory, clock = server(data)
    assert factory.is_admin("ann") and not factory.is_admin("bob")
    factory.store.stop()
    assert run(data, "remove-admin", "ann")[0] == 0
    factory, clock = server(data)
    assert not factory.is_admin("ann")
    assert run(data, "remove-admin", "ann")[0] == 1
    assert [row[1] for row in data_rows(os.path.join(data, "log.csv")) if "admin" in row[1]] == [
        "make_admin", "remove_admin"]


def test_refusals(data, tmp_path):
    assert run(data, "lock", "carol") == (1, "", "chatd-admin: there is no user called carol.\n")
    assert run(data, "lock", "bob", "x" * 201)[2] == "chatd-admin: a reason is clean text of at most 200 characters.\n"
    missing = tmp_path / "nothing-here"
    assert run(missing, "list-users") == (1, "", f"chatd-admin: no data directory at {missing} (--data-dir)\n")
    assert not missing.exists()
    with pytest.raises(SystemExit) as exit:
        run(data, "frobnicate")
    assert exit.value.code == 2


def test_the_tool_refuses_while_another_process_holds_the_lock(data):
    held = lock_data_dir(str(data), "chatd")
    try:
        status, out, err = run(data, "lock", "bob")
        assert (status, out) == (2, "")
        assert err == (f"chatd-admin: chatd is running on this data directory (pid {os.getpid()}); "
                       "stop it first or use the in-chat admin commands\n")
    finally:
        unlock_data_dir(held)
    assert "locked" not in run(data, "list-users")[1]  # nothing was changed
    assert run(data, "lock", "bob")[0] == 0  # and once it is free


def test_a_server_does_not_start_while_the_tool_holds_the_lock(data):
    held = lock_data_dir(str(data), "chatd-admin")
    try:
        with pytest.raises(StartError) as error:
            StoreService(reactor, str(data), now=lambda: "").startService()
        assert error.value.message.endswith(f": chatd-admin is running on this data directory (pid {os.getpid()})")
        with pytest.raises(DataDirInUse):
            lock_data_dir(str(data), "chatd")
    finally:
        unlock_data_dir(held)
    assert open(data / LOCK_FILE).read() == f"{os.getpid()} chatd-admin\n"
    lock_data_dir(str(data), "chatd").close()  # free again (and closing the file lets it go)
    unlock_data_dir(lock_data_dir(str(data), "chatd"))


def test_an_address_ban_and_a_lock_made_in_chat_are_in_the_files_the_tool_and_the_next_start_read(tmp_path):
    """The CSV store keeps what the in-chat commands store: a ban server-wide (room_values.csv), a lock (marks.csv)."""
    factory, clock = make_factory(str(tmp_path), Settings(admins=("root",)))
    root = Client(factory, clock, peer=LOCAL)
    root.register("root")
    Client(factory, clock).register("bob")
    root.send("banip 192.0.2.0/24 7d spam", "lock bob spam")
    text = root.output()
    assert "Banned 192.0.2.0/24 for 7d." in text and "Account bob locked." in text
    factory.store.stop()
    assert "bob\t" in run(tmp_path, "list-users")[1] and "locked (spam)" in run(tmp_path, "list-users")[1]
    again, clock = server(tmp_path)
    refused = Client(again, clock, peer=IPv4Address("TCP", "192.0.2.9", 40000))
    assert refused.output().startswith("Error: your address is banned from this server until ")
    assert "Error: this account is locked: spam" in Client(again, clock).login("bob")


def test_an_account_locked_while_its_login_is_being_stored_is_refused(tmp_path):
    """
    A lock stored while a login spends its one-time password (a durable write), before that write is done,
    still refuses that login (ChatFactory.authenticate checks the lock last).
    """
    held = Held()
    factory, clock = make_factory(str(tmp_path), Settings(admins=("root",)), store_runner=held)
    root, bob = Client(factory, clock, peer=LOCAL), Client(factory, clock)
    root.send("register root", "secret1", "secret1")
    bob.send("register bob", "secret1", "secret1")
    held.run_all()
    root.send("resetpw bob")
    held.run_all()
    password = re.search(r"One-time password for bob: (\w+)", root.output()).group(1)
    again = Client(factory, clock)
    again.send("login bob", password)  # waits for must_change=used to be stored
    root.send("lock bob")
    assert len(held.calls) == 2
    held.calls.reverse()  # a store may finish them in either order: the lock first
    held.run_all()
    text = again.output()
    assert "Error: this account is locked." in text and "Logged in" not in text
    assert "bob" not in factory.online
