"""The real daemon (issue 13): a last-seen time, from a log out and from the shut-down, survives a restart."""

from __future__ import annotations

from daemon import Conn, Daemon

SEEN = r"  last seen \d{4}-\d\d-\d\d \d\d:\d\d UTC \(\d+ s ago\)"


def test_last_seen_times_survive_a_restart(tmp_path):
    data = str(tmp_path / "data")
    d = Daemon(data).start()
    try:
        bob = Conn(d.port)
        bob.register("bob")
        bob.send("quit")  # seen: logged out
        ann = Conn(d.port)
        ann.register("ann")
        ann.send("whois bob")
        ann.expect(SEEN)
    finally:
        d.stop()  # ann is still online: seen at the shut-down
    again = Daemon(data, port=d.port).start()
    try:
        carol = Conn(again.port)
        carol.register("carol")
        carol.send("whois BOB")
        assert "bob: account created " in carol.expect(SEEN)
        carol.send("whois ann")
        carol.expect("ann: account created .*\r\n" + SEEN)
    finally:
        again.stop()
    assert again.unhandled_errors() == [], again.log()
