"""
IRC's wire format for the IRC front-end (``chatd.frontends.irc``): bounded
line framing, message parsing (IRCv3 message-tags included) and formatting.

Why not ``twisted.words.protocols.irc.IRC``: its ``dataReceived`` keeps what
has no line end without bound and decodes UTF-8 strictly (a stray byte ends
the connection with a traceback), and ``parsemsg`` knows no message tags. So
the framing (:class:`LineSplitter`) and the parser (:func:`parse`) are here,
small and bounded; formatting (:func:`line`) guarantees that no CR, LF or NUL
ever goes out inside a parameter.

Sources: RFC 1459 §2.3 (512 bytes a line, CR LF included), the IRCv3
message-tags specification (tags take up to 8191 more bytes, ``417
ERR_INPUTTOOLONG`` for a longer line), the "Modern IRC" documentation
(modern.ircdocs.horse) for parameters and numerics.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import NamedTuple

from chatd.text import clean_text

#: The host part of every user's ``nick!user@host`` (chatd shows no addresses).
HOST = "chatd"
#: Bytes a line may take without its tags, CR LF included (RFC 1459 §2.3).
LINE_MAX = 512
#: Bytes the tags of a line may take, the ``@`` and the space after them included (IRCv3 message-tags).
TAGS_MAX = 8191
#: Bytes of tag data (without the ``@`` and the space) a client may send (IRCv3 message-tags: 417 beyond).
CLIENT_TAGS_MAX = 4094
#: Parameters a message may have (RFC 1459 §2.3.1, RFC 2812 §2.3: 15); more are dropped.
PARAMS_MAX = 15

_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})
#: What may never go out inside a parameter: a line end or NUL would end the line early (or cut it).
_UNSAFE = str.maketrans({"\r": " ", "\n": " ", "\0": " "})
#: Commands whose last parameter is a name, sent without ``:`` (``MODE #lab +o ann``).
_BARE_LAST = frozenset({"MODE", "JOIN", "NICK", "INVITE"})
#: Commands whose one parameter is text, sent with ``:`` (``QUIT :Quit``).
_TEXT_ONLY = frozenset({"QUIT", "ERROR", "AWAY"})


class Message(NamedTuple):
    """One received message: ``tags`` (unescaped values), ``command`` (upper case) and ``params`` (clean text)."""

    tags: dict[str, str]
    command: str
    params: list[str]


class LineSplitter:
    """
    Splits received bytes into lines, holding at most :data:`LINE_MAX` +
    :data:`TAGS_MAX` bytes of a line not yet ended. A line ends at LF or CR
    (either, or both: clients differ). A longer line is reported once as
    ``None`` in place of the line and its bytes are dropped up to its end.
    """

    limit = LINE_MAX + TAGS_MAX

    def __init__(self) -> None:
        self._buffer = b""
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        """The whole lines ``data`` completes (without their line end), ``None`` for each that was too long."""
        buffer = self._buffer + data if self._buffer else data
        start = 0
        end = len(buffer)
        while start < end:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else end)
            stop = cr if cr >= 0 else lf
            if stop < 0:
                break
            if self._discarding:
                self._discarding = False
            elif stop > start:
                yield buffer[start:stop] if stop - start <= self.limit else None
            start = stop + 1
        rest = buffer[start:]
        if len(rest) > self.limit:
            if not self._discarding:
                self._discarding = True
                yield None
            rest = b""
        self._buffer = rest


def too_long(raw: bytes) -> bool:
    """
    Whether a received line (without its line end) passes IRC's limits: its
    tag data (at most :data:`CLIENT_TAGS_MAX` bytes from a client), then the rest.
    """
    if raw[:1] == b"@":
        space = raw.find(b" ")
        if space < 0:
            return len(raw) - 1 > CLIENT_TAGS_MAX
        if space - 1 > CLIENT_TAGS_MAX:
            return True
        raw = raw[space + 1:]
    return len(raw) > LINE_MAX - 2


def valid_utf8(raw: bytes) -> bool:
    """Whether ``raw`` is valid UTF-8 (ASCII, the common case, is checked first)."""
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        out = []
        chars = iter(value)
        for char in chars:
            if char == "\\":
                escaped = next(chars, "")
                out.append(_TAG_UNESCAPE.get(escaped, escaped))
            else:
                out.append(char)
        tags[clean_text(key)] = clean_text("".join(out))
    return tags


def parse(raw: bytes) -> Message | None:
    """
    One received line (without its line end, within :func:`too_long`'s
    limits) as a :class:`Message`, or None if it has no command. Invalid
    UTF-8 becomes U+FFFD; every tag and parameter is cleaned as a telnet
    line is (``chatd.text.clean_text``: control characters, IRC's formatting
    codes among them, are removed) — except that the CTCP delimiter U+0001
    is kept at both ends of the last parameter, for ``ACTION``.
    """
    text = raw.decode("utf-8", "replace")
    tags: dict[str, str] = {}
    if text.startswith("@"):
        head, _, text = text.partition(" ")
        tags = _tags(head[1:])
    text = text.lstrip(" ")
    if text.startswith(":"):  # a source: ignored from clients (RFC 2812 §2.3)
        _, _, text = text.partition(" ")
    text, colon, trailing = text.partition(" :")
    words = text.split()
    if text.startswith(":") and not words:
        return None
    if not words:
        return None
    command, params = words[0].upper(), words[1:]
    if colon:
        params.append(trailing)
    elif text.endswith(" :"):
        params.append("")
    if len(params) > PARAMS_MAX:  # (dropped, never joined: a joined "a b" would go out as a_b in a middle one)
        del params[PARAMS_MAX:]
    return Message(tags, clean_text(command), [_clean_param(param) for param in params])


def _clean_param(param: str) -> str:
    if len(param) > 1 and param[0] == "\x01":
        inner = param[1:-1] if param.endswith("\x01") else param[1:]
        return "\x01" + clean_text(inner) + "\x01"
    return clean_text(param)


def channel_name(room: str) -> str:
    """The channel of the room called ``room``: ``#lab``."""
    return "#" + room


