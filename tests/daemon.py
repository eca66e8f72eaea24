"""
Run the real daemon (``twistd -n chatd``) in a subprocess for integration tests,
and talk to it over real sockets on 127.0.0.1.

Every wait is bounded; a test never sleeps for synchronisation, it waits for text.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: ``twistd`` from this interpreter, importing the source tree (cwd is the repo root).
TWISTD = [sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class PortInUse(RuntimeError):
    """chatd could not listen: another program bound the port between :func:`free_port` and chatd's bind."""


class Daemon:
    """
    ``twistd -n chatd`` on a free loopback port with its own data dir. The browser front-end (on by default
    in chatd) is off (``--listen-web none``) unless ``web``: then it listens on its own free loopback port
    ``web_port`` (or the one given), so parallel tests never collide on the default 8080.
    """

    def __init__(self, data_dir: str, *extra: str, port: int | None = None, pidfile: str = "",
                 web: bool = False, web_port: int | None = None) -> None:
        self.data_dir = data_dir
        self.pidfile = pidfile
        self.port = port or free_port()
        self.web_port = (web_port or free_port()) if web or web_port else None
        # Ports picked here are only free when picked: start() picks others if another program binds one first.
        self.own_ports = port is None and not web_port
        self.extra = list(extra)
        self.log_path = os.path.join(os.path.dirname(data_dir.rstrip("/")) or ".", f"twistd-{self.port}.log")
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            *TWISTD, "-n", f"--pidfile={self.pidfile}", f"--logfile={self.log_path}",
            "chatd", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--listen-web", f"tcp:{self.web_port}:interface=127.0.0.1" if self.web_port else "none",
            "--data-dir", self.data_dir, "--hash-time-cost", "1", "--hash-memory-kib", "1024", *self.extra,
        ]

    def start(self, timeout: float = 20.0) -> Daemon:
        """
        Start and wait (at most ``timeout`` s per attempt) until it listens. A port is only free when picked:
        if chatd exits because one is in use ("Address already in use"), a first start on ports picked here
        goes again on fresh ones (three starts at most); a restart keeps its port (its clients know it: a
        client reconnecting may hold it for a moment, connected to itself) and tries again until ``timeout``.
        Raises RuntimeError.
        """
        first = self.process is None
        deadline = time.monotonic() + timeout
        for attempt in range(1, 4 if first and self.own_ports else 1000):
            try:
                return self._start_once(timeout if first else max(1.0, deadline - time.monotonic()))
            except PortInUse:
                if (first and (not self.own_ports or attempt == 3)) or (not first and time.monotonic() > deadline):
                    raise
                if first:
                    self.port = free_port()
                    self.web_port = free_port() if self.web_port else None
                else:
                    time.sleep(0.2)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Daemon:
        env = dict(os.environ, PYTHONPATH=ROOT)
        before = len(self.log())  # a restart appends to the same log
        # SIGINT as a terminal's Ctrl-C gives it: a suite started in the background (``cmd &`` in a
        # non-interactive shell) passes SIGINT on ignored, and twistd then rightly leaves it alone.
        self.process = subprocess.Popen(self.command(), cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=_default_sigint)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                kind = PortInUse if "Address already in use" in self.log()[before:] else RuntimeError
                raise kind(f"chatd exited with {self.process.returncode}:\n{self.log()}")
            # The port is bound before the data is loaded (chatd.service): ready once the log says so.
            if "chatd listening on" in self.log()[before:]:
                socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
                return self
            time.sleep(0.05)
        raise RuntimeError(f"chatd did not listen within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Stop with ``sig`` and return the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""

    def unhandled_errors(self) -> list[str]:
        """Lines of the server log that show a traceback or an unhandled error."""
        text = self.log()
        return [line for line in text.splitlines()
                if "Traceback" in line or "Unhandled" in line or "CRITICAL" in line]


class Conn:
    """A line-oriented socket client with bounded waits."""

    def __init__(self, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        """``source``: the loopback address to connect from (127.0.0.2: another client address)."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buffer = b""

    def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.sock.sendall(line if isinstance(line, bytes) else line.encode() + b"\r\n")

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        """Read until ``pattern`` (a regex) matches; return the text up to the match end and keep the rest."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            text = self.buffer.decode("utf-8", "replace")
            match = regex.search(text)
            if match:
                # Find the same end in bytes (latin-1 maps bytes 1:1 to characters).
                end = regex.search(self.buffer.decode("latin-1"))
                cut = end.end() if end else len(self.buffer)
                self.buffer = self.buffer[cut:]
                return text[: match.end()]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {text[-2000:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError(f"connection closed while waiting for {pattern!r}; got {text[-2000:]!r}")
            self.buffer += data

    def drain(self, quiet: float = 0.2) -> str:
        """Everything that arrives until the connection is quiet for ``quiet`` seconds."""
        self.sock.settimeout(quiet)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buffer += data
        except socket.timeout:
            pass
        text, self.buffer = self.buffer.decode("utf-8", "replace"), b""
        return text

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def register(self, name: str, password: str = "secret1") -> None:
        self.expect(r"menu> ")
        self.send(f"register {name}", password, password)
        self.expect(rf"Registered and logged in as {name}\.")
        self.expect(r"menu> ")

    def login(self, name: str, password: str = "secret1") -> None:
        self.expect(r"menu> ")
        self.send(f"login {name}", password)
        self.expect(rf"Logged in as {name}\.")
        self.expect(r"menu> ")

    def enter(self, name: str, room: str = "public", create: bool = False) -> str:
        """Enter ``room`` as the logged-in ``name`` (creating it first if ``create``); the text up to the join."""
        if create:
            self.send(f"create {room}")
            self.expect(rf"Room {room} created\.")
        self.send("public" if room == "public" else f"join {room}")
        return self.expect(rf"\* {name} joined {room}\r\n")

    def close(self) -> None:
        self.sock.close()


def in_room(port: int, name: str, room: str = "public", register: bool = True) -> Conn:
    """A new connection that registers (or logs in as) ``name`` and enters ``room``."""
    conn = Conn(port)
    conn.register(name) if register else conn.login(name)
    conn.enter(name, room)
    return conn


@pytest.fixture
def daemon(tmp_path) -> Iterator[Daemon]:
    """A running daemon, stopped (SIGTERM) after the test; the test fails on unhandled server errors."""
    d = Daemon(str(tmp_path / "data")).start()
    try:
        yield d
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()
