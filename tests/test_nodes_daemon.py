"""
Several nodes (issue 17): two ``twistd chatd`` processes with ``--bus redis://...``
(a private redis-server: tests/redis.py) and ``--store postgresql://...``
(a private cluster: tests/pg.py), telnet users on each in one room: every
line exactly once, in the same order on every node; a room created on one
node is joined on the other; a login on one node ends the account's session
on the other; a node killed (kill -9) or stopped has its users' leaves shown
by the survivors; Redis restarted mid-conversation loses and duplicates
nothing.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import pytest

from chatd.store import PUBLIC_ROOM_ID
from daemon import Conn, Daemon, free_port, in_room

pytest.importorskip("txredisapi")
pytest.importorskip("psycopg")


def _nodes(tmp_path, redis_url: str, dsn: str, count: int = 2, *last: str, web: bool = False,
           every: tuple[str, ...] = ()) -> list[Daemon]:
    """``count`` nodes; ``last``: more options of the last one; ``every``: of every one; ``web``: a browser port."""
    nodes = []
    try:
        for n in range(count):
            node = Daemon(str(tmp_path / f"node{n}"), "--store", dsn, "--bus", redis_url,
                          "--node-name", f"node{n}", "--flood-rate", "0", *every,
                          *(last if n == count - 1 else ()), web=web).start()
            nodes.append(node)
            deadline = time.monotonic() + 10  # ready once it reads the stream (its bus connects after it listens)
            while "bus: Redis stream" not in node.log() and time.monotonic() < deadline:
                time.sleep(0.05)
    except Exception:
        for node in nodes:
            node.stop()
        raise
    return nodes


def _known_on(node: Daemon, name: str, account: bool = False) -> None:
    """
    Wait until ``node`` has read the bus's entry that made ``name`` (a room or an account on another node):
    a node learns of them within the bus's round trip, which a loaded test machine can stretch.
    """
    deadline = time.monotonic() + 10
    probe = Conn(node.port)
    probe.expect(r"menu> ")
    while time.monotonic() < deadline:
        probe.send(f"whois {name}" if account else "list")
        text = probe.expect(r"menu> ")
        if (account and "There is no user called" not in text) or (not account and re.search(rf"\b{name}\b", text)):
            break
        time.sleep(0.05)
    probe.close()


def _said(text: str) -> list[str]:
    return re.findall(r"(\w+): (m\d+\.\w+)\r\n", text)


def test_two_nodes_serve_one_room_every_line_once_in_one_order(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn)
    try:
        ann = Conn(a.port)
        ann.register("ann")
        ann.enter("ann", "lab", create=True)  # created on node A ...
        bob = Conn(b.port)
        bob.register("bob")
        _known_on(b, "lab")
        bob.enter("bob", "lab")  # ... joined on node B
        ann.expect(r"\* bob joined lab\r\n")
        cid = in_room(b.port, "cid", "lab")
        ann.expect(r"\* cid joined lab\r\n")
        bob.expect(r"\* cid joined lab\r\n")
        users = {"ann": ann, "bob": bob, "cid": cid}

        def talk(name: str) -> None:
            for i in range(40):
                users[name].send(f"m{i}.{name[0]}")

        threads = [threading.Thread(target=talk, args=(name,)) for name in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        seen = {}
        for name, conn in users.items():
            conn.send("/ping")
            text = conn.expect(r"pong\r\n", timeout=15)
            deadline = time.monotonic() + 15
            while len(_said(text)) < 120 and time.monotonic() < deadline:
                conn.send("/ping")
                text += conn.expect(r"pong\r\n", timeout=15)
                time.sleep(0.05)
            seen[name] = _said(text)
        assert len(seen["ann"]) == 120 and len(set(seen["ann"])) == 120  # every line, once
        assert seen["ann"] == seen["bob"] == seen["cid"]  # in one order on both nodes
        for name in users:  # each user's lines in the order it sent them
            assert [text for who, text in seen["ann"] if who == name] == [f"m{i}.{name[0]}" for i in range(40)]
        # History: each line is in PostgreSQL once (recorded by the node it was said on), ids in stream order.
        import psycopg

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(pg_dsn) as connection:
                rows = connection.execute("SELECT h.id, h.sender, h.text FROM history h JOIN rooms r ON "
                                          "r.id = h.room_id WHERE r.name = 'lab' AND h.kind = 'say' "
                                          "ORDER BY h.id").fetchall()
            if len(rows) >= 120:
                break
            time.sleep(0.1)
        assert [(sender, text) for _, sender, text in rows] == seen["ann"]
        ids = [row[0] for row in rows]
        assert ids == sorted(set(ids))
        dan = in_room(b.port, "dan", "lab")
        dan.send("/history 50", "/ping")
        assert _said(dan.expect(r"pong\r\n")) == seen["ann"][-50:]
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def _chatting(a: Daemon, b: Daemon) -> tuple[Conn, Conn]:
    """ann on node A and bob on node B in public, a line of ann's seen by bob."""
    ann = in_room(a.port, "ann")
    bob = in_room(b.port, "bob")
    ann.expect(r"\* bob joined public\r\n")
    ann.send("m1.0")
    bob.expect(r"ann: m1\.0\r\n")
    return ann, bob


