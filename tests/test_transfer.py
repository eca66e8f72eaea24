"""Unit tests of file transfer on the server: StringTransport connections, a Clock, file work run inline."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re

import pytest

from chatd import transfer
from chatd.transfer import TransferSettings, Transfers, parse_size
from helpers import Client, make_factory, run_now


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
    rows = [row for row in csv.reader(open(tmp_path / "log.csv")) if row[1] == "file"]
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
    got = ""
    while slow.transport.producer is not None:
        got += slow.output()
        slow.transport.producer.resumeProducing()
    got += slow.output()
    assert received_files(got)["notes.txt"] == data
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
    """As docs/PROTOCOL.md says: a tagged connection that sent telnet commands is refused /send but gets files."""
    factory, clock, tmp_path = world
    ann, tel = in_room(factory, clock, "ann"), in_room(factory, clock, "tel")
    tel.send(b"\xff\xfd\x03", "/send 10 x.txt")  # IAC DO SUPPRESS-GO-AHEAD, as telnet programs send
    assert "02 Error: sending files needs the chat client" in tel.output()
    data = os.urandom(5000)
    upload(ann, data)
    assert received_files(tel.output())["notes.txt"] == data
