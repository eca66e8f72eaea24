"""
chatd.nodes: another node's changes applied to this node's state (issue 17),
without Redis: two factories, what one shares handed to the other's Nodes.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.address import IPv4Address

from chatd.buses.local import LocalBus
from chatd.buses.redis import RedisBus
from chatd.core.events import EventKind
from chatd.core.ports import OnlineElsewhere
from chatd.factory import ChatFactory
from chatd.nodes import Nodes
from chatd.passwords import Passwords
from chatd.persistence import CsvStore
from chatd.protocol import ChatProtocol
from chatd.settings import Settings
from chatd.stores.memory import MemoryStore
from helpers import CHEAP_HASH, Client, Clock, run_now


class SharingBus(LocalBus):
    """A local bus that keeps what the state shares (a networked bus would send it to the other nodes)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared: list[list[Any]] = []
        #: Who is in which room on the other node (what a networked bus learns from heartbeats).
        self.there: dict[str, list[str]] = {}
        #: The Redis bus's own bookkeeping of the other nodes (never started: what :meth:`read` hands it).
        self.view = RedisBus("redis://127.0.0.1:9/0", Clock(), "here")

    def share(self, change: list[Any]) -> None:
        self.shared.append(change)

    def elsewhere(self, room: str) -> list[str]:
        return self.there.get(room, []) or self.view.elsewhere(room)

    def online_elsewhere(self) -> dict[str, OnlineElsewhere]:
        return self.view.online_elsewhere()

    def other_nodes(self) -> int:
        return self.view.other_nodes()

    def read(self, node: str, changes: list[list[Any]]) -> None:
        """What the stream brings from ``node``: its changes, to the bus's bookkeeping (RedisBus._change)."""
        for change in changes:
            self.view._change(change, node)


def _node(path: Any, shared: MemoryStore | None = None) -> tuple[ChatFactory, Clock, SharingBus]:
    """A node on its own CSV store in ``path``, or on the store ``shared`` with other nodes (as PostgreSQL is)."""
    clock = Clock()
    clock.advance(1_790_000_000)
    bus = SharingBus()
    store = shared or CsvStore(str(path), run=run_now, clock=clock, now=lambda: factory.now())
    factory = ChatFactory(store, Passwords(run=run_now, **CHEAP_HASH), Settings(), clock, ChatProtocol, bus=bus)
    store.load().addCallback(factory.restore)
    store.start()
    return factory, clock, bus


def _apply(changes: list[list[Any]], nodes: Nodes, here: bool = False) -> None:
    """What RedisBus._change does with each change read from the stream."""
    for change in changes:
        kind, args = change[0], change[1:]
        if kind == "create":
            nodes.room_created(*args)
        elif kind == "delete":
            nodes.room_deleted(*args)
        elif kind == "login":
            nodes.logged_in(args[0], here)
        elif kind == "account" and not here:
            nodes.account_changed(*args)
        elif kind == "account_deleted" and not here:
            nodes.account_deleted(*args)
        elif kind == "room_values" and not here:
            nodes.room_values(*args)
        elif kind == "kick" and not here:
            nodes.kicked(*args)
        elif kind == "admin" and not here:
            nodes.admin(args[0], args[1], args[2:])
        elif kind == "account_values" and not here:
            nodes.account_values(*args)


