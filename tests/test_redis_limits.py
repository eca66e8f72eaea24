"""
Rate limits shared by the nodes (chatd.buses.redis_limits) on a real private
redis-server (tests/redis.py): two nodes' ``Limits`` count one account's and
one address's attempts together; nothing is spent by a refused attempt; with
Redis gone each node goes on with its own limits, logged once.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher

from chatd.limits import Limits
from chatd.settings import Settings

pytest.importorskip("txredisapi")

from chatd.buses.redis_limits import RedisLimits  # noqa: E402  (after the skip: an extra)

#: Seconds a test waits at most.
WAIT = 15.0


def _node(url: str, **settings: Any) -> Limits:
    limits = Limits(Settings(**settings), reactor)
    shared = RedisLimits(url, reactor)
    shared.start()
    limits.shared = shared
    return limits


def _stop(*nodes: Limits) -> defer.Deferred[Any]:
    return defer.gatherResults([node.shared.stop() for node in nodes if isinstance(node.shared, RedisLimits)])


@pytest_twisted.inlineCallbacks
def test_an_accounts_password_checks_count_on_every_node(redis_url):
    a, b = _node(redis_url, account_password_checks=4), _node(redis_url, account_password_checks=4)
    try:
        answers = []
        for node in (a, b, a, b, b, a):
            refused = yield node.shared_refusal("192.0.2.1", "Ann", login=True).addTimeout(WAIT, reactor)
            answers.append(refused)
        assert answers[:4] == [""] * 4
        for refused in answers[4:]:  # the 5th and 6th, on either node
            assert refused.startswith("too many logins to this account; try again in ")
        assert (yield b.shared_refusal("192.0.2.1", "bob", login=True)) == ""  # (another account)
    finally:
        yield _stop(a, b)


@pytest_twisted.inlineCallbacks
def test_failed_logins_of_an_address_on_two_nodes_refuse_its_logins_on_both(redis_url):
    a, b = _node(redis_url, address_login_failures=3), _node(redis_url, address_login_failures=3)
    try:
        for node in (a, b, a):
            assert (yield node.shared_refusal("192.0.2.7", "ann", login=True)) == ""
            yield node.shared_login_failed("192.0.2.7")
        refused = yield b.shared_refusal("192.0.2.7", "bob", login=True)
        assert refused.startswith("too many failed logins from your address; try again in ")
        # A refused attempt spends nothing: bob's allowance is whole (10 checks) on another address.
        for _ in range(10):
            assert (yield a.shared_refusal("198.51.100.1", "bob", login=True)) == ""
        # Exempt addresses ("") and limits set to 0 are not asked.
        assert (yield a.shared_refusal("", "")) == ""
    finally:
        yield _stop(a, b)


@pytest_twisted.inlineCallbacks
def test_registrations_of_an_address_count_on_every_node(redis_url):
    a, b = _node(redis_url, address_registrations=2), _node(redis_url, address_registrations=2)
    try:
        assert (yield a.shared_refusal("192.0.2.9", registration=True)) == ""
        assert (yield b.shared_refusal("192.0.2.9", registration=True)) == ""
        refused = yield a.shared_refusal("192.0.2.9", registration=True)
        assert refused.startswith("too many new accounts from your address; try again in ")
    finally:
        yield _stop(a, b)


@pytest_twisted.inlineCallbacks
def test_without_redis_each_node_goes_on_with_its_own_limits_and_says_so_once(redis_server):
    node = _node(redis_server.url, account_password_checks=2)
    said: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if "rate limits:" in (event.get("log_format") or ""):
            said.append(event["log_format"])

    globalLogPublisher.addObserver(observe)
    try:
        assert (yield node.shared_refusal("192.0.2.1", "ann")) == ""
        redis_server.stop()
        for _ in range(3):  # (past the shared allowance: let through, this node's own limits stand)
            assert (yield node.shared_refusal("192.0.2.1", "ann").addTimeout(WAIT, reactor)) == ""
        assert node.shared.away
        assert len(said) == 1 and "each node counts logins and registrations on its own" in said[0]
        redis_server.start()
        deadline = reactor.seconds() + WAIT
        while node.shared.away and reactor.seconds() < deadline:
            yield node.shared_refusal("192.0.2.2", "bob")
            yield task.deferLater(reactor, 0.1, lambda: None)  # (the reconnect is the reactor's: let it run)
        assert not node.shared.away
        assert len(said) == 2 and "Redis answers again" in said[1]
    finally:
        globalLogPublisher.removeObserver(observe)
        yield _stop(node)
