"""
The bus of several nodes: room events travel on one Redis Stream (issue 17).

Every node appends what its users did and reads the stream back; what it reads
is what it delivers, its own users' lines included (after the round trip), so
every node delivers every room's events in the stream's one order.

- **Writing**: per node per reactor turn **one** entry carrying every event of
  that turn (never one call per line), appended by a Lua script
  (:data:`APPEND`) that also gives the events their ids: per room a counter
  in Redis (``chatd:room:NAMEKEY``), raised to the node's own last id for the
  room if it is behind (a Redis restarted empty goes on from the ids the
  nodes know), so ids grow by one per event of a room in stream order,
  whichever node published them. The script is idempotent per node and batch
  sequence number (``chatd:node:NODE``): a batch retried after a lost
  connection is appended once. One entry is in flight at a time, in order;
  the batches that waited for it go in the next entry together
  (:meth:`RedisBus._merge_waiting`), so a round trip longer than a turn
  never makes a queue; while Redis is away they wait (at most
  :data:`MAX_WAITING` events) and go once it is back. ``MAXLEN ~ N`` trims the stream.
- **Connections**: txredisapi's protocol with commands packed and replies
  decoded by hiredis (:func:`_protocol_class`), TCP_NODELAY on.
- **Reading**: a loop of ``XREAD BLOCK`` from the last entry id delivered, on a
  connection of its own; after a reconnect it goes on from that id (no gap,
  no duplicate). Entries are skipped when their node's batch number was seen
  already (a retry that had reached Redis before its connection went). A
  room whose next id is past the last one this node delivered (the stream
  trimmed past it, entries lost in a Redis restart) is caught up from the
  store's history by the state (:meth:`NodeListener.missed`), which says so.
- **Rooms, accounts and sessions**: room creations and deletions, accounts
  registered, changed and deleted, and logins travel as entries of their own
  (:meth:`share`), in order with the events.
- **Heartbeats**: every node appends ``["alive", {ROOM: [NAME, ...]}]`` each
  :data:`BEAT` seconds, with ``{NAME: [SINCE, AWAY]}`` (else null) after it every
  :data:`ONLINE_EVERY` beats and once a new node is read, then the stream id up to
  which the node's events are stored (:meth:`NodeListener.stored`), then the id up to
  which it has read the stream (and ``["gone", READ]`` when it stops); every node follows the others' members and logged-in users
  from it and their joins, leaves, logins, logouts and away changes
  (:meth:`online_elsewhere`); a node silent for
  :data:`DEAD_AFTER` seconds, or gone, has its users' leaves published by one
  survivor (:meth:`_gone`). Silence is judged only by a node that reads its own
  entries back (:data:`OWN_LATE`): a Redis outage takes nobody for gone.
- **History**: the node that published an event records it in the store
  (:meth:`mine`); every node keeps it in its rings. Each heartbeat says up to
  which stream id its node's events are stored; the others keep its events
  read after that and, if it dies, the survivor that announces its leaves
  stores them (:meth:`_gone`; the store skips ids it has).
- **Private messages** for a user on another node: the others keep those read
  after that node's last heartbeat's read position and, if it dies, the
  survivor that announces its leaves delivers each to its recipient if logged
  in there, else keeps it as an offline message (:meth:`_gone`).

An entry's fields: ``n`` node, ``s`` batch number, ``e`` the events as JSON
``[[ROOM, [[AT, SENDER, KIND, TEXT, TARGET, UNTIL], ...]], ...]``, ``b`` the
first id of each room's events (comma-separated, in the order of ``e``),
``c`` a change as JSON (``chatd.core.ports.Bus.share``: a room created or
deleted, a login or logout, an away change, a private message for a user on another node, an account
registered, its password changed or deleted, a file stored for the other nodes) or "".
docs/ARCHITECTURE.md, "Several nodes".
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.task import LoopingCall
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from chatd.core.events import EventKind, RoomEvent
from chatd.core.ports import OnlineElsewhere
from chatd.text import name_key

#: Entries kept in the stream (``XADD MAXLEN ~``): about this many turns of every node.
MAXLEN = 100_000
#: Events waiting to be appended while Redis is away; beyond this the oldest are dropped (logged).
MAX_WAITING = 100_000
#: Room batches (one room's events of one entry) of another node kept until its heartbeat says they are
#: stored (to store them if it dies); beyond this the oldest are dropped (logged).
MAX_UNSTORED = 20_000
#: Private messages for another node's users kept until its heartbeat says it read them (to keep them for
#: their recipients if it dies first); beyond this, per node, the oldest are dropped (logged).
MAX_UNREAD_PRIVATE = 10_000
#: The most events merged into one entry from batches waiting for the writer.
MERGE_MAX = 2_000
#: Entries read per XREAD, and how long one blocks (ms) before it is issued again.
READ_COUNT = 512
READ_BLOCK_MS = 2000
#: Seconds between two heartbeats of a node; a node silent for DEAD_AFTER seconds is taken for dead.
BEAT = 1.0
DEAD_AFTER = 3.0
#: A node judges the others only while its own entries come back: none read for this many seconds (Redis away,
#: paused, or this node cut off from it) and it takes nobody for dead; once they come back again the others'
#: silence is counted from then on (docs/OPERATIONS.md, "Several nodes").
OWN_LATE = 2.0
#: Every this many heartbeats (and the next one after a node is first read) carries who is logged in here;
#: logins, logouts and away changes travel at once in between.
ONLINE_EVERY = 10
#: At start-up the stream is read back this far (seconds before its newest entry, at most RECOVER_MAX entries)
#: for events whose node died before storing them (:meth:`RedisBus._recover`).
RECOVER_SECONDS = DEAD_AFTER + 3.0
RECOVER_MAX = 20_000
#: The stream's key; room counters and node sequence keys share its prefix.
STREAM = "chatd:events"

_KINDS = {kind.value: kind for kind in EventKind}
_JOIN, _LEAVE = EventKind.JOIN, EventKind.LEAVE
_new_tuple = tuple.__new__
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode

#: Appends one batch: KEYS = stream, node key, room counters; ARGV = maxlen, node, seq, events, change, then
#: per room its event count and its floor (the publishing node's last id for it). Returns the entry id, or
#: false when this node's batch ``seq`` was appended already (a retry).
APPEND = """
local seq = tonumber(ARGV[3])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if last >= seq then return false end
redis.call('SET', KEYS[2], ARGV[3], 'EX', 86400)
local bases = {}
for i = 3, #KEYS do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  local floor = tonumber(ARGV[2 * i + 1])
  if cur < floor then cur = floor end
  redis.call('SET', KEYS[i], string.format('%d', cur + tonumber(ARGV[2 * i])))
  bases[#bases + 1] = string.format('%d', cur + 1)
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'n', ARGV[2], 's', ARGV[3], 'e', ARGV[4],
                  'c', ARGV[5], 'b', table.concat(bases, ','))
