"""Unit tests of the terminal client: its protocol and console over StringTransport, file work run inline."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import datetime, timedelta, timezone, tzinfo

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from clients.cli import ChatClient, ConnectionGone, Console, parse_args
from clients.files import Download, Progress, claim_name
from helpers import Held


def run_now(function, *args):
    """A synchronous stand-in for the client's file thread."""
    return defer.maybeDeferred(function, *args)


class Session:
    """A client on a StringTransport, its console on another."""

    def __init__(self, downloads: str, interactive: bool = False, run=run_now, clock=None,
                 zone: tzinfo | None = timezone.utc, width: int = 80) -> None:
        self.console = Console(lambda line: self.client.user_line(line), lambda: self.client.user_eof(), interactive,
                               width=lambda: width)
        self.screen = StringTransport()
        self.console.makeConnection(self.screen)
        #: Progress bar frames (drawn only with a clock).
        self.bars: list[str] = []
        self.client = ChatClient(self.console, downloads, run, progress=clock is not None, clock=clock,
                                 progress_out=self.bars.append, zone=zone)
        self.wire = StringTransport()
        self.client.makeConnection(self.wire)

    def server(self, *lines: str) -> None:
        self.client.dataReceived("".join(line + "\r\n" for line in lines).encode())

    def sent(self) -> str:
        data = self.wire.value().decode("utf-8", "replace")
        self.wire.clear()
        return data

    def shown(self) -> str:
        data = self.screen.value().decode("utf-8", "replace")
        self.screen.clear()
        return data

    def type(self, text: str) -> None:
        self.console.dataReceived(text.encode())


@pytest.fixture
def session(tmp_path):
    return Session(str(tmp_path / "downloads"))


def test_hello_first_and_one_line_per_prompt(session):
    """The client announces itself, then answers each 11/01 prompt with exactly one line."""
    assert session.sent() == "/client chat 1.0\r\n"
    session.type("register ann\nsecret1\nsecret1\n")
    assert session.sent() == ""  # nothing asked yet
    session.server("00 Tagged mode on for chat 1.0.", "11 menu>")
    assert session.sent() == "register ann\r\n"
    session.server("01 Choose a password:")
    assert session.sent() == "secret1\r\n"
    session.server("01 Repeat the password:")
    assert session.sent() == "secret1\r\n"
    shown = session.shown()
    assert "menu>" in shown and "secret1" not in shown
    assert "Tagged mode on" not in shown  # the answer to the client's own hello is not shown


def test_plain_banner_before_tagged_mode_is_shown(session):
    """Lines that arrive before the server saw /client are shown; the plain prompt is not."""
    session.client.dataReceived(b"Welcome to chatd 1.0.\r\nmenu> 00 Tagged mode on for chat 1.0.\r\n11 menu>\r\n")
    shown = session.shown()
    assert shown == "Welcome to chatd 1.0.\nmenu>\n"  # not the plain prompt, nor the answer to /client


def test_chat_mode_sends_as_typed_and_shows_incoming(session):
    session.sent()
    session.server("111 Entered room public (1 here).")
    session.type("hello\nworld\n")
    assert session.sent() == "hello\r\nworld\r\n"
    session.server("111 [12:00:00] bob: hi", "03 [12:00:01] *bob* psst", "02 Error: nope", "99 ignored")
    shown = session.shown()
    assert "bob: hi" in shown and "*bob* psst" in shown and "Error: nope" in shown and "ignored" not in shown


def test_incoming_escape_sequences_are_not_shown(session):
    session.server("111 \x1b[2Jevil\x07")
    shown = session.shown()
    assert "evil" in shown and "\x1b" not in shown and "\x07" not in shown


def test_interactive_typing_survives_incoming_lines(tmp_path):
    """In a terminal the typed line is redrawn below each incoming line, and secrets are never echoed."""
    s = Session(str(tmp_path), interactive=True)
    s.server("111 Entered room public (1 here).")
    s.shown()
    s.type("hel")
    assert s.shown() == "hel"
    s.server("111 [12:00:00] bob: hi")
    assert s.shown() == "\r\x1b[J[12:00:00] bob: hi\r\n\r\x1b[J> hel"
    s.type("lo\x7f\x7fp\x1b[Ds\n")
    assert s.sent().endswith("helps\r\n")
    s.server("01 Password:")
    s.shown()
    s.type("hunter22\n")
    assert "hunter22" not in s.shown()
    assert s.sent() == "hunter22\r\n"


