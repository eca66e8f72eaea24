"""
The state's side of several nodes (issue 17): what another node changed,
applied here. A networked bus (``chatd.buses.redis``) calls a :class:`Nodes`
as its listener: rooms created and deleted elsewhere, accounts registered,
changed or deleted elsewhere, per-account values stored elsewhere (a lock, a resume
token epoch), room authority (topic, roles, bans, mutes,
invitations, settings, owner) changed elsewhere, kicks, logins elsewhere (which end this node's session
of the account), private messages to users logged in here, files shared elsewhere (offered here from the
store), and room events this node missed (the stream trimmed past them, or lost in a Redis restart),
caught up from the store's history. docs/ARCHITECTURE.md, "Several nodes".

Who is online on every node is one view, for every front-end: :func:`online_user`, :func:`online_users`
(and ``ChatFactory.online_names``, ``Presence``), :func:`members_everywhere` for a room's members.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.logger import Logger

from chatd.core.events import EventKind, PrivateMessage
from chatd.core.ports import OnlineElsewhere, Session
from chatd.store import RoomRecord, UserRecord
from chatd.text import name_key
from chatd.tokens import EPOCH, epoch_count

#: The most missed events a room catches up from the store at once (older ones stay in /history).
CATCH_UP_MAX = 500


def members_everywhere(factory: Any, room: Any) -> list[str]:
    """
    The names of ``room``'s members on every node: those here in the order
    they joined, then those connected to other nodes (``Bus.elsewhere``: the
    heartbeats' membership) that are not also here, each once. For ``/who``
    and the room list's counts, never the line path.
    """
    names = room.member_names()
    here = {name_key(name) for name in names}
    return names + [name for name in factory.bus.elsewhere(room.name) if name_key(name) not in here]


def count_entering(factory: Any, room: Any, name: str | None) -> int:
    """How many members ``room`` has on every node once ``name`` (entering it now) is in, each counted once."""
    names = members_everywhere(factory, room)
    key = name_key(name or "")
    return len(names) + (not key or all(name_key(member) != key for member in names))


class Online(NamedTuple):
    """A user logged in on some node: here (``session``) or on another (``there``: the bus's view)."""

    name: str
    session: Session | None
    there: OnlineElsewhere | None

    def rooms_there(self, factory: Any) -> list[Any]:
        """On another node: the rooms it is in there (its node's heartbeat, joins and leaves); here: []."""
        if self.there is None:
            return []
        return [factory._by_name[name] for name in self.there.rooms if name in factory._by_name]


def online_user(factory: Any, name: str) -> Online | None:
    """The user ``name`` (any case) if logged in on this node or another, else None. Per command."""
    key = name_key(name)
    session = factory.online.get(key)
    if session is not None and session.name is not None:
        return Online(session.name, session, None)
    there = factory.bus.online_elsewhere().get(key)
    return Online(there.name, None, there) if there is not None else None


def online_users(factory: Any) -> list[Online]:
    """Every user logged in on this node or another, each once (here first, then the others). Per command."""
    found = [Online(session.name, session, None) for session in factory.online.values() if session.name]
    return found + [Online(there.name, None, there) for key, there in factory.bus.online_elsewhere().items()
                    if key not in factory.online]


class Nodes:
    """Applies other nodes' room changes to ``factory`` (a :class:`chatd.factory.ChatFactory`)."""

    log = Logger()

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        #: Sessions whose own login has come back through the stream, by name key: a later login elsewhere ends them.
        self._confirmed: dict[str, Any] = {}

    def logged_in(self, name: str, here: bool) -> None:
        """
        The account ``name`` logged in, on this node (``here``) or another,
        in the stream's order: the session here ends ("You logged in from
        another connection.") if its own login came through the stream
        before this one. So of two logins on two nodes at once the later in
        the stream's order stays, on every node.
        """
        key = name_key(name)
        session = self.factory.online.get(key)
        if session is None:
            self._confirmed.pop(key, None)
            return
        if here:
            self._confirmed[key] = session
            if len(self._confirmed) > 2 * len(self.factory.online) + 100:  # forget sessions gone meanwhile
                online = self.factory.online
                self._confirmed = {k: s for k, s in self._confirmed.items() if online.get(k) is s}
        elif self._confirmed.pop(key, None) is session:
            session.kick("You logged in from another connection.", "replaced")

    def members(self) -> dict[str, list[str]] | None:
        """Who is in which room here, by room name (the heartbeat's list); None while the state shuts down."""
        if self.factory.closing:
            return None
        return {room.name: room.member_names() for room in self.factory.rooms.values() if len(room.fanout)}

    def online(self) -> dict[str, list[Any]]:
        """Who is logged in here, for the heartbeat: ``{NAME: [SINCE, AWAY]}`` (whole seconds; "": not away)."""
        presence = self.factory.presence
        return {session.name: [int(presence.since(session.name)), presence.message(session.name) or ""]
                for session in self.factory.online.values() if session.name}

    def private(self, at: float, sender: str, recipient: str, text: str, notice: bool) -> None:
        """
        A private message from ``sender`` on another node to ``recipient``,
        logged in here when it was sent: delivered to its session here, once;
        if it has logged out meanwhile the message is kept for its next
        login as ``/msg`` keeps one for an offline user (a notice is dropped).
        """
        session = self.factory.online.get(name_key(recipient))
        message = PrivateMessage(at, sender, session.name if session is not None else recipient, text, notice)
        if session is not None:
            session.private(message)
        elif not notice:
            self.factory.keep_private(message).addErrback(
                lambda failure: self.log.warn("a private message from {sender} to {recipient} (logged out) could "
                                              "not be kept: {why}", sender=sender, recipient=recipient,
                                              why=failure.getErrorMessage()))

    def node_gone(self, node: str, rooms: dict[str, list[str]]) -> None:
        """
        The node ``node`` stopped or died (heartbeat lost): the users it had
        in each room leave it, told as a session that ended (target "quit",
        text "server node gone"), unless they are in that room here.
        """
        for name, users in rooms.items():
            room = self.factory._by_name.get(name)
            if room is None:
                continue
            here = {name_key(member.name or "") for member in room.fanout.members()}
            gone = [user for user in users if name_key(user) not in here]
            for user in gone:
                self.factory.publish(room, user, EventKind.LEAVE, "server node gone", "quit")
            if gone:
                self.log.info("node {node} gone: {count} user(s) left {room}", node=node, count=len(gone),
                              room=name)

    def taken_for_gone(self, rooms: dict[str, list[str]]) -> None:
        """
        Another node took this one for gone (cut off from Redis for longer
        than a heartbeat's timeout, while it still served its users) and
        published the leaves of ``rooms``' users (``{ROOM: [NAME, ...]}``):
        each still in that room here joins it again, in the stream's order
        after its leave, so every node's members and lists are right again.
        """
        for name, users in rooms.items():
            room = self.factory._by_name.get(name)
            if room is None:
                continue
            here = {name_key(member.name or ""): member.name for member in room.fanout.members() if member.name}
            back = [here[key] for key in dict.fromkeys(name_key(user) for user in users) if key in here]
            for user in back:
                self.factory.publish(room, user, EventKind.JOIN)
            if back:
                self.log.info("{count} user(s) here joined {room} again after this node was taken for gone",
                              count=len(back), room=name)

    def account_changed(self, name: str, password_hash: str, created: str) -> None:
        """Another node registered ``name`` or changed its password: logins here check the new hash."""
        key = name_key(name)
        accounts, passwords = self.factory.accounts, self.factory.passwords
        replaced = accounts.get(key)
        if replaced is not None:
            passwords.uncount_stored(replaced.password_hash)
        accounts[key] = UserRecord(name, password_hash, created)
        passwords.count_stored([password_hash])

    def account_values(self, name: str, values: dict[str, str]) -> None:
        """
        Another node stored per-account values of ``name`` ("" deletes one):
        here too. The resume token epoch (chatd.tokens ``EPOCH``) only grows
        (two nodes voiding at once agree on the greater); a lock refuses
        logins here (the admin's ``lock`` action that follows ends the
        session, with the admin's name: :meth:`admin`).
        """
        factory = self.factory
        if name_key(name) not in factory.accounts:
            return
        epoch = values.get(EPOCH)
        if epoch is not None and epoch_count(epoch) <= epoch_count(factory.account_value(name, EPOCH)):
            values = {key: value for key, value in values.items() if key != EPOCH}
        factory.account_values_changed(name, values)

    def account_deleted(self, name: str) -> None:
        """Another node deleted ``name``: it is gone here too, and its session here ends."""
        self.factory.account_gone(name_key(name), "Your account was deleted.")

    def room_created(self, name: str, owner: str, created: str, room_id: str) -> None:
        """Another node created ``name``: it is a room here too (its history starts empty)."""
        if name_key(name) not in self.factory.rooms:
            self.factory._add_room(RoomRecord(name, owner, created, room_id))

    def room_deleted(self, name: str, by: str) -> None:
        """A node deleted ``name``: its members here go back to the menu (as on the node that deleted it)."""
        room = self.factory.rooms.get(name_key(name))
        if room is not None and room.name == name:
            self.factory.room_gone(room, by)

    def file_shared(self, room: str, file_id: str, name: str, size: int, sha256: str, sender: str) -> None:
        """
        Another node shared a file in ``room`` and copied it into the store:
        this node's members of the room that take files get it from there
        (chatd.transfer ``Transfers.stored_shared``).
        """
        found = self.factory._by_name.get(room)
        if found is not None and self.factory.transfers is not None:
            self.factory.transfers.stored_shared(found, file_id, name, size, sha256, sender)

    def room_values(self, room: str, values: list[list[str]]) -> None:
        """
        Another node changed ``room``'s stored values (``[[KIND, KEY,
        VALUE], ...]``, ``chatd.store.RoomValue``; KIND ``owner``: the new
        owner): applied here as at start-up, banned members here taken out
        (``Moderation.changed_elsewhere``).
        """
        found = self.factory._by_name.get(room)
        if found is not None:
            self.factory.moderation.changed_elsewhere(found, values)

    def kicked(self, room: str, by: str, target: str, reason: str) -> None:
        """Another node kicked ``target`` from ``room``: out of it here too, if in it here."""
        found = self.factory._by_name.get(room)
        if found is not None:
            self.factory.moderation.kicked_elsewhere(found, by, target, reason)

    def admin(self, action: str, by: str, args: list[str]) -> None:
        """An admin ``by`` on another node did ``action``: applied here too (``Administration.elsewhere``)."""
        self.factory.admin.elsewhere(action, by, args)

    def stored(self) -> str | None:
        """The stream id up to which every event published here is in the store (``History.stored_through``)."""
        return self.factory.history.stored_through()

    def unstored(self, node: str, events: list[Any]) -> None:
        """
        ``node`` died with ``events`` it published perhaps not in the store
        (read after its last stored position): committed here, in each room's
        history (the store skips the ids it has).
        """
        rooms: dict[str, list[Any]] = {}
        for event in events:
            rooms.setdefault(event.room, []).append(event)
        for name, found in rooms.items():
            room = self.factory._by_name.get(name)
            if room is not None:
                self.factory.history.adopt(room.history, found)
        self.log.info("node {node} gone: {count} of its event(s) committed to history here", node=node,
                      count=len(events))

    def file_undelivered(self, file_id: str, text: str) -> None:
        """A recipient on another node did not get ``file_id``: its sender, if here, is told (``27``)."""
        if self.factory.transfers is not None:
            self.factory.transfers.undelivered_elsewhere(file_id, text)

    def known(self) -> dict[str, int]:
        """Each room's last event id here, by room name (the bus delivers only events after it)."""
        return {room.name: room.last_id for room in self.factory.rooms.values()}

    def missed(self, name: str, first: int, last: int) -> defer.Deferred[None]:
        """
        Events ``first``..``last`` of the room ``name`` never reached this
        node: read them from the store's history (at most
        :data:`CATCH_UP_MAX`, the newest) and deliver them to its members,
        who are told how many lines were caught up (and how many the store
        did not have: lost with the node that published them).
        """
        room = self.factory._by_name.get(name)
        if room is None:
            return defer.succeed(None)
        count = min(last - first + 1, CATCH_UP_MAX)

        def read(events: list[Any]) -> None:
            found = [event for event in events if first <= event.id <= last]
            lines = sum(1 for event in found if event.kind.value in ("say", "me"))
            missing = (last - first + 1) - len(found)
            text = f"{len(found)} event(s) of {room.name} ({lines} line(s)) caught up from history after " \
                   f"a break in the server's bus"
            if missing:
                text += f"; {missing} could not be found"
            self.log.warn("room {room}: events {first}..{last} missed on the bus; {text}", room=room.name,
                          first=first, last=last, text=text)
            room.fanout.flush()
            for member in room.fanout.members():
                member.notice(text)
            for event in found:
                self.factory._deliver(event)

        def failed(failure: Any) -> None:
            self.log.error("room {room}: events {first}..{last} missed on the bus and the store could not be "
                           "read: {why}", room=room.name, first=first, last=last, why=failure.getErrorMessage())
            for member in room.fanout.members():
                member.notice(f"{last - first + 1} event(s) of {room.name} were missed after a break in the "
                              f"server's bus; /history may show them later")

        wait: defer.Deferred[None] = defer.Deferred()
        # The publishing node commits its history within chatd.history.COMMIT_INTERVAL: wait for that first.
        self.factory.reactor.callLater(0.6, wait.callback, None)
        wait.addCallback(lambda _: self.factory.store.read_history(room.history.room_id, room.name, count,
                                                                   before=last + 1))
        return wait.addCallbacks(read, failed)
