"""Unit tests of file transfer on the server: StringTransport connections, a Clock, file work run inline."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import transfer
from chatd.transfer import TransferSettings, Transfers
from chatd.wire import parse_size
from helpers import Client, data_rows, make_factory, run_now


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    transfers = Transfers(factory, str(tmp_path / "spool"), run_now, TransferSettings(max_file_size=1_000_000))
    factory.transfers = transfers
    transfers.start()
    return factory, clock, tmp_path


def in_room(factory, clock, name, tagged=True):
    c = Client(factory, clock, tagged=tagged)
    c.register(name)
    c.send("join public")
    c.output()
    return c


def received_files(text: str) -> dict[str, bytes]:
    """The files in a tagged connection's output, by name, checked against their announced hash."""
    files, names, digests = {}, {}, {}
    for line in text.splitlines():
        code, _, rest = line.partition(" ")
        if code == "20":
            file_id, size, digest, sender, name = rest.split(" ", 4)
            names[file_id], digests[file_id], files[file_id] = name, digest, b""
        elif code == "21":
            file_id, _, data = rest.partition(" ")
            files[file_id] += base64.b64decode(data)
        elif code == "22":
            assert hashlib.sha256(files[rest]).hexdigest() == digests[rest]
    return {names[i]: data for i, data in files.items()}


