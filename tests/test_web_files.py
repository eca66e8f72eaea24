"""
Files from and to the browser (chatd.frontends.web_files, issue 15): uploads
over the WebSocket through the real Site and framing, downloads from
``/files/ID`` over HTTP on a StringTransport; file work run inline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from wsproto.events import BytesMessage, TextMessage

from chatd.frontends.web import FRAMING_ALLOWANCE, web_site
from chatd.frontends.web_files import BINARY_MESSAGE_MAX, content_disposition
from chatd.settings import Settings
from chatd.transfer import TransferSettings, Transfers
from helpers import Client, Held, make_factory, run_now
from test_transfer import received_files
from test_web import WebClient

KiB = 1024


class Browser(WebClient):
    """A browser's WebSocket that can send binary messages and upload a file as the page does."""

    def send_bytes(self, data: bytes) -> None:
        self.protocol.dataReceived(self.ws.send(BytesMessage(data)))

    def send_json(self, value: dict[str, Any]) -> list[dict[str, Any]]:
        self.send_raw(json.dumps(value))
        return self.messages()

    def offer(self, data: bytes, name: str = "notes.txt", size: int | None = None) -> dict[str, Any]:
        answers = self.command("send", str(len(data) if size is None else size), name)
        return [m for m in answers if m["type"] == "upload"][-1]

    def upload(self, data: bytes, name: str = "notes.txt", chunk: int = 64 * KiB, finish: bool = True,
               digest: str | None = None) -> str:
        ready = self.offer(data, name)
        assert ready["state"] == "ready", ready
        for start in range(0, len(data), chunk):
            self.send_bytes(ready["id"].encode() + b"\n" + data[start:start + chunk])
        if finish:
            self.send_raw(json.dumps({"type": "done", "id": ready["id"],
                                      "sha256": digest or hashlib.sha256(data).hexdigest()}))
        return ready["id"]


def uploads(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "upload"]


def room_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for m in messages if m["type"] == "events" for e in m["events"]]


@pytest.fixture
def world(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_line=2000))
    transfers = Transfers(factory, str(tmp_path / "spool"), run_now,
                          TransferSettings(max_file_size=1_000_000, user_spool_quota=1_500_000))
    factory.transfers = transfers
    transfers.start()
    return factory, clock, web_site(factory), tmp_path


def browser(site: Any, name: str, port: int = 40000) -> Browser:
    b = Browser(site, port=port)
    b.command("register", name, "secret1")
    b.command("join", "public")
    b.messages()
    return b


def line_member(factory, clock, name: str) -> Client:
    c = Client(factory, clock, tagged=True)
    c.register(name)
    c.send("join public")
    c.output()
    return c


