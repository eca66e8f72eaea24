"""Unit tests of chatd/limits.py and its hooks in the protocol: StringTransport and a Clock, no sleeps."""

from __future__ import annotations

import hashlib
import re
import socket

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.testing import StringTransport

from chatd.limits import MIN_PAUSE, Limits, TokenBucket, parse_networks
from chatd.sockets import set_keepalive
from chatd.settings import Settings
from chatd.transfer import MAX_PENDING_WRITES, TransferSettings, Transfers
from helpers import Client, Held, make_factory, run_now


class At(Client):
    """A fake connection from a given peer address."""

    def __init__(self, factory, clock, host: str = "192.0.2.7") -> None:
        self.factory = factory
        self.clock = clock
        self.protocol = factory.buildProtocol(None)
        peer = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 40000)
        self.transport = StringTransport(peerAddress=peer)
        self.protocol.makeConnection(self.transport)


def _in_public(factory, clock, name, host="192.0.2.7"):
    c = At(factory, clock, host)
    c.register(name)
    c.send("public")
    c.output()
    return c


# -- the token bucket --------------------------------------------------------------


def test_bucket_burst_then_rate():
    """A full bucket allows ``burst`` lines at once, then ``rate`` per second; a debtor is told how long to wait."""
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)  # one token short at 10/s
    assert bucket.take(1.0) == 0.0  # refilled by 10, capped at 5, minus the debt
    bucket = TokenBucket(rate=1000.0, burst=1.0, now=0.0)
    bucket.take(0.0)
    assert bucket.take(0.0) == MIN_PAUSE  # never a sub-millisecond timer per line


def test_bucket_notice_at_most_every_ten_seconds():
    bucket = TokenBucket(1.0, 1.0, 0.0)
    assert bucket.notice_due(0.0) and not bucket.notice_due(5.0) and bucket.notice_due(10.0)


# -- flooding ---------------------------------------------------------------------


def test_flooder_is_throttled_and_told_room_is_not(tmp_path):
    """Past its burst a flooder's lines are delayed (not lost, in order) and it is told once; the room sees no notice."""
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=10, flood_burst=20))
    watcher = _in_public(factory, clock, "watcher", "192.0.2.1")
    flooder = _in_public(factory, clock, "flooder", "192.0.2.2")
    clock.advance(10)  # both buckets full again after logging in
    watcher.output(), flooder.output()
    flooder.send(b"".join(b"line %d\r\n" % i for i in range(40)))
    seen = watcher.output()
    told = flooder.output()
    assert "too fast" in told and "too fast" not in seen
    delivered = [line for line in seen.splitlines() if "flooder: line" in line]
    assert 20 <= len(delivered) <= 22
    assert flooder.transport.producerState == "paused"
    for _ in range(30):
        clock.advance(0.1)
    seen += watcher.output()
    delivered = [line.rsplit(" ", 1)[1] for line in seen.splitlines() if "flooder: line" in line]
    assert delivered == [str(i) for i in range(40)]
    assert flooder.output().count("too fast") == 0  # told once per 10 s, not per line
    assert flooder.transport.producerState == "producing"


def test_throttle_and_pending_answer_both_hold_input(tmp_path):
    """The end of a throttle does not resume a connection that waits for the server, nor the other way round."""
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=1))
    c = At(factory, clock)
    protocol = c.protocol
    protocol.hold()
    protocol._throttle(1.0)
    clock.advance(1.0)
    assert c.transport.producerState == "paused"  # still waiting for the server
    protocol._throttle(1.0)
    protocol.release()
    assert c.transport.producerState == "paused"  # still throttled
    clock.advance(1.0)
    assert c.transport.producerState == "producing"


def test_flood_limit_off(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0))
    c = At(factory, clock)
    assert c.protocol._bucket is None
    c.send(b"ping\r\n" * 3000)
    assert c.output().count("pong") == 3000