def test_redis_restarted_mid_conversation_loses_and_duplicates_no_line(tmp_path, redis_server, pg_dsn):
    a, b = _nodes(tmp_path, redis_server.url, pg_dsn)
    try:
        ann, bob = _chatting(a, b)
        redis_server.stop()
        ann.send("m2.0")  # said while Redis is away: waits on node A
        bob.send("m3.0")
        time.sleep(0.5)
        redis_server.start()
        ann.send("m4.0")
        orders = []
        for conn in (ann, bob):
            # (m3.0 waited on node B, m2.0 and m4.0 on node A: the stream's order is the order they were appended)
            text = conn.expect(r"(?s)(ann: m4\.0\r\n.*bob: m3\.0|bob: m3\.0\r\n.*ann: m4\.0)\r\n", timeout=20)
            said = [line for line in _said(text) if line != ("ann", "m1.0")]
            assert sorted(said) == [("ann", "m2.0"), ("ann", "m4.0"), ("bob", "m3.0")], text  # each once
            orders.append(said)
            conn.send("/ping")
            assert not _said(conn.expect(r"pong\r\n"))  # nothing twice
        assert orders[0] == orders[1]  # one order on both nodes
        assert orders[0].index(("ann", "m2.0")) < orders[0].index(("ann", "m4.0"))
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def test_a_redis_outage_longer_than_a_heartbeat_timeout_makes_nobody_leave(tmp_path, redis_server, pg_dsn):
    """
    Redis away for 5 s (past the 3 s a silent node is taken for gone after): no node takes another for gone,
    since none reads its own heartbeats meanwhile; nobody is shown leaving, /who lists the other node's member
    all along, and a line said meanwhile arrives once Redis is back.
    """
    a, b = _nodes(tmp_path, redis_server.url, pg_dsn)
    try:
        ann, bob = _chatting(a, b)
        redis_server.stop()
        time.sleep(2.5)
        bob.send("m2.0")  # said while Redis is away: waits on node B
        time.sleep(2.5)
        redis_server.start()
        time.sleep(4)  # (a node that took another for gone would publish its leaves once Redis is back)
        ann.send("m3.0")
        seen = ann.expect(r"ann: m3\.0\r\n", timeout=20) + bob.expect(r"ann: m3\.0\r\n", timeout=20)
        assert "bob: m2.0" in seen and "left" not in seen, seen
        bob.send("/who")
        assert "In public (2): bob, ann" in bob.expect(r"In public.*\r\n")
        ann.send("/who")
        assert "In public (2): ann, bob" in ann.expect(r"In public.*\r\n")
        for node in (a, b):
            assert "s: taken for gone" not in node.log() and "own entries have not come back" in node.log()
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def test_a_login_on_one_node_ends_the_accounts_session_on_the_other(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn)
    try:
        first = in_room(a.port, "ann")
        bob = in_room(a.port, "bob")
        _known_on(b, "ann", account=True)
        second = Conn(b.port)
        second.login("ann")
        first.expect(r"You logged in from another connection\.")
        assert first.closed()
        bob.expect(r"\* ann left public\r\n")
        second.enter("ann")  # the new session goes on
        bob.expect(r"\* ann joined public\r\n")
        second.send("still here")
        bob.expect(r"ann: still here\r\n")
        # Logging in again on the same node: only that node's rule (no second kick through the stream).
        third = Conn(b.port)
        third.login("ann")
        second.expect(r"You logged in from another connection\.")
        third.send("public")
        third.expect(r"\* ann joined public\r\n")
        third.send("/ping")
        third.expect(r"pong\r\n")
        assert not third.closed(0.5)
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def test_a_killed_or_stopped_nodes_users_leave_their_rooms_on_the_others(tmp_path, redis_url, pg_dsn):
    a, b, c = _nodes(tmp_path, redis_url, pg_dsn, count=3)
    try:
        bob = in_room(b.port, "bob")
        ann = in_room(a.port, "ann")
        bob.expect(r"\* ann joined public\r\n")
        cid = in_room(c.port, "cid")
        bob.expect(r"\* cid joined public\r\n")
        time.sleep(1.5)  # (a heartbeat of each node after the joins: not needed, the joins are followed too)
        a.stop(signal.SIGKILL)
        started = time.monotonic()
        text = bob.expect(r"\* ann left public\r\n", timeout=10)
        assert time.monotonic() - started < 6  # heartbeat lost: within a few seconds
        cid.expect(r"\* ann left public\r\n")
        c.stop()  # a clean stop: its users leave at once
        bob.expect(r"\* cid left public\r\n", timeout=5)
        bob.send("/ping")
        rest = bob.expect(r"pong\r\n")
        assert text.count("left public") == 1 and "left" not in rest  # each once
        ann.close()
        for node in (b, c):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b, c):
            node.stop()


