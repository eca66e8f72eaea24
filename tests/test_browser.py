"""
The browser client in a real browser (issue 15): Debian's Chromium driven by selenium (tests/browser.py)
against one real daemon (tests/daemon.py), with telnet users in the same rooms.

The browsers are started once for the module (one per user) and the tests follow one story: ann and bea
register in the page, carl is on telnet. They run in file order and share the daemon. With
``CHATD_SCREENSHOTS=1`` the run also saves docs/screenshots/login.png, room.png and phone.png.
"""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest

from browser import Browser, missing
from daemon import ROOT, Conn, Daemon, in_room

if missing():
    pytest.skip(f"no browser for the browser tests: {missing()}", allow_module_level=True)

#: The browsers' time zone (not UTC, so times shown in local time differ from the server's UTC).
ZONE = "Asia/Kolkata"
SCREENSHOTS = os.environ.get("CHATD_SCREENSHOTS") == "1"
SHOTS = os.path.join(ROOT, "docs", "screenshots")
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = Daemon(str(tmp_path_factory.mktemp("browser") / "data"), "--flood-rate", "0", web=True).start()
    try:
        yield d
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()


def _browser(server: Daemon, **size: int) -> Browser:
    os.environ["TZ"] = ZONE  # (chromedriver and the browser inherit it; the daemon was started before)
    try:
        return Browser(f"http://127.0.0.1:{server.web_port}/", **size)
    finally:
        del os.environ["TZ"]


@pytest.fixture(scope="module")
def ann(server):
    browser = _browser(server)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def bea(server):
    browser = _browser(server)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def carl(server, ann):
    """The telnet user, in lab (which ann creates in the first test)."""
    holder: list[Conn] = []
    yield holder
    for conn in holder:
        conn.close()


def _no_alert(browser: Browser) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        browser.driver.switch_to.alert.text  # noqa: B018