def test_default_flood_limit_throttles_a_flood(tmp_path):
    """With the defaults a pasted snippet goes through, but a flood is slowed (not lost) and told."""
    factory, clock = make_factory(str(tmp_path))
    watcher = _in_public(factory, clock, "watcher", "192.0.2.1")
    c = _in_public(factory, clock, "fast")
    clock.advance(60)  # a full bucket
    watcher.output(), c.output()
    c.send(b"".join(b"paste %d\r\n" % i for i in range(40)))
    assert c.transport.producerState == "producing" and "too fast" not in c.output()
    clock.advance(60)
    c.send(b"".join(b"flood %d\r\n" % i for i in range(200)))
    assert c.transport.producerState == "paused"
    assert "you are sending too fast" in c.output()
    seen = watcher.output()
    assert seen.count("fast: flood") < 100
    for _ in range(60):  # 5 lines/s: all 200 arrive within 40 s, in order
        clock.advance(1)
    seen += watcher.output()
    assert [line.rsplit(" ", 1)[1] for line in seen.splitlines() if "fast: flood" in line] == [
        str(i) for i in range(200)]


def test_upload_frames_do_not_count_against_the_flood_limit(tmp_path):
    """With the defaults a multi-MB upload's /data frames are never throttled; chat lines still are."""
    factory, clock = make_factory(str(tmp_path))
    transfers = Transfers(factory, str(tmp_path / "spool"), run_now, TransferSettings(max_file_size=10_000_000))
    factory.transfers = transfers
    transfers.start()
    c = _in_public(factory, clock, "up")
    c.send("/client test 1.0")
    data = bytes(range(256)) * (8 * 4096)  # 8 MiB: 128 frames of 64 KiB, at one instant
    c.send(f"/send {len(data)} big.bin")
    file_id = re.search(r"^24 (\S+) ", c.output(), re.M).group(1)
    for start in range(0, len(data), 65536):
        c.send(f"/data {file_id} 65536\r\n".encode() + data[start:start + 65536])
        assert c.transport.producerState == "producing"
    c.send(f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    out = c.output()
    assert f"26 {file_id} " in out and "too fast" not in out
    c.send(b"".join(b"line %d\r\n" % i for i in range(200)))
    assert c.transport.producerState == "paused" and "too fast" in c.output()


# -- connection limits --------------------------------------------------------------


def test_total_connection_limit(tmp_path):
    """Past max_connections a new connection is told the server is full and closed; a freed slot is reused."""
    factory, clock = make_factory(str(tmp_path), Settings(max_connections=2))
    a, b = At(factory, clock, "192.0.2.1"), At(factory, clock, "192.0.2.2")
    c = At(factory, clock, "192.0.2.3")
    assert "server is full" in c.output() and c.transport.disconnecting
    assert len(factory.connections) == 2 and len(factory.limits.all) == 2
    c.protocol.connectionLost(None)  # a refused connection releases nothing
    assert len(factory.limits.all) == 2
    a.disconnect()
    d = At(factory, clock, "192.0.2.4")
    assert not d.transport.disconnecting and "Welcome" in d.output()
    assert not b.transport.disconnecting


def test_per_address_limit_and_exempt_networks(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_per_address=2))
    same = [At(factory, clock, "198.51.100.9") for _ in range(3)]
    assert [c.transport.disconnecting for c in same] == [False, False, True]
    assert "too many connections from your address" in same[2].output()
    assert not At(factory, clock, "198.51.100.10").transport.disconnecting
    # IPv4-mapped IPv6 is the same address.
    assert At(factory, clock, "::ffff:198.51.100.9").transport.disconnecting
    same[0].disconnect()
    assert not At(factory, clock, "198.51.100.9").transport.disconnecting
    assert factory.limits.per_address["198.51.100.9"] == 2
    # Loopback is exempt by default (a local proxy or benchmark).
    local = [At(factory, clock, "127.0.0.1") for _ in range(5)]
    assert not any(c.transport.disconnecting for c in local)
    assert At(factory, clock, "::1").transport.disconnecting is False
    for c in local:
        c.disconnect()
    assert "127.0.0.1" not in factory.limits.per_address


def test_no_exemption_when_configured_empty(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(max_per_address=1, limit_exempt=""))
    At(factory, clock, "127.0.0.1")
    assert At(factory, clock, "127.0.0.1").transport.disconnecting


def test_parse_networks():
    nets = parse_networks(" 10.0.0.0/8 , ::1 ,")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError):
        parse_networks("not-a-network")


