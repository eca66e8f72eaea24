"""
Resuming a browser session (issue 15; chatd.tokens, chatd.frontends.web_resume): resume tokens (signed,
short-lived, void at logout, a password change, a lock), the ``resume`` message and its catch-up, server
pings and close codes, the key file; unit tests on a Clock, and a resume across a real daemon's restart.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest
from wsproto.events import AcceptConnection, Pong, TextMessage

from chatd.datadir import TOKEN_KEY_FILE, load_token_key
from chatd.frontends.web import web_site
from chatd.frontends.web_resume import CATCH_UP_MAX, PING_PAYLOAD, REFRESH_AGE, REFRESH_EVERY, RESUME_EXPIRED
from chatd.settings import Settings
from chatd.tokens import LIFETIME, Tokens
from daemon import Conn, Daemon, free_port
from helpers import Client, make_factory
from test_web import WebClient, _ws_connect, _ws_until


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, web_ping=30))
    return factory, clock, web_site(factory)


def _login(site, name="ann", command="register", port=40000):
    page = WebClient(site, port=port)
    login = [m for m in page.command(command, name, "secret1") if m["type"] == "login"][0]
    return page, login


def _resume(site, token, port=40001, **fields):
    page = WebClient(site, port=port)
    page.send_raw(json.dumps({"type": "resume", "token": token, **fields}))
    return page, page.messages()


def _events(messages):
    return [e for m in messages if m["type"] == "events" for e in m["events"]]


def _beside_bob(factory, clock, site):
    """bob (telnet) and then ann (a page) in public: (bob, ann's page, ann's login message)."""
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join public")
    ann, login = _login(site)
    ann.command("public")
    clock.advance(0)
    return bob, ann, login


def _drop(page):
    """The page's connection is lost (no close frame)."""
    page.transport.loseConnection()
    page.protocol.connectionLost(None)


def test_tokens_verify_expire_and_refuse_tampering(world):
    factory, clock, site = world
    Client(factory, clock).register("ann")
    tokens = factory.tokens
    token, expires = tokens.issue("ANN")
    assert expires == int(clock.seconds()) + LIFETIME
    assert tokens.check(token) == ("ann", "")
    body, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in (f"{body}.{flipped}", body, token + ".x", "", None, 5, "é.é", "x" * 600, f"{body[:-1]}.{mac}"):
        assert tokens.check(bad) == ("", "bad"), bad
    assert Tokens(factory).check(token) == ("", "bad")  # another key
    clock.advance(LIFETIME - 1)
    assert tokens.check(token) == ("ann", "")
    clock.advance(1)
    assert tokens.check(token) == ("ann", "expired")


def test_the_login_message_carries_a_token_and_a_resume_catches_up_on_the_room(world):
    factory, clock, site = world
    bob, ann, login = _beside_bob(factory, clock, site)
    assert login["name"] == "ann" and login["token"] and login["expires"] == int(clock.seconds()) + LIFETIME
    assert "resumed" not in login
    bob.send("one")
    seen = _events(ann.messages())
    last = seen[-1]["id"]
    assert seen[-1]["text"] == "one"
    _drop(ann)
    bob.send("two", "/me three")
    clock.advance(5)
    page, answer = _resume(site, login["token"], room="public", after=last)
    clock.advance(0)
    answer += page.messages()
    kinds = [m["type"] for m in answer]
    assert kinds[:4] == ["login", "entered", "history", "events"], answer
    assert answer[0]["resumed"] is True and answer[0]["name"] == "ann" and answer[0]["token"] != login["token"]
    history = answer[2]
    assert history["replay"] is True and history["older"] is None
    assert [(e["kind"], e["sender"], e["text"]) for e in history["events"]] == [
        ("leave", "ann", "Connection closed"), ("say", "bob", "two"), ("me", "bob", "three")]
    assert [e["id"] for e in history["events"]] == list(range(last + 1, last + 4))
    assert [(e["kind"], e["sender"]) for e in _events(answer)] == [("join", "ann")]
    assert factory.online["ann"].room.name == "public"
    bob.send("four")
    assert [e["text"] for e in _events(page.messages())] == ["four"]
    assert "ann joined" in bob.output()


