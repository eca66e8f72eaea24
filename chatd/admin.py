"""
Server administration (issue 14; docs/PROTOCOL.md "Server administration",
docs/OPERATIONS.md "Administration"): who is an admin, locked accounts,
passwords reset by an admin, bans of addresses and networks, and what an
admin does in chat (``ChatFactory.admin``, an :class:`Administration`).

Everything is stored as per-account values (``Store.set_marks``: ``admin``,
``locked``, ``must_change``) and server-wide values (``Store.set_room_values``
under ``SERVER``: ``ban`` of a network), durably before the admin is told;
the offline tool (``chatd.admin_tool``) writes the same values. Each action
is a log.csv row: ``user`` is who did it, ``target`` to whom, ``reason`` why,
``until`` the end of a timed ban (docs/OPERATIONS.md, "The event log").

Sources: IRC server operators (RFC 2812 section 3.1.4 OPER, section 3.7.1
KILL: end someone's session; WALLOPS-like notices); InspIRCd's ``ZLINE``
(a ban of an address or network, with a duration) and ergo's ``UBAN ADD``
(the same, timed or not, with a reason), both server-wide and applied to
connections already open.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from chatd import errors
from chatd.limits import Network, canonical_network, client_address, is_local
from chatd.moderation import Sanction, iso
from chatd.store import SERVER, LogEvent, RoomValue, UserRecord
from chatd.text import USER_NAME_MAX, name_key, unknown_name

if TYPE_CHECKING:
    from chatd.core.ports import Session
    from chatd.factory import ChatFactory

#: Per-account values (``Store.set_marks``): an admin by the stored flag ("1"; ``chatd-admin make-admin``).
ADMIN = "admin"
#: The account is locked: the reason, or "1" when none was given.
LOCKED = "locked"
#: The password is a one-time password an admin set ("1"), or it was used for a login and a new one is owed
#: (:data:`USED`); "": neither.
MUST_CHANGE = "must_change"
USED = "used"
#: One-time passwords: 12 characters of 31 that are not mistaken for each other (no 0 O 1 l i): about 59 bits.
OTP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
OTP_LENGTH = 12
#: Why ``register NAME`` is refused for a name given by ``--admin`` from anywhere but the server's machine.
RESERVED = "this name is reserved for an admin; register it from the server's own machine."
#: Names nobody registers or takes as an IRC guest, so nobody poses as the server or a network service: the
#: server's own (chatd's messages come from ``chatd``; the IRC front-end adds its ``--irc-server-name``) and
#: the IRC services that Anope, Atheme and ergo run (IRC clients treat messages from them as the network's).
SERVER_NAMES = ("chatd", "NickServ", "ChanServ", "MemoServ", "OperServ", "HostServ", "BotServ", "SaslServ",
                "HistServ", "HelpServ", "InfoServ", "StatServ", "Global")



def one_time_password() -> str:
    """A fresh random one-time password (:data:`OTP_LENGTH` characters of :data:`OTP_ALPHABET`)."""
    return "".join(secrets.choice(OTP_ALPHABET) for _ in range(OTP_LENGTH))


def parse_network(text: str) -> Network | None:
    """
    An address (``192.0.2.7``, ``2001:db8::5``) or a network (``192.0.2.0/24``)
    in ASCII, in the form client addresses are compared with
    (``chatd.limits.canonical_network``: ``::ffff:192.0.2.7`` is ``192.0.2.7``);
    None if it is neither.
    """
    if not text.isascii():
        return None
    try:
        return canonical_network(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        return None


def network_text(network: Network) -> str:
    """How a ban's network is shown: a single address without its prefix length."""
    single = network.prefixlen == network.max_prefixlen
    return str(network.network_address) if single else str(network)


@attrs.frozen(slots=True)
class AddressBan:
    """A ban of an address or network: ``by`` which admin, ``until`` (seconds since the epoch; 0: until lifted), why."""

    network: Network
    by: str
    until: float
    reason: str

    def encode(self) -> str:
        """As stored (``RoomValue.value`` under ``SERVER``), as a room's ban is: ``until=1790003600&by=root&reason=spam``."""
        return Sanction(self.by, self.until, self.reason).encode()

    @classmethod
    def decode(cls, key: str, value: str) -> AddressBan | None:
        """The ban stored under ``key`` (its network) with ``value``; None if ``key`` is no network."""
        network = parse_network(key)
        if network is None:
            return None
        stored = Sanction.decode(value)
        return cls(network, stored.by, stored.until, stored.reason)

    def over(self, now: float) -> bool:
        return bool(self.until) and self.until <= now

    def describe(self) -> str:
        """``192.0.2.0/24 until 2026-12-01T14:00:00Z by root: spam``."""
        until = f" until {iso(self.until)}" if self.until else " until lifted"
        return f"{network_text(self.network)}{until} by {self.by or 'chatd-admin'}" + (
            f": {self.reason}" if self.reason else "")


