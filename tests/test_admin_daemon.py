"""
The real daemon and server administration (issue 14): chatd-admin refuses
(exit status 2, nothing changed) while a server runs on the data directory,
a second server on it is refused at start, and once the server has stopped
the tool works and the next start has its change; an admin named by
``--admin`` locks an account over a real socket.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from daemon import ROOT, Conn, Daemon


def chatd_admin(data: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``chatd-admin`` as its console script runs it (``chatd.admin_tool:main``), from the source tree."""
    return subprocess.run([sys.executable, "-m", "chatd.admin_tool", "--data-dir", data, *argv], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=60)


def test_the_tool_and_a_second_server_are_refused_while_a_server_runs(tmp_path):
    data = str(tmp_path / "data")
    d = Daemon(data, "--admin", "root").start()
    try:
        bob = Conn(d.port)
        bob.register("bob")
        root = Conn(d.port)
        root.register("root")
        done = chatd_admin(data, "lock", "bob")
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == (f"chatd-admin: chatd is running on this data directory (pid {d.process.pid}); "
                               "stop it first or use the in-chat admin commands\n")
        sock = os.path.join(str(tmp_path), "second.sock")
        second = Daemon(data, "--listen", f"unix:{sock}")
        with pytest.raises(RuntimeError, match=rf"chatd is running on this data directory \(pid {d.process.pid}\)"):
            second.start()
        assert second.process.returncode == 1
        assert not os.path.exists(sock)  # what the refused server bound is gone with it
        bob.send("public", "hello")
        bob.expect(r"bob: hello")  # the running server was not disturbed
        root.send("lock bob spam")
        root.expect(r"Account bob locked\.")
        bob.expect(r"Your account was locked by root, an admin: spam")
        assert bob.closed()
    finally:
        d.stop()
    listed = chatd_admin(data, "list-users")
    assert listed.returncode == 0 and "bob\t" in listed.stdout and "locked (spam)" in listed.stdout
    assert chatd_admin(data, "unlock", "bob").stdout == "Account bob unlocked.\n"
    again = Daemon(data, port=d.port).start()
    try:
        bob = Conn(again.port)
        bob.login("bob")
    finally:
        again.stop()
    assert again.unhandled_errors() == [], again.log()
