import os
import sys

import pytest

# Tests import the source tree, not an installed copy.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from daemon import daemon  # noqa: E402,F401  (the real-daemon fixture, for every test module)
from pg import own_pg_cluster, pg_cluster, pg_dsn  # noqa: E402,F401  (a private PostgreSQL cluster and a database on it)
from redis import redis_server, redis_url  # noqa: E402,F401  (a private redis-server and its URL)


@pytest.fixture(autouse=True)
def _reactor_kept_running():
    """
    Every test runs inside pytest-twisted's reactor, one for the whole run: a test that stops it (in-process
    code calling ``reactor.stop()``, such as chatd.service's stop when a port cannot be bound) fails here,
    by name. Otherwise the reactor ends at the next test's start and that test fails with pytest-twisted's
    "illegal switch in blockon", the ones after it with "twisted reactor has stopped".
    """
    from twisted.internet import reactor

    def stopping() -> bool:  # (ReactorBase: stop() sets _stopped; running stays true until the loop has ended)
        return reactor.running and getattr(reactor, "_stopped", False)

    before = stopping()
    yield
    if stopping() and not before:
        pytest.fail("this test stopped the reactor the test run shares (reactor.stop()); the next tests cannot run")
