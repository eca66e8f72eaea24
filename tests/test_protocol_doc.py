"""docs/PROTOCOL.md against the server: the unprompted messages table and the telnet bytes, produced for real."""

from __future__ import annotations

import os
import re

import pytest
from twisted.conch import telnet
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from chatd.settings import Settings
from helpers import Client, make_factory

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "PROTOCOL.md")
SERVICE = os.path.join(os.path.dirname(DOC), "..", "chatd", "service.py")


def _unprompted_rows() -> list[tuple[re.Pattern[str], str]]:
    """(text as a pattern, code) of each row of the "Unprompted messages" table ("" for no code)."""
    text = open(DOC, encoding="utf-8").read()
    section = text.split("## Unprompted messages", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \| (`(\d+)`|none)", line)
        if match:
            pattern = re.escape(match.group(1)).replace("N", r"\d+")
            rows.append((re.compile(pattern.replace("lab", r"\w+").replace("ann", r"\w+") + "$"), match.group(3) or ""))
    return rows


def _documented(code: str, text: str) -> bool:
    return any(pattern.match(text) and doc_code == code for pattern, doc_code in _unprompted_rows())


class From(Client):
    """A connection from a routable (not exempt) address."""

    def __init__(self, factory, clock, host: str = "192.0.2.7", tagged: bool = True) -> None:
        self.factory, self.clock = factory, clock
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        self.protocol.makeConnection(self.transport)
        if tagged:
            self.send("/client test 1.0")

    def last(self) -> tuple[str, str]:
        """The last ``02``/``00`` line (code, text) of the output."""
        lines = [line.split(" ", 1) for line in self.output().splitlines() if line[:3] in ("02 ", "00 ")]
        return lines[-1][0], lines[-1][1]


def test_table_exists():
    assert len(_unprompted_rows()) == 22


def test_connect_refusals_are_documented(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_connections=1))
    From(factory, clock, "192.0.2.1")
    full = From(factory, clock, "192.0.2.2", tagged=False)
    assert full.transport.disconnecting and _documented("", full.output().splitlines()[0])
    factory, clock = make_factory(str(tmp_path / "b"), Settings(max_per_address=1))
    From(factory, clock)
    crowded = From(factory, clock, tagged=False)
    assert crowded.transport.disconnecting and _documented("", crowded.output().splitlines()[0])


@pytest.mark.parametrize("settings, wait", [(Settings(login_timeout=120), 130), (Settings(idle_timeout=60), 70)])
def test_timeouts_are_documented(tmp_path, settings, wait):
    factory, clock = make_factory(str(tmp_path), settings)
    c = From(factory, clock)
    c.output()
    clock.advance(wait)
    assert c.transport.disconnecting and _documented(*c.last())


def test_flood_notice_is_documented(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    c = From(factory, clock)
    c.send(b"ping\r\n" * 100)
    (notice,) = [line for line in c.output().splitlines() if line.startswith("02 ")]
    assert not c.transport.disconnecting and _documented(*notice.split(" ", 1))


def test_login_refusals_are_documented(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(address_login_failures=1, max_login_failures=2))
    From(factory, clock, "192.0.2.9").register("ann")
    c = From(factory, clock)
    c.send("login ann", "wrong-1")
    clock.advance(5)
    c.output()
    c.send("login ann", "wrong-2")
    assert c.transport.disconnecting and _documented(*c.last())
    factory, clock = make_factory(str(tmp_path / "b"), Settings(max_login_failures=1))
    c = From(factory, clock)
    c.send("login nobody", "wrong-1")
    assert c.transport.disconnecting and _documented(*c.last())


def test_password_check_refusals_are_documented(tmp_path):
    """Past --address-password-checks or --account-password-checks: a documented answer, and closed."""
    factory, clock = make_factory(str(tmp_path), Settings(address_password_checks=1, account_password_checks=1))
    From(factory, clock, "192.0.2.9").register("ann")
    c = From(factory, clock, "192.0.2.9")
    c.send("login bob", "secret1")
    code, text = c.last()
    assert c.transport.disconnecting and _documented(code, text) and "address" in text
    c = From(factory, clock, "192.0.2.10")
    c.send("login ann", "secret1")
    c.output()
    c = From(factory, clock, "192.0.2.11")
    c.send("login ann", "secret1")
    code, text = c.last()
    assert c.transport.disconnecting and _documented(code, text) and "account" in text


def test_room_deleted_logged_in_elsewhere_and_shutdown_are_documented(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    ann, bob = From(factory, clock), From(factory, clock)
    ann.register("ann")
    bob.register("bob")
    ann.send("create lab")
    bob.send("join lab")
    bob.output()
    ann.send("delete lab")
    code, text = [line.split(" ", 1) for line in bob.output().splitlines() if "deleted" in line][0]
    assert _documented(code, text)
    again = From(factory, clock)
    again.login("bob")
    assert bob.transport.disconnecting and _documented(*bob.last())
    reason = re.search(r'shut_down\("([^"]+)"\)', open(SERVICE, encoding="utf-8").read()).group(1)
    factory.shut_down(reason)
    assert again.transport.disconnecting and _documented(*again.last())


def test_raw_client_gets_will_echo_before_every_password_prompt(tmp_path):
    """No telnet from the peer: IAC WILL ECHO before each password prompt, never WONT ECHO (as documented)."""
    factory, clock = make_factory(str(tmp_path))
    c = Client(factory, clock)
    c.send("register ann", "", "secret1", "secret1")  # the empty line repeats the first prompt
    raw = c.transport.value()
    assert raw.count(telnet.IAC + telnet.WILL + telnet.ECHO) == 3
    assert raw.count(telnet.IAC + telnet.WILL + telnet.ECHO + b"Choose a password") == 2
    assert telnet.IAC + telnet.WONT + telnet.ECHO not in raw
    doc = " ".join(open(DOC, encoding="utf-8").read().split())
    assert "sees the three bytes `FF FB 01` before **every** password prompt" in doc
    assert "and never `WONT ECHO`" in doc