def _ann_on_b(tmp_path: Any) -> tuple[ChatFactory, Clock, Nodes, Client]:
    """ann registered on node A (B told through its Nodes), then logged in on node B: (B, its clock, its Nodes, ann)."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    Client(a, clock_a).register("ann")
    nodes = Nodes(b)
    _apply(bus_a.shared, nodes)
    there = Client(b, clock_b)
    there.login("ann")
    return b, clock_b, nodes, there


def test_an_account_registered_on_one_node_logs_in_on_the_other_and_its_password_change_follows(tmp_path):
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    assert "Registered and logged in as ann." in Client(a, clock_a).register("ann")
    assert "Login failed" in Client(b, clock_b).login("ann")  # (B has not been told yet)
    _apply(bus_a.shared, Nodes(b))
    assert "Logged in as ann." in Client(b, clock_b).login("ann")
    bus_a.shared.clear()
    user = Client(a, clock_a)
    user.login("ann")
    user.send("password", "secret1", "better-one", "better-one")
    assert "Password changed" in user.output()
    _apply(bus_a.shared, Nodes(b))
    assert "Login failed" in Client(b, clock_b).login("ann", "secret1")
    assert "Logged in as ann." in Client(b, clock_b).login("ann", "better-one")


def test_an_account_deleted_on_another_node_is_gone_here_and_its_session_ends(tmp_path):
    b, clock_b, nodes, there = _ann_on_b(tmp_path)
    nodes.account_deleted("ann")
    assert "Your account was deleted." in there.output()
    assert there.transport.disconnecting
    assert "Login failed" in Client(b, clock_b).login("ann")


def test_of_two_logins_on_two_nodes_the_later_in_the_streams_order_stays(tmp_path):
    b, clock_b, nodes, there = _ann_on_b(tmp_path)
    # Another node's login that comes in the stream before this session's own: this one is the later, it stays.
    nodes.logged_in("ann", here=False)
    assert "another connection" not in there.output() and not there.transport.disconnecting
    nodes.logged_in("ann", here=True)  # its own login read back
    nodes.logged_in("ann", here=False)  # a later login elsewhere: this session ends
    assert "You logged in from another connection." in there.output()
    assert there.transport.disconnecting


def test_a_room_created_and_deleted_on_another_node(tmp_path):
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    owner = Client(a, clock_a)
    owner.register("ann")
    owner.send("create lab")
    nodes = Nodes(b)
    _apply(bus_a.shared, nodes)
    bus_a.shared.clear()
    bob = Client(b, clock_b)
    bob.register("bob")
    bob.send("join lab")
    assert "bob joined lab" in bob.output()
    owner.send("delete lab", "yes")
    assert ["delete", "lab", "ann"] in bus_a.shared
    _apply(bus_a.shared, nodes)
    assert "lab" not in b.rooms and "deleted" in bob.output()


def test_moderation_on_one_node_applies_at_once_on_the_other(tmp_path):
    """A ban, mute, kick, topic, invite-only, invitation, op and owner change made on A act on B's members."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    owner = Client(a, clock_a)
    owner.register("ann")
    owner.send("create lab")
    for name in ("bob", "carl", "dave", "erin"):
        Client(a, clock_a).register(name)
    nodes = Nodes(b)
    _apply(bus_a.shared, nodes)
    bus_a.shared.clear()
    bob, carl, dave = Client(b, clock_b), Client(b, clock_b), Client(b, clock_b)
    for client, name in ((bob, "bob"), (carl, "carl"), (dave, "dave")):
        client.login(name)
        client.send("join lab")
    owner.send("join lab")
    room_b = b.rooms["lab"]
    owner.send("/ban bob 10m spam", "/mute carl", "/topic all about labs", "/op dave", "/invite erin")
    assert [change[0] for change in bus_a.shared] == ["room_values"] * 5
    _apply(bus_a.shared, nodes)
    bus_a.shared.clear()
    assert "You were banned from lab by ann for 10m: spam" in bob.output()
    assert bob.protocol not in set(room_b.fanout.members())
    bob.send("/exit", "join lab")
    assert "Error: you are banned from lab until" in bob.output()
    carl.output()
    carl.send("hello")
    assert "muted" in carl.output()
    assert room_b.authority.topic == "all about labs"
    assert b.moderation.role(room_b, "dave").name == "OPERATOR"
    assert "erin" in room_b.authority.invites
    bus_a.there["lab"] = ["carl", "dave"]  # (B's heartbeat, as A's bus knows it)
    owner.send("/unmute carl", "/invite-only on", "/secret on", "/kick carl enough", "/owner dave")
    _apply(bus_a.shared, nodes)
    assert "You were kicked from lab by ann: enough" in carl.output()
    assert carl.protocol not in set(room_b.fanout.members())
    assert not room_b.authority.mutes and room_b.authority.invite_only and room_b.authority.secret
    assert room_b.owner == "dave" and b.moderation.role(room_b, "ann").name == "OPERATOR"
    outsider = Client(b, clock_b)
    outsider.register("fred")
    outsider.send("join lab")
    assert "invite" in outsider.output()


