"""What a new user met first (issue 11, the fresh tester): answers that quote what was typed, names as typed."""

from __future__ import annotations

import os

import pytest

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
    assert out == ("Error: unknown choice. Type a number from 1 to 9 or a keyword, or 'menu' to see the menu.\r\n"
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
