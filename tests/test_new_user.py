"""What a new user met first (issue 11, the fresh tester): answers that quote what was typed, names as typed."""

from __future__ import annotations

import os

import pytest

from chatd.render import clock_text
from helpers import Client, make_factory


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock, tmp_path


def _everything_logged(clock, data_dir) -> str:
    clock.advance(1)  # the event log's batch
    with open(os.path.join(data_dir, "log.csv"), encoding="utf-8") as handle:
        return handle.read()


def test_a_password_typed_at_the_menu_is_never_shown_back(world):
    """A failed login returns to menu>; the password typed again there is not quoted, on screen or in log.csv."""
    factory, clock, data_dir = world
    Client(factory, clock).register("student1", "Student#1")
    c = Client(factory, clock)
    c.output()
    c.send("login student1", "wrong-one")
    clock.advance(1)  # the delay after a failed login
    assert c.output().endswith("menu> ")
    c.send("Student#1")
    out = c.output()
    assert "Student#1" not in out
    assert out == ("Error: unknown choice. Type a number from 1 to 16 or a keyword, or 'menu' to see the menu.\r\n"
                   "menu> ")
    assert "Student#1" not in _everything_logged(clock, data_dir)


def test_passwords_after_a_taken_name_are_not_shown_back(world):
    """`1 student2`, password, password in one go, the name taken: both passwords land at the menu, unquoted."""
    factory, clock, data_dir = world
    Client(factory, clock).register("student2", "Student#2")
    c = Client(factory, clock)
    c.output()
    c.send(b"1 student2\r\nStudent#2\r\nStudent#2\r\n")
    out = c.output()
    assert "Error: The name student2 is taken." in out
    assert out.count("Error: unknown choice. Type a number") == 2
    assert "Student#2" not in out and "Student#2" not in _everything_logged(clock, data_dir)


@pytest.mark.parametrize("typed", ["join Student#1", "info Student#1", "delete Student#1"])
def test_room_prompts_do_not_quote_what_is_no_name(world, typed):
    """A room name that cannot be one gets the naming rule, not an echo of the input."""
    factory, clock, _ = world
    c = Client(factory, clock)
    c.register("ann")
    c.send(typed)
    out = c.output()
    assert "Student#1" not in out
    assert "Error: A room name uses only letters, digits, '_' and '-', and starts with a letter or digit." in out
    c.send("join lab7")
    assert "Error: There is no room called lab7." in c.output()


def test_msg_to_no_name_is_not_quoted(world):
    factory, clock, _ = world
    c = Client(factory, clock)
    c.register("ann")
    c.send("public", "/msg Student#1 hi")
    out = c.output()
    assert "Student#1" not in out and "Error: A user name uses only letters" in out
    c.send("/msg ghost hi")
    assert "Error: ghost is not logged in." in c.output()


def test_answers_name_rooms_and_users_as_stored(world):
    """`delete lab7` on room Lab7, `create LAB7`, `register ANN`: the answers say Lab7 and ann."""
    factory, clock, _ = world
    owner, member = Client(factory, clock), Client(factory, clock)
    owner.register("olga")
    member.register("ann")
    owner.send("create Lab7")
    assert "Room Lab7 created." in owner.output()
    owner.send("create lab7")
    assert "Error: A room called Lab7 already exists." in owner.output()
    member.send("join LAB7")
    member.output()
    owner.send("delete lab7")
    assert "Room Lab7 deleted." in owner.output()
    assert "Room Lab7 was deleted by olga" in member.output()
    newcomer = Client(factory, clock)
    newcomer.output()
    newcomer.send("register ANN")
    assert "Error: The name ann is taken." in newcomer.output()
    newcomer.send(b"register Ann\r\nsecret1\r\nsecret1\r\n")
    assert "Error: The name ann is taken." in newcomer.output()


def test_a_name_being_registered_is_named_as_it_will_be_stored(tmp_path):
    """While `Carol` is being hashed and written, `register carol` is told `The name Carol is taken.`"""
    from helpers import Held

    held = Held()
    factory, clock = make_factory(str(tmp_path), hash_runner=held)
    a, b = Client(factory, clock), Client(factory, clock)
    a.output(), b.output()
    a.send("register Carol", "secret1", "secret1")
    b.send("register carol", "secret1", "secret1")
    held.run_all()
    assert "Error: The name Carol is taken." in b.output()


# -- plain (telnet, nc) output: a line never continues a prompt's line ------------------------------------------


def _at_menu(factory, clock, name, tagged=False):
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.output()
    return c