def test_eof_leaves_politely(session):
    """At the end of piped input the client pings, leaves the room, quits, and ends without error."""
    session.server("111 Entered room public (1 here).")
    session.sent()
    session.console.readConnectionLost()
    assert session.sent() == "/ping\r\n"
    session.server("111 [12:00:00] bob: late line", "111 pong")
    assert session.sent() == "/exit\r\n"
    session.server("00 You left public.", "11 menu>")
    assert session.sent() == "quit\r\n"
    session.client.connectionLost(None)
    assert session.client.done.called
    assert "late line" in session.shown()


def test_server_going_away_is_an_error(session):
    session.server("02 The server is shutting down. Bye.")
    session.client.connectionLost(None)
    failure = []
    session.client.done.addErrback(failure.append)
    assert failure and failure[0].check(ConnectionGone)
    assert "shutting down" in str(failure[0].value)


def _offer(session, file_id, data, name="notes.txt", sender="bob"):
    digest = hashlib.sha256(data).hexdigest()
    session.server(f"20 {file_id} {len(data)} {digest} {sender} {name}")
    for start in range(0, len(data), 1000):
        session.server(f"21 {file_id} " + base64.b64encode(data[start:start + 1000]).decode())


def test_download_saved_verified_never_overwrites(session, tmp_path):
    data = os.urandom(5000)
    _offer(session, "f1", data)
    downloads = tmp_path / "downloads"
    assert os.listdir(downloads) == ["notes.txt.f1.part"]
    session.server("22 f1")
    assert (downloads / "notes.txt").read_bytes() == data
    _offer(session, "f2", b"second")
    session.server("22 f2")
    assert (downloads / "notes.txt").read_bytes() == data
    assert (downloads / "notes (1).txt").read_bytes() == b"second"
    shown = session.shown()
    assert "Saved notes.txt from bob to " in shown and "notes (1).txt" in shown


def test_download_corrupted_or_aborted_leaves_nothing(session, tmp_path):
    data = b"x" * 3000
    digest = hashlib.sha256(b"something else").hexdigest()
    session.server(f"20 f1 3000 {digest} bob a.bin", "21 f1 " + base64.b64encode(data).decode(), "22 f1")
    _offer(session, "f2", data, name="b.bin")
    session.server("23 f2 the sender disconnected")
    assert os.listdir(tmp_path / "downloads") == []
    shown = session.shown()
    assert "Discarded a.bin from bob: SHA-256 mismatch" in shown
    assert "aborted (the sender disconnected)" in shown


def test_download_hostile_name(session, tmp_path):
    _offer(session, "f1", b"data", name="../../.bashrc")
    _offer(session, "f2", b"data", name="CON")
    session.server("22 f1", "22 f2")
    assert sorted(os.listdir(tmp_path / "downloads")) == ["_CON", "bashrc"]


def test_upload_frames_and_hash(session, tmp_path):
    """``/send PATH`` offers size and name; once accepted, raw frames then ``/done`` with the SHA-256."""
    path = tmp_path / "report.pdf"
    data = os.urandom(150_000)
    path.write_bytes(data)
    session.server("111 Entered room public (1 here).")
    session.sent()
    session.type(f"/send {path}\n")
    assert session.sent() == "/send 150000 report.pdf\r\n"
    session.server("24 u7 150000 report.pdf")
    raw = session.wire.value()
    session.wire.clear()
    received = b""
    while raw.startswith(b"/data "):
        header, _, rest = raw.partition(b"\r\n")
        _, file_id, length = header.split(b" ")
        assert file_id == b"u7" and int(length) <= 65536
        received += rest[: int(length)]
        raw = rest[int(length):]
    assert received == data
    assert raw == f"/done u7 {hashlib.sha256(data).hexdigest()}\r\n".encode()
    # (3: the room's members on other nodes of the server, whose nodes offer it to them; absent in one process)
    session.server(f"26 u7 {hashlib.sha256(data).hexdigest()} 2 3")
    assert "to 2 recipient(s) on this node, offered to the room's 3 member(s) on other nodes." in session.shown()


