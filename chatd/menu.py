"""
The dialogue: what the server says, and what each answer does.

A :class:`Dialogue` is the state machine one connection walks through: the
main menu, the register and login questions, and chat inside a room. It
sees text lines, never bytes or sockets: it talks to its connection only
through the :class:`Peer` interface and to the shared state through the
factory, whose answers are Deferreds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger

from chatd import errors
from chatd.settings import PUBLIC_ROOM
from chatd.passwords import decode_password
from chatd.text import PASSWORD_MIN, USER_NAME_MAX, check_name
from chatd.wire import CHAT, CREDENTIALS, ERROR, LISTEN, SPEAK

if TYPE_CHECKING:
    from chatd.factory import ChatFactory, Room

VERSION = "1.0"
MENU_PROMPT = "menu>"

#: (number, keyword, description) of each main menu item, in order.
MENU_ITEMS = (
    ("1", "register", "create an account"),
    ("2", "login", "log in to your account"),
    ("3", "create", "create a room"),
    ("4", "delete", "delete a room you own"),
    ("5", "info", "show a room's owner, age and members"),
    ("6", "list", "list the rooms"),
    ("7", "public", "enter the public room"),
    ("8", "join", "enter a room by name"),
    ("9", "quit", "disconnect"),
)
_BY_NUMBER = {number: keyword for number, keyword, _ in MENU_ITEMS}


class Peer(Protocol):
    """What the dialogue needs of its connection (implemented by protocol.py)."""

    name: str | None

    def show(self, code: str, text: str) -> None:
        """Send one line of text with its mode code."""

    def ask(self, code: str, text: str) -> None:
        """Send a prompt (SPEAK, CREDENTIALS or CHAT) and remember it as the current one."""

    def hold(self) -> None:
        """Stop reading input until :meth:`release` (an answer is pending)."""

    def release(self) -> None:
        """Read input again."""

    def call_later(self, seconds: float, function: Callable[[], None]) -> Any:
        """Run ``function`` after ``seconds``, cancelled if the connection goes."""

    def talking(self) -> None:
        """A hint: this connection is saying something in a room (protocol.py tunes TCP for talkers)."""

    def close(self) -> None:
        """Close the connection after sending what is queued."""


class Dialogue:
    """The menu and room dialogue of one connection."""

    log = Logger()
    __slots__ = ("peer", "factory", "room", "_gone", "_state", "_pending_name", "_pending_password", "_failures",
                 "_closed")

    def __init__(self, peer: Peer, factory: ChatFactory) -> None:
        self.peer = peer
        self.factory = factory
        self.room: Room | None = None
        #: The name of the room that was deleted under us while we were in chat mode ("" if none).
        self._gone = ""
        #: Handles the next answer: a clean text line (str), or, after a
        #: CREDENTIALS prompt, the answer's raw bytes (see :meth:`secret_received`).
        self._state: Callable[[Any], None] = self._menu_choice
        self._pending_name = ""
        self._pending_password = ""
        self._failures = 0
        self._closed = False

    # -- entry points from the protocol ----------------------------------------

    def start(self) -> None:
        """Greet a new connection."""
        self.peer.show(LISTEN, f"Welcome to chatd {VERSION}.")
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

    def connection_lost(self, event: str = "disconnect") -> None:
        """
        The session ended (``event``: disconnect, replaced): leave the room
        and log out at once; nothing more is done for this connection.
        """
        self._closed = True
        room, self.room = self.room, None
        self._gone = ""
        self.factory.detach(self.peer, event, room)  # type: ignore[arg-type]

    def room_deleted(self, room: Room, by: str) -> None:
        """
        Our room was deleted by its owner. The connection stays in chat
        mode: lines typed meanwhile were meant as chat, so none of them is
        ever run as a menu choice; the user leaves with /exit.
        """
        if self.room is room:
            self.room = None
            self._gone = room.name
            self.peer.show(LISTEN, f"Room {room.name} was deleted by {by}; type /exit to go back to the main menu.")

    def _room_gone(self) -> bool:
        """True (and the user is told) if our room was deleted under us."""
        if self.room is None:
            self._error(f"room {self._gone} was deleted; nothing you type here is sent. "
                        "Type /exit to go back to the main menu.")
            return True
        return False

    # -- helpers -----------------------------------------------------------------

    def _show_menu(self) -> None:
        self.peer.show(LISTEN, "Main menu (type a number or a keyword):")
        for number, keyword, description in MENU_ITEMS:
            self.peer.show(LISTEN, f"  {number}  {keyword:<9} {description}")

    def _menu_prompt(self) -> None:
        self._state = self._menu_choice
        self.peer.ask(SPEAK, MENU_PROMPT)

    def _back_to_menu(self) -> None:
        self._show_menu()
        self._menu_prompt()

    def _error(self, text: str) -> None:
        self.peer.show(ERROR, "Error: " + text)

    def _ask_password(self, question: str, then: Callable[[str], None]) -> None:
        """Ask a CREDENTIALS question; ``then`` gets the answer if it is an acceptable password."""

        def answered(raw: bytes) -> None:
            try:
                password = decode_password(raw)
            except errors.BadPassword as error:
                self._pending_password = ""
                self._error(str(error))
                self._menu_prompt()
            else:
                then(password)

        self._state = answered
        self.peer.ask(CREDENTIALS, question)

    def _wait(self, d: defer.Deferred[Any], done: Callable[[Any], None]) -> None:
        """
        Hold input until ``d`` fires, then call ``done`` with its result, or
        show a ChatError to the user; other failures are logged and reported
        as an internal error, never as a traceback.
        """
        self.peer.hold()

        def succeeded(result: Any) -> None:
            if not self._closed:
                done(result)

        def failed(failure: Any) -> None:
            if failure.check(errors.ChatError):
                if not self._closed:
                    self._error(str(failure.value))
                    self._menu_prompt()
                return
            self.log.failure("unexpected error in the dialogue", failure)
            if not self._closed:
                self._error("something went wrong on the server; please try again.")
                self._menu_prompt()

        d.addCallbacks(succeeded, failed)
        d.addErrback(lambda failure: self.log.failure("error while answering", failure))
        d.addBoth(lambda _: self.peer.release())

    def _need_login(self) -> bool:
        if self.peer.name is None:
            self._error("please log in first (login) or create an account (register).")
            self._menu_prompt()
            return True
        return False

    # -- the main menu -------------------------------------------------------------

    def _menu_choice(self, text: str) -> None:
        word, _, argument = text.partition(" ")
        word = _BY_NUMBER.get(word, word.lower())
        handler = getattr(self, "choice_" + word, None)
        if handler is None:
            # Never quoted: a password typed here by mistake must not be shown back (or logged).
            self._error("unknown choice. Type a number from 1 to 9 or a keyword, or 'menu' to see the menu.")
            self._menu_prompt()
            return
        handler(argument.strip())

    def _ask_then(self, argument: str, question: str, then: Callable[[str], None]) -> None:
        """Use ``argument`` if the user gave one inline, else ask for it."""
        if argument:
            then(argument)
        else:
            self._state = then
            self.peer.ask(SPEAK, question)

    def choice_menu(self, argument: str) -> None:
        """Show the main menu again."""
        self._back_to_menu()

    choice_help = choice_menu

    def choice_ping(self, argument: str) -> None:
        """Answer pong (a cheap round trip for clients and monitoring)."""
        self.peer.show(LISTEN, "pong")
        self._menu_prompt()

    def choice_register(self, argument: str) -> None:
        """Create an account: a name, then a password twice."""
        if self.peer.name is not None:
            self._error(f"you are already logged in as {self.peer.name}.")
            self._menu_prompt()
            return
        refused = self.factory.registration_wait(getattr(self.peer, "address_key", "") or "")
        if refused:  # said before the name and passwords are typed, not after
            self._error(refused)
            self._menu_prompt()
            return
        self._ask_then(argument, "New account name:", self._register_name)

    def _register_name(self, name: str) -> None:
        problem = check_name(name, "user", USER_NAME_MAX)
        if problem is None:
            problem = self.factory.user_name_taken(name)
        if problem:
            self._error(problem)
            self._menu_prompt()
            return
        self._pending_name = name
        self._ask_password(f"Choose a password (at least {PASSWORD_MIN} characters):", self._register_password)

    def _register_password(self, password: str) -> None:
        self._pending_password = password
        self._ask_password("Repeat the password:", self._register_repeat)

    def _register_repeat(self, password: str) -> None:
        first, self._pending_password = self._pending_password, ""
        if password != first:
            self._error("the passwords do not match; nothing was created.")
            self._menu_prompt()
            return

        def registered(name: str) -> None:
            self.peer.name = name
            self.factory.attach(self.peer)  # type: ignore[arg-type]
            self.peer.show(LISTEN, f"Registered and logged in as {name}.")
            self._menu_prompt()

        address = getattr(self.peer, "address_key", "") or ""
        origin = getattr(self.peer, "origin", None)
        self._wait(self.factory.register(self._pending_name, password, address, origin), registered)

    def choice_login(self, argument: str) -> None:
        """Log in: a name, then a password."""
        if self.peer.name is not None:
            self._error(f"you are already logged in as {self.peer.name}.")
            self._menu_prompt()
            return
        self._ask_then(argument, "Name:", self._login_name)

    def _login_name(self, name: str) -> None:
        self._pending_name = name[: USER_NAME_MAX * 2]
        self._ask_password("Password:", self._login_password)

    def _login_password(self, password: str) -> None:
        d = self.factory.authenticate(self._pending_name, password, getattr(self.peer, "address_key", "") or "",
                                      getattr(self.peer, "origin", None))

        def logged_in(name: str) -> None:
            self.peer.name = name
            self._failures = 0
            self.factory.attach(self.peer)  # type: ignore[arg-type]
            self.peer.show(LISTEN, f"Logged in as {name}.")
            self._menu_prompt()

        def failed(failure: Any) -> defer.Deferred[None]:
            failure.trap(errors.LoginFailed)
            self._failures += 1
            settings = self.factory.settings
            if self._failures >= settings.max_login_failures:
                raise errors.NotAllowed("too many failed logins; goodbye.")
            self.peer.show(ERROR, "Error: " + str(failure.value))
            delay = min(2.0 ** (self._failures - 1), settings.login_delay_cap)
            slowed: defer.Deferred[None] = defer.Deferred()
            self.peer.call_later(delay, lambda: slowed.callback(None))
            return slowed

        def after(result: str | None) -> None:
            if result is None:
                self._menu_prompt()
            else:
                logged_in(result)

        d.addErrback(failed)
        d.addErrback(self._too_many)
        self._wait(d, after)

    def _too_many(self, failure: Any) -> None:
        failure.trap(errors.NotAllowed)
        self._error(str(failure.value))
        self.peer.close()
        self._closed = True

    def choice_create(self, argument: str) -> None:
        """Create a room that you own."""
        if not self._need_login():
            self._ask_then(argument, "Name of the new room:", self._create)

    def _create(self, name: str) -> None:
        assert self.peer.name is not None

        def created(room: Room) -> None:
            self.peer.show(LISTEN, f"Room {room.name} created.")
            self._menu_prompt()

        self._wait(self.factory.create_room(name, self.peer.name), created)

    def choice_delete(self, argument: str) -> None:
        """Delete a room that you own; people in it go back to the menu."""
        if not self._need_login():
            self._ask_then(argument, "Name of the room to delete:", self._delete)

    def _delete(self, name: str) -> None:
        assert self.peer.name is not None

        def deleted(room: Room) -> None:
            self.peer.show(LISTEN, f"Room {room.name} deleted.")
            self._menu_prompt()

        self._wait(self.factory.delete_room(name, self.peer.name), deleted)

    def choice_info(self, argument: str) -> None:
        """Show a room's name, owner, creation time and members."""
        self._ask_then(argument, "Name of the room:", self._info)

    def _info(self, name: str) -> None:
        try:
            room = self.factory.find_room(name)
        except errors.ChatError as error:
            self._error(str(error))
        else:
            members = room.member_names()
            self.peer.show(LISTEN, f"Room: {room.name}")
            self.peer.show(LISTEN, f"Owner: {room.owner or '(none: the public room)'}")
            self.peer.show(LISTEN, f"Created: {room.created or '(always there)'}")
            self.peer.show(LISTEN, f"In it now ({len(members)}): {', '.join(members) or 'nobody'}")
        self._menu_prompt()

    def choice_list(self, argument: str) -> None:
        """List the rooms and how many people are in each."""
        rooms = self.factory.list_rooms()
        self.peer.show(LISTEN, f"Rooms ({len(rooms)}):")
        for room in rooms:
            owner = f"owner {room.owner}" if room.owner else "public"
            self.peer.show(LISTEN, f"  {room.name}  ({len(room.fanout)} here, {owner})")
        self._menu_prompt()

    def choice_public(self, argument: str) -> None:
        """Enter the public room."""
        if not self._need_login():
            self._enter(PUBLIC_ROOM)

    def choice_join(self, argument: str) -> None:
        """Enter a room by name."""
        if not self._need_login():
            self._ask_then(argument, "Name of the room to enter:", self._enter)

    def choice_quit(self, argument: str) -> None:
        """Disconnect."""
        self.peer.show(LISTEN, "Bye.")
        if self.peer.name is not None:
            self.factory.detach(self.peer, "logout")  # type: ignore[arg-type]
        self.peer.close()

    choice_exit = choice_quit

    # -- inside a room -------------------------------------------------------------------

    def _enter(self, name: str) -> None:
        try:
            room = self.factory.room_to_join(name)
        except errors.ChatError as error:
            self._error(str(error))
            self._menu_prompt()
            return
        self.room = room
        self._state = self._room_line
        # The answer first, then the join: the room's own "joined" line
        # follows it, and lines said before are not sent to the newcomer.
        self.peer.ask(
            CHAT,
            f"Entered room {room.name} ({len(room.fanout) + 1} here). Type /help for commands, /exit to leave.",
        )
        self.factory.join(room, self.peer)  # type: ignore[arg-type]

    def _room_line(self, text: str) -> None:
        if text.startswith("/") and not text.startswith("//"):
            word, _, argument = text[1:].partition(" ")
            handler = getattr(self, "command_" + word.lower(), None)
            if handler is None:
                self.peer.show(ERROR, f"Error: unknown command /{word[:30]}. Type /help for the list.")
            else:
                handler(argument.strip())
            return
        if self._room_gone():
            return
        assert self.room is not None
        if text.startswith("//"):
            text = text[1:]
        self.peer.talking()
        self.factory.say(self.room, self.peer, text)  # type: ignore[arg-type]

    def command_help(self, argument: str) -> None:
        """/help: list the commands."""
        self.peer.show(CHAT, "Commands (anything else you type is sent to the room):")
        for attribute in sorted(dir(self)):
            if attribute.startswith("command_"):
                doc = (getattr(self, attribute).__doc__ or "").strip().splitlines()[0]
                self.peer.show(CHAT, "  " + doc)
        self.peer.show(CHAT, "  //text: send a line that starts with '/'")

    def command_exit(self, argument: str) -> None:
        """/exit: leave the room and go back to the main menu."""
        room, self.room = self.room, None
        if room is not None:
            self.factory.leave(room, self.peer)  # type: ignore[arg-type]
        self.peer.show(LISTEN, f"You left {room.name if room is not None else self._gone}.")
        self._gone = ""
        self._back_to_menu()

    def command_who(self, argument: str) -> None:
        """/who: list who is in the room."""
        if self._room_gone():
            return
        assert self.room is not None
        names = self.room.member_names()
        self.peer.show(CHAT, f"In {self.room.name} ({len(names)}): {', '.join(names)}")

    def command_msg(self, argument: str) -> None:
        """/msg NAME TEXT: send a private message to a logged-in user."""
        target, _, text = argument.partition(" ")
        text = text.strip()
        if not target or not text:
            self.peer.show(ERROR, "Error: usage: /msg NAME TEXT")
            return
        try:
            name = self.factory.private_message(self.peer, target, text)  # type: ignore[arg-type]
        except errors.ChatError as error:
            self.peer.show(ERROR, "Error: " + str(error))
        else:
            self.peer.show(CHAT, f"[{self.factory.clock.short()}] -> *{name}* {text}")

    def command_me(self, argument: str) -> None:
        """/me TEXT: describe an action (shown as '* name TEXT')."""
        if not argument:
            self.peer.show(ERROR, "Error: usage: /me TEXT")
            return
        if self._room_gone():
            return
        assert self.room is not None
        self.factory.emote(self.room, self.peer, argument)  # type: ignore[arg-type]

    def command_ping(self, argument: str) -> None:
        """/ping: the server answers pong."""
        self.peer.show(CHAT, "pong")

    def command_send(self, argument: str) -> None:
        """/send PATH: send a file to everyone in the room (with the chat client)."""
        if self._room_gone():
            return
        assert self.room is not None
        transfers = self.factory.transfers
        if transfers is None:
            self._error("this server does not accept files.")
        else:
            transfers.offer(self.peer, self.room, argument)