def test_a_resume_without_after_gets_the_usual_replay_and_one_without_room_stays_at_the_menu(world):
    factory, clock, site = world
    ann, login = _login(site)
    ann.command("public")
    ann.command("say", "hello")
    clock.advance(0)
    _drop(ann)
    _, answer = _resume(site, login["token"], room="public")
    replay = answer[2]
    assert [e["text"] for e in replay["events"]] == ["hello"] and replay["older"] == replay["events"][0]["id"]
    page, answer = _resume(site, answer[0]["token"], port=40002)
    assert [m["type"] for m in answer] == ["login"]  # (and the previous page was replaced)
    assert factory.online["ann"].room is None and page.command("list")[-1]["type"] == "reply"


def test_a_catch_up_is_bounded_and_says_where_to_page_back_from(world):
    factory, clock, site = world
    bob, ann, login = _beside_bob(factory, clock, site)
    last = _events(ann.messages())[-1]["id"]
    _drop(ann)
    for i in range(CATCH_UP_MAX + 50):
        bob.send(f"line {i}")
    factory.history.commit()  # (as every 0.25 s: what left the ring is read from the store)
    page, answer = _resume(site, login["token"], room="public", after=last)
    shown = answer[2]["events"]
    assert len(shown) == CATCH_UP_MAX and shown[-1]["text"] == f"line {CATCH_UP_MAX + 49}"
    older = answer[2]["older"]
    assert older == shown[0]["id"] > last + 1
    page_back = [m for m in page.command("history", f"all before {older} 50") if m["type"] == "history"][0]
    assert [e["id"] for e in page_back["events"]] == list(range(older - 50, older))
    assert older - 50 == last + 2  # (and one more before: ann's leave)


def test_a_resume_into_a_room_one_was_banned_from_meanwhile_stays_at_the_menu(world):
    factory, clock, site = world
    owner = Client(factory, clock)
    owner.register("olga")
    owner.send("create lab")
    ann, login = _login(site)
    ann.command("join", "lab")
    _drop(ann)
    owner.send("join lab", "/ban ann spam")
    assert "ann" in owner.output()
    page, answer = _resume(site, login["token"], room="lab", after=1)
    assert [m["type"] for m in answer] == ["login", "error"] and "banned" in answer[1]["text"]
    assert factory.online["ann"].room is None and not page.closed


def test_bad_expired_and_void_tokens_are_refused_and_bad_ones_count_as_failed_logins(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, address_login_failures=3))
    site = web_site(factory)
    ann, login = _login(site)
    for port in (40001, 40002, 40003):
        page, answer = _resume(site, login["token"][:-3] + "AAA", port=port)
        assert answer == [{"type": "error", "text": RESUME_EXPIRED}] and not page.closed
    _, answer = _resume(site, login["token"], port=40004)
    assert answer[0]["type"] == "error" and answer[0]["text"].startswith("too many failed logins from your address")
    clock.advance(LIFETIME)
    _, answer = _resume(site, login["token"], port=50000, room="public")
    assert answer == [{"type": "error", "text": RESUME_EXPIRED}]
    factory.store.flush_events()
    log = open(os.path.join(str(tmp_path), "log.csv"), encoding="utf-8").read()
    assert "token_bad" in log and "token_expired" in log and login["token"] not in log
    for bad in ({"token": 5}, {"token": "x", "after": -1}, {"token": "x", "after": True}, {"token": "x", "room": 7}):
        page = WebClient(site, port=50001)
        page.send_raw(json.dumps({"type": "resume", **bad}))
        assert page.messages()[0]["type"] == "error", bad


