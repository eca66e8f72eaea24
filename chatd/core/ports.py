"""
The interfaces between the core and what plugs into it.

- A :class:`Renderer` turns a batch of room events into what one kind of
  audience receives (bytes for the line front-end; JSON or IRC lines for
  others). The fan-out calls it once per kind of audience per batch.
- A :class:`Member` is what a room's fan-out needs of one member.
- A :class:`Session` is how the core knows a connected user: it delivers
  events (as a member), shows answers and notices, and ends the session.
  The line front-end (``chatd.protocol``) is one implementation; a WebSocket
  or IRC front-end is another module implementing the same interface.
- A :class:`Bus` carries room events from "it happened" to the fan-out of
  the rooms' members connected to this process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol

from chatd.core.events import PrivateMessage, RoomEvent

#: How a session ends, which is also its log.csv event (chatd.store.EventName):
#: the user logged out, the connection went, or a new login of the account replaced it.
SessionEnd = Literal["logout", "disconnect", "replaced"]
#: Why a session is no longer in a room: it left (``/exit``), its session
#: ended, or the room was deleted under it.
LeaveReason = Literal["leave", "room deleted"] | SessionEnd


class OnlineElsewhere(NamedTuple):
    """
    A user logged in on another node (``Bus.online_elsewhere``: that node's
    heartbeat, then its logins, logouts and away changes read after it).
    """

    #: The account's name as that node has it.
    name: str
    #: The node's name on the bus.
    node: str
    #: When its session logged in, in seconds since the epoch (whole seconds).
    since: float
    #: Its away message, or None.
    away: str | None
    #: The rooms it is in there, by name (none: at the menu).
    rooms: tuple[str, ...]


class Renderer(Protocol):
    """Renders room events for one kind of audience."""

    def render(self, events: Sequence[RoomEvent]) -> Any:
        """What each member of this audience is given for ``events`` (one batch, in order)."""


class Member(Protocol):
    """What a room's fan-out needs of a member (``chatd.broadcast``)."""

    @property
    def renderer(self) -> Renderer:
        """How this member's room output is rendered; members with the same renderer share one rendering."""

    def deliver(self, payload: Any) -> None:
        """Send what :attr:`renderer` made of a batch. May raise: the member is then dropped (:meth:`drop`)."""

    def drop(self) -> None:
        """Delivering to this member raised: it was taken out of the room; end its session."""


class Session(Member, Protocol):
    """One connected user, as the core sees it (whatever front-end it came through)."""

    #: The account's name once logged in, else None.
    name: str | None
    #: The client's address as log.csv fields (``address``, ``port``; ``chatd.store.address_fields``).
    origin: Mapping[str, str]
    #: The key of the per-address limits (``chatd.limits``); "" if exempt, None before admission.
    address_key: str | None

    def private(self, message: PrivateMessage, sent: bool = False) -> None:
        """A private message to this user, or (``sent``) the echo of one this user sent (IRCv3 echo-message)."""

    def notice(self, text: str) -> None:
        """An unprompted line of information for this user (clean text)."""

    def room_deleted(self, room: Any, by: str) -> None:
        """The room this session is in was deleted by its owner ``by``; it is no longer a member."""

    def removed(self, room: Any, notice: str, gone: str) -> None:
        """
        This session was taken out of ``room`` (a kick, a ban: chatd.moderation)
        and is no longer a member: tell the user ``notice``; ``gone`` says why
        it is out (``you were kicked from lab``), for refusing what it types
        there meanwhile (as after a room's deletion).
        """

    def spend_allowance(self) -> None:
        """Charge one token of the flood allowance for something others see that no line paid for."""

    def share_allowance(self, bucket: Any, wait: float = 0.0) -> None:
        """Take the flood allowance from ``bucket`` (the account's) from now on (``chatd.limits``)."""

    def kick(self, reason: str, event: SessionEnd = "disconnect") -> None:
        """
        End the session: tell the user ``reason`` and close. The session
        leaves its room and the online list at once (one ``event`` row in
        log.csv).
        """


class RoomFiles(Protocol):
    """File sharing in rooms, as the core sees it (the line front-end's ``chatd.transfer.Transfers``)."""

    def offer(self, session: Any, room: Any, argument: str) -> None:
        """``session`` asks to send a file to ``room`` (``argument``: the command's text); it is answered directly."""

    def left_room(self, session: Any, room: Any, event: LeaveReason = "leave") -> None:
        """``session`` is no longer in ``room`` (``event``: why): its uploads there are cancelled."""

    def stored_shared(self, room: Any, file_id: str, name: str, size: int, sha256: str, sender: str) -> None:
        """Another node shared a file in ``room`` and stored it: this node's members that take files get it."""

    def undelivered_elsewhere(self, file_id: str, text: str) -> None:
        """A recipient on another node did not get ``file_id`` (``text``): its sender here is told."""


class Bus(Protocol):
    """
    Carries room events to the fan-out of the members connected here.

    ``publish`` may deliver at once (the local bus) or after a round trip
    (a networked bus); either way every subscriber sees a room's events in
    the order of their ids, each once.
    """

    def subscribe(self, receiver: Callable[[RoomEvent], None]) -> None:
        """Call ``receiver`` with every event published from now on (on the reactor thread)."""

    def publish(self, event: RoomEvent) -> None:
        """Send ``event`` to every subscriber."""

    def share(self, change: list[Any]) -> None:
        """
        A change to the rooms made here, for the other nodes of a networked
        bus (``["create", NAME, OWNER, CREATED, ROOM_ID]``, ``["delete", NAME,
        BY]``, ``["login", NAME]``: the account logged in here, ``["account",
        NAME, PASSWORD_HASH, CREATED]``: registered or its password changed,
        ``["account_deleted", NAME]``, ``["room_values", ROOM, [[KIND, KEY,
        VALUE], ...]]``: its stored authority values changed (KIND ``owner``:
        a new owner), ``["kick", ROOM, BY, TARGET, REASON]``; who is online:
        ``["login", NAME, SINCE]``, ``["logout", NAME]``, ``["away", NAME,
        MESSAGE]`` ("": back), and ``["private", NODE, AT, SENDER, RECIPIENT,
        TEXT, NOTICE]`` for the recipient's node, ``["account_values", NAME,
        {KEY: VALUE}]``: per-account values stored (a lock, a token epoch:
        chatd.tokens); chatd.nodes applies them); the local
        bus has no other node.
        """

    def elsewhere(self, room: str) -> list[str]:
        """
        The names of ``room``'s members connected to other nodes (their
        heartbeats, then their joins and leaves: docs/ARCHITECTURE.md,
        "Several nodes"), each once; [] with the local bus.
        """

    def online_elsewhere(self) -> Mapping[str, OnlineElsewhere]:
        """
        The users logged in on other nodes, by name key (one entry each: of
        two, the later login); empty with the local bus. Per command, never
        per line (chatd.nodes ``online_user``, ``online_users``).
        """

    def other_nodes(self) -> int:
        """How many other nodes are alive (heard from within the last seconds); 0 with the local bus."""
