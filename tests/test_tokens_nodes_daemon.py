"""
Resume tokens and rate limits across nodes (issue 17): two ``twistd chatd``
nodes on one private Redis (tests/redis.py) and PostgreSQL (tests/pg.py). A
browser page's token issued by node A resumes on node B (one key, the
database's); a logout on A voids it on B (the epoch travels on the bus);
failed logins to one account split over the two nodes trip the account's
limit (--account-password-checks) on both.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from daemon import Conn, Daemon, in_room
from test_nodes_daemon import _nodes

pytest.importorskip("txredisapi")
pytest.importorskip("psycopg")
websocket = pytest.importorskip("websocket")  # websocket-client (selenium's dependency)


def _page(node: Daemon) -> Any:
    """A WebSocket to ``node``'s browser front-end, as the page opens it (its own Origin)."""
    return websocket.create_connection(f"ws://127.0.0.1:{node.web_port}/ws", timeout=10,
                                       origin=f"http://127.0.0.1:{node.web_port}")


def _send(page: Any, value: dict[str, Any]) -> None:
    page.send(json.dumps(value))


def _until(page: Any, *types: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next message of one of ``types`` (the ones before it skipped), within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = json.loads(page.recv())
        if value.get("type") in types:
            return value
    raise AssertionError(f"no {types} within {timeout} s")


def _resume(node: Daemon, token: str) -> tuple[Any, dict[str, Any]]:
    page = _page(node)
    _send(page, {"type": "resume", "token": token})
    return page, _until(page, "login", "error")


def test_a_token_of_node_a_resumes_on_node_b_until_a_logout_on_a_voids_it(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn, web=True)
    try:
        page = _page(a)
        _send(page, {"type": "command", "name": "register", "args": ["ann", "secret1"]})
        token = _until(page, "login")["token"]
        watcher = in_room(b.port, "dan")  # (registered on B: once A reads it, A knows dan's account too)
        deadline = time.monotonic() + 10
        there, answer = _resume(b, token)
        while answer["type"] == "error" and time.monotonic() < deadline:  # (B reads ann's account within a moment)
            there.close()
            there, answer = _resume(b, token)
        assert answer["type"] == "login" and answer["resumed"] and answer["name"] == "ann"
        assert "logged in from another connection" in json.dumps(_until(page, "error", "notice", "reply"))
        later = answer["token"]  # issued by B ...
        page.close()
        here, answer = _resume(a, later)  # ... taken by A
        assert answer["type"] == "login" and answer["resumed"]
        there.close()
        # A logout on A: every token of ann void, on B too. Something A says after it, read on B, means B
        # has read the logout's entry (one stream, one order).
        _send(here, {"type": "command", "name": "logout", "args": []})
        _until(here, "logout")
        cid = in_room(a.port, "cid")
        cid.send("after the logout")
        watcher.expect(r"cid: after the logout\r\n")
        for node, token_ in ((b, token), (b, later), (a, later)):
            page, answer = _resume(node, token_)
            assert answer == {"type": "error", "text": "your session expired; please log in again."}
            page.close()
        here.close()
        assert not a.unhandled_errors() and not b.unhandled_errors()
    finally:
        a.stop()
        b.stop()


def test_failed_logins_to_one_account_split_over_two_nodes_trip_its_limit(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn, every=("--account-password-checks", "4"))
    try:
        Conn(a.port).register("ann")
        answers = []
        for node in (a, b, a, b, b):  # two on A and two on B: allowed (each node alone would allow 4)
            conn = Conn(node.port)
            conn.expect(r"menu> ")
            conn.send("login ann", "wrong-one")
            answers.append(conn.expect(r"Login failed[^\r\n]*|too many logins[^\r\n]*"))
            conn.close()
        assert all("Login failed" in answer for answer in answers[:4]), answers
        assert "too many logins to this account; try again in " in answers[4], answers
        conn = Conn(a.port)  # the right password too, on either node, until the window has refilled
        conn.expect(r"menu> ")
        conn.send("login ann", "secret1")
        assert "too many logins to this account" in conn.expect(r"too many logins[^\r\n]*|Logged in[^\r\n]*")
        assert "on every node" in a.log() + b.log()
    finally:
        a.stop()
        b.stop()
