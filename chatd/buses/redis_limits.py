"""
Rate limits shared by the nodes through Redis (issue 17): the allowances an
attacker could otherwise multiply by spreading attempts over the nodes behind
a load balancer — failed logins and password checks per address, password
checks per account, registrations per address (``chatd.limits``: the same
settings, the same token buckets).

One Lua script (:data:`TAKE`) checks and spends several buckets in one
atomic step: one round trip per attempt (a login, a registration, a password
check), never per line. A bucket is a hash ``chatd:limit:KIND:KEY`` (``t``
tokens, ``l`` when last changed, in Redis's own clock, ``TIME``, so the
nodes' clocks do not matter) that expires once it would be full again, so
Redis holds only the keys that used their allowance recently.

Each node still keeps its own buckets (``chatd.limits.Limits``), checked
first and without a round trip; the shared ones come after. **While Redis
cannot be reached** (or does not answer within :data:`TIMEOUT` seconds) an
attempt is let through by this module, logged once per outage: the nodes
fall back to their own limits, each the same numbers as the shared ones (an
attacker gets at most the number of nodes times the allowance meanwhile).
Logins do not stop because Redis did. docs/OPERATIONS.md, "Several nodes".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.logger import Logger

from chatd.buses.redis import Script, _Connections, _ready, parse_url

#: Seconds an attempt waits for Redis before it goes ahead on the node's own limits.
TIMEOUT = 1.0
#: What a bucket is asked: only whether it has a token (CHECK), that and spend one (TAKE), spend one anyway (SPEND).
CHECK, TAKE, SPEND = 0, 1, 2

#: KEYS: the buckets; ARGV: per bucket its rate (tokens per second), burst and mode (CHECK, TAKE, SPEND).
#: First every bucket asked with CHECK or TAKE must hold a token: if one does not, nothing is spent and the
#: answer is {its index (from 1), the seconds until it has one}. Else the TAKE and SPEND buckets each spend one,
#: and the answer is {0, "0", the indexes of the buckets left without a token}.
SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local level = {}
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local stored = redis.call('HMGET', KEYS[i], 't', 'l')
  local tokens = burst
  if stored[1] then
    tokens = math.min(burst, tonumber(stored[1]) + (now - tonumber(stored[2])) * rate)
  end
  if ARGV[3 * i] ~= '2' and tokens < 1 then
    return {i, string.format('%.3f', (1 - tokens) / rate)}
  end
  level[i] = tokens
end
local empty = {0, '0'}
for i = 1, #KEYS do
  if ARGV[3 * i] ~= '0' then
    local rate, burst = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
    local tokens = level[i] - 1
    redis.call('HSET', KEYS[i], 't', string.format('%.6f', tokens), 'l', string.format('%.6f', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens) / rate * 1000) + 1000)
    if tokens < 1 then empty[#empty + 1] = i end
  end
end
return empty
"""

#: One bucket asked: (kind, key, rate per second, burst, mode).
Ask = tuple[str, str, float, float, int]


class RedisLimits:
    """
    The shared buckets at ``url`` (``redis://HOST:PORT/DB``, the bus's):
    :meth:`take` asks several at once. Start with :meth:`start`, stop with
    :meth:`stop` (``chatd.service.BusService``, with the bus).
    """

    log = Logger()

    def __init__(self, url: str, reactor: Any, prefix: str = "chatd:limit:") -> None:
        self.host, self.port, self.db = parse_url(url)
        self.reactor = reactor
        self.prefix = prefix
        self._service = ClientService(TCP4ClientEndpoint(reactor, self.host, self.port, timeout=5),
                                      _Connections(self.db), retryPolicy=backoffPolicy(0.1, 1.0, 1.5),
                                      clock=reactor, prepareConnection=_ready)
        self._script = Script(SCRIPT)
        #: Whether the last attempt went ahead without Redis (logged once per outage).
        self.away = False

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> defer.Deferred[None]:
        return self._service.stopService()

    def take(self, asks: Sequence[Ask]) -> defer.Deferred[tuple[int, float, list[int]]]:
        """
        Ask the buckets ``asks`` in one step (:data:`SCRIPT`). Fires with
        (-1, 0.0, [indexes of ``asks`` left without a token]) when nothing
        refused, or (index of the refusing ask, seconds until it has a
        token, []) — nothing spent then. Never fails: without Redis (down,
        or no answer within :data:`TIMEOUT` s) it fires (-1, 0.0, []).
        """
        if not asks:
            return defer.succeed((-1, 0.0, []))
        answer: defer.Deferred[tuple[int, float, list[int]]] = defer.Deferred()

        def done(reply: Any) -> None:
            if answer.called:
                return
            timer.cancel()
            if self.away:
                self.away = False
                self.log.info("rate limits: Redis answers again; logins and registrations count on every node")
            index, wait = int(reply[0]), float(reply[1])
            answer.callback((index - 1, wait, []) if index else (-1, 0.0, [int(i) - 1 for i in reply[2:]]))

        def failed(why: str) -> None:
            if answer.called:
                return
            if timer.active():
                timer.cancel()
            if not self.away:
                self.away = True
                self.log.warn("rate limits: Redis at {host}:{port} not answering ({why}); each node counts "
                              "logins and registrations on its own until it is back", host=self.host,
                              port=self.port, why=why)
            answer.callback((-1, 0.0, []))

        timer = self.reactor.callLater(TIMEOUT, failed, f"no answer within {TIMEOUT:g} s")
        self._ask(asks).addCallbacks(done, lambda failure: failed(failure.getErrorMessage()))
        return answer

    @defer.inlineCallbacks
    def _ask(self, asks: Sequence[Ask]) -> Any:
        connection = yield self._service.whenConnected(failAfterFailures=1)
        keys = [f"{self.prefix}{kind}:{key}" for kind, key, _, _, _ in asks]
        args: list[Any] = []
        for _, _, rate, burst, mode in asks:
            args += [repr(float(rate)), repr(float(burst)), mode]
        reply = yield self._script.run(connection, keys, args)
        return reply