def escape_tag(value: str) -> str:
    """A tag value escaped for the wire (IRCv3 message-tags)."""
    return value.translate(_TAG_ESCAPE)


def iso_time(at: float) -> str:
    """``at`` (seconds since the epoch) as IRCv3 ``server-time`` shows it: ``2026-11-30T02:07:00.123Z`` (cut)."""
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def line(source: str, command: str, *params: str, tags: str = "", text: bool = True) -> bytes:
    """
    One line to send, CR LF ended: ``@tags :source COMMAND params...``
    (``tags`` already escaped, without ``@``; ``source`` "" for none). Every
    parameter has CR, LF and NUL replaced by spaces; a middle one has no
    space and never starts with ``:`` (an empty one is ``*``); the last one
    gets a ``:`` when it needs one. The line without its tags is at most
    :data:`LINE_MAX` bytes, CR LF included (RFC 1459 §2.3): longer, it is
    cut between UTF-8 characters (its last parameter loses its end), the
    one place every outgoing line is held to the limit.
    """
    parts = []
    if source:
        parts.append(":" + source.translate(_UNSAFE).replace(" ", "_"))
    parts.append(command)
    if params:
        *middle, last = (param.translate(_UNSAFE) for param in params)
        for param in middle:
            param = param.replace(" ", "_").lstrip(":")
            parts.append(param or "*")
        if not last or " " in last or last.startswith(":") or (
                text and (middle or command in _TEXT_ONLY) and command not in _BARE_LAST):
            last = ":" + last
        parts.append(last)
    data = cut_utf8(" ".join(parts).encode("utf-8", "replace"), LINE_MAX - 2) + b"\r\n"
    if tags:
        return ("@" + tags.translate(_UNSAFE).replace(" ", "\\s") + " ").encode("utf-8", "replace") + data
    return data


def cut_utf8(data: bytes, size: int) -> bytes:
    """``data`` (UTF-8) cut to at most ``size`` bytes between characters (as is if it fits)."""
    if len(data) <= size:
        return data
    while size > 0 and (data[size] & 0xC0) == 0x80:  # not inside a character
        size -= 1
    return data[:size]


def tagged(data: bytes, tag: str) -> bytes:
    """The line ``data`` with ``tag`` (``key=value``, escaped) added to its tags."""
    encoded = tag.encode("utf-8", "replace")
    return b"@" + encoded + b";" + data[1:] if data[:1] == b"@" else b"@" + encoded + b" " + data


def split_text(text: str, room: int) -> list[str]:
    """
    ``text`` in pieces of at most ``room`` bytes of UTF-8 each (cut between
    characters, at a space when there is one in the last quarter), so that
    a long chatd line becomes several IRC lines within :data:`LINE_MAX`.
    """
    data = text.encode("utf-8")
    if len(data) <= room:
        return [text]
    room = max(room, 16)
    pieces = []
    while len(data) > room:
        cut = len(cut_utf8(data, room))
        space = data.rfind(b" ", cut - room // 4, cut)
        if space > 0:
            cut = space
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:].lstrip(b" ")
    if data:
        pieces.append(data.decode("utf-8"))
    return pieces
