"""
Turning untrusted bytes into text that is safe to show other people.

Everything a user types passes through :func:`clean_line` before it reaches
another user, the event log or a data file: invalid UTF-8 is replaced,
terminal escape sequences are removed and other control characters are
dropped. Names of users and rooms are checked by :func:`check_name`.
"""

import re
from typing import Final

#: ANSI/VT escape sequences: CSI (ESC [ ... final), OSC (ESC ] ... BEL or
#: ESC \), and two-character escapes (ESC + one byte). The C1 forms
#: (U+009B CSI, U+009D OSC) are covered too.
_ESCAPES: Final = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[\x20-\x7e]?"
)

USER_NAME_MAX: Final = 24
ROOM_NAME_MAX: Final = 32
PASSWORD_MIN: Final = 6
PASSWORD_MAX: Final = 256
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")


#: C0 and C1 controls and DEL are dropped, a tab becomes a space (str.translate, in C).
_CONTROLS: Final = {**dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)]), 0x09: " "}


def clean_line(raw: bytes) -> str:
    """
    Decode one received line and make it safe to relay.

    Invalid UTF-8 becomes U+FFFD, escape sequences are removed, a tab
    becomes a space, and every other non-printable character (C0/C1
    controls, bidirectional overrides, line separators) is dropped.
    Surrounding whitespace is stripped.
    """
    text = raw.decode("utf-8", "replace")
    if not text.isprintable():
        text = _ESCAPES.sub("", text).translate(_CONTROLS)
        if not text.isprintable():  # rarer: bidi overrides, separators...
            text = "".join(c for c in text if c.isprintable())
    return text.strip()


def check_name(name: str, what: str, limit: int) -> str | None:
    """
    Return why ``name`` is not acceptable as a user or room name (a
    sentence for the user), or None.

    Names are 1..limit ASCII letters, digits, ``_`` and ``-``, starting
    with a letter or digit, so they are safe in CSV, in logs and on any
    terminal, and unique without Unicode case folding surprises.
    """
    if not name:
        return f"A {what} name cannot be empty."
    if len(name) > limit:
        return f"A {what} name has at most {limit} characters."
    if not _NAME.match(name):
        return (
            f"A {what} name uses only letters, digits, '_' and '-', "
            "and starts with a letter or digit."
        )
    return None


def name_key(name: str) -> str:
    """The case-insensitive key under which a user or room name is unique."""
    return name.lower()


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """
    Neutralise a CSV cell that a spreadsheet would run as a formula
    (OWASP "CSV injection"): such a value gets a leading apostrophe.
    """
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value