def test_who_and_the_room_list_count_members_on_other_nodes(tmp_path):
    """/who lists a member connected to another node by name; /list counts it; one in the room on both, once."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    ann = Client(a, clock_a)
    ann.register("ann")
    ann.send("join public")
    bus_a.there["public"] = ["bob", "ann"]  # (B's heartbeat: bob, and ann also through B)
    ann.output()
    ann.send("/who")
    assert "In public (2): ann, bob" in ann.output()
    ann.send("/exit", "list")
    assert "public  (2 here" in ann.output()
    ann.send("info public")
    assert "In it now (2): bob, ann" in ann.output()  # (ann in B's view only, since her /exit: it said "(0)")
    # cid enters: bob and ann there, cid here (it said "(1 here)"); then dan, with cid in B's view too: once.
    for name, there, count in (("cid", ["bob", "ann"], 3), ("dan", ["cid", "bob", "ann"], 4)):
        bus_a.there["public"] = there
        user = Client(a, clock_a)
        user.register(name)
        user.send("join public")
        assert f"Entered room public ({count} here)" in user.output()


def test_a_rooms_member_limit_counts_each_member_on_every_node_once(tmp_path):
    """/limit 2 with ann here and in B's view too (she moved): one member, so cid may enter; then it is full."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    ann, cid, dan = Client(a, clock_a), Client(a, clock_a), Client(a, clock_a)
    for client, name in ((ann, "ann"), (cid, "cid"), (dan, "dan")):
        client.register(name)
    ann.send("create lab", "join lab", "/limit 2")
    bus_a.there["lab"] = ["ann"]
    cid.send("join lab")
    assert "Entered room lab (2 here)" in cid.output()
    dan.send("join lab")
    assert "lab is full (2 members)" in dan.output()


def _heartbeat(factory: ChatFactory) -> list[Any]:
    """The heartbeat a node's bus appends for ``factory`` (RedisBus._beat)."""
    nodes = Nodes(factory)
    return ["alive", nodes.members(), nodes.online()]