def _local_clock(iso: str) -> str:
    """An ISO UTC time as en-US toLocaleTimeString shows it in ZONE: 5:45:12 AM."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(ZoneInfo(ZONE))
    return f"{moment.hour % 12 or 12}:{moment:%M:%S} {moment:%p}"


def test_two_browsers_and_a_telnet_user_chat_in_one_room(server, ann, bea, carl):
    ann.open()
    if SCREENSHOTS:
        ann.screenshot(os.path.join(SHOTS, "login.png"))
    # A hostile name is refused by the server, and the refusal is shown as text.
    ann.find("#login-name").send_keys(HOSTILE)
    ann.find("#login-password").send_keys("secret1")
    ann.find("#register-button").click()
    ann.wait(lambda d: ann.text_of("#login-error").startswith("A user name "))
    assert ann.find_all("img") == []
    ann.register("ann")
    assert ann.find("#login-password").get_attribute("value") == ""  # not kept in the page
    ann.create("lab")
    ann.join("lab")
    bea.open()
    bea.register("bea")
    bea.join("lab")
    ann.wait_line("bea joined")
    carl.append(in_room(server.port, "carl", "lab"))
    telnet = carl[0]
    ann.wait_line("carl joined")
    bea.wait_line("carl joined")

    ann.type_line("hello from ann")
    bea.wait_line("ann: hello from ann")
    telnet.expect(r"ann: hello from ann")
    bea.type_line("hello from bea")
    ann.wait_line("bea: hello from bea")
    telnet.expect(r"bea: hello from bea")
    telnet.send("hello from carl")
    ann.wait_line("carl: hello from carl")
    bea.wait_line("carl: hello from carl")
    bea.type_line("/me waves")
    ann.wait_line("* bea waves")
    telnet.expect(r"\* bea waves")
    bea.type_line("//not a command")  # as on telnet: said as /not a command
    telnet.expect(r"bea: /not a command")
    # Private messages both ways, and a command's reply.
    bea.type_line("/msg carl psst")
    bea.wait_line("→ carl: psst")
    telnet.expect(r"bea.*psst")
    telnet.send("/msg ann hi ann")
    ann.wait_line("carl → you: hi ann")
    ann.type_line("/who")
    assert re.search(r"In lab \(3\): .*ann.*bea.*carl", ann.wait_line("In lab (3)"))
    ann.type_line("/nosuch")
    ann.wait_line("unknown command /nosuch. Type /help for the list.")
    bea.type_line("/away at lunch")
    bea.wait_line("You are marked as away: at lunch")
    telnet.send("/msg bea are you there?")
    telnet.expect(r"bea is away: at lunch")
    bea.type_line("/back")

    # The keyboard: Up and Down bring back the lines typed before; the focus is always visible.
    from selenium.webdriver.common.keys import Keys

    field = ann.find("#say-input")
    field.send_keys("half typed", Keys.ARROW_UP)
    assert field.get_attribute("value") == "/nosuch"
    field.send_keys(Keys.ARROW_UP)
    assert field.get_attribute("value") == "/who"
    field.send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert field.get_attribute("value") == "half typed"  # the line being typed comes back last
    ann.driver.execute_script("arguments[0].value = '';", field)
    assert ann.driver.switch_to.active_element == field
    assert ann.driver.execute_script("return getComputedStyle(arguments[0]).outlineStyle", field) == "solid"

    # Times in the user's local time (the browsers run in ZONE, the server speaks UTC).
    line = ann.find_all("#log .line.say")[-1]
    when = line.find_element("css selector", "time")
    assert when.text == _local_clock(when.get_attribute("datetime"))
    assert ann.errors() == [] and bea.errors() == []
    if SCREENSHOTS:
        for text in ("has anyone tried the new build?", "/me is compiling", "yes, works for me"):
            (bea.type_line if text != "yes, works for me" else telnet.send)(text)
        ann.wait_line("carl: yes, works for me")
        ann.screenshot(os.path.join(SHOTS, "room.png"))


def test_hostile_text_renders_as_inert_text(server, ann, bea):
    long_line = "x" * 3990 + " " + "y" * 9
    bidi = "abc \u202edef\u202c ghi"
    for text in (HOSTILE, bidi, long_line):
        bea.type_line(text)
    ann.wait(lambda d: any(line.endswith("y" * 9) for line in ann.log_lines()))
    texts = ann.driver.execute_script(
        "return Array.from(document.querySelectorAll('#log .line.say .text'), e => e.textContent).slice(-3);")
    # Exactly what was typed; the server takes bidi controls out of what users say (chatd.text.clean_text).
    assert texts == [HOSTILE, bidi.replace("\u202e", "").replace("\u202c", ""), long_line]
    assert ann.driver.execute_script("return document.images.length") == 0
    _no_alert(ann)
    # A long line wraps inside the log: nothing scrolls sideways.
    assert ann.driver.execute_script("const l = document.getElementById('log'); return l.scrollWidth <= l.clientWidth")
    # Even a hostile server's name stays text, isolated: fed to the page's own handler.
    event = {"room": "lab", "id": 10**9, "at": 1790000000.0, "sender": HOSTILE + "\u202eevil", "kind": "say",
             "text": "\u202e" + HOSTILE, "target": "", "until": 0.0}
    ann.driver.execute_async_script(
        "const done = arguments[1]; import('/app.js').then(m => {"
        " m.page.connection.received(arguments[0]); done(); });",
        json.dumps({"type": "events", "events": [event]}))
    name = ann.driver.execute_script("const l = document.querySelector('#log .line:last-child');"
                                     " const b = l.querySelector('bdi'); const t = l.querySelector('.text');"
                                     " return [b.textContent, t.textContent, t.dir];")
    assert name == [HOSTILE + "\u202eevil", "\u202e" + HOSTILE, "auto"]
    assert ann.driver.execute_script("return document.images.length") == 0
    _no_alert(ann)
    assert ann.errors() == []


def test_operator_command_and_room_list_with_members_topic_and_unread(server, ann, bea, carl):
    telnet = carl[0]
    ann.type_line("/topic Lab <b>work</b> here")
    telnet.expect(r"\* ann set the topic: Lab <b>work</b> here")
    bea.wait(lambda d: bea.text_of("#room-topic") == "Lab <b>work</b> here")
    # The room list's entry of the room is not stale (issue 16, tester16u: it kept the old topic).
    lab_entry = "const i = document.querySelector(\"#room-list li[data-room='lab'] .topic\"); return i ? i.textContent : ''"
    bea.wait(lambda d: bea.driver.execute_script(lab_entry) == "Lab <b>work</b> here")
    bea.type_line("/topic by bea")  # not an operator of lab: refused as on telnet
    bea.wait_line("only")
    ann.find("#exit-room").click()
    ann.wait(lambda d: not ann.find("#room-view").is_displayed())
    bea.wait_line("ann left")
    for i in range(3):
        telnet.send(f"while ann was away {i}")
    bea.wait_line("while ann was away 2")
    ann.find("#refresh-rooms").click()

    def lab_item(_):
        text = ann.text_of("#room-list li[data-room='lab']")
        return text if "3 unread" in text else None

    item = ann.wait(lab_item, message=f"no unread count: {ann.text_of('#room-list')!r}")
    assert "2 here" in item and "Lab <b>work</b> here" in item
    assert "0 here" in ann.text_of("#room-list li[data-room='public']")
    assert ann.find_all("#room-list li[data-room='lab'] .delete")  # ann owns lab: she may delete it
    assert not ann.find_all("#room-list li[data-room='public'] .delete")


def test_history_scroll_back_loads_older_lines(server, ann):
    """120 lines in a room; joining replays the last 20; scrolling to the top loads 50 more each time."""
    writer = in_room(server.port, "dora", "public")
    writer.send("/exit", "create archive", "join archive")
    writer.expect(r"\* dora joined archive")
    writer.send(*(f"old line {i:03}" for i in range(120)))
    writer.expect(r"dora: old line 119")
    ann.join("archive")
    ann.wait_line("old line 119")
    said = lambda: [line for line in ann.log_lines() if "old line" in line]  # noqa: E731
    assert len(said()) == 20
    older = lambda: not ann.find("#older").get_attribute("hidden")  # noqa: E731
    for _ in range(5):  # bounded: 100 lines are older, two pages of 50 and a last look that finds none
        if not older():
            break
        count = len(said())
        ann.driver.execute_script("document.getElementById('log').scrollTop = 0;")
        ann.wait(lambda d: len(said()) > count or not older(), message=f"no older lines after {count}")
    assert not older()  # nothing older: the button is gone
    numbers = [int(re.search(r"old line (\d+)", line).group(1)) for line in said()]
    assert numbers == list(range(120))  # in order, none twice
    writer.close()


def test_a_phone_sized_screen_folds_the_room_list_away(server, ann):
    chrome = ann.driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    ann.driver.set_window_size(375 + chrome[0], 667 + chrome[1])  # a viewport of 375 x 667
    try:
        ann.wait(lambda d: d.execute_script("return [innerWidth, innerHeight]") == [375, 667])
        page = ann.driver.execute_script
        assert not ann.find("#rooms-panel").is_displayed() and ann.find("#rooms-toggle").is_displayed()
        assert page("return document.documentElement.scrollWidth <= window.innerWidth")  # nothing wider
        assert page("return document.querySelector('meta[name=viewport]').content").startswith("width=device-width")
        if SCREENSHOTS:
            ann.screenshot(os.path.join(SHOTS, "phone.png"))
        ann.find("#rooms-toggle").click()
        ann.wait(lambda d: ann.find("#rooms-panel").is_displayed())
        assert ann.find("#rooms-toggle").get_attribute("aria-expanded") == "true"
        from selenium.webdriver.common.keys import Keys

        ann.driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # Escape folds it away again
        ann.wait(lambda d: not ann.find("#rooms-panel").is_displayed())
        assert ann.driver.switch_to.active_element == ann.find("#rooms-toggle")
    finally:
        ann.driver.set_window_size(1100, 760)


def test_delete_a_room_from_the_list_and_log_out(server, ann, bea, carl):
    """ann deletes lab (a dialog to confirm; Escape cancels it): bea, in it, is back at the room list, told why."""
    from selenium.webdriver.common.keys import Keys

    ann.join("public")  # from archive: another room in the list is entered directly (the page leaves first)
    ann.wait_line("ann joined")
    ann.wait(lambda d: ann.attribute("#room-list li[data-room='public'] .join", "aria-current") == "true")
    ann.find("#exit-room").click()
    ann.wait(lambda d: not ann.find("#room-view").is_displayed())
    ann.click("#room-list li[data-room='lab'] .delete")
    ann.wait(lambda d: ann.find("#confirm").is_displayed())
    ann.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    ann.wait(lambda d: not ann.find("#confirm").is_displayed())
    assert ann.find_all("#room-list li[data-room='lab']")  # cancelled: still there
    ann.click("#room-list li[data-room='lab'] .delete")
    ann.wait(lambda d: ann.find("#confirm").is_displayed())
    ann.find("#confirm-yes").click()
    ann.wait(lambda d: not ann.find_all("#room-list li[data-room='lab']"), message="lab still listed")
    bea.wait(lambda d: not bea.find("#room-view").is_displayed())
    assert "Room lab was deleted by ann" in bea.text_of("#menu-message")
    carl[0].expect(r"Room lab was deleted by ann")
    carl[0].send("/msg bea lab is gone")  # a private message at the room list is shown there
    bea.wait(lambda d: "carl → you: lab is gone" in bea.text_of("#menu-message"))
    ann.find("#logout").click()
    ann.wait(lambda d: ann.find("#login-view").is_displayed())
    assert not ann.find("#chat-view").is_displayed()
    assert ann.errors() == [] and bea.errors() == []


class _ForeignPage(BaseHTTPRequestHandler):
    """A page on another origin that tries to open chatd's WebSocket and writes what happened in its title."""

    ws_url = ""

    def do_GET(self) -> None:
        body = (f"<!doctype html><title>trying</title><script>const ws = new WebSocket({json.dumps(self.ws_url)});"
                "ws.onopen = () => { document.title = 'open'; };"
                "ws.onclose = (e) => { if (document.title !== 'open') document.title = 'refused ' + e.code; };"
                "</script>").encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_page_from_another_origin_cannot_open_the_websocket(server, bea):
    _ForeignPage.ws_url = f"ws://127.0.0.1:{server.web_port}/ws"
    foreign = ThreadingHTTPServer(("127.0.0.1", 0), _ForeignPage)
    thread = threading.Thread(target=foreign.serve_forever, daemon=True)
    thread.start()
    try:
        bea.driver.get(f"http://127.0.0.1:{foreign.server_address[1]}/")
        bea.wait(lambda d: d.title.startswith("refused"), message=f"title {bea.driver.title!r}")
        assert bea.driver.title == "refused 1006"  # the handshake failed: no WebSocket
        assert re.search(r'"GET /ws HTTP/1.1" 403 ', server.log())  # and the server said why: 403
    finally:
        foreign.shutdown()
        foreign.server_close()
        thread.join(5)


def test_a_page_closed_before_logging_in_connects_again_to_log_in(tmp_path):
    """The server's login timeout closes an idle page; logging in then connects again first."""
    quick = Daemon(str(tmp_path / "data"), "--login-timeout", "1", web=True).start()
    browser = _browser(quick)
    try:
        browser.open()
        browser.wait(lambda d: browser.text_of("#status") == "Disconnected", message="not closed by the timeout")
        assert browser.text_of("#login-error")  # the server said why
        assert browser.find("#register-button").is_enabled()
        browser.register("eve")  # (within the new connection's second)
        assert browser.text_of("#status") == "Connected"
    finally:
        browser.quit()
        quick.stop()
    assert quick.unhandled_errors() == [], quick.log()
