"""Presence (issue 13): /away and /back, away users marked in /who and /users, the away text told once to a /msg sender."""

from __future__ import annotations

import pytest

from chatd import errors
from chatd.presence import AWAY_MAX, Presence
from helpers import Client, make_factory
from test_commands import _in_public as in_public
from test_frontend_events import EventSession, Structured


@pytest.fixture
def world(tmp_path):
    return make_factory(str(tmp_path))


def _in_public(factory, clock, name, tagged=True):
    return in_public(factory, clock, name, tagged)


def test_away_is_shown_in_who_and_users_until_back(world):
    factory, clock = world
    ann = _in_public(factory, clock, "ann")
    bob = _in_public(factory, clock, "bob")
    ann.output()
    bob.send("/away gone fishing")
    assert bob.output() == "111 You are marked as away: gone fishing\r\n"
    ann.send("/who", "/users")
    assert ann.output() == ("111 In public (2): ann, bob (away)\r\n"
                            "111 Online (2): ann (in public), bob (away, in public)\r\n")
    bob.send("/back")
    assert bob.output() == "111 You are no longer marked as away.\r\n"
    ann.send("/who")
    assert ann.output() == "111 In public (2): ann, bob\r\n"
    bob.send("/back")
    assert bob.output() == "02 Error: you are not marked as away.\r\n"


def test_away_at_the_menu_by_keyword_or_number_and_without_a_message(world):
    factory, clock = world
    carol = Client(factory, clock, tagged=True)
    carol.register("carol")
    carol.output()
    carol.send("away")
    assert carol.output() == "00 You are marked as away: away\r\n11 menu>\r\n"
    carol.send("11 in a meeting", "users")
    assert carol.output() == ("00 You are marked as away: in a meeting\r\n11 menu>\r\n"
                              "00 Online (1): carol (away)\r\n11 menu>\r\n")
    carol.send("12")
    assert carol.output() == "00 You are no longer marked as away.\r\n11 menu>\r\n"
    nobody = Client(factory, clock, tagged=True)
    nobody.output()
    nobody.send("away")
    assert nobody.output() == ("02 Error: please log in first (login) or create an account (register).\r\n"
                               "11 menu>\r\n")


def test_an_away_message_longer_than_the_limit_is_refused(world):
    factory, clock = world
    ann = _in_public(factory, clock, "ann")
    ann.send("/away " + "x" * (AWAY_MAX + 1))
    assert ann.output() == f"02 Error: an away message has at most {AWAY_MAX} characters.\r\n"
    ann.send("/away " + "x" * AWAY_MAX)
    assert ann.output() == f"111 You are marked as away: {'x' * AWAY_MAX}\r\n"


def test_a_message_to_an_away_user_is_delivered_and_the_sender_told_once_per_away_period(world):
    factory, clock = world
    ann = _in_public(factory, clock, "ann")
    bob = Client(factory, clock)
    bob.register("bob")
    carol = _in_public(factory, clock, "carol", tagged=False)
    bob.send("away lunch")
    bob.output()
    ann.output()
    ann.send("/msg bob one", "/msg BOB two")
    lines = ann.output().splitlines()
    assert [line.split("] ", 1)[-1] for line in lines] == ["-> *bob* one", "111 bob is away: lunch", "-> *bob* two"]
    assert lines[1] == "111 bob is away: lunch"
    carol.send("/msg bob three")
    assert carol.output().splitlines()[1] == "bob is away: lunch"  # each sender once
    private = [line.split("] ", 1)[1] for line in bob.output().splitlines() if "] " in line]
    assert private == ["*ann* one", "*ann* two", "*carol* three"]  # (at the menu, the prompt is shown again)
    bob.send("away back at two")  # a new away period: told again, the new text
    ann.send("/msg bob four")
    assert ann.output().splitlines()[1:] == ["111 bob is away: back at two"]
    bob.send("back")
    ann.send("/msg bob five")
    assert len(ann.output().splitlines()) == 1


def test_away_ends_with_the_session(world):
    factory, clock = world
    ann = _in_public(factory, clock, "ann")
    bob = _in_public(factory, clock, "bob")
    bob.send("/away brb")
    bob.disconnect()
    bob = Client(factory, clock, tagged=True)
    bob.login("bob")
    bob.send("public")
    ann.output()
    ann.send("/who", "/msg bob hi")
    assert ann.output().splitlines()[0] == "111 In public (2): ann, bob"
    bob.send("/away brb", "/logout")
    assert len(factory.presence) == 0
    again = Client(factory, clock)
    again.login("bob")
    again.send("users")
    assert "bob (away)" not in again.output()


def test_the_structured_front_end_runs_away_and_back(world):
    factory, clock = world
    Client(factory, clock).register("bob")
    ann = EventSession(factory, Structured())
    ann.run("register", "ann", "secret1")
    ann.run("away", "")
    factory.presence.set_away("bob", "out")
    ann.run("public")
    ann.run("msg", "bob", "hello")
    ann.run("who")
    assert ann.replies[-3:] == ["You are marked as away: away", "bob is away: out", "In public (1): ann (away)"]
    ann.run("back")
    with pytest.raises(errors.NotAllowed, match="you are not marked as away"):
        ann.run("back")


def test_presence_keys_names_regardless_of_case():
    presence = Presence()
    presence.set_away("Bob", "")
    assert presence.message("bob") == "away"
    assert presence.marked(["ann", "BOB"]) == ["ann", "BOB (away)"]
    assert presence.tell_once("Ann", "bob") == "away" and presence.tell_once("ann", "BOB") is None
    assert presence.tell_once("ann", "carol") is None
    assert presence.back("BOB") and not presence.back("bob") and presence.marked(["bob"]) == ["bob"]


def test_the_bundled_client_completes_away_users_by_their_name():
    from clients.screen import Vocabulary
    words = Vocabulary()
    words.heard("In public (3): ann, bob (away), carol")
    words.heard("Online (2): ann, dan (away)")
    assert list(words.members) == ["ann", "bob", "carol"] and "dan" in words.others
