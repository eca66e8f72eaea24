"""
Turning untrusted bytes into text that is safe to show other people.

Everything a user types passes through :func:`clean_line` before it reaches
another user, the event log or a data file: invalid UTF-8 is replaced,
terminal escape sequences and the characters that can move a cursor, break
a line or reorder text are removed, and every space becomes a plain space;
everything else (joiners, emoji tags, variation selectors, combining marks,
characters newer than this Python's Unicode tables) is kept, but a lone
UTF-16 surrogate (which JSON's ``\ud800`` escapes can produce, and which
UTF-8 cannot encode) becomes U+FFFD. Names of users
and rooms are checked by :func:`check_name` and looked up by :func:`name_key`.
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


#: Unicode space separators (General Category Zs, unchanged since Unicode 6.3) other than U+0020.
_SPACES: Final = (0xA0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000)
#: Bidi_Control characters (Unicode PropList.txt; UAX #9): the marks ALM, LRM, RLM, the
#: embeddings and overrides LRE..RLO (U+202A-U+202E) and the isolates LRI..PDI (U+2066-U+2069).
BIDI_CONTROLS: Final = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
#: UTF-16 surrogates (General Category Cs, U+D800-U+DFFF): no Unicode scalar value, so UTF-8 cannot encode one.
SURROGATES: Final = range(0xD800, 0xE000)
#: What clean_line removes (None) or replaces (str.translate, in C): every control
#: character (Cc: C0, DEL, C1, so CR, LF, VT, FF and NEL too), the line and paragraph
#: separators (Zl U+2028, Zp U+2029) and the bidi controls; a tab and every space
#: separator become U+0020, a surrogate U+FFFD.
_UNSAFE: Final = {
    **dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *BIDI_CONTROLS]),
    **dict.fromkeys([0x09, *_SPACES], " "),
    **dict.fromkeys(SURROGATES, "\ufffd"),
}
_SURROGATE_CHAR: Final = re.compile("[\ud800-\udfff]")
#: Any character of _UNSAFE: a search is much cheaper than str.translate on non-ASCII text.
_UNSAFE_CHAR: Final = re.compile(
    "[" + "".join(re.escape(chr(code)) for code in _UNSAFE if code not in SURROGATES) + "\ud800-\udfff]")


def clean_line(raw: bytes) -> str:
    """
    Decode one received line and make it safe to relay (docs/PROTOCOL.md,
    "Transport and lines").

    Invalid UTF-8 becomes U+FFFD; escape sequences (ECMA-48 CSI, OSC, DCS,
    PM, APC, SOS and two-character ESC sequences, also in their C1 forms)
    are removed; a tab and every space separator (Zs: U+00A0, U+3000, ...)
    become a space; control characters (Cc), U+2028, U+2029 and the bidi
    controls (:data:`BIDI_CONTROLS`) are removed; a lone surrogate (only
    possible in decoded text, :func:`clean_text`) becomes U+FFFD. Every
    other character stays, including format characters such as ZWJ, ZWNJ
    and emoji tags.
    Surrounding spaces are stripped. Idempotent on its own output.
    """
    text = raw.decode("utf-8", "replace")
    if not text.isprintable():  # the fast path: printable text is already clean
        text = clean_text(text)
    return text.strip()


def clean_text(text: str) -> str:
    """
    :func:`clean_line` for text that is already decoded, without the
    stripping: what a client may show of text it received, or keep of a
    typed character (``""`` if it is a control character).
    """
    if text.isprintable():
        return text
    if "\x1b" in text or "\x9b" in text or "\x9d" in text:  # what every escape sequence starts with
        text = _ESCAPES.sub("", text)
    if _UNSAFE_CHAR.search(text) is None:  # only format, private-use, unassigned... characters: all kept
        return text
    return text.translate(_UNSAFE)


def without_surrogates(text: str) -> str:
    """
    ``text`` with every lone UTF-16 surrogate (U+D800-U+DFFF) replaced by
    U+FFFD, nothing else changed: any str a front-end decoded itself (JSON's
    ``"\\ud800"`` escape gives one) can then be encoded as UTF-8, which is
    what every connection, log and data file writes. Cheap for ASCII.
    """
    if text.isascii():
        return text
    return _SURROGATE_CHAR.sub("\ufffd", text)


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


def unknown_name(name: str, what: str, limit: int, sentence: str) -> str:
    """
    The answer when no ``what`` (user or room) is called ``name``:
    ``sentence`` (which names it) if ``name`` could be a name at all, else
    why it cannot be one (:func:`check_name`), without repeating it. Input
    that is no name (a password typed at the wrong prompt, say) is never
    shown back on screen or written to a log.
    """
    return check_name(name, what, limit) or sentence


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """
    The key under which a user or room name is unique and looked up: the
    name with ASCII letters lowered, nothing else changed. Names are ASCII
    (:func:`check_name`), so a name with any other character never finds
    an account or a room: U+212A KELVIN SIGN is not ``k``, although
    ``str.lower`` says so.
    """
    if name.isascii():
        return name.lower()
    return name.translate(_ASCII_LOWER)


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """
    Neutralise a CSV cell that a spreadsheet would run as a formula
    (OWASP "CSV injection"): such a value gets a leading apostrophe.
    """
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value
