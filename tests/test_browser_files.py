"""
Files between the browser client and the bundled client (issue 15), in a real browser: Debian's Chromium
driven by selenium (tests/browser.py) against a real daemon, the bundled client ``chat`` in a subprocess
(tests/test_client_integration.py's ChatProcess), which saves what it receives by itself.

A file picked in the page (selenium types its path into the file input) arrives at the bundled client
hash-equal; one the bundled client sends is downloaded, checked and saved by the page (Chromium's download
directory set through the DevTools protocol) hash-equal. With ``CHATD_SCREENSHOTS=1`` the run also saves
docs/screenshots/transfer.png: a large upload in progress.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time

import pytest

from browser import Browser, missing
from daemon import ROOT
from test_browser import server  # noqa: F401  (the module's daemon: the same fixture, one per module)
from test_client_integration import ChatProcess

if missing():
    pytest.skip(f"no browser for the browser tests: {missing()}", allow_module_level=True)

SCREENSHOTS = os.environ.get("CHATD_SCREENSHOTS") == "1"
SHOTS = os.path.join(ROOT, "docs", "screenshots")
WAIT = 30.0


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def random_file(path: str, size: int) -> str:
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(left, 1 << 20))
            handle.write(block)
            left -= len(block)
    return str(path)


@pytest.fixture(scope="module")
def ann(server, tmp_path_factory):
    """ann in a browser, in public; Chromium saves downloads to ``ann.downloads`` without asking."""
    browser = Browser(f"http://127.0.0.1:{server.web_port}/")
    browser.downloads = str(tmp_path_factory.mktemp("ann-downloads"))
    browser.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                   {"behavior": "allow", "downloadPath": browser.downloads})
    browser.open()
    browser.register("ann")
    browser.join("public")
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def dave(server, tmp_path_factory):
    """dave with the bundled client, in public."""
    downloads = str(tmp_path_factory.mktemp("dave-downloads"))
    process = ChatProcess(server.port, downloads)
    process.downloads = downloads
    process.join_room("dave")
    yield process
    process.kill()


def transfer_state(browser: Browser, kind: str, name: str) -> str | None:
    """data-state of the newest upload or download line for ``name`` (None while under way or absent)."""
    return browser.driver.execute_script(
        "const lines = Array.from(document.querySelectorAll('#log .line.transfer.' + arguments[0]))"
        "  .filter(l => l.querySelector('.file-name').textContent === arguments[1]);"
        "const line = lines[lines.length - 1]; return line ? (line.dataset.state || '') : null;", kind, name)


def test_a_file_picked_in_the_page_arrives_at_the_bundled_client_hash_equal(server, ann, dave, tmp_path):
    path = random_file(tmp_path / "from the browser.bin", 3 * 1024 * 1024 + 17)
    ann.find("#file-input").send_keys(path)
    ann.wait(lambda d: transfer_state(ann, "upload", "from the browser.bin") == "done", WAIT,
             f"the upload did not finish: {ann.log_lines()[-3:]}")
    assert any("sent to 1 person (SHA-256 verified)" in line for line in ann.log_lines()
               if "from the browser.bin" in line)
    saved = dave.expect(r"Saved from the browser\.bin from ann to (.+) \(SHA-256 verified\)\.", WAIT)
    assert sha256_of(saved.group(1)) == sha256_of(path)
    ann.type_line("after the file")  # (its event comes after the room's file events)
    ann.wait(lambda d: ann.find_all("#log .line.say[data-id]")[-1].text.endswith("ann: after the file"))
    # The sender's log has one line for the file, its upload line: not also "* ann is sending" and "* ann shared".
    assert [line for line in ann.log_lines() if "from the browser.bin" in line] == [
        ann.find_all("#log .line.transfer.upload")[-1].get_attribute("textContent")]
    assert ann.errors() == []


def test_a_file_sent_by_the_bundled_client_downloads_in_the_page_hash_equal(server, ann, dave, tmp_path):
    path = random_file(tmp_path / "report \u00e9t\u00e9.pdf", 2 * 1024 * 1024 + 5)
    dave.type(f"/send {path}")
    ann.wait(lambda d: transfer_state(ann, "download", "report \u00e9t\u00e9.pdf") == "verified", WAIT,
             f"the download was not verified: {ann.log_lines()[-3:]}")
    line = ann.find_all("#log .line.transfer.download")[-1]
    assert "dave shared report \u00e9t\u00e9.pdf (2.0 MiB)" in line.text and "SHA-256 verified" in line.text
    save = line.find_element("css selector", "a.save")
    assert save.get_attribute("download") == "report \u00e9t\u00e9.pdf"
    assert save.get_attribute("href").startswith("blob:")
    save.click()
    target = os.path.join(ann.downloads, "report \u00e9t\u00e9.pdf")
    ann.wait(lambda d: os.path.exists(target) and not any(n.endswith(".crdownload") for n in os.listdir(ann.downloads)),
             WAIT, f"not saved: {os.listdir(ann.downloads)}")
    assert sha256_of(target) == sha256_of(path)
    assert ann.errors() == []


def test_a_file_dropped_on_the_room_is_sent(server, ann, dave):
    """Drag-and-drop (DragEvents with a DataTransfer holding a File, as a drop from the desktop makes them):
    the drop hint shows while a file is dragged over the room, and the dropped file arrives."""
    data = "".join(f"line {i} of the dropped file\n" for i in range(5000)).encode()
    ann.driver.execute_script("""
        const zone = document.getElementById("room-view");
        const dt = new DataTransfer();
        dt.items.add(new File([arguments[0]], "dropped.txt", {type: "text/plain"}));
        window.dropTest = dt;
        zone.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: dt, bubbles: true, cancelable: true}));
    """, data.decode())
    assert ann.find("#room-view .drop-hint").is_displayed()
    assert ann.text_of("#room-view .drop-hint") == "Drop files here to send them to the room"
    ann.driver.execute_script("""
        document.getElementById("room-view").dispatchEvent(
            new DragEvent("drop", {dataTransfer: window.dropTest, bubbles: true, cancelable: true}));
    """)
    assert not ann.find("#room-view .drop-hint").is_displayed()
    ann.wait(lambda d: transfer_state(ann, "upload", "dropped.txt") == "done", WAIT,
             f"the dropped file was not sent: {ann.log_lines()[-3:]}")
    saved = dave.expect(r"Saved dropped\.txt from ann to (.+) \(SHA-256 verified\)\.", WAIT)
    assert sha256_of(saved.group(1)) == hashlib.sha256(data).hexdigest()


def upload_progress(browser: Browser, name: str) -> float:
    """How far the newest upload line of ``name`` shows it sent (0 to 1; -1 without a bar)."""
    return browser.driver.execute_script(
        "const lines = Array.from(document.querySelectorAll('#log .line.transfer.upload'))"
        "  .filter(l => l.querySelector('.file-name').textContent === arguments[0]);"
        "const bar = lines.length ? lines[lines.length - 1].querySelector('progress') : null;"
        "return bar && !bar.hidden ? bar.value / bar.max : -1;", name)


def test_a_large_upload_shows_its_progress_and_can_be_cancelled(server, ann, dave, tmp_path):
    """The daemon is stopped (SIGSTOP) mid-upload, so the bar stands still part of the way while the socket's
    buffers are full: the screenshot's moment, and the Cancel button's."""
    path = random_file(tmp_path / "big.iso", 60 * 1024 * 1024)
    ann.find("#file-input").send_keys(path)
    ann.wait(lambda d: upload_progress(ann, "big.iso") > 0.01, WAIT, "the upload did not start")
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        readings: list[float] = []

        def standing(_: object) -> bool:
            readings.append(upload_progress(ann, "big.iso"))
            return len(readings) > 5 and readings[-1] == readings[-6]

        ann.wait(standing, WAIT, f"the bar did not stand still: {readings[-3:]}")
        assert 0 < readings[-1] < 1
        label = ann.text_of("#log .line.transfer.upload:has(progress:not([hidden])) .progress-label")
        assert re.fullmatch(r"\d+\.\d MiB of 60\.0 MiB \(\d+%\)", label), label
        row = ann.driver.execute_script(  # the bar, its state and Cancel on one row (not wrapped below)
            "const l = document.querySelector('#log .line.transfer.upload:has(progress:not([hidden]))');"
            "return ['progress', '.state', '.cancel'].map(s => l.querySelector(s).getBoundingClientRect())"
            "  .map(r => Math.round(r.top + r.height / 2));")
        assert max(row) - min(row) <= 4, row
        if SCREENSHOTS:
            ann.screenshot(os.path.join(SHOTS, "transfer.png"))
        ann.find("#log .line.transfer.upload .cancel").click()
        ann.wait(lambda d: transfer_state(ann, "upload", "big.iso") == "failed", WAIT)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    dave.expect(r"ann's file big\.iso was not sent \(the sender cancelled it\)", WAIT)
    assert any("not sent: cancelled" in line for line in ann.log_lines() if "big.iso" in line)
    spool = os.path.join(server.data_dir, "spool")
    deadline = time.monotonic() + 10
    while os.listdir(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(spool) == []
    assert ann.errors() == []


def test_both_hashes_of_the_page_agree_with_python(ann):
    """crypto.subtle (a secure context: 127.0.0.1) and the vendored js-sha256, fed in 4 MiB slices, over a
    blob of 9 MiB + 3 bytes (three slices, the last short)."""
    ann.driver.set_script_timeout(WAIT)
    size = 9 * 1024 * 1024 + 3
    subtle, streamed = ann.driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const bytes = new Uint8Array(arguments[0]);
        for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 13)) & 255;
        const blob = new Blob([bytes]);
        import("/files.js").then(async (m) => done([await m.sha256Hex(blob, true), await m.sha256Hex(blob, false)]));
    """, size)
    expected = hashlib.sha256(bytes((i * 7 + (i >> 13)) & 255 for i in range(size))).hexdigest()
    assert subtle == streamed == expected
