"""
Room authority with the real daemon (issue 14): a ban is kept across a
clean restart (and still ends on time), and a kick over a plain telnet-style
connection (CRLF lines, no client), as docs/PROTOCOL.md "Room authority" says.
"""

from __future__ import annotations

from daemon import Conn, Daemon, in_room


def test_a_ban_lasts_across_a_restart_and_a_kick_works_over_telnet(tmp_path):
    data = str(tmp_path / "data")
    d = Daemon(data).start()
    try:
        ann = Conn(d.port)
        ann.register("ann")
        ann.enter("ann", "lab", create=True)
        bob = in_room(d.port, "bob", "lab")
        carol = in_room(d.port, "carol", "lab")
        ann.send("/kick carol stop that")
        ann.expect(r"\* ann kicked carol \(stop that\)\r\n")
        carol.expect(r"You were kicked from lab by ann: stop that; type /exit to go back to the main menu\.\r\n")
        carol.send("still here?")
        carol.expect(r"Error: you were kicked from lab; nothing you type here is sent\.")
        ann.send("/ban bob 2h spam", "/topic the lab")
        ann.expect(r"bob is banned from lab for 2h\.\r\n")
        bob.expect(r"You were banned from lab by ann for 2h: spam; type /exit")
        bob.send("/exit", "join lab")
        bob.expect(r"Error: you are banned from lab until \d\d:\d\d UTC: spam\r\n")
        ann.expect(r"\* ann set the topic: the lab\r\n")
    finally:
        d.stop()
    d = Daemon(data, port=d.port).start()
    try:
        bob = Conn(d.port)
        bob.login("bob")
        bob.send("join lab")
        bob.expect(r"Error: you are banned from lab until \d\d:\d\d UTC: spam\r\n")
        carol = Conn(d.port)
        carol.login("carol")
        carol.send("join lab")
        carol.expect(r"Entered room lab \(1 here\)\. Type /help for commands, /exit to leave\.\r\nTopic: the lab\r\n")
        carol.send("/ban bob")
        carol.expect(r"Error: only operators of lab may use /ban\.\r\n")
        assert not d.unhandled_errors()
    finally:
        d.stop()
    log = open(f"{data}/log.csv", encoding="utf-8").read()
    assert ",kick,ann,lab,target=carol&reason=stop%20that" in log
    assert ",ban,ann,lab,target=bob&until=" in log and "&reason=spam" in log
