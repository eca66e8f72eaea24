"""
Unit tests of the client's screen interface: what Tab completes (clients.screen.Vocabulary), mentions and
private messages (alerts), the silent /who of the line editor, and the line editor itself
(clients.editor.LineEditor) driven by prompt_toolkit's pipe input on an asyncio loop of its own.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone, tzinfo

import pytest
from twisted.internet import defer
from twisted.internet.testing import StringTransport

from clients.cli import ChatClient
from clients.screen import COMMANDS, Vocabulary, mentions


class FakeScreen:
    """A Screen that records what it was asked to do."""

    interactive = True

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []
        self.prompt = ""

    def show(self, text: str) -> None:
        self.shown.append(("show", text))

    def alert(self, text: str) -> None:
        self.shown.append(("alert", text))

    def show_dimmed(self, text: str) -> None:
        self.shown.append(("dim", text))

    def set_prompt(self, prompt: str, secret: bool = False) -> None:
        self.prompt = prompt

    def end(self, text: str = "") -> None:
        self.shown.append(("end", text))


def client_on(screen: FakeScreen, ask_who: bool = False, zone: tzinfo = timezone.utc,
              now: datetime | None = None) -> tuple[ChatClient, StringTransport]:
    """A client on ``screen`` showing times in ``zone``, its clock stopped at ``now`` (None: the real one)."""
    client = ChatClient(screen, "/nonexistent", defer.maybeDeferred, zone=zone, ask_who=ask_who,
                        utc_now=None if now is None else lambda: now)
    wire = StringTransport()
    client.makeConnection(wire)
    wire.clear()
    return client, wire


def server(client: ChatClient, *lines: str) -> None:
    client.dataReceived("".join(line + "\r\n" for line in lines).encode())


def test_vocabulary_learns_members_from_who_joins_leaves_and_speakers():
    """/who replaces the room's list; joins add, leaves move to the others; speakers are members; entering forgets."""
    words = Vocabulary()
    words.heard("In lab (2): alice, bob (away)")
    words.heard("[12:00:00] * carol joined lab")
    words.heard("[12:00:01] dave: hello")
    assert list(words.members) == ["alice", "bob", "carol", "dave"]
    words.heard("[12:00:02] * bob left lab")
    assert "bob" not in words.members and "bob" in words.others
    words.heard("Entered room other (1 here). Type /help for commands, /exit to leave.")
    assert words.members == {}
    words.heard("Online (3; the first 2 by name): erin, frank, and 1 more")
    words.heard("Online (2): gina (away, in lab), hal (in public)")
    assert list(words.others) == ["bob", "erin", "frank", "gina", "hal"]
    words.heard("In lab (3): ~ann, @carol (away), dave")  # the owner and an operator (room authority)
    assert list(words.members) == ["ann", "carol", "dave"]


def test_vocabulary_completes_names_and_commands():
    """A first word starting with / completes commands (help lines add some); other words complete names."""
    words = Vocabulary()
    words.me = "Ann"
    words.heard("In lab (3): Ann, alice, Albert")
    assert words.complete("hi al") == ["alice", "Albert"]
    assert words.complete("a") == ["alice", "Albert"]  # never our own name
    assert words.complete("/m") == ["/me", "/msg"]
    assert words.complete("/msg al") == ["alice", "Albert"]
    assert words.complete("/topic") == []
    words.heard("  /topic TEXT: set the room's topic.")
    assert words.complete("/to") == ["/topic"]
    words.heard("  /invite-only ON_OFF: on: only invited accounts, operators and the owner may enter.")
    assert words.complete("/invite-") == ["/invite-only"]
    assert set(COMMANDS) <= set(words.commands)


def test_mentions_need_someone_else_and_the_whole_word():
    """A line names us when someone else says our name as a word, in any case; our own lines never do."""
    assert mentions("[12:00:00] bob: hi ann, how are you", "ann")
    assert mentions("[12:00:00] * bob waves at ANN", "ann")
    assert not mentions("[12:00:00] bob: hi anna", "ann")
    assert not mentions("[12:00:00] ann: I am ann", "ann")
    assert not mentions("[12:00:00] bob: hi ann", "")
    assert not mentions("Entered room ann (1 here).", "ann")


