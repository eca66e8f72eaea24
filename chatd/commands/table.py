"""
Commands as declarations, and the rules every front-end goes through.

A :class:`Command` says its name, its arguments and how they are parsed,
where it may be used (:class:`Place`), whether the user must (or must not)
be logged in (:class:`Login`), whether it needs the room it is typed in to
still exist, and its help text. :meth:`CommandTable.refusal` checks those
rules, in one place, for every front-end; :meth:`CommandTable.run` checks
them and the arguments, then calls the handler and always answers with a
Deferred. The line front-end (``chatd.menu``) asks for a missing argument
with its ``question``; other front-ends send every argument.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
from twisted.internet import defer

from chatd import errors
from chatd.moderation import Role

if TYPE_CHECKING:
    from chatd.core.ports import Session
    from chatd.core.events import RoomEvent
    from chatd.factory import ChatFactory, Room


class Place(enum.Flag):
    """Where a command may be used: MENU, ROOM or ANYWHERE (compared by identity: no other combination)."""

    #: At the main menu (not in a room).
    MENU = enum.auto()
    #: In a room (chat mode).
    ROOM = enum.auto()
    ANYWHERE = MENU | ROOM


class Login(enum.Enum):
    """Whether a command needs a logged-in user."""

    ANY = "any"
    REQUIRED = "required"
    #: Only before logging in (register, login).
    REFUSED = "refused"


#: A rule checked before a command or an argument is taken: the sentence saying why not, or None.
Check = Callable[["Caller"], "str | None"]
ArgCheck = Callable[["Caller", str], "str | None"]


@attrs.frozen
class Arg:
    """
    One argument of a command. Arguments are given in order, separated by
    spaces; the last one that is not ``secret`` takes the rest of the line.
    A ``secret`` (a password) is never taken from the command line: the
    line front-end asks for it (hidden) and other front-ends send it as a
    field of its own.
    """

    #: Upper-case name, as shown in usage (``/msg NAME TEXT``).
    name: str
    #: What the line front-end asks at the menu when the argument is missing.
    question: str = ""
    secret: bool = False
    #: For a secret: the line front-end asks again with this question; the answers must match.
    confirm: str = ""
    #: For a secret with ``confirm``: the error when the two answers differ.
    mismatch: str = "the passwords do not match; nothing was created."
    #: May be empty (the handler decides what that means).
    optional: bool = False
    #: Checked as soon as the argument is known, before the next one is asked.
    check: ArgCheck | None = None
    #: One word (a NAME typed last): more words after it are a usage error, not part of it (``/invite eve extra``).
    word: bool = False
    #: What of a value (checked) is put before the room, as a line of the user's is (a topic, a kick's reason):
    #: if that is not empty, a muted member (in a moderated room, an unvoiced one) is refused, as a command that
    #: ``speaks`` is.
    said: Callable[[str], str] | None = None

    def problem(self, caller: Caller, value: str, usage: str) -> str | None:
        """Why ``value`` is refused: more words than one for a ``word`` (``usage: USAGE``); its check."""
        if self.word and " " in value:
            return f"usage: {usage}"
        return self.check(caller, value) if self.check is not None else None


@attrs.frozen
class Command:
    """One command: everything about it but the code of its handler."""

    name: str
    #: ``run(caller, *arguments)``: returns None or a Deferred; a ChatError is shown to the user.
    run: Callable[..., Any]
    #: One line of help (after the usage in room help; after the name in the menu).
    help: str
    place: Place
    login: Login = Login.ANY
    args: tuple[Arg, ...] = ()
    #: Its number in the main menu ("" if it has none: not listed there).
    number: str = ""
    #: Other names it answers to at the menu (in a room a command has its name only).
    aliases: tuple[str, ...] = ()
    #: In a room: needs the room to still exist (not deleted under the user).
    in_room: bool = False
    #: Checked before any argument is asked (e.g. the registration limit).
    check: Check | None = None
    #: Shown in room help (False: a hidden alias or a menu-only detail).
    listed: bool = True
    #: Only server admins may use it (chatd.admin; IRC's operator-only commands, ergo's ``oper`` flag).
    admin: bool = False
    #: Usable by a session that logged in with a one-time password and owes a new one (chatd.admin): nothing
    #: else is, until it has chosen one.
    while_reset: bool = False
    #: The role in the room it needs (chatd.moderation.Role: OPERATOR, OWNER); MEMBER: none.
    role: Role = Role.MEMBER
    #: It speaks in the room (say, /me, /send): refused to a muted member, and in a moderated room to an unvoiced one.
    speaks: bool = False
    #: For a user in their room with every argument given, nothing to check (the hot path: a room line):
    #: it is used in rooms only, checks nothing of its own and its arguments have no checks.
    fast: bool = attrs.field(init=False)

    @fast.default
    def _fast(self) -> bool:
        return (self.in_room and self.check is None and self.role is Role.MEMBER
                and all(arg.check is None and arg.said is None for arg in self.args))

    def usage(self, slash: bool = True) -> str:
        """
        ``/name ARG ...`` (the secret arguments are not typed on the line); ``slash`` False: ``name ARG ...``, as
        typed at the line front-end's menu.
        """
        return " ".join([("/" if slash else "") + self.name] + [arg.name for arg in self.args if not arg.secret])

    def split(self, text: str) -> list[str]:
        """
        The arguments typed on the line after the command word: one word
        each, the last non-secret one the rest of the line (stripped);
        fewer than declared when the line has fewer.
        """
        typed = [arg for arg in self.args if not arg.secret]
        values: list[str] = []
        rest = text.strip()
        for index, _ in enumerate(typed):
            if not rest:
                break
            if index == len(typed) - 1:
                values.append(rest)
                break
            word, _, rest = rest.partition(" ")
            values.append(word)
            rest = rest.strip()
        return values


class Caller(Protocol):
    """
    The front-end's side of a command: who runs it, where they are, and
    how they are answered. The line front-end's :class:`chatd.menu.Dialogue`
    is one; each front-end has its own.
    """

    #: The shared state.
    factory: ChatFactory
    #: The room the user is in, or None (at the menu, or the room was deleted under them).
    room: Room | None
    #: Failed logins of this connection (the login command slows and ends a guesser).
    login_failures: int

    @property
    def session(self) -> Session:
        """The session the command runs for (read-only here, so a front-end may hold a richer kind of Session)."""

    @property
    def commands(self) -> CommandTable:
        """The commands this caller runs (chatd.commands.TABLE, or a copy that declares more)."""

    @property
    def place(self) -> Place:
        """Where the user is now (a room whose deletion they have not acknowledged is still ROOM)."""

    @property
    def room_gone(self) -> str:
        """
        Why the user, in chat mode, is no longer in their room: ``room lab
        was deleted``, ``you were kicked from lab`` (chatd.moderation); "" if
        they are in it (or at the menu).
        """

    def reply(self, text: str) -> None:
        """An answer to the command (clean text, one line)."""

    def error(self, text: str) -> None:
        """A refusal or failure (clean text, one line, without any "Error:" prefix)."""

    def logged_in(self, name: str, text: str) -> None:
        """The session is now logged in as ``name`` (it is attached); tell the user ``text``."""

    def entered(self, room: Room, replay: Sequence[RoomEvent] = ()) -> None:
        """
        Put the user in ``room`` (chat mode; the front-end tells them, shows
        ``replay``, the room's last lines, as a marked block, then joins it).
        """

    def show_history(self, room: str, events: Sequence[RoomEvent], older: int | None) -> None:
        """
        Show ``events`` of the room called ``room`` (an answer to ``/history``,
        oldest first) as a marked block; ``older``: the id to page back from
        (``/history before ID``) if there may be older events, else None.
        """

    def left(self) -> None:
        """Take the user out of their room (or acknowledge its deletion) back to the menu."""

    def logged_out(self, text: str) -> None:
        """
        Log the session out without disconnecting (``ChatFactory.log_out``:
        it leaves its room and the online list), tell the user ``text`` and
        show what a new connection is shown (the line front-end: the menu).
        """

    def show_help(self, table: CommandTable) -> None:
        """Show what the user can do where they are (the line front-end: the menu, or the room commands)."""

    def later(self, seconds: float) -> defer.Deferred[None]:
        """A Deferred that fires after ``seconds`` (cancelled if the session ends)."""

    def close(self) -> None:
        """End the connection after what is queued has been sent."""


class CommandTable:
    """All commands, found by name and place."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self._by_place: dict[Place, dict[str, Command]] = {Place.MENU: {}, Place.ROOM: {}}

    def copy(self) -> CommandTable:
        """A new table with the same commands (to declare more without changing this one)."""
        table = CommandTable()
        for command in self.commands:
            table.add(command)
        return table

    def add(self, command: Command) -> Command:
        """
        Declare ``command``; raises ValueError if one of its names is taken
        at one of its places. Aliases and numbers are menu keywords: in a
        room a command answers to its name only.
        """
        for place, names in self._by_place.items():
            if command.place & place:
                keywords = (command.name, *command.aliases, command.number) if place is Place.MENU else (command.name,)
                for name in keywords:
                    if name and name in names:
                        raise ValueError(f"command {name!r} declared twice for {place}")
                    if name:
                        names[name] = command
        self.commands.append(command)
        return command

    def command(self, name: str, help: str, place: Place, **options: Any) -> Callable[[Callable[..., Any]], Command]:
        """Declare the decorated function as the handler of a new command (see :class:`Command`)."""

        def declare(run: Callable[..., Any]) -> Command:
            return self.add(Command(name, run, help, place, **options))

        return declare

    def find(self, word: str, place: Place) -> Command | None:
        """The command called ``word`` (a name, an alias or a menu number; case as given) usable at ``place``."""
        return self._by_place[place].get(word)

    def parse_line(self, text: str, place: Place) -> tuple[Command | None, list[str], str]:
        """
        A line as typed on telnet at ``place``: ``(command, arguments, "")``,
        or ``(None, [], why)`` when it names no command. At the menu the first
        word is a keyword, alias or number (any case) and the rest its
        arguments (``join lab``, ``8 lab``); in a room ``/NAME ARGS`` runs a
        command (``/kick bob spam``), any other line is said as it is (the
        ``say`` command), ``//x`` says ``/x``. Arguments are split by
        :meth:`Command.split`; the missing ones are not asked here.
        """
        if place is Place.MENU:
            word, _, rest = text.partition(" ")
            command = self.find(word.lower(), place)
            if command is None:
                # Never quoted: a password typed here by mistake must not be shown back (or logged).
                return None, [], (f"unknown choice. Type a number from 1 to {self.menu()[-1].number} or a keyword, "
                                  "or 'menu' to see the menu.")
            return command, command.split(rest), ""
        if text[:1] == "/" and text[:2] != "//":
            word, _, rest = text[1:].partition(" ")
            command = self.find(word.lower(), place)
            if command is None:
                return None, [], f"unknown command /{word[:30]}. Type /help for the list."
            return command, command.split(rest), ""
        say = self.find("say", place)
        assert say is not None
        return say, [text[1:] if text[:2] == "//" else text], ""

    def menu(self) -> list[Command]:
        """The main menu's items, by number."""
        return sorted((command for command in self.commands if command.number), key=lambda c: int(c.number))

    def listed(self, place: Place, admin: bool = True) -> Iterator[Command]:
        """The commands usable at ``place`` that are listed in help, by name (``admin``: admins' commands too)."""
        return iter(sorted((c for c in self.commands if c.place & place and c.listed and (admin or not c.admin)),
                           key=lambda c: c.name))

    def refusal(self, caller: Caller, command: Command) -> str | None:
        """
        Why ``caller`` may not run ``command`` now (the sentence to show), or
        None: the place, the login rule, a room deleted under the user, the
        command's own check. Every front-end goes through this.
        """
        if not (command.in_room and caller.room is not None):
            # (A user in a room is logged in and in the place ROOM: the hot path, a room line, skips to the end.)
            place = command.place
            if place is not Place.ANYWHERE and place is not caller.place:
                return f"/{command.name} cannot be used here."
            name = caller.session.name
            if command.login is Login.REQUIRED and name is None:
                return "please log in first (login) or create an account (register)."
            if command.login is Login.REFUSED and name is not None:
                return f"you are already logged in as {name}."
            if name is not None and not command.while_reset and caller.factory.admin.password_owed(name):
                return "your password was reset by an admin: choose a new one first (newpassword)."
            if command.admin and not caller.factory.is_admin(name):
                return f"only server admins may use {'/' if caller.place is Place.ROOM else ''}{command.name}."
            if command.in_room:
                return (f"{caller.room_gone}; nothing you type here is sent. "
                        "Type /exit to go back to the main menu.")
        room = caller.room
        if room is not None and (command.role or command.speaks and (room.muted or room.authority.moderated)):
            refused = _room_refusal(caller, command, room)
            if refused:
                return refused
        if command.check is not None:
            return command.check(caller)
        return None

    def call(self, caller: Caller, command: Command, values: Sequence[str]) -> Any:
        """
        Run ``command`` for ``caller`` with its arguments ``values`` (one
        per :class:`Arg`, in order, secrets included), at once: returns what
        the handler returns (None, or a Deferred for work that waits), or
        raises a :class:`~chatd.errors.ChatError` whose text is for the user
        (NotAllowed: a rule; BadArguments: missing or refused arguments).
        The hot path (every room line is the ``say`` command) creates no
        Deferred; :meth:`run` is the same with one answer for all.
        """
        args = command.args
        room = caller.room
        # (Nobody muted in the room, which is not moderated: a check of an empty dict and of a flag, once per line.)
        if command.fast and room is not None and not room.muted and not room.authority.moderated \
                and len(values) == len(args) and all(values):
            return command.run(caller, *values)
        refused = self.refusal(caller, command)
        if refused is not None:
            raise errors.NotAllowed(refused)
        if len(values) > len(args):
            raise errors.BadArguments(f"usage: {command.usage()}")
        for arg, value in zip(args, values):
            if not value:
                if not arg.optional:
                    raise errors.BadArguments(f"usage: {command.usage()}")
            else:
                problem = arg.problem(caller, value, command.usage())
                if problem:
                    raise errors.BadArguments(problem)
            if value and arg.said is not None and room is not None and (room.muted or room.authority.moderated) \
                    and arg.said(value):
                muted = caller.factory.moderation.mute_refusal(room, caller.session.name)
                if muted:
                    raise errors.NotAllowed(muted)
        if len(values) < len(args):
            if any(not arg.optional for arg in args[len(values):]):
                raise errors.BadArguments(f"usage: {command.usage()}")
            values = [*values, *[""] * (len(args) - len(values))]
        return command.run(caller, *values)

    def run(self, caller: Caller, command: Command, values: Sequence[str]) -> defer.Deferred[Any]:
        """:meth:`call` answering with a Deferred: it fires when the command is done, or fails with its ChatError."""
        return defer.maybeDeferred(self.call, caller, command, values)


def _room_refusal(caller: Caller, command: Command, room: Room) -> str | None:
    """The room's rules for ``command`` (chatd.moderation): the role it needs; a muted or unvoiced member speaking."""
    moderation = caller.factory.moderation
    name = caller.session.name
    if command.role:
        refused = moderation.role_refusal(room, name, command.role, f"use /{command.name}")
        if refused:
            return refused
    if command.speaks:
        return moderation.mute_refusal(room, name)
    return None
