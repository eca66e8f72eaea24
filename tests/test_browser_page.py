"""
What a new user of the browser page ran into (fix15u): the log following new lines in a room with a long
history, rooms created and deleted from the sidebar while in a room, a page whose session was ended by the
server (a login elsewhere), the room list's count for the room the user is in.

Debian's Chromium driven by selenium (tests/browser.py) against one real daemon (tests/daemon.py); the tests
run in file order and share the daemon and the browsers.
"""

from __future__ import annotations

import pytest

from browser import Browser, missing
from daemon import Daemon, in_room

if missing():
    pytest.skip(f"no browser for the browser tests: {missing()}", allow_module_level=True)

#: Distance (px) between the log's bottom and the bottom of what it shows, as the page measures it.
GAP = "const l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight;"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("page") / "data"), "--flood-rate", "0", web=True).start()
    try:
        yield d
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()


@pytest.fixture(scope="module")
def ann(server):
    browser = Browser(f"http://127.0.0.1:{server.web_port}/", height=560)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def dora(server):
    """A telnet user in the room long, which has 150 lines."""
    writer = in_room(server.port, "dora", "public")
    writer.send("/create long", "/exit", "join long")
    writer.expect(r"\* dora joined long")
    writer.send(*(f"old line {i:03}" for i in range(150)))
    writer.expect(r"dora: old line 149")
    yield writer
    writer.close()


def _gap(browser: Browser) -> int:
    return browser.driver.execute_script(GAP)


def _log_in(browser: Browser, name: str, password: str = "secret1") -> None:
    browser.driver.execute_script(
        "document.getElementById('login-name').value = arguments[0];"
        "document.getElementById('login-password').value = arguments[1];", name, password)
    browser.find("#login-button").click()
    browser.wait(lambda d: browser.text_of("#me-name") == name and browser.find("#chat-view").is_displayed(),
                 message=f"not logged in as {name}: {browser.text_of('#login-error')!r}")


def test_the_log_follows_new_lines_in_a_room_with_a_long_history(server, ann, dora):
    """At the bottom after entering (the "Load older lines" button shown above the log after the replay);
    new lines keep it there; scrolled up by the user it stays put; the user's own line brings it back."""
    ann.open()
    ann.register("ann")
    ann.join("long")
    ann.wait_line("old line 149")
    ann.wait(lambda d: ann.find("#older").is_displayed(), message="no button for older lines")
    ann.wait(lambda d: _gap(ann) <= 1, message=f"not at the bottom after entering: {_gap(ann)} px above it")
    for i in range(3):
        dora.send(f"new line {i}")
        ann.wait_line(f"new line {i}")
        ann.wait(lambda d: _gap(ann) <= 1, message=f"new line {i} not followed: {_gap(ann)} px above the bottom")
    ann.driver.execute_script("document.getElementById('log').scrollTop = 40;")  # the user reads back
    ann.wait(lambda d: ann.attribute("#log", "data-following") == "false",
             message="scrolling up did not stop following")
    dora.send("while reading back")
    ann.wait_line("while reading back")
    assert ann.driver.execute_script("return document.getElementById('log').scrollTop") == 40  # left where it was
    assert _gap(ann) > 100
    ann.type_line("my own line")
    ann.wait_line("ann: my own line")
    ann.wait(lambda d: _gap(ann) <= 1, message=f"the user's own line not shown: {_gap(ann)} px above the bottom")
    dora.send("after my own line")
    ann.wait_line("after my own line")
    ann.wait(lambda d: _gap(ann) <= 1, message="not following again after the user's own line")


def test_the_sidebar_creates_and_deletes_rooms_from_inside_a_room(server, ann, dora):
    """create and delete work in a room (every front-end); the list is asked for again after each."""
    ann.create("side")  # (waits for side in the list)
    assert ann.text_of("#room-name") == "long" and ann.find("#room-view").is_displayed()  # not moved
    ann.wait_line("Room side created.")
    ann.click("#room-list li[data-room='side'] .delete")
    ann.wait(lambda d: ann.find("#confirm").is_displayed())
    ann.find("#confirm-yes").click()
    ann.wait(lambda d: not ann.find_all("#room-list li[data-room='side']"), message="side still listed")
    ann.wait_line("Room side deleted.")
    assert not [line for line in ann.log_lines() if "unknown command" in line]
    assert ann.text_of("#room-name") == "long"


def test_the_room_list_shows_the_current_rooms_count_as_the_header_does(server, ann, dora):
    """A join in the room the user is in changes its count in the list at once, and it shows nothing unread."""
    carl = in_room(server.port, "carl", "long")
    try:
        ann.wait_line("carl joined")
        ann.wait(lambda d: ann.text_of("#room-here") == "(3 here)")
        ann.wait(lambda d: ann.text_of("#room-list li[data-room='long'] .members") == "3 here",
                 message=f"list says {ann.text_of('#room-list li[data-room=long] .members')!r}")
        assert not ann.find_all("#room-list li[data-room='long'] .unread")
    finally:
        carl.close()
    ann.wait(lambda d: ann.text_of("#room-list li[data-room='long'] .members") == "2 here")


def test_a_page_whose_session_was_replaced_goes_back_to_the_login_form(server, ann):
    """A login as ann elsewhere ends this page's session (close code 1000): the login form, with the reason."""
    other = Browser(f"http://127.0.0.1:{server.web_port}/")
    try:
        other.open()
        _log_in(other, "ann")
        ann.wait(lambda d: ann.find("#login-view").is_displayed(), message="still shown as logged in")
        assert not ann.find("#chat-view").is_displayed() and not ann.find("#logout").is_displayed()
        assert not ann.find("#me").is_displayed()
        assert "logged in" in ann.text_of("#login-error").lower(), ann.text_of("#login-error")
        assert ann.text_of("#status") == "Disconnected"
        assert "Reloading the page logs you out." in ann.text_of("#login-view")  # (the token is in memory only)
        _log_in(ann, "ann")  # and logging in works from there (it connects again first)
        other.wait(lambda d: other.find("#login-view").is_displayed())
        assert ann.errors() == [] and other.errors() == []
    finally:
        other.quit()


def test_a_line_sent_to_a_stopped_server_shows_at_once_as_pending(server, ann, dora):
    """kill -STOP: the line is shown dimmed, "sending…", and the status says the server is not answering;
    SIGCONT: the server's event replaces it (once), and the status is back."""
    import signal

    ann.join("long")  # (logged in again at the room list by the test before)
    server.process.send_signal(signal.SIGSTOP)
    try:
        ann.type_line("while you sleep")
        pending = ann.find("#log .line.pending")
        assert "ann: while you sleep" in pending.text and "sending…" in pending.text
        assert ann.driver.execute_script("return getComputedStyle(arguments[0]).opacity", pending) != "1"
        ann.wait(lambda d: ann.text_of("#status") == "Server not answering…", timeout=12,
                 message=f"status {ann.text_of('#status')!r}")
    finally:
        server.process.send_signal(signal.SIGCONT)
    ann.wait(lambda d: not ann.find_all("#log .line.pending"), message="still pending after the server woke up")
    ann.wait(lambda d: ann.text_of("#status") == "Connected")
    assert len([line for line in ann.log_lines() if "while you sleep" in line]) == 1  # once
    assert ann.find_all("#log .line.say[data-id]")[-1].text.endswith("ann: while you sleep")
