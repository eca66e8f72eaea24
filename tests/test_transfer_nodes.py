"""
Files across nodes (issue 17): a file verified on node A is copied into the
shared store before it is announced, and node B's members get it from
there, chunk by chunk (chatd.transfer ``StoredFile``). Two factories on one
MemoryStore, what A shares handed to B's Nodes (as tests/test_nodes.py);
the PostgreSQL side of the store against a real cluster (tests/pg.py).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

import pytest

from chatd.nodes import Nodes
from chatd.store import FILE_CHUNK_SIZE, FileRecord, StoreError
from chatd.stores.memory import MemoryStore
from chatd.transfer import EXPIRE_INTERVAL, KEEP_MARGIN, TransferSettings, Transfers
from helpers import Client, make_factory, run_now
from test_nodes import SharingBus
from test_transfer import drain, reads_slowly, received_files, upload

#: A file of a few chunks and a part of one, so reading it chunk by chunk is real.
SIZE = 3 * FILE_CHUNK_SIZE + 12_345


def _node(tmp_path: Any, name: str, store: MemoryStore) -> tuple[Any, Any, SharingBus]:
    factory, clock = make_factory(str(tmp_path / name), store=store)
    bus = factory.bus = SharingBus()
    bus.subscribe(factory._deliver)
    transfers = Transfers(factory, str(tmp_path / name / "spool"), run_now, TransferSettings(delivery_timeout=600))
    factory.transfers = transfers
    transfers.across_nodes()
    transfers.start()
    return factory, clock, bus


def _member(factory: Any, clock: Any, name: str, tagged: bool = True) -> Client:
    client = Client(factory, clock, tagged=tagged)
    client.register(name)
    client.send("join public")
    client.output()
    return client


def _apply_files(bus: SharingBus, nodes: Nodes) -> int:
    """What RedisBus._change does with the ``file`` changes another node shared; returns how many."""
    files = [change for change in bus.shared if change[0] == "file"]
    for change in files:
        nodes.file_shared(*change[1:])
    return len(files)


@pytest.fixture
def two_nodes(tmp_path):
    store = MemoryStore()
    a, clock_a, bus_a = _node(tmp_path, "a", store)
    b, clock_b, _ = _node(tmp_path, "b", store)
    return store, (a, clock_a, bus_a), (b, clock_b)


def test_a_file_sent_on_one_node_reaches_the_other_nodes_members_from_the_store(two_nodes):
    store, (a, clock_a, bus_a), (b, clock_b) = two_nodes
    ann, cat = _member(a, clock_a, "ann"), _member(a, clock_a, "cat")
    bob, pam = _member(b, clock_b, "bob"), _member(b, clock_b, "pam", tagged=False)
    bus_a.there["public"] = ["bob", "pam", "cat"]  # (B's heartbeat; cat also there: counted here, once)
    data = os.urandom(SIZE)
    file_id = upload(ann, data, frame=60_000)
    digest = hashlib.sha256(data).hexdigest()
    assert re.fullmatch(r"f1-[0-9a-f]{8}", file_id)  # unique across nodes and restarts
    # This node's recipients (cat), then the room's members on other nodes (bob, pam: B offers it to bob).
    assert f"26 {file_id} {digest} 1 2\r\n" in ann.output()
    assert received_files(cat.output())["notes.txt"] == data  # this node: from the spool, as in one process
    record, chunks = store.files[file_id]
    assert (record.size, record.sha256, record.sender, record.name) == (SIZE, digest, "ann", "notes.txt")
    assert [len(chunk) for chunk in chunks] == [FILE_CHUNK_SIZE] * 3 + [12_345]
    assert record.expires == clock_a.seconds() + 600 + KEEP_MARGIN
    assert _apply_files(bus_a, Nodes(b)) == 1
    assert bus_a.shared[-1] == ["file", "public", file_id, "notes.txt", SIZE, digest, "ann"]
    got = bob.output()
    assert received_files(got)["notes.txt"] == data
    assert f"20 {file_id} {SIZE} {digest} ann notes.txt" in got
    assert "20 " not in pam.output()  # a plain member takes no files
    assert os.listdir(a.transfers.spool_dir) == [] and not b.transfers.spooled


def test_a_slow_recipient_is_read_for_one_chunk_ahead_of_its_socket(two_nodes):
    store, (a, clock_a, bus_a), (b, clock_b) = two_nodes
    ann, slow = _member(a, clock_a, "ann"), _member(b, clock_b, "slow")
    reads: list[int] = []
    read = store.read_file_chunk
    store.read_file_chunk = lambda file_id, seq: (reads.append(seq), read(file_id, seq))[1]  # type: ignore
    reads_slowly(slow)
    data = os.urandom(SIZE)
    upload(ann, data, frame=60_000)
    _apply_files(bus_a, Nodes(b))
    assert reads == [0, 1]  # the first piece sent, the next read ahead; nothing more while the socket is full
    assert len(slow.transport.value()) < FILE_CHUNK_SIZE * 4 // 3 + 20_000
    assert received_files(drain(slow))["notes.txt"] == data
    assert reads == [0, 1, 2, 3]  # each chunk read once


def test_a_file_the_store_cannot_take_is_not_shared(two_nodes):
    store, (a, clock_a, bus_a), (b, clock_b) = two_nodes
    ann, bob = _member(a, clock_a, "ann"), _member(a, clock_a, "bob")
    store.broken = "PostgreSQL is unavailable: connection refused"
    data = os.urandom(1000)
    file_id = upload(ann, data)
    out = ann.output()
    assert f"25 {file_id} the server could not store the file (PostgreSQL is unavailable: connection refused)" in out
    assert "26 " not in out and "20 " not in bob.output()
    assert not [change for change in bus_a.shared if change[0] == "file"]
    assert os.listdir(a.transfers.spool_dir) == [] and not a.transfers.spooled


def test_files_expire_from_the_store_and_a_late_recipient_is_told(two_nodes):
    store, (a, clock_a, bus_a), (b, clock_b) = two_nodes
    ann = _member(a, clock_a, "ann")
    data = os.urandom(1000)
    file_id = upload(ann, data)
    assert file_id in store.files
    clock_a.advance(600 + KEEP_MARGIN - 1)
    assert file_id in store.files  # kept to the delivery deadline and a margin
    clock_a.advance(EXPIRE_INTERVAL)
    assert file_id not in store.files
    # A node that offers it after that: the recipient gets 23, nothing half-written.
    bob = _member(b, clock_b, "bob")
    _apply_files(bus_a, Nodes(b))
    got = bob.output()
    assert f"20 {file_id} 1000 " in got and f"23 {file_id} the server could not read the file" in got
    assert f"22 {file_id}" not in got


def test_one_process_on_csv_keeps_its_ids_and_its_spool_path(tmp_path):
    factory, clock = make_factory(str(tmp_path))
    transfers = Transfers(factory, str(tmp_path / "spool"), run_now)
    factory.transfers = transfers
    transfers.start()
    assert factory.store.shares_files is False
    ann, bob = _member(factory, clock, "ann"), _member(factory, clock, "bob")
    data = os.urandom(5000)
    assert upload(ann, data) == "f1"
    assert received_files(bob.output())["notes.txt"] == data


# -- the PostgreSQL side -------------------------------------------------------------------------------


def _record(file_id: str, size: int, expires: float = 2000.0) -> FileRecord:
    return FileRecord(file_id, "ROOMID", "a.bin", size, "0" * 64, "ann", 1000.0, expires)


def _fired(d: Any) -> Any:
    from chatd.stores.jobs import fired

    return fired(d)


def test_postgresql_keeps_a_file_in_chunks_reads_them_and_expires_it(pg_dsn, tmp_path):
    pytest.importorskip("psycopg")
    from twisted.internet.task import Clock

    from chatd.stores.postgres import PostgresStore

    store = PostgresStore(pg_dsn, Clock(), lambda: "2026-11-30T01:00:00Z")
    _fired(store.load())
    data = os.urandom(SIZE)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    _fired(store.store_file(_record("f1-aa", SIZE), str(path)))
    (tmp_path / "g.bin").write_bytes(b"0123456789")
    _fired(store.store_file(_record("f2-aa", 10, expires=5000.0), str(tmp_path / "g.bin")))
    chunks = [_fired(store.read_file_chunk("f1-aa", seq)) for seq in range(4)]
    assert b"".join(chunks) == data and [len(c) for c in chunks] == [FILE_CHUNK_SIZE] * 3 + [12_345]
    with pytest.raises(StoreError, match="no chunk 4"):
        _fired(store.read_file_chunk("f1-aa", 4))
    # A file that is not the size its record says: nothing of it is kept.
    with pytest.raises(StoreError, match="has 10 bytes, not 11"):
        _fired(store.store_file(_record("f3-aa", 11), str(tmp_path / "g.bin")))
    with pytest.raises(StoreError):
        _fired(store.read_file_chunk("f3-aa", 0))
    # Expiry deletes the files kept until before now, with their chunks; a second node's run finds nothing.
    other = PostgresStore(pg_dsn, Clock(), lambda: "2026-11-30T01:00:00Z")
    assert _fired(store.expire_files(3000.0)) == 1
    assert _fired(other.expire_files(3000.0)) == 0
    import psycopg

    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT file_id, count(*) FROM file_chunks GROUP BY file_id").fetchall() == \
            [("f2-aa", 1)]
    assert _fired(store.read_file_chunk("f2-aa", 0)) == b"0123456789"


def test_a_version_1_database_gets_the_file_tables(pg_dsn):
    pytest.importorskip("psycopg")
    import psycopg

    from chatd.stores.postgres import MIGRATIONS, SCHEMA_VERSION, Direct, ensure_schema

    with psycopg.connect(pg_dsn, autocommit=True) as connection:
        for statement in MIGRATIONS[1]:
            connection.execute(statement)
        connection.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (1)")
    assert Direct(pg_dsn).call(ensure_schema) == [f"PostgreSQL schema migrated from version 1 to {SCHEMA_VERSION}"]
    with psycopg.connect(pg_dsn) as connection:
        assert connection.execute("SELECT count(*) FROM file_chunks").fetchone() == (0,)
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_a_recipient_on_another_node_that_does_not_get_the_file_is_reported_to_its_sender(tmp_path):
    store = MemoryStore()
    a, clock_a, bus_a = _node(tmp_path, "a", store)
    b, clock_b, bus_b = _node(tmp_path, "b", store)
    ann = _member(a, clock_a, "ann")
    bob, late = _member(b, clock_b, "bob"), _member(b, clock_b, "late")
    reads_slowly(late, limit=0)  # takes nothing: the deadline passes
    data = os.urandom(1000)
    file_id = upload(ann, data)
    ann.output()
    _apply_files(bus_a, Nodes(b))
    assert received_files(bob.output())["notes.txt"] == data
    bob.send(f"/failed {file_id} disk full")
    clock_b.advance(600)
    assert f"23 {file_id} it was not taken within 600 seconds" in late.transport.value().decode()
    reports = [change for change in bus_b.shared if change[0] == "file_undelivered"]
    assert reports == [["file_undelivered", file_id, "bob could not save notes.txt: disk full"],
                       ["file_undelivered", file_id, "late did not get notes.txt: it was not taken within 600 seconds"]]
    nodes_a = Nodes(a)
    for _, file_id_, text in reports:
        nodes_a.file_undelivered(file_id_, text)
    nodes_a.file_undelivered("f99-00000000", "nobody did not get it")  # not a file of this node: nothing
    out = ann.output()
    assert f"27 {file_id} bob could not save notes.txt: disk full" in out
    assert f"27 {file_id} late did not get notes.txt: it was not taken within 600 seconds" in out
    assert "f99" not in out