"""


class NodeListener(Protocol):
    """What the state does with what other nodes changed (``chatd.nodes.Nodes``)."""

    def room_created(self, name: str, owner: str, created: str, room_id: str) -> None:
        """Another node created the room ``name``."""

    def room_deleted(self, name: str, by: str) -> None:
        """A node deleted the room ``name`` (``by``: its owner or an admin)."""

    def logged_in(self, name: str, here: bool) -> None:
        """The account ``name`` logged in on this node (``here``) or another, in the stream's order."""

    def account_changed(self, name: str, password_hash: str, created: str) -> None:
        """Another node registered the account ``name`` or changed its password."""

    def members(self) -> dict[str, list[str]] | None:
        """Who is in which room on this node, for the heartbeat (None while shutting down: no heartbeat)."""

    def node_gone(self, node: str, rooms: dict[str, list[str]]) -> None:
        """The node ``node`` stopped or died; ``rooms``: who was in which room there: they leave (publish)."""

    def account_deleted(self, name: str) -> None:
        """Another node deleted the account ``name``."""

    def file_shared(self, room: str, file_id: str, name: str, size: int, sha256: str, sender: str) -> None:
        """Another node shared a file in ``room`` and stored it (``chatd.store.Store.store_file``)."""

    def room_values(self, room: str, values: list[list[str]]) -> None:
        """Another node changed ``room``'s stored values (topic, settings, roles, bans, mutes, invites, owner)."""

    def kicked(self, room: str, by: str, target: str, reason: str) -> None:
        """Another node kicked ``target`` from ``room``: its session here, if in the room, leaves it too."""

    def file_undelivered(self, file_id: str, text: str) -> None:
        """A recipient on another node did not get the file ``file_id`` (``text``: who and why)."""

    def online(self) -> dict[str, list[Any]]:
        """Who is logged in here, for the heartbeat: ``{NAME: [SINCE, AWAY]}`` (whole seconds; "": not away)."""

    def private(self, at: float, sender: str, recipient: str, text: str, notice: bool) -> None:
        """A private message from another node to ``recipient``, logged in here when it was sent."""

    def admin(self, action: str, by: str, args: list[str]) -> None:
        """An admin's action on another node that applies here too (``chatd.admin.Administration.elsewhere``)."""

    def account_values(self, name: str, values: dict[str, str]) -> None:
        """Another node stored per-account values of ``name`` (a lock, a resume token epoch; "" deletes one)."""

    def stored(self) -> str | None:
        """The stream id up to which every event this node published is in the store (None: not known yet)."""

    def unstored(self, node: str, events: list[RoomEvent]) -> None:
        """``node`` died: its events read after its last :meth:`stored` position, to be stored (idempotently)."""

    def known(self) -> dict[str, int]:
        """Each room's last event id here (its stored history's end at start-up), by room name."""

    def taken_for_gone(self, rooms: dict[str, list[str]]) -> None:
        """
        Another node took this one for gone (silent: cut off from Redis for a while) and published the leaves
        of ``rooms``' users (``{ROOM: [NAME, ...]}``): those still in the room here join it again.
        """

    def missed(self, room: str, first: int, last: int) -> defer.Deferred[None]:
        """
        Events ``first``..``last`` of ``room`` never reached this node: deliver
        them from the store's history (and tell the room's members); the
        stream waits until this fires.
        """


def parse_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST:PORT/DB`` -> (host, port, db); port 6379 and db 0 by default. Raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError("--bus takes a redis://HOST:PORT/DB URL")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"--bus: the database must be a number, not {path!r}")
    return parts.hostname, parts.port or 6379, int(path or 0)


def default_node_name() -> str:
    """``HOST.PID``: a node's name unless ``--node-name`` gives one."""
    return f"{socket.gethostname()}.{os.getpid()}"


# -- the entry format --------------------------------------------------------


def encode(events: Sequence[RoomEvent]) -> tuple[str, list[str], list[int], list[int]]:
    """
    One batch -> (the ``e`` field, the rooms in its order, each room's event count, each room's floor: the id
    before its first event as this node numbered it). A room's events keep their order.
    """
    groups: dict[str, list[Any]] = {}
    floors: dict[str, int] = {}
    for event in events:
        group = groups.get(event[0])
        if group is None:
            groups[event[0]] = group = []
            floors[event[0]] = event[1] - 1
        group.append(event[2:])
    rooms = list(groups)
    return _dumps([[room, groups[room]] for room in rooms]), rooms, [len(groups[r]) for r in rooms], \
        [max(0, floors[r]) for r in rooms]