def test_client_alerts_on_mention_and_private_message_only():
    """Room lines naming the user and private messages are alerts; other lines, and our own, are shown plainly."""
    screen = FakeScreen()
    client, _ = client_on(screen)
    server(client, "00 Logged in as ann.", "111 Entered room lab (2 here).",
           "111 [12:00:00] bob: hello all", "111 [12:00:01] bob: ann: look", "111 [12:00:02] ann: ann here",
           "03 [12:00:03] *bob* psst")
    assert screen.shown[-4:] == [
        ("show", "[12:00:00] bob: hello all"), ("alert", "[12:00:01] bob: ann: look"),
        ("show", "[12:00:02] ann: ann here"), ("alert", "[12:00:03] *bob* psst"),
    ]
    assert client.words.me == "ann"


def test_editor_client_asks_who_on_entering_without_showing_the_answer():
    """With ask_who, entering a room sends /who; its answer feeds Tab but is not shown; a later /who is."""
    screen = FakeScreen()
    client, wire = client_on(screen, ask_who=True)
    server(client, "111 Entered room lab (2 here).")
    assert wire.value() == b"/who\r\n"
    server(client, "111 In lab (2): ann, bob")
    assert ("show", "In lab (2): ann, bob") not in screen.shown
    assert list(client.words.members) == ["ann", "bob"]
    server(client, "111 In lab (2): ann, bob")
    assert screen.shown[-1] == ("show", "In lab (2): ann, bob")


def test_plain_client_sends_no_who():
    """Scripts (the plain console) get exactly what they asked for: no /who of the client's own."""
    client, wire = client_on(FakeScreen())
    server(client, "111 Entered room lab (2 here).")
    assert wire.value() == b""


# -- the line editor, on prompt_toolkit's pipe input -----------------------------------------------


def run_editor(keys: list, words: Vocabulary | None = None, secret_prompt: bool = False) -> dict:
    """
    Run a LineEditor on a fresh asyncio loop, typing each of ``keys`` after the previous one was handled
    (a line accepted, or a key reached the buffer); a key given as ``(KEYS, TEXT)`` is handled once the
    line being typed reads TEXT (or, TEXT being a function of the results, once it is true). Returns what
    it produced. Bounded: 10 s in all.
    """
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from clients.editor import LineEditor

    got: dict = {"lines": [], "eof": 0, "interrupt": 0}

    async def scenario() -> None:
        with create_pipe_input() as pipe:
            changed = asyncio.Event()

            def on_line(line: str) -> None:
                got["lines"].append(line)
                changed.set()

            def on_eof() -> None:
                got["eof"] += 1
                editor.end()

            def on_interrupt() -> None:
                got["interrupt"] += 1
                editor.end("Interrupted. Bye.")

            editor = LineEditor(on_line, on_eof, on_interrupt, words or Vocabulary(), input=pipe,
                                output=DummyOutput())
            editor.set_prompt("Password: " if secret_prompt else "> ", secret=secret_prompt)
            finished = editor.start()
            for key in keys:
                key, wanted = key if isinstance(key, tuple) else (key, None)
                changed.clear()
                pipe.send_text(key)
                if key.endswith("\r"):
                    await asyncio.wait_for(changed.wait(), 5)
                    if secret_prompt:
                        editor.set_prompt("> ")
                elif wanted is not None:
                    done = wanted if callable(wanted) else lambda _: editor.session.default_buffer.text == wanted
                    while not done(got):
                        await asyncio.sleep(0.01)
                else:
                    await asyncio.sleep(0)  # let the key reach the buffer
            if not finished.called:
                editor.end()
            await asyncio.wait_for(finished.asFuture(asyncio.get_running_loop()), 5)
            got["history"] = list(editor.history.get_strings())
            got["last"] = editor._last

    asyncio.run(asyncio.wait_for(scenario(), 10))
    return got


def test_editor_tab_completes_a_member_name():
    words = Vocabulary()
    words.heard("In lab (2): alice, bob")
    got = run_editor([("hi b\t", "hi bob"), "\r"], words)
    assert got["lines"] == ["hi bob"]


