"""
Room rules found by the second fresh tester of issue 16 (fix16r): the changes of one room apply in the order
asked, each checked against the state the ones before it left, from every front-end (writes held in flight:
tests.helpers.Held); admins enter every room; leaving says no reason where one may not speak; the owner
speaks in its moderated room; refusals that change nothing are no 482.
"""

from __future__ import annotations

import re

from twisted.internet.address import IPv4Address

from chatd.frontends.irc import IrcFactory
from chatd.settings import Settings
from helpers import Client, Held, data_rows, make_factory
from test_irc import IrcClient, codes


class HeldWorld:
    """A factory whose store writes wait until :meth:`settle` (as a thread pool's would); IRC with guests."""

    def __init__(self, tmp_path, **settings) -> None:
        self.data_dir = str(tmp_path)
        self.held = Held()
        self.factory, self.clock = make_factory(self.data_dir, Settings(flood_rate=0, **settings),
                                                store_runner=self.held)
        self.held.run_all()
        self.irc = IrcFactory(self.factory, guests=True)

    def settle(self) -> None:
        """Run every write held, and those they lead to (bounded)."""
        for _ in range(100):
            self.clock.advance(0)
            if not self.held.calls:
                return
            self.held.run_all()
        raise AssertionError("writes kept coming")

    def telnet(self, name: str, *lines: str, peer=None) -> Client:
        client = Client(self.factory, self.clock, peer=peer)
        client.send(f"register {name}", "secret1", "secret1")
        self.settle()
        client.send(*lines)
        self.settle()
        client.output()
        return client

    def irc_user(self, nick: str, *lines: str, port: int = 40000) -> IrcClient:
        client = IrcClient(self.irc, self.clock, port=port)
        client.register(nick)
        client.send(*lines)
        self.settle()
        client.lines()
        return client

    def log(self, action: str) -> list[list[str]]:
        self.clock.advance(1)
        self.settle()
        return [row for row in data_rows(f"{self.data_dir}/log.csv") if row[1] == action]


def test_modes_of_one_line_apply_left_to_right_and_the_final_state_is_the_last(tmp_path):
    # tester16r r8.py: '+v-v erin erin' answered 482 'not voiced' first, then +v (erin left voiced); each change was
    # checked against the state before any of the line's writes.
    world = HeldWorld(tmp_path)
    alice = world.irc_user("alice", "JOIN #lab")
    world.telnet("erin", "join lab")
    room = world.factory.rooms["lab"]
    for modes, after in [("+m-m", lambda: not room.authority.moderated),
                         ("+i-i", lambda: not room.authority.invite_only),
                         ("+s-s", lambda: not room.authority.secret),
                         ("+k-k beer *", lambda: room.authority.key == ""),
                         ("+v-v erin erin", lambda: "erin" not in room.authority.voiced),
                         ("+b-b erin erin", lambda: "erin" not in room.authority.bans),
                         ("+m-m+m", lambda: room.authority.moderated)]:
        alice.send(f"MODE #lab {modes}")
        world.settle()
        got = alice.lines()
        assert codes(got) == [], (modes, got)
        shown = [text.split(" MODE #lab ")[1] for text in got if " MODE #lab " in text]
        words = modes.split()
        signs = re.findall(r"[+-]\w", words[0])
        assert [text.split()[0] for text in shown] == signs, (modes, got)
        assert after(), modes


def test_a_repeated_change_applies_once_from_one_line_and_from_any_front_end(tmp_path):
    # tester16r: '+vvv dave dave dave' voiced dave three times (3 MODE lines, 3 history events, 3 log rows), as did
    # +ooo, +bbb and -bbb: the second identical change was checked while the first's write was in flight.
    world = HeldWorld(tmp_path)
    alice = world.irc_user("alice", "JOIN #lab")
    world.telnet("dave", "join lab")
    carol = world.telnet("carol", "join lab")
    alice.send("MODE #lab +o carol")
    world.settle()
    alice.lines(), carol.output()
    room = world.factory.rooms["lab"]
    alice.send("MODE #lab +vvv dave dave dave")
    world.settle()
    got = alice.lines()
    assert [text for text in got if " MODE " in text] == [":alice!alice@chatd MODE #lab +v dave"]
    assert "482" not in codes(got)
    assert got.count(":chatd NOTICE alice :dave is already voiced in lab.") == 2
    assert len(world.log("voice")) == 1
    assert carol.output().count("* alice gave dave a voice") == 1
    alice.send("MODE #lab +bbb dave dave dave")
    world.settle()
    assert [text for text in alice.lines() if " MODE " in text] == [":alice!alice@chatd MODE #lab +b dave!*@*"]
    assert len(world.log("ban")) == 1
    alice.send("MODE #lab -bbb dave dave dave")
    world.settle()
    got = alice.lines()
    assert [text for text in got if " MODE " in text] == [":alice!alice@chatd MODE #lab -b dave!*@*"]
    assert "dave" not in room.authority.bans and len(world.log("unban")) == 1
    # From two front-ends: carol's /voice while alice's +v is being written is told it is already done.
    alice.send("MODE #lab +v carol")
    carol.send("/voice carol")
    world.settle()
    assert "Error: carol is already voiced in lab." in carol.output()
    assert len(world.log("voice")) == 2
    alice.lines()
    alice.send("MODE #lab +ooo carol carol carol")
    world.settle()
    got = alice.lines()
    assert [text for text in got if " MODE " in text] == [] and "482" not in codes(got)
    assert got.count(":chatd NOTICE alice :carol is already an operator of lab.") == 3


