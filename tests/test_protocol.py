"""Unit tests of the wire, the dialogue and the shared state, over StringTransport with a Clock."""

from __future__ import annotations

import os

import pytest
from twisted.conch import telnet

from chatd.settings import Settings
TTYPE = b"\x18"  # RFC 1091 terminal type

from helpers import data_rows, Client, Held, make_factory


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock, tmp_path


def test_banner_and_menu(world):
    """A new connection sees a greeting, every menu item and the prompt (no line end)."""
    factory, clock, _ = world
    out = Client(factory, clock).output()
    assert out.startswith("Welcome to chatd")
    for keyword in ("register", "login", "create", "delete", "info", "list", "public", "join", "quit"):
        assert keyword in out
    assert out.endswith("menu> ")


def test_register_then_login_elsewhere(world, tmp_path):
    """Registering logs in and writes users.csv with an argon2id hash; the account works on a new connection."""
    factory, clock, _ = world
    alice = Client(factory, clock)
    alice.output()
    out = alice.register("alice", "hunter22")
    assert "Registered and logged in as alice." in out
    rows = list(data_rows(tmp_path / "users.csv"))
    assert rows[0][0] == "alice" and rows[0][1].startswith("$argon2id$")
    assert "hunter22" not in (tmp_path / "users.csv").read_text()
    other = Client(factory, clock)
    assert "Logged in as alice." in other.login("alice", "hunter22")
    # The older session is closed when the same user logs in again.
    assert "another connection" in alice.output()
    assert alice.transport.disconnecting


def test_login_failure_same_answer_and_slowed(world):
    """Unknown name and wrong password get the same answer; repeated failures wait longer and longer."""
    factory, clock, _ = world
    Client(factory, clock).register("bob")
    c = Client(factory, clock)
    c.output()
    c.send("login nobody", "whatever1")
    unknown = c.output()
    clock.advance(1)
    c.output()
    c.send("login bob", "wrongpass")
    wrong = c.output()
    assert "Login failed: unknown name or wrong password." in unknown
    assert "Login failed: unknown name or wrong password." in wrong
    # The second failure holds the connection for 2 s: input is not read meanwhile.
    assert "menu>" not in wrong
    c.send("ping")
    clock.advance(1.9)
    assert "pong" not in c.output()
    clock.advance(0.2)
    out = c.output()
    assert "menu>" in out and "pong" in out


def test_too_many_failures_disconnect(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_login_failures=3, login_timeout=0))
    c = Client(factory, clock)
    for _ in range(3):
        c.send("login x", "yyyyyyy")
        clock.advance(60)
    assert "too many failed logins" in c.output()
    assert c.transport.disconnecting


def test_register_validation(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    c.send("register bad name!")
    assert "Error:" in c.output()
    c.send("register ok_name", "short")
    assert "6 to 256 characters" in c.output()
    c.send("register ok_name", "longenough", "different1")
    assert "do not match" in c.output()
    assert "ok_name" not in factory.accounts


def test_register_race_exactly_one_wins(tmp_path):
    """Two connections registering the same name (different case) while hashing: exactly one wins."""
    held = Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=held)
    a, b = Client(factory, clock), Client(factory, clock)
    a.output(), b.output()
    a.send("register carol", "secret1", "secret1")
    b.send("register Carol", "secret1", "secret1")
    held.run_all()
    outs = [a.output(), b.output()]
    assert sum("Registered and logged in" in out for out in outs) == 1
    assert sum("taken" in out for out in outs) == 1
    assert len(list(data_rows(tmp_path / "users.csv"))) == 1


