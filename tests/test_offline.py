"""Private messages to someone offline (issue 13): kept durably, delivered at the next login with their time and sender."""

from __future__ import annotations

import pytest

from chatd.settings import Settings
from chatd.stores.memory import MemoryStore
from chatd.tap import Options
from helpers import Client, Held, data_rows, make_factory
from test_frontend_events import EventSession, Structured

QUEUED = "111 Queued, bob is offline: they get it at their next login.\r\n"


def _ann_in_public(factory, clock):
    ann = Client(factory, clock, tagged=True)
    ann.register("ann")
    ann.send("public")
    ann.output()
    return ann


def _bob_offline(factory, clock):
    bob = Client(factory, clock)
    bob.register("bob")
    bob.disconnect()


def test_a_message_to_an_offline_account_is_kept_and_delivered_at_its_next_login(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    clock.advance(3600)
    ann.send("/msg BOB see you", "/msg bob =1+1")
    sent = clock.seconds()
    assert ann.output() == (f"111 [{_hms(sent)}] -> *bob* see you\r\n" + QUEUED
                            + f"111 [{_hms(sent)}] -> *bob* =1+1\r\n" + QUEUED)
    rows = data_rows(tmp_path / "offline.csv")
    assert [row[1:] for row in rows] == [["ann", "bob", "see you"], ["ann", "bob", "'=1+1"]]  # formula-safe
    clock.advance(7200)
    bob = Client(factory, clock, tagged=True)
    out = bob.login("bob")
    assert out.endswith("00 Logged in as bob.\r\n"
                        "00 2 private messages arrived while you were offline, the first at 2026-09-21T15:13:20Z:\r\n"
                        f"03 [{_hms(sent)}] *ann* see you\r\n03 [{_hms(sent)}] *ann* =1+1\r\n11 menu>\r\n")
    assert data_rows(tmp_path / "offline.csv") == []  # removed once delivered
    bob.send("logout", "login bob", "secret1")
    assert "arrived while you were offline" not in bob.output()


def _hms(seconds: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%H:%M:%S")


def test_queued_messages_survive_a_restart_exactly(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    ann.send("/msg bob 'quoted, \"and\" = more", "/msg bob -2")
    factory, clock = make_factory(str(tmp_path))
    bob = EventSession(factory, Structured())
    bob.run("login", "bob", "secret1")
    assert [(message.sender, message.text) for message, sent in bob.privates] == [
        ("ann", "'quoted, \"and\" = more"), ("ann", "-2")]
    assert bob.replies[0].startswith("2 private messages arrived while you were offline")


def test_the_sender_is_told_queued_only_once_the_message_is_durable(tmp_path):
    writes = Held()
    factory, clock = make_factory(str(tmp_path), store_runner=writes)
    bob = Client(factory, clock)
    bob.send("register bob", "secret1", "secret1")
    writes.run_all()
    bob.disconnect()
    ann = Client(factory, clock, tagged=True)
    ann.send("register ann", "secret1", "secret1")
    writes.run_all()
    ann.send("public")
    ann.output()
    ann.send("/msg bob hello", "/ping")
    assert ann.output() == "" and len(writes.calls) == 1  # being written: nothing said, input held
    writes.run_all()
    assert ann.output().endswith(QUEUED + "111 pong\r\n")


def test_a_message_stored_while_its_recipient_logs_in_is_delivered_at_once(tmp_path):
    writes = Held()
    factory, clock = make_factory(str(tmp_path), store_runner=writes)
    for name in ("bob", "ann"):
        c = Client(factory, clock)
        c.send(f"register {name}", "secret1", "secret1")
        writes.run_all()
        c.disconnect()
    ann = EventSession(factory, Structured())
    ann.run("login", "ann", "secret1")
    ann.run("public")
    pending = ann.commands.find("msg", ann.place)
    d = ann.commands.run(ann, pending, ["bob", "just in time"])
    bob = EventSession(factory, Structured())
    bob.run("login", "bob", "secret1")
    assert bob.privates == []
    writes.run_all()  # stored, then removed again: bob is online
    writes.run_all()
    assert [message.text for message, _ in bob.privates] == ["just in time"] and d.called
    assert data_rows(tmp_path / "offline.csv") == [] and factory.offline == {}


def test_a_full_queue_refuses_new_messages_and_keeps_the_oldest(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(offline_messages=2))
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    ann.send("/msg bob one", "/msg bob two", "/msg bob three")
    assert ann.output().endswith(
        QUEUED + "02 Error: bob is offline and has 2 messages waiting already; try again later.\r\n")
    assert [row[3] for row in data_rows(tmp_path / "offline.csv")] == ["one", "two"]


def test_no_queue_when_the_option_is_zero_and_no_account_keeps_todays_answer(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(offline_messages=0))
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    ann.send("/msg bob hi", "/msg ghost hi")
    assert ann.output() == "02 Error: bob is not logged in.\r\n02 Error: ghost is not logged in.\r\n"
    assert Options().parseOptions(["--offline-messages", "7"]) is None


def test_a_message_that_cannot_be_stored_is_refused(tmp_path):
    store = MemoryStore()
    factory, clock = make_factory(str(tmp_path), store=store)
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    store.broken = "disk full"
    ann.send("/msg bob lost?")
    assert ann.output() == "02 Error: Could not keep the message (server storage problem); try again later.\r\n"
    store.broken = None
    assert factory.offline == {} and store.private == []


def test_deleting_an_account_deletes_the_messages_kept_for_it(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    _bob_offline(factory, clock)
    ann = _ann_in_public(factory, clock)
    carol = Client(factory, clock)
    carol.register("carol")
    carol.send("away")  # (a logged-in user's messages are never queued)
    ann.send("/msg bob for bob", "/msg carol for carol")
    carol.disconnect()
    ann.send("/msg carol later")
    bob = Client(factory, clock)
    bob.send("login bob", "secret1")
    bob.output()
    ann.send("/msg bob later for bob")
    bob.send("deleteme", "secret1")
    assert [row[2:] for row in data_rows(tmp_path / "offline.csv")] == [["carol", "later"]]
    factory, clock = make_factory(str(tmp_path))
    assert "arrived while you were offline" not in Client(factory, clock).register("bob")
    assert len(factory.offline["carol"]) == 1


@pytest.mark.parametrize("option", ["-1", "x"])
def test_the_option_is_a_count(option):
    from twisted.python import usage
    with pytest.raises(usage.UsageError, match="--offline-messages"):
        Options().parseOptions(["--offline-messages", option])