def _two_users(tmp_path: Any) -> tuple[Any, ...]:
    """ann on node A in public, bob on node B, each node told of the other's accounts and heartbeat."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, bus_b = _node(tmp_path / "b")
    ann, bob = Client(a, clock_a), Client(b, clock_b)
    ann.register("ann")
    bob.register("bob")
    _apply(bus_a.shared, Nodes(b))
    _apply(bus_b.shared, Nodes(a))
    ann.send("join public")
    bus_b.read("node-a", bus_a.shared + [_heartbeat(a)])
    bus_a.read("node-b", bus_b.shared + [_heartbeat(b)])
    bus_a.shared.clear()
    bus_b.shared.clear()
    ann.output()
    bob.output()
    return a, b, bus_a, bus_b, ann, bob


def test_users_whois_and_away_show_a_user_logged_in_on_another_node(tmp_path):
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    bob.send("users")
    assert "Online (2): ann (in public), bob" in bob.output()
    bob.send("whois ann")
    text = bob.output()
    assert "online since" in text and "never seen" not in text and "away" not in text
    ann.send("/away lunch")
    assert ["away", "ann", "lunch"] in bus_a.shared
    bus_b.read("node-a", bus_a.shared)
    bus_a.shared.clear()
    bob.send("users", "whois ann")
    text = bob.output()
    assert "ann (away, in public), bob" in text and "  away: lunch" in text
    bob.send("join public")
    bob.send("/whois ann")
    assert "in public with you" in bob.output()
    bob.send("/exit")
    # ann logs out on A: gone from B's view at once (and from A's next heartbeat).
    ann.send("/exit", "quit")
    assert ["logout", "ann"] in bus_a.shared
    bus_b.read("node-a", bus_a.shared)
    bob.output()
    bob.send("users", "whois ann")
    text = bob.output()
    assert "Online (1): bob" in text and "online since" not in text


def test_a_nodes_users_drop_out_of_the_view_when_it_is_gone(tmp_path):
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    assert "ann" in b.presence.elsewhere()
    bus_b.read("node-a", [["gone"]])
    bob.send("users")
    assert "Online (1): bob" in bob.output()
    assert not b.presence.elsewhere()


def test_a_later_login_on_a_third_node_replaces_the_first_in_the_view(tmp_path):
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    bus_b.read("node-c", [["login", "ann", 2_000_000_000]])
    there = b.bus.online_elsewhere()["ann"]
    assert there.node == "node-c" and there.rooms == ()
    bob.send("users")
    assert "Online (2): ann, bob" in bob.output()


def test_a_private_message_to_a_user_on_another_node_is_delivered_there_once(tmp_path):
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    ann.send("/away lunch")
    bus_b.read("node-a", bus_a.shared)
    bus_a.shared.clear()
    ann.output()
    bob.send("join public")
    bob.output()
    bob.send("/msg ann hello there")
    text = bob.output()
    assert "Queued" not in text and "ann is away: lunch" in text
    sent = [change for change in bus_b.shared if change[0] == "private"]
    assert len(sent) == 1 and sent[0][1] == "node-a" and sent[0][3:] == ["bob", "ann", "hello there", False]
    bob.send("/msg ann again")
    assert "is away" not in bob.output()  # (told once per away period, as for a user here)
    # Node A reads the stream: the node named delivers, once; another node ignores it.
    nodes_a = Nodes(a)
    for change in bus_b.shared:
        if change[0] == "private":
            bus_a.view.listener = nodes_a
            bus_a.view.node = "node-a"
            bus_a.read("node-b", [change])
            bus_a.view.node = "node-x"
            bus_a.read("node-b", [change])  # (as another node reads it: not for it)
    text = ann.output()
    assert text.count("hello there") == 1 and text.count("again") == 1
    assert not any(change[0] == "private" for change in bus_a.shared)


def test_a_private_message_whose_recipient_logged_out_meanwhile_is_kept_for_its_next_login(tmp_path):
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    bob.send("join public", "/msg ann are you there")
    change = next(change for change in bus_b.shared if change[0] == "private")
    ann.send("/exit", "quit")
    Nodes(a).private(*change[2:])
    again = Client(a, ann.clock)
    assert "are you there" in again.login("ann")


def test_irc_on_one_node_sees_the_users_and_members_of_the_other(tmp_path):
    """NAMES, LIST, WHO, WHOIS, ISON and USERHOST on B answer for ann, logged in on A and in public there."""
    from chatd.frontends.irc import IrcFactory
    from test_irc import IrcClient

    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    ann.send("/away lunch")
    bus_b.read("node-a", bus_a.shared)
    irc = IrcClient(IrcFactory(b, guests=True), bob.clock)
    irc.register("zed")
    irc.send("NAMES #public", "LIST", "WHO #public", "WHOIS ann", "ISON ann nobody", "USERHOST ann")
    lines = irc.lines()
    assert any(" 353 zed = #public :" in text and "ann" in text.split(":")[-1].split() for text in lines), lines
    assert any(" 322 zed #public 1 " in text or text.endswith(" 322 zed #public 1 :") for text in lines), lines
    assert any(" 352 zed #public " in text and " ann G" in text for text in lines), lines
    assert any(" 311 zed ann " in text for text in lines) and any(" 319 zed ann :#public" in text for text in lines)
    assert any(" 301 zed ann :lunch" in text for text in lines), lines
    assert any(text.endswith(" 303 zed :ann") for text in lines), lines
    assert any(" 302 zed :ann=-" in text for text in lines), lines


def test_the_heartbeat_says_who_is_logged_in_every_tenth_beat_and_once_a_new_node_is_read(tmp_path):
    from chatd.buses import redis as module

    a, clock_a, _ = _node(tmp_path / "a")
    Client(a, clock_a).register("ann")
    bus = RedisBus("redis://127.0.0.1:9/0", Clock(), "a")  # (never started: its beats are kept here)
    bus.listener, bus._running = Nodes(a), True
    beats: list[list[Any]] = []
    bus.share = beats.append  # type: ignore[method-assign]
    for _ in range(module.ONLINE_EVERY + 2):
        bus._beat()
    online = [beat[2] is not None for beat in beats]  # (the third part; null on the other beats)
    assert online == [True] + [False] * (module.ONLINE_EVERY - 1) + [True, False]
    assert beats[0][2] == {"ann": [int(a.presence.since("ann")), ""]}
    bus._apply("1-1", {"n": "b/1", "s": "1", "e": "", "b": "", "c": ""})  # (a node not read before)
    bus._beat()
    bus._beat()
    assert [beat[2] is not None for beat in beats[-2:]] == [True, False]


def _sharing_one_store(tmp_path: Any) -> tuple[ChatFactory, ChatFactory, Client]:
    """Nodes A and B on one store that shares private messages (as PostgreSQL does); bob registered on A."""
    store = MemoryStore()
    store.shares_private = True
    a, clock_a, bus_a = _node(tmp_path, store)
    b, _, _ = _node(tmp_path, store)
    bob = Client(a, clock_a)
    bob.register("bob")
    bob.disconnect()
    ann = Client(a, clock_a)
    ann.register("ann")
    ann.send("public")
    ann.output()
    _apply(bus_a.shared, Nodes(b))
    return a, b, ann


def test_offline_messages_in_a_shared_store_are_taken_at_a_login_on_any_node_once(tmp_path):
    a, b, ann = _sharing_one_store(tmp_path)
    ann.send("/msg bob kept on a", "/msg bob twice")
    assert ann.output().count("Queued, bob is offline") == 2
    assert a.offline == {}  # (no copy of its own: the store is the truth)
    on_b = Client(b, ann.clock)
    out = on_b.login("bob")
    assert "2 private messages arrived while you were offline" in out
    assert out.index("kept on a") < out.index("twice")
    on_b.disconnect()
    on_a = Client(a, ann.clock)
    assert "arrived while you were offline" not in on_a.login("bob")  # (delivered once, on B)
    on_a.disconnect()
    ann.send("/msg bob later")
    assert "Queued" in ann.output()
    assert "later" in Client(b, ann.clock).login("bob")  # (a second login on B: the one kept since)


def test_a_shared_stores_limit_counts_messages_kept_by_every_node(tmp_path):
    a, b, ann = _sharing_one_store(tmp_path)
    a.settings = b.settings = Settings(offline_messages=2)
    ann.send("/msg bob one")
    ann.output()
    carol = Client(b, ann.clock)
    carol.register("carol")
    carol.send("public", "/msg bob two", "/msg bob three")
    assert "bob is offline and has 2 messages waiting already" in carol.output()


def test_a_message_taken_for_a_session_that_ended_meanwhile_is_kept_again(tmp_path):
    a, b, ann = _sharing_one_store(tmp_path)
    ann.send("/msg bob not lost")
    ann.output()
    ended = SimpleNamespace(name="bob")  # (a session of bob's that ended while the store was read)
    assert b.take_private(ended).result == []
    assert [message.text for message in a.store.private] == ["not lost"]
    assert "not lost" in Client(a, ann.clock).login("bob")


def _admin_on_a(tmp_path: Any) -> tuple[Any, ...]:
    """_two_users with ann an admin (on node A): (A, B, A's bus, B's Nodes, ann, bob)."""
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    a.admin.named = b.admin.named = frozenset({"ann"})
    return a, b, bus_a, Nodes(b), ann, bob


def test_an_admins_disconnect_ends_a_session_on_another_node(tmp_path):
    a, b, bus_a, nodes_b, ann, bob = _admin_on_a(tmp_path)
    ann.send("/disconnect BOB spamming")
    assert "Disconnected bob." in ann.output()  # (was: bob is not logged in, though /whois showed bob)
    assert not bob.transport.disconnecting
    _apply(bus_a.shared, nodes_b)
    assert "You were disconnected by ann, an admin: spamming" in bob.output()
    assert bob.transport.disconnecting


def test_an_admins_wall_reaches_every_node_and_says_how_many_nodes(tmp_path):
    a, b, bus_a, nodes_b, ann, bob = _admin_on_a(tmp_path)
    bus_a.view._nodes["node-b"] = a.reactor.seconds()  # (node B heard from)
    ann.send("/wall restart at 22:00")
    assert "Notice sent to 1 connection on this node and to 1 other node." in ann.output()
    assert "restart at 22:00" not in bob.output()
    _apply(bus_a.shared, nodes_b)
    assert "Notice from ann, an admin: restart at 22:00" in bob.output()
    bus_a.view._nodes.clear()
    ann.send("/wall again")
    assert "Notice sent to 1 connection." in ann.output()


def test_an_address_ban_applies_on_every_node_and_its_lift_too(tmp_path):
    a, b, bus_a, nodes_b, ann, bob = _admin_on_a(tmp_path)
    there = Client(b, bob.clock, peer=IPv4Address("TCP", "192.0.2.7", 40000))
    there.output()
    ann.send("/banip 192.0.2.0/24 2h spam")
    assert "Banned 192.0.2.0/24 for 2h." in ann.output()
    assert b.admin.address_refusal("192.0.2.9") is None
    _apply(bus_a.shared, nodes_b)
    assert "your address is banned from this server until" in b.admin.address_refusal("192.0.2.9")
    assert "Your address was banned from this server by ann, an admin: spam" in there.output()
    assert there.transport.disconnecting and not bob.transport.disconnecting
    bus_a.shared.clear()
    ann.send("/unbanip 192.0.2.0/24")
    assert "Lifted the ban" in ann.output()
    _apply(bus_a.shared, nodes_b)
    assert b.admin.address_refusal("192.0.2.9") is None


def test_a_resume_token_of_one_node_is_taken_on_the_other_until_a_logout_there_voids_it(tmp_path):
    """One key (PostgreSQL's, Loaded.token_key) on both nodes; the epoch counted up by a logout on A reaches B."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    a.tokens.key = b.tokens.key = bytes(range(32))
    ann = Client(a, clock_a)
    ann.register("ann")
    nodes = Nodes(b)
    _apply(bus_a.shared, nodes)
    bus_a.shared.clear()
    token, _ = a.tokens.issue("ann")
    assert b.tokens.check(token) == ("ann", "")
    ann.send("logout")
    assert ["account_values", "ann", {"token_epoch": "1"}] in bus_a.shared
    assert b.tokens.check(token) == ("ann", "")  # (B has not been told yet)
    _apply(bus_a.shared, nodes)
    assert b.tokens.check(token) == ("ann", "void")
    later, _ = b.tokens.issue("ann")
    assert a.tokens.check(later) == ("ann", "")
    # An older epoch read after a newer one (two nodes voiding at once) does not bring old tokens back.
    nodes.account_values("ann", {"token_epoch": "0"})
    assert b.account_value("ann", "token_epoch") == "1" and b.tokens.check(token) == ("ann", "void")


def test_a_lock_on_one_node_ends_the_session_on_the_other_and_refuses_its_logins_there(tmp_path):
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, nodes, there = _ann_on_b(tmp_path / "n")
    b.tokens.key = a.tokens.key
    Client(a, clock_a).register("ann")
    bus_a.shared.clear()
    token, _ = b.tokens.issue("ann")
    assert a.admin.lock("root", "ann", "spam").called
    action = bus_a.shared.index(["admin", "lock", "root", "ann", "spam"])
    assert ["account_values", "ann", {"locked": "spam"}] in bus_a.shared[:action]
    _apply(bus_a.shared[:action], nodes)  # (the lock alone: logins are refused, the session waits for the action)
    assert "this account is locked: spam" in Client(b, clock_b).login("ann")
    assert not there.transport.disconnecting
    _apply(bus_a.shared[action:], nodes)
    assert "Your account was locked by root, an admin: spam" in there.output()  # (as on the node that locked)
    assert there.transport.disconnecting
    assert "this account is locked: spam" in Client(b, clock_b).login("ann")
    assert b.tokens.check(token) == ("ann", "void")


def test_a_line_that_comes_after_its_senders_ban_kick_or_mute_in_the_streams_order_is_delivered_by_no_node(tmp_path):
    """
    The stream as both nodes read it: bob's line, ann's ban of bob (made on A), then bob's lines B took
    before it read the ban: no node shows those, bob (on B) is told; the same for a kick until bob joins
    again and for a mute until it ends.
    """
    from chatd.core.events import EventKind, RoomEvent

    a, clock_a, _ = _node(tmp_path / "a")
    b, clock_b, _ = _node(tmp_path / "b")
    ann, cid, bob = Client(a, clock_a), Client(b, clock_b), Client(b, clock_b)
    for client, name in ((ann, "ann"), (cid, "cid"), (bob, "bob")):
        client.register(name)
        client.send("public")
        client.output()
    now = clock_a.seconds()
    ids = iter(range(100, 200))

    def stream(*events: tuple[str, EventKind, str, str, float]) -> None:
        """Both nodes read ``events`` (sender, kind, text, target, until), in this order."""
        read = [RoomEvent("public", next(ids), now + 1, sender, kind, text, target, until)
                for sender, kind, text, target, until in events]
        for factory in (a, b):
            for event in read:
                factory._deliver(event)

    say = ("bob", EventKind.SAY)
    stream((*say, "early", "", 0.0), ("ann", EventKind.BAN, "spam", "bob", 0.0), (*say, "late 1", "", 0.0),
           ("bob", EventKind.ME, "waves", "", 0.0), (*say, "late 2", "", 0.0))
    for watcher in (ann, cid):
        text = watcher.output()
        assert "bob: early" in text and "ann banned bob" in text, text
        assert "late" not in text and "waves" not in text, text
    told = bob.output()
    assert told.count("Your line was not delivered: you were banned from public") == 3, told
    # A kick holds until bob joins again.
    stream(("ann", EventKind.KICK, "", "cid", 0.0), ("cid", EventKind.SAY, "kicked", "", 0.0),
           ("cid", EventKind.JOIN, "", "", 0.0), ("cid", EventKind.SAY, "back", "", 0.0))
    text = ann.output()
    assert "cid: kicked" not in text and "cid: back" in text, text
    # A mute holds until its end (the event's time decides, the same on every node) or its lift.
    stream(("ann", EventKind.MUTE, "", "dan", now + 60), ("dan", EventKind.SAY, "muted", "", 0.0))
    read = [RoomEvent("public", next(ids), now + 61, "dan", EventKind.SAY, "over")]
    for factory in (a, b):
        factory._deliver(read[0])
    stream(("ann", EventKind.MUTE, "", "dan", 0.0), ("dan", EventKind.JOIN, "", "", 0.0),
           ("dan", EventKind.SAY, "still", "", 0.0), ("ann", EventKind.UNMUTE, "", "dan", 0.0),
           ("dan", EventKind.SAY, "lifted", "", 0.0))
    text = ann.output()
    assert "dan: muted" not in text and "dan: over" in text, text
    assert "dan: still" not in text and "dan: lifted" in text, text


def test_a_node_taken_for_gone_while_it_lived_has_its_members_join_again(tmp_path):
    """Another node published the leaves of ann and zed (this node was cut off): ann, still here, joins again."""
    a, clock_a, bus_a = _node(tmp_path / "a")
    ann, cid = Client(a, clock_a), Client(a, clock_a)
    ann.register("ann")
    cid.register("cid")
    ann.send("join public")
    cid.send("join public")
    room = a.rooms["public"]
    a.publish(room, "ann", EventKind.LEAVE, "server node gone", "quit")  # (the other node's, read here)
    clock_a.advance(0)
    cid.output()
    Nodes(a).taken_for_gone({"public": ["ANN", "zed"], "nowhere": ["ann"]})
    clock_a.advance(0)
    text = cid.output()
    assert "* ann joined public" in text and "zed" not in text
    cid.send("/who")
    assert "In public (2): ann, cid" in cid.output()


def test_a_ban_goes_in_the_stream_before_its_change_so_the_members_node_kicks_after_it(tmp_path):
    """
    Node A bans bob, a member on B: A's BAN goes in the stream before the room_values change B reacts to with
    bob's KICK, so every node stores and shows ban then kick (PROTOCOL.md 'Room authority'), as on one node.
    """
    a, clock_a, bus_a = _node(tmp_path / "a")
    b, clock_b, bus_b = _node(tmp_path / "b")
    owner = Client(a, clock_a)
    owner.register("ann")
    owner.send("create lab", "join lab")
    Client(a, clock_a).register("bob")
    nodes = Nodes(b)
    _apply(bus_a.shared, nodes)
    bob = Client(b, clock_b)
    bob.login("bob")
    bob.send("join lab")
    stream: list[Any] = []  # (what each node appends, in order: A's, then B's once it read A's)
    for bus in (bus_a, bus_b):
        publish, share = bus.publish, bus.share
        bus.publish = lambda event, publish=publish: (stream.append(event.kind), publish(event))
        bus.share = lambda change, share=share: (stream.append(change[0]), share(change))
    bus_a.there["lab"] = ["bob"]
    owner.send("/ban bob spam")
    _apply([change for change in bus_a.shared if change[0] == "room_values"], nodes)
    assert "You were banned from lab by ann" in bob.output()
    assert stream == [EventKind.BAN, "room_values", EventKind.KICK], stream


def test_a_private_message_to_a_node_that_died_before_reading_it_is_kept_for_its_recipient(tmp_path):
    """
    bob on B writes to ann on A; A is killed before it reads the message (its last heartbeat says how far it
    read): B, taking A for gone, keeps it for ann's next login. One A said it read is A's (not kept twice).
    """
    a, b, bus_a, bus_b, ann, bob = _two_users(tmp_path)
    view = bus_b.view
    view.listener, view.node = Nodes(b), "node-b"

    def read(entry_id: str, node: str, change: list[Any]) -> None:
        view.last_id = entry_id
        view._change(change, node)

    bob.send("join public", "/msg ann read in time", "/msg ann sent as A died")
    first, second = [change for change in bus_b.shared if change[0] == "private"]
    read("10-0", "node-b", first)
    read("11-0", "node-a", [*_heartbeat(a), None, "10-0"])  # (A read up to the first)
    read("12-0", "node-b", second)
    view._gone("node-a", silent=True)
    again = Client(b, bob.clock)
    text = again.login("ann")
    assert "sent as A died" in text and "read in time" not in text, text