# -- login timeout and idle timeout -----------------------------------------------------


def test_login_timeout(tmp_path):
    """A connection that does not log in is closed after login_timeout; a logged-in one stays."""
    factory, clock = make_factory(str(tmp_path), Settings(login_timeout=30))
    lurker = At(factory, clock, "192.0.2.1")
    user = At(factory, clock, "192.0.2.2")
    user.register("ursula")
    clock.advance(29)
    assert not lurker.transport.disconnecting
    clock.advance(5)
    assert "did not log in within 30 seconds" in lurker.output()
    assert lurker.transport.disconnecting
    clock.advance(300)
    assert not user.transport.disconnecting
    lurker.disconnect()
    assert not factory.limits.unauthenticated


def test_login_timeout_spares_a_connection_waiting_for_its_hash(tmp_path):
    """A login queued behind other hashes is the server's delay, not the client's: it is not timed out."""
    held = Held()
    factory, clock = make_factory(str(tmp_path), Settings(login_timeout=30), hash_runner=held)
    c = At(factory, clock)
    c.output()
    c.send("register patient", "secret1", "secret1")
    clock.advance(100)
    assert not c.transport.disconnecting
    held.run_all()
    assert "Registered and logged in as patient." in c.output()
    clock.advance(100)
    assert not c.transport.disconnecting


def test_idle_timeout(tmp_path):
    """With idle_timeout set, a connection that sends nothing for that long is closed; a talker is not."""
    factory, clock = make_factory(str(tmp_path), Settings(idle_timeout=60, login_timeout=0))
    quiet = _in_public(factory, clock, "quiet", "192.0.2.1")
    talker = _in_public(factory, clock, "talker", "192.0.2.2")
    for _ in range(8):
        clock.advance(10)
        talker.send("still here")
    assert "nothing received for 60 seconds" in quiet.output()
    assert quiet.transport.disconnecting and not talker.transport.disconnecting