def decode(payload: str, bases: str) -> list[tuple[str, int, list[RoomEvent]]]:
    """The ``e`` and ``b`` fields -> [(room, first id, its events with their ids)]. Raises ValueError if malformed."""
    if not payload:
        return []
    groups = json.loads(payload)
    firsts = [int(base) for base in bases.split(",")] if bases else []
    if len(firsts) != len(groups):
        raise ValueError("an entry's rooms and first ids do not match")
    decoded = []
    for (room, items), first in zip(groups, firsts):
        events = [_new_tuple(RoomEvent, (room, first + offset, float(at), str(sender), _KINDS[kind], str(text),
                                         str(target), float(until)))
                  for offset, (at, sender, kind, text, target, until) in enumerate(items)]
        decoded.append((str(room), first, events))
    return decoded


def _fields(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}


def _forget_through(kept: list[tuple[str, Any]] | None, mark: Any) -> None:
    """Delete from ``kept`` (``[(stream id, ...)]``, in stream order) the items at or before the id ``mark``."""
    if kept and isinstance(mark, str) and mark:
        count = 0
        while count < len(kept) and not _later_id(kept[count][0], mark):
            count += 1
        del kept[:count]


def _later_id(a: str, b: str) -> bool:
    """Whether stream id ``a`` comes after ``b`` (``MS-SEQ``)."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) > (int(bms), int(bseq or 0))


def _ready(protocol: Any) -> defer.Deferred[Any]:
    """
    A txredisapi protocol is ready once its SELECT is answered (ClientService's ``prepareConnection``). Its
    socket gets TCP_NODELAY, as redis-py's and hiredis's do: an entry larger than a TCP segment would
    otherwise wait with its last part for Redis's delayed ACK (up to 40 ms), while Redis waits for that part.
    """
    protocol.transport.setTcpNoDelay(True)
    ready: defer.Deferred[Any] = protocol.whenConnected()
    return ready


_PROTOCOL: type | None = None


def _protocol_class() -> type:
    """
    txredisapi's protocol (over hiredis) with its two per-call loops of
    Python in C, the bus's cost per entry (docs/PERFORMANCE.md, "Issue 17:
    latency over the bus"): a command is packed by ``hiredis.pack_command``
    (txredisapi encodes each argument in Python) and replies are decoded as
    UTF-8 by hiredis's reader (txredisapi walks every reply, an ``XREAD``'s
    entries and fields, in Python to decode it). Replies and errors are the
    same otherwise: str for strings (invalid UTF-8 replaced), int, list,
    None, ``txredisapi.ResponseError`` raised.
    """
    global _PROTOCOL
    if _PROTOCOL is None:
        import hiredis
        import txredisapi  # type: ignore[import-untyped]  # (the cluster extra, untyped)

        class FastProtocol(txredisapi.HiredisProtocol):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self._reader = hiredis.Reader(protocolError=txredisapi.InvalidData,
                                              replyError=txredisapi.ResponseError, encoding="utf-8", errors="replace")

            def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
                return hiredis.pack_command(args)

            @staticmethod
            def tryConvertData(data: Any) -> Any:
                return data

            def execute_command(self, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
                if self.pipelining or self.inMulti or self.inTransaction or self.replyTimeout or not self.connected:
                    return super().execute_command(*args, **kwargs)  # (as txredisapi does it)
                self.transport.write(hiredis.pack_command(args))
                reply: defer.Deferred[Any] = self.replyQueue.get().addCallback(self.handle_reply)
                return reply

            def dataReceived(self, data: bytes, unpause: bool = False) -> None:
                if self.inTransaction:
                    return super().dataReceived(data, unpause)
                reader, put = self._reader, self.replyQueue.put
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    put(reply)

        _PROTOCOL = FastProtocol
    return _PROTOCOL


class Script:
    """
    A Lua script run by its SHA1 (``EVALSHA``), loaded on first use and again
    when Redis answers ``NOSCRIPT`` (a restarted or flushed server forgets its
    scripts; https://redis.io/docs/latest/commands/evalsha/).
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha: str | None = None

    @defer.inlineCallbacks
    def run(self, connection: Any, keys: list[str], args: list[Any]) -> Any:
        """Run on ``connection`` with ``keys`` and ``args``; fires with the script's reply (Redis errors fail it)."""
        if self.sha is None:
            self.sha = yield connection.execute_command("SCRIPT", "LOAD", self.source)
        try:
            reply = yield connection.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as error:
            if "NOSCRIPT" not in str(error):
                raise
            self.sha = yield connection.execute_command("SCRIPT", "LOAD", self.source)
            reply = yield connection.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        return reply


class _Connections(Factory):
    """Builds txredisapi protocols for a :class:`ClientService` (which reconnects; txredisapi's pool does not)."""

    isLazy = True

    def __init__(self, db: int) -> None:
        self.db = db

    def buildProtocol(self, addr: Any) -> Any:
        protocol = _protocol_class()(charset="utf-8", dbid=self.db or None, convertNumbers=False)
        protocol.factory = self
        return protocol

    # Called by RedisProtocol when AUTH or SELECT fails: ClientService keeps retrying (logged).
    def stopTrying(self) -> None:
        pass

    def connectionError(self, message: str) -> None:
        RedisBus.log.error("{message}", message=message)


class RedisBus:
    """
    :class:`chatd.core.ports.Bus` over one Redis Stream, shared by the nodes
    at ``url`` (``redis://HOST:PORT/DB``). ``node``: this node's name
    (``--node-name``; a random suffix tells its runs apart). Start with
    :meth:`start`, stop with :meth:`stop` (``chatd.service.BusService``).
    """

    log = Logger()

    def __init__(self, url: str, reactor: Any, node: str | None = None, maxlen: int = MAXLEN,
                 stream: str = STREAM) -> None:
        self.host, self.port, self.db = parse_url(url)
        #: Where the bus is, for the log and start-up errors.
        self.where = f"Redis at {self.host}:{self.port}/{self.db}"
        self.reactor = reactor
        self.node = f"{node or default_node_name()}/{secrets.token_hex(4)}"
        self.maxlen = maxlen
        self.stream = stream
        self._receivers: tuple[Callable[[RoomEvent], None], ...] = ()
        self.listener: NodeListener | None = None
        #: Events of this turn, not yet in a batch.
        self._turn: list[RoomEvent] = []
        self._scheduled = False
        #: Batches waiting to be appended, oldest first: (seq, events, change).
        self._out: list[tuple[int, list[RoomEvent], list[Any] | None]] = []
        self._waiting_events = 0
        self._seq = 0
        #: The number of the batch last sent: if it is still the first waiting, it is retried as it was.
        self._tried = 0
        #: The last stream id delivered; per room the last event id delivered; per node its last batch number.
        self.last_id = "0-0"
        self._last: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        #: Events this node published, delivered and not yet recorded in history (:meth:`mine`).
        self._own: set[RoomEvent] = set()
        #: The stream id up to which every delivered event has been recorded (the fan-outs flushed).
        self._recorded = "0-0"
        #: Per other node, its events read after its last heartbeat's stored position: [(entry id, events)];
        #: the survivor that announces its leaves stores them if it dies (:meth:`_gone`).
        self._unstored: dict[str, list[tuple[str, list[RoomEvent]]]] = {}
        #: Per other node, the private messages for its users read after its last heartbeat's read position:
        #: [(entry id, change)]; the survivor that announces its leaves keeps them if it dies (:meth:`_gone`).
        self._unread: dict[str, list[tuple[str, list[Any]]]] = {}
        #: Other nodes: when an entry of each was last read (reactor seconds), and who is in which room there
        #: (their last heartbeat's list, kept up to date by their joins and leaves since).
        self._nodes: dict[str, float] = {}
        #: When this node last read an entry of its own back (reactor seconds): it judges others only meanwhile.
        self._own_seen = 0.0
        self._rooms_of: dict[str, dict[str, dict[str, None]]] = {}
        #: Who is logged in on each other node ({NAME: [SINCE, AWAY]}: its heartbeat, logins, logouts, away
        #: changes), and the view made of it and ``_rooms_of`` (None: to be made again: :meth:`online_elsewhere`).
        self._online_of: dict[str, dict[str, list[Any]]] = {}
        self._view: dict[str, OnlineElsewhere] | None = None
        self._beats_made = 0
        self._online_due = True
        self._beats = LoopingCall(self._beat)
        self._beats.clock = reactor
        self._running = False
        self._writing: defer.Deferred[None] | None = None
        self._reading: defer.Deferred[None] | None = None
        self._script = Script(APPEND)
        #: The stream's newest entry when this node connected, and who waits until it is delivered (None: it is).
        self._end = "0-0"
        self._catching_up: list[defer.Deferred[None]] | None = []
        self._reader = self._service()
        self._writer = self._service()
        #: Counts for tests and the bench: entries of events appended, entries read, events delivered.
        self.appended = 0
        self.read = 0
        self.delivered = 0

    def _service(self) -> ClientService:
        endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=5)
        return ClientService(endpoint, _Connections(self.db), retryPolicy=backoffPolicy(0.1, 1.0, 1.5),
                             clock=self.reactor, prepareConnection=_ready)

    # -- the Bus interface --------------------------------------------------

    def subscribe(self, receiver: Callable[[RoomEvent], None]) -> None:
        self._receivers += (receiver,)

    def publish(self, event: RoomEvent) -> None:
        """Queue ``event`` for this turn's batch (its id is given by the stream: see the module)."""
        self._turn.append(event)
        if not self._scheduled:
            self._scheduled = True
            self.reactor.callLater(0, self._end_turn)

    def share(self, change: list[Any]) -> None:
        """A room change made here, for every node (:class:`NodeListener`), after this turn's events so far."""
        self._close_turn()
        self._queue([], change)

    def elsewhere(self, room: str) -> list[str]:
        """The members of ``room`` on other nodes, by name (their last heartbeat, then their joins and leaves)."""
        names: dict[str, None] = {}
        for rooms in self._rooms_of.values():
            names.update(rooms.get(room, {}))
        return list(names)

    def other_nodes(self) -> int:
        """How many other nodes are alive: those heard from within DEAD_AFTER seconds."""
        return len(self._nodes)

    def online_elsewhere(self) -> dict[str, OnlineElsewhere]:
        """The users logged in on other nodes, by name key (of one name on two nodes, the later login)."""
        if self._view is None:
            view: dict[str, OnlineElsewhere] = {}
            for node, users in self._online_of.items():
                rooms: dict[str, list[str]] = {}  # (the rooms each is in on its node)
                for room, names in self._rooms_of.get(node, {}).items():
                    for name in names:
                        rooms.setdefault(name, []).append(room)
                for name, values in users.items():
                    try:
                        since, away = float(values[0]), str(values[1])
                    except (TypeError, ValueError, IndexError):  # (not what a node of ours sends: skipped)
                        continue
                    key = name_key(name)
                    if key not in view or view[key].since < since:
                        view[key] = OnlineElsewhere(name, node, since, away or None, tuple(rooms.get(name, ())))
            self._view = view
        return self._view

    def caught_up(self) -> defer.Deferred[None]:
        """
        Fires (None) once this node has delivered every entry the stream held
        when it connected at its start (:meth:`start`): the rooms and accounts
        other nodes made while it loaded the store are known from then on
        (``chatd.service`` accepts users after it).
        """
        if self._catching_up is None:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._catching_up.append(waiter)
        return waiter

    def _check_caught_up(self) -> None:
        if self._catching_up is not None and not _later_id(self._end, self.last_id):
            waiters, self._catching_up = self._catching_up, None
            self.log.info("bus: caught up with the stream at {last}", last=self.last_id)
            for waiter in waiters:
                waiter.callback(None)

    def recorded(self) -> str:
        """The stream id up to which every event delivered here has been recorded (``History.position``)."""
        return self._recorded

    def mine(self, event: RoomEvent) -> bool:
        """Whether this node records ``event`` in the store's history (it published it); asked once per event."""
        if event in self._own:
            self._own.discard(event)
            return True
        return False

    # -- writing ------------------------------------------------------------

    def _end_turn(self) -> None:
        self._scheduled = False
        self._close_turn()

    def _close_turn(self) -> None:
        if self._turn:
            events, self._turn = self._turn, []
            self._queue(events, None)

    def _queue(self, events: list[RoomEvent], change: list[Any] | None) -> None:
        self._seq += 1
        self._out.append((self._seq, events, change))
        self._waiting_events += len(events)
        while self._waiting_events > MAX_WAITING and len(self._out) > 1:
            _, dropped, _ = self._out.pop(1 if self._writing is not None else 0)
            self._waiting_events -= len(dropped)
            self.log.error("Redis is away: dropped {count} room event(s) waiting for it", count=len(dropped))
        if self._running and self._writing is None:
            self._writing = self._write_all()

    def _merge_waiting(self) -> None:
        """
        Merge the first waiting batch with the event batches after it into one
        entry (up to a batch with a change, at most :data:`MERGE_MAX` events):
        the entry takes the last one's number, each room's events stay in
        their order, a change stays before the events queued after it.
        """
        out = self._out
        seq, events, change = out[0]
        count, end = len(events), 1
        while end < len(out) and out[end][2] is None and count + len(out[end][1]) <= MERGE_MAX:
            count += len(out[end][1])
            end += 1
        if end > 1:
            merged = [event for _, batch, _ in out[:end] for event in batch]
            out[:end] = [(out[end - 1][0], merged, change)]

    @defer.inlineCallbacks
    def _write_all(self) -> Any:
        """
        Append the waiting batches in order, one entry in flight: everything
        waiting when a write starts goes in it (:meth:`_merge_waiting`); a
        write that failed is retried as it was (Redis may have appended it:
        its number makes the retry a no-op) until Redis takes it.
        """
        try:
            while self._out and self._running:
                if self._out[0][0] != self._tried:
                    self._merge_waiting()
                seq, events, change = self._out[0]
                self._tried = seq
                try:
                    connection = yield self._writer.whenConnected()
                    yield self._append(connection, seq, events, change)
                except Exception as error:  # Redis away or failing: the batch waits, nothing is lost
                    if not self._running:
                        break
                    self.log.warn("could not append to the Redis stream ({error}); retrying", error=error)
                    yield task.deferLater(self.reactor, 0.2, lambda: None)
                    continue
                self._out.pop(0)
                self._waiting_events -= len(events)
                if events:
                    self.appended += 1
        finally:
            self._writing = None

    @defer.inlineCallbacks
    def _append(self, connection: Any, seq: int, events: list[RoomEvent], change: list[Any] | None) -> Any:
        payload, rooms, counts, floors = encode(events) if events else ("", [], [], [])
        keys = [self.stream, f"chatd:node:{self.node}", *(f"chatd:room:{name_key(room)}" for room in rooms)]
        args: list[Any] = [self.maxlen, self.node, seq, payload, _dumps(change) if change else ""]
        for count, floor in zip(counts, floors):
            args += [count, floor]
        result = yield self._script.run(connection, keys, args)
        return result

    # -- reading ------------------------------------------------------------

    @defer.inlineCallbacks
    def _read_all(self) -> Any:
        """Read the stream from :attr:`last_id` and deliver each entry, until stopped; reconnects by itself."""
        self._check_caught_up()
        while self._running:
            try:
                connection = yield self._reader.whenConnected()
                reply = yield connection.execute_command("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS,
                                                         "STREAMS", self.stream, self.last_id)
            except Exception as error:
                if not self._running:
                    break
                self.log.warn("reading the Redis stream failed ({error}); resuming from {last}", error=error,
                              last=self.last_id)
                yield task.deferLater(self.reactor, 0.2, lambda: None)
                continue
            # What this node published and delivered before this reply has been recorded (the fan-out
            # flushes within the turn it is delivered in; a reply comes in a later turn): forget it.
            self._own.clear()
            self._recorded = self.last_id
            for _, entries in reply or ():
                for entry_id, flat in entries:
                    if not self._running:
                        return
                    yield self._apply(str(entry_id), _fields(flat))
            self._check_caught_up()

    def _apply(self, entry_id: str, fields: dict[str, str]) -> defer.Deferred[None] | None:
        """Deliver one entry (or skip it: a batch seen already); a Deferred when a room had to catch up first."""
        if not _later_id(entry_id, self.last_id):
            return None
        self.last_id = entry_id
        self.read += 1
        node, seq = fields.get("n", ""), int(fields.get("s") or 0)
        if seq <= self._seen.get(node, 0):
            return None  # a retried batch that had been appended before its connection went
        self._seen[node] = seq
        now = self.reactor.seconds()
        if node != self.node:
            if node not in self._nodes:
                self._online_due = True  # (a node started: it learns who is logged in here at the next beat)
            self._nodes[node] = now
        else:
            if now - self._own_seen > OWN_LATE:  # back after a break: the others' silence counts from now
                self._nodes = dict.fromkeys(self._nodes, now)
            self._own_seen = now
        try:
            groups = decode(fields.get("e", ""), fields.get("b", ""))
            change = json.loads(fields["c"]) if fields.get("c") else None
        except (ValueError, KeyError, TypeError) as error:
            self.log.error("skipped a malformed Redis stream entry {id}: {error}", id=entry_id, error=error)
            return None
        if change is not None:
            self._change(change, node)
        gaps = [(room, self._last[room] + 1, first - 1) for room, first, _ in groups
                if room in self._last and first > self._last[room] + 1]
        if gaps and self.listener is not None:
            return defer.gatherResults([self.listener.missed(*gap) for gap in gaps], consumeErrors=True) \
                .addErrback(lambda failure: self.log.failure("catching up missed room events failed", failure)) \
                .addCallback(lambda _: self._deliver(groups, node))
        self._deliver(groups, node)
        return None

    def _deliver(self, groups: list[tuple[str, int, list[RoomEvent]]], node: str) -> None:
        own = node == self.node
        rooms_there = None if own else self._rooms_of.get(node)
        for room, first, events in groups:
            last = self._last.get(room, 0)
            if first <= last:
                # Known already: in the store when this node loaded it, or ids given twice after a Redis
                # restart lost entries that not every node had read (docs/OPERATIONS.md, "Several nodes").
                self.log.info("room {room}: skipped event ids {first}..{end}, at or below {last} delivered",
                              room=room, first=first, end=min(last, first + len(events) - 1), last=last)
                events = events[last - first + 1:]
                if not events:
                    continue
            self._last[room] = first + len(events) - 1 if first > last else last + len(events)
            if own:
                self._own.update(events)
            else:
                self._keep_unstored(node, events)
                if rooms_there is not None:
                    self._follow(rooms_there, room, events)
                    self._view = None
            self.delivered += len(events)
            for event in events:
                for receiver in self._receivers:
                    receiver(event)

    def _keep_unstored(self, node: str, events: list[RoomEvent]) -> None:
        """Keep another node's ``events`` (one room's, of the entry read last) until it says they are stored."""
        kept = self._unstored.setdefault(node, [])
        kept.append((self.last_id, events))
        if len(kept) > MAX_UNSTORED:
            _, dropped = kept.pop(0)
            self.log.warn("bus: node {node} says nothing of its history commits: {count} of its events no longer "
                          "kept to store if it dies", node=node, count=len(dropped))

    def _private(self, change: list[Any]) -> None:
        """``["private", NODE, AT, SENDER, RECIPIENT, TEXT, NOTICE]`` to the listener (:meth:`NodeListener.private`)."""
        if self.listener is not None:
            self.listener.private(float(change[2]), str(change[3]), str(change[4]), str(change[5]), bool(change[6]))

    def _read_by(self, node: str, mark: Any) -> None:
        """``node`` says it read the stream up to id ``mark``: the private messages for it before are its own."""
        _forget_through(self._unread.get(node), mark)

    def _stored_by(self, node: str, mark: Any) -> None:
        """``node`` says every event it published up to stream id ``mark`` is in the store: forget them."""
        _forget_through(self._unstored.get(node), mark)

    def _presence(self, node: str, change: list[Any]) -> None:
        """Another node's ``["login", NAME, SINCE]``, ``["logout", NAME]`` or ``["away", NAME, MESSAGE]``."""
        name = str(change[1])
        if change[0] == "login":
            for other in self._online_of.values():  # (a login ends the account's session on any other node)
                other.pop(name, None)
            since = float(change[2]) if len(change) > 2 else self.reactor.seconds()
            self._online_of.setdefault(node, {})[name] = [since, ""]
        users = self._online_of.get(node, {})
        if change[0] == "logout":
            users.pop(name, None)
        elif change[0] == "away" and name in users:
            users[name][1] = str(change[2])
        self._view = None

    @staticmethod
    def _follow(rooms: dict[str, dict[str, None]], room: str, events: list[RoomEvent]) -> None:
        """Another node's joins and leaves in ``room`` since its heartbeat: who is there stays known."""
        for event in events:
            if event[4] is _JOIN:
                rooms.setdefault(room, {})[event[3]] = None
            elif event[4] is _LEAVE:
                rooms.get(room, {}).pop(event[3], None)

    def _change(self, change: list[Any], node: str) -> None:
        here = node == self.node
        if change[0] == "delete":
            self._last.pop(str(change[1]), None)
        if change[0] == "alive" and not here:
            self._rooms_of[node] = {str(room): dict.fromkeys(map(str, names)) for room, names in change[1].items()}
            if len(change) > 2 and change[2] is not None:
                self._online_of[node] = dict(change[2])  # (checked as the view is made: once per change)
            if len(change) > 3:
                self._stored_by(node, change[3])
            if len(change) > 4:
                self._read_by(node, change[4])
            self._view = None
            return
        if change[0] in ("login", "logout", "away") and not here:
            self._presence(node, change)
        elif change[0] == "private":
            if change[1] == self.node and self.listener is not None:
                self._private(change)
            elif change[1] != self.node:  # (kept until its node says it read it: :meth:`_gone`)
                unread = self._unread.setdefault(str(change[1]), [])
                unread.append((self.last_id, change))
                if len(unread) > MAX_UNREAD_PRIVATE:
                    del unread[0]
                    self.log.warn("bus: node {node} says nothing of what it read: a private message for it is no "
                                  "longer kept in case it dies", node=change[1])
            return
        if change[0] == "gone" and not here:
            if len(change) > 1:
                self._read_by(node, change[1])
            self._gone(node)
            return
        if change[0] == "taken_gone":
            if change[1] == self.node and self.listener is not None:
                self._online_due = True  # (the others dropped who is logged in here)
                self.log.warn("bus: node {node} took this node for gone: its users there join again", node=node)
                self.listener.taken_for_gone({str(room): [str(name) for name in names]
                                              for room, names in change[2].items()})
            return
        if self.listener is None:
            return
        try:
            if change[0] == "create":
                self.listener.room_created(*(str(part) for part in change[1:5]))
            elif change[0] == "delete":
                self.listener.room_deleted(str(change[1]), str(change[2]))
            elif change[0] == "login":
                self.listener.logged_in(str(change[1]), here)
            elif change[0] == "account" and not here:
                self.listener.account_changed(str(change[1]), str(change[2]), str(change[3]))
            elif change[0] == "account_deleted" and not here:
                self.listener.account_deleted(str(change[1]))
            elif change[0] == "file" and not here:
                self.listener.file_shared(str(change[1]), str(change[2]), str(change[3]), int(change[4]),
                                          str(change[5]), str(change[6]))
            elif change[0] == "room_values" and not here:
                self.listener.room_values(str(change[1]), [[str(part) for part in value] for value in change[2]])
            elif change[0] == "kick" and not here:
                self.listener.kicked(*(str(part) for part in change[1:5]))
            elif change[0] == "file_undelivered" and not here:
                self.listener.file_undelivered(str(change[1]), str(change[2]))
            elif change[0] == "admin" and not here:
                self.listener.admin(str(change[1]), str(change[2]), [str(part) for part in change[3:]])
            elif change[0] == "account_values" and not here:
                self.listener.account_values(str(change[1]), {str(k): str(v) for k, v in change[2].items()})
        except Exception:
            self.log.failure("applying a room change from the bus failed: {change!r}", change=change)

    # -- heartbeats ---------------------------------------------------------

    def _beat(self) -> None:
        """
        Every BEAT seconds: say this node is alive, with who is in which room
        here (``["alive", {ROOM: [NAME, ...]}]``; none while the state shuts
        down; every ONLINE_EVERY beats, or when a node was first read, also
        ``{NAME: [SINCE, AWAY]}``: who is logged in here), and take the nodes
        silent for DEAD_AFTER seconds for dead, if this node's own entries
        come back (:data:`OWN_LATE`): a node that cannot read or write the
        stream itself cannot tell a silent node from its own cut-off.
        """
        if not self._running:
            return
        members = self.listener.members() if self.listener is not None else {}
        if members is not None:
            beat: list[Any] = ["alive", members, None, self.listener.stored() if self.listener is not None else None,
                               self.last_id]
            if self.listener is not None and (self._online_due or self._beats_made % ONLINE_EVERY == 0):
                beat[2] = self.listener.online()
                self._online_due = False
            self._beats_made += 1
            self.share(beat)
        now = self.reactor.seconds()
        if now - self._own_seen > OWN_LATE:
            if self._nodes and not self._cut_off:
                self._cut_off = True
                self.log.warn("bus: this node's own entries have not come back for {late:.1f} s: no other node is "
                              "taken for gone until they do", late=now - self._own_seen)
            return
        if self._cut_off:
            self._cut_off = False
            self.log.info("bus: this node's own entries come back again")
        for node, seen in list(self._nodes.items()):
            if now - seen > DEAD_AFTER:
                self.log.warn("bus: node {node} silent for {silent:.1f} s: taken for gone", node=node,
                              silent=now - seen)
                self._gone(node, silent=True)

    def _gone(self, node: str, silent: bool = False) -> None:
        """
        ``node`` stopped or died: its users leave their rooms. The survivor
        with the first name among the nodes alive publishes their LEAVE
        events, once, for every node; a user in the room on another node
        (reconnected there) is left alone. A ``silent`` node may only have
        been cut off: after the leaves the survivor shares ``["taken_gone",
        NODE, {ROOM: [NAME, ...]}]``, and that node, if it reads it, has
        them join again (:meth:`NodeListener.taken_for_gone`).
        """
        self._nodes.pop(node, None)
        rooms = self._rooms_of.pop(node, {})
        self._online_of.pop(node, None)
        unstored = self._unstored.pop(node, [])
        unread = self._unread.pop(node, [])
        self._view = None
        if self.listener is None or min([*self._nodes, self.node]) != self.node:
            return
        if unstored:  # (what it published after its last commit: the store skips what it has)
            self.listener.unstored(node, [event for _, events in unstored for event in events])
        for _, change in unread:  # (sent to its users after what it last said it read: delivered or kept here)
            self._private(change)
        if unread:
            self.log.info("bus: node {node} gone: {count} private message(s) it may not have read delivered or "
                          "kept here", node=node, count=len(unread))
        elsewhere = self._rooms_of.values()
        left = {room: [name for name in names if not any(name in there.get(room, ()) for there in elsewhere)]
                for room, names in rooms.items()}
        left = {room: names for room, names in left.items() if names}
        if left:
            self.listener.node_gone(node, left)
        if silent:  # (with no members too: that node, back, sends who is logged in there at its next beat)
            self.share(["taken_gone", node, left])

    # -- start and stop -----------------------------------------------------

    def position_now(self, timeout: float = 5.0) -> None:
        """
        Where this node starts reading: the stream's newest entry, asked for
        synchronously **before the store is loaded** (``BusService.
        privilegedStartService``), so every change after what the load saw
        comes from the stream (a room created meanwhile on another node, the
        events not yet in the store's history). Raises OSError (Redis not
        reachable) or ValueError (an error reply).
        """
        import hiredis

        command = [b"SELECT", str(self.db).encode(), b"XREVRANGE", self.stream.encode(), b"+", b"-", b"COUNT", b"1"]
        request = b"".join(b"*%d\r\n" % n + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)
                           for n, parts in ((2, command[:2]), (6, command[2:])))
        reader = hiredis.Reader()
        replies: list[Any] = []
        with socket.create_connection((self.host, self.port), timeout=timeout) as connection:
            connection.sendall(request)
            while len(replies) < 2:
                data = connection.recv(65536)
                if not data:
                    raise OSError("Redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
        for reply in replies:
            if isinstance(reply, Exception):
                raise ValueError(f"Redis answered: {reply}")
        if replies[1]:
            self.last_id = replies[1][0][0].decode()
        self._positioned = True

    _positioned = False
    #: Whether this node's own entries stopped coming back (logged once until they do).
    _cut_off = False

    @defer.inlineCallbacks
    def start(self) -> Any:
        """
        Connect and read from the position (:meth:`position_now`, else the
        stream's end as it connects); append what waits. The stream's end as
        it connects is where :meth:`caught_up` fires.
        """
        self._reader.startService()
        self._writer.startService()
        while True:  # (the reactor runs once this is answered: the state has taken over what the store loaded)
            try:
                connection = yield self._reader.whenConnected()
                newest = yield connection.execute_command("XREVRANGE", self.stream, "+", "-", "COUNT", 1)
            except Exception as error:
                self.log.warn("Redis at {host}:{port} not reachable yet ({error})", host=self.host, port=self.port,
                              error=error)
                yield task.deferLater(self.reactor, 0.5, lambda: None)
                continue
            break
        self._end = str(newest[0][0]) if newest else "0-0"
        if not self._positioned:
            self.last_id = self._end
            self._positioned = True
        if self.listener is not None:  # events at or below what the store had when loaded are not delivered again
            self._last.update(self.listener.known())
        self._running = True
        self._own_seen = self.reactor.seconds()
        self.log.info("bus: Redis stream {stream} at {host}:{port}/{db} from {last}, node {node}",
                      stream=self.stream, host=self.host, port=self.port, db=self.db, last=self.last_id,
                      node=self.node)
        try:
            yield self._recover(connection)
        except Exception as error:  # (Redis went meanwhile: the nodes alive store their own, as before)
            self.log.warn("bus: could not read back the stream for history not yet stored ({error})", error=error)
        self._reading = self._read_all()
        self._beats.start(BEAT, now=True)
        if self._out and self._writing is None:
            self._writing = self._write_all()

    @defer.inlineCallbacks
    def _recover(self, connection: Any) -> Any:
        """
        Every node may have died at once (Redis, with ``appendonly``, kept the
        stream): read the stream back from its end, newest first, for each
        node's events after its last heartbeat's stored position (none after
        a ``gone``: a clean stop stored everything), as far as
        :data:`RECOVER_SECONDS` before the newest entry and until every node
        read is accounted for (at most :data:`RECOVER_MAX` entries), and hand
        them to :meth:`NodeListener.unstored`: the store skips the ids it has.
        """
        if self.listener is None or self._end == "0-0":
            return
        horizon = int(self._end.partition("-")[0]) - int(RECOVER_SECONDS * 1000)
        marks: dict[str, str | None] = {}  # per node: None while its entries are still unstored, else done
        found: dict[str, list[list[RoomEvent]]] = {}  # per node: its events, newest entry first
        start, count = "+", 0
        while count < RECOVER_MAX:
            page = yield connection.execute_command("XREVRANGE", self.stream, start, "-", "COUNT", READ_COUNT)
            if not page:
                break
            for entry_id, flat in page:
                entry_id, count = str(entry_id), count + 1
                if int(entry_id.partition("-")[0]) < horizon and all(mark is not None for mark in marks.values()):
                    page = None
                    break
                fields = _fields(flat)
                node = fields.get("n", "")
                mark = marks.setdefault(node, None)
                if mark is not None and not _later_id(entry_id, mark):
                    continue
                try:
                    change = json.loads(fields["c"]) if fields.get("c") else None
                    groups = decode(fields.get("e", ""), fields.get("b", ""))
                except (ValueError, KeyError, TypeError):
                    continue
                if mark is None and change and change[0] == "gone":
                    marks[node] = entry_id
                elif mark is None and change and change[0] == "alive" and len(change) > 3 \
                        and isinstance(change[3], str):
                    marks[node] = change[3] or "0-0"
                for _, _, events in reversed(groups):
                    found.setdefault(node, []).append(events)
            if not page:
                break
            start = "(" + str(page[-1][0])
        for node, batches in found.items():
            events = [event for batch in reversed(batches) for event in batch]
            if events:
                self.listener.unstored(node, events)

    @defer.inlineCallbacks
    def stop(self, grace: float = 2.0) -> Any:
        """Say this node is gone, append what waits (at most ``grace`` seconds), then stop reading and disconnect."""
        if self._beats.running:
            self._beats.stop()
        if self._running:
            self.share(["gone", self.last_id])
        self._close_turn()
        waited = 0.0
        while (self._out or self._writing is not None) and self._running and waited < grace:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
            waited += 0.05
        if self._out:
            self.log.warn("stopping with {count} room event(s) not appended to Redis", count=self._waiting_events)
        self._running = False
        yield defer.gatherResults([self._reader.stopService(), self._writer.stopService()], consumeErrors=True)
