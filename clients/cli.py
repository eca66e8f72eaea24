"""
``chat``: the terminal client for chatd.

It connects, announces itself with ``/client chat VERSION`` (tagged mode)
and then does what each line's code says: show it (``00``, ``02``, ``03``;
room history: ``04`` dimmed, ``05``), read one line (``11``), read a
password without echo (``01``), or stay in chat mode (``111``), where the
user types at any time and incoming lines are printed above the line being
typed. ``/send PATH`` in a room sends a file; files others send are saved in
``--downloads``.

It reads stdin through ``twisted.internet.stdio``: from a terminal it edits
the line itself (so incoming text never garbles it); from a pipe it reads
lines, answering each prompt with the next one, so it can be scripted.

Only :mod:`chatd.wire` is imported from the server package.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import codecs
import os
import re
import shutil
import signal
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol, IOpenSSLClientConnectionCreator, IPushProducer, IReactorTime, ITransport,
)
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import Attribute, implementer

from chatd.text import clean_text
from chatd.wire import (
    CANCEL_COMMAND,
    CHAT,
    CLIENT_HELLO,
    CREDENTIALS,
    DATA_COMMAND,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DELIVERY_FAILED,
    ENCODING,
    ERROR,
    FAILED_COMMAND,
    FAILED_REASON_MAX,
    FILE_ABORT,
    FILE_BEGIN,
    FILE_CHUNK,
    FILE_END,
    FILE_SIZE_MAX,
    HISTORY,
    LINE_END,
    LISTEN,
    PRIVATE,
    REPLAY,
    SEND_COMMAND,
    SPEAK,
    TAGGED_ON,
    UPLOAD_DONE,
    UPLOAD_FAILED,
    UPLOAD_READY,
    human_size,
    parse_count,
    split_tagged,
)
from clients.files import Download, Progress, Runner, Sender, Upload, failure_reason
from clients.screen import DIM, NORMAL, Screen, Vocabulary, mentions

VERSION = "1.0"
CHAT_PROMPT = "> "
#: Downloads waiting to be written after which the client stops reading the socket.
MAX_PENDING_WRITES = 16

_WAIT, _LINE, _SECRET, _CHAT = "wait", "line", "secret", "chat"

#: Exit statuses of ``chat`` (README.md, "Scripting the client").
EXIT_OK, EXIT_CONNECTION, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 3, 130

#: The ``[HH:MM:SS] `` (UTC) that starts live room and private lines, or the ``[YYYY-MM-DD HH:MM:SS] `` (UTC) of
#: room history (``04``, ``05``) (docs/PROTOCOL.md).
_STAMP = re.compile(r"\[(?:(\d{4})-(\d\d)-(\d\d) )?(\d\d):(\d\d):(\d\d)\] ")


def stamp_moment(text: str, now: datetime) -> tuple[datetime, int] | None:
    """
    The moment (aware, UTC) named by the stamp that starts ``text``, and the index where the rest of the
    line starts; None if it has no stamp or the stamp names no valid time. A dated stamp
    (``[YYYY-MM-DD HH:MM:SS] ``) names its own day; a time alone (``[HH:MM:SS] ``) is taken as the moment
    nearest to ``now`` (aware, UTC).
    """
    match = _STAMP.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second = match.groups()
    try:
        if year is not None:
            return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                            tzinfo=timezone.utc), match.end()
        moment = now.replace(hour=int(hour), minute=int(minute), second=int(second), microsecond=0)
    except ValueError:
        return None
    if moment - now > timedelta(hours=12):
        moment -= timedelta(days=1)
    elif now - moment > timedelta(hours=12):
        moment += timedelta(days=1)
    return moment, match.end()


def local_time(text: str, now: datetime, zone: tzinfo | None = None) -> str:
    """
    Rewrite a leading stamp from UTC (the server's clock) into ``zone`` (None: this computer's time zone):
    ``[HH:MM:SS] `` stays a time (the moment nearest to ``now``, aware UTC); a dated history stamp
    ``[YYYY-MM-DD HH:MM:SS] `` becomes ``[HH:MM:SS] `` when its local day is today's (by ``now``) and
    ``[YYYY-MM-DD HH:MM:SS] `` in local time when not. Text without a valid stamp is returned unchanged.
    """
    found = stamp_moment(text, now)
    if found is None:
        return text
    moment, end = found
    local = moment.astimezone(zone)
    dated = end > len("[HH:MM:SS] ")
    shown = "%Y-%m-%d %H:%M:%S" if dated and local.date() != now.astimezone(zone).date() else "%H:%M:%S"
    return f"[{local.strftime(shown)}] " + text[end:]


def cells(text: str) -> int:
    """Terminal columns ``text`` takes: 2 for wide (East Asian) characters, 0 for combining marks."""
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
        for char in text
    )


def terminal_width() -> int:
    """Columns of the terminal on stdout (80 if unknown)."""
    return max(1, shutil.get_terminal_size((80, 24)).columns)


def default_downloads() -> str:
    """``~/Downloads/chat`` (the folder is created on the first download)."""
    return os.path.join(os.path.expanduser("~"), "Downloads", "chat")


def printable(text: str) -> str:
    """
    Text we are about to show, by the server's own rule (chatd.text.clean_text): escape sequences,
    control characters, bidi controls and line separators removed; joiners, emoji tags and the like kept.
    """
    return clean_text(text)


@implementer(IHalfCloseableProtocol)
class Console(protocol.Protocol):
    """
    The user's side: stdin in, stdout out (through ``StandardIO``).

    In a terminal (``interactive``) it reads keystrokes (the terminal is in
    cbreak mode without echo) and keeps the line being typed at the bottom,
    redrawn after every printed line; a secret line is not shown. The line
    being typed may wrap over several rows (``width`` gives the terminal's
    columns): redrawing erases all of them. From a pipe it reads whole lines.
    """

    def __init__(self, on_line: Callable[[str], None], on_eof: Callable[[], None], interactive: bool,
                 width: Callable[[], int] = terminal_width) -> None:
        self.on_line = on_line
        self.on_eof = on_eof
        self.interactive = interactive
        self.width = width
        self.prompt = ""
        self.secret = False
        self.buffer = ""
        #: Columns the prompt and the typed line take on screen now (the cursor is at their end).
        self._drawn = 0
        self._escape = ""
        self._pending = b""
        self._ended = False
        self._decoder = codecs.getincrementaldecoder(ENCODING)("replace")

    # -- input --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if not self.interactive:
            lines = (self._pending + data).split(b"\n")
            self._pending = lines.pop()
            for line in lines:
                self.on_line(line.rstrip(b"\r").decode(ENCODING, "replace"))
            return
        for char in self._decoder.decode(data):
            self._key(char)

    def _key(self, char: str) -> None:
        if self._escape:
            # Skip escape sequences (arrow keys and the like): ESC [ ... final byte.
            self._escape += char
            if len(self._escape) > 2 and "@" <= char <= "~" or len(self._escape) == 2 and char not in "[O":
                self._escape = ""
            return
        if char == "\x1b":
            self._escape = char
        elif char in "\r\n":
            line, self.buffer = self.buffer, ""
            self._write(self._erase() + ("" if self.secret else self.prompt + line) + "\r\n")
            self._drawn = 0
            self.on_line(line)
            self.redraw()
        elif char in "\x7f\x08":
            self.buffer = self.buffer[:-1]
            self.redraw()
        elif char == "\x15":  # Ctrl-U
            self.buffer = ""
            self.redraw()
        elif char == "\x04":  # Ctrl-D
            if not self.buffer:
                self.on_eof()
        elif char != "\t" and clean_text(char):  # not a control character (ZWJ, NBSP, ... are typed as they are)
            self.buffer += char
            if self.secret:
                return
            self._drawn += cells(char)
            self._write(char)

    def readConnectionLost(self) -> None:
        """End of stdin: stdout stays open (StandardIO is half-closeable)."""
        if self._ended:
            return
        self._ended = True
        if self._pending:
            line, self._pending = self._pending, b""
            self.on_line(line.rstrip(b"\r").decode(ENCODING, "replace"))
        self.on_eof()

    def writeConnectionLost(self) -> None:
        """Nobody reads our output any more; keep going (the session ends on its own)."""

    def connectionLost(self, reason: Any = None) -> None:
        self.readConnectionLost()

    # -- output --------------------------------------------------------

    def _write(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(text.encode(ENCODING, "replace"))

    def _erase(self) -> str:
        """Go to the first row of the prompt and typed line, and clear from there to the end of the screen."""
        up = (self._drawn - 1) // self.width() if self._drawn else 0
        return "\r" + (f"\x1b[{up}A" if up else "") + "\x1b[J"

    def show(self, text: str) -> None:
        """Print a line, keeping the line being typed intact below it."""
        if self.interactive:
            self._write(self._erase() + text + "\r\n")
            self._drawn = 0
            self.redraw()
        else:
            self._write(text + "\n")

    def alert(self, text: str) -> None:
        """A line that names the user, or a private message: shown after a bell (on a terminal)."""
        if self.interactive:
            self._write("\x07")
        self.show(text)

    def show_dimmed(self, text: str) -> None:
        """Old news (replayed history): dim (SGR 2) on a terminal; from a pipe the text as it is."""
        self.show(f"{DIM}{text}{NORMAL}" if self.interactive else text)

    def end(self, text: str = "") -> None:
        """
        The session is over: print ``text`` (if any) as the last line, with no
        prompt and no typed line left on screen; with no text nothing is
        written but the erasing (a script's output gets no empty line).
        """
        self.prompt, self.buffer, self.secret = "", "", False
        if self.interactive:
            self._write(self._erase() + (text + "\r\n" if text else ""))
            self._drawn = 0
        elif text:
            self._write(text + "\n")

    def set_prompt(self, prompt: str, secret: bool = False) -> None:
        self.prompt = prompt
        self.secret = secret
        if self.interactive:
            self.redraw()
        elif prompt.strip() and prompt != CHAT_PROMPT:
            self._write(prompt.rstrip() + "\n")

    def redraw(self) -> None:
        if self.interactive:
            shown = self.prompt + ("" if self.secret else self.buffer)
            self._write(self._erase() + shown)
            self._drawn = cells(shown)


class IClientTransport(ITransport, IPushProducer):
    """
    What :class:`ChatClient` uses of its transport: ITransport, reading
    paused and resumed (IPushProducer) and ``disconnecting``. A TCP
    connection has it all; TLS (``TLSMemoryBIOProtocol``) declares only
    ITransport and has the rest, the producer methods through its wrapper's
    delegation to the TCP connection; so has the tests' ``StringTransport``.
    tests/test_types.py checks each.
    """

    disconnecting = Attribute("True once the connection is being closed.")


class ChatClient(LineReceiver):
    """The connection to the server: follows its codes, drives the console, moves files."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20
    #: Set by makeConnection before the server is heard from (:class:`IClientTransport` says what is used of it).
    transport: IClientTransport

    def __init__(self, console: Screen, downloads: str, run: Runner, progress: bool | None = None,
                 clock: IReactorTime | None = None, progress_out: Callable[[str], None] | None = None,
                 zone: tzinfo | None = None, words: Vocabulary | None = None, ask_who: bool = False,
                 utc_now: Callable[[], datetime] | None = None) -> None:
        self.console = console
        #: What Tab completes (names, commands), learnt from what the server says.
        self.words = words if words is not None else Vocabulary()
        #: Send a /who on entering a room (its answer not shown) so Tab knows who is there: the line editor's.
        self.ask_who = ask_who
        #: ``/who`` answers still to be swallowed (one per room entered with ``ask_who``).
        self._quiet_who = 0
        #: What logging in again after a lost connection needs (kept in memory only): the account's name and
        #: password (None until logged in, and after ``Logged out.``), and the room we are in (None: the menu).
        self.account: tuple[str, str] | None = None
        self.room: str | None = None
        self._last_secret = ""
        #: Logging in again (:meth:`resume`): "login", "password", "join", "entering", or "" when not.
        self._resuming = ""
        #: The time zone chat lines are shown in (None: this computer's), and the time now (aware, UTC).
        self.zone = zone
        self._utc_now = utc_now or (lambda: datetime.now(timezone.utc))
        #: Per room, the moment (UTC) and the text after the stamp of the newest room line shown (live or
        #: replayed): what a reconnect has seen already (:meth:`resume`).
        self.seen: dict[str, tuple[datetime, str]] = {}
        #: After a reconnect, the line of :attr:`seen` for the rejoined room: replayed lines up to and
        #: including it are dropped (None: none to drop).
        self._seen_up_to: tuple[datetime, str] | None = None
        #: After a reconnect, the header of the replayed block, held until one of its lines is shown (a block
        #: whose every line was seen before is not shown at all, frame included).
        self._held_frame: str | None = None
        self.downloads = downloads
        self.run = run
        #: Progress bars: True, False, or None (when stderr is a terminal); timed by ``clock``, drawn by ``progress_out``.
        self.progress = progress
        self._now = clock.seconds if clock is not None else time.monotonic
        self._progress_out = progress_out
        self.state = _WAIT
        self.tagged = False
        self._leaving: str | None = None
        self.inbox: deque[str] = deque()
        self.eof = False
        self.quitting = False
        self.server_said = ""
        #: The server ended the session on purpose: its last line was a notice (``02``) other than its shutdown
        #: notice (an admin's disconnect, a lock, a deleted account, a ban, a flood cut-off), or logging in
        #: again was refused. Reconnecting would only be refused again (tester: 366 attempts once locked).
        self.ended_by_server = False
        self._last_line: tuple[str, str] = ("", "")
        self.offers: deque[Upload] = deque()
        self.uploads: dict[str, Upload] = {}
        self.files: dict[str, Download] = {}
        self.sender: Sender | None = None
        self.done: defer.Deferred[None] = defer.Deferred()
        self._reading_paused = False
        #: A line sent at a prompt awaits its answer (no new prompt yet).
        self._answering = False
        #: The server said "Logged in as NAME." (or "Registered and logged in as NAME.").
        self.logged_in = False
        #: The error that stopped a script before it was logged in (a wrong password, a name taken, ...).
        self.refused = ""
        #: The user pressed Ctrl-C.
        self.interrupted = False

    def sendLine(self, line: bytes) -> None:
        """Lines go out with CRLF (the server accepts either)."""
        self.transport.write(line + LINE_END)

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.sendLine(f"{CLIENT_HELLO} chat {VERSION}".encode(ENCODING))
        self.sender = Sender(self.transport, self.run, self._upload_sent, self._upload_broken)

    def connectionLost(self, reason: Any = None) -> None:
        for download in self.files.values():
            download.abort()
            self.console.show(f"Transfer of {download.name} from {download.sender} broken off; nothing was saved.")
        self.files.clear()
        for upload in [*self.offers, *self.uploads.values()]:
            self.run(upload.close)
            if upload.progress is not None:
                upload.progress.close()
        if self.sender is not None:
            self.sender.stopProducing()
        if not self.done.called:
            if self.refused:
                self.done.errback(LoginRefused(self.refused))
            elif self.quitting:
                self.done.callback(None)
            else:
                code, text = self._last_line
                if code == ERROR and "shutting down" not in text:
                    self.ended_by_server = True
                why = self.server_said or "the connection to the server was lost"
                if reason is not None and reason.check(CertificateRefused):
                    why = reason.getErrorMessage()
                elif reason is not None and _tls_error(reason):
                    why = _tls_error(reason)
                elif not self.server_said and reason is not None and not reason.check(ConnectionDone):
                    why += f" ({reason.getErrorMessage()})"
                self.done.errback(ConnectionGone(why))

    # -- from the server ----------------------------------------------------------

    def lineReceived(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode(ENCODING, "replace")
        code, text = split_tagged(line)
        if not code and not self.tagged:
            # Before the server saw /client: plain lines, and a prompt without a line end.
            before, found, after = line.partition(f"> {LISTEN} ")
            if not found:
                if not self._resuming:
                    self._show(line)
                return
            code, text = LISTEN, after
        self.tagged = True
        self._last_line = (code, text)
        if code in (SPEAK, CREDENTIALS, CHAT):
            self._answering = False
        handler = self._handlers.get(code)
        if handler is not None:
            handler(self, text)

    def _show(self, text: str) -> None:
        self.console.show(printable(text))

    def _listen(self, text: str) -> None:
        if text.startswith(TAGGED_ON):
            return  # the answer to our own /client hello: protocol, not news for the user
        if text.startswith(("Logged in as ", "Registered and logged in as ")):
            self.logged_in = True
            self.ended_by_server = False
            self.words.me = text.rpartition(" as ")[2].removesuffix(".")
            if self._resuming == "password" and self.account is not None:
                # Logged in again with the kept password (the user typed none on this connection): keep it for
                # the next reconnect too.
                self.account = (self.words.me, self.account[1])
                self._resuming = "join"
            else:
                self.account = (self.words.me, self._last_secret)
        elif text == "Password changed." and self.account is not None:
            self.account = (self.account[0], self._last_secret)
        elif text == "Logged out.":
            self.account = self.room = None
        elif text.startswith("You left "):
            self.room = self._seen_up_to = None
        self.words.heard(text)
        if not self._resuming:
            self._show(text)

    # -- logging in again after a lost connection ----------------------------------------

    def resume(self, account: tuple[str, str], room: str | None,
               seen: dict[str, tuple[datetime, str]] | None = None) -> None:
        """
        Before connecting: log in as ``account`` (name, password) and join ``room`` without showing the
        menu, then say so. What the user types meanwhile waits for the room (or the menu's prompt).
        ``seen`` is the lost connection's :attr:`seen`: the history the server replays on rejoining is
        shown from the first line after the last one shown in ``room`` before.
        """
        self.account, self.room = account, room
        self._resuming = "login"
        if seen is not None:
            self.seen = seen
            self._seen_up_to = seen.get(room) if room else None

    def _resumed(self) -> None:
        assert self.account is not None
        where = f" and back in {self.room}" if self.room else ""
        self._resuming = ""
        self.console.show(f"Reconnected: logged in again as {self.account[0]}{where}.")

    def _resume_prompt(self, secret: bool) -> bool:
        """Answer a prompt while logging in again; True if it was answered (not for the user)."""
        if not self._resuming or self.account is None:
            return False
        if self._resuming == "login" and not secret:
            self._resuming = "password"
            self.sendLine(f"login {self.account[0]}".encode(ENCODING))
        elif self._resuming == "password" and secret:
            self.sendLine(self.account[1].encode(ENCODING))
        elif self._resuming == "join" and not secret and self.room:
            self._resuming = "entering"
            self.sendLine(f"join {self.room}".encode(ENCODING))
        else:
            self._resumed()  # back at the menu (no room to rejoin): the user takes over
            return False
        self.state = _WAIT
        return True

    def _show_line(self, text: str) -> None:
        """A room line: its ``[HH:MM:SS]`` (UTC) is shown in local time, with a bell if it names us."""
        now = self._utc_now()
        self._remember(stamp_moment(text, now), text)
        shown = printable(local_time(text, now, self.zone))
        if mentions(shown, self.words.me):
            self.console.alert(shown)
        else:
            self.console.show(shown)

    def _replay(self, text: str) -> None:
        """
        A line of room history replayed on entering (``04``): dimmed, in local time, never an alert (old
        news); after a reconnect, the lines up to and including the last one shown before are dropped.
        """
        now = self._utc_now()
        found = stamp_moment(text, now)
        if found is not None and self._seen_up_to is not None:
            moment, said = found[0], text[found[1]:]
            last_moment, last_said = self._seen_up_to
            if moment > last_moment:
                self._seen_up_to = None  # newer than anything seen: this line and the rest are news
            else:
                if moment == last_moment and said == last_said:
                    self._seen_up_to = None  # the last line seen: the next ones are news
                return
        self._remember(found, text)
        if self._held_frame is not None:
            held, self._held_frame = self._held_frame, None
            self._show_line(held)
        self.console.show_dimmed(printable(local_time(text, now, self.zone)))

    def _history(self, text: str) -> None:
        """A line of ``/history`` (``05``): shown like a live room line, in local time, never an alert."""
        self.console.show(printable(local_time(text, self._utc_now(), self.zone)))

    def _remember(self, found: tuple[datetime, int] | None, text: str) -> None:
        """Keep a shown room line (its :func:`stamp_moment` and text) as :attr:`seen` in our room if newest."""
        if found is None or self.room is None:
            return
        moment, start = found
        last = self.seen.get(self.room)
        if last is None or moment >= last[0]:
            self.seen[self.room] = (moment, text[start:])

    def _private(self, text: str) -> None:
        """A private message (``03``): in local time, with a bell."""
        self.console.alert(printable(local_time(text, self._utc_now(), self.zone)))

    def _error(self, text: str) -> None:
        if self._resuming and text.startswith("Error:"):
            self._resuming = ""
            self.ended_by_server = True  # refused now, refused on every try: no more reconnecting
            text = f"Could not log in again and rejoin: {text.removeprefix('Error:').strip()}"
        self.console.show(printable(text))
        if "shutting down" in text or "another connection" in text:
            self.server_said = text
        if self._answering and not self.logged_in and not self.console.interactive and text.startswith("Error:"):
            # A script was refused before it logged in (a wrong password, a name that is taken): its next
            # lines would be typed into the wrong prompts, passwords into the menu. Stop here.
            self.refused = text.removeprefix("Error:").strip()
            self.inbox.clear()
            self.state = _WAIT
            if self.transport is not None:
                self.transport.loseConnection()

    def interrupt(self) -> None:
        """Ctrl-C: say goodbye on a line of its own and close the connection (exit status 130)."""
        if self.done.called or self.interrupted:
            return
        self.interrupted = self.quitting = True
        self.inbox.clear()
        self.state = _WAIT
        self.console.end("Interrupted. Bye.")
        if self.transport is not None:
            self.transport.loseConnection()

    def _speak(self, text: str) -> None:
        if self._resume_prompt(secret=False):
            return
        self.state = _LINE
        self.console.set_prompt(printable(text) + " ")
        self._feed()

    def _credentials(self, text: str) -> None:
        if self._resume_prompt(secret=True):
            return
        self.state = _SECRET
        self.console.set_prompt(printable(text) + " ", secret=True)
        self._feed()

    def _chat(self, text: str) -> None:
        if self._leaving == "ping" and text == "pong":
            self._leaving = "exit"
            self.state = _WAIT
            self.sendLine(b"/exit")
            return
        self.words.heard(text)
        if self._quiet_who and text.startswith("In ") and not text.startswith("In it now"):
            self._quiet_who -= 1
            return
        if text.startswith("Entered room "):
            self.room = text.split(" ", 3)[2]
        if text.startswith("--- "):  # a frame of a block of history (docs/PROTOCOL.md, "Room history")
            if self._seen_up_to is not None and not text.startswith("--- end"):
                self._held_frame = text
                return
            if self._held_frame is not None:  # the end of a replayed block none of whose lines was news
                self._held_frame = None
                return
        self._show_line(text)
        if self._resuming == "entering" and text.startswith("Entered room "):
            self._resumed()
        if self.ask_who and text.startswith("Entered room "):
            self._quiet_who += 1
            self.sendLine(b"/who")
        if self.state != _CHAT and self._leaving != "exit":
            self.state = _CHAT
            self.console.set_prompt(CHAT_PROMPT)
            self._feed()

    # -- from the user ------------------------------------------------------------

    def user_line(self, line: str) -> None:
        """A line the user typed (or the script gave)."""
        self.inbox.append(line)
        self._feed()

    def user_eof(self) -> None:
        """No more input: finish what is being sent, then close."""
        self.eof = True
        self._feed()

    def _feed(self) -> None:
        while self.inbox and self.state != _WAIT:
            line = self.inbox.popleft()
            if self.state != _SECRET and line.startswith(DATA_COMMAND + " "):
                # The server reads the bytes after a /data line as file data, not as lines.
                self.console.show(f"{DATA_COMMAND} is how the client sends files: use {SEND_COMMAND} PATH "
                                  f"(to say it in a room, type /{line}).")
                continue
            if self.state == _CHAT:
                self._chat_line(line)
                continue
            if self.state == _LINE and line.strip().lower() in ("9", "quit", "exit"):
                self.quitting = True
            if self.state == _SECRET:
                self._last_secret = line  # (a reconnect logs in with it: self.account)
            self._answering = True
            self.state = _WAIT
            self.console.set_prompt("")  # answered: no prompt until the server asks again
            self.sendLine(line.encode(ENCODING))
        if self.eof and not self.inbox and not self.offers and not self.uploads and not self.files:
            # Leave politely: a /ping round trip first, so everything said before
            # the end of the input has come back and been shown, then /exit and quit.
            if self.state == _CHAT and self._leaving is None:
                self._leaving = "ping"
                self.sendLine(b"/ping")
            elif self.state == _LINE:
                self.state = _WAIT
                self.quitting = True
                self.console.set_prompt("")  # answered (by quit): not drawn again under Bye.
                self.sendLine(b"quit")
            elif self.state == _SECRET and self.transport is not None:
                self.quitting = True
                self.console.set_prompt("")
                self.transport.loseConnection()

    def _chat_line(self, line: str) -> None:
        word, _, argument = line.strip().partition(" ")
        if word == SEND_COMMAND:
            self.send_file(os.path.expanduser(argument.strip()))
        elif line:
            self.sendLine(line.encode(ENCODING))

    def _progress_bar(self, label: str, total: int) -> Progress:
        return Progress(label, total, enabled=self.progress, now=self._now, write=self._progress_out)

    # -- uploads --------------------------------------------------------------------

    def send_file(self, path: str) -> None:
        """``/send PATH``: open the file (off the reactor), then offer it to the room."""
        if not path:
            self.console.show("Usage: /send PATH")
            return
        upload = Upload(path)
        self.offers.append(upload)

        def opened(_: Any) -> None:
            self.sendLine(f"{SEND_COMMAND} {upload.size} {upload.name}".encode(ENCODING))

        def failed(failure: Failure) -> None:
            self.offers.remove(upload)
            self.console.show(f"Cannot send {path}: {failure.getErrorMessage()}")
            self._feed()

        self.run(upload.open).addCallbacks(opened, failed)

    def _upload_ready(self, text: str) -> None:
        file_id, _, _ = text.partition(" ")
        if not self.offers:
            return
        upload = self.offers.popleft()
        upload.id = file_id
        self.uploads[file_id] = upload
        upload.progress = self._progress_bar(f"sending {upload.name}", upload.size)
        self.console.show(f"Sending {upload.name} ({human_size(upload.size)})...")
        assert self.sender is not None
        self.sender.add(upload)

    def _upload_failed(self, text: str) -> None:
        file_id, _, reason = text.partition(" ")
        if file_id == "-":
            upload = self.offers.popleft() if self.offers else None
        else:
            upload = self.uploads.pop(file_id, None)
        if upload is not None:
            if self.sender is not None:
                self.sender.cancel(upload)
            self.run(upload.close)
            if upload.progress is not None:
                upload.progress.close()
            self.console.show(f"Could not send {upload.name}: {printable(reason)}")
        self._feed()

    def _upload_done(self, text: str) -> None:
        file_id, _, rest = text.partition(" ")
        upload = self.uploads.pop(file_id, None)
        if upload is None:
            return
        digest, _, rest = rest.partition(" ")
        count, _, elsewhere = rest.partition(" ")  # (ELSEWHERE: the room's members on other nodes, if any)
        there = f" on this node, offered to the room's {elsewhere} member(s) on other nodes" \
            if elsewhere.strip("0") else ""
        self.console.show(f"Sent {upload.name} ({human_size(upload.size)}, sha256 {digest[:16]}...) "
                          f"to {count or '0'} recipient(s){there}.")
        self._feed()

    def _upload_sent(self, upload: Upload) -> None:
        if upload.progress is not None:
            upload.progress.close()

    def _upload_broken(self, upload: Upload, why: str) -> None:
        if upload.id is not None:
            self.uploads.pop(upload.id, None)
            self.sendLine(f"{CANCEL_COMMAND} {upload.id}".encode(ENCODING))
        if upload.progress is not None:
            upload.progress.close()
        self.console.show(f"Could not send {upload.name}: {why}")
        self._feed()

    # -- downloads ----------------------------------------------------------------------

    def _file_begin(self, text: str) -> None:
        parts = text.split(" ", 4)
        size = parse_count(parts[1], FILE_SIZE_MAX) if len(parts) == 5 else None
        if size is None:
            return
        file_id, _, digest, sender, name = parts
        if file_id in self.files:
            return
        download = Download(self.run, self.downloads, file_id, size, digest, printable(sender), name,
                            self._progress_bar(f"receiving {name}", size), self._download_failed)
        download.on_written = self._written
        if download.failed is None:  # (it may fail at once: the downloads folder is unusable)
            self.files[file_id] = download
            self.console.show(f"Receiving {download.name} ({human_size(size)}) from {download.sender}...")

    def _file_chunk(self, text: str) -> None:
        file_id, _, data = text.partition(" ")
        download = self.files.get(file_id)
        if download is None:
            return
        try:
            chunk = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            self._file_abort(f"{file_id} the data was damaged in transit")
            self._tell_failed(file_id, "the data was damaged in transit")
            return
        download.write(chunk)
        if not self._reading_paused and sum(d.pending for d in self.files.values()) > MAX_PENDING_WRITES:
            self._reading_paused = True
            self.transport.pauseProducing()

    def _download_failed(self, download: Download, why: str) -> None:
        """A download could not be written: drop the rest of it; chat and other downloads go on."""
        if self.files.get(download.id) is download:
            del self.files[download.id]
        self.console.show(f"Could not save {download.name} from {download.sender}: {why}; "
                          "the rest of it is skipped and nothing was saved.")
        self._tell_failed(download.id, why)
        self._written()
        self._feed()

    def _written(self) -> None:
        if self._reading_paused and sum(d.pending for d in self.files.values()) <= MAX_PENDING_WRITES // 4:
            self._reading_paused = False
            self.transport.resumeProducing()

    def _file_end(self, text: str) -> None:
        file_id = text.strip()
        download = self.files.get(file_id)
        if download is None:
            return

        def saved(path: str) -> None:
            self.console.show(f"Saved {download.name} from {download.sender} to {path} (SHA-256 verified).")

        def failed(failure: Failure) -> None:
            self.console.show(f"Discarded {download.name} from {download.sender}: {failure.getErrorMessage()}")
            self._tell_failed(file_id, failure_reason(failure))

        def forget(_: Any) -> None:
            self.files.pop(file_id, None)
            self._written()
            self._feed()

        download.finish().addCallbacks(saved, failed).addBoth(forget)

    def _tell_failed(self, file_id: str, why: str) -> None:
        """Tell the server (which tells the sender) that file ``file_id`` could not be saved."""
        if self.transport is not None and not self.transport.disconnecting:
            self.sendLine(f"{FAILED_COMMAND} {file_id} {why[:FAILED_REASON_MAX]}".encode(ENCODING))

    def _delivery_failed(self, text: str) -> None:
        """``27 ID TEXT``: someone did not get a file this client sent."""
        _, _, notice = text.partition(" ")
        self.console.show(printable(notice))

    def _file_abort(self, text: str) -> None:
        file_id, _, reason = text.partition(" ")
        download = self.files.pop(file_id, None)
        if download is None:
            return
        download.abort()
        self.console.show(f"Transfer of {download.name} from {download.sender} aborted ({printable(reason)}); "
                          "nothing was saved.")
        self._written()
        self._feed()

    _handlers: dict[str, Callable[[ChatClient, str], None]] = {
        LISTEN: _listen,
        ERROR: _error,
        PRIVATE: _private,
        REPLAY: _replay,
        HISTORY: _history,
        SPEAK: _speak,
        CREDENTIALS: _credentials,
        CHAT: _chat,
        UPLOAD_READY: _upload_ready,
        UPLOAD_FAILED: _upload_failed,
        UPLOAD_DONE: _upload_done,
        FILE_BEGIN: _file_begin,
        FILE_CHUNK: _file_chunk,
        FILE_END: _file_end,
        FILE_ABORT: _file_abort,
        DELIVERY_FAILED: _delivery_failed,
    }


class ConnectionGone(Exception):
    """The server closed the connection, or it broke."""


class LoginRefused(Exception):
    """A scripted session was refused before it logged in (wrong password, a name that is taken, ...)."""


# -- the command line -----------------------------------------------------------------------


def _port(text: str) -> int:
    """``--port``: 1 to 65535 in ASCII digits (``int()`` would take other scripts' digits)."""
    port = parse_count(text, 65535)
    if not port:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chat", description="Terminal client for chatd.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server host (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"server port (default {DEFAULT_PORT})")
    parser.add_argument("--downloads", default=default_downloads(),
                        help="folder for files others send (default ~/Downloads/chat)")
    parser.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument("--cafile", help="with --tls: trust this PEM certificate (else the system's CAs)")
    parser.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                        help="progress bars on stderr (auto: when stderr is a terminal)")
    parser.add_argument("--plain", action="store_true",
                        help="on a terminal too, the plain console instead of the line editor")
    return parser.parse_args(argv)


def endpoint_for(reactor: Any, options: argparse.Namespace) -> Any:
    """A client endpoint for ``--host/--port``, wrapped in TLS for ``--tls``."""
    from twisted.internet import endpoints

    endpoint = endpoints.HostnameEndpoint(reactor, options.host, options.port, timeout=10)
    if not options.tls:
        return endpoint
    from twisted.internet import ssl

    trust: Any = None
    if options.cafile:
        with open(options.cafile, "rb") as handle:
            trust = ssl.Certificate.loadPEM(handle.read())
    return endpoints.wrapClientTLS(HostCheckedTLS(options.host, trust), endpoint)


#: What ``chat: ...`` says when TLS refuses the server (docs/OPERATIONS.md lists them exactly): a certificate
#: no trusted CA (nor ``--cafile``) signed; one that does not name ``--host`` (DETAIL: :data:`OTHER_HOSTS` or
#: service_identity's reason, e.g. no subjectAltName at all); any other handshake failure (OpenSSL's reason).
UNTRUSTED = "the server's certificate is not trusted (certificate verify failed); use --cafile for a self-signed one"
NOT_VALID_FOR = "the server's certificate is not valid for {host}: {detail}"
OTHER_HOSTS = "it names other hosts"
HANDSHAKE_FAILED = "the TLS handshake failed: {reason}"


def _tls_error(reason: Failure) -> str:
    """One line for a failed TLS handshake (pyOpenSSL's ``SSL.Error``), or "" for other failures."""
    from OpenSSL import SSL

    error = reason.value
    if not isinstance(error, SSL.Error):
        return ""
    texts = [str(item[-1]) for item in (error.args[0] if error.args else [])
             if isinstance(item, tuple) and item]
    text = "; ".join(texts) or reason.getErrorMessage()
    if "certificate verify failed" in text:
        return UNTRUSTED
    return HANDSHAKE_FAILED.format(reason=text)


class CertificateRefused(Exception):
    """The server's certificate does not name the host we connected to (RFC 6125)."""


@implementer(IOpenSSLClientConnectionCreator)
class HostCheckedTLS:
    """
    Twisted's ``optionsForClientTLS`` (trust, SNI), with a host check that
    also refuses a certificate with no subjectAltName at all: Twisted's own
    check lets that one through after logging a ``CertificateError``
    traceback, so a certificate for any name would be accepted.

    :param host: ``--host``: a DNS name or an IP address, matched against the
        certificate's subjectAltName (RFC 6125; the CN is not used).
    :param trust: the trusted root(s), or None for the system's CAs.
    """

    def __init__(self, host: str, trust: Any) -> None:
        from twisted.internet import ssl
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from service_identity.hazmat import DNS_ID, IPAddress_ID

        self.host = host
        self._creator = ssl.optionsForClientTLS(host, trustRoot=trust)
        self._identity = IPAddress_ID(host) if isIPAddress(host) or isIPv6Address(host) else DNS_ID(host)

    def clientConnectionForTLS(self, tls_protocol: Any) -> Any:
        from OpenSSL import SSL

        connection = self._creator.clientConnectionForTLS(tls_protocol)

        def verify(_connection: Any, certificate: Any, _error: int, depth: int, ok: int) -> bool:
            if not ok or depth != 0:
                return bool(ok)  # the chain: OpenSSL's own verdict against the trust roots
            from service_identity.exceptions import CertificateError, VerificationError
            from service_identity.hazmat import verify_service_identity
            from service_identity.pyopenssl import extract_patterns

            try:
                verify_service_identity(extract_patterns(certificate), [self._identity], [])
            except (CertificateError, VerificationError) as error:
                detail = str(error) if isinstance(error, CertificateError) else OTHER_HOSTS
                tls_protocol.failVerification(
                    Failure(CertificateRefused(NOT_VALID_FOR.format(host=self.host, detail=detail)))
                )
                return False
            return True

        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, verify)
        return connection


