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


def test_a_moderated_room_mutes_unvoiced_telnet_and_irc_members_until_voiced_and_stays_so(tmp_path):
    """
    ``/moderated on`` and ``/voice`` (issue 16) hold for every front-end: a
    telnet member is refused with chatd's error, an IRC guest with 404; IRC
    ``MODE +v`` gives a voice the telnet members see; both last a restart.
    """
    from daemon import free_port

    data, irc_port = str(tmp_path / "data"), free_port()
    options = ("--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1", "--irc-guests")
    d = Daemon(data, *options).start()
    try:
        ann = Conn(d.port)
        ann.register("ann")
        ann.enter("ann", "lab", create=True)
        bob = in_room(d.port, "bob", "lab")
        carol = Conn(irc_port)
        carol.send("NICK carol", "USER c 0 * :Carol", "JOIN #lab")
        carol.expect(r" 366 carol #lab ")
        ann.send("/moderated on")
        ann.expect(r"\* ann turned moderated on\r\n")
        carol.expect(r":ann!ann@chatd MODE #lab \+m\r\n")
        bob.send("may I?")
        bob.expect(r"Error: lab is moderated: only voiced members and operators may speak\.\r\n")
        carol.send("PRIVMSG #lab :and I?")
        carol.expect(r" 404 carol #lab :Cannot send to channel: lab is moderated")
        ann.send("/op carol")
        ann.expect(r"\* ann made carol an operator\r\n")
        carol.send("MODE #lab +v bob")
        bob.expect(r"\* carol gave bob a voice\r\n")
        bob.send("thank you")
        carol.expect(r":bob!bob@chatd PRIVMSG #lab :thank you\r\n")
        carol.send("NAMES #lab")
        carol.expect(r" 353 carol = #lab :@ann \+bob @carol\r\n")
        assert not d.unhandled_errors()
    finally:
        d.stop()
    d = Daemon(data, *options, port=d.port).start()
    try:
        bob = Conn(d.port)
        bob.login("bob")
        bob.enter("bob", "lab")
        dave = in_room(d.port, "dave", "lab")
        dave.send("/who", "hello?")
        dave.expect(r"In lab \(2\): \+bob, dave\r\n")
        dave.expect(r"Error: lab is moderated: only voiced members and operators may speak\.\r\n")
        bob.send("still voiced")
        dave.expect(r"bob: still voiced\r\n")
        assert not d.unhandled_errors()
    finally:
        d.stop()
    log = open(f"{data}/log.csv", encoding="utf-8").read()
    assert ",room_setting,ann,lab,name=moderated&value=on" in log and ",voice,carol,lab,target=bob" in log
