"""
Voice and moderated rooms (issue 16; docs/PROTOCOL.md "Room authority"):
``/moderated on|off`` and ``/voice``/``/devoice NAME`` are room rules for
every front-end (RFC 2811 ``+m``, ``+v``): in a moderated room only voiced
members, operators and the owner speak. Stored and restored like operators,
shared with other nodes, a room event each. Driven through the line
front-end on a MemoryStore with a Clock (tests/test_moderation.py's world).
"""

from __future__ import annotations

import pytest

from chatd.commands import TABLE
from chatd.core.events import EventKind
from test_moderation import lab, room_events, rows, start, user  # noqa: F401  (lab: the fixture)

REFUSED = "Error: lab is moderated: only voiced members and operators may speak.\r\n"


def test_only_operators_voice_and_moderate(lab):  # noqa: F811
    factory, clock, store, clients = lab
    bob = clients["bob"]
    bob.send("/moderated on", "/voice dave", "/devoice dave")
    assert bob.output() == ("Error: only operators of lab may use /moderated.\r\n"
                            "Error: only operators of lab may use /voice.\r\n"
                            "Error: only operators of lab may use /devoice.\r\n")
    bob.send("/moderated maybe")
    assert bob.output() == "Error: only operators of lab may use /moderated.\r\n"
    clients["carol"].send("/moderated maybe", "/voice ghost")
    assert clients["carol"].output() == ("Error: usage: /moderated on|off\r\n"
                                         "Error: There is no user called ghost.\r\n")
    assert not factory.rooms["lab"].authority.moderated and not rows(store, "room_setting", "voice")


def test_in_a_moderated_room_only_voiced_members_and_operators_speak(lab):  # noqa: F811
    factory, clock, store, clients = lab
    ann, bob, carol, dave = (clients[name] for name in ("ann", "bob", "carol", "dave"))
    carol.send("/moderated on")
    assert carol.output().endswith("* carol turned moderated on\r\n")
    assert dave.output().endswith("* carol turned moderated on\r\n")
    bob.output()
    bob.send("hello?", "/me waves", "/send notes.txt")
    assert bob.output() == REFUSED * 3
    assert dave.output() == ""
    ann.send("the owner speaks")
    carol.send("an operator speaks")
    assert "ann: the owner speaks" in dave.output() and "carol: an operator speaks" in bob.output()
    carol.send("/voice bob")
    assert carol.output().endswith("bob is voiced in lab.\r\n")
    assert dave.output().endswith("* carol gave bob a voice\r\n")
    bob.output()
    bob.send("thanks")
    assert "bob: thanks" in dave.output()
    dave.send("and me?")
    assert dave.output() == REFUSED
    carol.output()
    carol.send("/voice bob")
    assert carol.output() == "Error: bob is already voiced in lab.\r\n"
    dave.send("/who")
    assert dave.output().endswith("In lab (4): ~ann, +bob, @carol, dave\r\n")
    outsider = user(factory, clock, "erin")
    outsider.send("info lab")
    out = outsider.output()
    assert "Voiced: bob\r\n" in out and "Moderated: yes\r\n" in out
    carol.send("/devoice bob")
    assert carol.output().endswith("bob is no longer voiced in lab.\r\n")
    assert dave.output().endswith("* carol took bob's voice away\r\n")
    bob.output()
    bob.send("again?")
    assert bob.output() == REFUSED
    carol.send("/devoice bob", "/moderated off")
    assert carol.output().startswith("Error: bob is not voiced in lab.\r\n")
    bob.send("free again")
    assert "bob: free again" in dave.output()
    assert [(e.event, e.user, e.details) for e in
            (e for _, e in store.events if e.event in ("voice", "devoice", "room_setting"))] == [
        ("room_setting", "carol", {"name": "moderated", "value": "on"}), ("voice", "carol", {"target": "bob"}),
        ("devoice", "carol", {"target": "bob"}), ("room_setting", "carol", {"name": "moderated", "value": "off"})]


def test_a_mute_beats_a_voice_and_a_voice_is_no_topic_right(lab):  # noqa: F811
    factory, clock, store, clients = lab
    carol, bob = clients["carol"], clients["bob"]
    carol.send("/moderated on", "/voice bob", "/mute bob")
    carol.output(), bob.output()
    bob.send("muted anyway")
    assert bob.output() == "Error: you are muted in lab.\r\n"
    carol.send("/unmute bob")
    bob.output()
    bob.send("/topic mine")
    assert bob.output() == "Error: only operators of lab may set its topic.\r\n"
    clients["ann"].send("/open-topic on")
    clients["dave"].send("/topic dave's, unvoiced")  # (the topic is the room's text: the moderated rule holds)
    assert clients["dave"].output().endswith(REFUSED)
    bob.output()
    bob.send("/topic bob's, voiced")
    assert "* bob set the topic: bob's, voiced" in bob.output()