def upload(client, data: bytes, name="notes.txt", frame=1000, finish=True, size=None) -> str:
    """Offer ``data`` (announced as ``size`` bytes, by default its length) and send it in frames."""
    client.send(f"/send {len(data) if size is None else size} {name}")
    out = client.output()
    match = re.search(r"^24 (\S+) ", out, re.M)
    assert match, out
    file_id = match.group(1)
    for start in range(0, len(data), frame):
        piece = data[start:start + frame]
        client.send(f"/data {file_id} {len(piece)}\r\n".encode() + piece)
    if finish:
        client.send(f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    return file_id


def test_file_reaches_tagged_members_and_plain_ones_are_told(world):
    factory, clock, tmp_path = world
    ann, bob, cat = in_room(factory, clock, "ann"), in_room(factory, clock, "bob"), in_room(factory, clock, "cat")
    pam = in_room(factory, clock, "pam", tagged=False)
    for c in (ann, bob, cat, pam):
        c.output()
    data = os.urandom(100_000) + b"\xff\xfb\x01\r\n/data x 5\r\n"  # telnet bytes and fake lines inside
    file_id = upload(ann, data, frame=7000)
    out = ann.output()
    assert f"26 {file_id} {hashlib.sha256(data).hexdigest()} 2" in out
    assert received_files(bob.output())["notes.txt"] == data
    assert received_files(cat.output())["notes.txt"] == data
    plain = pam.output()
    assert "* ann is sending notes.txt" in plain and "* ann shared notes.txt" in plain
    assert "21 " not in plain and "20 " not in plain
    assert "notes.txt" not in received_files(out)  # the sender does not get its own file back
    assert os.listdir(tmp_path / "spool") == []
    clock.advance(1)
    rows = [row for row in data_rows(tmp_path / "log.csv") if row[1] == "file"]
    assert rows and rows[0][2:4] == ["ann", "public"] and hashlib.sha256(data).hexdigest() in rows[0][4]
    # Chat goes on as usual afterwards.
    ann.send("done!")
    assert "ann: done!" in bob.output()


def test_limits_refused_before_any_byte(world):
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    ann.send("/send 1000001 huge.iso")
    assert re.search(r"^25 - huge.iso is 976.6 KiB; the largest file this server accepts is 976.6 KiB", ann.output(), re.M)
    upload(ann, b"a" * 10, "one", finish=False)
    upload(ann, b"b" * 10, "two", finish=False)
    ann.send("/send 5 three")
    assert "25 - you already have 2 upload(s) in progress" in ann.output()
    assert sorted(os.listdir(tmp_path / "spool")) == ["f1.upload", "f2.upload"]


def test_sender_disconnect_removes_spool_and_tells_room(world):
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    upload(ann, b"x" * 5000, "half.bin", finish=False)
    assert os.listdir(tmp_path / "spool") == ["f1.upload"]
    ann.disconnect()
    out = bob.output()
    assert "ann's file half.bin was not sent (the sender disconnected)" in out
    assert "20 " not in out
    assert os.listdir(tmp_path / "spool") == []
    assert factory.transfers.uploading == {}


def test_wrong_hash_or_size_is_rejected(world):
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    file_id = upload(ann, b"y" * 300, finish=False)
    ann.send(f"/done {file_id} {'0' * 64}")
    assert f"25 {file_id} SHA-256 mismatch" in ann.output()
    file_id = upload(ann, b"z" * 300, finish=False)
    ann.send(f"/data {file_id} 5\r\n".encode() + b"extra")
    assert f"25 {file_id} more data than the announced 300 bytes" in ann.output()
    assert "20 " not in bob.output()
    assert os.listdir(tmp_path / "spool") == []


def test_plain_user_cannot_send(world):
    factory, clock, _ = world
    pam = in_room(factory, clock, "pam", tagged=False)
    pam.send("/send 10 x.txt")
    assert "needs the chat client" in pam.output()


def reads_slowly(client, limit=50_000):
    """Make a connection's transport act like a full socket buffer: it pauses its producer past ``limit`` bytes."""
    transport = client.transport
    write = transport.write

    def bounded(data):
        write(data)
        if transport.producer is not None and len(transport.value()) > limit:
            transport.producer.pauseProducing()

    transport.write = bounded


def drain(client) -> str:
    """Everything a slow connection (:func:`reads_slowly`) still gets, its socket taking all from now on."""
    got = ""
    while client.transport.producer is not None:
        got += client.output()
        client.transport.producer.resumeProducing()
    return got + client.output()


def test_slow_recipient_slows_nobody(world):
    """A recipient that does not read gets no more file data; the others get the file and chat flows."""
    factory, clock, tmp_path = world
    ann, bob, slow = in_room(factory, clock, "ann"), in_room(factory, clock, "bob"), in_room(factory, clock, "slow")
    slow.output()
    reads_slowly(slow)
    data = os.urandom(3 * transfer.PIECE)
    upload(ann, data)
    assert received_files(bob.output())["notes.txt"] == data
    ann.send("still talking")
    assert "ann: still talking" in bob.output()
    assert "ann: still talking" in slow.transport.value().decode()
    # At most one piece (base64) past what the transport accepted, not the whole file.
    assert len(slow.transport.value()) < transfer.PIECE * 4 // 3 + 20_000
    assert len(os.listdir(tmp_path / "spool")) == 1  # kept for the slow one
    assert received_files(drain(slow))["notes.txt"] == data
    assert os.listdir(tmp_path / "spool") == []


def test_recipient_disconnect_releases_spool(world):
    factory, clock, tmp_path = world
    ann, gone = in_room(factory, clock, "ann"), in_room(factory, clock, "gone")
    reads_slowly(gone)
    upload(ann, b"q" * 200_000)
    assert len(os.listdir(tmp_path / "spool")) == 1
    gone.disconnect()
    assert os.listdir(tmp_path / "spool") == []


def test_parse_size():
    assert [parse_size(x) for x in ("10", "1K", "2M", "1G", "3MiB")] == [10, 1024, 2 << 20, 1 << 30, 3 << 20]
    with pytest.raises(ValueError):
        parse_size("lots")


def test_pieces_encoded_once_for_all_recipients(world, monkeypatch):
    """Recipients at the same pace share each read-and-encoded piece: the file is encoded once, not per recipient."""
    factory, clock, tmp_path = world
    calls = []
    real = transfer._encode_piece
    monkeypatch.setattr(transfer, "_encode_piece", lambda *a: (calls.append(a[1]), real(*a))[1])
    ann = in_room(factory, clock, "ann")
    others = [in_room(factory, clock, name) for name in ("bob", "cy", "dee")]
    data = os.urandom(2 * transfer.PIECE + 10)
    upload(ann, data)
    for other in others:
        assert received_files(other.output())["notes.txt"] == data
    assert sorted(calls) == [0, transfer.PIECE, 2 * transfer.PIECE, len(data)]


def test_spool_write_failure_is_a_clear_error(world, monkeypatch):
    """ENOSPC while spooling an upload: the sender is told, the spool is left empty, the server goes on."""
    import errno

    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transfer._SpoolFile, "write", full)
    file_id = upload(ann, b"z" * 5000, finish=False)
    out = ann.output()
    assert f"25 {file_id} the server could not store the file" in out
    assert os.listdir(tmp_path / "spool") == []
    assert "20 " not in bob.output()
    monkeypatch.undo()
    data = os.urandom(3000)
    upload(ann, data)
    assert received_files(bob.output())["notes.txt"] == data


