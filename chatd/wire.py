"""
Wire constants shared by the server and the bundled client.

This module is deliberately tiny and imports nothing from the server, so
that ``clients/cli.py`` can use it without pulling in any server state.
docs/PROTOCOL.md is the prose version of what is here.
"""

from typing import Final

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
"""An error message about the user's last input (shown like LISTEN)."""
PRIVATE: Final = "03"
"""A private message from another user (shown like LISTEN)."""

#: Every code a server may send; a client ignores lines with other codes.
CODES: Final = frozenset({LISTEN, SPEAK, CREDENTIALS, CHAT, ERROR, PRIVATE})

#: The line a client sends to switch the connection to tagged mode:
#: ``/client NAME VERSION``.
CLIENT_HELLO: Final = "/client"


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