def test_lines_of_a_node_killed_mid_burst_are_in_the_survivors_history_once(tmp_path, redis_url, pg_dsn):
    """
    cid on C says up to 3,000 lines as fast as it can; C is killed (kill -9) mid-burst, its last lines delivered
    and not yet committed by C: every line bob saw on A is in PostgreSQL's history once and in /history.
    """
    a, c = _nodes(tmp_path, redis_url, pg_dsn)
    try:
        bob = in_room(a.port, "bob")
        cid = in_room(c.port, "cid")
        bob.expect(r"\* cid joined public\r\n")

        def talk() -> None:
            try:
                for i in range(3000):
                    cid.send(f"m{i}.c")
            except OSError:
                pass  # (killed meanwhile)

        talker = threading.Thread(target=talk)
        talker.start()
        seen = bob.expect(r"cid: m60\.c\r\n", timeout=15)
        c.stop(signal.SIGKILL)
        talker.join(10)
        seen += bob.expect(r"\* cid left public\r\n", timeout=10)
        lines = _said(seen)
        assert len(lines) > 60 and len(set(lines)) == len(lines)
        import psycopg

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with psycopg.connect(pg_dsn) as connection:
                rows = connection.execute("SELECT sender, text FROM history WHERE room_id = %s AND kind = 'say' "
                                          "ORDER BY id", [PUBLIC_ROOM_ID]).fetchall()
            if len(rows) >= len(lines):
                break
            time.sleep(0.1)
        assert [tuple(row) for row in rows] == lines  # every line A delivered, once, in its order
        dan = in_room(a.port, "dan")
        dan.send("/history 50", "/ping")
        assert _said(dan.expect(r"pong\r\n")) == lines[-50:]
        assert not a.unhandled_errors(), a.log()
    finally:
        for node in (a, c):
            node.stop()


