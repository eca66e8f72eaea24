"""The real daemon (issue 13): what users are told is done survives kill -9: a changed password, a deleted
account, a private message queued for someone offline."""

from __future__ import annotations

import signal

from daemon import Conn, Daemon


def test_acknowledged_account_changes_and_queued_messages_survive_kill_9(tmp_path):
    data = str(tmp_path / "data")
    d = Daemon(data).start()
    try:
        bob, gone = Conn(d.port), Conn(d.port)
        bob.register("bob")
        bob.send("quit")
        gone.register("gone")
        gone.send("create gonesroom", "deleteme", "secret1")
        gone.expect(r"Account gone deleted\.")
        ann = Conn(d.port)
        ann.register("ann")
        ann.send("password", "secret1", "changed1", "changed1")
        ann.expect(r"Password changed\.")
        ann.send("public", "/away lunch", "/msg bob kept for you")
        ann.expect(r"Queued, bob is offline: they get it at their next login\.")
    finally:
        d.stop(signal.SIGKILL)
    again = Daemon(data, port=d.port).start()
    try:
        bob = Conn(again.port)
        bob.expect(r"menu> ")
        bob.send("login bob", "secret1")
        text = bob.expect(r"kept for you")
        assert "1 private message arrived while you were offline, the first at " in text
        assert "*ann* kept for you" in text
        ann = Conn(again.port)
        ann.login("ann", "changed1")
        ann.send("users", "list")
        text = ann.expect(r"Rooms \(\d+\):")
        assert "Online (2): ann, bob" in text  # away ended with the process
        gone = Conn(again.port)
        gone.expect(r"menu> ")
        gone.send("login gone", "secret1")
        gone.expect(r"Login failed: unknown name or wrong password\.")
        assert "gonesroom" not in ann.drain()
    finally:
        again.stop()
    assert again.unhandled_errors() == [], again.log()
