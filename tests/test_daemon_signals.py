"""Stopping the real daemon with SIGINT (Ctrl-C under ``twistd -n``) is as clean as SIGTERM."""

from __future__ import annotations

import os
import signal

from daemon import Conn, Daemon
from helpers import data_rows


def test_sigint_tells_users_flushes_log_and_removes_pidfile(tmp_path):
    pidfile = str(tmp_path / "chatd.pid")
    d = Daemon(str(tmp_path / "data"), pidfile=pidfile).start()
    try:
        assert int(open(pidfile).read()) == d.process.pid
        c = Conn(d.port)
        c.register("stayer")
        c.send("join public")
        c.expect(r"Entered room public")
        status = d.stop(signal.SIGINT)
    finally:
        d.stop(signal.SIGKILL)
    assert status in (0, -signal.SIGINT), d.log()  # twistd re-raises the signal it stopped on
    c.expect(r"The server is shutting down")
    assert c.closed()
    assert "stopped cleanly" in d.log()
    assert not os.path.exists(pidfile)
    rows = [(row[1], row[2], row[3]) for row in data_rows(tmp_path / "data" / "log.csv")]
    # The disconnect row (one per disconnect, naming the room) is queued during the shutdown itself:
    # only the final flush writes it.
    assert rows[-2:] == [("join", "stayer", "public"), ("disconnect", "stayer", "public")], rows
    assert d.unhandled_errors() == [], d.log()


def test_a_second_sigterm_or_ctrl_c_during_the_stop_is_logged_not_a_traceback(tmp_path):
    """
    Attacker: SIGTERM, then SIGTERM, SIGHUP and SIGINT while the stop waits for a connection that does not
    read; Twisted's handler logged ReactorNotRunning tracebacks. Now: one line each, a stop bounded by
    --close-grace, and a clean end.
    """
    import socket
    import time

    d = Daemon(str(tmp_path / "data"), "--close-grace", "2", "--max-outbound", "64M", "--flood-rate", "0").start()
    try:
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        stuck.connect(("127.0.0.1", d.port))
        stuck.sendall(b"register stuck\r\nsecret1\r\nsecret1\r\npublic\r\n")
        talker = Conn(d.port)
        talker.register("talker")
        talker.send("public")
        talker.expect(r"Entered room public")
        time.sleep(0.5)  # the stuck member is in the room (it never reads a byte)
        for _ in range(20):
            talker.send(*["x" * 3000] * 100)  # 6 MB the stuck member never takes: its close waits --close-grace
        talker.drain(0.5)
        started = time.monotonic()
        d.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        for again in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            d.process.send_signal(again)
            time.sleep(0.1)
        status = d.stop(signal.SIGTERM, timeout=15)
        elapsed = time.monotonic() - started
    finally:
        d.stop(signal.SIGKILL)
    assert status in (0, -signal.SIGTERM), d.log()
    assert elapsed < 2 + 1 + 2, elapsed  # --close-grace + CLOSE_MARGIN, and process start-up slack
    assert "SIGTERM received: already shutting down" in d.log()
    assert "SIGINT received: already shutting down" in d.log()
    assert "stopped cleanly" in d.log()
    assert d.unhandled_errors() == [], d.log()
