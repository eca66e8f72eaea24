"""
Debian's HAProxy in front of two chatd nodes (issue 17), with the shipped
configuration (deploy/haproxy.cfg, its ports moved to free loopback ones):
two telnet users connect to HAProxy's one port, land on different nodes
(``leastconn``), chat in one room, and each node sees its user's own
address (127.0.0.3, through the PROXY header), not HAProxy's. HAProxy is
started in the foreground in a temporary directory (never the packaged
service) and stopped by its PID. Skips, saying so, without ``haproxy``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from daemon import ROOT, Conn, Daemon, free_port

pytest.importorskip("txredisapi")
psycopg = pytest.importorskip("psycopg")

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
#: The address the test's users connect from (HAProxy's own connections come from 127.0.0.1).
CLIENT = "127.0.0.3"


def _config(line: int, web: int, irc: int, nodes: list[Daemon], stats: object, inter: str = "200ms") -> str:
    """
    deploy/haproxy.cfg with its frontends on ``line``/``web``/``irc``, its servers on ``nodes``' ports,
    its stats socket at ``stats`` (instead of syslog) and its checks every ``inter``.
    """
    with open(os.path.join(ROOT, "deploy", "haproxy.cfg"), encoding="utf-8") as handle:
        text = handle.read()
    text = re.sub(r"^\s*log /dev/log.*\n", f"    stats socket {stats}\n", text, flags=re.M)  # (no syslog here)
    for old, new in ((":8023", line), (":8080", web), (":6667", irc)):
        text = text.replace(f"bind {old}\n", f"bind 127.0.0.1:{new}\n")
    for old, new in (("2323", nodes[0].port), ("2324", nodes[1].port), ("8081", nodes[0].web_port),
                     ("8082", nodes[1].web_port), ("6668", nodes[0].irc_port), ("6669", nodes[1].irc_port)):
        text = re.sub(rf"127\.0\.0\.1:{old}\b", f"127.0.0.1:{new}", text)
    # (this machine's descriptor limit: HAProxy wants 2 x maxconn)
    return text.replace("inter 5s", f"inter {inter}").replace("maxconn 50000", "maxconn 1000")


class ProxiedNode(Daemon):
    """A node whose line, web and IRC listeners expect the PROXY header (``haproxy:tcp:...``)."""

    irc_port = 0

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--listen") + 1] = f"haproxy:tcp:{self.port}:interface=127.0.0.1"
        command[command.index("--listen-web") + 1] = f"haproxy:tcp:{self.web_port}:interface=127.0.0.1"
        return [*command, "--listen-irc", f"haproxy:tcp:{self.irc_port}:interface=127.0.0.1"]


def _sessions(stats: object, backend: str) -> dict[str, int]:
    """The current sessions of each server of ``backend``, from HAProxy's stats socket (``show stat``)."""
    with socket.socket(socket.AF_UNIX) as control:
        control.settimeout(10)
        control.connect(str(stats))
        control.sendall(b"show stat\n")
        data = b""
        while chunk := control.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {row[1]: int(row[4]) for row in rows if row[0] == backend and row[1] not in ("FRONTEND", "BACKEND")}


def _from_client(port: int) -> Conn:
    """A telnet-like connection to ``port`` from CLIENT."""
    conn = Conn.__new__(Conn)
    conn.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT, 0))
    conn.timeout, conn.buffer = 10.0, b""
    return conn