class _Terminal:
    """cbreak mode without echo for the session, restored however it ends."""

    def __init__(self, fd: int) -> None:
        import termios
        import tty

        self.fd = fd
        self._termios = termios
        self.saved: list[Any] | None = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)  # TCSAFLUSH would drop what was typed already
        mode = termios.tcgetattr(fd)
        mode[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, mode)

    def restore(self) -> None:
        if self.saved is not None:
            self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self.saved)
            self.saved = None


#: Seconds before each attempt to connect again after a lost connection (the last one repeats), and how
#: many attempts before giving up (about 5 minutes in all).
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 30)
RECONNECT_ATTEMPTS = 14


class _Late:
    """
    The screen's callbacks into the client, which is made after its screen (and again on each reconnect).
    While :attr:`waiting` (to reconnect), typed lines are kept for the next connection, and Ctrl-C or Ctrl-D
    stop the waiting (:attr:`stopped` says which).
    """

    def __init__(self) -> None:
        self.client: ChatClient | None = None
        self.waiting: defer.Deferred[Any] | None = None
        self.pending: list[str] = []
        self.stopped = ""

    def line(self, line: str) -> None:
        if self.waiting is not None:
            self.pending.append(line)
        elif self.client is not None:
            self.client.user_line(line)

    def eof(self) -> None:
        if self.waiting is not None:
            self._stop("eof")
        elif self.client is not None:
            self.client.user_eof()

    def interrupt(self) -> None:
        if self.waiting is not None:
            self._stop("interrupt")
        elif self.client is not None:
            self.client.interrupt()

    def _stop(self, how: str) -> None:
        self.stopped = how
        if self.waiting is not None:
            self.waiting.cancel()


