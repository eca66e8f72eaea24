"""/whois NAME (issue 13, "Presence"): account age, online since or last seen, away message, the room in common."""

from __future__ import annotations

import pytest

from chatd import errors
from chatd.commands.presence import duration_text, whois_lines
from chatd.presence import Whois
from chatd.store import UserRecord
from chatd.stores.memory import MemoryStore
from helpers import Client, make_factory
from test_frontend_events import EventSession, Structured

#: make_factory's clock starts at 2026-09-21 14:13:20 UTC.
START = 1_790_000_000
#: 2 h 5 min later: 16:18:20.
LATER = 2 * 3600 + 5 * 60


@pytest.fixture
def world(tmp_path):
    return make_factory(str(tmp_path))


def _client(factory, clock, name, tagged=True, room=""):
    client = Client(factory, clock, tagged=tagged)
    client.register(name)
    if room:
        client.send(f"join {room}")
    client.output()
    return client


def test_an_online_away_user_in_the_askers_room(world):
    factory, clock = world
    bob = _client(factory, clock, "bob", room="public")
    ann = _client(factory, clock, "ann", room="public")
    clock.advance(LATER)
    bob.send("/away lunch")
    ann.send("/whois BOB")
    assert ann.output() == ("111 bob: account created 2026-09-21 (2 h 5 min ago)\r\n"
                            "111   online since 14:13:20 UTC (2 h 5 min)\r\n"
                            "111   away: lunch\r\n"
                            "111   in public with you\r\n")
    bob.send("/back")
    ann.send("/whois bob")
    assert "away" not in ann.output()


def test_at_the_menu_by_keyword_or_number_asking_for_the_name(world):
    factory, clock = world
    _client(factory, clock, "bob")
    ann = _client(factory, clock, "ann", tagged=False)
    clock.advance(42)
    ann.send("whois bob")
    assert ann.output() == ("bob: account created 2026-09-21 (42 s ago)\r\n"
                            "  online since 14:13:20 UTC (42 s)\r\n"
                            "menu> ")
    ann.send("16")
    assert ann.output() == "Name of the user: "
    ann.send("Bob")
    assert ann.output().startswith("bob: account created")
    ann.send("menu")
    assert " 16  whois     account age, online or last seen, away, your room if shared (never others)\r\n" \
        in ann.output()


def test_the_room_in_common_is_shown_only_when_shared(world):
    factory, clock = world
    bob = _client(factory, clock, "bob")
    bob.send("create lab", "join lab")
    ann = _client(factory, clock, "ann", room="public")
    ann.send("/whois bob")
    out = ann.output()
    assert "with you" not in out and "lab" not in out  # bob's room is never told to someone not in it
    ann.send("/exit")
    ann.output()
    ann.send("whois bob")
    out = ann.output()
    assert "with you" not in out and "lab" not in out
    ann.send("join lab")
    ann.output()
    ann.send("/whois bob")
    assert ann.output().splitlines()[-1] == "111   in lab with you"
    bob.send("/whois bob")  # oneself: no room in common
    assert bob.output().splitlines()[-1].startswith("111   online since")
    bob.send("/exit")
    ann.send("/whois bob")
    assert "with you" not in ann.output()


def test_an_offline_user_was_last_seen_when_the_session_ended(world):
    factory, clock = world
    bob = _client(factory, clock, "bob", room="public")
    ann = _client(factory, clock, "ann", room="public")
    clock.advance(LATER)
    bob.disconnect()
    clock.advance(15 * 3600)
    ann.output()
    ann.send("/whois bob", "/whois ann")
    assert ann.output() == ("111 bob: account created 2026-09-21 (17 h 5 min ago)\r\n"
                            "111   last seen 2026-09-21 16:18 UTC (15 h ago)\r\n"
                            "111 ann: account created 2026-09-21 (17 h 5 min ago)\r\n"
                            "111   online since 2026-09-21 14:13:20 UTC (17 h 5 min)\r\n")
    carol = _client(factory, clock, "carol")
    clock.advance(30)
    carol.send("logout")  # a log out, still connected
    carol.output()
    clock.advance(2 * 86400)
    ann.send("/whois carol")
    assert ann.output().splitlines()[1] == "111   last seen 2026-09-22 07:18 UTC (2 days ago)"


def test_replaced_and_shut_down_sessions(world):
    factory, clock = world
    _client(factory, clock, "bob")
    ann = _client(factory, clock, "ann")
    clock.advance(600)
    again = Client(factory, clock)
    again.login("bob")  # the first session is replaced: online since this login
    ann.send("whois bob")
    assert ann.output().splitlines()[1] == "00   online since 14:23:20 UTC (0 s)"
    clock.advance(60)
    factory.shut_down("Server shutting down.")
    clock.advance(60)
    answer = factory.presence.whois("bob", factory.accounts, factory.online, again.protocol, None, clock.seconds())
    assert answer.online_since is None and answer.last_seen == START + 660


