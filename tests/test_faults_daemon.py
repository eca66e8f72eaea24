"""
Faults and abuse against the real daemon (twistd -n chatd, 127.0.0.1): a client
that stops reading, a login storm, SIGHUP for logrotate, file permissions and
passwords kept out of every log. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import time

from daemon import Conn, Daemon


def _in_room(port: int, name: str, room: str = "public") -> Conn:
    c = Conn(port)
    c.register(name)
    c.send(f"join {room}")
    c.expect(rf"Entered room {room}")
    return c


def _slurp(conn: Conn) -> None:
    """Read whatever has arrived, without waiting."""
    conn.sock.settimeout(0)
    try:
        while True:
            chunk = conn.sock.recv(1 << 20)
            if not chunk:
                return
            conn.buffer += chunk
    except OSError:
        pass
    finally:
        conn.sock.settimeout(conn.timeout)


def test_non_reading_client_cut_off_others_keep_receiving(tmp_path):
    """
    A client that stops reading is disconnected once its unsent output passes
    --max-outbound (logged as "send queue exceeded"); the members that read
    receive every line of the room exactly once, in order.
    """
    d = Daemon(str(tmp_path / "data"), "--max-outbound", "1048576", "--flood-rate", "0").start()
    try:
        stuck = Conn(d.port)
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.register("stuck")
        stuck.send("public")
        stuck.expect(r"Entered room public")
        reader = _in_room(d.port, "reader")
        talker = _in_room(d.port, "talker")
        count = 8000  # 12 MB: more than the kernel buffers on both sides plus the 1 MiB limit
        for start in range(0, count, 100):
            talker.send(b"".join(f"n{i} {'y' * 1500}\r\n".encode() for i in range(start, start + 100)))
            _slurp(talker)
            _slurp(reader)
        deadline = time.monotonic() + 30
        while f"talker: n{count - 1} ".encode() not in reader.buffer and time.monotonic() < deadline:
            _slurp(talker)
            _slurp(reader)
            time.sleep(0.01)
        lines = reader.buffer.decode().split("\r\n")
        seen = [line.split("talker: ", 1)[1].split(" ", 1)[0] for line in lines if "talker: n" in line]
        assert seen == [f"n{i}" for i in range(count)]
        assert stuck.closed(timeout=10)
        _slurp(talker)
        talker.buffer = b""
        talker.send("/who")
        who = talker.expect(r"In public \(\d+\): [^\r]*").rsplit("In public", 1)[1]
        assert "stuck" not in who and "reader" in who
    finally:
        d.stop()
    assert "send queue exceeded" in d.log() and "disconnecting" in d.log()
    assert d.unhandled_errors() == [], d.log()


def test_sighup_reopens_the_log_file(tmp_path):
    """logrotate moves the log and sends SIGHUP: the daemon keeps running and writes to a new file."""
    d = Daemon(str(tmp_path / "data")).start()
    try:
        rotated = d.log_path + ".1"
        os.rename(d.log_path, rotated)
        d.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reopened 1 log file" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "reopened 1 log file" in d.log()
        assert "listening" in open(rotated).read()  # the old lines stay in the rotated file
        c = Conn(d.port)
        c.expect(r"menu> ")
        c.send("ping")
        c.expect(r"pong")
        assert d.process.poll() is None
    finally:
        d.stop()
    assert "stopped cleanly" in d.log()


def test_data_dir_private_and_no_password_in_any_log(tmp_path):
    """The data dir is created 0700 and its files 0600; no password, right or wrong, appears in a log."""
    data = tmp_path / "data"
    d = Daemon(str(data)).start()
    secrets = ["Corr3ct-Horse-9", "wr0ng-Battery-7", "typed-as-a-name-5"]
    try:
        c = Conn(d.port)
        c.register("alice", secrets[0])
        other = Conn(d.port)
        other.expect(r"menu> ")
        other.send("login alice", secrets[1])
        other.expect(r"Login failed")
        other.expect(r"menu> ", timeout=5)
        other.send("login " + secrets[2], secrets[2])
        other.expect(r"Login failed")
    finally:
        d.stop()
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    files = [data / name for name in os.listdir(data) if os.path.isfile(data / name)]
    assert files
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    everything = d.log() + "".join(path.read_text(errors="replace") for path in files)
    for secret in secrets:
        assert secret not in everything


def test_login_storm_queues_and_chat_stays_fast(tmp_path):
    """
    Forty logins at once, each a full-cost argon2id check in the one-thread
    hash pool: they queue (the storm takes seconds) while a line said in a
    room still comes back within a fraction of a second.
    """
    d = Daemon(str(tmp_path / "data"), "--hash-time-cost", "2", "--hash-memory-kib", "19456").start()
    try:
        talker = _in_room(d.port, "talker")
        storm = []
        for _ in range(40):
            c = Conn(d.port)
            c.expect(r"menu> ")
            storm.append(c)
        started = time.monotonic()
        for i, c in enumerate(storm):  # forty names: one account may be tried only 10 times a minute
            c.send(f"login user{i}", "wrong-password")
        worst = 0.0
        for i in range(15):
            sent = time.monotonic()
            talker.send(f"tick {i}")
            talker.expect(rf"talker: tick {i}\r\n", timeout=5)
            worst = max(worst, time.monotonic() - sent)
            time.sleep(0.05)
        for c in storm:
            c.expect(r"Login failed", timeout=60)
        storm_time = time.monotonic() - started
        assert worst < 0.5, f"chat round trip {worst:.3f} s during the storm"
        assert storm_time > 2 * worst  # the hashes really queued behind each other
        for c in storm:
            c.close()
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()
