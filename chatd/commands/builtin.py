"""
The commands of chatd, each one declaration and one handler.

Handlers get the :class:`~chatd.commands.table.Caller` and the arguments as
declared; they ask the shared state (``caller.factory``, whose answers are
Deferreds) and answer through the caller. They never see a wire format.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from chatd import errors
from chatd.commands.table import Arg, Caller, CommandTable, Login, Place
from chatd.moderation import names_marked
from chatd.nodes import members_everywhere
from chatd.passwords import password_problem
from chatd.settings import PUBLIC_ROOM
from chatd.store import StoreError
from chatd.text import PASSWORD_MIN, USER_NAME_MAX, check_name

if TYPE_CHECKING:
    from chatd.core.events import PrivateMessage
    from chatd.factory import Room

TABLE = CommandTable()
command = TABLE.command
MENU, ROOM, ANYWHERE = Place.MENU, Place.ROOM, Place.ANYWHERE

#: Names /users shows at most (the count is always whole).
USERS_SHOWN = 100


def valid_password(caller: Caller, password: str) -> str | None:
    return password_problem(password)


# -- accounts ------------------------------------------------------------------


def _may_register(caller: Caller) -> str | None:
    """Said before the name and passwords are typed, not after."""
    return caller.factory.registration_wait(caller.session.address_key or "")


def _new_name(caller: Caller, name: str) -> str | None:
    factory = caller.factory
    return (check_name(name, "user", USER_NAME_MAX) or factory.user_name_taken(name)
            or factory.admin.reserved_refusal(name, caller.session.origin.get("address")))


@command("register", "create an account", MENU, number="1", login=Login.REFUSED, check=_may_register, args=(
    Arg("NAME", "New account name:", check=_new_name),
    Arg("PASSWORD", f"Choose a password (at least {PASSWORD_MIN} characters):", secret=True,
        confirm="Repeat the password:", check=valid_password),
))
def register(caller: Caller, name: str, password: str) -> defer.Deferred[None]:
    session = caller.session
    d = caller.factory.register(name, password, session.address_key or "", session.origin)
    return d.addCallback(lambda stored: caller.logged_in(stored, f"Registered and logged in as {stored}."))


@command("login", "log in to your account", MENU, number="2", login=Login.REFUSED, args=(
    Arg("NAME", "Name:"),
    Arg("PASSWORD", "Password:", secret=True, check=valid_password),
))
def login(caller: Caller, name: str, password: str) -> defer.Deferred[None]:
    """
    A failed login slows the connection down (min(2**(n-1), --login-delay-cap)
    seconds after the n-th) and --max-login-failures of them end it; a login
    refused by a limit (chatd.limits) ends it at once.
    """
    factory, session = caller.factory, caller.session
    d = factory.authenticate(name[: USER_NAME_MAX * 2], password, session.address_key or "", session.origin)

    def logged_in(stored: str) -> None:
        caller.login_failures = 0
        caller.logged_in(stored, f"Logged in as {stored}.")
        deliver_queued(caller)

    def failed(failure: Any) -> defer.Deferred[None]:
        failure.trap(errors.LoginFailed)
        caller.login_failures += 1
        settings = factory.settings
        if caller.login_failures >= settings.max_login_failures:
            raise errors.NotAllowed("too many failed logins; goodbye.")
        caller.error(str(failure.value))
        return caller.later(min(2.0 ** (caller.login_failures - 1), settings.login_delay_cap))

    def goodbye(failure: Any) -> None:
        failure.trap(errors.NotAllowed)
        caller.error(str(failure.value))
        caller.close()

    return d.addCallbacks(logged_in, failed).addErrback(goodbye)


@command("users", "show who is online", ANYWHERE, number="10", login=Login.REQUIRED)
def users(caller: Caller) -> defer.Deferred[None]:
    """
    ``Online (N): a, b (in lab), c (away), ...``: every logged-in user, by name, with the room they are in
    (where they can be reached: issue 13) and whether they are away; at most USERS_SHOWN of them.
    """

    def show(names: list[str]) -> None:
        names = caller.factory.presence.marked(names, caller.factory.whereabouts(names, caller.session.name))
        if len(names) <= USERS_SHOWN:
            caller.reply(f"Online ({len(names)}): {', '.join(names)}")
        else:
            shown = ", ".join(names[:USERS_SHOWN])
            caller.reply(f"Online ({len(names)}; the first {USERS_SHOWN} by name): {shown}, "
                         f"and {len(names) - USERS_SHOWN} more")

    return caller.factory.online_names().addCallback(show)


# -- rooms ---------------------------------------------------------------------


@command("create", "create a room", ANYWHERE, number="3", login=Login.REQUIRED,
         args=(Arg("NAME", "Name of the new room:"),))
def create(caller: Caller, name: str) -> defer.Deferred[None]:
    assert caller.session.name is not None
    d = caller.factory.create_room(name, caller.session.name)
    return d.addCallback(lambda room: caller.reply(f"Room {room.name} created."))


@command("delete", "delete a room you own", ANYWHERE, number="4", login=Login.REQUIRED,
         args=(Arg("NAME", "Name of the room to delete:"),))
def delete(caller: Caller, name: str) -> defer.Deferred[None]:
    assert caller.session.name is not None
    d = caller.factory.delete_room(name, caller.session.name)
    return d.addCallback(lambda room: caller.reply(f"Room {room.name} deleted."))


@command("info", "show a room's owner, age, members, operators and topic", MENU, number="5",
         args=(Arg("NAME", "Name of the room:"),))
def info(caller: Caller, name: str) -> defer.Deferred[None]:
    """An invite-only or secret room is shown only to those who may see it (``Moderation.may_see``; else none)."""
    moderation = caller.factory.moderation

    def show(room: Room) -> None:
        if not moderation.may_see(room, caller.session.name):
            raise errors.NoSuchRoom(f"There is no room called {name}.")
        members = members_everywhere(caller.factory, room)  # (on every node: chatd.nodes)
        caller.reply(f"Room: {room.name}")
        caller.reply(f"Owner: {room.owner or '(none: the public room)'}")
        caller.reply(f"Created: {room.created or '(always there)'}")
        caller.reply(f"In it now ({len(members)}): {', '.join(members) or 'nobody'}")
        caller.reply(f"Operators: {', '.join(moderation.operators(room)) or 'none'}")
        if room.authority.voiced:
            caller.reply(f"Voiced: {', '.join(moderation.operators(room, voiced=True))}")
        caller.reply(f"Topic: {room.authority.topic or '(none)'}")
        if room.authority.invite_only:
            caller.reply("Invite-only: yes")
        if room.authority.secret:
            caller.reply("Secret: yes")
        if room.authority.key:
            caller.reply("Key: yes")
        if room.authority.limit:
            caller.reply(f"Member limit: {room.authority.limit}")
        if room.authority.moderated:
            caller.reply("Moderated: yes")

    return caller.factory.find_room(name).addCallback(show)


@command("list", "list the rooms (with the lines you have not read in those you left)", MENU, number="6")
def list_rooms(caller: Caller) -> defer.Deferred[None]:
    factory, name = caller.factory, caller.session.name
    moderation = factory.moderation

    def show(rooms: list[Room]) -> None:
        rooms = [room for room in rooms if moderation.may_see(room, name)]
        caller.reply(f"Rooms ({len(rooms)}):")
        for room in rooms:
            owner = f"owner {room.owner}" if room.owner else "public"
            unread = factory.unread(name, room)
            news = f", {unread} unread" if unread else ""
            authority = room.authority
            private = (", invite-only" if authority.invite_only else "") + (", secret" if authority.secret else "") + (
                ", key" if authority.key else "") + (f", limit {authority.limit}" if authority.limit else "")
            topic = f", topic: {moderation.topic_shown(room)}" if room.authority.topic else ""
            here = len(members_everywhere(factory, room))
            caller.reply(f"  {room.name}  ({here} here, {owner}{private}{news}{topic})")

    return caller.factory.list_rooms().addCallback(show)


@command("public", "enter the public room", MENU, number="7", login=Login.REQUIRED)
def public(caller: Caller) -> defer.Deferred[None]:
    return caller.factory.enter(PUBLIC_ROOM, caller.session).addCallback(lambda found: caller.entered(*found))


@command("join", "enter a room by name (KEY: the room's key, if it has one)", MENU, number="8", login=Login.REQUIRED,
         args=(Arg("NAME", "Name of the room to enter:"), Arg("[KEY]", optional=True, word=True)))
def join(caller: Caller, name: str, key: str) -> defer.Deferred[None]:
    """The last lines of the room are replayed first (``ChatFactory.replay``), then live chat."""
    return caller.factory.enter(name, caller.session, key).addCallback(lambda found: caller.entered(*found))


@command("quit", "disconnect", MENU, number="9", aliases=("exit",), while_reset=True)
def quit(caller: Caller) -> None:
    caller.reply("Bye.")
    if caller.session.name is not None:
        caller.factory.detach(caller.session, "logout")
    caller.close()


@command("exit", "leave the room and go back to the main menu", ROOM)
def exit_room(caller: Caller) -> None:
    caller.left()


# -- in a room -----------------------------------------------------------------


@command("say", "send TEXT to the room (what typing a line does)", ROOM, login=Login.REQUIRED, in_room=True,
         args=(Arg("TEXT"),), listed=False, speaks=True)
def say(caller: Caller, text: str) -> None:
    assert caller.room is not None  # in_room
    caller.factory.say(caller.room, caller.session, text)


#: What a plain line typed in a room runs (the menu dialogue needs no lookup for it).
SAY = say


@command("me", "describe an action (shown as '* name TEXT')", ROOM, login=Login.REQUIRED, in_room=True,
         args=(Arg("TEXT"),), speaks=True)
def me(caller: Caller, text: str) -> None:
    assert caller.room is not None
    caller.factory.emote(caller.room, caller.session, text)


@command("who", "list who is in the room (~ the owner, @ operators, + voiced)", ROOM, login=Login.REQUIRED, in_room=True)
def who(caller: Caller) -> None:
    room = caller.room
    assert room is not None
    names = members_everywhere(caller.factory, room)
    shown = names_marked(caller.factory.moderation, room, names, caller.factory.presence.marked(names))
    caller.reply(f"In {room.name} ({len(shown)}): {', '.join(shown)}")


@command("msg", "send a private message (kept for a user who is offline until they log in)", ROOM,
         login=Login.REQUIRED, args=(Arg("NAME"), Arg("TEXT")))
def msg(caller: Caller, target: str, text: str) -> defer.Deferred[None]:
    factory = caller.factory

    def echo(message: PrivateMessage) -> None:
        caller.session.private(message, sent=True)
        away = factory.presence.tell_once(message.sender, message.recipient)
        if away is not None:
            caller.reply(f"{message.recipient} is away: {away}")

    def offline(failure: Any) -> defer.Deferred[None]:
        failure.trap(errors.Offline)
        return factory.queue_private(caller.session, target, text).addCallback(queued)

    def queued(message: PrivateMessage) -> None:
        caller.session.private(message, sent=True)
        caller.reply(f"Queued, {message.recipient} is offline: they get it at their next login.")

    return factory.private_message(caller.session, target, text).addCallbacks(echo, offline)


def deliver_queued(caller: Caller) -> None:
    """
    Give a user who just logged in the private messages kept for them, with
    their times and senders; not yet to a caller whose ``queued_later`` is
    true (an IRC connection before its welcome burst delivers them after it).
    """
    if getattr(caller, "queued_later", False):
        return

    def deliver(queued: list[PrivateMessage]) -> None:
        if queued:
            first = datetime.fromtimestamp(queued[0].at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            plural = "s" if len(queued) > 1 else ""
            caller.reply(f"{len(queued)} private message{plural} arrived while you were offline, the first at {first}:")
            for message in queued:
                caller.session.private(message)

    def failed(failure: Any) -> None:  # (a store shared by several nodes could not be read: they stay stored)
        failure.trap(StoreError)
        caller.factory.log.error("could not read {name}'s kept private messages: {why}", name=caller.session.name,
                                 why=failure.getErrorMessage())
        caller.error("your kept private messages could not be read now (server storage problem); they come at "
                     "your next login.")

    caller.factory.take_private(caller.session).addCallbacks(deliver, failed)


@command("send", "send a file to everyone in the room (with the chat client)", ROOM, login=Login.REQUIRED,
         in_room=True, args=(Arg("PATH", optional=True),), speaks=True)
def send(caller: Caller, argument: str) -> None:
    assert caller.room is not None
    transfers = caller.factory.transfers
    if transfers is None:
        raise errors.NotAllowed("this server does not accept files.")
    transfers.offer(caller.session, caller.room, argument)


@command("ping", "the server answers pong", ANYWHERE, while_reset=True)
def ping(caller: Caller) -> None:
    caller.reply("pong")


@command("help", "list the commands", ANYWHERE, aliases=("menu",), while_reset=True)
def show_help(caller: Caller) -> None:
    caller.show_help(caller.commands)
