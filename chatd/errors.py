"""
The errors the chat service answers with. Each carries the sentence shown
to the user, so the dialogue never has to format a traceback.
"""

from twisted.python.failure import Failure


def failure_error(failure: Failure) -> BaseException:
    """
    The exception a Failure holds. Twisted types ``Failure.value`` as
    optional (its constructor starts from None), but a Failure always holds
    one: without one its constructor raises NoCurrentExceptionError.
    """
    error = failure.value
    assert error is not None, "a Failure without an exception"
    return error


class ChatError(Exception):
    """A request could not be done; ``str(error)`` is for the user."""


class NameTaken(ChatError):
    """A user or room name is already in use (case-insensitively)."""


class InvalidName(ChatError):
    """A user or room name breaks the naming rules."""


class LoginFailed(ChatError):
    """Unknown name or wrong password (deliberately not said which)."""


class NoSuchRoom(ChatError):
    """No room has that name."""


class NoSuchUser(ChatError):
    """Nobody of that name is logged in."""


class Offline(NoSuchUser):
    """The account exists but is not logged in (a private message to it may be queued)."""


class NotAllowed(ChatError):
    """The user may not do this (not the owner, the public room, ...)."""


class Unchanged(NotAllowed):
    """A change that would change nothing (already voiced, not an operator, already banned until lifted)."""


class RoomFull(NotAllowed):
    """The room has as many members as its member limit allows (``/limit``; IRC 471)."""


class BadRoomKey(NotAllowed):
    """The room has a key and the join gave none or another (``/key``; IRC 475)."""


class NotSaved(ChatError):
    """The disk refused the change; nothing was changed."""


class BadPassword(ChatError):
    """A password that can be neither stored nor checked (not UTF-8, too long, ...)."""


class BadArguments(ChatError):
    """A command's arguments are missing or refused; the text says how to use it."""


class ShuttingDown(ChatError):
    """The server is shutting down: the request was not carried out."""