def test_editor_up_recalls_and_keys_edit():
    """Up recalls the last line; Ctrl-W deletes a word, Ctrl-U the line, Home/End move (Ctrl-A/Ctrl-E)."""
    got = run_editor(["first line\r", "\x1b[A!\r", "one two\x17three\r", "junk\x15x\x01<\x05>\r"])
    assert got["lines"] == ["first line", "first line!", "one three", "<x>"]
    assert got["history"][-1] == "<x>"


def test_editor_keeps_no_password_in_history():
    """A line typed at a secret prompt reaches the client but never the Up history."""
    got = run_editor(["hunter22\r", "hello\r"], secret_prompt=True)
    assert got["lines"] == ["hunter22", "hello"]
    assert got["history"] == ["hello"]


def test_editor_ctrl_d_and_ctrl_c():
    """Ctrl-D on an empty line is the end of input; Ctrl-C interrupts (its text is printed last)."""
    assert run_editor([("\x04", lambda got: got["eof"])])["eof"] == 1
    got = run_editor([("half typed", "half typed"), ("\x03", lambda got: got["interrupt"])])
    assert got["interrupt"] == 1 and got["lines"] == [] and got["last"] == "Interrupted. Bye."


def test_editor_ctrl_d_with_text_is_no_eof():
    """Ctrl-D with text on the line deletes under the cursor, as in a shell: no end of input."""
    got = run_editor(["ab\x04c\r"])
    assert got["eof"] == 0 and got["lines"] == ["abc"]


# -- logging in again after a lost connection ------------------------------------------------------


def test_client_keeps_account_and_room_for_a_reconnect():
    """The password typed before "Logged in as" and the room entered are kept; leaving and logging out forget."""
    screen = FakeScreen()
    client, wire = client_on(screen)
    server(client, "11 menu>")
    client.user_line("login ann")
    server(client, "01 Password:")
    client.user_line("hunter22")
    server(client, "00 Logged in as ann.", "111 Entered room lab (1 here).")
    assert (client.account, client.room) == (("ann", "hunter22"), "lab")
    server(client, "00 You left lab.")
    assert client.room is None
    server(client, "00 Logged out.")
    assert client.account is None


def test_resume_logs_in_and_rejoins_without_showing_the_menu():
    """resume(): login NAME, the password, join ROOM, answered by the client; then one line says so."""
    screen = FakeScreen()
    client, wire = client_on(screen)
    client.resume(("ann", "hunter22"), "lab")
    client.user_line("typed while away")
    server(client, "Welcome to chatd 1.0.", "00 Main menu (type a number or a keyword):", "11 menu>")
    assert wire.value() == b"login ann\r\n"
    wire.clear()
    server(client, "01 Password:")
    assert wire.value() == b"hunter22\r\n"
    wire.clear()
    server(client, "00 Logged in as ann.", "11 menu>")
    assert wire.value() == b"join lab\r\n"
    wire.clear()
    assert screen.shown == []
    server(client, "111 Entered room lab (2 here).")
    assert screen.shown == [("show", "Entered room lab (2 here)."),
                            ("show", "Reconnected: logged in again as ann and back in lab.")]
    assert wire.value() == b"typed while away\r\n"


def test_a_resumed_client_keeps_the_password_for_the_next_reconnect():
    """Tester: the second reconnect of a session sent an empty password (none typed on the first new connection)."""
    screen = FakeScreen()
    client, wire = client_on(screen)
    client.resume(("ann", "hunter22"), "lab")
    server(client, "11 menu>", "01 Password:", "00 Logged in as ann.", "11 menu>", "111 Entered room lab (2 here).")
    assert (client.account, client.room) == (("ann", "hunter22"), "lab")
    again, wire2 = client_on(FakeScreen())
    again.resume(client.account, client.room, client.seen)
    server(again, "11 menu>", "01 Password:")
    assert wire2.value() == b"login ann\r\nhunter22\r\n"


def test_resume_refused_hands_the_menu_to_the_user():
    """A refused login says why and leaves the user at the menu's prompt."""
    screen = FakeScreen()
    client, wire = client_on(screen)
    client.resume(("ann", "old password"), "lab")
    server(client, "11 menu>", "01 Password:", "02 Error: wrong password.", "11 menu>")
    assert screen.shown == [("show", "Could not log in again and rejoin: wrong password.")]
    assert screen.prompt == "menu> "


