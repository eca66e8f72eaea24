"""The command table: one declaration per command, rules in one place, help and menu generated (issue 12)."""

from __future__ import annotations

import pytest

from chatd.commands import TABLE
from chatd.commands.builtin import USERS_SHOWN
from chatd.commands.table import Arg, Command, Login, Place
from chatd.protocol import ChatProtocol
from chatd.settings import Settings
from helpers import Client, make_factory


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    return factory, clock


def _in_public(factory, clock, name, tagged=False):
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.send("public")
    c.output()
    return c


def test_users_lists_everyone_online_at_the_menu_and_in_a_room(world):
    factory, clock = world
    carol = Client(factory, clock)
    carol.register("carol")
    _in_public(factory, clock, "Bob")
    ann = _in_public(factory, clock, "ann", tagged=True)
    nobody = Client(factory, clock)
    nobody.output()
    nobody.send("users")
    assert nobody.output() == ("Error: please log in first (login) or create an account (register).\r\n"
                               "menu> ")
    carol.output()
    carol.send("users")
    assert carol.output() == "Online (3): ann (in public), Bob (in public), carol\r\nmenu> "
    carol.send("10")
    assert carol.output() == "Online (3): ann (in public), Bob (in public), carol\r\nmenu> "
    ann.send("/users")
    assert ann.output() == "111 Online (3): ann (in public), Bob (in public), carol\r\n"
    carol.disconnect()
    ann.send("/exit", "USERS")
    assert ann.output().endswith("00 Online (2): ann, Bob (in public)\r\n11 menu>\r\n")


def test_users_shows_at_most_a_hundred_names_and_counts_them_all(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(address_registrations=0, address_password_checks=0, max_per_address=0))
    clients = []
    for i in range(USERS_SHOWN + 5):
        c = Client(factory, clock)
        c.register(f"u{i:03d}")
        clients.append(c)
    clients[0].send("users")
    out = clients[0].output()
    assert out.startswith(f"Online ({USERS_SHOWN + 5}; the first {USERS_SHOWN} by name): u000, u001, ")
    assert out.endswith(f"u{USERS_SHOWN - 1:03d}, and 5 more\r\nmenu> ")


def test_room_help_and_the_menu_are_generated_from_the_table(world):
    factory, clock = world
    c = _in_public(factory, clock, "ann")
    c.send("/help")
    help_lines = c.output().splitlines()
    assert help_lines[0] == "Commands (anything else you type is sent to the room):"
    listed = [command for command in TABLE.commands if command.place & Place.ROOM and command.listed
              and not command.admin]  # (an admin's commands are listed to admins only: tests/test_admin.py)
    assert help_lines[1:-1] == [f"  {command.usage()}: {command.help}." for command in
                                sorted(listed, key=lambda command: command.name)]
    assert "  /users: show who is online." in help_lines and "  /msg NAME TEXT: send a private message " \
        "(kept for a user who is offline until they log in)." in help_lines
    c.send("/exit")
    menu = c.output().splitlines()
    assert menu[1] == "Main menu (type a number or a keyword):"
    assert menu[2:2 + len(TABLE.menu())] == [f"{command.number:>3}  {command.name:<9} {command.help}" for command in TABLE.menu()]
    assert [command.number for command in TABLE.menu()] == [str(n) for n in range(1, len(TABLE.menu()) + 1)]


def test_a_new_command_is_one_declaration(tmp_path):
    """Declared once: usable at its places, under its rules, listed in room help, its arguments parsed."""
    table = TABLE.copy()

    @table.command("roll", "roll a die with SIDES sides", Place.ROOM, login=Login.REQUIRED, in_room=True,
                   args=(Arg("SIDES"),))
    def roll(caller, sides):
        caller.reply(f"{caller.session.name} rolls a d{sides}")

    class RollProtocol(ChatProtocol):
        commands = table

    factory, clock = make_factory(str(tmp_path))
    factory.protocol = RollProtocol
    c = _in_public(factory, clock, "ann")
    c.send("/roll 20")
    assert c.output() == "ann rolls a d20\r\n"
    c.send("/roll")
    assert c.output() == "Error: usage: /roll SIDES\r\n"
    c.send("/help")
    assert "  /roll SIDES: roll a die with SIDES sides.\r\n" in c.output()
    c.send("/exit", "roll 6")
    assert c.output().endswith("Error: unknown choice. Type a number from 1 to 16 or a keyword, "
                               "or 'menu' to see the menu.\r\nmenu> ")
    assert TABLE.find("roll", Place.ROOM) is None  # the server's own table is untouched