def test_actions_need_login(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    for choice in ("create x", "delete x", "public", "join x", "3", "7"):
        c.send(choice)
        assert "please log in first" in c.output()


def test_unknown_choice_and_numbers(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    c.send("frobnicate")
    assert "unknown choice" in c.output()
    c.send("6")
    assert "Rooms (1):" in c.output()


def _in_room(factory, clock, name, room="public", tagged=False):
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.send(f"join {room}")
    c.output()
    return c


def test_who_lists_members_in_join_order(world):
    """/who (and info) list members in the order they joined, whatever their mode; /client keeps the place."""
    factory, clock, _ = world
    ann = _in_room(factory, clock, "ann")
    bob = _in_room(factory, clock, "bob", tagged=True)
    cat = _in_room(factory, clock, "cat")
    ann.send("/client test 1.0")
    ann.output()
    dan = _in_room(factory, clock, "dan", tagged=True)
    cat.send("/who")
    assert "In public (4): ann, bob, cat, dan" in cat.output()
    dan.send("/exit", "info public")
    assert "In it now (3): ann, bob, cat" in dan.output()
    bob.output(), cat.output()
    cat.send("still here")  # both audiences still get room lines once
    assert ann.output().count("cat: still here") == 1 and bob.output().count("cat: still here") == 1


def test_broadcast_reaches_room_only(world):
    factory, clock, _ = world
    owner = Client(factory, clock)
    owner.register("owner")
    owner.send("create lab")
    assert "Room lab created." in owner.output()
    a = _in_room(factory, clock, "ann", "lab")
    b = _in_room(factory, clock, "ben", "LAB")
    outside = _in_room(factory, clock, "out", "public")
    a.output(), b.output(), outside.output()
    a.send("hello lab")
    line_a, line_b = a.output(), b.output()
    assert "ann: hello lab\r\n" in line_a and "ann: hello lab\r\n" in line_b
    assert line_b.startswith("[")
    assert outside.output() == ""


def test_join_leave_announced_and_who(world):
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    b = _in_room(factory, clock, "ben")
    assert "* ben joined public" in a.output()
    b.send("/who")
    assert "In public (2): ann, ben" in b.output()
    b.send("/exit")
    assert "You left public." in b.output()
    assert "* ben left public" in a.output()
    a.send("still here")
    assert b.output() == ""


def test_room_commands(world):
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    b = _in_room(factory, clock, "ben")
    a.output()
    b.send("/help")
    helptext = b.output()
    for command in ("/exit", "/who", "/msg", "/help"):
        assert command in helptext
    b.send("/bogus")
    assert "unknown command /bogus" in b.output()
    b.send("//not a command")
    assert "ben: /not a command" in a.output()


def test_private_message(world):
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    menu_user = Client(factory, clock)
    menu_user.register("mia")
    b = _in_room(factory, clock, "ben")
    a.output()
    b.send("/msg mia psst")
    assert "*ben* psst" in menu_user.output()
    assert "-> *mia* psst" in b.output()
    assert "psst" not in a.output()
    b.send("/msg ghost hi")
    assert "ghost is not logged in" in b.output()


def test_rooms_create_info_delete_with_members(world, tmp_path):
    factory, clock, _ = world
    owner = Client(factory, clock)
    owner.register("olga")
    owner.send("create Lab")
    owner.output()
    other = Client(factory, clock)
    other.register("pete")
    other.send("create lab")
    assert "already exists" in other.output()
    other.send("join lab")
    other.output()
    owner.send("info lab")
    info = owner.output()
    assert "Room: Lab" in info and "Owner: olga" in info and "Created: 20" in info and "(1): pete" in info
    other.send("/exit")
    other.send("delete lab")
    assert "Only its owner, olga" in other.output()
    other.send("join lab")
    other.output()
    owner.send("delete public")
    assert "cannot be deleted" in owner.output()
    owner.send("delete lab")
    assert "Room Lab deleted." in owner.output()
    notice = other.output()
    assert "Room Lab was deleted by olga; type /exit to go back to the main menu." in notice
    assert "menu>" not in notice
    assert list(data_rows(tmp_path / "rooms.csv")) == []
    other.send("hello?")
    assert "Error: room Lab was deleted; nothing you type here is sent." in other.output()
    other.send("/exit")
    back = other.output()
    assert "You left Lab." in back and back.endswith("menu> ")


def test_tagged_mode(world):
    """After /client every line carries a code; the current prompt is repeated, tagged."""
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    c.send("/client pytest 0.1")
    out = c.output()
    assert out == "00 Tagged mode on for pytest 0.1.\r\n11 menu>\r\n"
    c.send("register tom")
    assert c.output() == "01 Choose a password (at least 6 characters):\r\n"
    c.send("secret1", "secret1")
    assert c.output() == "01 Repeat the password:\r\n00 Registered and logged in as tom.\r\n11 menu>\r\n"
    c.send("public")
    out = c.output()
    assert out.startswith("111 Entered room public")
    assert "111 [" in out and "* tom joined public" in out
    for line in out.splitlines():
        assert line.split(" ", 1)[0] in {"00", "01", "02", "03", "11", "111"}


def test_client_hello_in_a_room_does_not_repeat_the_chat_prompt(world):
    """/client sent in chat mode: the switch is answered, but '111 Entered room public (1 here)...' is not sent
    again (it read as a second join); a menu prompt is still repeated after /exit."""
    factory, clock, _ = world
    c = _in_room(factory, clock, "yan")
    c.output()
    c.send("/client y 2")
    assert c.output() == "00 Tagged mode on for y 2.\r\n"
    c.send("/exit")
    assert c.output().endswith("11 menu>\r\n")
    c.send("/client y 2")
    assert c.output() == "00 Tagged mode on for y 2.\r\n11 menu>\r\n"


def test_tagged_and_plain_in_one_room(world):
    factory, clock, _ = world
    plain = _in_room(factory, clock, "pam")
    tagged = _in_room(factory, clock, "tim", tagged=True)
    plain.output()
    plain.send("hi all")
    assert tagged.output().startswith("111 [")
    assert plain.output().startswith("[")


def test_hostile_input_is_cleaned(world):
    """Escapes, control characters, invalid UTF-8 and telnet bytes never reach other users."""
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    b = _in_room(factory, clock, "ben")
    a.output()
    b.send(b"\x1b[2J\x1b]0;pwned\x07evil\x00\x07\x08 \xff\xfb\x01text \xc3\x28 \xe2\x80\xae!\r\n")
    line = a.output()
    assert "ben: evil" in line
    assert "\x1b" not in line and "\x00" not in line and "\x07" not in line and "\u202e" not in line
    assert "\ufffd" in line  # the invalid byte is shown as a replacement character
    assert "\xff" not in line


def test_telnet_negotiation_stripped_and_password_hidden(world):
    """
    A telnet client gets WILL ECHO before the first password prompt, keeps it over
    "Repeat the password:", and gets WONT ECHO before the next prompt that is no password prompt.
    """
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    c.send(telnet.IAC + telnet.DO + TTYPE + b"register tel\r\n")
    raw = c.transport.value()
    c.output()
    assert telnet.IAC + telnet.WONT + TTYPE in raw  # refused option
    # The password prompt asks the client to stop echoing.
    assert telnet.IAC + telnet.WILL + telnet.ECHO in raw
    c.send(telnet.IAC + telnet.DO + telnet.ECHO)
    c.send("secret1")
    # The line end the client did not echo, then the second prompt, still hidden.
    assert c.transport.value() == b"\r\nRepeat the password: "
    c.output()
    c.send("secret1")
    raw = c.transport.value()
    assert raw.startswith(b"\r\nRegistered and logged in as tel.\r\n")
    assert raw.endswith(telnet.IAC + telnet.WONT + telnet.ECHO + b"menu> ")
    c.output()
    c.send(telnet.IAC + telnet.DONT + telnet.ECHO, "ping")
    assert c.output() == "pong\r\nmenu> "
    assert factory.accounts["tel"].name == "tel"


def test_over_long_line_keeps_connection(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_line=100))
    c = Client(factory, clock)
    c.output()
    c.send(b"x" * 150 + b"\r\nping\r\n")
    out = c.output()
    assert "longer than 100 bytes" in out and "pong" in out
    # A long line that arrives in pieces is dropped up to its end.
    c.send(b"y" * 120, b"y" * 120, b"yyy\r\nping\r\n")
    out = c.output()
    assert "longer than 100 bytes" in out and "pong" in out and "unknown choice" not in out
    assert not c.transport.disconnecting


@pytest.mark.parametrize("max_line", [100, 4096])
def test_line_limit_does_not_count_the_line_end(tmp_path, max_line):
    """A line of exactly --max-line bytes is accepted with LF and with CRLF; one byte more is refused with either."""
    factory, clock = make_factory(str(tmp_path), Settings(max_line=max_line))
    c = Client(factory, clock)
    c.output()
    exact = b"ping" + b" " * (max_line - 4)
    for end in (b"\n", b"\r\n"):
        c.send(exact + end)
        out = c.output()
        assert "pong" in out and "longer than" not in out
        c.send(exact + b" " + end + b"ping\r\n")
        out = c.output()
        assert f"Error: that line was longer than {max_line} bytes and was ignored." in out
        assert out.count("pong") == 1
        # The same, arriving one byte at a time.
        for byte in exact + b" " + end:
            c.send(bytes([byte]))
        c.send(b"ping\r\n")
        out = c.output()
        assert f"longer than {max_line} bytes" in out and out.count("pong") == 1
    assert not c.transport.disconnecting


def test_empty_lines_ignored(world):
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    b = _in_room(factory, clock, "ben")
    a.output()
    b.send("", "   ", "\t")
    assert a.output() == ""


def test_disconnect_leaves_room_and_logs(world, tmp_path):
    factory, clock, _ = world
    a = _in_room(factory, clock, "ann")
    b = _in_room(factory, clock, "ben")
    b.disconnect()
    assert "* ben left public" in a.output()
    assert "ben" not in factory.online
    assert factory.rooms["public"].member_names() == ["ann"]
    clock.advance(1)
    events = [row[1] for row in data_rows(tmp_path / "log.csv")]
    for event in ("register", "login", "join", "disconnect"):
        assert event in events


def test_quit(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.register("quinn")
    c.send("quit")
    assert "Bye." in c.output()
    assert c.transport.disconnecting
    assert "quinn" not in factory.online


def test_store_failure_is_a_clear_error(world, tmp_path):
    """If the disk refuses a registration, the user is told and nothing is half-done."""
    factory, clock, _ = world
    factory.store.data_dir = str(tmp_path / "missing" / "dir")
    c = Client(factory, clock)
    out = c.register("dora")
    assert "Could not save the account" in out and "menu>" in out
    assert "dora" not in factory.accounts


def test_me_without_text_is_a_usage_error(world):
    """``/me`` alone is answered like ``/msg`` alone, and the room sees nothing."""
    factory, clock, _ = world
    ann, bob = _in_room(factory, clock, "ann", tagged=True), _in_room(factory, clock, "bob")
    ann.output()
    bob.output()
    ann.send("/me", "/me   ")
    assert ann.output() == "02 Error: usage: /me TEXT\r\n" * 2
    assert bob.output() == ""