def test_editor_draws_progress_bars_in_the_toolbar():
    """Progress frames (Progress's "\\r\\x1b[K" + bar) go to the bottom toolbar; the bare prefix erases it."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from clients.editor import LineEditor
    from clients.files import Progress

    with create_pipe_input() as pipe:
        editor = LineEditor(print, print, print, Vocabulary(), input=pipe, output=DummyOutput())
        assert editor.toolbar() is None
        clock = iter([0.0, 1.0, 2.0])
        bar = Progress("sending a.bin", 2048, enabled=True, now=lambda: next(clock), write=editor.progress)
        bar.update(1024)
        assert editor.toolbar() == "sending a.bin [###############---------------]  50% 1.0 KiB/2.0 KiB"
        bar.close()
        assert editor.toolbar() is None


def test_while_waiting_to_reconnect_lines_wait_and_ctrl_c_stops():
    """Between connections typed lines are kept for the next one; Ctrl-C cancels the wait (and says so)."""
    from clients.cli import _Late

    late = _Late()
    client, wire = client_on(FakeScreen())
    late.client = client
    late.waiting = defer.Deferred()
    late.line("typed while away")
    assert late.pending == ["typed while away"] and wire.value() == b""
    waiting = late.waiting
    late.interrupt()
    assert late.stopped == "interrupt"
    assert isinstance(waiting.result.value, defer.CancelledError)
    waiting.addErrback(lambda _: None)
    assert not client.interrupted


def plain_console_output(interactive: bool, method: str, text: str) -> bytes:
    """What the --plain console (on a terminal, or not) writes for ``Screen.method(text)``."""
    from clients.cli import Console

    console = Console(print, print, interactive)
    screen = StringTransport()
    console.makeConnection(screen)
    getattr(console, method)(text)
    return screen.value()


def test_plain_console_rings_the_bell_only_on_a_terminal():
    """The --plain console's alert: a bell, then the line, on a terminal; from a pipe just the line."""
    assert plain_console_output(True, "alert", "[12:00:00] *bob* psst") == (
        b"\x07\r\x1b[J[12:00:00] *bob* psst\r\n\r\x1b[J")
    assert plain_console_output(False, "alert", "[12:00:00] *bob* psst") == b"[12:00:00] *bob* psst\n"


# -- room history: replayed on entering (04) and asked for with /history (05) ------------------------

#: 10:00:05 UTC on 2026-11-29: 12:00:05 in Berlin's winter (UTC+2 here), 05:00:05 in New York (UTC-5).
NOW = datetime(2026, 11, 29, 10, 0, 5, tzinfo=timezone.utc)
PLUS_TWO, MINUS_FIVE = timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))


def test_history_times_are_local_with_the_date_unless_today():
    """
    A dated history stamp (UTC) is shown as a local time alone when its local day is today, with the local
    date when not (by the local day, not UTC's); a stamp naming no valid time is left as it is.
    """
    from clients.cli import local_time

    assert local_time("[2026-11-29 08:00:00] bob: today", NOW, PLUS_TWO) == "[10:00:00] bob: today"
    # Yesterday in UTC, but already today in UTC+2; and today in UTC, but still yesterday in UTC-5.
    assert local_time("[2026-11-28 23:30:00] bob: late", NOW, PLUS_TWO) == "[01:30:00] bob: late"
    assert local_time("[2026-11-29 03:00:00] * bob waves", NOW, MINUS_FIVE) == "[2026-11-28 22:00:00] * bob waves"
    assert local_time("[2026-11-27 12:00:00] bob: old", NOW, PLUS_TWO) == "[2026-11-27 14:00:00] bob: old"
    for broken in ("[2026-13-01 00:00:00] month 13", "[2026-02-30 00:00:00] no such day",
                   "[2026-11-29 24:00:00] hour 24", "[2026-11-29 12:00] no seconds", "[26-11-29 12:00:00] x"):
        assert local_time(broken, NOW, PLUS_TWO) == broken
    assert local_time("[12:00:00] live stays a time", NOW, MINUS_FIVE) == "[07:00:00] live stays a time"