def test_a_never_seen_user_and_a_last_seen_time_loaded_from_the_store(tmp_path):
    store = MemoryStore()
    store.users["carol"] = UserRecord("carol", "(no hash)", "2026-01-01T00:00:00Z")
    store.users["dan"] = UserRecord("Dan", "(no hash)", "2026-09-20T09:00:00Z")
    store.marks["dan"] = {"seen": "2026-09-20T10:00:00Z", "replay": "off"}
    factory, clock = make_factory(str(tmp_path), store=store)
    ann = _client(factory, clock, "ann")
    ann.send("whois carol", "whois DAN")
    assert ann.output() == ("00 carol: account created 2026-01-01 (263 days ago)\r\n"
                            "00   never seen since the server kept track\r\n"
                            "11 menu>\r\n"
                            "00 Dan: account created 2026-09-20 (1 day 5 h ago)\r\n"
                            "00   last seen 2026-09-20 10:00 UTC (1 day 4 h ago)\r\n"
                            "11 menu>\r\n")


def test_an_unknown_or_impossible_name_is_a_clear_error(world):
    factory, clock = world
    ann = _client(factory, clock, "ann", room="public")
    ann.send("/whois ghost", "/whois -x", "/whois", "/whois " + "g" * 500)
    out = ann.output()
    assert out == ("02 Error: There is no user called ghost.\r\n"
                   "02 Error: A user name uses only letters, digits, '_' and '-', and starts with a letter or digit.\r\n"
                   "02 Error: usage: /whois NAME\r\n"
                   "02 Error: A user name has at most 24 characters.\r\n")
    stranger = Client(factory, clock, tagged=True)
    stranger.output()
    stranger.send("whois ann")
    assert stranger.output() == ("02 Error: please log in first (login) or create an account (register).\r\n"
                                 "11 menu>\r\n")


def test_a_deleted_account_is_unknown(world):
    factory, clock = world
    bob = _client(factory, clock, "bob")
    ann = _client(factory, clock, "ann")
    bob.send("deleteme", "secret1")
    bob.output()
    ann.send("whois bob")
    assert ann.output().startswith("02 Error: There is no user called bob.")


def test_the_structured_front_end_gets_the_answer_as_a_value(world):
    factory, clock = world
    bob = _client(factory, clock, "bob", room="public")
    bob.send("/away out")
    ann = EventSession(factory, Structured())
    ann.run("register", "ann", "secret1")
    ann.run("public")
    clock.advance(5)
    answer = ann.run("whois", "BOB")
    assert answer == Whois(name="bob", at=START + 5, created=START, online_since=START, last_seen=None,
                           away="out", shared_room="public")
    assert ann.replies[-4:] == whois_lines(answer)
    with pytest.raises(errors.NoSuchUser, match="There is no user called ghost."):
        ann.run("whois", "ghost")


def test_whois_lines_without_a_known_creation_time():
    answer = Whois(name="old", at=START, created=None, online_since=None, last_seen=None, away=None,
                   shared_room="")
    assert whois_lines(answer) == ["old: account created before the server kept track",
                                   "  never seen since the server kept track"]


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0 s"), (0, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h"),
    (3660, "1 h 1 min"), (86399, "23 h 59 min"), (86400, "1 day"), (90000, "1 day 1 h"),
    (2 * 86400 - 1, "1 day 23 h"), (2 * 86400, "2 days"), (400 * 86400, "400 days"),
])
def test_durations_are_rounded_down_for_people(seconds, text):
    assert duration_text(seconds) == text


def test_the_last_seen_time_is_stored_and_survives_a_restart(tmp_path):
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    bob = _client(factory, clock, "Bob", room="public")
    _client(factory, clock, "gone").send("deleteme", "secret1")
    clock.advance(LATER)
    bob.disconnect()
    assert set(store.marks) == {"bob"}  # a deleted account keeps none
    assert store.marks["bob"]["seen"] == "2026-09-21T16:18:20Z"  # (beside its read mark of public, issue 13)
    factory.shut_down("Server shutting down.")
    again, clock = make_factory(str(tmp_path), store=store)  # a new server on what was stored
    clock.advance(LATER + 3600)
    ann = _client(again, clock, "ann")
    ann.send("whois bob")
    assert ann.output().splitlines()[:2] == ["00 Bob: account created 2026-09-21 (3 h 5 min ago)",
                                             "00   last seen 2026-09-21 16:18 UTC (1 h ago)"]


def test_a_last_seen_time_the_store_refuses_is_logged_not_raised(tmp_path):
    from twisted.logger import globalLogPublisher
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    bob = _client(factory, clock, "bob")
    store.broken = "disk full"
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        bob.disconnect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [event["why"] for event in logged if "last seen" in event.get("log_format", "")] == ["disk full"]
    store.broken = None
    ann = _client(factory, clock, "ann")
    ann.send("whois bob")
    assert ann.output().splitlines()[1] == "00   last seen 2026-09-21 14:13 UTC (0 s ago)"  # kept in memory