def test_idle_timeout_off_by_default(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    c = _in_public(factory, clock, "sleepy")
    clock.advance(7 * 24 * 3600)
    assert not c.transport.disconnecting


# -- failed logins per address ------------------------------------------------------------


def test_failed_logins_limited_per_address(tmp_path):
    """
    Failed logins from one address, spread over several connections, use up
    the address's allowance; then logins from it are refused without hashing
    until the window has passed. Other addresses are not affected.
    """
    hashes = []

    def counting(function, *args):
        hashes.append(function)
        from helpers import run_now

        return run_now(function, *args)

    factory, clock = make_factory(
        str(tmp_path), Settings(address_login_failures=3, address_login_window=300), hash_runner=counting
    )
    At(factory, clock, "192.0.2.50").register("victim")
    for _ in range(3):
        attacker = At(factory, clock, "203.0.113.5")
        attacker.send("login victim", "wrong-password")
        assert "Login failed" in attacker.output()
        attacker.disconnect()
    before = len(hashes)
    attacker = At(factory, clock, "203.0.113.5")
    attacker.output()
    attacker.send("login victim", "secret1")
    out = attacker.output()
    assert "too many failed logins from your address" in out and "Logged in" not in out
    assert attacker.transport.disconnecting
    assert len(hashes) == before  # refused before any hashing
    # Another address is not affected.
    assert "Logged in as victim." in At(factory, clock, "192.0.2.51").login("victim")
    # After a third of the window, one more attempt is allowed.
    clock.advance(101)
    assert "Logged in as victim." in At(factory, clock, "203.0.113.5").login("victim")
    # Forgotten entirely once the allowance is full again (memory stays bounded).
    clock.advance(300)
    assert not factory.limits.login_failures.buckets


def test_failed_logins_from_exempt_address_not_limited(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(address_login_failures=1))
    At(factory, clock, "127.0.0.1").register("local")
    for _ in range(3):
        c = At(factory, clock, "127.0.0.1")
        c.send("login local", "wrong-password")
        assert "Login failed" in c.output()
    assert "Logged in as local." in At(factory, clock, "127.0.0.1").login("local")


def test_login_storm_queues_while_chat_flows(tmp_path):
    """Fifty logins waiting for the (bounded) hash pool do not stop chat between logged-in users."""
    held = Held()
    factory, clock = make_factory(str(tmp_path), Settings(account_password_checks=100), hash_runner=held)
    At(factory, clock, "192.0.2.1").register("ann")
    held.run_all()
    ann = At(factory, clock, "192.0.2.1")
    ann.send("login ann", "secret1")
    held.run_all()
    ann.send("public")
    storm = [At(factory, clock, f"198.51.100.{i}") for i in range(50)]
    for c in storm:
        c.send("login ann", "secret1")
    assert len(held.calls) == 50  # queued, one per connection, none run yet
    ann.output()
    ann.send("hello during the storm")
    assert "ann: hello during the storm" in ann.output()
    held.run_all()
    assert all("Logged in as ann." in c.output() for c in storm[-1:])


# -- dead peers: TCP keepalive ---------------------------------------------------------------


def test_set_keepalive_options():
    with socket.socket() as sock:
        set_keepalive(sock, 120)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 120
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 30
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 4


def test_limits_without_a_reactor_loop(tmp_path):
    """The sweep runs on the factory's clock and stops at shutdown."""
    factory, clock = make_factory(str(tmp_path))
    At(factory, clock)
    assert isinstance(factory.limits, Limits) and factory.limits._sweeper is not None
    factory.shut_down("bye")
    assert factory.limits._sweeper is None


# -- one owner decides whether a connection reads -------------------------------------------------


def _file_client(factory, clock, tmp_path, name="up"):
    transfers = Transfers(factory, str(tmp_path / "spool"), run_now, TransferSettings(max_file_size=10_000_000))
    factory.transfers = transfers
    transfers.start()
    c = _in_public(factory, clock, name)
    c.send("/client test 1.0")
    c.output()
    return c, transfers


def test_end_of_throttle_does_not_resume_a_spool_backlog(tmp_path):
    """The flood pause ends while the spool writes still lag: the connection stays paused until they catch up."""
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=10))
    c, transfers = _file_client(factory, clock, tmp_path)
    files = transfers.files_of(c.protocol)
    files.writes_queued(MAX_PENDING_WRITES + 1)  # the disk lags behind this connection's uploads
    assert c.transport.producerState == "paused"
    c.protocol._throttle(1.0)
    clock.advance(1.0)
    assert c.transport.producerState == "paused"  # the spool still lags
    c.send("buffered meanwhile")
    assert "buffered meanwhile" not in c.output()
    files.writes_queued(-(MAX_PENDING_WRITES + 1))
    assert c.transport.producerState == "producing"
    assert "up: buffered meanwhile" in c.output()  # what arrived meanwhile is handled at once


def test_spool_catching_up_does_not_resume_a_throttled_or_waiting_connection(tmp_path):
    """Each reason holds on its own: spool, flood limit, a pending answer, a consumer's pause."""
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=10))
    c, transfers = _file_client(factory, clock, tmp_path)
    protocol, files = c.protocol, transfers.files_of(c.protocol)
    files.writes_queued(MAX_PENDING_WRITES + 1)
    protocol._throttle(5.0)
    protocol.hold()
    protocol.pauseProducing()
    files.writes_queued(-(MAX_PENDING_WRITES + 1))
    assert c.transport.producerState == "paused"
    protocol.release()
    assert c.transport.producerState == "paused"
    protocol.resumeProducing()
    assert c.transport.producerState == "paused"  # still throttled
    clock.advance(5.0)
    assert c.transport.producerState == "producing" and not protocol.paused


# -- rate limits per account and per address ---------------------------------------------------


def test_logging_in_again_does_not_buy_a_new_burst(tmp_path):
    """Re-login cycling: five connections of one account, 50 lines each, reach the room as one allowance."""
    factory, clock = make_factory(str(tmp_path))  # the defaults: 5 lines/s, burst 50
    watcher = _in_public(factory, clock, "watcher", "192.0.2.1")
    At(factory, clock, "192.0.2.2").register("flood")
    watcher.output()
    seen = 0
    for _ in range(5):
        c = At(factory, clock, "192.0.2.2")
        c.send(b"login flood\r\nsecret1\r\njoin public\r\n" + b"".join(b"x %d\r\n" % i for i in range(50)))
        seen += len(re.findall(r"flood: x", watcher.output()))
    assert seen <= 50  # one connection alone: 49 (join took a token)
    assert seen >= 45


