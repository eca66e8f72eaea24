"""
The screen interface of the ``chat`` client, and what it completes and highlights.

:class:`Screen` is all :class:`clients.cli.ChatClient` asks of the user's side: the plain
``StandardIO`` console (:class:`clients.cli.Console`, pipes and scripts) and the line editor on a
terminal (:class:`clients.editor.LineEditor`, prompt_toolkit) both provide it.

:class:`Vocabulary` learns what Tab completes from what the server says (no prompt_toolkit here, so
it is tested alone); :func:`mentions` says whether a room line names the user.
"""

from __future__ import annotations

import re
from typing import Protocol

#: Room commands completed before any ``/help`` answer was seen (docs/PROTOCOL.md, "Inside a room"),
#: and the client's own ``/send``.
COMMANDS = ("/away", "/back", "/exit", "/help", "/history", "/logout", "/me", "/msg", "/ping", "/replay", "/send",
            "/users", "/who")

#: SGR: dim (faint) text, for old news on a terminal; back to normal.
DIM, NORMAL = "\x1b[2m", "\x1b[0m"

_STAMP = r"\[\d\d:\d\d:\d\d\] "
#: ``/who``: ``In lab (2): alice, bob``; the menu's ``info``: ``In it now (2): ann, bob``; ``/users``:
#: ``Online (3): ann, Bob (in lab), carol`` (maybe ``, and M more``); an away user is ``bob (away)`` in both
#: (``/users``: ``bob (away, in lab)``).
_NAME_LIST = re.compile(r"(?:In \S+|In it now|Online) \([^)]*\): (.*)")
_ENTERED = re.compile(r"Entered room \S+ \(")
_JOINED = re.compile(_STAMP + r"\* (\S+) (joined|left) \S+$")
_SPEAKER = re.compile(_STAMP + r"(?:\* |\*)?([^\s:*]+)[:* ]")
#: A ``/help`` line: ``  /msg NAME TEXT: send a private message.``
_HELP = re.compile(r"\s+(/[a-z][a-z-]*)\b")
_MORE = re.compile(r"and \d+ more$")
#: One name of such a list, with its marks in parentheses: ``bob``, ``bob (away)``, ``bob (away, in lab)``;
#: ``/who`` puts ``~`` before the owner's and ``@`` before operators' (docs/PROTOCOL.md, "Room authority").
_LISTED = re.compile(r"(?:^|, )[~@]?([^\s,()]+)(?: \([^)]*\))?")


class Screen(Protocol):
    """What the client shows and reads: one line editor or console."""

    #: True on a terminal (keys edited by the screen), False for a pipe (answers read as lines).
    interactive: bool

    def show(self, text: str) -> None:
        """Print ``text`` (one line, already cleaned) above the line being typed."""

    def alert(self, text: str) -> None:
        """Like :meth:`show`, for a line that names the user or a private message: ring the bell, highlight it."""

    def show_dimmed(self, text: str) -> None:
        """Like :meth:`show`, for old news (room history replayed on entering): dimmed on a terminal."""

    def set_prompt(self, prompt: str, secret: bool = False) -> None:
        """Ask for the next line with ``prompt``; ``secret``: never echo it nor keep it in the input history."""

    def end(self, text: str = "") -> None:
        """The session is over: ``text`` (if any) is the last line; no prompt is left on screen."""


class Vocabulary:
    """
    Words Tab completes: room member names and command names, learnt from what the server says.

    Names come from ``/who`` (``In lab (2): alice, bob``, which replaces the room's list), ``/users``,
    ``info`` (away users' `` (away)`` mark dropped), joins and leaves (``* alice joined lab``), and
    whoever speaks; entering a room forgets the last room's members. Commands are :data:`COMMANDS`
    plus those listed in a ``/help`` answer.
    """

    def __init__(self) -> None:
        #: Members of the room we are in, in the order learnt (a dict keeps order).
        self.members: dict[str, None] = {}
        #: Other names seen (``/users``), for ``/msg``.
        self.others: dict[str, None] = {}
        self.commands: dict[str, None] = dict.fromkeys(COMMANDS)
        #: Our own name (never offered).
        self.me = ""

    def heard(self, text: str) -> None:
        """Learn from one line the server sent (as shown, after the time stamp was converted)."""
        if _ENTERED.match(text):
            self.members.clear()
            return
        match = _JOINED.match(text)
        if match:
            name, what = match.groups()
            if what == "joined":
                self.members[name] = None
            else:
                self.members.pop(name, None)
                self.others[name] = None
            return
        match = _NAME_LIST.match(text)
        if match:
            names = [name for name in _LISTED.findall(_MORE.sub("", match.group(1))) if name != "and"]
            if text.startswith("In ") and not text.startswith("In it now"):
                self.members = dict.fromkeys(names)
            else:
                self.others.update(dict.fromkeys(names))
            return
        match = _HELP.match(text)
        if match:
            self.commands[match.group(1)] = None
            return
        match = _SPEAKER.match(text)
        if match and match.group(1) not in ("->",):
            self.members[match.group(1)] = None

    def complete(self, before: str) -> list[str]:
        """
        What the word ending ``before`` (the text left of the cursor) may become: commands for a first
        word starting with ``/``, else names (members first); case-insensitive prefix, never our own name.
        """
        words = before.split(" ")
        word = words[-1]
        if len(words) == 1 and word.startswith("/"):
            return [command for command in self.commands if command.startswith(word.lower())]
        prefix = word.lower()
        found = [name for name in {**self.members, **self.others}
                 if name.lower().startswith(prefix) and name.lower() != self.me.lower()]
        return found


def mentions(text: str, name: str) -> bool:
    """
    True if ``text``, a room line (``[HH:MM:SS] alice: ...`` or ``[HH:MM:SS] * alice ...``), was said by
    someone else and names ``name`` as a word (any case).
    """
    if not name:
        return False
    match = _SPEAKER.match(text)
    if match is None or match.group(1).lower() == name.lower():
        return False
    said = text[match.end():]
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", said, re.IGNORECASE) is not None