def test_history_times_follow_the_tz_environment_without_a_zone():
    """With no zone given (the real client), the computer's zone is used: TZ here ("EAT-3": POSIX for UTC+3)."""
    import os
    import time

    from clients.cli import local_time

    saved = os.environ.get("TZ")
    os.environ["TZ"] = "EAT-3"
    time.tzset()
    try:
        assert local_time("[2026-11-28 22:00:00] bob: hi", NOW) == "[01:00:00] bob: hi"
        assert local_time("[2026-11-28 20:00:00] bob: hi", NOW) == "[2026-11-28 23:00:00] bob: hi"
    finally:
        if saved is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = saved
        time.tzset()


def test_replayed_lines_are_dimmed_and_history_lines_plain_never_alerts():
    """
    04 lines are dimmed, 05 lines shown like live ones, both in local time; neither rings for a mention
    (old news) while a live line does; the frame around a replay is shown as sent; Tab learns no one from them.
    """
    screen = FakeScreen()
    client, _ = client_on(screen, zone=PLUS_TWO, now=NOW)
    server(client, "00 Logged in as ann.", "111 Entered room lab (1 here).",
           "111 --- 2 earlier lines in lab (/replay off hides them) ---",
           "04 [2026-11-28 21:00:00] bob: ann, see you tomorrow",
           "04 [2026-11-29 09:59:00] * carol waves at ann",
           "111 --- end of earlier lines ---",
           "111 [10:00:04] * ann joined lab",
           "05 [2026-11-29 09:59:00] * carol waves at ann",
           "05 [2026-11-28 21:00:00] bob: ann, see you tomorrow",
           "111 [10:00:05] carol: ann?")
    assert screen.shown[2:] == [
        ("show", "--- 2 earlier lines in lab (/replay off hides them) ---"),
        ("dim", "[2026-11-28 23:00:00] bob: ann, see you tomorrow"),
        ("dim", "[11:59:00] * carol waves at ann"),
        ("show", "--- end of earlier lines ---"),
        ("show", "[12:00:04] * ann joined lab"),
        ("show", "[11:59:00] * carol waves at ann"),
        ("show", "[2026-11-28 23:00:00] bob: ann, see you tomorrow"),
        ("alert", "[12:00:05] carol: ann?"),
    ]
    assert list(client.words.members) == ["ann", "carol"]  # from the live lines only


def test_history_lines_are_cleaned_and_unparsed_stamps_shown_as_sent():
    """History text goes through the same cleaning as live lines; a line whose time does not parse is kept."""
    screen = FakeScreen()
    client, _ = client_on(screen, now=NOW)
    server(client, "111 Entered room lab (1 here).", "04 [2026-11-29 99:00:00] bob: \x1b[2Jhi\x07",
           "05 no stamp at all")
    assert screen.shown[1:] == [("dim", "[2026-11-29 99:00:00] bob: hi"), ("show", "no stamp at all")]


def test_new_commands_complete():
    """/history and /replay complete before any /help answer."""
    assert Vocabulary().complete("/h") == ["/help", "/history"]
    assert Vocabulary().complete("/re") == ["/replay"]


def seen_in_lab(live: list[str]) -> dict:
    """What a client in lab remembers after showing ``live`` (111 lines) at NOW."""
    client, _ = client_on(FakeScreen(), now=NOW)
    server(client, "111 Entered room lab (1 here).", *(f"111 {line}" for line in live))
    return client.seen


def rejoin_lab(seen: dict, *replayed: str) -> list[tuple[str, str]]:
    """A client logging in again as ann into lab with ``seen``; what it shows of the replay of ``replayed``."""
    screen = FakeScreen()
    client, wire = client_on(screen, now=NOW)
    client.resume(("ann", "hunter22"), "lab", seen)
    server(client, "11 menu>", "01 Password:", "00 Logged in as ann.", "11 menu>")
    assert wire.value().endswith(b"join lab\r\n")
    server(client, "111 Entered room lab (2 here).", "111 --- earlier lines ---",
           *(f"04 {line}" for line in replayed), "111 --- end ---")
    return screen.shown