def test_a_name_declared_twice_at_one_place_is_refused():
    table = TABLE.copy()
    with pytest.raises(ValueError, match="'who' declared twice"):
        table.add(Command("who", lambda caller: None, "again", Place.ROOM))
    table.add(Command("who", lambda caller: None, "at the menu", Place.MENU))  # another place: fine


@pytest.mark.parametrize("text, values", [
    ("", []),
    ("bob", ["bob"]),
    ("  bob   hello  there ", ["bob", "hello  there"]),
])
def test_arguments_are_words_and_the_last_one_takes_the_rest_of_the_line(text, values):
    msg = TABLE.find("msg", Place.ROOM)
    assert msg is not None and msg.split(text) == values


def test_a_password_is_never_taken_from_the_command_line(world):
    """``login NAME PASSWORD`` on one line: the rest is the name (which fails), never a password shown back."""
    login = TABLE.find("login", Place.MENU)
    assert login is not None and login.split("ann secret1") == ["ann secret1"]
    factory, clock = world
    c = Client(factory, clock)
    c.output()
    c.send("login ann")
    assert c.output().endswith("Password: ")


def test_rules_are_checked_in_one_place_for_every_command(world):
    """Each command that needs a login refuses before asking anything; each in-room command refuses in a deleted room."""
    factory, clock = world
    c = Client(factory, clock)
    c.output()
    for command in TABLE.commands:
        if command.login is Login.REQUIRED and command.place & Place.MENU:
            c.send(command.name)
            assert c.output() == ("Error: please log in first (login) or create an account (register).\r\n"
                                  "menu> "), command.name
    owner = Client(factory, clock)
    owner.register("olga")
    owner.send("create lab")
    member = Client(factory, clock)
    member.register("mia")
    member.send("join lab")
    owner.send("delete lab")
    member.output()
    for command in TABLE.commands:
        if command.in_room:
            member.send(f"/{command.name} x")
            assert member.output() == ("Error: room lab was deleted; nothing you type here is sent. "
                                       "Type /exit to go back to the main menu.\r\n"), command.name


def test_numbers_and_aliases_are_menu_keywords_only(world):
    """Attacker: in a room /10 answered /users and /menu the help, where the docs say unknown command."""
    factory, clock = world
    c = _in_public(factory, clock, "ann")
    for typed in ("/10", "/1", "/menu", "/quit"):
        c.send(typed)
        assert c.output() == f"Error: unknown command {typed}. Type /help for the list.\r\n", typed
    c.send("/exit", "menu")
    assert "Main menu (type a number or a keyword):" in c.output()


@pytest.mark.parametrize("hello", ["/CLIENT test 1.0", "/Client test 1.0", "/client"])
def test_the_client_hello_is_case_insensitive_like_every_command(world, hello):
    factory, clock = world
    c = Client(factory, clock)
    c.output()
    c.send(hello)
    assert c.output().startswith("00 Tagged mode on for ")


def test_create_and_delete_work_in_a_room_and_do_not_move_the_user(world):
    """fix15u: a user in a room makes (and deletes) another room without leaving; every front-end's table."""
    factory, clock = world
    ann = _in_public(factory, clock, "ann", tagged=True)
    ann.send("/create lab2")
    assert ann.output() == "111 Room lab2 created.\r\n"
    ann.send("still here")
    assert "ann: still here" in ann.output()  # said in public: the create did not move ann
    ann.send("/delete lab2")
    assert ann.output() == "111 Room lab2 deleted.\r\n"
    assert {c.name for c in TABLE.listed(Place.ROOM)} >= {"create", "delete"}  # in the room's /help