def test_account_allowance_is_shared_not_per_connection(tmp_path):
    """The account's bucket is what a logged-in connection draws on, and a new login draws on the same one."""
    factory, clock = make_factory(str(tmp_path))
    first = _in_public(factory, clock, "amy")
    bucket = first.protocol._bucket
    assert bucket is factory.limits.lines.get("amy")
    second = At(factory, clock)
    second.login("amy")
    assert second.protocol._bucket is bucket


def test_registrations_per_address_limited(tmp_path):
    """An address may register --address-registrations accounts per window; then it is refused without hashing."""
    factory, clock = make_factory(str(tmp_path), Settings(address_registrations=3, address_registration_window=60))
    for i in range(3):
        assert "Registered and logged in" in At(factory, clock, "203.0.113.9").register(f"user{i}")
    late = At(factory, clock, "203.0.113.9")
    late.output()
    late.send("register")  # told at once, before typing a name and two passwords
    assert late.output() == "Error: too many new accounts from your address; try again in 21 seconds.\r\nmenu> "
    assert "Registered and logged in" in At(factory, clock, "192.0.2.10").register("user4")  # another address
    assert "Registered and logged in" in Client(factory, clock).register("user5")  # exempt (local)
    clock.advance(20)
    assert "Registered and logged in" in At(factory, clock, "203.0.113.9").register("user3")
    clock.advance(60)
    factory.limits.sweep()
    assert not factory.limits.registrations.buckets  # forgotten once refilled


def test_registration_limit_also_holds_for_registrations_already_under_way(tmp_path):
    """Two connections that both started before the limit was reached: the second to finish is refused, unhashed."""
    factory, clock = make_factory(str(tmp_path), Settings(address_registrations=1, address_registration_window=60))
    first, second = At(factory, clock, "203.0.113.9"), At(factory, clock, "203.0.113.9")
    first.send("register user3", "secret1")
    second.send("register user4", "secret1")
    first.send("secret1")
    assert "Registered and logged in as user3." in first.output()
    second.output()
    second.send("secret1")
    assert second.output() == "Error: too many new accounts from your address; try again in 61 seconds.\r\nmenu> "
    assert "user4" not in factory.accounts


def test_default_registration_limit(tmp_path):
    """The default is documented: 20 accounts per address per hour."""
    settings = Settings()
    assert (settings.address_registrations, settings.address_registration_window) == (20, 3600.0)


def test_frames_of_no_active_upload_cost_tokens(tmp_path):
    """``/data zz 1`` + ``A`` for an ID that is not this connection's active upload is charged like a line."""
    factory, clock = make_factory(str(tmp_path))
    c, _ = _file_client(factory, clock, tmp_path)
    c.send("/send 10 x.txt")
    assert re.search(r"^24 (\S+) ", c.output(), re.M)
    c.send(b"/data zz 1\r\nA" * 200)
    assert c.transport.producerState == "paused"
    assert "02 Error: you are sending too fast" in c.output()


def test_iac_nop_flood_before_login_is_charged(tmp_path):
    """IAC NOP before login costs a token each: past the burst the connection stops being read."""
    factory, clock = make_factory(str(tmp_path))
    c = At(factory, clock)
    c.output()
    c.send(b"\xff\xf1" * 200 + b"ping\r\n")
    assert c.transport.producerState == "paused"
    assert "too fast" in c.output()
    assert c.protocol._telnet.held  # the rest waits, unparsed
    waited = 0.0
    while "pong" not in c.output() and waited < 60:
        clock.advance(0.25)
        waited += 0.25
    assert 29 <= waited <= 31  # 150 commands past the burst of 50, at 5 per second
    clock.advance(1)
    assert c.transport.producerState == "producing"