def uses_editor(options: argparse.Namespace) -> bool:
    """The line editor runs when stdin and stdout are a terminal, unless ``--plain``."""
    return not options.plain and os.isatty(0) and os.isatty(1)


async def _connect(reactor: Any, options: argparse.Namespace, client: ChatClient) -> None:
    await endpoint_for(reactor, options).connect(protocol.Factory.forProtocol(lambda: client))


async def _reconnect(reactor: Any, options: argparse.Namespace, screen: Screen, late: _Late, lost: ChatClient,
                     make_client: Callable[[], ChatClient], why: str) -> ChatClient | None:
    """
    After ``lost`` lost its connection (``why``): connect again with backoff (:data:`RECONNECT_DELAYS`), log in
    again with its account and rejoin its room. Returns the new client, or None when the user stopped it
    (``late.stopped``) or :data:`RECONNECT_ATTEMPTS` failed.
    """
    from twisted.internet import task

    assert lost.account is not None
    for attempt in range(RECONNECT_ATTEMPTS):
        delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
        screen.show(f"Connection lost ({why}); reconnecting in {delay} s (Ctrl-C to stop)...")
        client = make_client()
        client.resume(lost.account, lost.room, lost.seen)
        try:
            late.waiting = task.deferLater(reactor, delay, lambda: None)
            await late.waiting
            late.waiting = defer.ensureDeferred(_connect(reactor, options, client))
            await late.waiting
        except Exception as error:
            if late.stopped:
                return None
            why = str(error) or type(error).__name__
            continue
        finally:
            late.waiting = None
        client.inbox.extend(late.pending)
        late.pending.clear()
        late.client = client
        return client
    screen.show(f"Gave up reconnecting after {RECONNECT_ATTEMPTS} attempts.")
    return None