def test_upload_refused_and_missing_file(session, tmp_path):
    session.server("111 Entered room public (1 here).")
    session.sent()
    session.type(f"/send {tmp_path / 'missing.txt'}\n")
    assert "Cannot send" in session.shown() and session.sent() == ""
    (tmp_path / "big.iso").write_bytes(b"0" * 10)
    session.type(f"/send {tmp_path / 'big.iso'}\n")
    session.server("25 - the file is larger than the limit")
    assert "Could not send big.iso: the file is larger than the limit" in session.shown()
    assert not session.client.offers


def test_claim_name_and_progress(tmp_path):
    partial = tmp_path / "x.part"
    partial.write_bytes(b"1")
    (tmp_path / "a.tar.gz").write_bytes(b"old")
    assert claim_name(str(partial), str(tmp_path), "a.tar.gz").endswith("a.tar (1).gz")
    frames = []
    now = [0.0]
    bar = Progress("sending x", 100, enabled=True, now=lambda: now[0], write=frames.append)
    bar.update(10)
    assert frames == []  # quick transfers show no bar
    now[0] = 1.0
    bar.update(50)
    assert "50%" in frames[-1]
    bar.close()
    assert frames[-1] == "\r\x1b[K"


def test_options_defaults():
    options = parse_args([])
    assert (options.host, options.port, options.tls) == ("127.0.0.1", 8023, False)


def test_unwritable_downloads_folder_does_not_freeze_the_client(tmp_path):
    """
    The downloads folder cannot be created (a file is in the way): the
    download is abandoned, its partial file is gone, reading resumes after
    the writes that piled up while the open was pending, and chat goes on.
    """
    (tmp_path / "blocker").write_bytes(b"not a folder")
    held = Held()
    s = Session(str(tmp_path / "blocker" / "downloads"), run=held)
    s.server("111 Entered room public (1 here).")
    s.shown()
    s.sent()
    data = os.urandom(40_000)
    _offer(s, "f1", data)  # 40 chunks, none written yet
    assert s.wire.producerState == "paused"
    held.run_all()
    assert s.wire.producerState == "producing"
    assert "f1" not in s.client.files
    shown = s.shown()
    assert "Could not save notes.txt from bob: could not write the file (Not a directory)" in shown
    assert "nothing was saved" in shown
    s.server("21 f1 " + base64.b64encode(b"more").decode(), "22 f1", "111 [12:00:00] bob: still here?")
    held.run_all()
    shown = s.shown()
    assert "bob: still here?" in shown and "Saved" not in shown and "Discarded" not in shown
    s.type("yes\n")
    assert s.sent() == "/failed f1 could not write the file (Not a directory)\r\nyes\r\n"


def test_disk_full_stops_one_download_and_others_go_on(session, tmp_path, monkeypatch):
    """ENOSPC while writing one download: it is abandoned and removed; another download is saved."""
    import errno

    real = Download._write

    def write(self, data):
        if self.id == "f1" and self.received > 2000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, data)

    monkeypatch.setattr(Download, "_write", write)
    good = os.urandom(3000)
    _offer(session, "f1", os.urandom(5000), name="big.bin")
    _offer(session, "f2", good, name="small.bin")
    session.server("22 f1", "22 f2")
    assert os.listdir(tmp_path / "downloads") == ["small.bin"]
    assert (tmp_path / "downloads" / "small.bin").read_bytes() == good
    shown = session.shown()
    assert "Could not save big.bin from bob: could not write the file (No space left on device)" in shown
    assert "Saved small.bin from bob" in shown
    assert session.client.files == {}


