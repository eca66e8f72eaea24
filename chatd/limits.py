"""
Limits that keep one connection, one account or one address from hurting
everyone else.

- :class:`TokenBucket`: one allowance (``burst`` at once, ``rate`` per
  second sustained). The flood limit is one: every received line and every
  telnet command takes a token (input that never becomes a line, an over-long
  line or a telnet subnegotiation body, one per line's length of it) (but the header line of a frame of the
  connection's own active upload: uploads have their own limits, see
  chatd/transfer.py); a connection in debt stops being read (TCP pushes
  back on the sender) until the bucket has refilled. Nothing is dropped and
  the room never sees it. This is on the per-line hot path: a few float
  operations, no allocation, no logging.
- :class:`KeyedBuckets`: the buckets of one allowance by key, made on first
  use and forgotten once full again. Keys are a connection (its own bucket
  until it logs in), an account (the flood allowance once logged in: one
  for all the account's connections, past and present, so logging in again
  never buys a fresh burst) and an address (failed logins, registrations).
  Everything an account makes others see is charged to its flood
  allowance: its lines, and a leave it announces by going away (a
  disconnect, a new login replacing it), which no line paid for; a new
  connection of an account in debt reads nothing until the debt is paid.
  Password checks (argon2 hashes: every login attempt, failed or not, and
  every registration) are limited per address and per account name, so
  neither can keep the hash pool busy.
- :class:`Limits`: what the factory shares: connections in total and per
  address, the keyed allowances above, the login timeout and the optional
  idle timeout (one :class:`~twisted.internet.task.LoopingCall` sweeps
  every connection that has a deadline, instead of one timer each), and
  TCP keepalive for dead peers.

Addresses in the exempt networks (loopback by default, see
docs/OPERATIONS.md) count towards the total but not towards any
per-address limit: a TLS proxy or a local benchmark connects from there.

A client's address has one form wherever addresses are compared
(:func:`client_address`, :func:`canonical_network`): an IPv4-mapped IPv6
address (``::ffff:192.0.2.7``, how a dual-stack listener sees IPv4
clients; RFC 4291 section 2.5.5.2) is its IPv4 address, so the per-address
key, the exempt networks, address bans (chatd.admin) and the loopback test
of reserved admin names see one client one way on every listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chatd.settings import Settings
from chatd.text import name_key

#: Shortest pause of a throttled connection, so a flooder costs a few timer
#: calls a second and not one per line.
MIN_PAUSE = 0.05
#: Seconds between two "you are sending too fast" notices to one connection.
NOTICE_EVERY = 10.0
#: The escalation (docs/OPERATIONS.md, "Limits"): an account paused for FLOOD_PAUSED_LIMIT seconds in all
#: within FLOOD_WINDOW seconds while in a room is muted there for --flood-mute seconds; if that happens
#: again within --flood-mute + FLOOD_WINDOW seconds of the mute, its connection is cut off.
FLOOD_WINDOW = 60.0
FLOOD_PAUSED_LIMIT = 10.0
#: What :meth:`TokenBucket.overrun` answers: carry on (paused), mute, cut off.
FLOOD_SLOWED, FLOOD_MUTE, FLOOD_CUT = 0, 1, 2


# Why a connection is not being read (ChatProtocol.pause_reading): it reads
# again only once no reason is left.
#: Over its flood allowance (TokenBucket), until the bucket has refilled.
FLOOD = "flood limit"
#: Its uploads' spool writes lag behind (chatd.transfer).
SPOOL_BACKLOG = "spool backlog"
#: Waiting for the server to answer (a password hash, a disk write): hold/release.
ANSWER = "waiting for an answer"
#: pauseProducing from a consumer (the IPushProducer interface of LineReceiver).
CONSUMER = "consumer"


#: /history requests per second one account may make, sustained, and at once (they may read the disk).
HISTORY_REQUEST_RATE = 0.5
HISTORY_REQUEST_BURST = 5.0


def try_again(wait: float) -> str:
    """``try again in N seconds.`` for a wait of ``wait`` seconds (rounded up past it: ``1 second``, ``3 seconds``)."""
    seconds = int(wait) + 1
    return f"try again in {seconds} second{'s' if seconds != 1 else ''}."


class TokenBucket:
    """
    ``burst`` tokens, refilled at ``rate`` per second. :meth:`take` spends one
    and says how long the caller should pause (0.0: carry on).

    ``last`` is the time of the last :meth:`take` or :meth:`touch`: the connection's last
    input, which the idle timeout reads.
    """

    __slots__ = ("rate", "burst", "tokens", "last", "noticed", "window", "paused", "struck")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
        self.noticed = -NOTICE_EVERY
        #: The escalation (:meth:`overrun`): when its window began, seconds paused in it, the last mute.
        self.window = self.paused = 0.0
        self.struck = float("-inf")

    def take(self, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens (one line's worth by default); the seconds to pause before the next, or 0.0."""
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        tokens -= cost
        self.tokens = tokens
        self.last = now
        if tokens >= 0.0:
            return 0.0
        wait = -tokens / self.rate
        return wait if wait > MIN_PAUSE else MIN_PAUSE

    def touch(self, now: float) -> None:
        """Record input at ``now`` without spending a token (refilling as :meth:`take` would)."""
        tokens = self.tokens + (now - self.last) * self.rate
        self.tokens = tokens if tokens < self.burst else self.burst
        self.last = now

    def overrun(self, now: float, paused: float, mute: float) -> int:
        """
        Count ``paused`` more seconds of pause (a throttle, in a room) at
        ``now``: FLOOD_MUTE once FLOOD_PAUSED_LIMIT seconds add up within
        FLOOD_WINDOW seconds of the first, FLOOD_CUT if that happens again
        within ``mute`` (--flood-mute) + FLOOD_WINDOW seconds of the last
        mute, else FLOOD_SLOWED. Called only when over the limit: never per line.
        """
        if now - self.window > FLOOD_WINDOW:
            self.window, self.paused = now, 0.0
        self.paused += paused
        if self.paused < FLOOD_PAUSED_LIMIT:
            return FLOOD_SLOWED
        self.window, self.paused = now, 0.0
        again = now - self.struck <= mute + FLOOD_WINDOW
        self.struck = now
        return FLOOD_CUT if again else FLOOD_MUTE

    def notice_due(self, now: float) -> bool:
        """Whether to tell the user they are throttled (at most every NOTICE_EVERY s)."""
        if now - self.noticed >= NOTICE_EVERY:
            self.noticed = now
            return True
        return False


