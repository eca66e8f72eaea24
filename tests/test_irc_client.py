"""
A real IRC client against the real daemon: Debian's WeeChat, headless
(``weechat-headless``), logs in with SASL PLAIN, joins #lab, receives a line
from a telnet user and sends one back. The test reads WeeChat's channel log
and writes commands to its FIFO; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

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


def test_weechat_logs_in_with_sasl_and_chats_with_a_telnet_user(tmp_path):
    irc_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), "--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1").start()
    home = tmp_path / "weechat"
    home.mkdir()
    fifo = str(home / "fifo")
    weechat = None
    try:
        setup = Conn(daemon.port)
        setup.register("wee")
        setup.close()
        bob = Conn(daemon.port)
        bob.register("bob")
        bob.enter("bob", "lab", create=True)
        commands = ";".join([
            f"/set fifo.file.path {fifo}", "/set logger.file.flush_delay 0",
            f"/server add chatd 127.0.0.1/{irc_port}", "/set irc.server.chatd.ssl off",
            "/set irc.server.chatd.sasl_mechanism plain", "/set irc.server.chatd.sasl_username wee",
            "/set irc.server.chatd.sasl_password secret1", "/set irc.server.chatd.nicks wee",
            "/set irc.server.chatd.autojoin #lab", "/connect chatd",
        ])
        weechat = subprocess.Popen(
            ["weechat-headless", "-d", str(home), "--stdout", "-P", "irc,fifo,logger", "-r", commands],
            stdin=subprocess.DEVNULL, stdout=open(home / "stdout.txt", "w"), stderr=subprocess.STDOUT)
        bob.expect(r"\* wee joined lab", timeout=20)
        bob.send("hello from telnet")
        log = str(home / "logs" / "irc.chatd.#lab.weechatlog")
        wait_for_text(log, "@bob\thello from telnet")
        server_log = wait_for_text(str(home / "logs" / "irc.server.chatd.weechatlog"), "SASL")
        assert "You are now logged in as wee" in server_log
        with open(fifo, "w", encoding="utf-8") as pipe:  # (WeeChat made the FIFO before it connected)
            pipe.write("irc.chatd.#lab *hello from weechat\n")
        bob.expect(r"wee: hello from weechat\r\n")
        with open(fifo, "w", encoding="utf-8") as pipe:
            pipe.write("*/quit\n")
        weechat.wait(15)
        bob.expect(r"wee left lab")
        assert daemon.unhandled_errors() == []
    finally:
        if weechat is not None and weechat.poll() is None:
            weechat.kill()
            weechat.wait(5)
        daemon.stop()
