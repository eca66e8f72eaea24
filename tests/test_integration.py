"""Integration tests: the real daemon (twistd -n chatd) in a subprocess, real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import threading

from daemon import Conn, Daemon
from helpers import data_rows


def _room_user(port: int, name: str, room: str) -> Conn:
    c = Conn(port)
    c.register(name)
    c.send(f"join {room}")
    c.expect(rf"Entered room {room}")
    return c


def test_chat_across_clients(daemon):
    """Register, create, join; a broadcast reaches everyone in the room and nobody outside it; /msg works."""
    port = daemon.port
    owner = Conn(port)
    owner.register("owner")
    owner.send("create lab")
    owner.expect(r"Room lab created\.")
    a = _room_user(port, "ann", "lab")
    b = _room_user(port, "ben", "lab")
    outsider = _room_user(port, "out", "public")
    a.expect(r"\* ben joined lab")
    a.send("hello from ann")
    a.expect(r"\[\d\d:\d\d:\d\d\] ann: hello from ann\r\n")
    b.expect(r"\[\d\d:\d\d:\d\d\] ann: hello from ann\r\n")
    b.send("/msg out private words")
    outsider.expect(r"\*ben\* private words")
    b.expect(r"-> \*out\* private words")
    outsider.send("/who")
    seen = outsider.expect(r"In public \(1\): out")
    assert "hello from ann" not in seen
    # Delete the room with members inside: they are told, and leave it with /exit.
    owner.send("delete lab")
    owner.expect(r"Room lab deleted\.")
    a.expect(r"Room lab was deleted by owner; type /exit to go back to the main menu\.")
    b.expect(r"Room lab was deleted by owner")
    a.send("/exit")
    a.expect(r"menu> ")
    a.send("list")
    listing = a.expect(r"menu> ")
    assert "lab" not in listing
    for c in (owner, a, b, outsider):
        c.close()


def test_restart_keeps_accounts_and_rooms(tmp_path):
    """Accounts and rooms saved before a clean stop (SIGTERM) are there after a restart."""
    data = str(tmp_path / "data")
    pidfile = str(tmp_path / "chatd.pid")
    first = Daemon(data, pidfile=pidfile).start()
    assert int(open(pidfile).read()) == first.process.pid
    c = Conn(first.port)
    c.register("keeper", "longpassword")
    c.send("create kept")
    c.expect(r"Room kept created\.")
    assert first.stop() in (0, -signal.SIGTERM)  # twistd re-raises the signal it stopped on
    assert c.closed()
    assert "stopped cleanly" in first.log()
    assert not os.path.exists(pidfile)
    second = Daemon(data, port=first.port).start()
    try:
        d = Conn(second.port)
        d.login("keeper", "longpassword")
        d.send("info kept")
        d.expect(r"Owner: keeper")
        d.send("login keeper")  # already logged in
        d.expect(r"already logged in")
        events = [row[1] for row in data_rows(os.path.join(data, "log.csv"))]
        assert events[:3] == ["register", "login", "room_create"]
    finally:
        second.stop()


def test_sigterm_tells_users_and_flushes_log(tmp_path):
    d = Daemon(str(tmp_path / "data")).start()
    c = _room_user(d.port, "stayer", "public")
    assert d.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    c.expect(r"The server is shutting down")
    assert "stopped cleanly" in d.log()
    rows = list(data_rows(tmp_path / "data" / "log.csv"))
    assert [row[1] for row in rows][-1] in ("disconnect", "leave", "join")
    assert d.unhandled_errors() == []


def test_kill_9_during_registrations(tmp_path):
    """SIGKILL while many registrations are in flight: the server starts again and every acknowledged account works."""
    data = str(tmp_path / "data")
    d = Daemon(data).start()
    acknowledged: list[str] = []
    lock = threading.Lock()

    def register_many(worker: int) -> None:
        for i in range(200):
            name = f"w{worker}u{i}"
            try:
                c = Conn(d.port, timeout=5)
                c.register(name, "password1")
                with lock:
                    acknowledged.append(name)
                c.close()
            except (AssertionError, OSError):
                return

    threads = [threading.Thread(target=register_many, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline_hit = threading.Event()
    while not deadline_hit.wait(0.05):
        with lock:
            if len(acknowledged) >= 30:
                break
    d.stop(signal.SIGKILL)
    for t in threads:
        t.join(30)
    with lock:
        done = list(acknowledged)
    assert len(done) >= 30
    again = Daemon(data, port=d.port).start()
    try:
        for name in done[-5:] + done[:5]:
            c = Conn(again.port)
            c.login(name, "password1")
            c.close()
        c = Conn(again.port)
        c.register("afterwards")
        c.close()
    finally:
        again.stop()
    assert again.unhandled_errors() == []


def test_torn_line_is_dropped_and_reported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "users.csv").write_bytes(b'ok,"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",2026-01-01T00:00:00Z\ntorn,"$argon')
    d = Daemon(str(data)).start()
    try:
        c = Conn(d.port)
        c.register("torn")  # the torn name is free again
        c.close()
    finally:
        d.stop()
    assert "dropped a torn last line" in d.log()
    names = [row[0] for row in data_rows(data / "users.csv")]
    assert names == ["ok", "torn"]


def test_tagged_mode_over_the_wire(daemon):
    c = Conn(daemon.port)
    c.expect(r"menu> ")
    c.send("/client pytest 1.0")
    c.expect(r"00 Tagged mode on for pytest 1\.0\.\r\n11 menu>\r\n")
    c.send("register tagger")
    c.expect(r"01 Choose a password \(at least 6 characters\):\r\n")
    c.send("secret1", "secret1")
    c.expect(r"00 Registered and logged in as tagger\.\r\n11 menu>\r\n")
    c.send("public")
    c.expect(r"111 Entered room public")
    c.send("tagged hello")
    c.expect(r"111 \[\d\d:\d\d:\d\d\] tagger: tagged hello\r\n")


def test_hostile_session_no_traceback(daemon):
    """Garbage, escapes, IAC, over-long lines: clean errors, the connection lives, no traceback in the log."""
    c = Conn(daemon.port)
    c.expect(r"menu> ")
    c.send(b"\xff\xfd\x18\xff\xfa\x18\x01\xff\xf0\xff\xf4\xff\xff\r\n")
    c.send(b"\xff\x99garbage after IAC\r\n")
    c.send(b"\x00\x01\x02\x1b[31m\xc3\x28\r\n")
    c.send(b"A" * 20000 + b"\r\n")
    c.expect(r"longer than 4096 bytes")
    c.send("ping")
    c.expect(r"pong")
    watcher = _room_user(daemon.port, "watcher", "public")
    evil = _room_user(daemon.port, "evil", "public")
    evil.send(b"\x1b]0;title\x07\x1b[2Jbad\xff\xfb\x01 stuff\r\n")
    line = watcher.expect(r"evil: [^\r]*\r\n")
    assert "\x1b" not in line and "\x07" not in line and "\xff" not in line
    socket_raw = Conn(daemon.port)
    socket_raw.sock.close()  # vanish without a word
    c.send("ping")
    c.expect(r"pong")