def test_an_operator_or_the_owner_may_be_voiced_too(lab):  # noqa: F811
    factory, clock, store, clients = lab
    clients["carol"].send("/voice carol", "/voice ann")
    out = clients["carol"].output()
    assert "carol is voiced in lab.\r\n" in out and "ann is voiced in lab.\r\n" in out
    room = factory.rooms["lab"]
    assert factory.moderation.marks(room, "ann") == "@+" and factory.moderation.marks(room, "carol") == "@+"
    assert factory.moderation.marks(room, "bob") == ""
    clients["dave"].send("/who")
    assert clients["dave"].output().endswith("In lab (4): ~ann, bob, @carol, dave\r\n")  # (the highest mark)


def test_a_moderated_room_checks_each_line_and_an_open_one_takes_the_fast_path(lab, monkeypatch):  # noqa: F811
    factory, clock, store, clients = lab
    checked = []
    refusal = TABLE.refusal
    monkeypatch.setattr(TABLE, "refusal", lambda caller, command: checked.append(command.name) or refusal(caller, command))
    clients["bob"].send("fast")
    assert checked == []
    clients["carol"].send("/moderated on")
    clients["carol"].send("checked")
    assert checked[-1:] == ["say"] and "carol: checked" in clients["bob"].output()


def test_voice_and_moderated_last_across_a_restart_and_go_with_a_deleted_account(lab):  # noqa: F811
    factory, clock, store, clients = lab
    clients["carol"].send("/moderated on", "/voice dave", "/voice bob")
    again, clock2, _ = start(store)
    room = again.rooms["lab"]
    assert room.authority.moderated and set(room.authority.voiced) == {"bob", "dave"}
    dave = user(again, clock2, "dave", "lab")
    frank = user(again, clock2, "frank", "lab")
    dave.send("voiced after a restart")
    assert "dave: voiced after a restart" in frank.output()
    frank.send("not me")
    assert frank.output() == REFUSED
    clients["dave"].send("/exit", "deleteme", "secret1")
    assert "dave" not in factory.rooms["lab"].authority.voiced
    assert store.room_values and not [value for value in store.room_values.get(room.history.room_id, {})
                                      if value == ("voice", "dave")]


def test_a_change_made_on_another_node_applies_here():
    factory, clock, store = start()
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab")
    bob = user(factory, clock, "bob", "lab")
    room = factory.rooms["lab"]
    factory.moderation.changed_elsewhere(room, [["setting", "moderated", "on"]])
    bob.output()
    bob.send("hello")
    assert bob.output() == REFUSED
    factory.moderation.changed_elsewhere(room, [["voice", "bob", "1"]])
    bob.send("hello")
    assert "bob: hello" in ann.output()
    factory.moderation.changed_elsewhere(room, [["voice", "bob", ""], ["setting", "moderated", ""]])
    assert not room.authority.voiced and not room.authority.moderated


def test_voice_changes_are_shared_with_the_other_nodes(lab, monkeypatch):  # noqa: F811
    factory, clock, store, clients = lab
    shared = []
    monkeypatch.setattr(type(factory.bus), "share", lambda bus, entry: shared.append(entry))
    clients["carol"].send("/voice bob", "/moderated on")
    assert [entry[2] for entry in shared] == [[["voice", "bob", "1"]], [["setting", "moderated", "on"]]]


@pytest.mark.parametrize("line, kind, shown", [("/voice bob", EventKind.VOICE, "* carol gave bob a voice"),
                                               ("/moderated on", EventKind.SETTING, "* carol turned moderated on")])
def test_voice_and_moderated_are_room_events_in_history(lab, line, kind, shown):  # noqa: F811
    factory, clock, store, clients = lab
    clients["carol"].send(line)
    assert [e.sender for e in room_events(factory, kind)] == ["carol"]
    clock.advance(1)
    clients["dave"].send("/history all")
    assert shown in clients["dave"].output()


def test_who_set_the_topic_and_when_is_kept_across_a_restart_and_cleared_with_it(lab):  # noqa: F811
    """IRC's 333 RPL_TOPICWHOTIME needs it (irctest testTopicPrivileges); stored beside the topic's text."""
    factory, clock, store, clients = lab
    clock.advance(60)
    clients["carol"].send("/topic plans")
    authority = start(store)[0].rooms["lab"].authority
    assert (authority.topic, authority.topic_by, authority.topic_at) == ("plans", "carol", float(int(clock.seconds())))
    clients["carol"].send("/topic -")
    authority = start(store)[0].rooms["lab"].authority
    assert (authority.topic, authority.topic_by, authority.topic_at) == ("", "", 0.0)
