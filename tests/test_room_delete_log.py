"""Every join and leave is in log.csv, also when a room delete sends its members back to the menu."""

from __future__ import annotations


from helpers import data_rows, Client, make_factory


def test_room_delete_logs_a_leave_for_each_member(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    owner = Client(factory, clock)
    owner.register("olga")
    owner.send("create lab")
    members = []
    for name in ("pete", "rita"):
        member = Client(factory, clock)
        member.register(name)
        member.send("join lab")
        members.append(member)
    owner.output()
    owner.send("delete lab")
    assert "Room lab deleted." in owner.output()
    for member in members:
        assert "Room lab was deleted by olga" in member.output()
    factory.store.flush_events()
    rows = list(data_rows(tmp_path / "log.csv"))
    room_rows = [(row[1], row[2], row[3], row[4]) for row in rows if row[3] == "lab"]
    assert room_rows[:4] == [
        ("room_create", "olga", "lab", ""),
        ("join", "pete", "lab", ""),
        ("join", "rita", "lab", ""),
        ("room_delete", "olga", "lab", ""),
    ]
    assert sorted(room_rows[4:]) == [("leave", "pete", "lab", "reason=room_deleted"), ("leave", "rita", "lab", "reason=room_deleted")]


def _settled(factory, clock, held, tmp_path):
    factory.store.flush_events()
    held.run_all()
    clock.advance(0)
    return [(row[1], row[2], row[3], row[4]) for row in data_rows(tmp_path / "log.csv") if row[3] == "jrX"]


def _olga_owns_jrx(tmp_path):
    """olga owns jrX, bob is at the menu; every store write waits for ``held.run_all()``."""
    from helpers import Held

    held = Held()
    factory, clock = make_factory(str(tmp_path), store_runner=held)
    olga, bob = Client(factory, clock), Client(factory, clock)
    for client, name in ((olga, "olga"), (bob, "bob")):
        client.send(f"register {name}", "secret1", "secret1")
        held.run_all()
    olga.send("create jrX")
    held.run_all()
    return held, factory, clock, olga, bob


def test_a_join_while_the_room_is_being_deleted_is_refused_so_the_log_keeps_the_order(tmp_path):
    """
    olga deletes jrX while bob sends `join jrX` and a line: the room is closed from the moment olga
    confirms, so bob is told it is being deleted and log.csv reads room_create, room_delete (was:
    room_create, room_delete, join bob, leave bob reason=room_deleted: a join logged after the delete).
    """
    held, factory, clock, olga, bob = _olga_owns_jrx(tmp_path)
    olga.output(), bob.output()
    olga.send("delete jrX")
    bob.send(b"join jrX\r\nhi-jrX\r\n")
    out = bob.output()
    assert "Error: Room jrX is being deleted." in out and "Entered room" not in out
    held.run_all()
    assert "Room jrX deleted." in olga.output()
    assert _settled(factory, clock, held, tmp_path) == [("room_create", "olga", "jrX", ""),
                                                          ("room_delete", "olga", "jrX", "")]


def test_a_room_whose_delete_fails_is_open_again(tmp_path):
    """The store cannot write the delete: olga is told so, and the room takes joins again."""
    held, factory, clock, olga, bob = _olga_owns_jrx(tmp_path)
    olga.output()
    olga.send("delete jrX")
    bob.send("join jrX")
    assert "is being deleted" in bob.output()
    _, _, written = held.calls.pop(0)
    written.errback(OSError(28, "No space left on device"))
    clock.advance(0)
    assert "Could not delete the room" in olga.output()
    bob.send("join jrX")
    assert "Entered room jrX" in bob.output()
    assert [row[:2] for row in _settled(factory, clock, held, tmp_path)] == [
        ("room_create", "olga"), ("join", "bob")]
