"""
The shared state of the server: accounts, who is online, rooms.

:class:`ChatFactory` is the one object every connection shares. It answers
the commands (``chatd.commands``) with Deferreds, reads and writes the
store (a :class:`chatd.store.Store`: never a file format) and keeps rooms.
What happens in a room becomes a :class:`~chatd.core.events.RoomEvent`
published on the bus (a :class:`chatd.core.ports.Bus`); what the bus
delivers goes to the room's fan-out (``broadcast.py``). It knows
connections only through the :class:`chatd.core.ports.Session` interface.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from functools import partial
from typing import Any, NoReturn, TypeVar

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from chatd import errors
from chatd.admin import Administration
from chatd.broadcast import Batcher, Fanout
from chatd.core.events import EventKind, PrivateMessage, RoomEvent
from chatd.core.ports import Bus, LeaveReason, RoomFiles, Session, SessionEnd
from chatd.history import History, RoomHistory
from chatd.limits import Limits, try_again
from chatd.moderation import Authority, Moderation, Sanction
from chatd.nodes import online_users
from chatd.passwords import Passwords
from chatd.presence import SEEN_MARK, Presence
from chatd.settings import PUBLIC_ROOM, Settings
from chatd.silenced import SILENCING, SPOKEN, follow, refused
from chatd.store import (
    LINE_KINDS, PUBLIC_ROOM_ID, AccountDict, Accounts, HistoryTail, Loaded, LogEvent, NameTakenError, QueueFull,
    RoomRecord, Store, StoreError, UserRecord,
)
from chatd.text import ROOM_NAME_MAX, USER_NAME_MAX, check_name, name_key, unknown_name
from chatd.tokens import Tokens

T = TypeVar("T")
_SAY = EventKind.SAY
_new_tuple = tuple.__new__


@attrs.define(slots=True, eq=False)
class Room:
    """A chat room: its record and its members."""

    name: str
    owner: str
    created: str
    fanout: Fanout[Session]
    #: Its history (chatd.history); its ``room_id`` is the room's id (RoomRecord.id).
    history: RoomHistory
    #: Its owner has deleted it and the store is writing that (docs/PROTOCOL.md,
    #: "Rooms"): closed to joins and to files finishing, open again if the write fails.
    closing: bool = False
    #: The id of its last event (chatd.core.events.RoomEvent.id); 0: none yet.
    last_id: int = 0
    #: Its topic, settings, operators, bans, mutes, invitations (chatd.moderation).
    authority: Authority = attrs.field(factory=Authority)
    #: Who is muted (``authority.mutes``): the say path's one check, a dict empty while nobody is.
    muted: dict[str, Sanction] = attrs.field(init=False)
    #: Who may not speak here at this point of the bus's order (chatd.silenced): name key -> (why, until).
    silenced: dict[str, tuple[str, float]] = attrs.field(factory=dict)

    @muted.default
    def _muted(self) -> dict[str, Sanction]:
        return self.authority.mutes

    @property
    def key(self) -> str:
        return name_key(self.name)

    def member_names(self) -> list[str]:
        """Names of the members, in the order they joined."""
        return [member.name or "?" for member in self.fanout.members()]


class Clock:
    """Timestamps for log rows and data files, rendered at most once a second (chat lines: chatd.render)."""

    __slots__ = ("_reactor", "_second", "_iso")

    def __init__(self, reactor: IReactorTime) -> None:
        self._reactor = reactor
        self._second = -1
        self._iso = ""

    def _update(self) -> None:
        second = int(self._reactor.seconds())
        if second != self._second:
            moment = datetime.fromtimestamp(second, timezone.utc)
            self._second = second
            self._iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    def iso(self) -> str:
        """ISO-8601 UTC, for files."""
        self._update()
        return self._iso


def registrations_refused(wait: float) -> str:
    """The answer to a registration past ``--address-registrations``, ``wait`` seconds before the next."""
    return "too many new accounts from your address; " + try_again(wait)


def unless_refused(refused: str, work: Callable[[], defer.Deferred[T]]) -> defer.Deferred[T]:
    """
    A callback of ``Limits.shared_refusal``: ``work()`` if the nodes' shared limits let the attempt through
    (``refused`` is ""), else NotAllowed(``refused``).
    """
    if refused:
        raise errors.NotAllowed(refused)
    return work()


def not_saved(what: str) -> Callable[[Any], NoReturn]:
    """An errback: a StoreError becomes NotSaved (``what (server storage problem); try again later.``)."""

    def failed(failure: Any) -> NoReturn:
        failure.trap(StoreError)
        raise errors.NotSaved(f"{what} (server storage problem); try again later.")

    return failed


class ChatFactory(Factory):
    """Accounts, online users and rooms; builds a ``protocol`` per connection."""

    log = Logger()
    #: Set by :meth:`shut_down`: rooms are no longer told who leaves.
    closing = False
    #: File sharing (chatd.transfer.Transfers), set up by the service; None: no files.
    transfers: RoomFiles | None = None

    def __init__(
        self,
        store: Store,
        passwords: Passwords,
        settings: Settings,
        reactor: IReactorTime,
        protocol: type[Any],
        *,
        bus: Bus,
    ) -> None:
        """
        ``protocol`` is the class built for each connection
        (chatd.protocol.ChatProtocol); room events go through ``bus``.
        """
        self.protocol = protocol
        self.store = store
        self.bus = bus
        bus.subscribe(self._deliver)
        self.passwords = passwords
        self.settings = settings
        self.reactor = reactor
        self.clock = Clock(reactor)
        self.batcher = Batcher(reactor)
        self.limits = Limits(settings, reactor)
        #: Accounts by name key (the store's :class:`~chatd.store.Accounts`).
        self.accounts: Accounts = AccountDict()
        self.online: dict[str, Session] = {}
        #: Who of them is away (chatd.presence).
        self.presence = Presence(lambda: self.bus.online_elsewhere())
        self.presence.watchers.append(lambda name, away: self.bus.share(["away", name, away or ""]))  # (chatd.nodes)
        #: Private messages kept for offline accounts, by name key, oldest first; and how many are being stored.
        self.offline: dict[str, list[PrivateMessage]] = {}
        self._offline_pending: dict[str, int] = {}
        self.rooms: dict[str, Room] = {}
        #: The rooms by their name as stored (the ``room`` of their events).
        self._by_name: dict[str, Room] = {}
        self.connections: set[Any] = set()
        #: Names being registered / rooms being created or deleted: name key -> the name as it will be stored.
        self._claimed: dict[str, str] = {}
        self._claimed_rooms: dict[str, str] = {}
        #: Rooms being created: name key -> Deferreds of joins waiting for it (:meth:`room_to_join`).
        self._creating: dict[str, list[defer.Deferred[None]]] = {}
        #: Accounts whose deletion is being written (name keys): no new password hash is stored for them.
        self._deleting: set[str] = set()
        #: One lock per account with a change concerning it under way (:meth:`concerning`).
        self._account_locks: dict[str, defer.DeferredLock] = {}
        #: Room history (rings in memory, commits to the store).
        self.history = History(store, reactor, settings)
        #: Per-account values (Store.set_marks): name key -> key -> value (read marks, settings).
        self.marks: dict[str, dict[str, str]] = {}
        #: Server administration: admins, locked accounts, one-time passwords, address bans (chatd.admin).
        self.admin = Administration(self)
        #: Room authority: roles, bans, mutes, topics, invitations (chatd.moderation).
        self.moderation = Moderation(self)
        #: Resume tokens of the browser front-end (chatd.tokens); the service gives it the data directory's key.
        self.tokens = Tokens(self)
        self._add_room(RoomRecord(PUBLIC_ROOM, "", "", PUBLIC_ROOM_ID))

    # -- start and stop --------------------------------------------------

    def restore(self, loaded: Loaded) -> None:
        """Take over what the store loaded at start-up."""
        for note in loaded.repairs:
            self.log.warn("data repaired at start-up: {note}", note=note)
        for note in loaded.migrations:
            self.log.info("data migrated at start-up: {note}", note=note)
        self.accounts = loaded.users
        self.passwords.count_stored(self.accounts.hash_texts())
        self.presence.restore(loaded.marks)
        for message in loaded.private if not self.store.shares_private else ():  # (shared: read at each login)
            self.offline.setdefault(name_key(message.recipient), []).append(message)
        self.marks = {key: dict(values) for key, values in loaded.marks.items()}
        tails = loaded.history
        self._add_room(RoomRecord(PUBLIC_ROOM, "", "", PUBLIC_ROOM_ID), tails.get(PUBLIC_ROOM_ID))
        for record in loaded.rooms:
            if record.name and name_key(record.name) not in self.rooms:
                self._add_room(record, tails.get(record.id))
        self.admin.restore(loaded.room_values)
        self.moderation.restore(loaded.room_values)
        self.log.info(
            "loaded {users} accounts and {rooms} rooms", users=len(self.accounts), rooms=len(self.rooms) - 1
        )

    def _add_room(self, record: RoomRecord, tail: HistoryTail | None = None) -> Room:
        """A room from its record; ``tail``: where its stored history ends (its event ids go on from there)."""
        history = self.history.room(record.id, tail)
        fanout: Fanout[Session] = Fanout(self.batcher, history.record if self.history.enabled else None)
        room = Room(record.name, record.owner, record.created, fanout, history, last_id=history.stored_id)
        self.rooms[room.key] = room
        self._by_name[room.name] = room
        return room

    def shut_down(self, reason: str) -> None:
        """Tell everyone connected that the server is going away and close."""
        self.batcher.flush()
        self.limits.stop()
        self.moderation.stop()
        # Everyone is told the server is going away: "left" lines to the
        # others would only cost (each kick sends its room's queued lines first).
        self.closing = True
        for connection in list(self.connections):
            connection.kick(reason)

    #: Connections whose transport is open (connectionMade to connectionLost; the session may have ended).
    open_transports = 0
    _all_closed: list[defer.Deferred[None]] | None = None

    def transport_opened(self) -> None:
        """A connection's transport opened (``ChatProtocol.connectionMade``)."""
        self.open_transports += 1

    def connection_ended(self, connection: Any) -> None:
        """A connection of any front-end is gone: out of :attr:`connections`, its connection slots freed (limits)."""
        self.connections.discard(connection)
        if connection.address_key is not None:
            self.limits.release(connection, connection.address_key)

    def transport_closed(self) -> None:
        """A connection's transport closed (``ChatProtocol.connectionLost``): the last one fires :meth:`all_closed`."""
        self.open_transports = max(0, self.open_transports - 1)
        if not self.open_transports and self._all_closed:
            waiting, self._all_closed = self._all_closed, None
            for d in waiting:
                d.callback(None)

    def all_closed(self) -> defer.Deferred[None]:
        """Fires once no connection's transport is open (at once if none is): the shut-down waits for it."""
        if not self.open_transports:
            return defer.succeed(None)
        if self._all_closed is None:
            self._all_closed = []
        d: defer.Deferred[None] = defer.Deferred()
        self._all_closed.append(d)
        return d

    def now(self) -> str:
        return self.clock.iso()

    # -- accounts ----------------------------------------------------------

    def _while_claimed(
        self, claims: dict[str, str], name: str, work: defer.Deferred[Any], done: Callable[[Any], T],
        failure_text: str, taken_text: str = "",
    ) -> defer.Deferred[T]:
        """
        ``name`` (as it will be stored) stays claimed in ``claims`` under its
        key until ``work`` (a store write) has finished, so two requests for
        one name cannot both go ahead; then ``done`` runs on success, the
        store's NameTakenError (another node stored the name first: a shared
        store) becomes NameTaken(``taken_text``), another StoreError NotSaved.
        """
        key = name_key(name)
        claims[key] = name

        def release(result: Any) -> Any:
            claims.pop(key, None)
            return result

        def taken(failure: Any) -> NoReturn:
            failure.trap(NameTakenError)
            raise errors.NameTaken(taken_text)

        return work.addCallbacks(done, taken).addErrback(not_saved(failure_text)).addBoth(release)

    def user_name_taken(self, name: str) -> str | None:
        """
        Why ``name`` cannot be registered because it (in any case) is
        someone's already, naming the account as stored; or None.
        """
        key = name_key(name)
        record = self.accounts.get(key)
        stored = record.name if record is not None else self._claimed.get(key)
        if stored is None and key in self.online:  # a guest's (chatd.frontends.irc, --irc-guests), while online
            stored = self.online[key].name
        return f"The name {stored} is taken." if stored is not None else None

    def is_guest(self, name: str) -> bool:
        """Whether ``name`` is an online guest's: a session without an account (``--irc-guests``, chatd.frontends.irc)."""
        session = self.online.get(name_key(name))
        return session is not None and getattr(session, "guest", False) and name_key(name) not in self.accounts

    def registration_wait(self, address: str) -> str | None:
        """Why ``address`` may not register now (the user's sentence), or None; counts nothing."""
        wait = self.limits.registration_wait(address)
        return registrations_refused(wait) if wait else None

    def register(self, name: str, password: str, address: str = "",
                 origin: Mapping[str, str] | None = None) -> defer.Deferred[str]:
        """
        Create an account. Fires with the name once it is on disk; fails with
        InvalidName, NameTaken or NotSaved, or with NotAllowed, without
        hashing, while ``address`` (a per-address limit key) has used up its
        registrations. Of two concurrent registrations of one name exactly
        one wins: the name is claimed before hashing. ``origin``: the
        client's address fields for the ``register`` row of log.csv.
        """
        problem = check_name(name, "user", USER_NAME_MAX)
        if problem:
            return defer.fail(errors.InvalidName(problem))
        key = name_key(name)
        taken = self.user_name_taken(name)
        if taken:
            return defer.fail(errors.NameTaken(taken))
        wait = self.limits.registration_refused(address)
        if wait:
            return defer.fail(errors.NotAllowed(registrations_refused(wait)))
        refused = self.limits.password_check_refused(address)
        if refused:
            return defer.fail(errors.NotAllowed(refused))
        record: UserRecord | None = None

        def store(password_hash: str) -> defer.Deferred[None]:
            nonlocal record
            record = UserRecord(name, password_hash, self.now())
            return self.store.add_user(record, LogEvent("register", name, details=origin or {}))

        def saved(_: None) -> str:
            assert record is not None
            self.accounts[key] = record
            self.passwords.count_stored([record.password_hash])
            self.bus.share(["account", record.name, record.password_hash, record.created])  # (chatd.nodes)
            return name

        work = self.limits.shared_refusal(address, registration=True).addCallback(
            unless_refused, lambda: self.passwords.hash(password).addCallback(store))
        return self._while_claimed(self._claimed, name, work, saved, "Could not save the account",
                                   f"The name {name} is taken.")

    def authenticate(self, name: str, password: str, address: str = "",
                     origin: Mapping[str, str] | None = None) -> defer.Deferred[str]:
        """
        Fires with the account's name, or fails with LoginFailed; fails with
        NotAllowed, without hashing, while ``address`` (a per-address limit
        key) has used up its failed logins, or it or the account ``name``
        its password checks (chatd.limits). A password whose stored hash has
        older argon2 parameters is rehashed and stored again before this fires.
        ``origin``: the client's address fields for a ``login_failed`` row.
        The right password of a locked account, or a one-time password used
        already, fails with NotAllowed (chatd.admin ``Administration.admit``).
        """
        wait = self.limits.login_refused(address)
        if wait:
            return defer.fail(errors.NotAllowed(
                "too many failed logins from your address; " + try_again(wait)))
        refused = self.limits.password_check_refused(address, name)
        if refused:
            return defer.fail(errors.NotAllowed(refused))
        record = self.accounts.get(name_key(name))

        def checked(ok: bool) -> str | defer.Deferred[str]:
            if ok and record is not None and self._still_current(record):
                return self.admin.admit(record.name).addCallback(admitted, record)
            self.limits.login_failed(address)
            self.store.log_event("login_failed", record.name if record else "",
                                 reason="wrong_password" if record else "unknown_name", **(origin or {}))
            raise errors.LoginFailed("Login failed: unknown name or wrong password.")

        def admitted(_: None, record: UserRecord) -> defer.Deferred[str]:
            stored = (self._rehash(record, password, origin or {}) if self.passwords.needs_rehash(record.password_hash)
                      else defer.succeed(record.name))
            # (Locked while a one-time password or a rehash was being stored: refused all the same.)
            return stored.addCallback(self.admin.unlocked)

        def verify() -> defer.Deferred[str]:
            return self.passwords.verify(record.password_hash if record else None, password).addCallback(checked)

        return self.limits.shared_refusal(address, name, login=True).addCallback(unless_refused, verify)

    def is_admin(self, name: str | None) -> bool:
        """Whether the account ``name`` is a server admin (``--admin`` or its stored flag: chatd.admin)."""
        return self.admin.is_admin(name)

    def _rehash(self, record: UserRecord, password: str, origin: Mapping[str, str]) -> defer.Deferred[str]:
        """
        Store a hash of ``password`` with the current parameters for the
        account of ``record``; fires with the name once it is durable. If it
        cannot be stored, the old hash stays (and still works): the login
        goes ahead all the same.
        """

        def not_saved(failure: Any) -> str:
            failure.trap(StoreError)  # the store has logged why
            return record.name

        d = self._store_hash(record, password, LogEvent("rehash", record.name, details=origin))
        return d.addCallbacks(lambda _: record.name, not_saved)

    def _store_hash(self, record: UserRecord, password: str, event: LogEvent) -> defer.Deferred[UserRecord]:
        """
        Hash ``password`` (off the reactor) and store it as the hash of the
        account of ``record`` with ``event`` (``Store.replace_password``);
        fires with the updated record once it is durable, fails with StoreError.
        """

        def store(password_hash: str) -> defer.Deferred[UserRecord]:
            # The account may have been deleted (or be being deleted) while the hash was computed: appending its
            # new hash now would bring it back (attacker: concurrent deleteme and password on one account).
            key = name_key(record.name)
            if key in self._deleting or key not in self.accounts:
                raise errors.NotAllowed("this account was deleted; nothing was changed.")
            updated = attrs.evolve(record, password_hash=password_hash)
            return self.store.replace_password(updated, event).addCallback(lambda _: saved(updated))

        def saved(updated: UserRecord) -> UserRecord:
            key = name_key(record.name)
            replaced = self.accounts.get(key)
            if replaced is not None:
                self.passwords.uncount_stored(replaced.password_hash)
            self.accounts[key] = updated
            self.passwords.count_stored([updated.password_hash])
            self.bus.share(["account", updated.name, updated.password_hash, updated.created])
            return updated

        return self.passwords.hash(password).addCallback(store)

    def _still_current(self, record: UserRecord) -> bool:
        """
        Whether ``record``'s password hash is still its account's: a password checked against a hash that
        was replaced (an admin's reset, a change) or deleted while the check ran proves nothing (attacker:
        a login with the old password racing /resetpw chose the new one).
        """
        current = self.accounts.get(name_key(record.name))
        return current is not None and current.password_hash == record.password_hash

    def _check_password(self, session: Session, password: str) -> defer.Deferred[UserRecord]:
        """
        The record of ``session``'s account if ``password`` is its password
        (checked off the reactor, counted like a login by chatd.limits);
        fails with NotAllowed (a limit) or LoginFailed.
        """
        name = session.name or ""
        refused = self.limits.password_check_refused(session.address_key or "", name)
        if refused:
            return defer.fail(errors.NotAllowed(refused))
        record = self.accounts.get(name_key(name))

        def checked(ok: bool) -> UserRecord:
            if not ok or record is None or not self._still_current(record):
                raise errors.LoginFailed("wrong password; nothing was changed.")
            return record

        return self.limits.shared_refusal(session.address_key or "", name).addCallback(
            unless_refused, lambda: self.passwords.verify(record.password_hash if record else None, password)
            .addCallback(checked))

    def change_password(self, session: Session, old: str, new: str) -> defer.Deferred[None]:
        """
        Replace the password of ``session``'s account: ``old`` must be the
        current one; ``new`` is hashed off the reactor and stored (a
        ``password_change`` row) before this fires. Fails with LoginFailed
        (``old`` is wrong), NotAllowed (chatd.limits) or NotSaved; the old
        password stays on any failure.
        """

        def store(record: UserRecord) -> defer.Deferred[UserRecord]:
            return self._store_hash(record, new, LogEvent("password_change", record.name, details=session.origin))

        failed = not_saved("Could not save the new password")
        return self._check_password(session, old).addCallback(store).addCallbacks(lambda _: None, failed)

    def delete_account(self, session: Session, password: str) -> defer.Deferred[str]:
        """
        Delete ``session``'s account if ``password`` is its password: first
        every room it owns (each as its owner's ``delete``: members are told
        and go back to the menu), then the account (``Store.delete_user``, an
        ``account_delete`` row); fires with the name once that is durable.
        The session stays logged in (the caller logs it out); another
        session that logged in as the account meanwhile is closed. Fails
        with LoginFailed, NotAllowed or NotSaved: what was deleted before a
        failure stays deleted, the account stays.
        """

        def delete(record: UserRecord) -> defer.Deferred[str]:
            event = LogEvent("account_delete", record.name, details=session.origin)
            return self.remove_account(record, event, "Your account was deleted.", session)

        return self._check_password(session, password).addCallback(delete)

    def concerning(self, name: str, work: Callable[[], defer.Deferred[T]]) -> defer.Deferred[T]:
        """
        Run ``work`` (a change concerning the account ``name``: its deletion, a role, sanction or invitation
        given to it) once no other change concerning it runs, and only if the account still exists then;
        fails with NoSuchUser otherwise (a guest's, ``--irc-guests``: only while it is online). One account's changes are made one at a time, each whole (its
        writes and its effect in memory), so a role given while the account is deleted is either deleted
        with it or refused; never left for whoever registers the name next (attacker: /owner racing deleteme).
        """
        key = name_key(name)
        lock = self._account_locks.setdefault(key, defer.DeferredLock())

        def run(_: Any) -> defer.Deferred[T]:
            if key not in self.accounts and not self.is_guest(name):
                raise errors.NoSuchUser(f"There is no user called {name}.")
            return work()

        def release(result: Any) -> Any:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._account_locks.pop(key, None)
            return result

        return lock.acquire().addCallback(run).addBoth(release)

    def remove_account(self, record: UserRecord, event: LogEvent, told: str,
                       keep: Session | None = None) -> defer.Deferred[str]:
        """:meth:`_remove_account` as a change concerning the account (:meth:`concerning`)."""
        return self.concerning(record.name, lambda: self._remove_account(record, event, told, keep))

    def _remove_account(self, record: UserRecord, event: LogEvent, told: str,
                        keep: Session | None = None) -> defer.Deferred[str]:
        """
        Delete the account of ``record``: first every room it owns (each as
        its owner's ``delete``), then the account with ``event``; fires with
        its name once that is durable. Its session (other than ``keep``)
        ends, told ``told``. Fails with NotSaved (what was deleted stays deleted), or NotAllowed if the
        account is gone or being deleted already. From now until the deletion is durable no new password
        hash is stored for it (:meth:`_store_hash`): one appended after the deletion would bring it back.
        """
        key = name_key(record.name)
        if key in self._deleting or key not in self.accounts:
            return defer.fail(errors.NotAllowed("this account was deleted already."))
        self._deleting.add(key)
        owned = sorted(room.name for room in self.rooms.values() if room.owner and name_key(room.owner) == key)
        d: defer.Deferred[Any] = defer.succeed(None)
        for name in owned:
            d.addCallback(lambda _, room: self.delete_room(room, record.name), name)

        def delete(_: None) -> defer.Deferred[str]:
            failed = not_saved("Could not delete the account")
            return self.store.delete_user(record.name, event).addCallbacks(lambda _: deleted(), failed)

        def written(result: Any) -> Any:
            self._deleting.discard(key)
            return result

        def deleted() -> str:
            self.account_gone(key, told, keep)
            self.bus.share(["account_deleted", record.name])
            return record.name

        return d.addCallback(delete).addBoth(written)

    def account_gone(self, key: str, told: str, keep: Session | None = None) -> None:
        """
        The account ``key`` (a name key) was deleted, here or on another node
        (chatd.nodes): forget it; its session (other than ``keep``) ends, told ``told``.
        """
        removed = self.accounts.pop(key, None)
        if removed is not None:
            self.passwords.uncount_stored(removed.password_hash)
        self.offline.pop(key, None)  # (the store has deleted them, and the marks, with the account)
        self.marks.pop(key, None)
        self.moderation.account_deleted(key)
        other = self.online.get(key)
        if other is not None and other is not keep:
            other.kick(told, "logout")

    def attach(self, session: Session) -> None:
        """``session`` has logged in; an older session of the same user is closed."""
        assert session.name is not None
        key = name_key(session.name)
        previous = self.online.get(key)
        if previous is not None and previous is not session:
            previous.kick("You logged in from another connection.", "replaced")
        self.online[key] = session
        # (Another node ends its session of the account, and counts it online here: chatd.nodes.)
        self.bus.share(["login", session.name, int(self.reactor.seconds())])
        self.presence.logged_in(session.name, self.reactor.seconds())
        self.limits.logged_in(session)
        self.store.log_event("login", session.name, **session.origin)

    def detach(self, session: Session, event: SessionEnd = "logout", room: Room | None = None) -> None:
        """
        ``session`` logged out, disconnected or was replaced, from ``room``
        if it was in one: it leaves the room (the room is told, no row of
        its own) and the online list, and log.csv gets one ``event`` row;
        the account's last-seen time is now (chatd.presence; stored, batched,
        with ``Store.set_marks``).
        """
        if room is not None:
            # Its uploads there end as the connection's do (the sender is not told), for the session's reason.
            self._leave(room, session, event)
            # The room is told, and no line paid for it: the account does (chatd.limits).
            session.spend_allowance()
        online = session.name is not None and self.online.get(name_key(session.name)) is session
        if online:
            name = session.name or ""
            key = name_key(name)
            del self.online[key]
            if not self.closing:  # (a node shutting down says it is gone instead: chatd.buses.redis)
                self.bus.share(["logout", name])
            seen = self.now() if key in self.accounts else ""  # (a deleted account keeps nothing)
            self.presence.logged_out(name, seen)
            if seen:
                self.store.set_marks(name, {SEEN_MARK: seen}).addErrback(self._not_marked, name)
            if event == "logout":  # (logout, quit: every resume token of the account is void)
                self.tokens.void(name)
        if online or room is not None:
            self.store.log_event(event, session.name or "", room.name if room is not None else "", **session.origin)

    def _not_marked(self, failure: Any, name: str) -> None:
        self.log.warn("could not store when {user} was last seen: {why}", user=name, why=failure.getErrorMessage())

    def log_out(self, session: Session, room: Room | None = None) -> None:
        """
        ``session`` logs out but stays connected (:meth:`detach`, a ``logout``
        row): the caller then takes its name; the login timeout applies again.
        """
        self.detach(session, "logout", room)
        self.limits.logged_out(session)

    # -- rooms ---------------------------------------------------------------

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name_key(name))
        if room is None:
            raise errors.NoSuchRoom(unknown_name(name, "room", ROOM_NAME_MAX, f"There is no room called {name}."))
        return room

    def find_room(self, name: str) -> defer.Deferred[Room]:
        """The room called ``name`` (any case); fails with NoSuchRoom."""
        return defer.execute(self._room, name)

    def list_rooms(self) -> defer.Deferred[list[Room]]:
        """All rooms, the public room first, then by name."""
        return defer.succeed(sorted(self.rooms.values(), key=lambda room: (room.name != PUBLIC_ROOM, room.key)))

    def create_room(self, name: str, owner: str) -> defer.Deferred[Room]:
        """Create a room owned by ``owner``; fires once it is on disk."""
        problem = check_name(name, "room", ROOM_NAME_MAX)
        if problem:
            return defer.fail(errors.InvalidName(problem))
        key = name_key(name)
        existing = self.rooms.get(key)
        stored = existing.name if existing is not None else self._claimed_rooms.get(key)
        if stored is not None:
            return defer.fail(errors.NameTaken(f"A room called {stored} already exists."))
        record = RoomRecord(name, owner, self.now(), secrets.token_hex(8))

        def saved(_: None) -> Room:
            room = self._add_room(record)
            self.bus.share(["create", record.name, record.owner, record.created, record.id])
            return room

        waiting: list[defer.Deferred[None]] = []
        self._creating[key] = waiting

        def created(result: Any) -> Any:
            self._creating.pop(key, None)
            for d in waiting:
                d.callback(None)
            return result

        work = self.store.add_room(record, LogEvent("room_create", owner, name))
        return self._while_claimed(self._claimed_rooms, name, work, saved, "Could not save the room",
                                   f"A room called {name} already exists.").addBoth(created)

    def delete_room(self, name: str, by: str) -> defer.Deferred[Room]:
        """
        Delete a room ``by`` owns, or any room if ``by`` is a server admin
        (fires with it once that is on disk); its members go back to the menu.
        """
        try:
            room = self._room(name)
        except errors.ChatError as error:
            return defer.fail(error)
        if room.name == PUBLIC_ROOM:
            return defer.fail(errors.NotAllowed("The public room cannot be deleted."))
        if not self.moderation.may_see(room, by):  # a private room's owner is not told to outsiders
            return defer.fail(errors.NoSuchRoom(unknown_name(name, "room", ROOM_NAME_MAX,
                                                             f"There is no room called {name}.")))
        if name_key(room.owner) != name_key(by) and not self.is_admin(by):
            return defer.fail(errors.NotAllowed(f"Only its owner, {room.owner}, can delete {room.name}."))
        if room.key in self._claimed_rooms:
            return defer.fail(errors.NotAllowed(f"{room.name} is already being deleted."))

        def reopen(failure: Any) -> Any:
            room.closing = False
            return failure

        def saved(_: None) -> Room:
            self.room_gone(room, by)
            self.bus.share(["delete", room.name, by])
            return room

        # Closed from now on, so that log.csv's room_delete row (written with
        # rooms.csv) comes after everything that happened in the room.
        room.closing = True
        work = self.store.delete_room(room.name, LogEvent("room_delete", by, room.name))
        work.addErrback(reopen)
        return self._while_claimed(self._claimed_rooms, room.name, work, saved, "Could not delete the room")

    def room_gone(self, room: Room, by: str) -> None:
        """``room`` was deleted by ``by`` (here, or on another node: chatd.nodes): its members go back to the menu."""
        self.rooms.pop(room.key, None)
        self._by_name.pop(room.name, None)
        self.moderation.forget(room)
        room.fanout.flush()
        for member in room.fanout.members():
            room.fanout.discard(member)
            self._left_room(member, room, "room deleted")
            self.store.log_event("leave", member.name or "", room.name, reason="room_deleted")
            member.room_deleted(room, by)

    def room_to_join(self, name: str) -> defer.Deferred[Room]:
        """
        The room called ``name``, open to joins; fails with NoSuchRoom, or
        NotAllowed while it is being deleted. A room being created is waited
        for (two IRC clients joining a new channel at once: the second joins
        the room the first creates).
        """
        waiting = self._creating.get(name_key(name))
        if waiting is not None:
            d: defer.Deferred[None] = defer.Deferred()
            waiting.append(d)
            return d.addCallback(lambda _: self.room_to_join(name))
        try:
            room = self._room(name)
        except errors.ChatError as error:
            return defer.fail(error)
        if room.closing:
            return defer.fail(errors.NotAllowed(f"Room {room.name} is being deleted."))
        return defer.succeed(room)

    def enter(self, name: str, session: Session, key: str = "") -> defer.Deferred[tuple[Room, list[RoomEvent]]]:
        """
        The room called ``name`` (:meth:`room_to_join`), which ``session`` may
        enter with ``key`` (``Moderation.entry_refusal``), and the lines to
        replay to ``session`` before it joins (:meth:`replay`), once the
        room's history is in memory (``History.fill``). Join it in the same
        callback (``Caller.entered``) so no event falls in between. Fails
        like :meth:`room_to_join`.
        """

        def filled(room: Room) -> defer.Deferred[tuple[Room, list[RoomEvent]]]:
            return self.history.fill(room.history, room.name).addCallback(lambda _: ready(room))

        def ready(room: Room) -> tuple[Room, list[RoomEvent]]:
            if self.rooms.get(room.key) is not room:  # deleted while its history was read
                raise errors.NoSuchRoom(f"There is no room called {room.name}.")
            if room.closing:
                raise errors.NotAllowed(f"Room {room.name} is being deleted.")
            refused = self.moderation.entry_refusal(room, session.name, key)
            if refused:
                raise refused
            return room, self.replay(room, session)

        return self.room_to_join(name).addCallback(filled)

    def replay(self, room: Room, session: Session) -> list[RoomEvent]:
        """
        The lines ``session`` is shown on joining ``room``: the last
        ``--replay-lines`` at most ``--replay-hours`` old, oldest first
        (none if its account turned replay off: :meth:`set_replay`).
        """
        limit = self.settings.replay_lines
        if not limit or self.account_value(session.name, "replay") == "off":
            return []
        since = self.reactor.seconds() - self.settings.replay_hours * 3600.0
        return room.history.recent(limit, since, room.fanout.pending())

    def room_history(self, room: Room, count: int, before: int | None = None,
                     everything: bool = False) -> defer.Deferred[list[RoomEvent]]:
        """
        The newest ``count`` lines of ``room`` (``everything``: events of every
        kind, joins and leaves too) with an id below ``before`` (None: any),
        within ``--history-days``, oldest first.
        """
        since = self.reactor.seconds() - self.settings.history_days * 86400.0
        kinds = frozenset(EventKind) if everything else LINE_KINDS
        return self.history.read(room.history, room.name, count, before, kinds, since, room.fanout.pending())

    def account_value(self, name: str | None, key: str) -> str:
        """A per-account value (Store.set_marks) of the account ``name``; "" if unset."""
        return self.marks.get(name_key(name), {}).get(key, "") if name else ""

    def set_replay(self, session: Session, on: bool) -> defer.Deferred[None]:
        """Turn replay on join on or off for ``session``'s account; fires once that is durable (NotSaved)."""
        return self.store_account_values(session.name or "", {"replay": "" if on else "off"},
                                         "Could not save the setting")

    def account_values_changed(self, name: str, values: Mapping[str, str]) -> None:
        """Per-account values of the account ``name`` stored (here or by another node): in memory ("" deletes one)."""
        stored = self.marks.setdefault(name_key(name), {})
        for key, value in values.items():
            if value:
                stored[key] = value
            else:
                stored.pop(key, None)

    def store_account_values(self, name: str, values: Mapping[str, str], what: str) -> defer.Deferred[None]:
        """
        Set per-account values of the account ``name`` ("" deletes one),
        durably (Store.set_marks), then in memory (:meth:`account_value`)
        and on the other nodes (the bus); fails with NotSaved (``what
        (server storage problem)...``).
        """

        def saved(_: None) -> None:
            self.account_values_changed(name, values)
            self.bus.share(["account_values", name, dict(values)])  # (other nodes: chatd.nodes)

        work = self.store.set_marks(name, values, durable=True)
        return work.addCallbacks(saved, not_saved(what))

    def _lines(self, room: Room) -> int:
        """How many lines ``room`` has had in all, this turn's too."""
        return room.history.lines + sum(1 for event in room.fanout.pending() if event.kind in LINE_KINDS)

    def _mark_read(self, name: str | None, room: Room) -> None:
        """The account ``name`` left ``room``: its unread count there starts from now (a batched mark)."""
        if not name or not self.history.enabled:
            return
        key, value = f"read:{room.history.room_id}", str(self._lines(room))
        self.marks.setdefault(name_key(name), {})[key] = value
        self.store.set_marks(name, {key: value}).addErrback(
            lambda failure: self.log.error("could not keep a read mark: {why}", why=failure.getErrorMessage()))

    def unread(self, name: str | None, room: Room) -> int | None:
        """How many lines ``room`` got since the account ``name`` last left it; None if it never did."""
        mark = self.account_value(name, f"read:{room.history.room_id}")
        if not mark.isdigit():
            return None
        return max(0, self._lines(room) - int(mark))

    def join(self, room: Room, session: Session) -> None:
        """Put ``session`` in ``room`` and tell the room (events before are not sent to it)."""
        room.fanout.add(session)
        self.publish(room, session.name or "", EventKind.JOIN)
        self.store.log_event("join", session.name or "", room.name)

    def leave(self, room: Room, session: Session, reason: str = "", quit: bool = False) -> None:
        """
        Take ``session`` out of ``room`` (it still gets the events before) and
        tell the room: a LEAVE event with ``reason`` (clean text, "" for none),
        ``quit``: the session is ending (an IRC connection in several rooms
        leaves each: ``target`` "quit", IRC's QUIT). A member who may not
        speak there (``Moderation.mute_refusal``: muted, or unvoiced in a
        moderated room) leaves without its reason, on every front-end: a
        reason is a line to the room (ircd-hybrid's channel_part_one_client
        shows a PART reason only if can_send; here QUIT's too, per room).
        """
        if reason and self.moderation.mute_refusal(room, session.name) is not None:
            reason = ""
        self._leave(room, session, "leave", reason, quit)
        self.store.log_event("leave", session.name or "", room.name)

    def remove_member(self, room: Room, session: Session, reason: str) -> None:
        """
        Take ``session`` out of ``room`` without a LEAVE event (a kick or a
        ban: chatd.moderation publishes its own); a ``leave`` row with ``reason``.
        """
        room.fanout.discard(session)
        self._mark_read(session.name, room)
        self._left_room(session, room, "leave")
        self.store.log_event("leave", session.name or "", room.name, reason=reason)

    def _leave(self, room: Room, session: Session, event: LeaveReason, reason: str = "", quit: bool = False) -> None:
        room.fanout.discard(session)
        self._mark_read(session.name, room)
        self._left_room(session, room, event)
        if not self.closing:
            quitting = quit or event != "leave"
            if quitting and not reason and event == "disconnect":
                reason = "Connection closed"  # (IRC's QUIT text for a connection that just went, docs/IRC.md)
            self.publish(room, session.name or "", EventKind.LEAVE, reason, "quit" if quitting else "")

    def _left_room(self, session: Session, room: Room, event: LeaveReason) -> None:
        """``session`` is no longer in ``room``: its uploads there are cancelled (chatd.transfer)."""
        if self.transfers is not None:
            self.transfers.left_room(session, room, event)

    def publish(self, room: Room, sender: str, kind: EventKind, text: str = "", target: str = "",
                until: float = 0.0) -> RoomEvent:
        """A new event in ``room`` caused by the account ``sender`` (files: chatd.transfer), on the bus; returns it."""
        room.last_id += 1
        event = RoomEvent(room.name, room.last_id, self.reactor.seconds(), sender, kind, text, target, until)
        self.bus.publish(event)
        return event

    def _deliver(self, event: RoomEvent) -> None:
        """The bus delivers ``event``: queue it for the room's members connected here (none: the room is gone)."""
        room = self._by_name.get(event.room)
        if room is not None:
            room.last_id = event.id  # (a networked bus numbers events: chatd.buses.redis)
            kind = event[4]
            if kind is _SAY:  # (the common case: an identity check and, while nobody is silenced, an empty dict's)
                if room.silenced and self._silenced(room, event):
                    return
            elif kind in SILENCING:
                follow(room.silenced, event)
            elif room.silenced and kind in SPOKEN and self._silenced(room, event):
                return
            room.fanout.send(event)

    def _silenced(self, room: Room, event: RoomEvent) -> bool:
        """
        Whether the line ``event`` comes from someone banned, kicked or muted
        at this point of the bus's order (chatd.silenced): then it is not
        delivered, and its sender, if here, is told.
        """
        why = refused(room.silenced, event)
        if why is None:
            return False
        session = self.online.get(name_key(event.sender))
        if session is not None:
            session.notice(f"Your line was not delivered: you were {why} {room.name} before it reached the room.")
        return True

    def say(self, room: Room, session: Session, text: str) -> None:
        """Broadcast one clean line from ``session`` to everyone in ``room`` (the hot path: publish inlined)."""
        room.last_id += 1
        # RoomEvent(...) without its Python-level __new__: 0.15 instead of 0.26 us, once per line.
        self.bus.publish(_new_tuple(RoomEvent, (room.name, room.last_id, self.reactor.seconds(), session.name or "",
                                                _SAY, text, "", 0.0)))

    def emote(self, room: Room, session: Session, text: str) -> None:
        """Broadcast an action (``/me``) to ``room``."""
        self.publish(room, session.name or "", EventKind.ME, text)

    def private_message(self, sender: Session, target: str, text: str,
                        notice: bool = False) -> defer.Deferred[PrivateMessage]:
        """
        Send ``text`` (clean) to the logged-in user ``target`` (``notice``:
        as an IRC NOTICE); fires with the message as delivered, or fails
        with NoSuchUser (Offline for an account that is not logged in). A
        user logged in on another node gets it from there (the bus's
        ``["private", NODE, AT, SENDER, RECIPIENT, TEXT, NOTICE]``:
        chatd.nodes ``Nodes.private``).
        """
        session = self.online.get(name_key(target))
        if session is None or session.name is None:
            there = self.bus.online_elsewhere().get(name_key(target))
            if there is not None:
                message = PrivateMessage(self.reactor.seconds(), sender.name or "", there.name, text, notice)
                self.bus.share(["private", there.node, message.at, message.sender, there.name, text, notice])
                return defer.succeed(message)
            error = errors.Offline if name_key(target) in self.accounts else errors.NoSuchUser
            return defer.fail(error(unknown_name(target, "user", USER_NAME_MAX, f"{target} is not logged in.")))
        message = PrivateMessage(self.reactor.seconds(), sender.name or "", session.name, text, notice)
        session.private(message)
        return defer.succeed(message)

    def queue_private(self, sender: Session, target: str, text: str) -> defer.Deferred[PrivateMessage]:
        """
        Keep ``text`` (clean) from ``sender`` for the offline account
        ``target`` until its next login (:meth:`take_private`); fires with the
        message once it is durable. Fails with NoSuchUser (no such account),
        NotAllowed (its queue holds ``--offline-messages`` already: the
        oldest are kept) or NotSaved.
        """
        record = self.accounts.get(name_key(target))
        if record is None:
            return defer.fail(errors.NoSuchUser(f"{target} is not logged in."))
        return self.keep_private(PrivateMessage(self.reactor.seconds(), sender.name or "", record.name, text))

    def keep_private(self, message: PrivateMessage) -> defer.Deferred[PrivateMessage]:
        """
        :meth:`queue_private` of a message made already (also one from
        another node whose recipient logged out meanwhile: chatd.nodes).
        Fails with NoSuchUser, NotAllowed or NotSaved as it does.
        """
        key = name_key(message.recipient)
        limit = self.settings.offline_messages
        if not limit:
            return defer.fail(errors.NoSuchUser(f"{message.recipient} is not logged in."))
        full = f"{message.recipient} is offline and has {limit} messages waiting already; try again later."
        shared = self.store.shares_private
        if not shared and len(self.offline.get(key, ())) + self._offline_pending.get(key, 0) >= limit:
            return defer.fail(errors.NotAllowed(full))
        self._offline_pending[key] = self._offline_pending.get(key, 0) + 1

        def deliver(recipient: Session, taken: list[PrivateMessage]) -> None:
            for kept in taken:
                recipient.private(kept)

        def stored(_: None) -> PrivateMessage:
            recipient = self.online.get(key)
            if recipient is not None and shared:  # logged in here while it was being stored: from the store
                self.take_private(recipient).addCallbacks(partial(deliver, recipient), self._not_taken)
            elif recipient is not None:  # logged in while it was being stored: it is theirs now
                recipient.private(message)
                self.store.remove_private([message]).addErrback(self._not_removed)
            elif not shared:
                self.offline.setdefault(key, []).append(message)
            return message

        def refused(failure: Any) -> Any:
            failure.trap(QueueFull)
            raise errors.NotAllowed(full)

        def done(result: Any) -> Any:
            left = self._offline_pending.pop(key, 1) - 1
            if left:
                self._offline_pending[key] = left
            return result

        work = self.store.queue_private(message, limit if shared else 0).addErrback(refused)
        return work.addCallbacks(stored, not_saved("Could not keep the message")).addBoth(done)

    def take_private(self, session: Session) -> defer.Deferred[list[PrivateMessage]]:
        """
        The private messages kept for ``session``'s account (just logged in),
        oldest first. One process (CSV): from memory (at once), removed from
        the store (if that fails they are logged and come again after a
        restart: delivered at least once). A store shared by several nodes
        (``Store.shares_private``): taken from it (read and deleted at once,
        so exactly one node delivers each, once); if the session ended
        meanwhile they are queued again; fails with StoreError (they stay
        stored, for the next login).
        """
        name = session.name or ""
        if not self.store.shares_private:
            queued = self.offline.pop(name_key(name), [])
            if queued:
                self.store.remove_private(queued).addErrback(self._not_removed)
            return defer.succeed(queued)

        def taken(queued: list[PrivateMessage]) -> list[PrivateMessage]:
            if queued and self.online.get(name_key(name)) is not session:  # gone meanwhile: for its next login
                for message in queued:
                    self.store.queue_private(message).addErrback(lambda failure: self.log.error(
                        "a private message to {name} taken as its session ended could not be kept again: {why}",
                        name=name, why=failure.getErrorMessage()))
                return []
            return queued

        return self.store.take_private(name).addCallback(taken)

    def _not_taken(self, failure: Any) -> None:
        self.log.error("could not read kept private messages (they stay stored): {why}", why=failure.getErrorMessage())

    def _not_removed(self, failure: Any) -> None:
        self.log.error("could not remove delivered offline messages: {why}", why=failure.getErrorMessage())

    def online_names(self) -> defer.Deferred[list[str]]:
        """The names of every logged-in user, on this node and others (the bus), by name (case-insensitively)."""
        return defer.succeed(sorted((user.name for user in online_users(self)), key=name_key))

    def whereabouts(self, names: list[str], asker: str | None = None) -> dict[str, str]:
        """
        The room each of the users ``names`` (as online_names gives them) is in, for ``asker``: name -> room
        name; users at the menu are left out, and so are those in a room ``asker`` may not see (an invite-only
        room: ``Moderation.may_see``; attacker: /users told where a private room's members were).
        """
        wanted = set(names)
        found: dict[str, str] = {}
        for room in self.rooms.values():
            if not self.moderation.may_see(room, asker):
                continue
            for member in room.fanout.members():
                if member.name in wanted:
                    found[member.name] = room.name
        for there in self.bus.online_elsewhere().values():  # (users on other nodes: their heartbeats' rooms)
            if there.name in wanted and there.name not in found:
                seen = next((self._by_name[name] for name in there.rooms if name in self._by_name), None)
                if seen is not None and self.moderation.may_see(seen, asker):
                    found[there.name] = seen.name
        return found

    def sessions(self) -> Iterator[Session]:
        """Every logged-in session."""
        return iter(self.online.values())
