"""
The errors the chat service answers with. Each carries the sentence shown
to the user, so the dialogue never has to format a traceback.
"""


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


class NotAllowed(ChatError):
    """The user may not do this (not the owner, the public room, ...)."""


class NotSaved(ChatError):
    """The disk refused the change; nothing was changed."""


class BadPassword(ChatError):
    """A password that can be neither stored nor checked (not UTF-8, too long, ...)."""
