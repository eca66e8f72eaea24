"""
What every store with batched log events and a history thread shares
(:class:`chatd.persistence.CsvStore`, :class:`chatd.stores.postgres.PostgresStore`):
the ticker that flushes the batch, the stop that waits for the history work
asked for, and the tracking of that work; and :func:`fired`, for a store
on a synchronous runner (chatd-admin).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

T = TypeVar("T")
#: Runs ``f(*args)`` somewhere (a thread, a transaction) and returns a Deferred.
Runner = Callable[..., "defer.Deferred[Any]"]


class HistoryJobs:
    """
    A mixin: :meth:`start` flushes (:meth:`flush_events`, the store's) every
    ``_log_interval`` seconds on ``_clock``; :meth:`stop` stops that, flushes,
    and fires once every job run by :meth:`_in_history_thread` is done.
    """

    _clock: IReactorTime
    _log_interval: float
    _history_run: Runner
    _ticker: LoopingCall | None = None

    def __init__(self) -> None:
        #: History jobs not done yet (stop waits for them).
        self._history_jobs: set[defer.Deferred[Any]] = set()

    def flush_events(self) -> defer.Deferred[None]:
        raise NotImplementedError

    def start(self) -> defer.Deferred[None]:
        """Start writing queued log events every ``log_interval`` seconds."""
        self._ticker = LoopingCall(self.flush_events)
        self._ticker.clock = self._clock
        self._ticker.start(self._log_interval, now=False)
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        """Stop the ticker and write every queued event and mark; fires once the history jobs asked for are done too."""
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        pending = defer.DeferredList(list(self._history_jobs), consumeErrors=True)
        return self.flush_events().addCallback(lambda _: pending).addCallback(lambda _: None)

    def _in_history_thread(self, function: Callable[..., T], *args: Any, run: Runner | None = None
                           ) -> defer.Deferred[T]:
        """Run ``function(*args)`` in the history thread (or by ``run``); :meth:`stop` waits for it."""
        job = (run or self._history_run)(function, *args)
        if not job.called:
            self._history_jobs.add(job)

            def done(result: Any) -> Any:
                self._history_jobs.discard(job)
                return result

            job.addBoth(done)
        return job


def fired(d: defer.Deferred[T]) -> T:
    """
    The result of a Deferred that has fired already (a store's on a
    synchronous runner: chatd-admin, the migration); raises its failure's
    exception, or AssertionError if it is still waiting.
    """
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the synchronous store left a Deferred waiting"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