async def run(reactor: Any, options: argparse.Namespace) -> None:
    """
    Connect and run the session until it ends. Raises SystemExit with
    EXIT_CONNECTION (cannot connect, connection lost, certificate refused),
    EXIT_REFUSED (a scripted password was refused) or EXIT_INTERRUPTED (Ctrl-C).
    On a terminal (:func:`uses_editor`) the screen is :class:`clients.editor.LineEditor`
    (the reactor is then Twisted's asyncio reactor: :func:`main`), and a lost connection
    of a logged-in session is made again (:func:`_reconnect`); else the screen is :class:`Console`.
    """
    from twisted.internet import stdio
    from twisted.internet.threads import deferToThreadPool
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(1, 1, name="chat-files")
    pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", pool.stop)

    def run_in_pool(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        return deferToThreadPool(reactor, pool, function, *args)

    progress = {"auto": None, "always": True, "never": False}[options.progress]
    downloads = os.path.abspath(options.downloads)
    late = _Late()
    terminal: _Terminal | None = None
    screen: Screen
    start: Callable[[], defer.Deferred[None]]
    make_client: Callable[[], ChatClient]
    reconnect = uses_editor(options)
    if reconnect:
        from clients.editor import LineEditor

        words = Vocabulary()
        editor = LineEditor(late.line, late.eof, late.interrupt, words)
        screen, start = editor, editor.start

        def make_client() -> ChatClient:
            return ChatClient(editor, downloads, run_in_pool, progress, clock=reactor, words=words, ask_who=True,
                              progress_out=editor.progress)
    else:
        interactive = os.isatty(0) and os.isatty(1)
        terminal = _Terminal(0) if interactive else None
        if terminal is not None:
            reactor.addSystemEventTrigger("before", "shutdown", terminal.restore)
        console = Console(late.line, late.eof, interactive)

        def start() -> defer.Deferred[None]:
            stdio.StandardIO(console, reactor=reactor)
            return defer.succeed(None)

        def make_client() -> ChatClient:
            return ChatClient(console, downloads, run_in_pool, progress, clock=reactor)

        screen = console
    client = late.client = make_client()
    try:
        try:
            await _connect(reactor, options, client)
        except Exception as error:
            message = str(error) or type(error).__name__
            sys.stderr.write(f"chat: cannot connect to {options.host}:{options.port}: {message}\n")
            raise SystemExit(EXIT_CONNECTION)
        finished = start()
        signal.signal(signal.SIGINT, lambda signum, frame: reactor.callFromThread(late.interrupt))
        while True:
            status, why = EXIT_OK, ""
            try:
                await client.done
            except ConnectionGone as gone:
                status, why = EXIT_CONNECTION, str(gone)
                if reconnect and client.account is not None and not client.ended_by_server:
                    again = await _reconnect(reactor, options, screen, late, client, make_client, why)
                    if again is not None:
                        client = again
                        continue
                    if late.stopped == "interrupt":
                        status, why = EXIT_INTERRUPTED, ""
                        screen.end("Interrupted. Bye.")
            except LoginRefused as refused:
                status, why = EXIT_REFUSED, str(refused)
            else:
                if client.interrupted:
                    status = EXIT_INTERRUPTED
            break
        screen.end()
        await finished  # the line editor has stopped and restored the terminal
        if why:
            sys.stderr.write(f"chat: {why}\n")
        if status != EXIT_OK:
            raise SystemExit(status)
    finally:
        if terminal is not None:
            terminal.restore()


def main(argv: list[str] | None = None) -> None:
    """The ``chat`` console script (on a terminal, on Twisted's asyncio reactor for the line editor)."""
    options = parse_args(argv)
    if uses_editor(options):
        import asyncio

        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import task

    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
