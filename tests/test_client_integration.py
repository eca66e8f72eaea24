"""
Integration: real ``chat`` processes (stdin piped) against the real daemon.

Every wait is bounded; nothing sleeps to synchronise, the tests wait for text.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from daemon import ROOT, Conn, Daemon, free_port


class ChatProcess:
    """``python -m clients.cli`` with stdin and stdout piped; its output collected by a thread."""

    def __init__(self, port: int, downloads: str, *extra: str) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "--port", str(port), "--downloads", downloads, *extra],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.text = ""
        self.errors = ""
        self._seen = 0
        self._changed = threading.Condition()
        for stream, attribute in ((self.process.stdout, "text"), (self.process.stderr, "errors")):
            threading.Thread(target=self._collect, args=(stream, attribute), daemon=True).start()

    def _collect(self, stream, attribute: str) -> None:
        for raw in iter(lambda: stream.read1(65536), b""):
            with self._changed:
                setattr(self, attribute, getattr(self, attribute) + raw.decode("utf-8", "replace"))
                self._changed.notify_all()

    def type(self, *lines: str) -> None:
        for line in lines:
            self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """Wait for ``pattern`` in output not matched before."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search(self.text, self._seen)
                if match:
                    self._seen = match.end()
                    return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}; got {self.text[-1500:]!r} {self.errors!r}")
                self._changed.wait(left)

    def join_room(self, name: str, room: str = "public") -> None:
        self.type(f"register {name}", "secret1", "secret1", f"join {room}")
        self.expect(rf"Entered room {room}")

    def finish(self, timeout: float = 15.0) -> int:
        """Close stdin (the end of the script) and wait for the exit status."""
        self.process.stdin.close()
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def clients(tmp_path):
    started: list[ChatProcess] = []

    def start(port: int, name: str, *extra: str) -> ChatProcess:
        downloads = tmp_path / f"downloads-{name}"
        started.append(ChatProcess(port, str(downloads), *extra))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def wait_until(condition, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tagged_in_room(port: int, name: str) -> Conn:
    """A raw socket speaking tagged mode, logged in and in the public room."""
    conn = Conn(port)
    conn.send("/client test 1.0")
    conn.expect(r"11 menu>")
    conn.send(f"register {name}", "secret1", "secret1")
    conn.expect(r"00 Registered")
    conn.send("join public")
    conn.expect(r"111 Entered room public")
    return conn


def test_three_clients_chat_and_share_a_file(daemon, clients, tmp_path):
    ann, bob, cat = (clients(daemon.port, name) for name in ("ann", "bob", "cat"))
    for process, name in ((ann, "ann"), (bob, "bob"), (cat, "cat")):
        process.join_room(name)
    ann.type("hello from ann")
    bob.expect(r"ann: hello from ann")
    cat.expect(r"ann: hello from ann")
    cat.type("hi ann")
    ann.expect(r"cat: hi ann")

    data = os.urandom(3_000_000)
    (tmp_path / "report final.bin").write_bytes(data)
    ann.type(f"/send {tmp_path / 'report final.bin'}")
    ann.expect(r"Sent report final\.bin .* to 2 recipient")
    for process, name in ((bob, "bob"), (cat, "cat")):
        match = process.expect(r"Saved report final\.bin from ann to (.+) \(SHA-256 verified\)", timeout=30)
        assert match.group(1) == str(tmp_path / f"downloads-{name}" / "report final.bin")
        assert (tmp_path / f"downloads-{name}" / "report final.bin").read_bytes() == data
        assert os.listdir(tmp_path / f"downloads-{name}") == ["report final.bin"]
    # A second file of the same name is never written over the first.
    (tmp_path / "report final.bin").write_bytes(b"second version")
    ann.type(f"/send {tmp_path / 'report final.bin'}")
    bob.expect(r"Saved report final\.bin from ann to .*report final \(1\)\.bin")
    assert (tmp_path / "downloads-bob" / "report final (1).bin").read_bytes() == b"second version"
    assert (tmp_path / "downloads-bob" / "report final.bin").read_bytes() == data

    assert ann.finish() == 0
    assert bob.finish() == 0 and cat.finish() == 0
    wait_until(lambda: "file shared: ann in public: report final.bin, 3000000 bytes, sha256 "
               + hashlib.sha256(data).hexdigest() in daemon.log(), what="the log line")
    assert os.listdir(os.path.join(daemon.data_dir, "spool")) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    process = ChatProcess(free_port(), str(tmp_path))
    assert process.process.wait(15) == 1
    process.process.stdin.close()
    wait_until(lambda: "cannot connect to 127.0.0.1:" in process.errors, what="the error message")


def test_server_going_away_exits_non_zero(tmp_path, clients):
    server = Daemon(str(tmp_path / "data")).start()
    try:
        ann = clients(server.port, "ann")
        ann.join_room("ann")
    finally:
        server.stop(signal.SIGTERM)
    assert ann.process.wait(15) == 1
    wait_until(lambda: "shutting down" in ann.errors, what="the reason on stderr")


def test_sender_disconnect_aborts_and_leaves_nothing(daemon, clients, tmp_path):
    bob = clients(daemon.port, "bob")
    bob.join_room("bob")
    sender = tagged_in_room(daemon.port, "ann")
    sender.send("/send 1000000 partial.bin")
    file_id = re.search(r"24 (\S+) ", sender.expect(r"24 \S+ 1000000 partial\.bin")).group(1)
    sender.send(f"/data {file_id} 60000\r\n".encode() + b"p" * 60000)
    bob.expect(r"ann is sending partial\.bin")
    spool = os.path.join(daemon.data_dir, "spool")
    wait_until(lambda: os.listdir(spool) != [], what="the spool file")
    sender.close()
    bob.expect(r"ann's file partial\.bin was not sent \(the sender disconnected\)")
    wait_until(lambda: os.listdir(spool) == [], what="the spool file to go")
    assert not os.path.exists(tmp_path / "downloads-bob") or os.listdir(tmp_path / "downloads-bob") == []
    bob.type("/who")
    bob.expect(r"In public \(1\): bob")


def test_hostile_file_name(daemon, clients, tmp_path):
    bob = clients(daemon.port, "bob")
    bob.join_room("bob")
    sender = tagged_in_room(daemon.port, "eve")
    for name, payload in (("../../../tmp/.evil sh", b"#!/bin/sh\n"), ("CON.txt", b"device"), ("..", b"dots")):
        sender.send(f"/send {len(payload)} {name}")
        file_id = re.search(r"24 (\S+) ", sender.expect(r"24 \S+ ")).group(1)
        sender.send(f"/data {file_id} {len(payload)}\r\n".encode() + payload,
                    f"/done {file_id} {hashlib.sha256(payload).hexdigest()}")
        sender.expect(rf"26 {file_id} ")
        bob.expect(r"Saved .* \(SHA-256 verified\)")
    assert sorted(os.listdir(tmp_path / "downloads-bob")) == ["_CON.txt", "evil sh", "file"]
    assert (tmp_path / "downloads-bob" / "evil sh").read_bytes() == b"#!/bin/sh\n"
    sender.close()


def test_file_over_the_limit(tmp_path, clients):
    server = Daemon(str(tmp_path / "data"), "--max-file-size", "1K").start()
    try:
        ann, bob = clients(server.port, "ann"), clients(server.port, "bob")
        ann.join_room("ann")
        bob.join_room("bob")
        (tmp_path / "big.bin").write_bytes(b"b" * 2048)
        ann.type(f"/send {tmp_path / 'big.bin'}")
        ann.expect(r"Could not send big\.bin: big\.bin is 2\.0 KiB; the largest file this server accepts is 1\.0 KiB")
        ann.type("after the refusal")
        bob.expect(r"ann: after the refusal")
        assert "big.bin" not in bob.text
        assert os.listdir(os.path.join(server.data_dir, "spool")) == []
        assert ann.finish() == 0
    finally:
        server.stop()
    assert server.unhandled_errors() == []


def test_slow_recipient_does_not_hold_back_others(tmp_path, clients):
    """
    A tagged connection that never reads is in the room while a file bigger
    than the server's --max-outbound goes out: the reading recipient gets it,
    chat flows, and the slow one is paced (not cut off) and gets it later.
    """
    server = Daemon(str(tmp_path / "data"), "--max-outbound", "1048576").start()
    try:
        ann, bob = clients(server.port, "ann"), clients(server.port, "bob")
        ann.join_room("ann")
        bob.join_room("bob")
        slow = tagged_in_room(server.port, "slow")
        data = os.urandom(8_000_000)
        (tmp_path / "movie.bin").write_bytes(data)
        started = time.monotonic()
        ann.type(f"/send {tmp_path / 'movie.bin'}")
        bob.expect(r"Saved movie\.bin from ann .*\(SHA-256 verified\)", timeout=60)
        elapsed = time.monotonic() - started
        assert (tmp_path / "downloads-bob" / "movie.bin").read_bytes() == data
        ann.type("chat while slow is stuck")
        bob.expect(r"ann: chat while slow is stuck")
        bob.type("and back")
        ann.expect(r"bob: and back")
        # The slow connection was never cut off: it now reads the whole file.
        received, digest = bytearray(), None
        slow.expect(r"20 \S+ 8000000 ", timeout=30)
        while True:
            line = slow.expect(r"\r\n", timeout=60)
            if line.startswith("21 "):
                received += base64.b64decode(line.split(" ", 2)[2])
            elif line.startswith("22 "):
                break
        assert bytes(received) == data, f"slow got {len(received)} bytes"
        print(f"8 MB to the reading recipient in {elapsed:.2f} s while another did not read")
        assert ann.finish() == 0
    finally:
        server.stop()
    assert server.unhandled_errors() == []
    assert "sendq_exceeded" not in open(os.path.join(server.data_dir, "log.csv")).read()


def test_chat_flows_both_ways_during_an_upload(daemon):
    """Lines said by the uploader between its frames reach the room before the upload ends, and replies reach it."""
    ann, bob = tagged_in_room(daemon.port, "ann"), tagged_in_room(daemon.port, "bob")
    data = os.urandom(400_000)
    frames = [data[start:start + 65536] for start in range(0, len(data), 65536)]
    ann.send(f"/send {len(data)} movie.bin")
    file_id = re.search(r"24 (\S+) ", ann.expect(r"24 \S+ \d+ movie\.bin\r\n")).group(1)
    bob.expect(r"ann is sending movie\.bin")
    for frame in frames[:3]:
        ann.send(f"/data {file_id} {len(frame)}\r\n".encode() + frame)
    ann.send("halfway there")
    seen = bob.expect(r"111 \S+ ann: halfway there\r\n")
    assert "shared" not in seen and "20 " not in seen
    bob.send("great, keep going")
    seen = ann.expect(r"111 \S+ bob: great, keep going\r\n")
    assert "26 " not in seen and "25 " not in seen
    for frame in frames[3:]:
        ann.send(f"/data {file_id} {len(frame)}\r\n".encode() + frame)
    ann.send("almost done", f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    ann.expect(rf"26 {file_id} {hashlib.sha256(data).hexdigest()} 1")
    before = bob.expect(rf"20 {file_id} {len(data)} ")
    assert "ann: almost done" in before
    received = bytearray()
    while True:
        line = bob.expect(r"\r\n")
        if line.startswith("21 "):
            received += base64.b64decode(line.split(" ", 2)[2])
        elif line.startswith("22 "):
            break
    assert bytes(received) == data
    ann.close()
    bob.close()


def test_ctrl_c_in_a_room_ends_with_a_goodbye_line_and_status_130(daemon, clients):
    """SIGINT (Ctrl-C) in a room: the goodbye on a line of its own, no "connection lost" error, exit status 130."""
    ann = clients(daemon.port, "ann")
    ann.join_room("ann")
    watcher = tagged_in_room(daemon.port, "watcher")
    ann.process.send_signal(signal.SIGINT)
    assert ann.process.wait(15) == 130
    wait_until(lambda: ann.text.endswith("\nInterrupted. Bye.\n"), what="the goodbye line")
    assert ann.errors == ""
    watcher.expect(r"\* ann left public")


def test_scripted_wrong_password_exits_3_and_sends_nothing_more(daemon, clients):
    """A script whose login is refused stops there (its lines never reach the menu) and exits with status 3."""
    owner = Conn(daemon.port)
    owner.register("ann")
    watcher = tagged_in_room(daemon.port, "watcher")
    ann = clients(daemon.port, "ann")
    ann.type("login ann", "wrong-password", "public", "this must not be said")
    status = ann.finish()
    assert status == 3, (ann.text, ann.errors)
    assert ann.errors == "chat: Login failed: unknown name or wrong password.\n"
    assert "Entered room" not in ann.text
    assert "this must not be said" not in watcher.drain(0.5)