class KeyedBuckets:
    """
    The :class:`TokenBucket` of each key (an account name key, an address)
    for one allowance: ``burst`` tokens, refilled at ``rate`` per second.
    A bucket is made on first use and forgotten by :meth:`forget_full` once
    it has refilled (it would be made again in the same state), so only
    keys that used their allowance recently take memory.
    """

    def __init__(self, rate: float, burst: float, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.buckets: dict[str, TokenBucket] = {}

    def get(self, key: str) -> TokenBucket:
        """``key``'s bucket (shared by every holder: it is the same object)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, self.clock.seconds())
        return bucket

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token again (0.0: it has one now); spends nothing."""
        bucket = self.buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(bucket.burst, bucket.tokens + (self.clock.seconds() - bucket.last) * bucket.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / bucket.rate

    def take(self, key: str) -> float:
        """Spend one of ``key``'s tokens; like :meth:`TokenBucket.take`."""
        return self.get(key).take(self.clock.seconds())

    def forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled."""
        full = [key for key, bucket in self.buckets.items()
                if bucket.tokens + (now - bucket.last) * bucket.rate >= bucket.burst]
        for key in full:
            del self.buckets[key]


Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
#: Where IPv4-mapped IPv6 addresses are (RFC 4291 section 2.5.5.2).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
#: The server's own machine: loopback, IPv4 and IPv6 (mapped ones are IPv4 by then).
_LOOPBACK = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv6Network("::1/128"))


def client_address(host: str | None) -> Address | None:
    """
    The address ``host`` (text, as ``getPeer().host``) in its one compared
    form: an IPv4-mapped IPv6 address is its IPv4 address (``::ffff:127.0.0.5``
    is ``127.0.0.5``); None if ``host`` is no IP address (a UNIX socket).
    """
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical_network(network: Network) -> Network:
    """``network`` in the form :func:`client_address` compares with: ``::ffff:127.0.0.0/120`` is ``127.0.0.0/24``."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def is_local(host: str | None) -> bool:
    """Whether a connection from ``host`` comes from the server's own machine: loopback, or no IP (a UNIX socket)."""
    address = client_address(host)
    return address is None or any(address in network for network in _LOOPBACK)


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """``"127.0.0.0/8, ::1"`` (or a list of such) as ip_network objects (:func:`canonical_network`); ValueError if bad."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(canonical_network(ipaddress.ip_network(item.strip(), strict=False)) for item in items if item.strip())


class SharedBuckets(Protocol):
    """
    Token buckets shared by several nodes (``chatd.buses.redis_limits.RedisLimits``, issue 17): :meth:`take`
    asks several at once, each ``(kind, key, rate per second, burst, mode)`` (mode 0: has it a token? 1:
    that, and spend one; 2: spend one anyway).
    """

    def take(self, asks: Sequence[tuple[str, str, float, float, int]]) -> defer.Deferred[tuple[int, float, list[int]]]:
        """
        (-1, 0.0, [asks left without a token]) if none refused, else (the refusing ask, its wait, []);
        never fails.
        """


#: What a shared bucket that refuses tells the user, by kind (followed by ``try again in N seconds.``).
_SHARED_REFUSALS = {
    "login_failures": "too many failed logins from your address; ",
    "registrations": "too many new accounts from your address; ",
    "address_checks": "too many logins from your address; ",
    "account_checks": "too many logins to this account; ",
}

#: How the log names a shared bucket that has run out, by kind.
_SHARED_LOGGED = {"login_failures": "failed logins from", "registrations": "registrations from",
                  "address_checks": "password checks from", "account_checks": "password checks for the account"}


class Limits:
    """
    Connection, login and idle limits shared by all connections.

    The protocol calls :meth:`admit` when a connection is made and
    :meth:`release` when it is lost; the factory calls :meth:`logged_in`,
    :meth:`login_refused` and :meth:`login_failed`.
    """

    log = Logger()

    def __init__(self, settings: Settings, reactor: IReactorTime) -> None:
        self.settings = settings
        self.reactor = reactor
        self.exempt = parse_networks(settings.limit_exempt)
        self.per_address: dict[str, int] = {}
        #: Connections not logged in yet, with the time they connected.
        self.unauthenticated: dict[Any, float] = {}
        self.all: set[Any] = set()
        #: Failed logins per address.
        self.login_failures = KeyedBuckets(
            settings.address_login_failures / settings.address_login_window,
            float(settings.address_login_failures), reactor)
        #: New accounts per address.
        self.registrations = KeyedBuckets(
            settings.address_registrations / settings.address_registration_window,
            float(settings.address_registrations), reactor)
        #: Password checks (argon2 hashes) per address and per account name.
        window = settings.password_check_window
        self.address_checks = KeyedBuckets(
            settings.address_password_checks / window, float(settings.address_password_checks), reactor)
        self.account_checks = KeyedBuckets(
            settings.account_password_checks / window, float(settings.account_password_checks), reactor)
        #: The flood allowance of each logged-in account (None: no flood limit).
        self.lines: KeyedBuckets | None = None
        if settings.flood_rate > 0:
            self.lines = KeyedBuckets(settings.flood_rate, max(1.0, float(settings.flood_burst)), reactor)
        #: /history requests of each account (they read the disk): HISTORY_REQUEST_BURST at once, then one per
        #: 1/HISTORY_REQUEST_RATE seconds.
        self.history_requests = KeyedBuckets(HISTORY_REQUEST_RATE, HISTORY_REQUEST_BURST, reactor)
        self._sweeper: LoopingCall | None = None
        self._refused = 0
        #: The buckets every node shares (several nodes: ``--bus``), asked after this node's own; None: one node.
        self.shared: SharedBuckets | None = None

    # -- addresses ------------------------------------------------------------

    def address_key(self, transport: Any) -> str:
        """The per-address key of a connection, or "" if it is exempt."""
        try:
            host = transport.getPeer().host
        except AttributeError:
            host = None
        address = client_address(host if isinstance(host, str) else None)
        if address is None:
            return ""  # a UNIX socket or an in-memory transport: local
        for network in self.exempt:
            if address in network:
                return ""
        return str(address)

    # -- connections ------------------------------------------------------------

    def admit(self, connection: Any, key: str) -> str | None:
        """Count a new connection; returns why it is refused, or None."""
        settings = self.settings
        if settings.max_connections and len(self.all) >= settings.max_connections:
            return self._refuse("the server is full; please try again later.", key)
        if key and settings.max_per_address:
            if self.per_address.get(key, 0) >= settings.max_per_address:
                return self._refuse("too many connections from your address.", key)
            self.per_address[key] = self.per_address.get(key, 0) + 1
        self.all.add(connection)
        now = self.reactor.seconds()
        if settings.login_timeout:
            self.unauthenticated[connection] = now
        self._start()
        return None

    def _refuse(self, reason: str, key: str) -> str:
        self._refused += 1
        if self._refused & (self._refused - 1) == 0:  # 1, 2, 4, 8, ...: no log flood
            self.log.warn("refused a connection from {address}: {reason} ({count} so far)",
                          address=key or "an exempt address", reason=reason, count=self._refused)
        return "Error: " + reason

    def release(self, connection: Any, key: str) -> None:
        """A counted connection is gone."""
        if connection not in self.all:
            return
        self.all.discard(connection)
        self.unauthenticated.pop(connection, None)
        if key:
            left = self.per_address.get(key, 0) - 1
            if left > 0:
                self.per_address[key] = left
            else:
                self.per_address.pop(key, None)

    def flood_bucket(self) -> TokenBucket | None:
        """A new connection's flood limit, or None if flood limiting is off."""
        settings = self.settings
        if settings.flood_rate <= 0:
            # The idle timeout reads the last input time from the bucket.
            return TokenBucket(1e12, 1e12, self.reactor.seconds()) if settings.idle_timeout else None
        return TokenBucket(settings.flood_rate, max(1.0, float(settings.flood_burst)), self.reactor.seconds())

    # -- logins --------------------------------------------------------------------

    def logged_in(self, connection: Any) -> None:
        """
        ``connection`` has logged in: the login timeout no longer applies, and
        from now on its lines draw on its account's flood allowance, shared
        with every other (earlier or later) connection of that account. If
        the account is in debt (an earlier connection used more than its
        allowance, or left a room by going away), this one reads nothing
        until the debt is paid: logging in again never buys a line.
        """
        self.unauthenticated.pop(connection, None)
        if self.lines is not None and getattr(connection, "name", None):
            bucket = self.lines.get(name_key(connection.name))
            now = self.reactor.seconds()
            bucket.touch(now)
            connection.share_allowance(bucket, -bucket.tokens / bucket.rate if bucket.tokens < 0 else 0.0)

    def logged_out(self, connection: Any) -> None:
        """``connection`` logged out and stays connected: the login timeout applies to it again, from now."""
        if self.settings.login_timeout and connection in self.all:
            self.unauthenticated[connection] = self.reactor.seconds()

    def login_refused(self, key: str) -> float:
        """
        If ``key`` has used up its failed logins, the seconds until it may
        try again (no password is even hashed meanwhile), else 0.0.
        """
        return self.login_failures.wait(key) if key and self.settings.address_login_failures > 0 else 0.0

    def login_failed(self, key: str) -> None:
        """Count a failed login against ``key``'s allowance, here and on every node (:meth:`shared_login_failed`)."""
        if key and self.settings.address_login_failures > 0 and self.login_failures.take(key):
            self.log.warn("failed logins from {address} are being refused", address=key)
        self.shared_login_failed(key)

    def password_check_refused(self, address: str, account: str = "") -> str:
        """
        Why a password check (an argon2 hash: a login attempt, failed or
        not, or a registration) for ``account`` (a name as typed; "" for
        none) from the address ``address`` (a per-address key, "" if
        exempt) may not be made now, as the user's sentence; or "" (and
        the check is counted against both allowances). Call it once per
        attempt, before hashing: so no address and no account can keep
        the hash pool busy, whatever the outcome of its attempts.
        """
        settings = self.settings
        by_address = bool(address) and settings.address_password_checks > 0
        account = name_key(account) if account and settings.account_password_checks > 0 else ""
        wait = self.address_checks.wait(address) if by_address else 0.0
        if wait:
            return "too many logins from your address; " + try_again(wait)
        wait = self.account_checks.wait(account) if account else 0.0
        if wait:
            return "too many logins to this account; " + try_again(wait)
        if by_address and self.address_checks.take(address):
            self.log.warn("password checks from {address} are being refused", address=address)
        if account and self.account_checks.take(account):
            self.log.warn("password checks for the account {account} are being refused", account=account)
        return ""

    def registration_wait(self, key: str) -> float:
        """Seconds until the address ``key`` may register again (0.0: now); counts nothing."""
        if not key or self.settings.address_registrations <= 0:
            return 0.0
        return self.registrations.wait(key)

    def registration_refused(self, key: str) -> float:
        """
        If the address ``key`` has used up its registrations, the seconds
        until it may register again, else 0.0 (and the registration is
        counted: call this once per attempt, before hashing).
        """
        wait = self.registration_wait(key)
        if not wait and key and self.settings.address_registrations > 0:
            self.registrations.take(key)
        return wait

    # -- across nodes (issue 17) -------------------------------------------------

    def _shared_ask(self, kind: str, key: str, mode: int) -> tuple[str, str, float, float, int] | None:
        """The ask of the shared bucket ``kind`` of ``key``, with the settings of this node's own; None if off."""
        settings = self.settings
        count, window = {
            "login_failures": (settings.address_login_failures, settings.address_login_window),
            "registrations": (settings.address_registrations, settings.address_registration_window),
            "address_checks": (settings.address_password_checks, settings.password_check_window),
            "account_checks": (settings.account_password_checks, settings.password_check_window),
        }[kind]
        if not key or count <= 0 or window <= 0:
            return None
        return kind, key, count / window, float(count), mode

    def shared_refusal(self, address: str, account: str = "", login: bool = False,
                       registration: bool = False) -> defer.Deferred[str]:
        """
        Across the nodes, after this node's own limits let it through: why
        an attempt that costs a password check (from the address key
        ``address``, "" if exempt; for the account ``account``, a name as
        typed, "" for none) may not go ahead, as the user's sentence, or ""
        (and it is counted on every node). ``login``: the address's failed
        logins must allow one more (``--address-login-failures``);
        ``registration``: it is a registration (``--address-registrations``).
        One round trip to the shared buckets; at once "" with one node (or
        while they cannot be reached: this node's own limits stand).
        """
        if self.shared is None:
            return defer.succeed("")
        asks = [ask for ask in (
            self._shared_ask("login_failures", address, 0) if login else None,
            self._shared_ask("registrations", address, 1) if registration else None,
            self._shared_ask("address_checks", address, 1),
            self._shared_ask("account_checks", name_key(account) if account else "", 1),
        ) if ask is not None]
        return self.shared.take(asks).addCallback(self._shared_answer, asks)

    def shared_login_failed(self, address: str) -> defer.Deferred[str]:
        """A failed login from ``address`` counts on every node (one round trip, waited for by nobody)."""
        ask = self._shared_ask("login_failures", address, 2)
        if self.shared is None or ask is None:
            return defer.succeed("")
        return self.shared.take([ask]).addCallback(self._shared_answer, [ask])

    def _shared_answer(self, answer: tuple[int, float, list[int]], asks: list[tuple[str, str, float, float, int]]
                       ) -> str:
        refused, wait, empty = answer
        for index in empty:
            kind, key = asks[index][:2]
            self.log.warn("{what} {key} are being refused on every node", key=key, what=_SHARED_LOGGED[kind])
        return _SHARED_REFUSALS[asks[refused][0]] + try_again(wait) if refused >= 0 else ""

    # -- the sweep: login timeout, idle timeout, forgetting old failures ------------

    def sweep_interval(self) -> float:
        timeouts = [t for t in (self.settings.login_timeout, self.settings.idle_timeout) if t > 0]
        return min(10.0, max(0.5, min(timeouts, default=10.0) / 8))

    def _start(self) -> None:
        if self._sweeper is None:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.reactor
            self._sweeper.start(self.sweep_interval(), now=False)

    def stop(self) -> None:
        """Stop the sweep (at shutdown)."""
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def sweep(self) -> None:
        """Close connections past the login or idle timeout; forget refilled allowances."""
        now = self.reactor.seconds()
        settings = self.settings
        if settings.login_timeout:
            deadline = now - settings.login_timeout
            late = [c for c, since in self.unauthenticated.items() if since <= deadline]
            for connection in late:
                if getattr(connection, "held", False):
                    continue  # waiting for the server (a queued password hash): not its fault
                self.unauthenticated.pop(connection, None)
                connection.kick(f"Error: you did not log in within {settings.login_timeout:g} seconds; goodbye.")
        if settings.idle_timeout:
            deadline = now - settings.idle_timeout
            for connection in list(self.all):
                bucket = getattr(connection, "_bucket", None)
                if bucket is not None and bucket.last <= deadline and not getattr(connection, "held", False):
                    connection.kick(f"Error: nothing received for {settings.idle_timeout:g} seconds; goodbye.")
        for keyed in (self.login_failures, self.registrations, self.address_checks, self.account_checks,
                      self.lines, self.history_requests):
            if keyed is not None and keyed.buckets:
                keyed.forget_full(now)


#: Descriptors kept for other things than connections (data files, spool, listeners, log).
FD_RESERVE = 256


def raise_fd_limit(connections: int) -> None:
    """
    Raise the soft limit on open files towards what ``connections`` need
    (one descriptor each, plus some for files and the listener), up to the
    hard limit; warn if that is still too low.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    wanted = connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < wanted:
        Limits.log.warn(
            "open file limit {soft} is below --max-connections {connections} (+256); "
            "raise it (systemd: LimitNOFILE=) or lower --max-connections",
            soft=soft, connections=connections,
        )
