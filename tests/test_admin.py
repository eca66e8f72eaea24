"""
Server administration in chat (issue 14; chatd.admin, chatd.commands.admin):
who is an admin, refusals for everyone else, /disconnect, /lock and /unlock,
/resetpw and the forced new password, /deluser, deleting any room, address
bans at connect and of open sessions, /wall; each a log row. Driven through
the line front-end on a MemoryStore with a Clock.
"""

from __future__ import annotations

import re

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from chatd.commands import TABLE
from chatd.commands.table import Place
from chatd.admin import MUST_CHANGE, USED, AddressBan
from chatd.limits import is_local
from chatd.settings import Settings
from chatd.store import SERVER
from chatd.stores.memory import MemoryStore
from chatd.text import name_key
from helpers import Client, make_factory


def start(store=None, admins=("root",), **settings):
    store = store or MemoryStore()
    factory, clock = make_factory("", Settings(flood_rate=0, admins=tuple(admins), **settings), store=store)
    return factory, clock, store


def peer(host: str) -> IPv4Address | IPv6Address:
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)


def user(factory, clock, name, host="192.0.2.1", password="secret1"):
    """A client of ``name`` logged in from ``host`` (an --admin name's account is made first: see reserved names)."""
    if factory.accounts.get(name) is None and name_key(name) in map(name_key, factory.settings.admins):
        factory.register(name, password)
    client = Client(factory, clock, peer=peer(host))
    if factory.accounts.get(name) is None:
        client.register(name, password)
    else:
        client.login(name, password)
    client.output()
    return client


def rows(store, event):
    """The logged rows of ``event`` as (user, room, details)."""
    store.flush_events()
    return [(e.user, e.room, dict(e.details)) for _, e in store.events if e.event == event]


def closed(client) -> bool:
    client.clock.advance(10)  # past --close-grace
    return client.transport.disconnecting or client.protocol.transport is None


ADMIN_COMMANDS = ["disconnect bob", "lock bob", "unlock bob", "resetpw bob", "deluser bob", "banip 192.0.2.9",
                  "unbanip 192.0.2.9", "ipbans", "wall hello"]


@pytest.mark.parametrize("line", ADMIN_COMMANDS)
def test_every_admin_command_is_refused_to_others_at_the_menu_and_in_a_room(line):
    factory, clock, store = start()
    user(factory, clock, "bob", "192.0.2.2")
    ann = user(factory, clock, "ann")
    ann.send(line)
    word = line.split()[0]
    assert f"Error: only server admins may use {word}." in ann.output()
    ann.send("public")
    ann.output()
    ann.send("/" + line)
    assert f"Error: only server admins may use /{word}." in ann.output()
    assert "bob" in factory.online and not rows(store, "lock") and not rows(store, "notice")


def test_admins_by_the_option_and_by_the_stored_flag():
    store = MemoryStore()
    factory, clock, _ = start(store, admins=("Root",))
    user(factory, clock, "root")
    user(factory, clock, "ann")
    assert factory.is_admin("ROOT") and not factory.is_admin("ann") and not factory.is_admin(None)
    store.marks["ann"] = {"admin": "1"}
    again, clock2, _ = start(store, admins=())
    assert again.is_admin("ann") and not again.is_admin("root")


def test_the_admin_commands_are_listed_in_room_help_and_usable_at_the_menu():
    factory, clock, _ = start()
    root = user(factory, clock, "root")
    root.send("public")
    root.send("/help")
    text = root.output()
    for usage in ("/lock NAME [REASON]", "/banip ADDRESS [DURATION] [REASON]", "/wall TEXT", "/ipbans"):
        assert usage in text
    root.send("/exit")
    root.send("ipbans")
    assert "No address is banned." in root.output()
    ann = user(factory, clock, "ann")
    ann.send("public")
    ann.send("/help")
    text = ann.output()
    assert "/who" in text and "/lock" not in text and "/wall" not in text  # not shown to others


def test_disconnect_ends_the_session_with_the_reason_and_a_log_row():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    bob = user(factory, clock, "bob", "192.0.2.2")
    bob.send("public")
    bob.output()
    root.send("disconnect bob spamming the room")
    assert "Disconnected bob." in root.output()
    assert "You were disconnected by root, an admin: spamming the room" in bob.output()
    assert "bob" not in factory.online and closed(bob)
    assert rows(store, "session_end") == [("root", "", {"target": "bob", "reason": "spamming the room"})]
    root.send("disconnect bob")
    assert "Error: bob is not logged in." in root.output()
    root.send("disconnect root")
    assert "Error: you cannot disconnect yourself; type quit." in root.output()