def _until(conn: Conn, command: str, prompt: str, wanted: str) -> str:
    """Send ``command`` until its answer (up to ``prompt``) has ``wanted``: another node's heartbeat, within 10 s."""
    deadline = time.monotonic() + 10
    while True:
        conn.send(command)
        text = conn.expect(prompt)
        if wanted in text or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_users_whois_names_and_private_messages_across_nodes(tmp_path, redis_url, pg_dsn):
    """
    ann on node A (in public, away); on node B: /users and /whois show her, an IRC client's NAMES, WHOIS
    and LIST show her in #public, and bob's /msg reaches her live on A, once (not queued as offline).
    """
    irc_port = free_port()
    a, b = _nodes(tmp_path, redis_url, pg_dsn, 2, "--listen-irc", f"tcp:{irc_port}:interface=127.0.0.1",
                  "--irc-guests")
    try:
        ann = in_room(a.port, "ann")
        ann.send("/away lunch")
        ann.expect(r"You are marked as away: lunch")
        _known_on(b, "ann", account=True)
        bob = Conn(b.port)
        bob.register("bob")
        text = _until(bob, "users", r"menu> ", "ann (away, in public)")
        assert "Online (2): ann (away, in public), bob" in text, text
        bob.send("whois ann")
        text = bob.expect(r"menu> ")
        assert "online since" in text and "away: lunch" in text, text
        irc = Conn(irc_port)
        irc.send("NICK zed", "USER zed 0 * :Zed")
        irc.expect(r" 376 zed ")
        irc.send("NAMES #public", "LIST", "WHOIS ann")
        text = irc.expect(r" 318 zed ann ")
        assert re.search(r" 353 zed = #public :[^\r]*\bann\b", text), text
        assert re.search(r" 322 zed #public 1 ", text), text
        assert " 319 zed ann :#public" in text and " 301 zed ann :lunch" in text, text
        bob.enter("bob")
        ann.expect(r"\* bob joined public\r\n")
        bob.send("/msg ann hello across")
        text = bob.expect(r"-> \*ann\* hello across\r\n")
        ann.expect(r"\*bob\* hello across\r\n")
        bob.send("/ping")
        text += bob.expect(r"pong\r\n")
        assert "Queued" not in text and "ann is away: lunch" in text, text
        ann.send("/ping")
        assert "hello across" not in ann.expect(r"pong\r\n")  # once
        ann.send("/exit", "quit")
        again = Conn(a.port)
        again.login("ann")
        again.send("users")
        assert "hello across" not in again.expect(r"Online \(")  # delivered live, so not kept for a login
        # ann logged out on A: gone from B's online list at once (her logout travels on the bus).
        text = _until(bob, "/users", r"Online \([^\r]*\r\n", "Online (2): ann, bob")
        assert "away" not in text.split("Online")[-1], text
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def test_offline_messages_and_admin_actions_apply_on_every_node(tmp_path, redis_url, pg_dsn):
    """
    A message kept for bob on node A is delivered at his login on node B, once (not again on A); root's
    /disconnect (A) ends bob's session on B, /wall (A) reaches cid on B, /banip (A) closes B's connection
    from that address and refuses new ones there, /unbanip lifts it there.
    """
    a, b = _nodes(tmp_path, redis_url, pg_dsn, every=("--admin", "root"))
    try:
        root = Conn(a.port)
        root.register("root")
        bob = Conn(a.port)
        bob.register("bob")
        bob.close()
        ann = in_room(a.port, "ann")
        _until(ann, "/whois bob", r"(last seen|online since)[^\r]*\r\n", "last seen")  # (bob's logout has reached A's state)
        ann.send("/msg bob kept for you")
        ann.expect(r"Queued, bob is offline")
        _known_on(b, "bob", account=True)
        bob = Conn(b.port)
        bob.login("bob")
        bob.expect(r"(?s)1 private message arrived while you were offline.*\*ann\* kept for you")
        bob.send("quit")
        _until(ann, "/whois bob", r"(last seen|online since)[^\r]*\r\n", "last seen")
        ann.send("/msg bob and later")
        ann.expect(r"Queued, bob is offline")
        again = Conn(a.port)
        again.login("bob")
        text = again.expect(r"(?s)1 private message arrived while you were offline.*\*ann\* and later")
        assert "kept for you" not in text  # (was: delivered again from A's copy)
        again.send("quit")

        bob = Conn(b.port)
        bob.login("bob")
        _until(root, "whois bob", r"menu> ", "online since")
        root.send("disconnect bob spamming")
        root.expect(r"Disconnected bob\.")
        bob.expect(r"You were disconnected by root, an admin: spamming")
        assert bob.closed()

        cid = in_room(b.port, "cid")
        root.send("wall restart at 22:00")
        root.expect(r"Notice sent to \d+ connections? on this node and to 1 other node\.")
        cid.expect(r"Notice from root, an admin: restart at 22:00")

        there = Conn(b.port, source="127.0.0.2")
        there.expect(r"menu> ")
        root.send("banip 127.0.0.2 5m testing")
        root.expect(r"Banned 127\.0\.0\.2 for 5m\.")
        there.expect(r"Your address was banned from this server by root, an admin: testing")
        assert there.closed()
        refused = Conn(b.port, source="127.0.0.2")
        refused.expect(r"your address is banned from this server until [^\r]*: testing")
        root.send("unbanip 127.0.0.2")
        root.expect(r"Lifted the ban of 127\.0\.0\.2\.")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # (the lift reaches B within the bus's round trip)
            welcome = Conn(b.port, source="127.0.0.2")
            if "banned" not in welcome.expect(r"(menu> |banned[^\r]*)"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("127.0.0.2 still refused on B after /unbanip")
        for node in (a, b):
            assert not node.unhandled_errors(), node.log()
    finally:
        for node in (a, b):
            node.stop()


def test_a_lock_on_one_node_ends_the_session_and_refuses_logins_on_the_other(tmp_path, redis_url, pg_dsn):
    a, b = _nodes(tmp_path, redis_url, pg_dsn, every=("--admin", "root"))
    try:
        root = Conn(a.port)
        root.register("root")
        erin = Conn(b.port)
        erin.register("erin")
        _until(root, "whois erin", r"menu> ", "online since")
        root.send("lock erin testing")
        root.expect(r"Account erin locked\.")
        erin.expect(r"Your account was locked by [^\r]*testing", timeout=5)
        again = Conn(b.port)
        again.expect(r"menu> ")
        again.send("login erin", "secret1")
        again.expect(r"this account is locked: testing", timeout=5)
        root.send("unlock erin")
        root.expect(r"Account erin unlocked\.")
        _until(Conn(b.port), "whois erin", r"menu> ", "erin")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # (the unlock reaches B within the bus's round trip)
            later = Conn(b.port)
            later.expect(r"menu> ")
            later.send("login erin", "secret1")
            if "Logged in as erin." in later.expect(r"(Logged in as erin\.|locked[^\r]*)"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("erin still locked on B after unlock")
    finally:
        for node in (a, b):
            node.stop()
