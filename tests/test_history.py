"""
Room history in the core (issue 13): replay on join, /history and paging,
/replay on|off, unread counts, the group commit to the store, ids and rings
across a restart. Driven through the line front-end on a MemoryStore with a
Clock (the CSV store's files: tests/test_history_store.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import attrs
import pytest

from chatd.core.events import EventKind
from chatd.history import COMMIT_INTERVAL
from chatd.limits import HISTORY_REQUEST_BURST
from chatd.settings import Settings
from chatd.store import PUBLIC_ROOM_ID
from chatd.stores.memory import MemoryStore
from helpers import Client, make_factory


def stamp(clock, offset: float = 0.0) -> str:
    """The dated time history lines carry, for the clock's time plus ``offset`` seconds."""
    return datetime.fromtimestamp(int(clock.seconds() + offset), timezone.utc).strftime("[%Y-%m-%d %H:%M:%S]")


def start(store=None, **settings):
    store = store or MemoryStore()
    factory, clock = make_factory("", Settings(flood_rate=0, **settings), store=store)
    factory.history.start()
    return factory, clock, store


def user(factory, clock, name, room=None, tagged=True):
    client = Client(factory, clock, tagged=tagged)
    if factory.accounts.get(name) is None:
        client.register(name)
    else:
        client.login(name)
    if room:
        client.send(f"join {room}" if room != "public" else "public")
    client.output()
    return client


