"""
What the IRC command handlers (``chatd.frontends.irc_commands``) need of
the IRC front-end (``chatd.frontends.irc``, which imports them), as
``typing.Protocol``\\ s: so the handlers do not import irc.py back (docs/ARCHITECTURE.md,
"Imports"). ``irc.IrcConnection``, ``irc.Channel`` and ``irc.IrcFactory``
are what fits them; mypy checks that they do where irc.py hands itself to a
handler.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from chatd.commands.table import Caller
from chatd.core.ports import Renderer, Session

if TYPE_CHECKING:
    from twisted.internet import defer

    from chatd import errors
    from chatd.core.events import RoomEvent
    from chatd.factory import ChatFactory, Room


class Channel(Caller, Protocol):
    """One channel a connection is in: the member of its room's fan-out, the ``Caller`` of the room's commands."""

    #: The reason of the PART being run ("" for none).
    part_message: str


class LineRenderer(Renderer, Protocol):
    """How a connection's room events become IRC lines (irc.IrcRenderer)."""

    def event_lines(self, event: RoomEvent) -> bytes:
        """The lines (CRLF-terminated) that show ``event``; b"" for none."""


class IrcServer(Protocol):
    """The IRC front-end as a whole (irc.IrcFactory): its name, options and users."""

    @property
    def server(self) -> str:
        """``--irc-server-name``: the source of server messages."""

    @property
    def guests(self) -> bool:
        """``--irc-guests``: connections without an account may chat under a free nick."""

    @property
    def users(self) -> Mapping[str, IrcConnection]:
        """The registered IRC connections, by name key."""

    @property
    def gone(self) -> Sequence[tuple[str, str, str, float]]:
        """The IRC users who left lately (nick, user name, real name, when), oldest first: WHOWAS."""

    def mask(self, name: str) -> str:
        """How the user ``name`` is shown as a source: ``nick!user@host``."""

    def user_info(self, name: str) -> tuple[str, str, str]:
        """(user name, host, real name) of the online user ``name``."""

    def rooms_of(self, session: Any) -> list[Room]:
        """The rooms ``session`` (of any front-end) is in."""


class IrcConnection(Session, Protocol):
    """One IRC client as a handler sees it (irc.IrcConnection): a Session, its state, its answers, its commands."""

    # What handlers change.
    nick: str
    user: str
    realname: str
    password: str
    #: A SASL exchange: None when none is open, else the base64 received so far.
    sasl: str | None
    #: What is being authenticated now ("sasl", "pass", "register"; "" for nothing).
    auth: str
    negotiating: bool
    oper: bool
    oper_as: str
    umodes: str

    @property
    def irc(self) -> IrcServer: ...

    @property
    def chat(self) -> ChatFactory: ...

    @property
    def target(self) -> str: ...

    @property
    def registered(self) -> bool: ...

    @property
    def guest(self) -> bool: ...

    @property
    def caps(self) -> set[str]: ...

    @property
    def channels(self) -> Mapping[str, Channel]: ...

    @property
    def direct(self) -> object:
        """The ``Caller`` of private messages (``msg``)."""

    @property
    def renderer(self) -> LineRenderer: ...

    def numeric(self, code: str, *params: str, text: bool = True) -> None: ...

    def server_notice(self, text: str) -> None: ...

    def from_server(self, command: str, *params: str) -> None: ...

    def send_line(self, data: bytes) -> None: ...

    def run_command(self, caller: Any, name: str, values: Sequence[str],
                    failed: Callable[[errors.ChatError], None] | None = None,
                    done: Callable[[], None] | None = None, quiet: bool = False) -> None: ...

    def wait_for(self, d: defer.Deferred[Any], ok: Callable[[Any], None],
                 failed: Callable[[errors.ChatError], None]) -> None: ...

    def try_registration(self) -> None: ...

    def guest_refusal(self, nick: str) -> tuple[str, str] | None: ...

    def rename(self, new: str) -> None: ...

    def regroup(self) -> None: ...

    def quit(self, reason: str) -> None: ...

    def new_channel(self, name: str) -> Channel: ...

    def new_batch(self) -> str: ...

    def names(self, room: Room) -> None: ...

    def show_topic(self, room: Room) -> None: ...

    def motd(self) -> None: ...

    def lusers(self) -> None: ...

    def isupport(self) -> None: ...