def test_recipient_failure_is_relayed_to_the_sender(world):
    """``/failed ID REASON`` from a recipient reaches the sender once, cleaned and capped; unknown IDs are ignored."""
    factory, clock, tmp_path = world
    ann, bob, cat = in_room(factory, clock, "ann"), in_room(factory, clock, "bob"), in_room(factory, clock, "cat")
    file_id = upload(ann, os.urandom(5000))
    ann.output(), cat.output()
    assert received_files(bob.output())
    bob.send(f"/failed {file_id} SHA-256 mismatch\x1b[2J\x07 " + "x" * 500)
    lines = [line for line in ann.output().splitlines() if line.startswith("27 ")]
    assert len(lines) == 1
    prefix = f"27 {file_id} bob could not save notes.txt: SHA-256 mismatch "
    assert lines[0].startswith(prefix) and "\x1b" not in lines[0] and "\x07" not in lines[0]
    assert len(lines[0]) == len(prefix) + 200 - len("SHA-256 mismatch ")
    bob.send(f"/failed {file_id} again")  # only once per file
    ann.send(f"/failed {file_id} not sent to ann")  # the sender was never sent it
    bob.send("/failed f999 no such file")
    assert "27 " not in ann.output()
    assert cat.output() == ""  # nothing reaches the room
    ann.disconnect()
    cat.send(f"/failed {file_id} disk full")  # the sender is gone: nobody to tell
    assert "27 " not in cat.output()


