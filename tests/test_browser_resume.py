"""
The page reconnects by itself (issue 15; chatd/web/static/connection.js, docs/PROTOCOL.md "Resuming a
session"): Debian's Chromium (tests/browser.py) on a real daemon that is restarted under it, with a telnet
user who talks while the page is away. The page is kept offline (Chromium's network emulation) from the
server's stop until the telnet user has spoken, so what it shows came by the catch-up, not live.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from browser import Browser, missing
from chatd.datadir import TOKEN_KEY_FILE
from daemon import Daemon, in_room

if missing():
    pytest.skip(f"no browser for the browser tests: {missing()}", allow_module_level=True)


def _network(browser: Browser, online: bool) -> None:
    """Chromium's network emulation: offline, no new connection (a WebSocket included) gets through."""
    browser.driver.execute_cdp_cmd("Network.enable", {})
    browser.driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": not online, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})


def _errors(browser: Browser) -> list[str]:
    """The page's errors but the browser's own report of each failed attempt to connect (expected here)."""
    return [error for error in browser.errors() if "WebSocket connection to" not in error]


def _status(browser: Browser, text: str, timeout: float = 30.0) -> None:
    browser.wait(lambda d: browser.text_of("#status") == text, timeout,
                 f"the status is {browser.text_of('#status')!r}, not {text!r}")


@pytest.fixture
def world(tmp_path) -> Any:
    daemon = Daemon(str(tmp_path / "data"), "--flood-rate", "0", web=True).start()
    browser = None
    try:
        browser = Browser(f"http://127.0.0.1:{daemon.web_port}/")
        yield daemon, browser
    finally:
        if browser is not None:
            browser.quit()
        daemon.stop()
    assert daemon.unhandled_errors() == [], daemon.log()


def test_the_page_reconnects_after_a_restart_and_shows_what_was_said_meanwhile(world):
    daemon, ann = world
    ann.open()
    ann.register("ann")
    ann.create("lab")
    ann.join("lab")
    carl = in_room(daemon.port, "carl", "lab")
    ann.wait_line("carl joined")
    carl.send("before the restart")
    ann.wait_line("carl: before the restart")
    ann.type_line("ann was here")
    carl.expect("ann: ann was here")
    carl.close()

    _network(ann, online=False)
    daemon.stop()
    _status(ann, "Reconnecting…")
    daemon.start()
    carl = in_room(daemon.port, "carl", "lab", register=False)
    carl.send("said while ann was away")
    carl.expect("carl: said while ann was away")
    assert not any("while ann was away" in line for line in ann.log_lines())
    _network(ann, online=True)  # (the browser's "online" event: the page tries at once)

    ann.wait_line("carl: said while ann was away", timeout=40)
    _status(ann, "Reconnected")
    assert ann.text_of("#room-name") == "lab" and ann.find("#room-view").is_displayed()
    lines = ann.log_lines()
    for said in ("carl: before the restart", "ann: ann was here", "carl: said while ann was away"):
        assert sum(said in line for line in lines) == 1, (said, lines)  # none lost, none twice
    assert lines.index(next(x for x in lines if "before the restart" in x)) < lines.index(
        next(x for x in lines if "while ann was away" in x))
    ann.type_line("back again")
    carl.expect("ann: back again")
    carl.close()
    assert ann.driver.execute_script(
        "return [localStorage.length, sessionStorage.length, document.cookie, location.href]"
    ) == [0, 0, "", f"http://127.0.0.1:{daemon.web_port}/"]  # the token is kept nowhere but in memory
    assert _errors(ann) == []


def test_a_token_refused_after_the_restart_shows_the_login_form(world):
    daemon, bea = world
    bea.open()
    bea.register("bea")
    _network(bea, online=False)
    daemon.stop()
    _status(bea, "Reconnecting…")
    os.remove(os.path.join(daemon.data_dir, TOKEN_KEY_FILE))  # a new key at the start: every token is void
    daemon.start()
    _network(bea, online=True)
    bea.wait(lambda d: bea.find("#login-view").is_displayed(), 30, "the login form is not shown")
    assert bea.text_of("#login-error") == "your session expired; please log in again."
    _status(bea, "Connected")
    bea.find("#login-name").clear()
    bea.find("#login-name").send_keys("bea")
    bea.find("#login-password").send_keys("secret1")
    bea.find("#login-button").click()
    bea.wait(lambda d: bea.text_of("#me-name") == "bea" and bea.find("#chat-view").is_displayed(),
             message="not logged in again")
    assert _errors(bea) == []