def test_a_private_message_at_the_menu_starts_a_new_line_and_the_prompt_follows(world):
    """`menu> [17:12:24] *student1* was lab deleted?` was glued: the line comes on its own, then `menu> ` again."""
    factory, clock, _ = world
    alice, bob = _at_menu(factory, clock, "student1"), _at_menu(factory, clock, "bob")
    alice.send("public", "/msg bob was lab deleted?")
    stamp = clock_text(clock.seconds())
    assert bob.output() == f"\r\n[{stamp}] *student1* was lab deleted?\r\nmenu> "
    alice.send("/msg bob and now?")
    assert bob.output() == f"\r\n[{stamp}] *student1* and now?\r\nmenu> "
    bob.send("6")  # the user answers the prompt: the client echoed the Enter, so no extra line end
    assert bob.output().startswith("Rooms (1):\r\n")
    alice.send("/msg bob hi")
    assert bob.output() == f"\r\n[{stamp}] *student1* hi\r\nmenu> "


def test_a_message_at_a_name_prompt_repeats_that_prompt(world):
    factory, clock, _ = world
    alice = _at_menu(factory, clock, "student1")
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("3")  # create: asks "Name of the new room:"
    assert bob.output().endswith("Name of the new room: ")
    alice.send("public", "/msg bob psst")
    assert bob.output() == f"\r\n[{clock_text(clock.seconds())}] *student1* psst\r\nName of the new room: "
    bob.send("lab")
    assert bob.output() == "Room lab created.\r\nmenu> "


def test_tagged_and_chat_mode_output_is_unchanged(world):
    factory, clock, _ = world
    alice = _at_menu(factory, clock, "student1")
    tagged = _at_menu(factory, clock, "tina", tagged=True)
    in_room = _at_menu(factory, clock, "rob")
    in_room.send("public")
    in_room.output()
    alice.send("public", "/msg tina hi", "/msg rob hi")
    stamp = clock_text(clock.seconds())
    assert tagged.output() == f"03 [{stamp}] *student1* hi\r\n"
    assert in_room.output().endswith(f"[{stamp}] *student1* hi\r\n")
    assert not in_room.output()


def test_a_kick_at_the_menu_is_a_line_of_its_own_without_a_prompt_after(world):
    factory, clock, _ = world
    old = _at_menu(factory, clock, "student1")
    Client(factory, clock).login("student1")
    assert old.output() == "\r\nYou logged in from another connection.\r\n"


REGISTER_AHEAD = b"1 student1\r\nStudent#1\r\nStudent#1\r\n"


def test_register_typed_ahead_by_a_raw_script_gives_whole_lines(world):
    """nc with the answers in one write: each prompt's answer was on screen before it, so output goes on new lines."""
    factory, clock, _ = world
    c = Client(factory, clock)
    c.output()
    c.send(REGISTER_AHEAD)
    out = c.transport.value()
    assert out == (b"\xff\xfb\x01Choose a password (at least 6 characters): "
                   b"\xff\xfb\x01\r\nRepeat the password: "
                   b"\r\nRegistered and logged in as student1.\r\nmenu> ")


def test_register_typed_ahead_in_telnet_gives_whole_lines(world):
    """A telnet client (it spoke IAC) types ahead; its DO ECHO arrives later: the result is one whole line."""
    factory, clock, _ = world
    c = Client(factory, clock)
    c.send(b"\xff\xfd\x03")  # DO SGA, as telnet sends on connect (refused)
    c.transport.clear()
    c.send(REGISTER_AHEAD)
    assert c.transport.value() == (b"\xff\xfb\x01Choose a password (at least 6 characters): "
                                   b"\r\nRepeat the password: "
                                   b"\r\nRegistered and logged in as student1.\r\nmenu> ")
    c.transport.clear()
    c.send(b"\xff\xfd\x01")  # DO ECHO, late: echo goes back at once
    assert c.transport.value() == b"\xff\xfc\x01"


def test_register_typed_at_each_prompt_in_telnet_ends_each_password_line(world):
    """Typed after each prompt (echo off agreed): the CRLF for the unechoed Enter starts the next output."""
    factory, clock, _ = world
    c = Client(factory, clock)
    c.send(b"\xff\xfd\x03")
    c.send("1 student1")
    c.send(b"\xff\xfd\x01")  # DO ECHO: the client stops echoing
    c.transport.clear()
    c.send("Student#1")
    assert c.transport.value() == b"\r\nRepeat the password: "
    c.transport.clear()
    c.send("Student#1")
    assert c.transport.value() == b"\r\nRegistered and logged in as student1.\r\n\xff\xfc\x01menu> "