def test_lock_ends_the_sessions_and_refuses_login_until_unlocked():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    bob = user(factory, clock, "bob", "192.0.2.2")
    root.send("lock bob too many complaints")
    assert "Account bob locked." in root.output()
    assert [e.event for _, e in store.events if e.event == "lock"] == ["lock"]  # written before the answer
    assert "Your account was locked by root, an admin: too many complaints" in bob.output()
    assert "bob" not in factory.online and closed(bob)
    assert store.marks["bob"]["locked"] == "too many complaints"
    again = Client(factory, clock, peer=peer("192.0.2.2"))
    again.output()
    text = again.login("bob")
    assert "Error: this account is locked: too many complaints" in text and "Logged in" not in text
    assert closed(again) and "bob" not in factory.online
    wrong = Client(factory, clock, peer=peer("192.0.2.3"))
    wrong.login("bob", "wrong-password")
    assert "locked" not in wrong.output()  # a guesser learns nothing
    root.send("unlock bob")
    assert "Account bob unlocked." in root.output()
    assert "Logged in as bob." in Client(factory, clock, peer=peer("192.0.2.2")).login("bob")
    assert rows(store, "lock") == [("root", "", {"target": "bob", "reason": "too many complaints"})]
    assert rows(store, "unlock") == [("root", "", {"target": "bob"})]
    root.send("unlock bob")
    assert "Error: bob is not locked." in root.output()


def test_lock_without_a_reason_survives_a_restart():
    store = MemoryStore()
    factory, clock, _ = start(store)
    root = user(factory, clock, "root")
    user(factory, clock, "bob")
    root.send("lock bob")
    assert "Account bob locked." in root.output()
    again, clock2, _ = start(store)
    client = Client(again, clock2)
    assert "Error: this account is locked." in client.login("bob")


def test_lock_refusals():
    factory, clock, _ = start()
    root = user(factory, clock, "root")
    root.send("lock nobody")
    assert "Error: There is no user called nobody." in root.output()
    root.send("lock root")
    assert "Error: you cannot lock yourself." in root.output()
    user(factory, clock, "bob")
    root.send("lock bob " + "x" * 201)
    assert "Error: a reason has at most 200 characters." in root.output()


def _otp(text: str) -> str:
    match = re.search(r"One-time password for bob: ([a-z0-9]+) \(shown only to you", text)
    assert match, text
    return match.group(1)


def test_reset_password_forces_a_new_one_at_the_next_login_and_works_once():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    bob = user(factory, clock, "bob", "192.0.2.2")
    root.send("resetpw bob")
    password = _otp(root.output())
    assert "One-time" not in bob.output()  # shown to the admin only; bob's session goes on
    bob.send("ping")
    assert "pong" in bob.output()
    bob.disconnect()
    assert "Login failed" in Client(factory, clock).login("bob", "secret1")  # the old password is gone
    bob = Client(factory, clock, peer=peer("192.0.2.2"))
    text = bob.login("bob", password)
    assert "Logged in as bob." in text
    assert text.rstrip().endswith("Your password was reset by an admin. Choose a new password (at least 6 characters):")
    assert store.marks["bob"][MUST_CHANGE] == USED
    bob.send("short")
    assert "Error: a password has 6 to 256 characters." in bob.output()  # and it asks again
    bob.send("newsecret", "othersecret")
    text = bob.output()
    assert "Error: the passwords do not match; nothing was changed." in text and "Choose a new password" in text
    bob.send("newsecret", "newsecret")
    text = bob.output()
    assert "New password saved." in text and "menu>" in text
    assert MUST_CHANGE not in store.marks["bob"]
    bob.disconnect()
    assert "Login failed" in Client(factory, clock).login("bob", password)
    assert "Logged in as bob." in Client(factory, clock).login("bob", "newsecret")
    assert rows(store, "password_reset") == [("root", "", {"target": "bob"})]
    assert [details.get("reason") for _, _, details in rows(store, "password_change")] == ["reset"]


