"""
A private Redis for the tests of the Redis bus (chatd.buses.redis): Debian's
``redis-server --port FREE --bind 127.0.0.1 --save '' --appendonly no`` in a
temporary directory, stopped by its PID (SIGINT, waited for). Never the
packaged service. docs/OPERATIONS.md, "Several nodes".

Fixtures: ``redis_server`` (one per test: tests may stop and start it; a
restart keeps the port and, with nothing saved, starts empty) and
``redis_url`` (its ``redis://127.0.0.1:PORT/0``). Both skip, saying so,
when ``redis-server`` is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from daemon import free_port
from pg import Cluster

SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


class RedisServer:
    """One private redis-server: :meth:`start`, :meth:`stop` (by PID), :attr:`url`."""

    def __init__(self) -> None:
        assert SERVER is not None
        self.dir = tempfile.mkdtemp(prefix="chatd-redis-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        """
        Start on :attr:`port` and wait (at most ``timeout`` s) until it answers PING. A restart needs the same
        port (the nodes know the URL): while Redis was away something may hold it for a moment (a node's
        reconnect that met itself: connecting to a free port from that same ephemeral port), so a start that
        fails with "Address already in use" is tried again until the deadline; any other exit raises.
        """
        deadline = time.monotonic() + timeout
        while not self._spawn(deadline):
            time.sleep(0.2)
        return self

    def _spawn(self, deadline: float) -> bool:
        """One redis-server: True once it answers, False if the port was in use and time is left."""
        before = len(self.log())
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.process = subprocess.Popen(
            [SERVER or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=log, stderr=log, cwd=self.dir)
        log.close()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "in use" in self.log()[before:] and time.monotonic() < deadline - 1:
                    return False
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within the deadline:\n{self.log()}")

    # Stopped by the PID we started (SIGINT: a clean shut-down, as for PostgreSQL), waited for; removed with its dir.
    stop = Cluster.stop
    remove = Cluster.remove

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log"), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does)")
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url
