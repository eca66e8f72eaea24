"""
Property-based tests (hypothesis) of the protocol over StringTransport:
random bytes and random command sequences never raise and keep the shared
state consistent; a state machine checks users and rooms against a model.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from chatd.settings import Settings
from helpers import Client, make_factory

_SETTINGS = Settings(max_line=256, login_timeout=0, max_per_address=0, address_login_failures=0)
_QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_invariants(factory) -> None:
    """Everything the shared state points at is a live, admitted connection, and agrees with itself."""
    live = {p for p in factory.connections if not p.transport.disconnecting}
    for room in factory.rooms.values():
        for member in room.fanout.members():
            assert member in factory.connections
            assert member.dialogue is not None and member.dialogue.room is room
        assert len(set(room.member_names())) == len(room.member_names())
    for key, session in factory.online.items():
        assert session in factory.connections and session.name and session.name.lower() == key
    assert factory.connections == factory.limits.all
    assert set(factory.limits.unauthenticated) <= factory.limits.all
    del live


def _room_names(factory) -> set[str]:
    return set(factory.rooms)


_WORDS = st.sampled_from([
    "register", "login", "create", "delete", "info", "list", "public", "join", "menu", "ping",
    "1", "2", "3", "4", "5", "6", "7", "8", "/who", "/exit", "/me", "/msg", "/help", "/ping", "//x",
    "/client t 1", "quit",
])
_NAMES = st.sampled_from(["ann", "Ann", "bob", "lab", "LAB", "public", "x" * 40, "bad name", "-no"])
_LINE = st.one_of(
    st.tuples(_WORDS, _NAMES).map(lambda t: f"{t[0]} {t[1]}"),
    _WORDS,
    st.sampled_from(["secret1", "secret1", "wrong-pw", "short"]),
    st.text(max_size=40),
)


#: IAC SE twice ends a telnet subnegotiation from any parser state (even right after IAC SB IAC).
_END_TELNET = b"\xff\xf0\xff\xf0"


def _feed_then_ping(chunks: list[bytes], settings: Settings = _SETTINGS) -> None:
    """Feed ``chunks`` to a new connection, then pings: no exception, an answer, consistent state."""
    directory = tempfile.mkdtemp()
    try:
        factory, clock = make_factory(directory, settings)
        c = Client(factory, clock)
        for chunk in chunks:
            c.protocol.dataReceived(chunk)
            clock.advance(1)
        # "ping" may first be taken as an answer to an open question (a name,
        # a password); within four lines any question ends and the menu answers.
        c.protocol.dataReceived(_END_TELNET + b"\r\nping\r\nping\r\nping\r\nping\r\n")
        for _ in range(5):
            clock.advance(31)
        if not c.transport.disconnecting:
            assert b"pong" in c.transport.value()
        _check_invariants(factory)
        c.disconnect()
        assert not factory.connections and not factory.online
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@_QUICK
@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise(chunks):
    """Arbitrary bytes (telnet commands, invalid UTF-8, long lines, split anywhere) never raise."""
    _feed_then_ping(chunks)


_TELNET_BYTES = st.sampled_from([255, 254, 253, 252, 251, 250, 240, 241, 1, 0x18, 0, 10, 13, 0x41])


@_QUICK
@given(chunks=st.lists(st.lists(_TELNET_BYTES, max_size=60).map(bytes), max_size=12))
def test_random_telnet_bytes_never_raise(chunks):
    """Telnet-heavy bytes (IAC, SB/SE, options, CR NUL) never raise; the connection still answers."""
    _feed_then_ping(chunks, Settings(max_line=256, login_timeout=0, flood_rate=0))


@_QUICK
@given(script=st.lists(st.tuples(st.integers(0, 2), _LINE), max_size=40))
def test_random_command_sequences_keep_invariants(script):
    """Three clients typing random commands: no exception, and rooms and sessions stay consistent."""
    directory = tempfile.mkdtemp()
    try:
        factory, clock = make_factory(directory, _SETTINGS)
        clients = [Client(factory, clock, tagged=(i == 1)) for i in range(3)]
        for who, line in script:
            client = clients[who]
            if client.transport.disconnecting:
                client.protocol.connectionLost(None)
                clients[who] = client = Client(factory, clock)
            client.send(line.encode("utf-8", "surrogatepass") + b"\r\n")
            clock.advance(31)  # past any login delay
            _check_invariants(factory)
        for client in clients:
            client.disconnect()
        assert not factory.online and all(len(room.fanout) == 0 for room in factory.rooms.values())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class ChatModel(RuleBasedStateMachine):
    """Users and rooms against a model: accounts, who is logged in where, rooms and their owners."""

    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.factory, self.clock = make_factory(self.directory, _SETTINGS)
        self.accounts: dict[str, str] = {}  # key -> password
        self.rooms: dict[str, str] = {"public": ""}  # key -> owner key
        self.room_names: dict[str, str] = {"public": "public"}  # key -> the name as created (stored)
        self.where: dict[int, str | None] = {}  # client id -> room key (None: menu)
        self.user: dict[int, str | None] = {}  # client id -> user key
        self.conns: dict[int, Client] = {}
        self.next_cid = 0
        self.failures: dict[int, int] = {}  # client id -> failed logins on that connection

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _logout_elsewhere(self, key: str, keep: int) -> None:
        for cid, user in list(self.user.items()):
            if user == key and cid != keep:
                self._gone(cid)  # kicked: "You logged in from another connection."

    def _gone(self, cid: int) -> None:
        self.conns[cid].protocol.connectionLost(None)
        for table in (self.where, self.user, self.conns, self.failures):
            table.pop(cid, None)

    @rule(target=clients)
    def connect(self):
        c = Client(self.factory, self.clock)
        c.output()
        self.next_cid += 1
        cid = self.next_cid  # deterministic: hypothesis replays must draw the same
        self.conns[cid], self.where[cid], self.user[cid] = c, None, None
        return cid

    @rule(cid=clients, name=st.sampled_from(["ann", "bob", "Cy"]))
    def register(self, cid, name):
        if cid not in self.conns or self.where[cid] is not None:
            return
        out = self.conns[cid].register(name)
        key = name.lower()
        if self.user[cid] is not None:
            assert "already logged in" in out
        elif key in self.accounts:
            assert "is taken" in out
        else:
            assert f"Registered and logged in as {name}." in out
            self.accounts[key] = "secret1"
            self.user[cid] = key
            self._logout_elsewhere(key, cid)

    @rule(cid=clients, name=st.sampled_from(["ann", "bob", "Cy", "nobody"]), right=st.booleans())
    def login(self, cid, name, right):
        if cid not in self.conns or self.where[cid] is not None:
            return
        out = self.conns[cid].login(name, "secret1" if right else "wrong-password")
        self.clock.advance(31)
        out += self.conns[cid].output()
        key = name.lower()
        if self.user[cid] is not None:
            assert "already logged in" in out
        elif right and key in self.accounts:
            assert "Logged in as" in out
            self.failures.pop(cid, None)
            self.user[cid] = key
            self._logout_elsewhere(key, cid)
        else:
            self.failures[cid] = self.failures.get(cid, 0) + 1
            if self.failures[cid] >= _SETTINGS.max_login_failures:
                assert "too many failed logins; goodbye." in out
                self._gone(cid)
            else:
                assert "Login failed" in out

    @rule(cid=clients, room=st.sampled_from(["lab", "Lab", "den"]))
    def create(self, cid, room):
        if cid not in self.conns or self.where[cid] is not None:
            return
        c = self.conns[cid]
        c.send(f"create {room}")
        out = c.output()
        if self.user[cid] is None:
            assert "please log in first" in out
        elif room.lower() in self.rooms:
            assert f"A room called {self.room_names[room.lower()]} already exists." in out
        else:
            assert f"Room {room} created." in out
            self.rooms[room.lower()] = self.user[cid]
            self.room_names[room.lower()] = room

    @rule(cid=clients, room=st.sampled_from(["lab", "den", "public", "none"]))
    def join(self, cid, room):
        if cid not in self.conns or self.where[cid] is not None:
            return
        c = self.conns[cid]
        c.send(f"join {room}")
        out = c.output()
        if self.user[cid] is None:
            assert "please log in first" in out
        elif room not in self.rooms:
            assert "There is no room" in out
        else:
            assert "Entered room" in out
            self.where[cid] = room

    @rule(cid=clients)
    def leave(self, cid):
        if cid in self.conns and self.where[cid] is not None:
            self.conns[cid].send("/exit")
            assert "You left" in self.conns[cid].output()
            self.where[cid] = None

    @rule(cid=clients, room=st.sampled_from(["lab", "den"]))
    def delete(self, cid, room):
        if cid not in self.conns or self.where[cid] is not None or self.user[cid] is None:
            return
        c = self.conns[cid]
        c.send(f"delete {room}")
        out = c.output()
        if room not in self.rooms:
            assert "There is no room" in out
        elif self.rooms[room] != self.user[cid]:
            assert "Only its owner" in out
        else:
            assert f"Room {self.room_names[room]} deleted." in out  # named as stored, whatever case was typed
            del self.rooms[room]
            for other, where in self.where.items():
                if where == room:
                    self.where[other] = None

    @rule(cid=clients)
    def vanish(self, cid):
        if cid in self.conns:
            self._gone(cid)

    @precondition(lambda self: self.conns)
    @rule(data=st.data())
    def say(self, data):
        speakers = [cid for cid, room in self.where.items() if room is not None]
        if not speakers:
            return
        cid = data.draw(st.sampled_from(sorted(speakers)))
        for c in self.conns.values():
            c.output()
        self.conns[cid].send("hello model")
        room = self.where[cid]
        for other, c in self.conns.items():
            heard = "hello model" in c.output()
            assert heard == (self.where[other] == room), (other, self.where[other], room)

    @invariant()
    def state_matches_model(self):
        factory = self.factory
        assert set(factory.accounts) == set(self.accounts)
        assert set(factory.rooms) == set(self.rooms)
        online = {key for key in self.user.values() if key is not None}
        assert set(factory.online) == online
        for key, room in factory.rooms.items():
            expected = sorted(self.user[cid] for cid, where in self.where.items() if where == key)
            assert sorted(name.lower() for name in room.member_names()) == expected
        _check_invariants(factory)


ChatModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_chat_model = ChatModel.TestCase
