"""
Room authority (issue 14, docs/PROTOCOL.md "Room authority"): roles and who
may do what to whom, kick, timed bans and mutes (expiry with a Clock, also
across a restart), topic, invite-only rooms, owner transfer, the flood
limiter's escalation, and every action's room event and log row. Driven
through the line front-end on a MemoryStore with a Clock.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from chatd.buses.local import LocalBus
from chatd.commands import TABLE
from chatd.core.events import EventKind
from chatd.factory import ChatFactory
from chatd.limits import FLOOD_PAUSED_LIMIT, FLOOD_WINDOW
from chatd.moderation import duration_text, parse_duration
from chatd.passwords import Passwords
from chatd.protocol import ChatProtocol
from chatd.settings import Settings
from chatd.stores.memory import MemoryStore
from chatd.text import name_key
from helpers import CHEAP_HASH, Client, run_now

START = 1_790_000_000


def start(store=None, at: float = START, **settings):
    """A factory on ``store`` (a new MemoryStore) whose clock reads ``at``; flood limit off unless given."""
    store = store or MemoryStore()
    settings.setdefault("flood_rate", 0)
    clock = Clock()
    clock.advance(at)
    passwords = Passwords(run=run_now, **CHEAP_HASH)
    factory = ChatFactory(store, passwords, Settings(**settings), clock, ChatProtocol, bus=LocalBus())
    store.load().addCallback(factory.restore)
    factory.history.start()
    return factory, clock, store


def user(factory, clock, name, room=None):
    """
    A plain-mode client logged in as ``name`` (registered first if new), in
    ``room`` if given; an --admin name connects from loopback (only there may it be registered).
    """
    local = IPv4Address("TCP", "127.0.0.1", 40000) if name in factory.settings.admins else None
    client = Client(factory, clock, peer=local)
    if factory.accounts.get(name) is None:
        client.register(name)
    else:
        client.login(name)
    if room:
        client.send(f"join {room}")
    client.output()
    return client


def hhmm(clock, offset: float = 0.0) -> str:
    return datetime.fromtimestamp(int(clock.seconds() + offset), timezone.utc).strftime("%H:%M")


def clock_stamp(clock) -> str:
    return datetime.fromtimestamp(int(clock.seconds()), timezone.utc).strftime("[%H:%M:%S]")


@pytest.fixture
def lab():
    """ann owns lab; carol is its operator; bob and dave are members; all four are in it."""
    factory, clock, store = start()
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    clients = {"ann": ann}
    for name in ("bob", "carol", "dave"):
        clients[name] = user(factory, clock, name, "lab")
    ann.send("/op carol")
    for client in clients.values():
        client.output()
    return factory, clock, store, clients


def rows(store, *names):
    """The log rows (event, user, room, details) of the given events, in order."""
    store.flush_events()
    return [(e.event, e.user, e.room, dict(e.details)) for _, e in store.events if e.event in names]


def room_events(factory, kind):
    """The events of ``kind`` in lab's history ring and its fan-out's queue."""
    room = factory.rooms["lab"]
    return [e for e in [*room.history.ring, *room.fanout.pending()] if e.kind is kind]


# -- who may do what to whom ----------------------------------------------------------------

ROLE_OF = {"owner": "ann", "operator": "carol", "member": "bob"}
#: The other account of each role (acting on oneself is refused separately).
TARGET_OF = {"owner": "ann", "operator": "erin", "member": "dave"}


@pytest.mark.parametrize("command", ["kick", "ban", "mute"])
@pytest.mark.parametrize("actor", ["owner", "operator", "member"])
@pytest.mark.parametrize("target", ["owner", "operator", "member"])
def test_who_may_kick_ban_and_mute_whom(lab, command, actor, target):
    """
    Operators ban and mute members only; the owner operators too; nobody the owner; members nobody. Any
    operator kicks anyone but himself (RFC 2812 §3.2.8; irctest kick testKickPrivileges: the owner too).
    """
    factory, clock, store, clients = lab
    erin = user(factory, clock, "erin", "lab")
    clients["ann"].send("/op erin")
    for client in clients.values():
        client.output()
    actor_client = clients[ROLE_OF[actor]]
    target_name = TARGET_OF[target]
    actor_client.send(f"/{command} {target_name} because")
    out = actor_client.output()
    if actor == "member":
        assert out == f"Error: only operators of lab may use /{command}.\r\n"
    elif ROLE_OF[actor] == target_name:
        assert out == "Error: you cannot do that to yourself.\r\n"
    elif command == "kick":
        assert f"* {ROLE_OF[actor]} kicked {target_name} (because)" in out
        assert target_name not in factory.rooms["lab"].member_names()
        return
    elif target == "owner":
        assert out == "Error: ann owns lab; nobody can do that to its owner.\r\n"
    elif target == "operator" and actor == "operator":
        assert out == "Error: erin is an operator of lab; only its owner can do that.\r\n"
    else:
        verb = {"kick": "kicked", "ban": "banned", "mute": "muted"}[command]
        assert f"* {ROLE_OF[actor]} {verb} {target_name}" in out
        assert rows(store, command)[-1][:3] == (command, ROLE_OF[actor], "lab")
        return
    assert not rows(store, command) and not room_events(factory, EventKind(command))
    assert "bob" in factory.rooms["lab"].member_names() and not factory.rooms["lab"].muted


@pytest.mark.parametrize("command", ["op carol", "deop carol", "owner bob", "open-topic on"])
@pytest.mark.parametrize("actor", ["carol", "bob"])
def test_only_the_owner_may_op_deop_give_the_room_away_and_open_the_topic(lab, command, actor):
    factory, clock, store, clients = lab
    clients[actor].send(f"/{command}")
    assert clients[actor].output() == f"Error: only the owner of lab may use /{command.split()[0]}.\r\n"
    assert factory.rooms["lab"].owner == "ann" and factory.moderation.operators(factory.rooms["lab"]) == ["carol"]


def test_a_member_may_not_invite_or_turn_invite_only_on(lab):
    factory, clock, store, clients = lab
    clients["bob"].send("/invite dave", "/invite-only on", "/bans", "/unban dave", "/unmute dave")
    assert clients["bob"].output() == "".join(
        f"Error: only operators of lab may use /{c}.\r\n" for c in ("invite", "invite-only", "bans", "unban", "unmute"))


def test_unknown_and_invalid_names_are_refused_before_anything_happens(lab):
    factory, clock, store, clients = lab
    carol = clients["carol"]
    carol.send("/ban ghost", "/invite ghost", "/kick a,b")
    out = carol.output()
    assert "Error: There is no user called ghost.\r\n" * 2 in out
    assert "ghost" not in str(store.room_values) and not rows(store, "ban", "invite", "kick")


def test_who_and_info_show_the_owner_and_operators(lab):
    factory, clock, store, clients = lab
    clients["bob"].send("/away lunch", "/who")
    assert clients["bob"].output().endswith("In lab (4): ~ann, bob (away), @carol, dave\r\n")
    outsider = user(factory, clock, "erin")
    outsider.send("info lab")
    out = outsider.output()
    assert "Operators: carol\r\n" in out and "Topic: (none)\r\n" in out and "Invite-only" not in out


# -- kick ------------------------------------------------------------------------------------


def test_a_kicked_member_is_out_told_why_and_may_come_back(lab):
    factory, clock, store, clients = lab
    carol, bob, dave = clients["carol"], clients["bob"], clients["dave"]
    carol.send("/kick bob spamming links")
    stamp = clock_stamp(clock)
    assert dave.output() == f"{stamp} * carol kicked bob (spamming links)\r\n"
    assert bob.output() == (f"{stamp} * carol kicked bob (spamming links)\r\n"
                            "You were kicked from lab by carol: spamming links; type /exit to go back to the main menu.\r\n")
    bob.send("hello?")
    assert bob.output() == ("Error: you were kicked from lab; nothing you type here is sent. "
                            "Type /exit to go back to the main menu.\r\n")
    assert "hello?" not in dave.output()
    assert "bob" not in factory.rooms["lab"].member_names()
    bob.send("/exit")
    assert bob.output().startswith("You left lab.\r\nMain menu")
    bob.send("join lab")
    assert "Entered room lab" in bob.output()
    assert rows(store, "kick", "leave")[:2] == [("kick", "carol", "lab", {"target": "bob", "reason": "spamming links"}),
                                                ("leave", "bob", "lab", {"reason": "kicked"})]


def test_kicking_someone_not_in_the_room_is_an_error(lab):
    factory, clock, store, clients = lab
    user(factory, clock, "erin")
    clients["carol"].send("/kick erin")
    assert clients["carol"].output() == "Error: erin is not in lab.\r\n"


# -- bans ------------------------------------------------------------------------------------


def test_a_ban_removes_the_member_keeps_them_out_and_runs_out_on_time(lab):
    factory, clock, store, clients = lab
    carol, bob, dave = clients["carol"], clients["bob"], clients["dave"]
    carol.send("/ban bob 10m flooding the room")
    stamp, until = clock_stamp(clock), hhmm(clock, 600)
    assert carol.output() == (f"{stamp} * carol banned bob for 10m (flooding the room)\r\n"
                              f"{stamp} * carol kicked bob (flooding the room)\r\n"  # (taken out: every member sees it)
                              "bob is banned from lab for 10m.\r\n")
    assert bob.output().endswith(
        "You were banned from lab by carol for 10m: flooding the room; type /exit to go back to the main menu.\r\n")
    bob.send("/exit", "join lab")
    assert bob.output().endswith(f"Error: you are banned from lab until {until} UTC: flooding the room\r\nmenu> ")
    carol.send("/bans")
    assert carol.output() == f"Bans in lab (1): bob (until {until} UTC, by carol: flooding the room)\r\n"
    clock.advance(599)
    bob.send("join lab")
    assert "Error: you are banned" in bob.output()
    clock.advance(1)
    assert dave.output().endswith(f"{clock_stamp(clock)} * bob is no longer banned (the ban ran out)\r\n")
    bob.send("join lab")
    assert "Entered room lab" in bob.output()
    assert rows(store, "ban", "unban") == [
        ("ban", "carol", "lab", {"target": "bob", "until": "2026-09-21T14:23:20Z", "reason": "flooding the room"}),
        ("unban", "", "lab", {"target": "bob", "reason": "expired"})]
    assert store.room_values[factory.rooms["lab"].history.room_id].get(("ban", "bob")) is None


def test_a_ban_without_a_duration_lasts_until_lifted(lab):
    factory, clock, store, clients = lab
    carol, bob = clients["carol"], clients["bob"]
    carol.send("/ban bob")
    assert carol.output().endswith("* carol banned bob\r\n[14:13:20] * carol kicked bob (Banned)\r\n"
                                   "bob is banned from lab until lifted.\r\n")
    bob.send("/exit")
    clock.advance(400 * 86400)
    bob.output()
    bob.send("join lab")
    assert bob.output().endswith("Error: you are banned from lab.\r\nmenu> ")
    carol.send("/unban bob", "/bans", "/unban bob")
    assert carol.output().endswith("* carol lifted the ban on bob\r\nThe ban on bob is lifted.\r\nNo bans in lab.\r\n"
                                   "Error: bob is not banned from lab.\r\n")
    assert rows(store, "unban") == [("unban", "carol", "lab", {"target": "bob"})]


def test_a_ban_works_for_an_account_that_is_offline(lab):
    factory, clock, store, clients = lab
    user(factory, clock, "erin").disconnect()
    clients["carol"].send("/ban erin 2h")
    assert "* carol banned erin for 2h" in clients["carol"].output()
    erin = user(factory, clock, "erin")
    erin.send("join lab")
    assert f"Error: you are banned from lab until {hhmm(clock, 7200)} UTC.\r\n" in erin.output()


def test_durations(lab):
    assert [parse_duration(t) for t in ("30s", "10m", "2h", "7d", "10M", "0m", "1x", "m", "٥m", "367d")] == \
        [30, 600, 7200, 604800, 600, None, None, None, None, None]
    assert [duration_text(s) for s in (30, 600, 7200, 604800, 90)] == ["30s", "10m", "2h", "7d", "90s"]
    factory, clock, store, clients = lab
    clients["carol"].send("/ban bob spam 2x")  # a first word that is no duration: the reason, until lifted
    assert "* carol banned bob (spam 2x)\r\n" in clients["carol"].output()


NOT_A_DURATION = "Error: not a duration: use 30s, 10m, 2h or 7d (at most 366 days).\r\n"


@pytest.mark.parametrize("word", ["367d", "0s", "10x", "99999999999d", "1h30m", "1.5h", "1w", "-5m", "0m", "8785h",
                                  "\uff15m", "+5m", ".5h", "2x", "5", "\u0665m"])
@pytest.mark.parametrize("command", ["/ban bob", "/mute bob", "/banip 192.0.2.9"])
def test_a_word_that_looks_like_a_duration_must_be_one(word, command):
    """Never a silent "until lifted" with the word as the reason (issue 14 fresh tester): refused, nothing changes."""
    factory, clock, store = start(admins=("root",))
    ann = user(factory, clock, "ann")
    ann.send("create lab")
    user(factory, clock, "bob").disconnect()
    root = user(factory, clock, "root")
    root.send("join lab")
    ann.send("join lab", "/op root")
    root.output()
    root.send(f"{command} {word} spam")
    assert root.output() == NOT_A_DURATION
    assert not factory.rooms["lab"].authority.bans and not factory.rooms["lab"].authority.mutes
    assert not factory.admin.bans


@pytest.mark.parametrize("word, shown", [("1s", "1s"), ("366d", "366d"), ("8784h", "366d"), ("90S", "90s"),
                                         ("10M", "10m")])
def test_durations_at_the_edges_are_taken(lab, word, shown):
    factory, clock, store, clients = lab
    clients["carol"].send(f"/mute bob {word} spam")
    assert f"bob is muted in lab for {shown}.\r\n" in clients["carol"].output()


def test_a_ban_beats_an_invite_and_help_says_so(lab):
    factory, clock, store, clients = lab
    carol, ann = clients["carol"], clients["ann"]
    erin = user(factory, clock, "erin")
    ann.send("/invite-only on", "/invite erin", "/ban erin")
    assert erin.output() == "\r\nann invited you to lab: type 'join lab' at the menu to enter it.\r\nmenu> "
    erin.send("join lab")
    assert erin.output() == "Error: you are banned from lab.\r\nmenu> "
    carol.send("/help")
    help_text = carol.output()
    assert "a ban beats an invite" in help_text.split("/ban")[1].split("\r\n")[0]
    assert "a ban beats an invite" in help_text.split("/invite NAME")[1].split("\r\n")[0]


def test_bans_and_mutes_last_across_a_restart_and_run_out_on_time(lab):
    factory, clock, store, clients = lab
    user(factory, clock, "erin")
    clients["carol"].send("/ban bob 2h", "/mute dave 30m", "/topic the lab", "/invite-only on", "/invite bob")
    factory.shut_down("bye")
    # The server comes back an hour later: the ban has an hour to go, the mute is over.
    factory, clock, store = start(store, at=clock.seconds() + 3600)
    clock.advance(0)
    room = factory.rooms["lab"]
    assert rows(store, "unmute")[-1] == ("unmute", "", "lab", {"target": "dave", "reason": "expired"})
    assert not room.muted and set(room.authority.bans) == {"bob"}
    assert room.authority.topic == "the lab" and room.authority.invite_only and set(room.authority.invites) == {"bob"}
    assert factory.moderation.operators(room) == ["carol"]
    bob = user(factory, clock, "bob")
    bob.send("join lab")
    assert f"Error: you are banned from lab until {hhmm(clock, 3600)} UTC.\r\n" in bob.output()
    clock.advance(3600)
    bob.send("join lab")  # invited, no longer banned: a ban beats an invite only while it lasts
    assert "Entered room lab" in bob.output()
    assert rows(store, "unban")[-1] == ("unban", "", "lab", {"target": "bob", "reason": "expired"})


def test_a_deleted_room_takes_its_bans_and_their_timers_with_it(lab):
    factory, clock, store, clients = lab
    clients["carol"].send("/ban bob 1h")
    room_id = factory.rooms["lab"].history.room_id
    clients["ann"].send("/exit", "delete lab")
    timers = [call for call in clock.getDelayedCalls() if getattr(call.func, "__name__", "") == "_expire"]
    assert "lab" not in factory.rooms and room_id not in store.room_values and not timers


# -- mutes -----------------------------------------------------------------------------------


def test_a_muted_member_reads_but_cannot_speak_and_is_told_why(lab):
    factory, clock, store, clients = lab
    carol, bob, dave = clients["carol"], clients["bob"], clients["dave"]
    carol.send("/mute bob 2h off topic")
    until = hhmm(clock, 7200)
    assert "* carol muted bob for 2h (off topic)\r\n" in dave.output()
    bob.output()
    bob.send("hello", "/me waves", "/send notes.txt")
    assert bob.output() == f"Error: you are muted in lab until {until} UTC: off topic\r\n" * 3
    assert dave.output() == ""
    dave.send("still talking")
    assert "dave: still talking" in bob.output()
    carol.send("/unmute bob")
    assert "* carol unmuted bob\r\n" in carol.output()
    bob.send("thanks")
    assert "bob: thanks" in dave.output()


def test_a_timed_mute_runs_out(lab):
    factory, clock, store, clients = lab
    clients["ann"].send("/mute carol 30s")  # the owner may mute an operator
    clock.advance(30)
    assert clients["bob"].output().endswith("* carol may speak again (the mute ran out)\r\n")
    clients["carol"].send("back")
    assert "carol: back" in clients["bob"].output()


def test_nobody_muted_is_the_fast_path(lab, monkeypatch):
    """A room line with nobody muted in the room runs the handler straight away: no refusal is computed."""
    factory, clock, store, clients = lab
    room = factory.rooms["lab"]
    assert room.muted == {} and room.muted is room.authority.mutes
    checked = []
    refusal = TABLE.refusal
    monkeypatch.setattr(TABLE, "refusal", lambda caller, command: checked.append(command.name) or refusal(caller, command))
    clients["bob"].send("fast")
    assert "bob: fast" in clients["ann"].output() and checked == []
    clients["carol"].send("/mute dave")
    clients["bob"].send("checked")
    assert "bob: checked" in clients["ann"].output() and checked[-1:] == ["say"]  # (/mute: checked by the dialogue and the table)


# -- topic -----------------------------------------------------------------------------------


def test_the_topic_is_set_by_operators_shown_on_join_in_info_and_list(lab):
    factory, clock, store, clients = lab
    carol, bob = clients["carol"], clients["bob"]
    bob.send("/topic mine now")
    assert bob.output() == "Error: only operators of lab may set its topic.\r\n"
    bob.send("/topic")
    assert bob.output() == "lab has no topic.\r\n"
    long_topic = "Release planning for 2.0: see the wiki page before asking"
    carol.send(f"/topic {long_topic}")
    assert carol.output() == f"{clock_stamp(clock)} * carol set the topic: {long_topic}\r\n"
    bob.output()
    bob.send("/topic")
    assert bob.output() == f"Topic of lab: {long_topic}\r\n"
    bob.send("/exit", "list", "info lab")
    out = bob.output()
    assert "  lab  (3 here, owner ann, topic: Release planning for 2.0: see the...)\r\n" in out
    assert f"Topic: {long_topic}\r\n" in out
    clients["dave"].send("hi")
    bob.send("join lab")  # after Entered, before the replayed lines
    out = bob.output()
    assert out.startswith("Entered room lab (4 here). Type /help for commands, /exit to leave.\r\n"
                          f"Topic: {long_topic}\r\n--- 1 earlier line in lab")
    carol.output()
    carol.send("/topic " + "x" * 301)
    assert carol.output() == "Error: a topic has at most 300 characters.\r\n"
    carol.send("/topic -")
    assert "* carol cleared the topic\r\n" in carol.output()
    assert factory.rooms["lab"].authority.topic == ""
    assert [r[3] for r in rows(store, "topic")] == [{"text": long_topic}, {"text": ""}]


def test_open_topic_lets_anyone_set_it(lab):
    factory, clock, store, clients = lab
    clients["ann"].send("/open-topic on", "/open-topic on")
    assert clients["ann"].output().endswith("* ann turned open-topic on\r\nopen-topic is on in lab already.\r\n")
    clients["bob"].send("/topic bob's topic")
    assert "* bob set the topic: bob's topic" in clients["dave"].output()
    assert rows(store, "room_setting") == [("room_setting", "ann", "lab", {"name": "open-topic", "value": "on"})]


# -- invite-only -------------------------------------------------------------------------------


def test_an_invite_only_room_is_hidden_and_closed_to_all_but_the_invited(lab):
    factory, clock, store, clients = lab
    carol = clients["carol"]
    user(factory, clock, "frank").disconnect()  # offline: invited all the same
    erin = user(factory, clock, "erin")
    carol.send("/invite-only on", "/invite frank")
    assert carol.output().endswith("* carol turned invite-only on\r\n"
                                   f"{clock_stamp(clock)} * carol invited frank\r\nfrank is invited to lab.\r\n")
    erin.send("list", "info lab", "join lab")
    out = erin.output()
    assert "lab" not in out.split("Rooms (1):")[1].split("menu>")[0]
    assert "Error: There is no room called lab.\r\n" in out
    assert "Error: lab is invite-only; ask one of its operators for an /invite.\r\n" in out
    frank = user(factory, clock, "frank")
    frank.send("list", "join lab")
    out = frank.output()
    assert "  lab  (4 here, owner ann, invite-only)\r\n" in out and "Entered room lab" in out
    carol.send("/uninvite frank")
    assert "* carol withdrew frank's invitation\r\n" in carol.output()
    assert rows(store, "invite", "uninvite") == [("invite", "carol", "lab", {"target": "frank"}),
                                                 ("uninvite", "carol", "lab", {"target": "frank"})]
    # The members already in stay; the owner and operators always enter.
    assert "frank" in factory.rooms["lab"].member_names()
    clients["bob"].send("/exit", "join lab")
    assert "Error: lab is invite-only" in clients["bob"].output()
    carol.send("/exit", "join lab")
    assert "Entered room lab" in carol.output()


def test_server_admins_see_every_room():
    factory, clock, store = start(admins=("erin",))
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab", "/invite-only on")
    bob, erin = user(factory, clock, "bob"), user(factory, clock, "erin")
    bob.send("list")
    assert "  lab  (" not in bob.output()
    erin.send("list", "info lab")
    out = erin.output()
    assert "  lab  (1 here, owner ann, invite-only)" in out and "Room: lab\r\n" in out


# -- secret rooms -------------------------------------------------------------------------------


def test_a_secret_room_is_hidden_from_all_but_those_it_concerns(lab):
    """RFC 2812 §3.2.6 (+s): not in list, info, /users for outsiders; members, owner, operators, invitees see it."""
    factory, clock, store, clients = lab
    carol, bob = clients["carol"], clients["bob"]
    bob.send("/secret on")
    assert bob.output() == "Error: only operators of lab may use /secret.\r\n"
    carol.send("/secret on", "/secret on")
    assert carol.output().endswith("* carol turned secret on\r\nsecret is on in lab already.\r\n")
    assert rows(store, "room_setting") == [("room_setting", "carol", "lab", {"name": "secret", "value": "on"})]
    erin, frank = user(factory, clock, "erin"), user(factory, clock, "frank")
    erin.send("list", "info lab", "users")
    out = erin.output()
    assert "  lab  (" not in out and "Error: There is no room called lab.\r\n" in out and "(in lab)" not in out
    erin.send("join lab")  # secret is not closed: who knows the name may enter, and then sees it
    assert "Entered room lab" in erin.output()
    erin.send("/exit", "list")
    assert "  lab  (" not in erin.output()
    carol.send("/invite frank")
    frank.send("list", "info lab")
    out = frank.output()
    assert "  lab  (4 here, owner ann, secret)\r\n" in out and "Secret: yes\r\n" in out
    bob.send("/exit", "list")  # a member who left is an outsider again
    assert "  lab  (" not in bob.output()
    factory.shut_down("bye")
    factory, clock, store = start(store, at=clock.seconds() + 60)
    assert factory.rooms["lab"].authority.secret
    ann = user(factory, clock, "ann")  # the owner, in no room, still sees it
    ann.send("list")
    assert "  lab  (0 here, owner ann, secret)\r\n" in ann.output()
    ann.send("join lab", "/secret off")
    assert "* ann turned secret off\r\n" in ann.output()
    bob = user(factory, clock, "bob")
    bob.send("list")
    assert "  lab  (1 here, owner ann)\r\n" in bob.output()


def test_a_room_key_and_member_limit(lab):
    """/key KEY|off, /limit N|off (operators); join ROOM KEY; the owner, operators and invitees need neither."""
    factory, clock, store, clients = lab
    carol, bob = clients["carol"], clients["bob"]
    bob.send("/key beer", "/limit 3")
    assert bob.output() == "".join(f"Error: only operators of lab may use /{c}.\r\n" for c in ("key", "limit"))
    carol.send("/key two words", "/key a,b", "/limit 0", "/limit 100001", "/limit x")
    assert carol.output() == (
        "Error: usage: /key KEY|off\r\n"
        "Error: a key is 1 to 23 ASCII letters, digits or signs, without spaces or commas.\r\n"
        + "Error: usage: /limit N|off (a member limit is a number from 1 to 100000.)\r\n" * 3)
    carol.send("/key beer", "/limit 4", "/limit 4")
    out = carol.output()
    assert "* carol turned key on\r\nThe key of lab is beer: others enter with 'join lab beer'.\r\n" in out
    assert out.endswith("* carol set limit to 4\r\nThe member limit of lab is 4 already.\r\n")
    assert rows(store, "room_setting") == [("room_setting", "carol", "lab", {"name": "key", "value": "on"}),
                                           ("room_setting", "carol", "lab", {"name": "limit", "value": "4"})]
    assert "beer" not in str(store.events) and "beer" not in str(factory.rooms["lab"].history.ring)
    erin, frank = user(factory, clock, "erin"), user(factory, clock, "frank")
    erin.send("info lab", "list", "join lab", "join lab bees", "join lab beer")
    out = erin.output()
    assert "Key: yes\r\nMember limit: 4\r\n" in out and "  lab  (4 here, owner ann, key, limit 4)\r\n" in out
    assert "Error: lab has a key: join lab KEY.\r\nmenu>" in out and "Error: wrong key for lab.\r\n" in out
    assert "Error: lab is full (4 members).\r\n" in out and "Entered room lab" not in out
    carol.send("/invite frank")
    frank.send("join lab")  # invited: no key, no limit
    assert "Entered room lab" in frank.output()
    bob.send("/exit")
    erin.send("join lab beer")
    assert "Entered room lab" not in erin.output()  # (frank took bob's place)
    clients["dave"].send("/exit")
    erin.send("join lab beer")
    assert "Entered room lab" in erin.output()
    factory.shut_down("bye")
    factory, clock, store = start(store, at=clock.seconds() + 60)
    room = factory.rooms["lab"]
    assert room.authority.key == "beer" and room.authority.limit == 4
    carol = user(factory, clock, "carol", "lab")
    carol.send("/key off", "/limit off", "/key off")
    assert carol.output().endswith("* carol turned key off\r\n" f"{clock_stamp(clock)} * carol turned limit off\r\n"
                                   "lab has no key.\r\n")
    bob = user(factory, clock, "bob")
    bob.send("join lab")
    assert "Entered room lab" in bob.output()


# -- roles -----------------------------------------------------------------------------------


def test_op_deop_and_giving_the_room_away(lab):
    factory, clock, store, clients = lab
    ann, bob, carol = clients["ann"], clients["bob"], clients["carol"]
    ann.send("/op carol", "/deop bob", "/op bob", "/deop carol")
    assert ann.output().endswith(
        "Error: carol is already an operator of lab.\r\nError: bob is not an operator of lab.\r\n"
        f"{clock_stamp(clock)} * ann made bob an operator\r\nbob is an operator of lab.\r\n"
        f"{clock_stamp(clock)} * ann took carol's operator role away\r\ncarol is no longer an operator of lab.\r\n")
    ann.send("/mute bob 1h", "/owner bob")  # nobody acts on the owner: lift the mute first (an event and a row)
    assert ann.output().endswith("Error: bob is muted in lab; /unmute bob first.\r\n")
    assert factory.rooms["lab"].owner == "ann"
    ann.send("/unmute bob", "/owner bob")
    assert ann.output().endswith("* ann gave lab to bob\r\nbob owns lab now; you are one of its operators.\r\n")
    assert not factory.rooms["lab"].muted and ("mute", "bob") not in store.room_values[
        factory.rooms["lab"].history.room_id]
    room = factory.rooms["lab"]
    assert room.owner == "bob" and factory.moderation.operators(room) == ["ann"]
    assert store.rooms["lab"].owner == "bob"
    ann.send("/ban bob")
    assert ann.output() == "Error: bob owns lab; nobody can do that to its owner.\r\n"
    bob.send("/kick ann", "/who")
    assert bob.output().endswith(f"* bob kicked ann\r\nIn lab (3): ~bob, carol, dave\r\n")
    assert rows(store, "op", "deop", "owner") == [
        ("op", "ann", "lab", {"target": "carol"}), ("op", "ann", "lab", {"target": "bob"}),
        ("deop", "ann", "lab", {"target": "carol"}), ("owner", "ann", "lab", {"target": "bob", "previous": "ann"})]


def test_the_owner_puts_its_operator_role_down_and_takes_it_back(lab):
    """
    The owner's /deop of itself (IRC -o, irctest testInviteInviteOnly): it acts as a member, unmarked, but
    keeps the room, its owner's commands and its protection; /op of itself takes the role back. Stored.
    """
    factory, clock, store, clients = lab
    ann, carol, bob = clients["ann"], clients["carol"], clients["bob"]
    carol.send("/deop ann")
    assert carol.output() == "Error: only the owner of lab may use /deop.\r\n"
    ann.send("/op ann", "/deop ann", "/deop ann")
    assert ann.output().endswith("Error: ann is already an operator of lab.\r\n"
                                 f"{clock_stamp(clock)} * ann put the operator role down\r\n"
                                 "ann is no longer an operator of lab.\r\nError: ann is not an operator of lab.\r\n")
    room = factory.rooms["lab"]
    assert room.owner == "ann" and room.authority.owner_down
    ann.send("/kick bob", "/invite-only on", "/topic mine", "/who")
    assert ann.output() == ("Error: only operators of lab may use /kick.\r\n"
                            "Error: only operators of lab may use /invite-only.\r\n"
                            "Error: only operators of lab may set its topic.\r\n"
                            "In lab (4): ann, bob, @carol, dave\r\n")
    assert "* ann put the operator role down" in carol.output()
    carol.send("/ban ann", "/mute ann")  # still the owner: nobody bans or mutes it
    assert carol.output() == "Error: ann owns lab; nobody can do that to its owner.\r\n" * 2
    factory.shut_down("bye")
    factory, clock, store = start(store, at=clock.seconds() + 60)
    assert factory.rooms["lab"].authority.owner_down
    ann = user(factory, clock, "ann", "lab")
    ann.send("/op ann", "/kick ann", "/who")
    out = ann.output()
    assert "* ann took the operator role back\r\nann is an operator of lab.\r\n" in out
    assert out.endswith("Error: you cannot do that to yourself.\r\nIn lab (1): ~ann\r\n")
    assert not factory.rooms["lab"].authority.owner_down
    assert rows(store, "op", "deop")[-2:] == [("deop", "ann", "lab", {"target": "ann"}),
                                              ("op", "ann", "lab", {"target": "ann"})]


def test_giving_the_room_away_while_the_owners_role_is_down(lab):
    factory, clock, store, clients = lab
    ann = clients["ann"]
    ann.send("/deop ann", "/owner bob")
    assert ann.output().endswith("bob owns lab now; you are one of its operators.\r\n")
    room = factory.rooms["lab"]
    assert room.owner == "bob" and not room.authority.owner_down
    assert factory.moderation.operators(room) == ["ann", "carol"]
    ann.send("/kick dave")  # an operator now
    assert "* ann kicked dave" in ann.output()


def test_an_operator_kicks_the_owner_who_may_come_back_at_once(lab):
    """RFC 2812 §3.2.8, ngIRCd, InspIRCd: the creator is kicked as any member; no ban keeps the owner out."""
    factory, clock, store, clients = lab
    carol, ann = clients["carol"], clients["ann"]
    carol.send("/invite-only on", "/kick ann enough")
    assert "* carol kicked ann (enough)" in carol.output()
    assert "You were kicked from lab by carol: enough" in ann.output()
    ann.send("/exit", "join lab")
    assert "Entered room lab" in ann.output()
    assert rows(store, "kick") == [("kick", "carol", "lab", {"target": "ann", "reason": "enough"})]


def test_a_failed_write_changes_nothing_and_says_so(lab):
    factory, clock, store, clients = lab
    store.broken = "disk full"
    clients["carol"].send("/ban bob", "/topic x")
    assert clients["carol"].output() == (
        "Error: Could not save the ban (server storage problem); try again later.\r\n"
        "Error: Could not save the topic (server storage problem); try again later.\r\n")
    room = factory.rooms["lab"]
    assert not room.authority.bans and not room.authority.topic and "bob" in room.member_names()


def test_a_deleted_account_loses_its_roles_and_bans(lab):
    factory, clock, store, clients = lab
    clients["ann"].send("/ban dave 1h")
    clients["carol"].send("/exit", "deleteme", "secret1")
    room = factory.rooms["lab"]
    assert "carol" not in room.authority.operators
    assert factory.moderation.operators(room) == []


# -- every action is a room event ---------------------------------------------------------------

ACTIONS = [
    ("/kick bob why", EventKind.KICK, "bob", "why", "* carol kicked bob (why)"),
    ("/ban bob 2h why", EventKind.BAN, "bob", "why", "* carol banned bob for 2h (why)"),
    ("/mute bob 10m", EventKind.MUTE, "bob", "", "* carol muted bob for 10m"),
    ("/topic hello", EventKind.TOPIC, "", "hello", "* carol set the topic: hello"),
    ("/invite-only on", EventKind.SETTING, "invite-only", "on", "* carol turned invite-only on"),
    ("/invite erin", EventKind.INVITE, "erin", "", "* carol invited erin"),
]


@pytest.mark.parametrize("line, kind, target, text, shown", ACTIONS)
def test_every_action_is_a_room_event_in_history(lab, line, kind, target, text, shown):
    factory, clock, store, clients = lab
    user(factory, clock, "erin")
    clients["carol"].send(line)
    assert shown in clients["dave"].output()
    room = factory.rooms["lab"]
    clock.advance(1)  # the history commit
    stored = [e for e in store.history.get(room.history.room_id, []) if e.kind is kind]
    assert len(stored) == 1 and (stored[0].sender, stored[0].target, stored[0].text) == ("carol", target, text)
    if kind in (EventKind.BAN, EventKind.MUTE):
        assert stored[0].until > stored[0].at
    clients["dave"].send("/history all")
    assert shown in clients["dave"].output()


# -- the flood limiter's escalation --------------------------------------------------------------


def flood(client, clock, lines: int, seconds: float, until=lambda: False) -> float:
    """
    ``client`` sends ``lines`` lines at once (the server reads them as its
    flood limit lets it); the clock runs for ``seconds`` in steps of 0.05 s
    or until ``until()``; returns the seconds it ran.
    """
    client.protocol.dataReceived(b"".join(f"line {index}\r\n".encode() for index in range(lines)))
    ran = 0.0
    while ran < seconds and not until():
        clock.advance(0.05)
        ran += 0.05
    return ran


def test_a_flooder_is_muted_then_cut_off_and_operators_see_why():
    factory, clock, store = start(flood_rate=5, flood_burst=10, flood_mute=60)
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    bob = user(factory, clock, "bob", "lab")
    ann.output()
    room = factory.rooms["lab"]
    # Paused about 0.2 s a line past the burst: muted once that adds up to FLOOD_PAUSED_LIMIT.
    took = flood(bob, clock, 1000, FLOOD_WINDOW, lambda: bool(room.muted))
    assert FLOOD_PAUSED_LIMIT <= took < 2 * FLOOD_PAUSED_LIMIT
    assert "* chatd muted bob for 1m (flooding)\r\n" in ann.output()
    out = bob.output()
    assert "Error: you are sending too fast" in out and "Error: you are muted in lab until" in out
    assert rows(store, "mute")[-1] == ("mute", "", "lab", {"target": "bob", "until": "2026-09-21T14:14:" +
                                       f"{int(clock.seconds() + 60) % 60:02d}Z", "reason": "flooding"})
    assert not bob.transport.disconnecting
    # It goes on: cut off once the pauses add up again (the rest of the 1000 lines are still coming).
    took = flood(bob, clock, 0, FLOOD_WINDOW, lambda: bob.transport.disconnecting)
    assert FLOOD_PAUSED_LIMIT <= took < 2 * FLOOD_PAUSED_LIMIT
    assert bob.output().endswith("Error: you kept sending too fast after being muted; goodbye.\r\n")
    out = ann.output()
    assert "* chatd kicked bob (flooding)\r\n" in out and "bob left" not in out
    assert rows(store, "kick")[-1] == ("kick", "", "lab", {"target": "bob", "reason": "flooding"})


def test_a_paste_now_and_then_is_only_slowed():
    factory, clock, store = start(flood_rate=5, flood_burst=10, flood_mute=60)
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    for _ in range(5):
        flood(ann, clock, 45, FLOOD_WINDOW)  # 35 lines past the burst: paused about 7 s each minute
    assert "Error: you are sending too fast" in ann.output()
    assert not factory.rooms["lab"].muted and not ann.transport.disconnecting


def test_no_escalation_with_flood_mute_0():
    factory, clock, store = start(flood_rate=5, flood_burst=10, flood_mute=0)
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    flood(ann, clock, 1000, 3 * FLOOD_WINDOW)
    assert not factory.rooms["lab"].muted and not ann.transport.disconnecting


# -- docs/PROTOCOL.md ------------------------------------------------------------------------------


def test_the_unprompted_messages_of_room_authority_are_documented():
    """Kick and ban notices, the invitation notice and the flood cut-off are rows of the table, code and all."""
    from test_protocol_doc import _documented

    factory, clock, store = start(flood_rate=5, flood_burst=10, flood_mute=60)
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    bob, carol = user(factory, clock, "bob", "lab"), user(factory, clock, "carol", "lab")
    erin = Client(factory, clock, tagged=True)
    erin.register("erin")
    for client in (bob, carol):
        client.send("/client test 1.0")
        client.output()
    ann.send("/kick bob", "/ban carol", "/invite erin")

    def notice(client, words):
        return [line.split(" ", 1) for line in client.output().splitlines() if words in line][-1]

    assert _documented(*notice(bob, "You were kicked"))
    assert _documented(*notice(carol, "You were banned"))
    assert _documented(*notice(erin, "invited you"))
    dave = user(factory, clock, "dave", "lab")
    dave.send("/client test 1.0")
    flood(dave, clock, 1000, 3 * FLOOD_WINDOW, lambda: dave.transport.disconnecting)
    assert dave.transport.disconnecting and _documented(*notice(dave, "goodbye"))


# -- another front-end ------------------------------------------------------------------------------


def test_the_same_rules_and_events_through_a_structured_front_end():
    """The test front-end of issue 12 runs the same commands by name: same rules, the events as values."""
    from test_frontend_events import EventSession, Structured

    from chatd import errors

    factory, clock, store = start()
    ann = EventSession(factory, Structured())
    ann.run("register", "ann", "secret1")
    ann.run("create", "lab")
    ann.run("join", "lab")
    bob = user(factory, clock, "bob", "lab")
    carol = EventSession(factory, Structured())
    carol.run("register", "carol", "secret1")
    carol.run("join", "lab")
    with pytest.raises(errors.NotAllowed, match="only operators of lab may use /ban."):
        carol.run("ban", "bob", "")
    ann.run("ban", "bob", "10m spam")
    ann.run("kick", "carol", "")
    clock.advance(0)
    moderation = [(e.kind, e.sender, e.target, e.text, e.until and e.until - e.at) for e in ann.events if e.target]
    assert moderation == [(EventKind.BAN, "ann", "bob", "spam", 600.0), (EventKind.KICK, "ann", "bob", "spam", 0.0),
                          (EventKind.KICK, "ann", "carol", "", 0.0)]
    assert carol.room is None and carol.replies[-1] == "You were kicked from lab by ann"
    assert "You were banned from lab by ann for 10m: spam" in bob.output()


def test_an_invite_only_room_is_not_told_by_users_or_delete():
    """Attacker: /users said 'ann2 (in Secret7)' and delete answered 'Only its owner, ann2, can delete Secret7.'"""
    factory, clock, store = start()
    ann = user(factory, clock, "ann")
    ann.send("create Secret7", "join Secret7", "/invite-only on")
    dave = user(factory, clock, "dave")
    dave.send("users", "delete secret7")
    out = dave.output()
    assert "Online (2): ann, dave\r\n" in out and "Secret7" not in out
    assert "Error: There is no room called secret7.\r\n" in out
    ann.send("/users")
    assert "Online (2): ann (in Secret7), dave\r\n" in ann.output()


@pytest.mark.parametrize("owner_first", [True, False])
def test_a_room_given_to_an_account_being_deleted_never_outlives_it(tmp_path, owner_first):
    """
    Attacker: /owner (and /op, /invite, /mute) racing deleteme left the room owned by the deleted name, for
    whoever registered it next. Changes concerning one account are made one at a time (ChatFactory.concerning).
    """
    from helpers import Held, make_factory
    hashes, writes = Held(), Held()
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0), hash_runner=hashes, store_runner=writes)
    writes.run_all()

    def settle():
        for _ in range(6):
            hashes.run_all()
            writes.run_all()
            clock.advance(0)

    ann, bob = Client(factory, clock), Client(factory, clock)
    ann.send("register ann", "secret1", "secret1")
    bob.send("register bob", "secret1", "secret1")
    settle()
    ann.send("create lab", "join lab")
    settle()
    ann.output(), bob.output()
    if owner_first:
        ann.send("/owner bob")
        bob.send("deleteme", "secret1")
    else:
        bob.send("deleteme", "secret1")
        hashes.run_all()  # the password is checked: the deletion has the account
        ann.send("/owner bob")
    settle()
    assert "bob" not in factory.accounts
    assert all(name_key(room.owner) != "bob" for room in factory.rooms.values())
    again, _ = make_factory(str(tmp_path))
    assert all(name_key(room.owner) != "bob" for room in again.rooms.values())
    if not owner_first:
        assert "There is no user called bob." in ann.output()


@pytest.mark.parametrize("command", ["/kick bob", "/ban bob", "/ban bob 2h", "/mute bob", "/mute bob 10m",
                                     "/disconnect bob", "/lock bob", "/banip 192.0.2.9", "/banip 192.0.2.9 1h"])
def test_every_reason_has_at_most_200_characters(command):
    """One rule for every REASON argument, declared once (chatd.commands.moderation.REASON, DURATION_REASON)."""
    factory, clock, store = start(admins=("root",))
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    bob = user(factory, clock, "bob", "lab")
    root = user(factory, clock, "root", "lab")
    ann.send("/op root")
    root.output()
    root.send(f"{command} {'x' * 201}")
    assert root.output() == "Error: a reason has at most 200 characters.\r\n"
    assert "bob" in factory.online and not factory.rooms["lab"].authority.bans and not factory.admin.bans
    assert not factory.rooms["lab"].authority.mutes and not bob.transport.disconnecting
    root.send(f"{command} {'x' * 200}")
    assert "Error" not in root.output()


def test_a_banned_account_is_not_given_the_room_until_unbanned(lab):
    """/owner does not lift a ban silently (issue 14 fresh tester): refused; /unban records the lifting."""
    factory, clock, store, clients = lab
    ann = clients["ann"]
    user(factory, clock, "jo").disconnect()
    ann.send("/ban jo 2h", "/owner jo")
    assert ann.output().endswith("Error: jo is banned from lab; /unban jo first.\r\n")
    room = factory.rooms["lab"]
    assert room.owner == "ann" and "jo" in room.authority.bans and not rows(store, "owner")
    ann.send("/unban jo", "/owner jo")
    assert ann.output().endswith("jo owns lab now; you are one of its operators.\r\n")
    assert [row[0] for row in rows(store, "ban", "unban", "owner")] == ["ban", "unban", "owner"]


def test_a_muted_member_may_not_set_the_topic_nor_give_reasons(lab):
    """
    Every command that puts a member's text before the room refuses a muted
    member as a line is refused (Arg.said): /topic TEXT (reading it stays
    allowed), and a muted operator's kick, ban and mute reasons (acting without one stays allowed).
    """
    factory, clock, store, clients = lab
    ann, bob, carol = clients["ann"], clients["bob"], clients["carol"]
    ann.send("/open-topic on", "/mute bob 10m", "/mute carol")
    for client in clients.values():
        client.output()
    bob.send("/topic hello from a muted member", "/topic -", "/topic")
    assert bob.output() == (f"Error: you are muted in lab until {hhmm(clock, 600)} UTC.\r\n" * 2
                            + "lab has no topic.\r\n")
    assert not factory.rooms["lab"].authority.topic and not rows(store, "topic")
    carol.send("/kick dave hello everyone", "/ban dave 1h hello everyone", "/mute dave hello everyone")
    assert carol.output() == "Error: you are muted in lab.\r\n" * 3
    assert "dave" in factory.rooms["lab"].member_names() and not rows(store, "kick", "ban")
    carol.send("/mute dave 1h", "/kick dave")
    out = carol.output()
    assert "* carol muted dave for 1h\r\n" in out and "* carol kicked dave\r\n" in out
    ann.send("/unmute bob")
    bob.send("/topic spoken again")
    assert "* bob set the topic: spoken again" in bob.output()


def test_server_admins_have_operator_rights_in_every_room():
    """Like IRC operators' override: an admin kicks, bans, mutes and sets the topic anywhere, public too."""
    factory, clock, store = start(admins=("root",))
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    bob = user(factory, clock, "bob", "lab")
    root = user(factory, clock, "root", "lab")
    root.send("/mute bob 10m", "/topic set by an admin", "/kick bob")
    out = root.output()
    assert "* root muted bob for 10m" in out and "* root set the topic" in out and "* root kicked bob" in out
    root.send("/op bob", "/ban ann", "/who")
    assert root.output().startswith("Error: only the owner of lab may use /op.\r\n"
                                    "Error: ann owns lab; nobody can do that to its owner.\r\n")
    root.send("/exit", "public")
    bob.send("/exit", "public")
    dave = user(factory, clock, "dave", "public")
    for client in (root, bob, dave):
        client.output()
    dave.send("/kick bob", "/mute bob", "/topic mine", "/op bob")
    assert dave.output() == "Error: only server admins moderate public.\r\n" * 4
    root.send("/mute bob 5m", "/kick dave spam", "/op bob")
    out = root.output()
    assert "* root muted bob for 5m" in out and "* root kicked dave (spam)" in out
    assert out.endswith("Error: public has no owner.\r\n")
    root.send("/who")
    assert "root" in root.output() and "@root" not in root.output()  # (marks follow the room's roles)


@pytest.mark.parametrize("line", ["/invite eve extra words", "/op eve x", "/deop eve x", "/owner eve x",
                                  "/uninvite eve x", "/unban eve x", "/unmute eve x"])
def test_a_name_argument_is_one_word(lab, line):
    factory, clock, store, clients = lab
    user(factory, clock, "eve").disconnect()
    clients["ann"].send(line)
    assert clients["ann"].output() == f"Error: usage: /{line.split()[0][1:]} NAME\r\n"