def http_get(site: Any, path: str, ticket: str | None = None, method: str = "GET",
             authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to the site on a StringTransport: (status, headers by lower-case name, body)."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 41000))
    protocol = site.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    auth = authorization if authorization is not None else (f"Bearer {ticket}" if ticket else None)
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n" + (f"Authorization: {auth}\r\n" if auth else "")
    protocol.dataReceived((head + "\r\n").encode())
    raw = transport.value()
    header_block, _, body = raw.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_a_browser_upload_reaches_line_and_browser_members_and_downloads_once(world):
    factory, clock, site, tmp_path = world
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    bob = line_member(factory, clock, "bob")
    data = os.urandom(150_000) + b"\n\x00\xff"
    file_id = ann.upload(data, "notes.txt")
    clock.advance(0)
    answers = ann.messages()
    digest = hashlib.sha256(data).hexdigest()
    assert uploads(answers) == [{"type": "upload", "state": "done", "id": file_id, "sha256": digest, "recipients": 2}]
    assert received_files(bob.output())["notes.txt"] == data
    seen = cat.messages()
    assert any(text.startswith("notes.txt (146.5 KiB, sha256 ") for text in room_texts(seen))
    offered = [m for m in seen if m["type"] == "file"]
    assert len(offered) == 1
    offer = offered[0]
    assert {k: v for k, v in offer.items() if k != "ticket"} == {
        "type": "file", "id": file_id, "room": "public", "name": "notes.txt", "size": len(data), "sha256": digest,
        "sender": "ann"}
    assert len(offer["ticket"]) >= 43 and offer["ticket"] not in str(bob.output())
    assert os.listdir(tmp_path / "spool") == [f"{file_id}.upload"]  # kept for cat
    status, headers, body = http_get(site, f"/files/{file_id}", offer["ticket"])
    assert status == 200 and body == data
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == str(len(data))
    assert headers["content-disposition"] == "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt"
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    # Taken: the ticket fetches nothing more, the spool file and its quota are gone.
    assert http_get(site, f"/files/{file_id}", offer["ticket"])[0] == 403
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0
    ann.command("say", "after")
    clock.advance(0)
    assert "after" in room_texts(cat.messages())


def test_a_line_client_upload_reaches_a_browser_member(world):
    factory, clock, site, tmp_path = world
    cat = browser(site, "cat")
    bob = line_member(factory, clock, "bob")
    from test_transfer import upload
    data = b"hello from the terminal\n" * 500
    file_id = upload(bob, data, "t.txt", frame=5000)
    assert f"26 {file_id} {hashlib.sha256(data).hexdigest()} 1" in bob.output()
    offer = [m for m in cat.messages() if m["type"] == "file"][0]
    status, _, body = http_get(site, f"/files/{file_id}", offer["ticket"])
    assert status == 200 and body == data


def test_offers_refused_too_big_over_quota_or_malformed(world):
    factory, clock, site, tmp_path = world
    ann = browser(site, "ann")
    refused = ann.offer(b"", size=1_000_001)
    assert refused == {"type": "upload", "state": "failed", "id": None,
                       "text": "notes.txt is 976.6 KiB; the largest file this server accepts is 976.6 KiB"}
    first = ann.offer(b"", "a.bin", size=900_000)
    assert first["state"] == "ready"
    over = ann.offer(b"", "b.bin", size=900_000)
    assert over["state"] == "failed" and over["id"] is None and "does not fit in your space" in over["text"]
    for args in (["x", "n.txt"], ["12"], []):
        answer = uploads(ann.command("send", *args))
        assert answer[0]["state"] == "failed" and answer[0]["text"].startswith("usage: /send SIZE NAME"), args
    assert os.listdir(tmp_path / "spool") == [f"{first['id']}.upload"]


def test_bad_frames_and_unknown_ids_get_errors(world):
    factory, clock, site, tmp_path = world
    ann = browser(site, "ann")
    ready = ann.offer(b"12345")
    for bad in (b"no newline here", b"\n12345", ready["id"].encode() + b"\n", b"f\xc3\xa91\n12345",
                b"f 1\nabc", b"x" * 40 + b"\n12345"):
        ann.send_bytes(bad)
        assert ann.messages() == [{"type": "error", "text": (
            "a binary message is an upload frame: the upload's ID, a newline, then 1 to 65536 bytes of the file.")}], bad
    ann.send_bytes(b"f99\nabc")
    assert ann.messages() == [{"type": "error", "text": "no upload f99 is in progress."}]
    assert ann.send_json({"type": "done", "id": "f99", "sha256": "0" * 64}) == [
        {"type": "error", "text": "no upload f99 is in progress."}]
    assert ann.send_json({"type": "cancel", "id": 5})[0]["type"] == "error"
    # The upload itself is untouched by all that.
    ann.send_bytes(ready["id"].encode() + b"\n12345")
    done = ann.send_json({"type": "done", "id": ready["id"], "sha256": hashlib.sha256(b"12345").hexdigest()})
    assert uploads(done)[0]["state"] == "done"


@pytest.mark.parametrize("how, reason", [
    ("short", "only 3 of 5 bytes arrived"),
    ("long", "more data than the announced 5 bytes"),
    ("hash", "SHA-256 mismatch: the server got "),
    ("no hash", "no valid SHA-256 was given"),
])
def test_size_and_hash_mismatches_fail_the_upload(world, how, reason):
    factory, clock, site, tmp_path = world
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    ready = ann.offer(b"12345")
    ann.send_bytes(ready["id"].encode() + (b"\n123" if how == "short" else b"\n123456" if how == "long" else b"\n12345"))
    digest = {"hash": "ab" * 32, "no hash": "nope"}.get(how, hashlib.sha256(b"12345").hexdigest())
    answers = ann.send_json({"type": "done", "id": ready["id"], "sha256": digest})
    clock.advance(0)
    answers += ann.messages()
    failed = uploads(answers)
    assert len(failed) == 1 and failed[0]["state"] == "failed" and failed[0]["id"] == ready["id"]
    assert failed[0]["text"].startswith(reason)
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0
    seen = cat.messages()
    assert not [m for m in seen if m["type"] == "file"]
    assert any("notes.txt was not sent" in text for text in room_texts(seen))


def test_cancel_and_the_sender_leaving_end_the_upload(world):
    factory, clock, site, tmp_path = world
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    ready = ann.offer(b"12345")
    ann.send_bytes(ready["id"].encode() + b"\n12")
    assert ann.send_json({"type": "cancel", "id": ready["id"]}) == [
        {"type": "upload", "state": "cancelled", "id": ready["id"]}]
    ann.send_bytes(ready["id"].encode() + b"\n345")  # in flight: dropped quietly
    assert ann.messages() == []
    assert os.listdir(tmp_path / "spool") == []
    clock.advance(0)
    assert any("was not sent (the sender cancelled it)" in text for text in room_texts(cat.messages()))
    second = ann.offer(b"12345")
    assert uploads(ann.command("exit")) == [
        {"type": "upload", "state": "failed", "id": second["id"], "text": "the sender left the room"}]
    clock.advance(0)
    assert any("was not sent (the sender left the room)" in text for text in room_texts(cat.messages()))
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.uploading == {}
    third = ann.command("join", "public") and ann.offer(b"12345")
    ann.protocol.connectionLost(Failure(ConnectionError("gone")))
    clock.advance(0)
    assert any("was not sent (the sender disconnected)" in text for text in room_texts(cat.messages()))
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0
    assert second["state"] == third["state"] == "ready"


def test_text_messages_stay_bounded_while_upload_frames_pass(world):
    factory, clock, site, tmp_path = world
    ann = browser(site, "ann")
    ready = ann.offer(b"x" * 65536)
    ann.send_bytes(ready["id"].encode() + b"\n" + b"x" * 65536)  # a whole frame: 65,540 bytes
    assert ann.messages() == [] and not ann.transport.disconnecting
    text_limit = factory.settings.max_line + FRAMING_ALLOWANCE
    ann.send_raw('{"type": "command", "name": "ping", "args": []}' + " " * (text_limit - 60))
    assert ann.messages() == [{"type": "reply", "text": "pong"}]
    ann.send_raw('{"type": "command", "name": "ping", "args": []}' + " " * text_limit)
    assert ann.transport.disconnecting  # aborted once whole, though SizeLimited let its bytes in
    # A binary message past the frame size is cut off as it arrives.
    bob = browser(site, "bob", port=40001)
    for _ in range((BINARY_MESSAGE_MAX + text_limit) // 10_000):
        bob.protocol.dataReceived(bob.ws.send(BytesMessage(b"y" * 10_000, message_finished=False)))
    assert not bob.transport.disconnecting
    bob.protocol.dataReceived(bob.ws.send(BytesMessage(b"y" * 10_000, message_finished=False)))
    assert bob.transport.disconnecting


def test_a_text_message_is_bounded_without_file_transfer(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=0, max_line=2000))
    ann = Browser(web_site(factory))
    ann.send_bytes(b"f1\nabc")
    assert ann.messages() == [{"type": "error", "text": "binary messages are not accepted; send JSON text."}]
    # Messages that arrive in one read are counted each on its own (a page may send several at once).
    ping = json.dumps({"type": "command", "name": "ping", "args": []}) + " " * 1500
    ann.protocol.dataReceived(b"".join(ann.ws.send(TextMessage(ping)) for _ in range(6)))
    assert ann.messages() == [{"type": "reply", "text": "pong"}] * 6 and not ann.transport.disconnecting
    for _ in range(3):
        ann.protocol.dataReceived(ann.ws.send(TextMessage("x" * 1000, message_finished=False)))
    assert not ann.transport.disconnecting
    ann.protocol.dataReceived(ann.ws.send(TextMessage("x" * 1000, message_finished=False)))
    assert ann.transport.disconnecting


def test_spool_backlog_holds_the_session_and_frames_stay_in_order(world):
    factory, clock, site, tmp_path = world
    held = Held()
    factory.transfers.run = held
    ann = browser(site, "ann")
    data = os.urandom(12 * 1000)
    ready = ann.offer(data)
    for start in range(0, len(data), 1000):
        ann.send_bytes(ready["id"].encode() + b"\n" + data[start:start + 1000])
    assert ann.transport.producerState == "paused"
    ann.send_json({"type": "done", "id": ready["id"], "sha256": hashlib.sha256(data).hexdigest()})
    held.run_all()
    clock.advance(0)
    assert ann.transport.producerState == "producing"
    assert uploads(ann.messages())[-1]["state"] == "done"


def shared_with_cat(site: Any) -> tuple[Browser, Browser, str, str]:
    """ann shares a.txt with cat, both in browsers: (ann, cat, the file's ID, cat's ticket); messages read."""
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    file_id = ann.upload(b"abc", "a.txt")
    ticket = [m for m in cat.messages() if m["type"] == "file"][0]["ticket"]
    ann.messages()
    return ann, cat, file_id, ticket


def test_a_browser_that_never_fetches_lets_go_at_the_delivery_deadline(world):
    factory, clock, site, tmp_path = world
    ann, cat, file_id, ticket = shared_with_cat(site)
    clock.advance(factory.transfers.settings.delivery_timeout)
    assert [m for m in cat.messages() if m["type"] == "file_gone"] == [
        {"type": "file_gone", "id": file_id, "text": "it was not taken within 1800 seconds"}]
    assert uploads(ann.messages()) == [{"type": "upload", "state": "undelivered", "id": file_id,
                                        "text": "cat did not get a.txt: it was not taken within 1800 seconds"}]
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0
    assert http_get(site, f"/files/{file_id}", ticket)[0] == 403


def test_the_file_resource_refuses_all_but_the_right_ticket_for_the_right_file(world):
    factory, clock, site, tmp_path = world
    ann, cat, dan = browser(site, "ann"), browser(site, "cat", port=40001), browser(site, "dan", port=40002)
    first = ann.upload(b"first", "1.txt")
    second = ann.upload(b"second", "2.txt")
    cats = {m["id"]: m["ticket"] for m in cat.messages() if m["type"] == "file"}
    dans = {m["id"]: m["ticket"] for m in dan.messages() if m["type"] == "file"}
    assert len(set(cats.values()) | set(dans.values())) == 4  # one per session and file
    assert http_get(site, f"/files/{first}")[0] == 401
    assert http_get(site, f"/files/{first}")[1]["www-authenticate"].startswith("Bearer")
    assert http_get(site, f"/files/{first}", authorization=f"Basic {cats[first]}")[0] == 401
    assert http_get(site, f"/files/{first}", "not-a-ticket")[0] == 403
    # Two Authorization headers (tester15r: the last was used): 400, and neither ticket is spent.
    two = f"Bearer not-a-ticket\r\nAuthorization: Bearer {cats[first]}"
    assert http_get(site, f"/files/{first}", authorization=two)[0] == 400
    assert http_get(site, f"/files/{first}", cats[second])[0] == 403  # another file's
    assert http_get(site, f"/files/{first}/x", cats[first])[0] == 404
    assert http_get(site, "/files/", cats[first])[0] == 404
    assert http_get(site, f"/files/{first}", cats[first], method="HEAD")[0] == 405
    assert http_get(site, f"/files/{first}", cats[first], method="POST")[0] == 405
    # dan leaves the room: his tickets fetch nothing; cat's still work; once taken, his are gone.
    dan.command("exit")
    assert http_get(site, f"/files/{first}", dans[first])[0] == 403
    assert http_get(site, f"/files/{first}", cats[first])[:3:2] == (200, b"first")
    # A session that ends (logged out or disconnected) holds nothing more.
    cat.command("logout")
    assert http_get(site, f"/files/{second}", cats[second])[0] == 403
    assert os.listdir(tmp_path / "spool") == [] and factory.transfers.spooled == 0


def test_a_download_cut_off_may_be_tried_again_and_only_one_at_a_time(world):
    factory, clock, site, tmp_path = world
    held = Held()
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    file_id = ann.upload(b"z" * 300_000, "z.bin")
    ticket = [m for m in cat.messages() if m["type"] == "file"][0]["ticket"]
    factory.transfers.run = held
    transport = StringTransport()
    protocol = site.buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.dataReceived(f"GET /files/{file_id} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ticket}\r\n\r\n".encode())
    for _ in range(2):  # open, the first piece
        function, args, d = held.calls.pop(0)
        d.callback(function(*args))
    assert b"200 OK" in transport.value() and held.calls  # the next piece is being read
    factory.transfers.run = run_now
    assert http_get(site, f"/files/{file_id}", ticket)[0] == 409
    protocol.connectionLost(Failure(ConnectionError("the browser went away")))
    held.run_all()
    status, _, body = http_get(site, f"/files/{file_id}", ticket)
    assert status == 200 and body == b"z" * 300_000
    assert os.listdir(tmp_path / "spool") == []


@pytest.mark.parametrize("name, ascii_name, encoded", [
    ("../../etc/passwd", "passwd", "passwd"),
    ("a\"b\r\nX: y.txt", "abX y.txt", "abX%20y.txt"),
    ("\u202eevil\u202dgpj.exe", "evilgpj.exe", "evilgpj.exe"),
    ("\u0645\u0644\u0641 100%.txt", "___ 100_.txt", "%D9%85%D9%84%D9%81%20100%25.txt"),
    ("CON", "_CON", "_CON"),
])
def test_content_disposition_of_hostile_names(name, ascii_name, encoded):
    value = content_disposition(name).decode("ascii")
    assert value == f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"
    assert "\r" not in value and "\n" not in value


def test_a_hostile_name_arrives_safe_in_the_file_message_and_the_header(world):
    factory, clock, site, tmp_path = world
    ann, cat = browser(site, "ann"), browser(site, "cat", port=40001)
    file_id = ann.upload(b"data", "../../etc/\u202epasswd\"\r\n")
    offer = [m for m in cat.messages() if m["type"] == "file"][0]
    assert offer["name"] == "passwd"
    status, headers, _ = http_get(site, f"/files/{file_id}", offer["ticket"])
    assert status == 200
    assert headers["content-disposition"] == "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"
    assert re.fullmatch(r"[ -~]+", headers["content-disposition"])


def test_a_spool_file_that_cannot_be_read_is_not_delivered_and_both_sides_are_told(world):
    factory, clock, site, tmp_path = world
    ann, cat, file_id, ticket = shared_with_cat(site)
    os.unlink(tmp_path / "spool" / f"{file_id}.upload")
    assert http_get(site, f"/files/{file_id}", ticket)[0] == 500
    assert [m for m in cat.messages() if m["type"] == "file_gone"] == [
        {"type": "file_gone", "id": file_id, "text": "the server could not read the file"}]
    assert uploads(ann.messages())[0]["text"] == "cat did not get a.txt: the server could not read the file"
    assert factory.transfers.spooled == 0 and http_get(site, f"/files/{file_id}", ticket)[0] == 403


def test_files_between_a_browser_and_a_line_client_through_a_real_daemon(tmp_path):
    """Real sockets, thread pool and HTTP: a browser's upload reaches a tagged line client and a second
    browser, which fetches it by ticket; the bytes are equal everywhere."""
    import base64
    import http.client

    from daemon import Daemon, free_port, in_room
    from test_web import _ws_connect, _ws_until

    web_port = free_port()
    daemon = Daemon(str(tmp_path / "data"), web_port=web_port).start()
    origin = f"http://127.0.0.1:{web_port}"
    try:
        def session(name: str) -> tuple[Any, Any, Any]:
            sock, ws = _ws_connect(web_port, origin)
            _ws_until(sock, ws, lambda e: not isinstance(e, dict))  # accepted

            def send(value: dict[str, Any]) -> None:
                sock.sendall(ws.send(TextMessage(json.dumps(value))))

            send({"type": "command", "name": "register", "args": [name, "secret1"]})
            send({"type": "command", "name": "public", "args": []})
            _ws_until(sock, ws, lambda e: isinstance(e, dict) and e.get("type") == "entered")
            return sock, ws, send

        ann_sock, ann_ws, ann_send = session("ann")
        cat_sock, cat_ws, _ = session("cat")
        bob = in_room(daemon.port, "bob")
        bob.send("/client test 1.0")
        bob.expect("00 Tagged mode on")
        data = os.urandom(700_000)
        ann_send({"type": "command", "name": "send", "args": [str(len(data)), "big.bin"]})
        ready = _ws_until(ann_sock, ann_ws, lambda e: isinstance(e, dict) and e.get("type") == "upload")[-1]
        assert ready["state"] == "ready", ready
        for start in range(0, len(data), 65536):
            ann_sock.sendall(ann_ws.send(BytesMessage(ready["id"].encode() + b"\n" + data[start:start + 65536])))
        ann_send({"type": "done", "id": ready["id"], "sha256": hashlib.sha256(data).hexdigest()})
        done = _ws_until(ann_sock, ann_ws, lambda e: isinstance(e, dict) and e.get("type") == "upload")[-1]
        assert done == {"type": "upload", "state": "done", "id": ready["id"],
                        "sha256": hashlib.sha256(data).hexdigest(), "recipients": 2}
        text = bob.expect(rf"22 {ready['id']}\r\n", timeout=20)
        got = b"".join(base64.b64decode(line.split(" ", 2)[2]) for line in text.splitlines()
                       if line.startswith(f"21 {ready['id']} "))
        assert got == data
        offer = _ws_until(cat_sock, cat_ws, lambda e: isinstance(e, dict) and e.get("type") == "file")[-1]
        page = http.client.HTTPConnection("127.0.0.1", web_port, timeout=20)
        page.request("GET", f"/files/{offer['id']}", headers={"Authorization": f"Bearer {offer['ticket']}"})
        response = page.getresponse()
        body = response.read()
        assert response.status == 200 and hashlib.sha256(body).hexdigest() == offer["sha256"] == done["sha256"]
        assert response.getheader("content-disposition") == (
            "attachment; filename=\"big.bin\"; filename*=UTF-8''big.bin")
        page.request("GET", f"/files/{offer['id']}", headers={"Authorization": f"Bearer {offer['ticket']}"})
        again = page.getresponse()
        again.read()
        assert again.status == 403
        page.close()
        for sock in (ann_sock, cat_sock):
            sock.close()
        bob.close()
        spool = tmp_path / "data" / "spool"
        deadline = time.monotonic() + 10
        while os.listdir(spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.listdir(spool) == []
    finally:
        daemon.stop()
    assert daemon.unhandled_errors() == [], daemon.log()


def test_upload_frames_of_a_fair_size_are_free_of_the_flood_allowance_small_ones_are_not(tmp_path):
    factory, clock = make_factory(str(tmp_path), Settings(flood_rate=1, flood_burst=3, max_line=2000))
    factory.transfers = Transfers(factory, str(tmp_path / "spool"), run_now, TransferSettings())
    factory.transfers.start()
    site = web_site(factory)
    ann = Browser(site)
    ann.command("register", "ann", "secret1")
    ann.command("public")
    clock.advance(10)  # the allowance refilled
    data = os.urandom(20 * 1000 + 100)
    ready = ann.offer(data)
    for start in range(0, len(data), 1000):  # 20 frames of 1000 bytes and a last one of 100: all free
        ann.send_bytes(ready["id"].encode() + b"\n" + data[start:start + 1000])
    assert ann.transport.producerState == "producing" and ann.messages() == []
    second = ann.offer(b"x" * 1000)
    for _ in range(4):  # frames of 10 bytes, not the last: each costs a token like a message
        ann.send_bytes(second["id"].encode() + b"\n" + b"x" * 10)
    assert ann.transport.producerState == "paused"
    assert {"type": "error", "text": "you are sending too fast; your messages are being delayed."} in ann.messages()