def test_spool_read_failure_tells_recipient_and_sender(world, monkeypatch):
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")

    def unreadable(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(transfer, "_encode_piece", unreadable)
    file_id = upload(ann, os.urandom(5000))
    assert f"23 {file_id} the server could not read the file" in bob.output()
    assert f"27 {file_id} bob did not get notes.txt: the server could not read the file" in ann.output()
    assert os.listdir(tmp_path / "spool") == []
    bob.send(f"/failed {file_id} whatever")  # already reported by the server
    assert "27 " not in ann.output()


def test_stalled_upload_times_out_and_frees_its_slot(world):
    """An accepted upload with no frame for upload_timeout seconds fails like a cancelled one; frames keep it alive."""
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    assert factory.transfers.settings.upload_timeout == 60
    file_id = upload(ann, b"s" * 2000, finish=False, size=5000)
    upload(ann, b"t" * 10, "other.txt", finish=False, size=20)
    ann.output(), bob.output()
    clock.advance(59)
    ann.send(f"/data {file_id} 3\r\n".encode() + b"abc")  # the second upload sends nothing more
    clock.advance(2)
    assert "25 f2 no data arrived for 60 seconds" in ann.output()
    assert "ann's file other.txt was not sent (no data arrived for 60 seconds)" in bob.output()
    clock.advance(57)
    assert ann.output() == ""
    clock.advance(1)
    assert f"25 {file_id} no data arrived for 60 seconds" in ann.output()
    assert "ann's file notes.txt was not sent (no data arrived for 60 seconds)" in bob.output()
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.uploading == {}
    ann.send(f"/data {file_id} 3\r\n".encode() + b"abc", "still chatting")  # late frames are dropped
    assert "ann: still chatting" in bob.output()
    data = os.urandom(3000)
    upload(ann, data)  # the slots are free again
    clock.advance(120)
    assert received_files(bob.output())["notes.txt"] == data
    assert "25 " not in ann.output()


def test_upload_does_not_time_out_while_the_server_is_behind(world):
    from helpers import Held

    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    file_id = upload(ann, b"a" * 10, finish=False, size=20)
    held = Held()
    factory.transfers.run = held
    ann.send(f"/data {file_id} 5\r\n".encode() + b"bbbbb")
    clock.advance(300)  # the spool write is still pending: not the sender's fault
    assert "25 " not in ann.output()
    factory.transfers.run = run_now
    held.run_all()
    clock.advance(61)
    assert f"25 {file_id} no data arrived" in ann.output()


def test_tagged_telnet_connection_receives_but_cannot_send(world):
    """
    As docs/PROTOCOL.md says: a connection that sent telnet commands before its /client (a telnet program
    negotiates on connect) is refused /send but gets files.
    """
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    tel = Client(factory, clock)
    tel.send(b"\xff\xfd\x03")  # IAC DO SUPPRESS-GO-AHEAD, as telnet programs send on connect
    tel.send("/client telnet 1.0")
    tel.register("tel")
    tel.send("join public", "/send 10 x.txt")
    assert "02 Error: sending files needs the chat client" in tel.output()
    data = os.urandom(5000)
    upload(ann, data)
    assert received_files(tel.output())["notes.txt"] == data


# -- issue 11, kind 10: what is announced as verified is what is on disk; the spool is bounded ---------------


@pytest.fixture
def transfer_log():
    """Events logged by chatd.transfer while the test runs."""
    from twisted.logger import globalLogPublisher

    events = []

    def observe(event):
        if event.get("log_namespace", "").startswith("chatd.transfer"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def no_iac(size: int) -> bytes:
    """Random bytes without 0xFF: a first write with telnet's IAC in it would make the connection telnet."""
    return os.urandom(size).replace(b"\xff", b"\xfe")


def one_write(file_id: str, data: bytes, frame: int, size: int | None = None) -> bytes:
    """``/send``, every ``/data`` frame and ``/done`` of ``data`` as one TCP write (IDs are predictable)."""
    out = [f"/send {len(data) if size is None else size} r.bin\r\n".encode()]
    for start in range(0, len(data), frame):
        piece = data[start:start + frame]
        out.append(f"/data {file_id} {len(piece)}\r\n".encode() + piece)
    out.append(f"/done {file_id} {hashlib.sha256(data).hexdigest()}\r\n".encode())
    return b"".join(out)


def disk_with_room_for(free: int):
    """An ``os.write`` for a disk with ``free`` bytes left: short writes, then ENOSPC (as Linux does)."""
    import errno

    def write(fd, data):
        nonlocal free
        if not free:
            raise OSError(errno.ENOSPC, "No space left on device")
        count = os.write(fd, bytes(data[:free]))
        free -= count
        return count

    return write


def test_full_disk_short_write_is_never_announced_as_verified(world, monkeypatch, transfer_log):
    """48 KiB free, 120 KiB sent in one TCP write with /done: a storage error, not 26; recipients get nothing."""
    from helpers import Held

    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    monkeypatch.setattr(transfer._SpoolFile, "write_fd", staticmethod(disk_with_room_for(48 * 1024)), raising=False)
    factory.transfers.run = held = Held()
    ann.send(one_write("f1", no_iac(122880), 8192))
    held.run_all()
    out = ann.output()
    assert "24 f1 122880 r.bin" in out
    assert "25 f1 the server could not store the file (its disk is full)" in out
    assert "26 " not in out and "mismatch" not in out
    room = bob.output()
    assert "20 " not in room and "22 " not in room
    assert "ann's file r.bin was not sent (the server could not store the file (its disk is full))" in room
    assert os.listdir(tmp_path / "spool") == []
    assert factory.transfers.spooled == 0 and factory.transfers.uploading == {}
    # Logged once, as an error without a traceback (not a critical "Unhandled Error").
    problems = [e for e in transfer_log if e["log_level"].name in ("error", "critical")]
    assert [e["log_level"].name for e in problems] == ["error"]
    assert "No space left on device" in str(problems[0]["error"]) and "log_failure" not in problems[0]


def test_read_only_spool_is_a_storage_error_not_a_hash_mismatch(world, monkeypatch, transfer_log):
    import errno

    from helpers import Held

    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", self.path)

    monkeypatch.setattr(transfer._SpoolFile, "open", read_only)
    factory.transfers.run = held = Held()
    ann.send(one_write("f1", no_iac(20000), 8192))
    held.run_all()
    out = ann.output()
    assert "25 f1 the server could not store the file (its spool is read-only)" in out
    assert "mismatch" not in out and "e3b0" not in out and "26 " not in out
    assert "20 " not in bob.output()
    assert [e["log_level"].name for e in transfer_log if e["log_level"].name in ("error", "critical")] == ["error"]


def test_size_on_disk_is_checked_before_26(world, monkeypatch):
    """A disk that says it took bytes it did not keep: the fstat after the fsync catches it."""
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    keep = 1000

    def lying(fd, data):
        nonlocal keep
        os.write(fd, bytes(data[:keep]))
        keep = max(0, keep - len(data))
        return len(data)

    monkeypatch.setattr(transfer._SpoolFile, "write_fd", staticmethod(lying), raising=False)
    upload(ann, os.urandom(5000), frame=700)
    out = ann.output()
    assert "25 f1 the server could not store the file (the spool file has 1000 bytes, not 5000)" in out
    assert "26 " not in out and "20 " not in bob.output()
    assert os.listdir(tmp_path / "spool") == []


def in_lab(factory, clock):
    """olga owns the room lab; ann (uploading) and bob are in it."""
    olga = Client(factory, clock, tagged=True)
    olga.register("olga")
    olga.send("create lab")
    ann, bob = Client(factory, clock, tagged=True), Client(factory, clock, tagged=True)
    for client, name in ((ann, "ann"), (bob, "bob")):
        client.register(name)
        client.send("join lab")
    for client in (olga, ann, bob):
        client.output()
    return olga, ann, bob


def log_rows(tmp_path, clock):
    clock.advance(1)
    return [row[1:] for row in data_rows(tmp_path / "log.csv")]


def test_upload_is_cancelled_when_its_room_is_deleted(world):
    """Deleted while frames still come: 25 at once; the rest is dropped, and no file is shared or logged."""
    factory, clock, tmp_path = world
    olga, ann, bob = in_lab(factory, clock)
    data = os.urandom(6000)
    file_id = upload(ann, data[:3000], finish=False, size=6000)
    bob.output()
    olga.send("delete lab")
    assert f"25 {file_id} the room was deleted" in ann.output()
    # The room is going away: its members are not told about the file (only the sender is).
    assert "was not sent" not in bob.output() and "was not sent" not in olga.output()
    ann.send(f"/data {file_id} 3000\r\n".encode() + data[3000:], f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    assert "26 " not in ann.output() and "20 " not in bob.output()
    assert os.listdir(tmp_path / "spool") == []
    rows = log_rows(tmp_path, clock)
    events = [row[0] for row in rows]
    assert "file" not in events
    assert events.index("file_aborted") > events.index("room_delete")
    assert factory.transfers.spooled == 0 and factory.transfers.uploading == {}


def test_upload_being_verified_when_its_room_is_deleted_is_not_shared(world):
    """/done arrived but the fsync is still in the pool when the room goes: 25, never 26 ... 0."""
    from helpers import Held

    factory, clock, tmp_path = world
    olga, ann, bob = in_lab(factory, clock)
    factory.transfers.run = held = Held()
    ann.send(one_write("f1", no_iac(3000), 1000))
    files = ann.protocol.files
    assert files.uploads == {} and list(files.verifying) == ["f1"]  # frames for it are no longer an upload's
    olga.send("delete lab")
    held.run_all()
    out = ann.output()
    assert "25 f1 the room was deleted" in out and "26 " not in out
    assert "file" not in [row[0] for row in log_rows(tmp_path, clock)]
    assert os.listdir(tmp_path / "spool") == []


def test_upload_is_cancelled_when_its_sender_leaves_the_room(world):
    """Offered in public, finished after the sender moved to lab: public gets no file, and neither does lab."""
    factory, clock, tmp_path = world
    olga, ann, bob = in_lab(factory, clock)
    for client in (ann, bob):
        client.send("/exit", "join public")
    cat = in_room(factory, clock, "cat")
    for client in (olga, ann, bob, cat):
        client.output()
    data = os.urandom(4000)
    file_id = upload(ann, data[:2000], finish=False, size=4000)
    bob.output()
    ann.send("/exit", "join lab")
    assert f"25 {file_id} the sender left the room" in ann.output()
    room = bob.output()
    assert "ann's file notes.txt was not sent (the sender left the room)" in room
    assert room.index("was not sent") < room.index("* ann left public")
    olga.send("join lab")
    olga.output()
    ann.send(f"/data {file_id} 2000\r\n".encode() + data[2000:], f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    assert "26 " not in ann.output()
    assert "20 " not in bob.output() + cat.output() + olga.output()
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.uploading == {}


def test_user_and_total_spool_quotas_refuse_at_send(world):
    """Announced sizes count from 24 until every recipient is done; what does not fit is refused with 25 -."""
    factory, clock, tmp_path = world
    factory.transfers.settings = TransferSettings(max_file_size=0, spool_quota=8_000, user_spool_quota=6_000)
    ann, bob, cat = in_room(factory, clock, "ann"), in_room(factory, clock, "bob"), in_room(factory, clock, "cat")
    reads_slowly(bob, limit=0)  # bob takes nothing: ann's files stay in the spool
    upload(ann, os.urandom(4000), "one.bin")
    assert "26 f1 " in ann.output()
    ann.send("/send 2001 two.bin")
    assert ("25 - two.bin (2.0 KiB) does not fit in your space on the server: your files not yet delivered "
            "take 3.9 KiB of 5.9 KiB; wait until they are delivered") in ann.output()
    upload(cat, os.urandom(3500), "three.bin", finish=False)
    cat.send("/send 1001 four.bin")
    assert ("25 - four.bin (1001 B) does not fit in the server's file spool: 7.3 KiB of 7.8 KiB is in use; "
            "try again later") in cat.output()
    assert factory.transfers.spooled == 7500
    rows = [row for row in log_rows(tmp_path, clock) if row[0] == "file_refused"]
    assert len(rows) == 2
    # bob reads after all: ann's file leaves the spool and her quota is free again.
    while bob.transport.producer is not None:
        bob.output()
        bob.transport.producer.resumeProducing()
    assert factory.transfers.spooled_by == {"cat": 3500}
    ann.send("/send 4500 two.bin")
    assert "24 f3 4500 two.bin" in ann.output()


def test_delivery_deadline_releases_a_file_nobody_takes(world):
    """A recipient that never reads gets 23 after --delivery-timeout; the file and its quota are let go."""
    factory, clock, tmp_path = world
    ann, bob, slow = in_room(factory, clock, "ann"), in_room(factory, clock, "bob"), in_room(factory, clock, "slow")
    assert factory.transfers.settings.delivery_timeout == 1800
    reads_slowly(slow)
    data = os.urandom(3 * transfer.PIECE)
    upload(ann, data, "big.bin")
    assert received_files(bob.output())["big.bin"] == data
    ann.output(), slow.output()
    queued = os.urandom(1000)
    clock.advance(100)
    upload(ann, queued, "small.bin")  # queued for slow behind big.bin
    ann.output()
    assert len(os.listdir(tmp_path / "spool")) == 2 and factory.transfers.spooled == len(data) + len(queued)
    clock.advance(1699)
    assert "23 " not in slow.output()
    clock.advance(1)
    got = slow.output()
    assert "23 f1 it was not taken within 1800 seconds" in got
    assert "27 f1 slow did not get big.bin: it was not taken within 1800 seconds" in ann.output()
    # small.bin (shared later) is sent next, as the socket drains, and still counts until then.
    assert factory.transfers.spooled == len(queued) and len(os.listdir(tmp_path / "spool")) == 1
    while slow.transport.producer is not None:
        got += slow.output()
        slow.transport.producer.resumeProducing()
    got += slow.output()
    assert received_files(got)["small.bin"] == queued
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0


def test_max_file_size_zero_turns_the_limit_off(world):
    """As docs/OPERATIONS.md says of every limit: 0 turns it off."""
    factory, clock, tmp_path = world
    factory.transfers.settings = TransferSettings(max_file_size=0, spool_quota=0, user_spool_quota=0)
    ann = in_room(factory, clock, "ann")
    ann.send("/send 5000000000 big.iso")
    assert "24 f1 5000000000 big.iso" in ann.output()


# -- issue 11, kind 7 (files): numbers are ASCII digits with a bound ----------------------------------------


def test_send_size_of_400_digits_is_refused_clearly(world):
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    ann.send(f"/send {'9' * 400} x")
    assert ann.output() == ("25 - usage: /send SIZE NAME, SIZE in bytes as ASCII digits (at most "
                            "9223372036854775807); the chat client sends this for /send PATH\r\n")
    ann.send("still here")
    assert "ann: still here" in ann.output()


def test_send_size_in_other_digits_is_not_a_number(world):
    """``/send ٥ x`` (ARABIC-INDIC DIGIT FIVE): int() would read 5; the protocol says ASCII digits."""
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    for size in ("\u0665", "\uff15", "\u00b2", "1_000", "+5", "-0", "0x10"):
        ann.send(f"/send {size} x")
        assert ann.output().startswith("25 - usage: /send SIZE NAME"), size
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.uploading == {}


def test_frame_length_superscript_two_is_a_bad_frame(world):
    """``/data f1 ²``: '²'.isdigit() is true but it is no number; the documented bad-frame answer, no ValueError."""
    factory, clock, tmp_path = world
    ann = in_room(factory, clock, "ann")
    upload(ann, b"", finish=False, size=10)
    ann.send("/data f1 \u00b2")
    assert ann.output() == "02 Error: bad upload frame (LEN must be 1 to 65536 in ASCII digits); closing.\r\n"
    assert ann.transport.disconnecting


def test_parse_count_and_human_size_are_total():
    from chatd.wire import human_size, parse_count

    assert [parse_count(t, 100) for t in ("0", "7", "100", "0100")] == [0, 7, 100, None]
    for text in ("", "101", "\u0665", "\u00b2", "1_0", "+1", "1 ", "-1", "1e2", "9" * 400):
        assert parse_count(text, 100) is None, text
    assert human_size(0) == "0 B" and human_size(1536) == "1.5 KiB" and human_size(5 * 2**30) == "5.0 GiB"
    assert human_size(10**400).endswith(" EiB")
    assert human_size(2**63 - 1) == "8.0 EiB"
    with pytest.raises(ValueError):
        parse_size("\u0665M")
    with pytest.raises(ValueError):
        parse_size("9" * 400)


def test_safe_file_name_of_a_long_name_with_a_long_extension():
    from chatd.wire import FILE_NAME_MAX, safe_file_name

    name = safe_file_name("x" * 130 + "." + "e" * 17)
    assert name == "x" * 120
    # Cutting a name must not leave a Windows device name behind.
    assert safe_file_name("CON" + " " * 130 + "x") == "_CON"
    assert safe_file_name("a" * 200 + ".txt") == "a" * 116 + ".txt"
    assert len(safe_file_name("é" * 200 + "." + "é" * 17).encode()) <= FILE_NAME_MAX


def _valid_file_name(name: str) -> None:
    from chatd.wire import _DEVICE_NAMES, _UNSAFE_CHARS, FILE_NAME_MAX

    assert name and len(name.encode()) <= FILE_NAME_MAX
    assert name[0] not in ". " and name[-1] not in ". "
    assert all(c.isprintable() and c not in _UNSAFE_CHARS for c in name)
    assert name.partition(".")[0].upper().rstrip(" ") not in _DEVICE_NAMES


_NAME_PARTS = st.sampled_from(["CON", "nul", "COM1", ".", "..", " ", "/", "\\", "x" * 40, "é" * 30, "\x00", "\u202e",
                               "e" * 17, ".txt", "😀" * 10])


@given(st.lists(st.one_of(_NAME_PARTS, st.text(max_size=40)), max_size=12).map("".join))
@settings(max_examples=300, deadline=None)
def test_safe_file_name_is_always_a_valid_name(name):
    """Whatever arrives, the result is a valid base name within the limit, and cleaning it again changes nothing."""
    from chatd.wire import safe_file_name

    cleaned = safe_file_name(name)
    _valid_file_name(cleaned)
    assert safe_file_name(cleaned) == cleaned


def test_upload_is_cancelled_when_its_sender_is_replaced_by_a_new_login(world):
    """ann logs in again elsewhere while uploading: the old session's upload ends at once, never reaches the room."""
    factory, clock, tmp_path = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    data = os.urandom(4000)
    file_id = upload(ann, data[:2000], finish=False, size=4000)
    bob.output()
    again = Client(factory, clock, tagged=True)
    again.login("ann")
    assert "ann's file notes.txt was not sent (the sender logged in elsewhere)" in bob.output()
    [aborted] = [row for row in log_rows(tmp_path, clock) if row[0] == "file_aborted"]
    assert aborted[1:3] == ["ann", "public"] and aborted[3].endswith("&reason=the%20sender%20logged%20in%20elsewhere")
    assert os.listdir(tmp_path / "spool") == []
    assert factory.transfers.spooled == 0 and factory.transfers.uploading == {}
    ann.send(f"/data {file_id} 2000\r\n".encode() + data[2000:], f"/done {file_id} {hashlib.sha256(data).hexdigest()}")
    assert "26 " not in ann.output() and "20 " not in bob.output()


# -- every /data header of a tagged connection is a frame -----------------------------------------


def test_frame_on_a_tagged_connection_without_uploads_is_read_and_dropped(world):
    """``/data zz 12`` from a client that never uploaded: its 12 bytes are dropped, never read as lines."""
    factory, clock, _ = world
    alice, bob = in_room(factory, clock, "alice"), in_room(factory, clock, "bob")
    alice.output()
    bob.output()
    alice.send(b"/data zz 12\r\nhi\r\n/exit\r\nxx/ping\r\n")  # the frame is "hi\r\n/exit\r\nx"
    said = re.compile(r"^111 \[\d\d:\d\d:\d\d\] alice: x/ping\r\n$")
    assert said.match(alice.output())  # no "unknown command /data", no "hi", no "You left"
    assert said.match(bob.output()) and alice.protocol.dialogue.room is not None


def test_frame_tail_of_a_replaced_session_is_dropped_by_the_new_one(world):
    """A new session that gets the tail of the old one's frame (and its /done) drops them: nothing reaches the room."""
    factory, clock, _ = world
    ann, bob = in_room(factory, clock, "ann"), in_room(factory, clock, "bob")
    file_id = upload(ann, b"hel", finish=False, size=5)
    again = Client(factory, clock, tagged=True)
    again.login("ann")
    again.send("public")
    bob.output()
    again.output()
    again.send(f"/data {file_id} 2\r\nlo/done {file_id} {hashlib.sha256(b'hello').hexdigest()}\r\n".encode())
    again.send("after")
    assert again.output().endswith("ann: after\r\n") and "lo/done" not in bob.output()


def test_frame_at_the_menu_of_a_tagged_connection_is_dropped(world):
    """At the menu too: ``/data zz 6`` then ``quit`` as frame bytes does not quit."""
    factory, clock, _ = world
    dave = Client(factory, clock, tagged=True)
    dave.register("dave")
    dave.output()
    dave.send(b"/data zz 6\r\nquit\r\nlist\r\n")
    out = dave.output()
    assert "Bye." not in out and "Rooms (" in out and not dave.transport.disconnecting


def test_data_on_a_plain_connection_is_an_ordinary_line(world):
    """A plain (telnet) connection sends no frames: ``/data`` there is an unknown command, what follows is lines."""
    factory, clock, _ = world
    carol, bob = in_room(factory, clock, "carol", tagged=False), in_room(factory, clock, "bob")
    bob.output()
    carol.send(b"/data zz 6\r\nsecret/ping\r\n")
    assert "Error: unknown command /data." in carol.output()
    assert "carol: secret/ping" in bob.output()


def test_frames_are_dropped_without_a_file_service(tmp_path):
    """Even on a server without files (no Transfers), a tagged /data frame's bytes are read and dropped."""
    factory, clock = make_factory(str(tmp_path))
    c = Client(factory, clock, tagged=True)
    c.register("erin")
    c.output()
    c.send(b"/data zz 5\r\nquit\r\n/ping\r\n")  # "quit\r\n" is 6 bytes: the frame takes "quit\r"
    out = c.output()
    assert "Bye." not in out and not c.transport.disconnecting


def test_done_takes_the_sha256_in_either_case(world):
    """``/done ID SHA`` in uppercase hex is accepted (the docs say either case); 26 answers in lowercase."""
    factory, clock, _ = world
    ann = in_room(factory, clock, "ann")
    data = b"hello world"
    file_id = upload(ann, data, finish=False)
    ann.send(f"/done {file_id} {hashlib.sha256(data).hexdigest().upper()}")
    assert f"26 {file_id} {hashlib.sha256(data).hexdigest()} 0" in ann.output()


def test_a_password_that_looks_like_a_frame_header_is_a_password(world):
    """At a password prompt a tagged line starting ``/data `` is the password, not a frame."""
    factory, clock, _ = world
    c = Client(factory, clock, tagged=True)
    c.send("register frank", "/data x 9", "/data x 9")
    assert "Registered and logged in as frank." in c.output()
    again = Client(factory, clock, tagged=True)
    again.send("login frank", "/data x 9")
    assert "Logged in as frank." in again.output()


def test_upload_finishing_while_its_room_is_being_deleted_is_cancelled_not_shared(world):
    """
    The race: ann's /done is verified while olga's delete of lab is being written (rooms.csv and the
    room_delete row, one store job). The room is closed from the moment olga confirms (the time of the
    room_delete row), so the file is not shared: 25, and log.csv reads room_delete, then file_aborted for
    this cancellation (was: 26 ... and a 'file' row, shared in lab, after room_delete).
    """
    from helpers import Held

    factory, clock, tmp_path = world
    olga, ann, bob = in_lab(factory, clock)
    factory.store._run = store = Held()
    olga.send("delete lab")  # held in the store
    data = os.urandom(3000)
    upload(ann, data)
    out = ann.output()
    assert "25 f1 the room is being deleted" in out and "26 " not in out
    assert "20 " not in bob.output()
    store.run_all()
    assert "Room lab deleted." in olga.output()
    factory.store.flush_events()
    store.run_all()
    events = [row[0] for row in log_rows(tmp_path, clock) if row[2] == "lab"]
    assert "file" not in events
    assert events[-4:] == ["room_delete", "file_aborted", "leave", "leave"]
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0


def test_frame_bytes_of_a_client_never_go_through_telnet(world):
    """
    0xFF bytes in a frame of a tagged connection that sent no telnet command are frame bytes: telnet did
    not shorten the frame, so the next frame's payload never reached the room (final attacker's input).
    """
    factory, clock, _ = world
    mia, bob = in_room(factory, clock, "mia"), in_room(factory, clock, "bob")
    mia.output()
    bob.output()
    mia.send(b"/data z 6\r\n" + b"\xff" * 6 + b"/data w 16\r\nSMUGGLED-PAYLOAD" + b"after\r\n")
    heard = bob.output()
    assert "SMUGGLED" not in heard and "w 16" not in heard
    assert re.match(r"^111 \[\d\d:\d\d:\d\d\] mia: after\r\n$", heard)
    assert b"\xff" not in mia.transport.value()  # no telnet answer either


def test_hello_and_frame_with_telnet_bytes_in_one_write(world):
    """A fresh connection's first write holds /client, a frame with IAC DO ECHO and NUL bytes, then ping."""
    factory, clock, _ = world
    eve = Client(factory, clock)
    eve.output()
    eve.send(b"/client x 1\r\n/data z 8\r\n\xff\xfd\x01\r\x00\xff\xffX" + b"ping\r\n")
    out = eve.transport.value()
    assert out.endswith(b"00 pong\r\n11 menu>\r\n"), out
    assert b"\xff" not in out  # no telnet answer to frame bytes