def test_logout_a_lock_and_a_password_change_void_the_tokens_issued_before(world):
    factory, clock, site = world
    admin = Client(factory, clock)
    admin.register("root")
    factory.admin.named = frozenset({"root"})
    ann, login = _login(site)
    assert [m["type"] for m in ann.command("logout")] == ["logout"]
    _, answer = _resume(site, login["token"])
    assert answer == [{"type": "error", "text": RESUME_EXPIRED}]
    assert factory.account_value("ann", "token_epoch") == "1"
    assert "token_epoch,1" in open(os.path.join(factory.store.data_dir, "marks.csv"), encoding="utf-8").read()
    # a password change: the old token is void, the page is sent a fresh one that works
    ann, login = _login(site, command="login")
    answer = ann.command("password", "secret1", "secret2")
    assert [m["type"] for m in answer] == ["reply", "token"], answer
    assert factory.tokens.check(login["token"])[1] == "bad"
    fresh = answer[-1]["token"]
    _, again = _resume(site, fresh, port=40010)
    assert again[0]["type"] == "login" and again[0]["resumed"] is True
    # a lock
    token = again[0]["token"]
    admin.send("lock ann")
    assert "locked" in admin.output()
    _, answer = _resume(site, token, port=40011)
    assert answer[0]["type"] == "error" and "locked" in answer[0]["text"]
    admin.send("unlock ann")
    _, answer = _resume(site, token, port=40012)
    assert answer == [{"type": "error", "text": RESUME_EXPIRED}]


