"""
A real IRC client against the real daemon: Debian's WeeChat, headless
(``weechat-headless``), logs in with SASL PLAIN, joins #lab, receives a line
from a telnet user and sends one back; and what its channel shows of a user
who drops twice and of its /ban. The tests read WeeChat's channel log and
write commands to its FIFO; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from daemon import Conn, Daemon, free_port

pytestmark = pytest.mark.skipif(shutil.which("weechat-headless") is None,
                                reason="weechat-headless is not installed (.ci/run installs it with apt)")


def wait_for_text(path: str, text: str, timeout: float = 15.0) -> str:
    """The contents of ``path`` once they contain ``text``."""
    deadline = time.monotonic() + timeout
    contents = ""
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as handle:
                contents = handle.read()
            if text in contents:
                return contents
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path} within {timeout} s; it has: {contents[-2000:]!r}")


def start_weechat(home: Any, irc_port: int, nick: str) -> tuple[subprocess.Popen[bytes], str]:
    """WeeChat in ``home`` logging in as ``nick`` (password secret1) with SASL PLAIN, joining #lab; (process, FIFO)."""
    home.mkdir()
    fifo = str(home / "fifo")
    commands = ";".join([
        f"/set fifo.file.path {fifo}", "/set logger.file.flush_delay 0",
        f"/server add chatd 127.0.0.1/{irc_port}", "/set irc.server.chatd.ssl off",
        "/set irc.server.chatd.sasl_mechanism plain", f"/set irc.server.chatd.sasl_username {nick}",
        "/set irc.server.chatd.sasl_password secret1", f"/set irc.server.chatd.nicks {nick}",
        "/set irc.server.chatd.autojoin #lab", "/connect chatd",
    ])
    process = subprocess.Popen(
        ["weechat-headless", "-d", str(home), "--stdout", "-P", "irc,fifo,logger", "-r", commands],
        stdin=subprocess.DEVNULL, stdout=open(home / "stdout.txt", "w"), stderr=subprocess.STDOUT)
    return process, fifo


def send_weechat(fifo: str, command: str) -> None:
    """One line to WeeChat's FIFO: ``irc.chatd.#lab *text`` (to a buffer) or ``*/command`` (the current one)."""
    with open(fifo, "w", encoding="utf-8") as pipe:  # (WeeChat made the FIFO before it connected)
        pipe.write(command + "\n")


def stop_weechat(weechat: subprocess.Popen[bytes] | None) -> None:
    """Kill WeeChat if it still runs (the test failed before its /quit)."""
    if weechat is not None and weechat.poll() is None:
        weechat.kill()
        weechat.wait(5)


def test_weechat_logs_in_with_sasl_and_chats_with_a_telnet_user(tmp_path):
    irc_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), "--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1").start()
    home = tmp_path / "weechat"
    weechat = None
    try:
        setup = Conn(daemon.port)
        setup.register("wee")
        setup.close()
        bob = Conn(daemon.port)
        bob.register("bob")
        bob.enter("bob", "lab", create=True)
        weechat, fifo = start_weechat(home, irc_port, "wee")
        bob.expect(r"\* wee joined lab", timeout=20)
        bob.send("hello from telnet")
        log = str(home / "logs" / "irc.chatd.#lab.weechatlog")
        wait_for_text(log, "@bob\thello from telnet")
        server_log = wait_for_text(str(home / "logs" / "irc.server.chatd.weechatlog"), "SASL")
        assert "You are now logged in as wee" in server_log
        send_weechat(fifo, "irc.chatd.#lab *hello from weechat")
        bob.expect(r"wee: hello from weechat\r\n")
        send_weechat(fifo, "*/quit")
        weechat.wait(15)
        bob.expect(r"wee left lab")
        assert daemon.unhandled_errors() == []
    finally:
        stop_weechat(weechat)
        daemon.stop()


def test_weechat_sees_every_quit_of_a_returning_user_and_its_ban_removes_it(tmp_path):
    """
    Issue 16 (tester16u): WeeChat's nick list kept ghosts (only a nick's
    first QUIT was sent) and a banned member (only MODE +b was sent); its
    ``/ban tel`` (its own mask) was refused. Read from WeeChat's channel log.
    """
    irc_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), "--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1").start()
    home = tmp_path / "weechat"
    weechat = None
    try:
        for name in ("wee", "tel"):
            setup = Conn(daemon.port)
            setup.register(name)
            setup.close()
        weechat, fifo = start_weechat(home, irc_port, "wee")
        log = str(home / "logs" / "irc.chatd.#lab.weechatlog")
        wait_for_text(log, "wee", timeout=20)  # (wee joined #lab: it created the room, its owner)
        for round in range(1, 3):
            tel = Conn(daemon.port)
            tel.login("tel")
            tel.enter("tel", "lab")
            tel.close()  # (the connection drops)
            contents = wait_for_text(log, "has quit (Connection closed)")
            deadline = time.monotonic() + 15
            while contents.count("has quit (Connection closed)") < round and time.monotonic() < deadline:
                time.sleep(0.05)
                contents = wait_for_text(log, "has quit")
            assert contents.count("has quit (Connection closed)") == round
        tel = Conn(daemon.port)
        tel.login("tel")
        tel.enter("tel", "lab")
        send_weechat(fifo, "irc.chatd.#lab */ban tel")
        tel.expect(r"You were banned from lab by wee")
        contents = wait_for_text(log, "has kicked tel")
        assert "wee has kicked tel (Banned)" in contents
        send_weechat(fifo, "*/quit")
        weechat.wait(15)
        assert daemon.unhandled_errors() == []
    finally:
        stop_weechat(weechat)
        daemon.stop()
