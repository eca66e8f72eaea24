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
