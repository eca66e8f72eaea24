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
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.process = subprocess.Popen(
            [SERVER or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir], stdout=log, stderr=log, cwd=self.dir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout} s:\n{self.log()}")

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