def test_a_one_time_password_used_once_is_refused_after_and_nothing_else_runs_before_the_change():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    user(factory, clock, "bob", "192.0.2.2").disconnect()
    root.send("resetpw bob")
    password = _otp(root.output())
    bob = Client(factory, clock, tagged=True)
    assert "Choose a new password" in bob.login("bob", password)
    # The line front-end asks at once; the table refuses everything else to any front-end until then.
    caller = bob.protocol.dialogue
    for word in ("public", "list", "password", "lock"):
        assert TABLE.refusal(caller, TABLE.find(word, Place.MENU)) == (
            "your password was reset by an admin: choose a new one first (newpassword).")
    for word in ("quit", "logout", "help", "ping", "newpassword"):
        assert TABLE.refusal(caller, TABLE.find(word, Place.MENU)) is None
    bob.disconnect()
    again = Client(factory, clock)
    text = again.login("bob", password)
    assert "Error: this one-time password was used already; ask an admin for a new one." in text
    assert "bob" not in factory.online
    root.send("resetpw bob")
    password = _otp(root.output())
    text = Client(factory, clock).login("bob", password)
    assert "Choose a new password" in text


def test_newpassword_is_refused_without_a_reset():
    factory, clock, _ = start()
    bob = user(factory, clock, "bob")
    bob.send("newpassword", "newsecret", "newsecret")
    assert "Error: your password was not reset; use password to change it." in bob.output()


def test_deluser_deletes_the_account_and_its_rooms_and_ends_its_session():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    bob = user(factory, clock, "bob", "192.0.2.2")
    bob.send("create lab")
    ann = user(factory, clock, "ann", "192.0.2.3")
    ann.send("join lab")
    ann.output()
    root.send("deluser bob")
    assert "Account bob deleted." in root.output()
    assert "Room lab was deleted by bob" in ann.output()
    assert "Your account was deleted by root, an admin." in bob.output()
    assert "bob" not in factory.accounts and "lab" not in factory.rooms and "bob" not in store.users
    assert rows(store, "account_delete") == [("root", "", {"target": "bob"})]
    root.send("deluser root")
    assert "Error: you cannot delete yourself; use deleteme." in root.output()


def test_an_admin_deletes_any_room_others_only_their_own():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    ann = user(factory, clock, "ann", "192.0.2.3")
    ann.send("create lab")
    bob = user(factory, clock, "bob", "192.0.2.2")
    bob.send("delete lab")
    assert "Error: Only its owner, ann, can delete lab." in bob.output()
    root.send("delete lab")
    assert "Room lab deleted." in root.output()
    assert "lab" not in factory.rooms
    assert [(u, r) for u, r, _ in rows(store, "room_delete")] == [("root", "lab")]


def test_an_address_ban_refuses_connections_and_ends_those_open():
    factory, clock, store = start()
    root = user(factory, clock, "root", "198.51.100.1")
    bob = user(factory, clock, "bob", "192.0.2.77")
    menu = Client(factory, clock, peer=peer("192.0.2.5"))  # not logged in: it ends too
    other = user(factory, clock, "ann", "203.0.113.5")
    root.send("banip 192.0.2.0/24 2h spam wave")
    assert "Banned 192.0.2.0/24 for 2h." in root.output()
    assert "Your address was banned from this server by root, an admin: spam wave" in bob.output()
    assert "banned" in menu.output() and closed(bob) and closed(menu)
    assert "ann" in factory.online and not closed(other)
    refused = Client(factory, clock, peer=peer("192.0.2.200"))
    text = refused.output()
    assert text.startswith("Error: your address is banned from this server until 2026-09-21T16:13:20Z: spam wave")
    assert "Welcome" not in text and refused.transport.disconnecting
    assert "Welcome" in Client(factory, clock, peer=peer("192.0.3.1")).output()
    (by, _, details), = rows(store, "address_ban")
    assert (by, details) == ("root", {"target": "192.0.2.0/24", "until": "2026-09-21T16:13:20Z",
                                      "reason": "spam wave"})
    root.send("ipbans")
    assert "192.0.2.0/24 until 2026-09-21T16:13:20Z by root: spam wave" in root.output()
    clock.advance(2 * 3600)  # it runs out
    assert "Welcome" in Client(factory, clock, peer=peer("192.0.2.200")).output()
    root.send("ipbans")
    assert "No address is banned." in root.output()