def test_joining_replays_the_last_lines_dimmed_before_live_chat(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("hello", "/me waves", "how are you?")
    clock.advance(1)
    bob = Client(factory, clock, tagged=True)
    bob.register("bob")
    bob.output()
    when = stamp(clock, -1)
    bob.send("public")
    assert bob.output() == (
        "111 Entered room public (2 here). Type /help for commands, /exit to leave.\r\n"
        "111 --- 3 earlier lines in public (/replay off hides them) ---\r\n"
        f"04 {when} ann: hello\r\n"
        f"04 {when} * ann waves\r\n"
        f"04 {when} ann: how are you?\r\n"
        "111 --- end of earlier lines ---\r\n"
        f"111 [{datetime.fromtimestamp(int(clock.seconds()), timezone.utc):%H:%M:%S}] * bob joined public\r\n")


def test_replay_for_people_has_no_codes_and_leaves_out_joins_and_leaves(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    carol = user(factory, clock, "carol", "public")
    carol.send("/exit")
    ann.send("hi")
    bob = user(factory, clock, "bob", tagged=False)
    bob.send("public")
    out = bob.output()
    assert f"--- 1 earlier line in public (/replay off hides them) ---\r\n{stamp(clock)} ann: hi\r\n" \
           "--- end of earlier lines ---\r\n" in out
    assert "joined" not in out.split("--- end of earlier lines ---")[0]


def test_replay_takes_the_lines_of_this_turn_and_no_line_twice(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    bob = user(factory, clock, "bob")
    ann.protocol.dataReceived(b"first\r\n")  # queued in the room, not yet flushed nor recorded
    bob.protocol.dataReceived(b"public\r\n")
    out = bob.output()
    assert out.count("ann: first") == 1 and f"04 {stamp(clock)} ann: first" in out


def test_replay_is_bounded_in_lines_and_age(tmp_path):
    factory, clock, _ = start(replay_lines=2, replay_hours=1)
    ann = user(factory, clock, "ann", "public")
    ann.send("old")
    clock.advance(3601)
    ann.send("one", "two", "three")
    bob = user(factory, clock, "bob")
    bob.send("public")
    out = bob.output()
    assert "--- 2 earlier lines" in out and "ann: two" in out and "ann: three" in out
    assert "ann: one" not in out and "ann: old" not in out


def test_no_replay_when_the_server_turns_it_off(tmp_path):
    factory, clock, _ = start(replay_lines=0)
    ann = user(factory, clock, "ann", "public")
    ann.send("hi")
    bob = user(factory, clock, "bob")
    bob.send("public")
    assert "earlier line" not in bob.output()


def test_replay_off_is_kept_for_the_account_across_a_restart(tmp_path):
    factory, clock, store = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("hi")
    bob = user(factory, clock, "bob")
    bob.send("replay off")
    assert bob.output() == "00 Replay on join is off: /history shows a room's earlier lines.\r\n11 menu>\r\n"
    assert store.marks["bob"] == {"replay": "off"}  # durable before the answer
    bob.send("public")
    assert "earlier line" not in bob.output()
    bob.send("/history")
    assert f"05 {stamp(clock)} ann: hi" in bob.output()
    again, clock2 = make_factory("", Settings(flood_rate=0), store=store)
    bob2 = user(again, clock2, "bob")
    bob2.send("public")
    assert "earlier line" not in bob2.output()
    bob2.send("/replay maybe", "/replay ON")
    assert bob2.output() == ("02 Error: usage: /replay on|off\r\n111 Replay on join is on.\r\n")
    assert store.marks["bob"] == {}


def test_history_pages_back_and_shows_joins_only_when_asked(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    ann.send(*[f"line {n}" for n in range(1, 31)])
    said = stamp(clock)
    ann.output()
    ann.send("/history 5")
    out = ann.output().splitlines()
    assert out[0] == "111 --- 5 lines of history in public ---"
    assert [line.split("] ", 1)[1] for line in out[1:6]] == [f"ann: line {n}" for n in range(26, 31)]
    assert all(line.startswith(f"05 {said}") for line in out[1:6])
    # event ids: 1 is ann's join, line n is id n + 1
    assert out[6] == "111 --- end of history; older lines: /history before 27 5 ---"
    clock.advance(2)
    ann.send("/history before 27 5")
    assert [line.split("] ", 1)[1] for line in ann.output().splitlines()[1:6]] == [
        f"ann: line {n}" for n in range(21, 26)]
    clock.advance(2)
    ann.send("/history before 3")
    out = ann.output().splitlines()
    assert out == ["111 --- 1 line of history in public ---", f"05 {said} ann: line 1",
                   "111 --- end of history: that is all there is ---"]
    clock.advance(2)
    ann.send("/history all before 3")
    assert ann.output().splitlines()[1:3] == [f"05 {said} * ann joined public", f"05 {said} ann: line 1"]
    clock.advance(2)
    ann.send("/history before 1")
    assert ann.output() == "111 No earlier lines in public.\r\n"


@pytest.mark.parametrize("words", ["x", "51", "0", "before", "before x", "before 0", "before 5 6 7", "5 6", "-1",
                                   "before ５", "all all"])
def test_history_refuses_bad_arguments_with_its_usage(tmp_path, words):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    ann.send(f"/history {words}")
    assert ann.output() == ("02 Error: usage: /history [all] [before ID] [N]: the last N lines (default 20, at most "
                            "50); 'all' adds joins and leaves; 'before ID' pages back.\r\n")


def test_history_is_rate_limited_per_account(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    for _ in range(int(HISTORY_REQUEST_BURST)):
        ann.send("/history")
        assert "Error" not in ann.output()
    ann.send("/history")
    assert ann.output() == "02 Error: too many /history requests; try again in 3 seconds.\r\n"
    clock.advance(2)
    ann.send("/history")
    assert "Error" not in ann.output()


def test_history_is_only_for_the_room_one_is_in(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann")
    ann.send("/history")
    assert ann.output().startswith("02 Error: unknown choice.")


def test_history_is_committed_in_one_batch_per_room_every_interval(tmp_path):
    factory, clock, store = start()
    calls = []
    append = store.append_history
    store.append_history = lambda batches: calls.append(batches) or append(batches)
    ann = user(factory, clock, "ann", "public")
    ann.send("a", "b")
    ann.send("c")
    assert calls == []
    clock.advance(COMMIT_INTERVAL)
    assert len(calls) == 1 and len(calls[0]) == 1
    batch = calls[0][0]
    assert batch.room_id == PUBLIC_ROOM_ID and batch.lines_before == 0
    assert [(e.id, e.kind, e.text) for e in batch.events] == [
        (1, EventKind.JOIN, ""), (2, EventKind.SAY, "a"), (3, EventKind.SAY, "b"), (4, EventKind.SAY, "c")]
    ann.send("d")
    clock.advance(COMMIT_INTERVAL)
    assert calls[1][0].lines_before == 3 and [e.id for e in calls[1][0].events] == [5]


def test_a_commit_waits_for_the_one_in_flight(tmp_path):
    from twisted.internet import defer
    factory, clock, store = start()
    held = []
    store.append_history = lambda batches: held.append((batches, defer.Deferred())) or held[-1][1]
    ann = user(factory, clock, "ann", "public")
    ann.send("a")
    clock.advance(COMMIT_INTERVAL)
    ann.send("b")
    clock.advance(COMMIT_INTERVAL * 3)
    assert len(held) == 1
    held[0][1].callback(None)
    clock.advance(COMMIT_INTERVAL)
    assert len(held) == 2 and [e.text for e in held[1][0][0].events] == ["b"]


def test_a_failed_commit_is_retried_and_logged_once_per_outage(tmp_path):
    from twisted.internet.testing import EventLoggingObserver
    from twisted.logger import globalLogPublisher

    factory, clock, store = start()
    ann = user(factory, clock, "ann", "public")
    events = EventLoggingObserver()
    globalLogPublisher.addObserver(events)
    try:
        store.broken = "disk full"
        ann.send("kept")
        clock.advance(COMMIT_INTERVAL)
        ann.send("also kept")
        for _ in range(3):  # retried every COMMIT_INTERVAL: logged the first time only (it was each time)
            clock.advance(COMMIT_INTERVAL)
        assert store.history == {}
        store.broken = None
        clock.advance(COMMIT_INTERVAL)
        assert [e.text for e in store.history[PUBLIC_ROOM_ID]] == ["", "kept", "also kept"]
        store.broken = "disk full"  # a second outage is told again
        ann.send("later")
        clock.advance(COMMIT_INTERVAL)
    finally:
        globalLogPublisher.removeObserver(events)
    said = [e["log_format"].split(":")[0].split(" (")[0] for e in events if "history" in e["log_format"]]
    assert said == ["could not store room history", "room history stored again", "could not store room history"]


def test_ids_go_on_and_replay_reads_the_store_after_a_restart(tmp_path):
    factory, clock, store = start(history_ring=3)
    ann = user(factory, clock, "ann", "public")
    ann.send("one", "two")
    ann.send("/exit")
    clock.advance(COMMIT_INTERVAL)
    assert [e.id for e in store.history[PUBLIC_ROOM_ID]] == [1, 2, 3, 4]
    again, clock2, _ = start(store, history_ring=3)
    assert again.rooms["public"].last_id == 4 and not again.rooms["public"].history.filled
    bob = user(again, clock2, "bob", "public")
    bob.send("three")
    bob.output()
    bob.send("/history 5")
    out = bob.output()
    assert [line.split("] ", 1)[1] for line in out.splitlines()[1:4]] == ["ann: one", "ann: two", "bob: three"]
    clock2.advance(COMMIT_INTERVAL)
    assert [e.id for e in store.history[PUBLIC_ROOM_ID]] == [1, 2, 3, 4, 5, 6]


def test_the_ring_is_filled_from_the_store_once_on_the_first_join(tmp_path):
    factory, clock, store = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("before the restart")
    clock.advance(COMMIT_INTERVAL)
    reads = []
    read = store.read_history
    store.read_history = lambda *a, **k: reads.append(a) or read(*a, **k)
    again, clock2, _ = start(store)
    bob = user(again, clock2, "bob")
    bob.send("public")
    assert "ann: before the restart" in bob.output()  # replayed
    carol = user(again, clock2, "carol")
    carol.send("public")
    assert "ann: before the restart" in carol.output()
    assert len(reads) == 1


def test_history_older_than_the_ring_comes_from_the_store(tmp_path):
    factory, clock, store = start(history_ring=4)
    ann = user(factory, clock, "ann", "public")
    ann.send(*[f"n{n}" for n in range(10)])
    clock.advance(COMMIT_INTERVAL)
    ann.output()
    ann.send("/history 8")
    assert [line.split("] ", 1)[1] for line in ann.output().splitlines()[1:9]] == [
        f"ann: n{n}" for n in range(2, 10)]


def test_unread_counts_show_in_the_room_list_for_rooms_one_left(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab", "hi", "/exit")
    bob = user(factory, clock, "bob", "lab")
    bob.send("one", "/me two", "three")
    ann.output()
    ann.send("list")
    out = ann.output()
    assert "  lab  (1 here, owner ann, 3 unread)" in out
    assert "  public  (0 here, public)" in out
    ann.send("join lab", "/exit", "list")
    assert "  lab  (1 here, owner ann)" in ann.output()
    bob.send("/exit")
    bob.send("list")
    assert "  lab  (0 here, owner ann)" in bob.output()


def test_unread_marks_survive_a_restart(tmp_path):
    factory, clock, store = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("/exit")
    bob = user(factory, clock, "bob", "public")
    bob.send("x", "y")
    clock.advance(COMMIT_INTERVAL)
    again, clock2, _ = start(store)
    ann2 = user(again, clock2, "ann")
    ann2.send("list")
    assert "  public  (0 here, public, 2 unread)" in ann2.output()


def test_deleting_a_room_deletes_its_history(tmp_path):
    factory, clock, store = start()
    ann = user(factory, clock, "ann")
    ann.send("create lab", "join lab", "secret plans", "/exit")
    clock.advance(COMMIT_INTERVAL)
    lab_id = factory.rooms["lab"].history.room_id
    assert lab_id in store.history
    ann.send("delete lab")
    clock.advance(COMMIT_INTERVAL)
    ann.output()
    assert lab_id not in store.history
    ann.send("create lab", "join lab")
    assert "secret plans" not in ann.output()


def test_without_history_nothing_is_kept_or_replayed(tmp_path):
    factory, clock, store = start(history_days=0)
    ann = user(factory, clock, "ann", "public")
    ann.send("hi")
    clock.advance(COMMIT_INTERVAL * 4)
    assert store.history == {}
    bob = user(factory, clock, "bob")
    bob.send("public", "/history")
    out = bob.output()
    assert "earlier lines in public (" not in out and "111 No earlier lines in public.\r\n" in out


def test_history_older_than_the_retention_is_not_shown_and_is_expired(tmp_path):
    factory, clock, store = start(history_days=1)
    ann = user(factory, clock, "ann", "public")
    ann.send("ancient")
    clock.advance(COMMIT_INTERVAL)
    clock.advance(86400 + 1)
    ann.send("fresh")
    ann.output()
    ann.send("/history")
    out = ann.output()
    assert "ann: fresh" in out and "ancient" not in out
    assert all(e.text != "ancient" for e in store.history[PUBLIC_ROOM_ID])  # the daily expiry ran


def test_stop_commits_what_is_waiting(tmp_path):
    factory, clock, store = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("last words")
    clock.advance(0)
    done = factory.history.stop()
    assert done.called and [e.text for e in store.history[PUBLIC_ROOM_ID]][-1] == "last words"


def test_a_structured_front_end_gets_replay_and_history_as_event_values(tmp_path):
    from helpers import fired  # noqa: F401  (EventSession.run uses it)
    from test_frontend_events import EventSession, Structured
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    ann.send("hello", "/me waves")
    bob = EventSession(factory, Structured())
    bob.run("register", "bob", "secret1")
    bob.run("public")
    bob.run("history", "all")
    (kind, replay), (kind2, shown) = bob.history
    assert kind == "replay" and [(e.id, e.kind, e.text) for e in replay] == [(2, EventKind.SAY, "hello"),
                                                                              (3, EventKind.ME, "waves")]
    assert kind2 == "history" and [e.kind for e in shown] == [EventKind.JOIN, EventKind.SAY, EventKind.ME,
                                                               EventKind.JOIN]


def test_the_replayed_block_is_one_write(tmp_path):
    """Header, lines and footer leave in one send: 22 small sends in a row would wait on delayed ACKs (Nagle)."""
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    ann.send(*[f"n{n}" for n in range(20)])
    bob = user(factory, clock, "bob")
    writes = []
    write = bob.transport.write
    bob.transport.write = lambda data: writes.append(data) or write(data)
    bob.send("public")
    assert len(writes) == 3  # the answer, the block, the room's batch (the join)
    assert writes[1].startswith(b"111 --- 20 earlier lines") and writes[1].endswith(b"111 --- end of earlier lines ---\r\n")


@pytest.mark.parametrize("wait, text", [(0.3, "try again in 1 second."), (1.0, "try again in 2 seconds."),
                                        (2.5, "try again in 3 seconds.")])
def test_waits_are_said_in_whole_seconds_with_the_right_plural(wait, text):
    """Tester: 'try again in 1 seconds.' (every limit's refusal says its wait through try_again)."""
    from chatd.limits import try_again
    assert try_again(wait) == text


def test_a_history_request_refused_within_the_last_second_says_1_second(tmp_path):
    factory, clock, _ = start()
    ann = user(factory, clock, "ann", "public")
    for _ in range(int(HISTORY_REQUEST_BURST)):
        ann.send("/history")
    ann.output()
    clock.advance(1.5)
    ann.send("/history")
    assert ann.output() == "02 Error: too many /history requests; try again in 1 second.\r\n"