def _up(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _behind_haproxy(tmp_path, redis_url: str, pg_dsn: str, inter: str = "200ms"):
    """
    Two nodes ``a`` and ``b`` (Redis bus, PostgreSQL store, ``haproxy:`` listeners) behind Debian's haproxy with
    deploy/haproxy.cfg, once both have caught up with the bus: yields (nodes, line port, web port); haproxy and
    the nodes are stopped by PID on the way out.
    """
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (Debian: apt-get install haproxy; .ci/run does)")
    nodes: list[ProxiedNode] = []
    haproxy = None
    try:
        for name in ("a", "b"):
            node = ProxiedNode(str(tmp_path / name), "--store", pg_dsn, "--bus", redis_url, "--node-name", name,
                               web=True)
            node.irc_port = free_port()
            nodes.append(node.start())
        line, web, irc = free_port(), free_port(), free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(_config(line, web, irc, nodes, tmp_path / "haproxy.sock", inter=inter))
        log = open(tmp_path / "haproxy.log", "wb")
        haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log, cwd=tmp_path)
        log.close()
        _up(line)
        deadline = time.monotonic() + 20
        while not all("accepting users" in node.log() for node in nodes):
            assert time.monotonic() < deadline, "the nodes did not catch up with the bus"
            time.sleep(0.05)
        yield nodes, line, web
    finally:
        if haproxy is not None:
            haproxy.terminate()
            try:
                haproxy.wait(10)
            except subprocess.TimeoutExpired:
                haproxy.kill()
                haproxy.wait(5)
        for node in nodes:
            node.stop()


def test_two_nodes_behind_haproxy_serve_one_room_and_see_their_users_addresses(tmp_path, redis_url, pg_dsn):
    with _behind_haproxy(tmp_path, redis_url, pg_dsn) as (nodes, line, web):
        # Both nodes up in HAProxy's checks (the greeting through the PROXY header) before users arrive.
        time.sleep(1.0)  # (rise 2 at inter 200ms: both servers are up in HAProxy)
        ann = _from_client(line)
        ann.register("ann")
        ann.enter("ann", "lab", create=True)
        bob = _from_client(line)  # leastconn: the node ann is not on
        bob.register("bob")
        deadline = time.monotonic() + 10
        while True:
            bob.send("join lab")
            text = bob.expect(r"\* bob joined lab\r\n|There is no room called lab[^\r]*\r\n")
            if "joined" in text:
                break
            assert time.monotonic() < deadline, text
            bob.expect(r"menu> ")
        ann.expect(r"\* bob joined lab\r\n")
        bob.send("hello through haproxy")
        ann.expect(r"bob: hello through haproxy\r\n")
        ann.send("and back")
        bob.expect(r"ann: and back\r\n")
        # One user on each node: HAProxy's own count of the sessions on each server.
        assert _sessions(tmp_path / "haproxy.sock", "chatd-line") == {"a": 1, "b": 1}
        with psycopg.connect(pg_dsn) as db:
            addresses = db.execute("SELECT DISTINCT details->>'address' FROM log WHERE event = 'register'").fetchall()
        assert addresses == [(CLIENT,)], addresses
        # The browser's port and IRC's go through it too (a page served by a node; IRC's greeting).
        with socket.create_connection(("127.0.0.1", web), timeout=10) as page:
            page.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            assert page.recv(64).startswith(b"HTTP/1.")
        for node in nodes:
            assert node.unhandled_errors() == [], node.log()


def test_a_new_connection_skips_a_node_killed_before_its_health_check_failed(tmp_path, redis_url, pg_dsn):
    """
    A node killed (SIGKILL) while HAProxy still takes it for up (checks every 5 s, as shipped): every new
    connection is greeted by the live node (``retries`` and ``option redispatch``: a refused connection is
    tried again on another server), none is cut at once.
    """
    with _behind_haproxy(tmp_path, redis_url, pg_dsn, inter="5s") as (nodes, line, _):
        nodes[1].stop(signal.SIGKILL)
        greeted = []
        for _ in range(4):  # (leastconn: the dead node has fewer sessions, so it is picked while thought up)
            conn = _from_client(line)
            greeted.append(conn)
            conn.expect(r"Welcome to chatd", timeout=5)
        assert _sessions(tmp_path / "haproxy.sock", "chatd-line")["a"] == 4
        for conn in greeted:
            conn.close()