def test_failures_to_save_are_reported_and_reports_shown(session):
    """A file that fails verification is reported with ``/failed``; a ``27`` about one's own file is shown."""
    session.sent()
    digest = hashlib.sha256(b"something else").hexdigest()
    session.server(f"20 f1 3 {digest} bob a.bin", "21 f1 " + base64.b64encode(b"abc").decode(), "22 f1")
    assert session.sent().startswith("/failed f1 SHA-256 mismatch: got ")
    session.server(f"20 f2 3 {digest} bob b.bin", "21 f2 !!!not base64")
    assert session.sent() == "/failed f2 the data was damaged in transit\r\n"
    session.shown()
    session.server("27 f3 cat could not save report.pdf: \x1b[31mdisk full")
    shown = session.shown()
    assert "cat could not save report.pdf: " in shown and "disk full" in shown and "\x1b" not in shown


def test_progress_bars_for_transfers_that_take_a_while(tmp_path):
    """A download or upload that takes more than half a second draws a bar (at most 5 a second), erased at the end."""
    clock = Clock()
    s = Session(str(tmp_path / "downloads"), clock=clock)
    quick = b"q" * 100
    _offer(s, "f0", quick, name="quick.txt")
    s.server("22 f0")
    assert s.bars == []  # over at once: no bar
    data = os.urandom(10_000)
    s.server(f"20 f1 {len(data)} {hashlib.sha256(data).hexdigest()} bob movie.bin")
    for start in range(0, len(data), 1000):
        clock.advance(0.3)
        s.server("21 f1 " + base64.b64encode(data[start:start + 1000]).decode())
    s.server("22 f1")
    bars = [bar for bar in s.bars if "receiving movie.bin [" in bar]
    assert len(bars) >= 5
    assert "] 100% 9.8 KiB/9.8 KiB" in bars[-1] and "#" * 30 in bars[-1]
    assert s.bars[-1] == "\r\x1b[K"
    assert "Saved movie.bin" in s.shown()

    # An upload paced by a slow socket: one frame per resume, 0.3 s apart.
    s.bars.clear()
    (tmp_path / "big.bin").write_bytes(os.urandom(5 * 65536))
    s.server("111 Entered room public (1 here).")
    s.type(f"/send {tmp_path / 'big.bin'}\n")
    write = s.wire.write

    def full_after_each_write(data):
        write(data)
        if s.wire.producer is not None:
            s.wire.producer.pauseProducing()

    s.wire.write = full_after_each_write
    s.server("24 u1 327680 big.bin")
    while s.wire.producer is not None:
        clock.advance(0.3)
        s.wire.producer.resumeProducing()
    bars = [bar for bar in s.bars if "sending big.bin [" in bar]
    assert bars and "100% 320.0 KiB/320.0 KiB" in bars[-1]
    assert s.bars[-1] == "\r\x1b[K"


def test_file_begin_with_a_size_that_is_not_ascii_digits_is_ignored(session, tmp_path):
    """``20 f1 ² ...`` ('²'.isdigit() is true) or 400 digits: ignored, no ValueError, nothing written."""
    digest = hashlib.sha256(b"").hexdigest()
    for size in ("\u00b2", "\u0665", "9" * 400):
        session.server(f"20 f1 {size} {digest} bob a.bin")
    assert session.client.files == {}
    assert not os.path.exists(tmp_path / "downloads") or os.listdir(tmp_path / "downloads") == []
    session.server(f"20 f2 0 {digest} bob b.bin", "22 f2")
    assert (tmp_path / "downloads" / "b.bin").read_bytes() == b""


def test_port_takes_ascii_digits_only(capsys):
    assert parse_args(["--port", "8024"]).port == 8024
    for value in ("\u0665", "0", "65536", "+80", "8_0"):
        with pytest.raises(SystemExit):
            parse_args(["--port", value])
        assert "is not a port number (1 to 65535)" in capsys.readouterr().err