def with_reason(text: str, reason: str) -> str:
    return f"{text}: {reason}" if reason else f"{text}."


class Administration:
    """The admins, locks, one-time passwords and address bans of :class:`~chatd.factory.ChatFactory`."""

    log = Logger()

    def __init__(self, factory: ChatFactory) -> None:
        self.factory = factory
        #: Admins named by ``--admin`` (name keys); more by the stored flag (:data:`ADMIN`).
        self.named = frozenset(name_key(name) for name in factory.settings.admins)
        #: Names of the server and services (name keys): nobody's (:meth:`reserved_refusal`); :meth:`reserve` adds.
        self.server_names = {name_key(name) for name in SERVER_NAMES}
        #: Bans of addresses and networks by their stored key (the network with its prefix length).
        self.bans: dict[str, AddressBan] = {}

    def restore(self, room_values: Mapping[str, Mapping[tuple[str, str], str]]) -> None:
        """Take the address bans from what the store loaded (``Loaded.room_values[SERVER]``); lapsed ones are dropped."""
        for name in self.factory.settings.admins:
            if self.factory.accounts.get(name_key(name)) is None:
                self.log.warn("--admin {name}: there is no such account; it can only be registered from this "
                              "machine (a loopback address or the UNIX socket)", name=name)
        now = self.factory.reactor.seconds()
        changes = []
        for (kind, key), value in room_values.get(SERVER, {}).items():
            if kind != "ban":
                continue
            ban = AddressBan.decode(key, value)
            if ban is None:
                self.log.warn("ignored a stored ban of {key!r}: not an address or network", key=key)
                continue
            canonical = str(ban.network)
            if ban.over(now) or canonical != key:  # (lapsed; or an IPv4-mapped network, kept as its IPv4 network)
                changes.append(RoomValue(SERVER, "ban", key, ""))
            if not ban.over(now):
                self.bans[canonical] = ban
                if canonical != key:
                    changes.append(RoomValue(SERVER, "ban", canonical, ban.encode()))
        if changes:  # (best effort: a lapsed ban applies to nobody either way; a mapped one is kept in memory)
            self.factory.store.set_room_values(changes).addErrback(
                lambda failure: self.log.warn("could not rewrite stored address bans: {why}",
                                              why=failure.getErrorMessage()))

    # -- reading the state ------------------------------------------------------------

    def is_admin(self, name: str | None) -> bool:
        """
        Whether ``name`` is a server admin's account: a stored account named
        by ``--admin`` or with its stored ``admin`` flag. Admin power is an
        account's, never a name's: an ``--admin`` name not registered yet
        names nobody, and a session without an account (an IRC guest, which
        can never hold an account's name) is never an admin.
        """
        if not name:
            return False
        key = name_key(name)
        if key not in self.factory.accounts:
            return False
        return key in self.named or self.factory.marks.get(key, {}).get(ADMIN) == "1"

    def reserve(self, name: str) -> None:
        """Make ``name`` nobody's, as the server's own (the IRC front-end's ``--irc-server-name``)."""
        self.server_names.add(name_key(name))

    def reserved_refusal(self, name: str, host: str | None, guest: bool = False) -> str | None:
        """
        Why the new name ``name`` is refused, the one rule of every front-end
        (``register``, IRC's ``REGISTER``, an IRC guest's nick); or None:
        the server's or a service's name (:data:`SERVER_NAMES`, :meth:`reserve`)
        is nobody's; a name given by ``--admin`` is registered only from the
        server's own machine (``host``: the client's IP address as text;
        None: a UNIX socket; ``chatd.limits.is_local``: loopback, mapped
        forms too), so nobody else claims an admin's name on a fresh install,
        and is never a ``guest``'s (a session without an account), from any
        address. Accounts of such names made before keep working.
        """
        key = name_key(name)
        if key in self.server_names:
            return f"{name} is reserved: it is the server's or a network service's name."
        if key in self.named and (guest or not is_local(host)):
            return RESERVED
        return None

    def password_owed(self, name: str | None) -> bool:
        """Whether the account ``name`` logged in with a one-time password and has not chosen a new one yet."""
        return self.factory.account_value(name, MUST_CHANGE) == USED

    def admit(self, name: str) -> defer.Deferred[None]:
        """
        The account ``name`` gave its right password: fires once it may log
        in; fails with NotAllowed if it is locked, or if its password is a
        one-time password used already. A one-time password is spent here
        (``must_change=used``, durable) before the login goes on, so it
        works once (NotSaved if that cannot be stored).
        """
        try:
            self.unlocked(name)
        except errors.NotAllowed as refused:
            return defer.fail(refused)
        owed = self.factory.account_value(name, MUST_CHANGE)
        if owed == USED:
            return defer.fail(errors.NotAllowed("this one-time password was used already; ask an admin for a new one."))
        if owed:
            return self.factory.store_account_values(name, {MUST_CHANGE: USED}, "Could not log in")
        return defer.succeed(None)

    def unlocked(self, name: str) -> str:
        """``name``, if that account is not locked; else raises NotAllowed (``this account is locked: REASON``)."""
        locked = self.factory.account_value(name, LOCKED)
        if locked:
            raise errors.NotAllowed(with_reason("this account is locked", "" if locked == "1" else locked))
        return name

    def address_refusal(self, host: str | None) -> str | None:
        """
        Why a connection from ``host`` (an IP address as text) is refused:
        its address is banned (the sentence, with ``Error: ``); or None.
        """
        if not self.bans:
            return None
        address = client_address(host)
        if address is None:
            return None
        now = self.factory.reactor.seconds()
        for ban in self.bans.values():
            if address in ban.network and not ban.over(now):
                until = f" until {iso(ban.until)}" if ban.until else ""
                return "Error: " + with_reason(f"your address is banned from this server{until}", ban.reason)
        return None

    def address_bans(self) -> list[AddressBan]:
        """The bans in force, by network."""
        now = self.factory.reactor.seconds()
        return sorted((ban for ban in self.bans.values() if not ban.over(now)),
                      key=lambda ban: (ban.network.version, ban.network))

    def account(self, name: str) -> UserRecord:
        """The account called ``name`` (any case); raises NoSuchUser."""
        record = self.factory.accounts.get(name_key(name))
        if record is None:
            raise errors.NoSuchUser(unknown_name(name, "user", USER_NAME_MAX, f"There is no user called {name}."))
        return record

    # -- what an admin does -----------------------------------------------------------

    def _not_self(self, by: str, record: UserRecord, what: str, instead: str = "") -> None:
        if name_key(by) == name_key(record.name):
            raise errors.NotAllowed(f"you cannot {what} yourself{instead}.")

    def disconnect(self, by: str, name: str, reason: str) -> str:
        """
        End the session of the account ``name``, logged in on this node or
        another (the node holding it ends it: :meth:`elsewhere`); a
        ``session_end`` row here. Returns its name. NoSuchUser, NotAllowed.
        """
        session = self.factory.online.get(name_key(name))
        there = self.factory.bus.online_elsewhere().get(name_key(name)) if session is None else None
        target = session.name if session is not None else there.name if there is not None else None
        if target is None:
            raise errors.NoSuchUser(unknown_name(name, "user", USER_NAME_MAX, f"{name} is not logged in."))
        if name_key(by) == name_key(target):
            raise errors.NotAllowed("you cannot disconnect yourself; type quit.")
        self.factory.store.log_event("session_end", by, target=target, reason=reason)
        self._disconnected(by, [target, reason])
        self._share("disconnect", by, target, reason)
        return target

    def _disconnected(self, by: str, args: list[str]) -> None:
        """The session of the account ``args[0]`` here, if any, ends (``args[1]``: the reason)."""
        self._end(args[0], with_reason(f"You were disconnected by {by}, an admin", args[1]))

    def lock(self, by: str, name: str, reason: str) -> defer.Deferred[str]:
        """
        Lock the account ``name``: it cannot log in (``this account is
        locked: REASON``) and its session ends, once that is durable; fires
        with its name once its ``lock`` row is written too (:meth:`_logged`).
        NoSuchUser, NotAllowed, NotSaved.
        """
        record = self.account(name)
        self._not_self(by, record, "lock")

        def locked(_: None) -> defer.Deferred[str]:
            self.factory.tokens.void(record.name)
            self._locked(by, [record.name, reason])
            self._share("lock", by, record.name, reason)  # (after the account's values: see elsewhere)
            return self._logged(record.name, LogEvent("lock", by, details={"target": record.name, "reason": reason}))

        d = self.factory.store_account_values(record.name, {LOCKED: reason or "1"}, "Could not lock the account")
        return d.addCallback(locked)

    def _locked(self, by: str, args: list[str]) -> None:
        """The session of the account ``args[0]`` here, if any, ends: locked by ``by`` (``args[1]``: the reason)."""
        self._end(args[0], with_reason(f"Your account was locked by {by}, an admin", args[1]))

    def unlock(self, by: str, name: str) -> defer.Deferred[str]:
        """Unlock the account ``name`` once that is durable (an ``unlock`` row); fires with its name."""
        record = self.account(name)
        if not self.factory.account_value(record.name, LOCKED):
            raise errors.NotAllowed(f"{record.name} is not locked.")

        def unlocked(_: None) -> defer.Deferred[str]:
            return self._logged(record.name, LogEvent("unlock", by, details={"target": record.name}))

        d = self.factory.store_account_values(record.name, {LOCKED: ""}, "Could not unlock the account")
        return d.addCallback(unlocked)

    def reset_password(self, by: str, name: str) -> defer.Deferred[tuple[str, str]]:
        """
        Give the account ``name`` a random one-time password, which it must
        replace at its next login (:data:`MUST_CHANGE`): first the mark, then
        the password (hashed off the reactor, a ``password_reset`` row), each
        durable; fires with (its name, the one-time password). On a failure
        the old password stays (the mark is put back). Its session, if any,
        goes on.
        """
        record = self.account(name)
        self._not_self(by, record, "reset the password of", "; use password")
        factory = self.factory
        password = one_time_password()
        before = factory.account_value(record.name, MUST_CHANGE)
        event = LogEvent("password_reset", by, details={"target": record.name})

        what = "Could not reset the password"

        def store(_: None) -> defer.Deferred[Any]:
            return factory._store_hash(record, password, event).addErrback(undo)

        def undo(failure: Any) -> Any:
            factory.store_account_values(record.name, {MUST_CHANGE: before}, what).addErrback(lambda _: None)
            return _not_saved(what)(failure)

        d = factory.store_account_values(record.name, {MUST_CHANGE: "1"}, what)
        return d.addCallback(store).addCallback(lambda _: (record.name, password))

    def choose_password(self, session: Session, password: str) -> defer.Deferred[None]:
        """
        ``session``, logged in with a one-time password, chooses ``password``:
        stored (a ``password_change`` row with reason ``reset``), then the mark
        cleared, each durable. NotAllowed if no new password is owed; NotSaved.
        """
        name = session.name or ""
        factory = self.factory
        record = factory.accounts.get(name_key(name))
        if record is None or not self.password_owed(name):
            return defer.fail(errors.NotAllowed("your password was not reset; use password to change it."))
        what = "Could not save the new password"
        details = {"reason": "reset", **session.origin}
        d = factory._store_hash(record, password, LogEvent("password_change", record.name, details=details))
        d.addErrback(_not_saved(what))
        return d.addCallback(lambda _: factory.store_account_values(name, {MUST_CHANGE: ""}, what))

    def delete_user(self, by: str, name: str) -> defer.Deferred[str]:
        """
        Delete the account ``name`` and the rooms it owns, as ``deleteme``
        does but without its password (an ``account_delete`` row by ``by``
        with the target); its session ends. Fires with its name.
        """
        record = self.account(name)
        self._not_self(by, record, "delete", "; use deleteme")
        return self.factory.remove_account(record, LogEvent("account_delete", by, details={"target": record.name}),
                                           f"Your account was deleted by {by}, an admin.")

    def ban_address(self, by: str, text: str, seconds: int, reason: str, own: str | None) -> defer.Deferred[str]:
        """
        Ban the address or network ``text`` for ``seconds`` (0: until lifted)
        once that is durable (an ``address_ban`` row); connections from it are
        refused from then on and those open now end. ``own``: the admin's
        address, which may not be in it. Fires with the network as shown.
        BadArguments, NotAllowed, NotSaved.
        """
        network = parse_network(text)
        if network is None:
            raise errors.BadArguments(f"{text[:60]} is not an IP address or network (192.0.2.7, 192.0.2.0/24).")
        mine = client_address(own)
        if mine is not None and mine in network:
            raise errors.NotAllowed(f"that would ban your own address, {mine}.")
        now = self.factory.reactor.seconds()
        ban = AddressBan(network, by, now + seconds if seconds else 0.0, reason)
        key = str(network)
        event = LogEvent("address_ban", by, details={
            "target": network_text(network), "until": iso(ban.until) if ban.until else "", "reason": reason})

        def banned(_: None) -> str:
            self._banned(by, [key, ban.encode()])
            self._share("ban", by, key, ban.encode())
            return network_text(network)

        d = self.factory.store.set_room_values([RoomValue(SERVER, "ban", key, ban.encode())], event)
        return d.addCallbacks(banned, _not_saved("Could not save the ban"))

    def unban_address(self, by: str, text: str) -> defer.Deferred[str]:
        """Lift the ban of the address or network ``text`` once that is durable (an ``address_unban`` row)."""
        network = parse_network(text)
        key = str(network) if network is not None else ""
        if key not in self.bans:
            raise errors.NotAllowed(f"{text[:60]} is not banned (/ipbans lists the bans).")
        event = LogEvent("address_unban", by, details={"target": network_text(self.bans[key].network)})

        def lifted(_: None) -> str:
            ban = self.bans.pop(key)
            self._share("unban", by, key)
            return network_text(ban.network)

        d = self.factory.store.set_room_values([RoomValue(SERVER, "ban", key, "")], event)
        return d.addCallbacks(lifted, _not_saved("Could not lift the ban"))

    def wall(self, by: str, text: str) -> int:
        """
        A notice from the admin ``by`` to every connection, on this node and
        every other (a ``notice`` row here); returns how many got it here
        (``Bus.other_nodes`` says how many other nodes were sent it).
        """
        count = self._walled(by, [text])
        self.factory.store.log_event("notice", by, text=text, sessions=count)
        self._share("wall", by, text)
        return count

    def _walled(self, by: str, args: list[str]) -> int:
        """Every connection here gets the notice ``args[0]`` from ``by``; returns how many."""
        line = f"Notice from {by}, an admin: {args[0]}"
        connections = list(self.factory.connections)
        for connection in connections:
            connection.notice(line)
        return len(connections)

    def _banned(self, by: str, args: list[str]) -> None:
        """
        The ban of the network ``args[0]`` (its stored key) stored as
        ``args[1]`` applies here: connections from it are refused and those
        open end.
        """
        ban = AddressBan.decode(args[0], args[1])
        if ban is None:
            return
        self.bans[args[0]] = ban
        for connection in list(self.factory.connections):
            host = connection.origin.get("address")
            if host and self.address_refusal(host):
                connection.kick(with_reason(f"Your address was banned from this server by {by}, an admin",
                                             ban.reason))

    def _unbanned(self, by: str, args: list[str]) -> None:
        self.bans.pop(args[0], None)

    # -- several nodes (issue 17; docs/OPERATIONS.md, "Several nodes") ----------------

    def _share(self, action: str, by: str, *args: str) -> None:
        """An admin's action done here, for every other node: ``["admin", ACTION, BY, ARG, ...]`` on the bus."""
        self.factory.bus.share(["admin", action, by, *args])

    def elsewhere(self, action: str, by: str, args: list[str]) -> None:
        """
        The admin ``by`` did ``action`` on another node (chatd.nodes), with
        ``args`` as :meth:`_share` sent them: ``disconnect`` NAME REASON
        (its session here ends), ``wall`` TEXT (every connection here gets
        it), ``ban`` KEY VALUE and ``unban`` KEY (an address ban, stored
        there: in force here too), ``lock`` NAME REASON (its session here
        ends, told who locked it; the lock itself, which refuses logins,
        came just before as the account's values,
        ``ChatFactory.store_account_values``). The rows are the other node's.
        """
        apply = {"disconnect": self._disconnected, "wall": self._walled, "ban": self._banned,
                 "unban": self._unbanned, "lock": self._locked}.get(action)
        if apply is None:
            self.log.warn("ignored an admin action from another node: {action!r}", action=action)
            return
        apply(by, args)

    def _logged(self, name: str, event: LogEvent) -> defer.Deferred[str]:
        """
        Queue ``event``'s row and write the queue now (``Store.flush_events``):
        the row of a change stored with ``Store.set_marks`` (which takes no
        event) is on disk before the admin is told. Fires with ``name``.
        """
        store = self.factory.store
        store.log_event(event.event, event.user, event.room, **event.details)
        return store.flush_events().addCallback(lambda _: name)

    def _end(self, name: str, reason: str) -> None:
        """End the session of the account ``name``, if it has one, telling it ``reason``."""
        session = self.factory.online.get(name_key(name))
        if session is not None:
            session.kick(reason)


def _not_saved(what: str) -> Any:
    """``chatd.factory.not_saved`` (imported when used: chatd.factory imports this module)."""
    from chatd.factory import not_saved

    return not_saved(what)
