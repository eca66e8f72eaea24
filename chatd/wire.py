"""
Wire constants shared by the server and the bundled client.

This module is deliberately tiny and imports nothing from the server, so
that ``clients/cli.py`` can use it without pulling in any server state.
docs/PROTOCOL.md is the prose version of what is here.
"""

from decimal import Decimal
from typing import Final, Literal

ENCODING: Final = "utf-8"
#: Lines are sent with CRLF; either LF or CRLF is accepted.
LINE_END: Final = b"\r\n"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8023

# Mode codes. In tagged mode every line the server sends starts with one
# of these codes and a single space.
LISTEN: Final = "00"
"""Text to show; the client waits for more."""
SPEAK: Final = "11"
"""A prompt: the client reads one line from its user and sends it."""
CREDENTIALS: Final = "01"
"""A password prompt: read one line without echo and send it."""
CHAT: Final = "111"
"""Chat mode: show the line; the user may type at any time."""
ERROR: Final = "02"
"""
A notice the user must see: an error (text starts with ``Error:``) or the
server's own notice (shutdown, logged in elsewhere); shown like LISTEN.
"""
PRIVATE: Final = "03"
"""A private message from another user (shown like LISTEN)."""
REPLAY: Final = "04"
"""
A line of room history replayed on join, before live chat (show it dimmed):
the text is a room line with its date, ``[YYYY-MM-DD HH:MM:SS] name: text``
or ``[YYYY-MM-DD HH:MM:SS] * ...`` (UTC). A LISTEN header and footer frame the block.
"""
HISTORY: Final = "05"
"""A line of room history asked for with ``/history`` (show it like a live line); text as for REPLAY."""

# File transfer codes (docs/PROTOCOL.md, "File transfer"). Sent only to
# tagged connections; ID is a server-chosen token without spaces.
FILE_BEGIN: Final = "20"
"""``20 ID SIZE SHA256 SENDER NAME``: a file follows in FILE_CHUNK lines."""
FILE_CHUNK: Final = "21"
"""``21 ID BASE64``: the next piece of file ID (at most FILE_CHUNK_MAX bytes decoded)."""
FILE_END: Final = "22"
"""``22 ID``: file ID is complete; check its size and SHA-256, then keep it."""
FILE_ABORT: Final = "23"
"""``23 ID REASON``: file ID will not be completed; discard what arrived."""
UPLOAD_READY: Final = "24"
"""``24 ID SIZE NAME``: the last ``/send`` was accepted; upload it as ID."""
UPLOAD_FAILED: Final = "25"
"""``25 ID REASON``: an upload was refused (ID ``-``) or failed; stop sending it."""
UPLOAD_DONE: Final = "26"
"""``26 ID SHA256 COUNT``: upload ID was verified and is being sent to COUNT people."""
DELIVERY_FAILED: Final = "27"
"""``27 ID TEXT``: a recipient did not get file ID; TEXT says who and why (e.g. ``bob could not save x.pdf: ...``)."""
FILE_CODES: Final = frozenset(
    {FILE_BEGIN, FILE_CHUNK, FILE_END, FILE_ABORT, UPLOAD_READY, UPLOAD_FAILED, UPLOAD_DONE, DELIVERY_FAILED}
)

#: Every code a server may send; a client ignores lines with other codes.
CODES: Final = frozenset({LISTEN, SPEAK, CREDENTIALS, CHAT, ERROR, PRIVATE, REPLAY, HISTORY}) | FILE_CODES
#: A code the server sends (one of CODES), as a type.
Code = Literal["00", "11", "01", "111", "02", "03", "04", "05", "20", "21", "22", "23", "24", "25", "26", "27"]

