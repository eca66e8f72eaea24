"""
The browser client's page on the server side (chatd.frontends.webpage, issue 15): its static files and
headers, and the messages the page needs (``line``: a line typed as on telnet; ``rooms``: the room list as
data), through the real Site on a StringTransport. The page itself runs in tests/test_browser.py.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from typing import Any

import pytest
from twisted.web.test.requesthelper import DummyRequest

from chatd.frontends.web import web_site
from chatd.frontends.webpage import SECURITY_HEADERS, STATIC_DIR, PageSite, page_root
from chatd.settings import Settings
from daemon import ROOT
from helpers import Client, make_factory
from test_web import WebClient


def http_get(site: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    """
    (status, headers with lower-case names, body) of GET ``path`` on ``site`` (a PageSite, or what
    web_site returns), through its getResourceFor and a DummyRequest (which pulls static.File's producer).
    """
    site = getattr(site, "wrappedFactory", site)
    request = DummyRequest([segment.encode() for segment in path.lstrip("/").split("/")])
    request.requestHeaders.setRawHeaders(b"host", [b"localhost:8080"])
    found = site.getResourceFor(request)
    body = found.render(request)
    if isinstance(body, bytes):
        request.write(body)
        request.finish()
    headers = {name.decode().lower(): values[-1].decode() for name, values in request.responseHeaders.getAllRawHeaders()}
    return request.responseCode or 200, headers, b"".join(request.written)


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    return factory, clock, web_site(factory)


def test_the_page_and_its_modules_are_served_with_their_types_and_security_headers(world):
    _, _, site = world
    status, headers, body = http_get(site, "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == open(os.path.join(STATIC_DIR, "index.html"), "rb").read()
    for name, value in SECURITY_HEADERS:
        assert headers[name.decode()] == value.decode()
    assert "script-src 'self';" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    for script in ("app.js", "connection.js"):
        status, headers, body = http_get(site, f"/{script}")
        assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")  # modules need it
        assert headers["x-content-type-options"] == "nosniff"
    assert http_get(site, "/style.css")[1]["content-type"] == "text/css; charset=utf-8"
    status, headers, body = http_get(site, "/nothing-here.js")
    assert status == 404 and headers["content-security-policy"] and b"Traceback" not in body
    assert http_get(site, "/../setup.cfg")[0] == 404


def test_health_answers_ok_until_the_node_stops_and_is_never_logged(world):
    """A load balancer's check (deploy/haproxy.cfg) asks /health every few seconds: no access-log line for it."""
    import io

    factory, _, site = world
    status, headers, body = http_get(site, "/health")
    assert (status, headers["content-type"], body) == (200, "text/plain; charset=utf-8", b"ok\n")
    page = getattr(site, "wrappedFactory", site)
    page._logFile, page._logDateTime = io.StringIO(), "30/Nov/2026:03:51:20 +0000"
    page._logFormatter = lambda when, request: f"{request.path.decode()} logged"
    for path in (b"/health", b"/", b"/app.js"):
        request = DummyRequest([path[1:]])
        request.path = path
        page.log(request)
    assert page._logFile.getvalue() == "/ logged\n/app.js logged\n"
    factory.closing = True
    assert http_get(site, "/health")[0::2] == (503, b"stopping\n")


def test_a_directory_is_never_listed(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "secret.txt").write_text("not listed")
    site = PageSite(page_root(str(tmp_path)))
    assert http_get(site, "/")[0] == 200
    status, _, body = http_get(site, "/sub/")
    assert status == 404 and b"secret.txt" not in body
    assert http_get(site, "/sub/secret.txt")[2] == b"not listed"


def test_the_static_files_are_package_data():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    patterns = config["options.package_data"]["chatd"].split()
    files = sorted(os.listdir(STATIC_DIR))
    assert {"index.html", "app.js", "connection.js", "style.css"} <= set(files)
    assert all(any(re.fullmatch(p.replace("*", "[^/]*"), f"web/static/{f}") for p in patterns) for f in files)


def test_the_scripts_never_build_html_from_text():
    """Everything users wrote goes into the DOM as text: no HTML parsing of strings, no eval, no inline script."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new Function|"
                           r"setTimeout\(\s*[\"'`]|setInterval\(\s*[\"'`]")
    scripts = [name for name in os.listdir(STATIC_DIR) if name.endswith((".js", ".mjs"))]
    assert "app.js" in scripts
    for name in scripts:
        text = open(os.path.join(STATIC_DIR, name), encoding="utf-8").read()
        assert not forbidden.search(text), f"{name}: {forbidden.search(text).group()}"
    page = open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8").read()
    assert re.findall(r"<script\b[^>]*>", page) == [  # none inline
        '<script type="module" src="app.js">', '<script type="module" src="files.js">']
    assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=|javascript:", page)  # no handlers or styles in markup
    ids = re.findall(r'<input id="([^"]+)"', page)
    assert ids and all(f'<label for="{name}">' in page for name in ids)  # a label for every input
    assert 'aria-live="polite"' in page and '<main' in page and '<nav' in page and '<header' in page


def _events(messages: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["kind"], e["sender"], e["text"]) for m in messages if m["type"] == "events" for e in m["events"]]


def test_a_line_runs_as_telnet_would_parse_it(world):
    factory, clock, site = world
    ann = WebClient(site)
    line = lambda text: (ann.send_raw(json.dumps({"type": "line", "text": text})), clock.advance(0),  # noqa: E731
                         ann.messages())[-1]
    ann.command("register", "ann", "secret1")
    assert line("nonsense here") == [{"type": "error", "text": (
        "unknown choice. Type a number from 1 to 16 or a keyword, or 'menu' to see the menu.")}]
    assert line("CREATE lab") == [{"type": "reply", "text": "Room lab created."}]  # a keyword in any case
    assert [m["type"] for m in line("8 lab")][:2] == ["entered", "history"]  # a menu number, its argument
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("join lab")
    ann.messages()
    assert _events(line("hello <b>bob</b>")) == [("say", "ann", "hello <b>bob</b>")]
    assert _events(line("//not a command")) == [("say", "ann", "/not a command")]
    assert _events(line("\x1b[31m/me waves")) == [("me", "ann", "waves")]  # cleaned first, as a telnet line
    assert line("/nosuch x") == [{"type": "error", "text": "unknown command /nosuch. Type /help for the list."}]
    assert line("/who")[0]["text"].startswith("In lab (2): ~ann")
    assert _events(line("/kick bob spam and eggs")) == [("kick", "ann", "spam and eggs")]  # Command.split
    assert "You were kicked from lab by ann: spam and eggs;" in bob.output()
    ann.send_raw(json.dumps({"type": "line", "text": 5}))
    assert ann.messages() == [{"type": "error", "text": "a line message needs \"text\": the line as typed (a string)."}]
    ann.send_raw(json.dumps({"type": "shout"}))
    assert "\"line\"" in ann.messages()[0]["text"]


def test_a_line_never_carries_a_password(world):
    _, clock, site = world
    eve = WebClient(site)
    eve.send_raw(json.dumps({"type": "line", "text": "login ann secret1"}))
    clock.advance(0)
    assert eve.messages() == [{"type": "error", "text": "usage: /login NAME"}]  # the password is its own field


def test_rooms_lists_what_list_shows_as_data(world):
    factory, clock, site = world
    ann = WebClient(site)
    assert ann.command("rooms") == [
        {"type": "error", "text": "please log in first (login) or create an account (register)."}]
    ann.command("register", "ann", "secret1")
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("create hidden", "join hidden", "/invite-only on", "/exit", "create lab", "join lab",
             "/topic Lab <b>work</b>")
    ann.command("join", "lab")
    ann.command("exit")
    bob.send("one", "two")
    assert ann.command("rooms") == [{"type": "rooms", "rooms": [
        {"name": "public", "members": 0, "topic": "", "unread": None, "owner": "", "invite_only": False,
         "secret": False, "keyed": False, "limit": 0},
        {"name": "lab", "members": 1, "topic": "Lab <b>work</b>", "unread": 2, "owner": "bob", "invite_only": False,
         "secret": False, "keyed": False, "limit": 0},
    ]}]  # in list's order; not hidden: invite-only, and ann is not invited (Moderation.may_see)
    bob.send("/exit", "join hidden", "/invite ann")
    answers = ann.command("rooms")
    assert answers[0]["type"] == "notice" and answers[0]["text"].startswith("bob invited you to hidden")
    names = [room["name"] for room in answers[-1]["rooms"]]
    assert names == ["public", "hidden", "lab"]
    ann.command("join", "lab")
    listed = [m for m in ann.command("rooms") if m["type"] == "rooms"]
    assert [r["name"] for r in listed[0]["rooms"]] == names  # in a room too (the page's side panel)


def test_the_replay_says_where_older_lines_begin(world):
    factory, clock, site = world
    bob = Client(factory, clock)
    bob.register("bob")
    bob.send("public", *(f"line {i}" for i in range(30)))
    ann = WebClient(site)
    ann.command("register", "ann", "secret1")
    replay = [m for m in ann.command("public") if m["type"] == "history"][0]
    assert replay["replay"] and len(replay["events"]) == 20
    assert replay["older"] == replay["events"][0]["id"]  # history before ID pages back from the first shown
    older = [m for m in ann.command("history", f"before {replay['older']} 50") if m["type"] == "history"][0]
    assert [e["text"] for e in older["events"]] == [f"line {i}" for i in range(10)] and older["older"] is None