def test_a_wrapped_input_line_is_erased_whole_when_a_message_arrives(tmp_path):
    """A typed line wider than the terminal takes several rows: the redraw goes up to its first row and clears below."""
    s = Session(str(tmp_path), interactive=True, width=10)
    s.server("111 Entered room public (1 here).")
    s.shown()
    s.type("x" * 25)  # "> " and 25 characters: 27 columns, rows 1-3 of a 10-column terminal
    s.shown()
    s.server("111 [12:00:00] bob: hi")
    assert s.shown() == "\r\x1b[2A\x1b[J[12:00:00] bob: hi\r\n\r\x1b[J> " + "x" * 25
    s.type("\x7f" * 7)  # back to 20 columns: exactly two full rows (the cursor waits at the end of the second)
    s.shown()
    s.server("111 [12:00:01] bob: again")
    assert s.shown().startswith("\r\x1b[1A\x1b[J[12:00:01] bob: again\r\n")
    s.type("\n")
    assert s.shown().startswith("\r\x1b[1A\x1b[J> " + "x" * 18 + "\r\n")  # the sent line, written over itself
    s.server("111 [12:00:02] bob: short")
    assert s.shown().startswith("\r\x1b[J[12:00:02] bob: short")
    s.type("界" * 6)  # wide characters take two columns each: "> " + 12 = 14 columns, two rows
    s.shown()
    s.server("111 [12:00:03] bob: wide")
    assert s.shown().startswith("\r\x1b[1A\x1b[J[12:00:03] bob: wide")


def test_ctrl_c_says_goodbye_on_its_own_line_and_ends_cleanly(tmp_path):
    """Ctrl-C in a room: the typed line is erased, a goodbye line printed, the connection closed, no error."""
    s = Session(str(tmp_path), interactive=True)
    s.server("111 Entered room public (1 here).")
    s.type("half a sentence")
    s.shown()
    s.sent()
    s.client.interrupt()
    assert s.shown() == "\r\x1b[J" + "Interrupted. Bye.\r\n"
    assert s.wire.disconnecting and s.sent() == ""
    s.client.connectionLost(None)
    assert s.client.done.called and s.client.interrupted
    assert s.client.done.result is None  # a clean end: run() exits with EXIT_INTERRUPTED (130), not an error


def _assert_refused(session, why: str) -> None:
    """The client closed the connection, and its session ends with LoginRefused(why)."""
    from clients.cli import LoginRefused

    assert session.wire.disconnecting
    session.client.connectionLost(None)
    failures = []
    session.client.done.addErrback(failures.append)
    assert failures and failures[0].check(LoginRefused)
    assert str(failures[0].value) == why


def test_scripted_wrong_password_stops_the_script_with_an_error(session):
    """A piped session whose password is refused sends none of its next lines and ends with LoginRefused."""
    session.sent()
    session.type("login ann\nwrong\npublic\nhello\n")
    session.server("11 menu>")
    assert session.sent() == "login ann\r\n"
    session.server("01 Password:")
    assert session.sent() == "wrong\r\n"
    session.server("02 Error: Login failed: unknown name or wrong password.", "11 menu>")
    assert session.sent() == ""
    _assert_refused(session, "Login failed: unknown name or wrong password.")


def test_scripted_registration_with_different_passwords_is_refused(session):
    session.type("register ann\nsecret1\nsecret2\n")
    session.server("11 menu>", "01 Choose a password:", "01 Repeat the password:")
    session.server("02 Error: the passwords do not match; nothing was created.")
    _assert_refused(session, "the passwords do not match; nothing was created.")


def test_scripted_registration_of_a_taken_name_never_sends_the_passwords(session):
    """Refused at the name: the script stops there, so its passwords are never typed into the menu."""
    session.sent()
    session.type("register ann\nsecret1\nsecret1\npublic\n")
    session.server("11 menu>")
    session.server("02 Error: The name ann is taken.", "11 menu>")
    assert "secret1" not in session.sent()
    _assert_refused(session, "The name ann is taken.")


def test_scripted_right_password_goes_on(session):
    """Errors that do not answer a password (a room that does not exist) do not stop a script."""
    session.sent()
    session.type("login ann\nsecret1\njoin nowhere\nquit\n")
    session.server("11 menu>", "01 Password:", "00 Logged in as ann.", "11 menu>")
    session.server("02 Error: no room named nowhere.", "11 menu>")
    assert session.sent() == "login ann\r\nsecret1\r\njoin nowhere\r\nquit\r\n"
    assert not session.wire.disconnecting


def test_no_prompt_is_redrawn_after_bye(tmp_path):
    """Once a prompt is answered it is not drawn again: after `9` and `Bye.` the screen ends on an empty line."""
    s = Session(str(tmp_path), interactive=True)
    s.server("11 menu>")
    s.type("9\n")
    s.server("00 Bye.")
    s.client.connectionLost(None)
    shown = s.shown()
    assert shown.endswith("Bye.\r\n\r\x1b[J"), repr(shown)
    assert "menu>" not in shown.split("9\r\n", 1)[1]
    assert s.client.done.called and s.client.done.result is None


