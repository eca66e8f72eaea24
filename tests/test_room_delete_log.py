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
