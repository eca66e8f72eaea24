"""
A node starting while another node creates a room (issue 17): it accepts
users only once it has delivered the stream up to where it stood when the
node connected to Redis, so a room created elsewhere while it loaded the
store is known to its first user (chatd.service.Listeners.hold_until,
chatd.buses.redis.RedisBus.caught_up). docs/OPERATIONS.md, "Several nodes".

The race is made certain, not hoped for: node B is held in its store load
between reading ``rooms`` and ``offline`` (an ACCESS EXCLUSIVE lock on
``offline`` in the test's own transaction), node A creates the room meanwhile
(its entry is in the stream after B's start position, its row not in what B
read), and Redis is paused (``CLIENT PAUSE``) as B's load ends, so B's bus
reads nothing for a while: before this fix B served its first user at once,
who was told there is no such room.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

from daemon import ROOT, Conn, Daemon

pytest.importorskip("txredisapi")
psycopg = pytest.importorskip("psycopg")

#: How long Redis stops answering as node B's load ends (ms): longer than B takes to serve a user.
PAUSE_MS = 3000


def _redis(port: int, *command: str) -> bytes:
    """One command to the test's redis-server (RESP), its raw reply."""
    request = b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(part), part.encode()) for part in command)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(request)
        return connection.recv(65536)


def _until(condition, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_room_created_elsewhere_while_a_node_starts_is_known_to_its_first_user(tmp_path, redis_server, pg_dsn):
    common = ("--store", pg_dsn, "--bus", redis_server.url, "--flood-rate", "0")
    a = Daemon(str(tmp_path / "a"), *common, "--node-name", "a").start()
    b = Daemon(str(tmp_path / "b"), *common, "--node-name", "b")
    lock = psycopg.connect(pg_dsn)
    try:
        ann = Conn(a.port)
        ann.register("ann")
        bob = Conn(a.port)
        bob.register("bob")  # (an account B loads)
        bob.close()
        lock.execute("LOCK TABLE offline IN ACCESS EXCLUSIVE MODE")  # B's load reads users, rooms, then offline
        # B binds, takes the stream's end as its start position, loads the store: held at offline.
        b.process = subprocess.Popen(b.command(), cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: lock.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                                    "'offline'::regclass").fetchone()[0] > 0, "node B's load to wait for the lock")
        ann.enter("ann", "lab", create=True)  # the room's row is in rooms now, after B read it; its entry in the
        # stream before the join's (one order per node), so it is there once ann sees her join
        assert _redis(redis_server.port, "CLIENT", "PAUSE", str(PAUSE_MS), "ALL").startswith(b"+OK")
        lock.rollback()  # B's load ends; B's bus waits for Redis
        first = Conn(b.port)
        first.login("bob")
        first.send("join lab")
        text = first.expect(r"\* bob joined lab\r\n|There is no room called lab[^\r]*\r\n", timeout=PAUSE_MS / 1000 + 15)
        assert "joined lab" in text, text
        ann.expect(r"\* bob joined lab\r\n")
        assert "accepting users" in b.log()
        assert a.unhandled_errors() == b.unhandled_errors() == []
    finally:
        lock.close()
        _redis(redis_server.port, "CLIENT", "UNPAUSE")
        for node in (a, b):
            if node.process is not None:
                node.stop()