def test_a_server_admin_enters_every_room_whatever_its_ban_invite_only_key_or_limit(tmp_path):
    # tester16r: an admin got 473 (IRC) and 'lab is invite-only' (telnet) while LIST showed the room and the docs
    # promise operator rights in every room (operators are not refused).
    world = HeldWorld(tmp_path, admins=("root",))
    here = IPv4Address("TCP", "127.0.0.1", 50000)
    root = world.telnet("root", peer=here)
    assert world.factory.is_admin("root")
    world.telnet("ann", "create lab", "join lab", "/invite-only on", "/key beer", "/limit 1", "/ban root")
    room = world.factory.rooms["lab"]
    assert room.authority.invite_only and room.authority.key and room.authority.limit == 1
    assert "root" in room.authority.bans
    root.send("join lab")
    world.settle()
    assert "Error" not in root.output() and room.fanout.members()
    root.send("/exit")
    world.settle()
    irc_root = IrcClient(world.irc, world.clock)
    irc_root.register("x", "PASS root:secret1")
    world.settle()
    irc_root.lines()
    irc_root.send("JOIN #lab")
    world.settle()
    got = irc_root.lines()
    assert got[0].startswith(":root!") and got[0].endswith(" JOIN #lab"), got
    assert not {"473", "474", "475", "471"} & set(codes(got))
    outsider = world.telnet("bob")
    outsider.send("join lab beer")
    world.settle()
    assert "Error: lab is invite-only" in outsider.output()  # (the rules hold for everyone else)


def test_a_member_who_may_not_speak_leaves_without_its_reason(tmp_path):
    # tester16r: an unvoiced member of a +m room (or a muted one) said its PART and QUIT reasons to the room.
    world = HeldWorld(tmp_path)
    alice = world.irc_user("alice", "JOIN #lab", "MODE #lab +m")
    bob = world.irc_user("bob", "JOIN #lab", port=40001)
    carol = world.telnet("carol", "join lab")
    alice.lines(), carol.output()
    bob.send("PART #lab :buy cheap pills at spam.example")
    world.settle()
    assert alice.lines() == [":bob!bob@chatd PART #lab"]
    assert "spam" not in carol.output()
    bob.send("JOIN #lab", "QUIT :buy cheap pills at spam.example")
    world.settle()
    got = alice.lines()
    assert ":bob!bob@chatd QUIT :Quit" in got and "spam" not in " ".join(got)
    assert "spam" not in carol.output()
    alice.send("MODE #lab -m")
    world.settle()
    dave = world.irc_user("dave", "JOIN #lab", port=40002)
    alice.lines()
    dave.send("PART #lab :see you")
    world.settle()
    assert alice.lines() == [":dave!dave@chatd PART #lab :see you"]  # (one who may speak says why)


def test_the_owner_speaks_in_its_moderated_room_with_its_operator_role_down(tmp_path):
    # tester16r: PROTOCOL.md lists the owner among who may speak in a +m room; with its role down it could not.
    world = HeldWorld(tmp_path)
    ann = world.telnet("ann", "create lab", "join lab", "/moderated on", "/deop ann")
    bob = world.telnet("bob", "join lab")
    assert world.factory.rooms["lab"].authority.owner_down
    ann.send("still mine")
    world.settle()
    assert "Error" not in ann.output()
    assert "ann: still mine" in bob.output()
    bob.send("me too?")
    world.settle()
    assert bob.output() == "Error: lab is moderated: only voiced members and operators may speak.\r\n"


def test_the_welcome_lists_every_channel_mode_and_a_topic_refused_for_moderation_is_482(tmp_path):
    world = HeldWorld(tmp_path)
    alice = IrcClient(world.irc, world.clock)
    got = alice.register("alice")
    assert ":chatd 004 alice chatd chatd-" in got[3] and got[3].endswith(" io biklmnostv bklov")
    alice.send("JOIN #lab", "MODE #lab -t+m")
    bob = world.irc_user("bob", "JOIN #lab", port=40001)
    world.settle()
    bob.send("TOPIC #lab :mine now")
    world.settle()
    assert bob.lines() == [
        ":chatd 482 bob #lab :lab is moderated: only voiced members and operators may speak."]


def test_usage_at_the_menu_is_as_typed_there(tmp_path):
    # tester16r: 'join k Beer x' at the menu answered 'usage: /join NAME [KEY]'.
    world = HeldWorld(tmp_path)
    ann = world.telnet("ann")
    ann.send("join k Beer x")
    world.settle()
    assert "Error: usage: join NAME [KEY]" in ann.output()
    ann.send("create lab", "join lab")
    world.settle()
    ann.output()