def test_tiny_frames_of_own_upload_cost_tokens_full_ones_do_not(tmp_path):
    """Own active upload: 1-byte frames are charged (no free frame flood); full frames and the last piece are free."""
    factory, clock = make_factory(str(tmp_path))
    c, _ = _file_client(factory, clock, tmp_path)
    data = b"z" * (100 * 4096 + 7)
    c.send(f"/send {len(data)} z.bin")
    file_id = re.search(r"^24 (\S+) ", c.output(), re.M).group(1)
    for start in range(0, len(data) - 7, 4096):  # 100 full frames: free
        c.send(f"/data {file_id} 4096\r\n".encode() + data[start:start + 4096])
    c.send(f"/data {file_id} 7\r\n".encode() + data[-7:])  # the last piece: free
    assert c.transport.producerState == "producing"
    c.send(f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    assert f"26 {file_id} " in c.output()
    c.send(f"/send {len(data)} z2.bin")
    file_id = re.search(r"^24 (\S+) ", c.output(), re.M).group(1)
    c.send(f"/data {file_id} 1\r\nz".encode() * 100)
    assert c.transport.producerState == "paused" and "too fast" in c.output()


def test_over_long_lines_cost_tokens(tmp_path):
    """Lines over --max-line are refused and charged like any line, so they cannot flood the error answer."""
    factory, clock = make_factory(str(tmp_path), Settings(max_line=100))
    c = At(factory, clock)
    c.output()
    c.send((b"x" * 200 + b"\r\n") * 100)
    out = c.output()
    assert c.transport.producerState == "paused" and "too fast" in out
    assert out.count("longer than 100 bytes") <= 51


def test_dropped_bytes_of_an_over_long_line_cost_tokens(tmp_path):
    """An unterminated line is dropped past --max-line, and each --max-line bytes dropped cost a token like a line."""
    factory, clock = make_factory(str(tmp_path))  # --max-line 4096, burst 50
    c = At(factory, clock)
    c.output()
    c.send(b"x" * 65536)
    assert 33 <= c.protocol._bucket.tokens <= 35  # 16 tokens for 64 KiB
    assert c.transport.producerState == "producing"
    c.send(b"x" * 65536 * 3)
    assert c.transport.producerState == "paused" and "too fast" in c.output()
    clock.advance(60)
    c.send(b"\r\nping\r\n")
    assert "pong" in c.output()  # the line after it is read as usual


# -- re-login cycling: what an account makes others see, and password checks ------------------------


def test_relogin_cycling_joins_and_leaves_are_held_to_the_account_allowance(tmp_path):
    """
    One account logs in again and again from new connections, each sending
    ``/client``, login and ``join public`` (every new login replaces the
    last, which leaves the room): the room gets its joins and leaves at the
    account's allowance (burst 50, then 5 a second), not one pair per
    connection; nothing is dropped: the last connection, left alone, joins.
    """
    factory, clock = make_factory(str(tmp_path), Settings(account_password_checks=0, address_password_checks=0))
    watcher = _in_public(factory, clock, "watcher", "192.0.2.1")
    At(factory, clock, "192.0.2.2").register("flood")
    watcher.output()
    seen = 0
    connections = []
    for _ in range(500):  # 10 seconds: one connection every 20 ms, the 30 latest kept open
        c = Client(factory, clock)
        c.send(b"/client x 1\r\nlogin flood\r\nsecret1\r\njoin public\r\n")
        connections.append(c)
        if len(connections) > 30:
            connections.pop(0).disconnect()
        clock.advance(0.02)
        seen += len(re.findall(r"\* flood (?:joined|left) public", watcher.output()))
    assert 50 <= seen <= 50 + 5 * 10 + 2  # was 999: a join and a leave per connection
    clock.advance(120)
    assert "Entered room public" in c.output()
    assert "* flood joined public" in watcher.output()


def test_leaving_by_going_away_costs_the_account_a_token(tmp_path):
    """A disconnect from a room is announced to it, and charged: the account's next connection waits for it."""
    factory, clock = make_factory(str(tmp_path), Settings(flood_burst=5))
    first = _in_public(factory, clock, "amy")
    first.send("one", "two", "three", "four")  # the account's allowance is used up
    bucket = factory.limits.lines.get("amy")
    assert bucket is first.protocol._bucket and bucket.tokens == 0.0
    first.disconnect()
    assert bucket.tokens == -1.0
    second = At(factory, clock)
    second.login("amy")
    second.send("public")
    assert "Entered room public" not in second.output()  # in debt: paused, not refused
    assert second.transport.producerState == "paused"
    clock.advance(0.2)  # the debt is paid at 5 tokens a second
    assert "Entered room public" in second.output()


def _counting_factory(tmp_path, settings):
    hashes = []

    def counting(function, *args):
        hashes.append(function)
        return run_now(function, *args)

    factory, clock = make_factory(str(tmp_path), settings, hash_runner=counting)
    return factory, clock, hashes


def test_password_checks_limited_per_account(tmp_path):
    """
    Every login attempt of one account, from any address, failed or not,
    costs a password check: past --account-password-checks per window the
    next is refused without hashing (and the connection closed); other
    accounts are not affected.
    """
    factory, clock, hashes = _counting_factory(tmp_path, Settings(address_login_failures=0))
    At(factory, clock, "192.0.2.9").register("flood")
    for i in range(10):
        c = At(factory, clock, f"198.51.100.{i}")
        assert ("Logged in" if i % 2 else "Login failed") in c.login("flood", "secret1" if i % 2 else "wrong-password")
    before = len(hashes)
    late = At(factory, clock, "198.51.100.99")
    late.output()
    late.send("login flood", "secret1")
    assert late.output().endswith("Password: Error: too many logins to this account; try again in 7 seconds.\r\n")
    assert late.transport.disconnecting and len(hashes) == before
    assert "logged in as carol." in At(factory, clock, "198.51.100.99").register("carol")  # another account
    clock.advance(6)
    assert "Logged in as flood." in At(factory, clock, "198.51.100.99").login("flood")


def test_password_checks_limited_per_address(tmp_path):
    """
    One address may cause --address-password-checks hashes per window
    (logins to any accounts, failed or not, and registrations); then it is
    refused without hashing. Another address, or an exempt one, is not.
    """
    settings = Settings(address_password_checks=3, password_check_window=30)
    factory, clock, hashes = _counting_factory(tmp_path, settings)
    for name in ("ann", "bob"):
        Client(factory, clock).register(name)  # exempt (local)
    c = At(factory, clock, "203.0.113.9")
    assert "logged in as carl." in c.register("carl")
    assert "Logged in as ann." in At(factory, clock, "203.0.113.9").login("ann")
    assert "Login failed" in At(factory, clock, "203.0.113.9").login("nobody")
    before = len(hashes)
    late = At(factory, clock, "203.0.113.9")
    late.output()
    late.send("login bob", "secret1")
    assert late.output().endswith("Password: Error: too many logins from your address; try again in 11 seconds.\r\n")
    assert len(hashes) == before
    assert "Logged in as bob." in At(factory, clock, "192.0.2.10").login("bob")
    for _ in range(5):
        assert "Logged in as bob." in At(factory, clock, "127.0.0.1").login("bob")  # exempt: only the account counts
    clock.advance(10)
    assert "Logged in as bob." in At(factory, clock, "203.0.113.9").login("bob")


def test_default_password_check_limits(tmp_path):
    """The defaults are documented: 60 per address and 10 per account per minute."""
    settings = Settings()
    assert (settings.address_password_checks, settings.account_password_checks,
            settings.password_check_window) == (60, 10, 60.0)


def test_a_mapped_exempt_network_is_its_ipv4_network(tmp_path):
    """--limit-exempt ::ffff:10.0.0.0/104 exempts 10.x.x.x however it connects (chatd.limits.canonical_network)."""
    assert [str(n) for n in parse_networks("::ffff:10.0.0.0/104, ::/80, ::1")] == [
        "10.0.0.0/8", "::/80", "::1/128"]
    factory, clock = make_factory(str(tmp_path), Settings(max_per_address=1, limit_exempt="::ffff:10.0.0.0/104"))
    both = [At(factory, clock, "10.1.2.3"), At(factory, clock, "::ffff:10.1.2.3"), At(factory, clock, "10.1.2.3")]
    assert not any(c.transport.disconnecting for c in both)
    assert factory.limits.address_key(both[1].transport) == ""
    assert At(factory, clock, "::ffff:127.0.0.5").transport.disconnecting is False  # (1 allowed: the first)
    assert At(factory, clock, "127.0.0.5").transport.disconnecting  # loopback is no longer exempt: the same key
