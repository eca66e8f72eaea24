"""chatd.frontends.pacing.Pacing: units taken one at a time, and nothing taken or resumed once the connection closes."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatd.frontends.pacing import Pacing
from chatd.limits import TokenBucket


def pacing_on(transport: StringTransport, clock: Clock, ran: list[str]) -> Pacing[str]:
    return Pacing(clock, ran.append, lambda: transport, lambda: None, lambda: False)


def test_an_answer_after_the_connection_began_closing_resumes_nothing_and_runs_no_queued_unit():
    # The connection is closed (loseConnection: a wrong PASS, too many failed logins) while a command waits
    # for its answer; the answer comes within --close-grace. A strict StringTransport raises "Cannot resume
    # producing after loseConnection"; a real TCP connection ignores the resume, and the queued units ran.
    clock, transport, ran = Clock(), StringTransport(), []
    pacing = pacing_on(transport, clock, ran)
    pacing.received("first")
    pacing.hold("answer")
    pacing.received("second", "third")
    assert ran == ["first"] and transport.producerState == "paused"
    transport.loseConnection()
    pacing.release("answer")
    assert ran == ["first"]
    assert list(pacing.queue) == ["second", "third"] and not pacing.holds


def test_a_flood_wait_ending_after_the_connection_began_closing_resumes_nothing():
    clock, transport, ran = Clock(), StringTransport(), []
    pacing = pacing_on(transport, clock, ran)
    pacing.bucket = TokenBucket(1.0, 1.0, clock.seconds())
    pacing.received("first", "second", "third")  # (the unit over the allowance still runs; the rest waits)
    assert ran == ["first", "second"] and pacing.holds == {"flood"}
    transport.loseConnection()
    clock.advance(2)
    assert ran == ["first", "second"] and list(pacing.queue) == ["third"] and not pacing.holds


def test_a_hold_on_a_closing_connection_does_not_pause_it():
    clock, transport, ran = Clock(), StringTransport(), []
    pacing = pacing_on(transport, clock, ran)
    transport.loseConnection()
    pacing.hold("answer")
    pacing.received("unit")
    assert ran == [] and pacing.holds == {"answer"} and transport.producerState == "producing"