def test_ctrl_d_at_the_menu_quits_without_drawing_the_prompt_again(tmp_path):
    """Ctrl-D at `menu>`: quit is sent, `Bye.` is the last line and no `menu> ` follows it."""
    s = Session(str(tmp_path), interactive=True)
    s.server("11 menu>")
    s.shown(), s.sent()
    s.type("\x04")
    assert s.sent() == "quit\r\n"
    s.server("00 Bye.")
    s.client.connectionLost(None)
    shown = s.shown()
    assert shown == "\r\x1b[J" + "\r\x1b[JBye.\r\n\r\x1b[J", repr(shown)
    assert s.client.done.called and s.client.done.result is None


def test_end_of_input_at_a_password_prompt_leaves_no_prompt(tmp_path):
    s = Session(str(tmp_path), interactive=True)
    s.server("01 Password:")
    s.shown()
    s.type("\x04")
    assert s.wire.disconnecting and s.shown() == "\r\x1b[J"


def test_a_scripted_session_that_ends_in_an_error_writes_no_empty_line(tmp_path):
    """Piped: the end of a session (a refused certificate, a lost connection) adds nothing to stdout."""
    s = Session(str(tmp_path))
    s.shown()
    s.console.end()
    assert s.shown() == ""
    s.console.end("Interrupted. Bye.")
    assert s.shown() == "Interrupted. Bye.\n"


def test_times_are_shown_in_local_time(tmp_path):
    """The server's [HH:MM:SS] is UTC; the client shows it in the local zone (room and private lines)."""
    s = Session(str(tmp_path), zone=timezone(timedelta(hours=2)))
    s.server("111 Entered room public (1 here).", "111 [12:00:00] bob: hi", "03 [23:30:05] *bob* late",
             "111 [12:00:00] * bob said [01:02:03] in text")
    shown = s.shown()
    assert "[14:00:00] bob: hi" in shown and "[01:30:05] *bob* late" in shown
    assert "[14:00:00] * bob said [01:02:03] in text" in shown  # only the leading stamp


def test_local_time_takes_the_nearest_day():
    """Across midnight the stamp is the moment nearest to now, so the local time is right on both sides."""
    from clients.cli import local_time

    new_york = timezone(timedelta(hours=-5))
    now = datetime(2026, 11, 29, 0, 0, 30, tzinfo=timezone.utc)
    assert local_time("[23:59:50] a", now, new_york) == "[18:59:50] a"  # yesterday 23:59:50 UTC
    assert local_time("[00:00:10] b", now, new_york) == "[19:00:10] b"
    assert local_time("[99:00:00] c", now, new_york) == "[99:00:00] c"
    assert local_time("no stamp", now, new_york) == "no stamp"


def test_text_keeps_its_meaning_on_screen_and_when_typed(tmp_path):
    """The client shows and sends joiners, emoji tags and spaces by the server's rule (issue 11, kind 8)."""
    family = "\U0001F468\u200D\U0001F469\u200D\U0001F467"
    scotland = "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"
    persian = "\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645"
    s = Session(str(tmp_path), interactive=True)
    s.server("111 Entered room public (1 here).")
    s.shown()
    s.server(f"111 [12:00:00] bob: {family} {scotland} {persian} \u202Eevil")
    assert f"bob: {family} {scotland} {persian} evil\r\n" in s.shown()
    s.type(f"{family} 10\u00A0000\u2067 {persian}\n")
    assert s.sent().endswith(f"{family} 10\u00A0000 {persian}\r\n")


def test_a_typed_data_line_is_not_sent(session):
    """A typed ``/data ...`` would make the server read the next bytes as a file frame: the client says so instead."""
    session.sent()
    session.server("00 Tagged mode on for chat 1.0.", "111 Entered room public (1 here).")
    session.type("/data x 5\nhello\n")
    assert session.sent() == "hello\r\n"
    assert "/data is how the client sends files: use /send PATH" in session.shown()