def test_a_token_survives_a_new_factory_on_the_same_data_with_the_same_key(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    site = web_site(factory)
    ann, first = _login(site)
    ann.command("logout")  # epoch 1, durable
    ann, login = _login(site, command="login")
    factory.store.stop()
    again, clock2 = make_factory(str(tmp_path))
    again.tokens.key = factory.tokens.key
    clock2.advance(clock.seconds() - clock2.seconds() + 10)
    _, answer = _resume(web_site(again), login["token"])
    assert answer[0]["type"] == "login" and answer[0]["resumed"] is True
    assert again.tokens.check(first["token"]) == ("ann", "void")


def test_a_connected_page_gets_a_fresh_token_every_few_minutes(world):
    factory, clock, site = world
    ann, login = _login(site)
    for _ in range(int(REFRESH_AGE // 30)):
        ann.send_raw(json.dumps({"type": "command", "name": "ping"}))  # (answers pings: not idle)
        clock.advance(30)
    fresh = [m for m in ann.messages() if m["type"] == "token"]
    assert len(fresh) == 1 and fresh[0]["token"] != login["token"]
    assert fresh[0]["expires"] == pytest.approx(clock.seconds() + LIFETIME, abs=REFRESH_EVERY)
    assert factory.tokens.check(fresh[0]["token"]) == ("ann", "")


def test_pings_a_pong_keeps_a_connection_and_silence_closes_it(world):
    factory, clock, site = world
    ann, _ = _login(site)
    bob, _ = _login(site, "bob", port=40005)
    clock.advance(30)  # heard at login: no ping yet
    ann.messages(), bob.messages()
    assert ann.pings == [] and bob.pings == []
    clock.advance(30)
    ann.messages(), bob.messages()
    assert ann.pings == [PING_PAYLOAD] and bob.pings == [PING_PAYLOAD]
    ann.protocol.dataReceived(ann.ws.send(Pong(PING_PAYLOAD)))
    clock.advance(30)
    assert not ann.transport.disconnecting and "ann" in factory.online
    assert bob.transport.disconnected or bob.transport.disconnecting
    bob.protocol.connectionLost(None)
    assert "bob" not in factory.online
    for _ in range(10):  # answering every ping keeps it for good
        clock.advance(30)
        ann.messages()
        while ann.pings:
            ann.protocol.dataReceived(ann.ws.send(Pong(ann.pings.pop())))
    assert "ann" in factory.online and not ann.transport.disconnecting


def test_no_pings_with_web_ping_0_and_the_timers_stop_with_the_last_connection(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(web_ping=0))
    site = web_site(factory)
    ann, _ = _login(site)
    clock.advance(300)
    ann.messages()
    assert ann.pings == [] and not ann.transport.disconnecting
    ann.protocol.connectionLost(None)
    assert not [call for call in clock.getDelayedCalls() if "Keeper" in repr(call)]


def test_the_close_code_says_whether_to_resume(world):
    factory, clock, site = world
    ann, _ = _login(site)
    _login(site, command="login", port=40006)  # replaced: 1000, do not resume
    ann.messages()
    assert ann.close_code == 1000
    bob, _ = _login(site, "bob", port=40007)
    factory.shut_down("The server is shutting down. Bye.")
    bob.messages()
    assert bob.close_code == 1001


def test_the_key_file_is_made_once_mode_0600_and_replaced_if_damaged(tmp_path):
    key = load_token_key(str(tmp_path))
    path = tmp_path / TOKEN_KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_token_key(str(tmp_path)) == key
    path.chmod(0o644)
    assert load_token_key(str(tmp_path)) == key and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not a key\n")
    fresh = load_token_key(str(tmp_path))
    assert fresh != key and load_token_key(str(tmp_path)) == fresh


def test_a_page_resumes_after_a_daemon_restart_and_gets_what_was_said_meanwhile(tmp_path):
    web_port = free_port()
    data = str(tmp_path / "data")
    daemon = Daemon(data, web_port=web_port).start()
    origin = f"http://127.0.0.1:{web_port}"
    try:
        sock, ws = _ws_connect(web_port, origin)
        _ws_until(sock, ws, lambda e: isinstance(e, AcceptConnection))

        def command(name: str, *args: str) -> None:
            sock.sendall(ws.send(TextMessage(json.dumps({"type": "command", "name": name, "args": list(args)}))))

        command("register", "ann", "secret1")
        login = _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "login")[-1]
        command("public")
        seen = _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "events")
        last = max(x["id"] for e in seen if isinstance(e, dict) and e.get("type") == "events" for x in e["events"])
        daemon.stop()
        sock.close()
        assert oct(os.stat(os.path.join(data, TOKEN_KEY_FILE)).st_mode & 0o777) == "0o600"
        daemon.start()
        bob = Conn(daemon.port)
        bob.register("bob")
        bob.enter("bob")
        bob.send("said while ann was away")
        bob.expect("bob: said while ann was away")
        sock, ws = _ws_connect(web_port, origin)
        _ws_until(sock, ws, lambda e: isinstance(e, AcceptConnection))
        sock.sendall(ws.send(TextMessage(json.dumps(
            {"type": "resume", "token": login["token"], "room": "public", "after": last}))))
        got = _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "history")
        messages = [e for e in got if isinstance(e, dict)]
        assert messages[0]["type"] == "login" and messages[0]["resumed"] is True
        assert "said while ann was away" in [x["text"] for x in messages[-1]["events"]]
        assert all(x["id"] > last for x in messages[-1]["events"])
        bob.expect("ann")
        bob.close()
        sock.close()
    finally:
        daemon.stop()
    assert daemon.unhandled_errors() == [], daemon.log()
    assert login["token"] not in daemon.log()


def test_the_page_keeps_its_token_in_memory_only():
    """No script of the page touches storage, cookies or the URL's query (where a token could end up)."""
    static = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "chatd", "web", "static")
    forbidden = re.compile(r"localStorage|sessionStorage|indexedDB|document\.cookie|history\.(push|replace)State|"
                           r"location\.(search|hash)\s*=")
    scripts = [name for name in os.listdir(static) if name.endswith(".js")]
    assert "connection.js" in scripts
    for name in scripts:
        match = forbidden.search(open(os.path.join(static, name), encoding="utf-8").read())
        assert match is None, f"{name}: {match.group()}"