def test_a_ban_until_lifted_survives_a_restart_and_unbanip_lifts_it():
    store = MemoryStore()
    factory, clock, _ = start(store)
    root = user(factory, clock, "root", "198.51.100.1")
    root.send("banip 192.0.2.7")
    assert "Banned 192.0.2.7 until lifted." in root.output()
    assert AddressBan.decode("192.0.2.7/32", store.room_values[SERVER][("ban", "192.0.2.7/32")]).until == 0
    again, clock2, _ = start(store)
    assert Client(again, clock2, peer=peer("192.0.2.7")).output().startswith(
        "Error: your address is banned from this server.")
    root = user(again, clock2, "root", "198.51.100.1")
    root.send("unbanip 192.0.2.7/32")
    assert "Lifted the ban of 192.0.2.7." in root.output()
    assert "Welcome" in Client(again, clock2, peer=peer("192.0.2.7")).output()
    assert ("ban", "192.0.2.7/32") not in store.room_values.get(SERVER, {})
    assert rows(store, "address_unban") == [("root", "", {"target": "192.0.2.7"})]
    root.send("unbanip 192.0.2.7")
    assert "Error: 192.0.2.7 is not banned (/ipbans lists the bans)." in root.output()


def test_a_lapsed_ban_is_dropped_at_restart():
    store = MemoryStore()
    factory, clock, _ = start(store)
    root = user(factory, clock, "root", "198.51.100.1")
    root.send("banip 192.0.2.7 10m")
    root.output()
    store.room_values[SERVER][("ban", "192.0.2.7/32")] = "until=1000&by=root&reason="
    again, clock2, _ = start(store)
    assert not again.admin.bans and ("ban", "192.0.2.7/32") not in store.room_values[SERVER]


def test_banip_refusals():
    factory, clock, _ = start()
    root = user(factory, clock, "root", "192.0.2.1")
    root.send("banip example.org")
    assert "Error: example.org is not an IP address or network (192.0.2.7, 192.0.2.0/24)." in root.output()
    root.send("banip 192.0.2.0/24")
    assert "Error: that would ban your own address, 192.0.2.1." in root.output()
    assert not factory.admin.bans


def test_wall_reaches_every_connection():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    bob = user(factory, clock, "bob")
    bob.send("public")
    bob.output()
    menu = Client(factory, clock)
    menu.output()
    root.send("wall the server restarts at 22:00 UTC")
    assert "Notice sent to 3 connections." in root.output()
    for client in (bob, menu):
        assert "Notice from root, an admin: the server restarts at 22:00 UTC" in client.output()
    assert rows(store, "notice") == [("root", "", {"text": "the server restarts at 22:00 UTC", "sessions": 3})]


def test_a_failed_write_changes_nothing():
    factory, clock, store = start()
    root = user(factory, clock, "root")
    user(factory, clock, "bob")
    store.broken = "disk full"
    root.send("lock bob")
    assert "Error: Could not lock the account (server storage problem); try again later." in root.output()
    root.send("banip 192.0.2.9")
    assert "Error: Could not save the ban (server storage problem); try again later." in root.output()
    assert "bob" in factory.online and not factory.admin.bans and "locked" not in store.marks.get("bob", {})


def test_ipv4_mapped_clients_are_their_ipv4_address_for_address_bans():
    """A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: bans, the own-address check see a.b.c.d."""
    factory, clock, store = start()
    root = user(factory, clock, "root", "::ffff:198.51.100.1")
    bob = user(factory, clock, "bob", "::ffff:192.0.2.5")
    for own in ("198.51.100.1", "198.51.100.0/24", "::ffff:198.51.100.1", "::ffff:198.51.100.0/120"):
        root.send(f"banip {own}")
        assert "Error: that would ban your own address, 198.51.100.1." in root.output(), own
    root.send("banip 192.0.2.0/24")
    assert "Banned 192.0.2.0/24 until lifted." in root.output() and closed(bob)
    for host in ("::ffff:192.0.2.9", "192.0.2.9"):
        assert Client(factory, clock, peer=peer(host)).output().startswith(
            "Error: your address is banned from this server."), host
    root.send("banip ::ffff:203.0.113.7")  # a mapped address is kept as its IPv4 address
    assert "Banned 203.0.113.7 until lifted." in root.output()
    assert ("ban", "203.0.113.7/32") in store.room_values[SERVER]
    assert Client(factory, clock, peer=peer("203.0.113.7")).output().startswith("Error: your address is banned")
    root.send("unbanip 203.0.113.7")
    assert "Lifted the ban of 203.0.113.7." in root.output()