# Client-to-server file commands. ``/send SIZE NAME`` (in a room) offers a
# file; ``/data ID LEN`` + CRLF is followed by exactly LEN raw bytes of it
# (1 <= LEN <= UPLOAD_FRAME_MAX); ``/done ID SHA256`` ends it; ``/cancel ID``
# abandons it. A recipient that could not save or verify file ID sends
# ``/failed ID REASON``; its sender gets DELIVERY_FAILED.
SEND_COMMAND: Final = "/send"
DATA_COMMAND: Final = "/data"
DONE_COMMAND: Final = "/done"
CANCEL_COMMAND: Final = "/cancel"
FAILED_COMMAND: Final = "/failed"
#: Longest REASON of ``/failed`` the server relays, in characters (the rest is cut).
FAILED_REASON_MAX: Final = 200
#: Largest raw upload frame, in bytes.
UPLOAD_FRAME_MAX: Final = 65536
#: Largest piece of a file in one FILE_CHUNK line, before base64.
FILE_CHUNK_MAX: Final = 32768
#: Longest file name kept by :func:`safe_file_name`, in UTF-8 bytes.
FILE_NAME_MAX: Final = 120
#: Longest extension (after the last dot, in characters) that :func:`safe_file_name` keeps when it cuts a name.
FILE_EXTENSION_MAX: Final = 16
#: Largest file size a peer may announce (``/send``, ``20``): the largest a file system offset can be.
FILE_SIZE_MAX: Final = 2**63 - 1

_DEVICE_NAMES: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{kind}{n}" for kind in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_UNSAFE_CHARS: Final = frozenset('<>:"/\\|?*')

#: The line a client sends to switch the connection to tagged mode:
#: ``/client NAME VERSION``.
CLIENT_HELLO: Final = "/client"
#: The start of the server's answer to :data:`CLIENT_HELLO`: ``00 Tagged mode on for NAME VERSION.``
TAGGED_ON: Final = "Tagged mode on for "


def split_tagged(line: str) -> tuple[str, str]:
    """
    Split a tagged line into ``(code, text)``.

    A line without a known code comes back as ``("", line)``.
    """
    code, sep, text = line.partition(" ")
    if sep and code in CODES:
        return code, text
    if line in CODES:
        return line, ""
    return "", line


def safe_file_name(name: str) -> str:
    """
    Reduce a file name from the network to a safe base name: no directory
    part, no ``..`` or leading dots, no control or reserved characters, no
    Windows device name (``CON``, ``nul.txt``), no trailing dot or space,
    at most FILE_NAME_MAX bytes of UTF-8 (an extension of at most
    FILE_EXTENSION_MAX characters is kept). Never empty.
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in _UNSAFE_CHARS)
    name = _fit(name.strip().lstrip(". ").rstrip(". "))
    if name.partition(".")[0].upper().rstrip(" ") in _DEVICE_NAMES:
        name = _fit("_" + name)
    return name or "file"


def _fit(name: str) -> str:
    """Cut ``name`` (without leading or trailing dots and spaces) to FILE_NAME_MAX bytes, keeping a short extension."""
    if len(name.encode("utf-8")) <= FILE_NAME_MAX:
        return name
    base, dot, extension = name.rpartition(".")
    if not dot or len(extension) > FILE_EXTENSION_MAX:
        base, dot, extension = name, "", ""
    tail = (dot + extension).encode("utf-8")
    head = base.encode("utf-8")[: FILE_NAME_MAX - len(tail)].decode("utf-8", "ignore").rstrip(". ")
    return (head or "file") + tail.decode("utf-8")


def parse_count(text: str, maximum: int) -> int | None:
    """
    A count typed or sent by a peer: ASCII digits only (no sign, spaces,
    underscores or other scripts' digits, which ``int()`` would take), of
    value at most ``maximum``; None for anything else. At most as many
    digits as ``maximum`` has are looked at, so a huge number costs nothing.
    """
    if not text or len(text) > len(str(maximum)) or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= maximum else None


_SIZE_FACTORS: Final = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """
    A size in bytes from the command line: ASCII digits, optionally ending in
    ``K``, ``M`` or ``G`` (binary: 1024, 1024², 1024³; ``KB``/``KiB`` and lower
    case too), e.g. ``100M``, ``512K``, ``4096``; no spaces. Raises ValueError for
    anything else or over FILE_SIZE_MAX.
    """
    text = text.upper().removesuffix("B").removesuffix("I")
    factor = _SIZE_FACTORS.get(text[-1:], 1)
    count = parse_count(text[:-1] if factor > 1 else text, FILE_SIZE_MAX // factor)
    if count is None:
        raise ValueError("not a size: bytes in ASCII digits, optionally ending in K, M or G")
    return count * factor


_SIZE_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int | float) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units, up to EiB); defined for every size, however large."""
    scaled = Decimal(size)
    for unit in _SIZE_UNITS:
        if scaled < 1024 or unit == _SIZE_UNITS[-1]:
            break
        scaled /= 1024
    return f"{scaled:.0f} B" if unit == "B" else f"{scaled:.1f} {unit}"
