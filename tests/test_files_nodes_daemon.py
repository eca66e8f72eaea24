"""
Files across nodes (issue 17), with the real servers: two ``twistd chatd``
nodes on one Redis (tests/redis.py) and one PostgreSQL (tests/pg.py). A file
sent by the bundled client on node A reaches a bundled client on node B,
and a browser on node B (tests/browser.py), hash-equal, its bytes carried
by PostgreSQL's ``file_chunks`` (docs/ARCHITECTURE.md, "Several nodes").
"""

from __future__ import annotations

import hashlib
import os

import pytest

from daemon import Daemon
from test_client_integration import ChatProcess

pytest.importorskip("txredisapi")
psycopg = pytest.importorskip("psycopg")

#: 3 MiB and a bit: twelve chunks and a part of one.
SIZE = 3 * 1024 * 1024 + 17
WAIT = 30.0


def _nodes(tmp_path, redis_url: str, dsn: str) -> list[Daemon]:
    nodes: list[Daemon] = []
    try:
        for n in range(2):
            nodes.append(Daemon(str(tmp_path / f"node{n}"), "--store", dsn, "--bus", redis_url, "--node-name",
                                f"node{n}", "--flood-rate", "0", web=n == 1).start())
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _browser(node: Daemon):
    """A browser on ``node`` as carl in public, or None without Chromium."""
    from browser import Browser, missing

    if missing():
        return None
    browser = Browser(f"http://127.0.0.1:{node.web_port}/")
    browser.open()
    browser.register("carl")
    browser.join("public")
    return browser


def test_a_file_sent_on_node_a_reaches_clients_and_a_browser_on_node_b_hash_equal(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn)
    processes: list[ChatProcess] = []
    browser = None
    try:
        ann = ChatProcess(a.port, str(tmp_path / "downloads-ann"))
        bob = ChatProcess(b.port, str(tmp_path / "downloads-bob"))
        processes += [ann, bob]
        ann.join_room("ann")
        bob.join_room("bob")
        browser = _browser(b)
        ann.expect(r"bob joined public")
        data = os.urandom(SIZE)
        (tmp_path / "big report.bin").write_bytes(data)
        ann.type(f"/send {tmp_path / 'big report.bin'}")
        ann.expect(r"Sent big report\.bin", timeout=WAIT)
        saved = bob.expect(r"Saved big report\.bin from ann to (.+) \(SHA-256 verified\)", timeout=WAIT)
        assert saved.group(1) == str(tmp_path / "downloads-bob" / "big report.bin")
        assert (tmp_path / "downloads-bob" / "big report.bin").read_bytes() == data
        if browser is not None:
            from test_browser_files import transfer_state

            browser.wait(lambda d: transfer_state(browser, "download", "big report.bin") == "verified", WAIT,
                         f"the download was not verified: {browser.log_lines()[-3:]}")
            assert browser.errors() == []
        with psycopg.connect(pg_dsn) as connection:
            rows = connection.execute("SELECT f.size, f.sha256, f.sender, count(c.seq), sum(length(c.data)) "
                                      "FROM files f JOIN file_chunks c ON c.file_id = f.id "
                                      "GROUP BY f.id").fetchall()
        assert rows == [(SIZE, hashlib.sha256(data).hexdigest(), "ann", 13, SIZE)]
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        if browser is not None:
            browser.quit()
        for process in processes:
            process.kill()
        for node in (a, b):
            node.stop()