def test_a_reconnect_drops_replayed_lines_already_shown():
    """
    After a reconnect the replay is shown from the first line after the last one shown in that room before
    (by its UTC moment and text; live lines' moments are today's); later lines are news, shown dimmed.
    """
    seen = seen_in_lab(["[09:59:58] bob: one", "[10:00:01] * bob waves", "[10:00:01] bob: two"])
    assert seen == {"lab": (datetime(2026, 11, 29, 10, 0, 1, tzinfo=timezone.utc), "bob: two")}
    shown = rejoin_lab(seen, "2026-11-29 09:00:00] x", "[2026-11-29 09:59:58] bob: one",
                       "[2026-11-29 10:00:01] * bob waves", "[2026-11-29 10:00:01] bob: two",
                       "[2026-11-29 10:00:01] bob: three, in the same second", "[2026-11-29 10:00:03] bob: four")
    assert shown == [
        ("show", "Entered room lab (2 here)."),
        ("show", "Reconnected: logged in again as ann and back in lab."),
        ("show", "--- earlier lines ---"),
        ("dim", "2026-11-29 09:00:00] x"),  # no stamp: nothing to compare, shown
        ("dim", "[10:00:01] bob: three, in the same second"),
        ("dim", "[10:00:03] bob: four"),
        ("show", "--- end ---"),
    ]
    assert seen["lab"][1] == "bob: four"  # the newest shown, for the next reconnect


def test_a_reconnect_drops_a_replay_of_nothing_new_and_keeps_other_rooms_replays():
    """
    All replayed lines older than the last seen are dropped, and the block's frame with them (tester: an empty
    "--- 20 earlier lines ---" block); a room never seen is replayed whole.
    """
    seen = seen_in_lab(["[10:00:00] bob: last"])
    assert rejoin_lab(seen, "[2026-11-29 09:00:00] bob: older") == [
        ("show", "Entered room lab (2 here)."), ("show", "Reconnected: logged in again as ann and back in lab.")]
    assert ("dim", "[09:00:00] bob: older") in rejoin_lab({}, "[2026-11-29 09:00:00] bob: older")


def test_without_a_reconnect_the_replay_is_shown_whole():
    """Entering a room again by hand (no reconnect) replays what it replays: nothing is dropped."""
    screen = FakeScreen()
    client, _ = client_on(screen, now=NOW)
    server(client, "111 Entered room lab (1 here).", "111 [10:00:00] bob: hi", "00 You left lab.",
           "111 Entered room lab (1 here).", "04 [2026-11-29 10:00:00] bob: hi")
    assert screen.shown[-1] == ("dim", "[10:00:00] bob: hi")


def test_editor_and_plain_console_dim_only_on_a_terminal(capsys):
    """The line editor dims with SGR 2; the --plain console too on a terminal; from a pipe no escape codes."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from clients.editor import LineEditor

    with create_pipe_input() as pipe:
        LineEditor(print, print, print, Vocabulary(), input=pipe, output=DummyOutput()).show_dimmed("[10:00:00] old")
    assert capsys.readouterr().out == "\x1b[2m[10:00:00] old\x1b[0m\n"
    assert plain_console_output(True, "show_dimmed", "[10:00:00] old") == (
        b"\r\x1b[J\x1b[2m[10:00:00] old\x1b[0m\r\n\r\x1b[J")
    assert plain_console_output(False, "show_dimmed", "[10:00:00] old") == b"[10:00:00] old\n"


@pytest.mark.parametrize("last, again", [
    ("02 You were disconnected by root, an admin: stop it", False),
    ("02 Error: this account is locked: trolling", False),
    ("02 You logged in from another connection.", False),
    ("02 The server is shutting down. Bye.", True),
    ("111 [10:00:00] bob: hi", True),  # the connection just went: a network drop
])
def test_the_client_reconnects_only_when_the_server_did_not_end_the_session(last, again):
    """Tester (issue 14): after an admin's /disconnect the client came back; once locked it retried 366 times."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    client, _ = client_on(FakeScreen())
    server(client, "11 menu>", "00 Logged in as ann.", "111 Entered room lab (1 here).", last)
    client.done.addErrback(lambda failure: None)
    client.connectionLost(Failure(ConnectionDone()))
    assert client.ended_by_server is (not again)


def test_a_refused_login_again_stops_reconnecting_until_a_login_succeeds():
    client, _ = client_on(FakeScreen())
    client.resume(("ann", "hunter22"), "lab")
    server(client, "11 menu>", "01 Password:", "02 Error: this account is locked: trolling", "11 menu>")
    assert client.ended_by_server
    server(client, "00 Logged in as ann.")
    assert not client.ended_by_server