def test_an_ipv4_admin_may_not_ban_its_own_address_in_mapped_form():
    factory, clock, _ = start()
    root = user(factory, clock, "root", "127.0.0.1")
    root.send("banip ::ffff:127.0.0.1", "banip ::ffff:127.0.0.0/104")
    assert root.output().count("Error: that would ban your own address, 127.0.0.1.") == 2
    assert not factory.admin.bans


def test_a_stored_mapped_ban_is_its_ipv4_network_after_a_restart():
    store = MemoryStore()
    start(store)
    store.room_values.setdefault(SERVER, {})[("ban", "::ffff:192.0.2.0/120")] = "until=0&by=root&reason=old"
    again, clock, _ = start(store)
    assert list(again.admin.bans) == ["192.0.2.0/24"]
    assert ("ban", "192.0.2.0/24") in store.room_values[SERVER]
    assert ("ban", "::ffff:192.0.2.0/120") not in store.room_values[SERVER]
    assert Client(again, clock, peer=peer("192.0.2.3")).output().startswith("Error: your address is banned")


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("127.9.8.7", True), ("::1", True),
                                         ("::ffff:127.0.0.1", True), (None, True), ("192.0.2.1", False),
                                         ("::ffff:192.0.2.1", False), ("2001:db8::1", False), ("::2", False)])
def test_is_local(host, local):
    """The server's own machine: loopback (IPv4, IPv6, mapped) or no IP address at all (a UNIX socket)."""
    assert is_local(host) is local


def test_an_admin_name_is_registered_only_from_the_servers_own_machine():
    factory, clock, store = start(admins=("root", "Ann"))
    for host in ("192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"):
        client = Client(factory, clock, peer=peer(host))
        client.send("register root")
        assert ("Error: this name is reserved for an admin; register it from the server's own machine."
                in client.output()), host
        client.send("register ANN")  # (name keys: any case)
        assert "reserved for an admin" in client.output()
    assert factory.accounts.get("root") is None
    for name, host in (("root", "::ffff:127.0.0.1"), ("ann", "::1")):
        assert "Registered and logged in as" in Client(factory, clock, peer=peer(host)).register(name)
    assert "Registered and logged in as bob." in Client(factory, clock, peer=peer("192.0.2.1")).register("bob")


def test_an_admin_name_without_an_account_is_warned_about_at_start():
    from twisted.logger import globalLogPublisher

    seen: list[str] = []

    def observe(event):
        if "--admin" in event.get("log_format", ""):
            seen.append(event["name"])

    globalLogPublisher.addObserver(observe)
    try:
        store = MemoryStore()
        factory, clock, _ = start(store, admins=("root", "Ann"))
        factory.register("root", "secret1")
        start(store, admins=("root", "Ann"))
    finally:
        globalLogPublisher.removeObserver(observe)
    assert seen == ["root", "Ann", "Ann"]


def test_an_answer_to_the_forced_password_prompt_is_always_the_password():
    """As at every password prompt (PROTOCOL.md, "A reset password"): quit there is a too short password."""
    factory, clock, store = start()
    root = user(factory, clock, "root")
    user(factory, clock, "bob", "192.0.2.2").disconnect()
    root.send("resetpw bob")
    bob = Client(factory, clock, peer=peer("192.0.2.2"))
    bob.login("bob", _otp(root.output()))
    for word in ("quit", "help", "ping"):
        bob.send(word)
        text = bob.output()
        assert text.startswith("Error: a password has 6 to 256 characters.") and "Choose a new password" in text
        assert not bob.transport.disconnecting and "pong" not in text
    bob.send("newpassword")
    assert bob.output().rstrip().endswith("Repeat the new password:")
    bob.send("newpassword")
    assert "New password saved." in bob.output()
    assert "Logged in as bob." in Client(factory, clock).login("bob", "newpassword")
