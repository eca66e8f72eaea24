"""
Sessions that end while their connection cannot close (issue 11, kind 2), against
the real daemon on 127.0.0.1: a reader with a 4 KiB receive window that stopped
reading, and a TLS peer that never sends a byte. Every wait is bounded.
"""

from __future__ import annotations

import socket
import time

from daemon import Conn, Daemon, free_port
from helpers import data_rows
from test_faults_daemon import _slurp
from test_tls import make_certificate


def _stuck(port: int) -> Conn:
    """A connection with a 4 KiB receive window (it will stop reading)."""
    conn = Conn(port)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return conn


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_replaced_session_that_stopped_reading_leaves_at_once(tmp_path):
    """
    alice sits in public with a 4 KiB receive window and stops reading; bob
    says ~1.2 MB; alice logs in again from a new connection and joins: bob's
    /who shows `bob, alice`, the old connection is aborted after --close-grace,
    bob sees `* alice left public` exactly once, and log.csv has one `replaced` row.
    """
    data = tmp_path / "data"
    # 9 MB: more than the kernel buffers (up to 4 MB here), so output stays queued in the server.
    d = Daemon(str(data), "--flood-rate", "0", "--close-grace", "1", "--max-outbound", str(64 << 20)).start()
    try:
        old = _stuck(d.port)
        old.register("alice")
        old.send("join public")
        old.expect(r"Entered room public")
        bob = Conn(d.port)
        bob.register("bob")
        bob.send("join public")
        bob.expect(r"Entered room public")
        for start in range(0, 6000, 100):
            bob.send(b"".join(f"n{i} {'y' * 1500}\r\n".encode() for i in range(start, start + 100)))
            _slurp(bob)
        new = Conn(d.port)
        new.login("alice")
        new.send("join public")
        new.expect(r"Entered room public \(2 here\)")
        bob.send("/who")
        bob.expect(r"In public \(2\): bob, alice\r\n")
        bob.send("said after the new login")
        new.expect(r"bob: said after the new login")
        assert _wait_for(lambda: "did not close within 1 seconds" in d.log(), 5), d.log()
        assert old.closed(timeout=2)
        assert b"said after the new login" not in old.buffer
        bob.send("/who")
        seen = bob.expect(r"In public \(2\): bob, alice\r\n")
        assert (bob.buffer.decode() + seen).count("* alice left public") <= 1
        bob.buffer = b""
        bob.send("/ping")
        assert "alice left" not in bob.expect(r"pong")
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()
    rows = [row[1:4] for row in data_rows(data / "log.csv") if row[2] == "alice"]
    assert rows == [["register", "alice", ""], ["login", "alice", ""], ["join", "alice", "public"],
                    ["replaced", "alice", "public"], ["login", "alice", ""], ["join", "alice", "public"],
                    ["disconnect", "alice", "public"]]  # the last: the new session, at shutdown


def test_kicked_connection_with_queued_output_frees_its_slot(tmp_path):
    """
    --max-connections 2 --login-timeout 2: a connection that never reads and
    has output queued is kicked and no longer holds its slot, so the next
    client is served before the stuck one is aborted after --close-grace.
    No fixed waits: the newcomer is retried until served (a refused one is
    told "server is full" and closed), and the log says whether the abort
    had already happened by then (the slot would be freed by the abort too).
    """
    d = Daemon(str(tmp_path / "data"), "--max-connections", "2", "--login-timeout", "2", "--close-grace", "6",
               "--flood-rate", "0", "--max-outbound", str(64 << 20)).start()
    try:
        # The start-up probe's connection may still be counted for a moment.
        other = _admitted(d.port, 15)
        # Logged in first, within the 2 s login timeout (hashing before the flood below).
        other.send("register olly", "secret1", "secret1")
        other.expect(r"Registered and logged in as olly\.")
        other.expect(r"menu> ")
        stuck = _admitted(d.port, 15)  # (the newcomer would prove nothing if this one had been refused)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # as _stuck: it will stop reading
        # About 8 MB of menus it never reads: more than the kernel buffers take, so output stays queued.
        stuck.send(b"menu\r\n" * 20000)
        # Kicked 2-2.5 s after it connected (swept every 0.5 s); its slot is free from then, not from the abort.
        _admitted(d.port, 20).close()
        assert "did not close within" not in d.log()
        assert _wait_for(lambda: "did not close within 6 seconds" in d.log(), 20), d.log()
        assert stuck.closed(timeout=10)
        assert other.buffer == b""
        other.send("menu")
        other.expect(r"menu> ")  # olly kept its slot all along (else the newcomer proves nothing)
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()


def _admitted(port: int, seconds: float) -> Conn:
    """
    A new connection that was served (sent ``menu> ``), its prompt read; one refused ("server is full", then
    closed) is tried again for at most ``seconds``: a closed connection's slot is freed once the server has
    seen the close. Fails if none was served in time.
    """
    deadline = time.monotonic() + seconds
    got = ""
    while time.monotonic() < deadline:
        conn = Conn(port)
        try:
            got = conn.expect(r"menu> |server is full")
        except (AssertionError, OSError) as error:
            got = str(error)
        if got.endswith("menu> "):
            return conn
        conn.close()
        time.sleep(0.05)
    raise AssertionError(f"no connection served within {seconds} s: {got!r}")


def test_tls_connection_that_never_sends_a_byte_is_closed(tmp_path):
    """A connection to an ssl: port that never starts its handshake is closed by the login timeout."""
    key, cert = make_certificate(str(tmp_path))
    port = free_port()
    d = Daemon(str(tmp_path / "data"), "--listen", f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
               "--login-timeout", "1", "--close-grace", "1")
    d.start()
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        started = time.monotonic()
        got = b""
        closed = False
        while not closed and time.monotonic() - started < 8:
            silent.settimeout(max(0.1, 8 - (time.monotonic() - started)))
            try:
                chunk = silent.recv(1024)
            except ConnectionResetError:
                closed = True
            except socket.timeout:
                break
            else:
                got += chunk
                closed = not chunk
        # login timeout 1 s (swept every 0.5 s) + 1 s of grace; the rest is slack for a loaded machine
        assert closed and time.monotonic() - started < 7, (got, d.log())
        silent.close()
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()
