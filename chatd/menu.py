"""
The dialogue of the line front-end: the main menu, the questions, and chat
inside a room.

A :class:`Dialogue` is the state machine one line connection walks through.
It sees text lines, never bytes or sockets: it talks to its connection
through the :class:`Peer` interface and runs every command through the
command table (``chatd.commands``), as the :class:`~chatd.commands.table.Caller`
of this connection. What it adds to the table is what only a line dialogue
needs: numbers and keywords at the menu, ``/word`` in a room, asking for an
argument that was not typed, prompts, and wire codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd import errors
from chatd.commands import SAY
from chatd.commands.admin import NEW_PASSWORD
from chatd.commands.table import Command, CommandTable, Place
from chatd.core.ports import Session, SessionEnd
from chatd.nodes import count_entering
from chatd.passwords import decode_password
from chatd.render import dated_line
from chatd.wire import CHAT, CREDENTIALS, ERROR, HISTORY, LISTEN, REPLAY, SPEAK, Code

if TYPE_CHECKING:
    from chatd.core.events import RoomEvent
    from chatd.factory import ChatFactory, Room

VERSION = "1.0"
MENU_PROMPT = "menu>"
MENU, ROOM = Place.MENU, Place.ROOM


class Peer(Session, Protocol):
    """What the dialogue needs of its connection (implemented by protocol.py): a session that shows lines."""

    #: The commands users of this front-end can give.
    commands: CommandTable

    def show(self, code: Code, text: str) -> None:
        """Send one line of text with its mode code."""

    def show_lines(self, lines: Sequence[tuple[Code, str]]) -> None:
        """Send several lines (code, text) in one write."""

    def ask(self, code: Code, text: str) -> None:
        """Send a prompt (SPEAK, CREDENTIALS or CHAT) and remember it as the current one."""

    def hold(self) -> None:
        """Stop reading input until :meth:`release` (an answer is pending)."""

    def release(self) -> None:
        """Read input again."""

    def call_later(self, seconds: float, function: Callable[[], None]) -> IDelayedCall:
        """Run ``function`` after ``seconds``, cancelled if the connection goes."""

    def talking(self) -> None:
        """A hint: this connection is saying something in a room (protocol.py tunes TCP for talkers)."""

    def close(self) -> None:
        """Close the connection after sending what is queued."""


def _answer(text: Any) -> str:
    return text if isinstance(text, str) else text.decode("utf-8", "replace")


class Dialogue:
    """The menu and room dialogue of one connection: the :class:`~chatd.commands.table.Caller` of its commands."""

    log = Logger()
    __slots__ = ("session", "factory", "room", "_gone", "_gone_why", "_state", "login_failures", "_closed")

    def __init__(self, peer: Peer, factory: ChatFactory) -> None:
        #: The connection (the Caller's session).
        self.session = peer
        self.factory = factory
        self.room: Room | None = None
        #: The name of the room that was deleted under us while we were in chat mode ("" if none).
        self._gone = ""
        #: Why: "room lab was deleted", "you were kicked from lab" (what ``room_gone`` answers).
        self._gone_why = ""
        #: Handles the next answer: a clean text line (str), or, after a
        #: CREDENTIALS prompt, the answer's raw bytes (see :meth:`secret_received`).
        self._state: Callable[[Any], None] = self._menu_choice
        self.login_failures = 0
        self._closed = False

    # -- what the command table needs (chatd.commands.table.Caller) --------------

    @property
    def commands(self) -> CommandTable:
        """The command table of this connection's front-end (the peer's: no memory per dialogue)."""
        return self.session.commands

    @property
    def place(self) -> Place:
        return ROOM if self.room is not None or self._gone else MENU

    @property
    def room_gone(self) -> str:
        return self._gone_why

    def reply(self, text: str) -> None:
        if self._closed:
            return
        self.session.show(CHAT if self.room is not None or self._gone else LISTEN, text)

    def error(self, text: str) -> None:
        if self._closed:
            return
        self.session.show(ERROR, "Error: " + text)

    def logged_in(self, name: str, text: str) -> None:
        if self._closed:  # the session ended while the command was running: nothing more happens for it
            return
        self.session.name = name
        self.factory.attach(self.session)
        self.session.show(LISTEN, text)

    def entered(self, room: Room, replay: Sequence[RoomEvent] = ()) -> None:
        if self._closed:
            return
        self.room = room
        self._state = self._room_line
        # The answer first, then the replayed lines, then the join: the room's
        # own "joined" line follows them, and lines said before are not sent again.
        self.session.ask(
            CHAT,
            f"Entered room {room.name} ({count_entering(self.factory, room, self.session.name)} here). "
            "Type /help for commands, /exit to leave.",
        )
        if room.authority.topic:
            self.session.show(CHAT, f"Topic: {room.authority.topic}")
        if replay:
            plural = "s" if len(replay) > 1 else ""
            self._block(REPLAY, f"--- {len(replay)} earlier line{plural} in {room.name} (/replay off hides them) ---",
                        replay, "--- end of earlier lines ---")
        self.factory.join(room, self.session)

    def show_history(self, room: str, events: Sequence[RoomEvent], older: int | None) -> None:
        if not events:
            self.reply(f"No earlier lines in {room}.")
            return
        plural = "s" if len(events) > 1 else ""
        footer = (f"--- end of history; older lines: /history before {older} {len(events)} ---" if older
                  else "--- end of history: that is all there is ---")
        self._block(HISTORY, f"--- {len(events)} line{plural} of history in {room} ---", events, footer)

    def _block(self, code: Code, header: str, events: Sequence[RoomEvent], footer: str) -> None:
        """A marked block of history: ``header``, each event with its date under ``code``, ``footer``."""
        if self._closed:
            return
        frame: Code = CHAT if self.room is not None or self._gone else LISTEN  # as reply() answers
        self.session.show_lines([(frame, header), *((code, dated_line(event)) for event in events), (frame, footer)])

    def left(self) -> None:
        room, self.room = self.room, None
        if room is not None:
            self.factory.leave(room, self.session)
        self.session.show(LISTEN, f"You left {room.name if room is not None else self._gone}.")
        self._gone = self._gone_why = ""
        self._show_menu()
        self._menu_prompt()

    def logged_out(self, text: str) -> None:
        if self._closed:
            return
        place, room = self.place, self.room
        self.room, self._gone, self._gone_why = None, "", ""
        self.factory.log_out(self.session, room)
        self.session.name = None
        self.session.show(LISTEN, text)
        self._show_menu()
        if place is ROOM:  # at the menu the command's end prompts (_after)
            self._menu_prompt()

    def show_help(self, table: CommandTable) -> None:
        if self.place is MENU:
            self._show_menu()
            return
        self.session.show(CHAT, "Commands (anything else you type is sent to the room):")
        for command in table.listed(ROOM, admin=self.factory.is_admin(self.session.name)):
            self.session.show(CHAT, f"  {command.usage()}: {command.help}.")
        self.session.show(CHAT, "  //text: send a line that starts with '/'")

    def later(self, seconds: float) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.Deferred()
        self.session.call_later(seconds, lambda: d.callback(None))
        return d

    def close(self) -> None:
        self.session.close()
        self._closed = True

    # -- entry points from the protocol ----------------------------------------

    def start(self) -> None:
        """Greet a new connection."""
        self.session.show(LISTEN, f"Welcome to chatd {VERSION}.")
        self._show_menu()
        self._menu_prompt()

    def line_received(self, text: str) -> None:
        """Handle one clean, non-empty line of user input."""
        self._state(text)

    def secret_received(self, raw: bytes) -> None:
        """
        Handle the answer to a CREDENTIALS prompt: one non-empty line as
        received, without its line end, neither decoded nor cleaned (a
        password is compared as it was typed; :func:`decode_password`).
        """
        self._state(raw)

    def connection_lost(self, event: SessionEnd = "disconnect") -> None:
        """
        The session ended (``event``: disconnect, replaced): leave the room
        and log out at once; nothing more is done for this connection.
        """
        self._closed = True
        room, self.room = self.room, None
        self._gone = self._gone_why = ""
        self.factory.detach(self.session, event, room)

    def room_deleted(self, room: Room, by: str) -> None:
        """
        Our room was deleted by its owner. The connection stays in chat
        mode: lines typed meanwhile were meant as chat, so none of them is
        ever run as a menu choice; the user leaves with /exit.
        """
        self.removed(room, f"Room {room.name} was deleted by {by}", f"room {room.name} was deleted")

    def removed(self, room: Room, notice: str, gone: str) -> None:
        """
        We were taken out of our room (deleted, kicked, banned): told
        ``notice``; as after a deletion, we stay in chat mode until /exit,
        and lines typed meanwhile are refused with ``gone`` as the reason.
        """
        if self.room is room:
            self.room = None
            self._gone, self._gone_why = room.name, gone
            self.session.show(LISTEN, f"{notice}; type /exit to go back to the main menu.")

    # -- the menu ----------------------------------------------------------------------

    def _show_menu(self) -> None:
        self.session.show(LISTEN, "Main menu (type a number or a keyword):")
        for command in self.commands.menu():
            self.session.show(LISTEN, f"{command.number:>3}  {command.name:<9} {command.help}")

    def _menu_prompt(self) -> None:
        self._state = self._menu_choice
        self.session.ask(SPEAK, MENU_PROMPT)

    def _menu_choice(self, text: str) -> None:
        command, values, problem = self.commands.parse_line(text, MENU)
        if command is None:
            self.error(problem)
            self._menu_prompt()
            return
        self._begin(command, values)

    # -- in a room -------------------------------------------------------------------

    def _room_line(self, text: str) -> None:
        command, values, problem = self.commands.parse_line(text, ROOM)
        if command is None:
            self.error(problem)
            return
        if command is not SAY:
            self._begin(command, values)
            return
        if self.room is not None:
            self.session.talking()
        # The hot path: every room line is the say command, which answers at once (no Deferred).
        try:
            self.session.commands.call(self, SAY, values)
        except errors.ChatError as error:
            self.error(str(error))
        except Exception:
            self._failed(Failure(), ROOM)

    # -- running a command -------------------------------------------------------------

    def _begin(self, command: Command, values: list[str]) -> None:
        """Check the rules and the arguments typed after the command word, ask for the others at the menu."""
        place = self.place
        refused = self.commands.refusal(self, command)
        if refused is not None:
            self.error(refused)
            self._after(place)
            return
        for arg, value in zip(command.args, values):
            problem = arg.problem(self, value, command.usage(slash=place is not MENU))
            if problem:
                self.error(problem)
                self._after(place)
                return
        self._next(command, values, place)

    def _next(self, command: Command, values: list[str], place: Place) -> None:
        """Ask for the next missing argument (at the menu, if it has a question), or run the command."""
        if len(values) < len(command.args) and place is MENU:
            arg = command.args[len(values)]
            if arg.question:

                def answered(answer: Any, confirmed: str | None = None) -> None:
                    try:
                        value = decode_password(answer) if arg.secret else _answer(answer)
                    except errors.BadPassword as error:
                        self.error(str(error))
                        self._after(place)
                        return
                    problem = arg.problem(self, value, command.usage(slash=place is not MENU)) \
                        if confirmed is None else None
                    if problem:
                        self.error(problem)
                        self._after(place)
                    elif arg.confirm and confirmed is None:
                        self._state = lambda again: answered(again, value)
                        self.session.ask(CREDENTIALS, arg.confirm)
                    elif confirmed is not None and value != confirmed:
                        self.error(arg.mismatch)
                        self._after(place)
                    else:
                        self._next(command, [*values, value], place)

                self._state = answered
                self.session.ask(CREDENTIALS if arg.secret else SPEAK, arg.question)
                return
        self._run(command, values, place)

    def _run(self, command: Command, values: Sequence[str], place: Place) -> None:
        """
        Run ``command`` through the table. Most commands (every room line)
        answer at once; one that returns a Deferred holds input until it
        fires. A ChatError is shown to the user; any other failure is logged
        and reported as an internal error (never as a traceback); at the
        menu the prompt comes again.
        """
        try:
            result = self.commands.call(self, command, values)
        except Exception:
            self._failed(Failure(), place)
            return
        if not isinstance(result, defer.Deferred):
            self._after(place)
            return
        result.addCallbacks(lambda _: self._after(place), self._failed, errbackArgs=(place,))
        result.addErrback(lambda failure: self.log.failure("error while answering", failure))
        answered: list[None] = []
        result.addCallback(answered.append)
        if not answered:  # still waiting (a hash, a disk write): read no more input until then
            self.session.hold()
            result.addCallback(lambda _: self.session.release())

    def _failed(self, failure: Failure, place: Place) -> None:
        if self._closed:
            return
        if failure.check(errors.ChatError):
            self.error(str(failure.value))
        else:
            self.log.failure("unexpected error in the dialogue", failure)
            self.error("something went wrong on the server; please try again.")
        self._after(place)

    def _after(self, place: Place) -> None:
        """
        A command begun at the menu is over: prompt again, unless it entered
        a room or closed the connection. An account that logged in with a
        one-time password is asked for a new one instead, until it gives one
        (chatd.admin; docs/PROTOCOL.md, "Server administration").
        """
        if place is MENU and not self._closed and self.place is MENU:
            if self.factory.admin.password_owed(self.session.name):
                command = self.commands.find(NEW_PASSWORD, MENU)
                if command is not None:
                    self._next(command, [], MENU)
                    return
            self._menu_prompt()
