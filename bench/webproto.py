"""peerbench's adapter for chatd's browser front-end: JSON over a WebSocket (docs/PROTOCOL.md, "WebSocket
(browser) protocol"), for the `web-fanout` and `web-idle` scenarios of `python -m bench`.

RFC 6455 is spoken with wsproto (which twisted[websocket] brings): its handshake object writes the upgrade
request, and its frame protocol masks every client frame and parses the server's frames on the sampled
receivers. A connection does what a browser page does: the upgrade (with the page's own Origin), then
`{"type": "command", "name": "login", "args": [NAME, PASSWORD]}`, `join`, and `say` for every chat line.

The server's frames are neither masked (RFC 6455 section 5.1) nor compressed (the handshake offers no
extension), so the payload tag of every chat line appears verbatim in the byte stream: the bulk receivers
count it in raw bytes as they do for the line front-end, while the sampled receivers decode every frame
and every event (order per sender, latency).
"""
import json

from wsproto import ConnectionType
from wsproto.events import Request
from wsproto.frame_protocol import FrameProtocol, Opcode
from wsproto.handshake import H11Handshake

from bench.adapters import Adapter

#: The WebSocket's path on --listen-web (chatd/frontends/web.py: web_site).
PATH = "/ws"


def command(name, *args):
    """One command message, as JSON text."""
    return json.dumps({"type": "command", "name": name, "args": list(args)}, separators=(",", ":"))


class ChatdWebAdapter(Adapter):
    """chatd's WebSocket front-end: a login, a join and room lines are command messages in masked text frames."""
    fail_needles = (b'"type":"error"',)
    #: Closed loop: the end of every event object in an `events` message (a chat line's payload has no brace).
    record_end = b"}"

    def __init__(self, args):
        super().__init__(args)
        self.frames = FrameProtocol(client=True, extensions=[])
        self.host = "%s:%d" % (args.host, args.port)

    def frame(self, text):
        """`text` as one masked text frame (a fresh random mask each time)."""
        return bytes(self.frames.send_data(text, fin=True))

    def upgrade(self):
        """The handshake request, with the Origin of the page the server serves at / (allowed by default)."""
        hs = H11Handshake(ConnectionType.CLIENT)
        return hs.send(Request(host=self.host, target=PATH, extra_headers=[(b"origin", b"http://" + self.host.encode())]))

    def login(self, nick):
        return [("upgrade", self.upgrade(), (b" 101 ",)),
                ("login", self.frame(command("login", nick, self.args.password or "")), (b'"type":"login"',))]

    def join(self, nick, room=None):
        return [("join", self.frame(command("join", room or self.room)), (b'"type":"entered"',))]

    def message(self, text):
        return self.frame(command("say", text.decode()))

    def probe(self):
        return ("probe", self.frame(command("ping")), (b"pong",))

    def records(self):
        return EventTexts()


class EventTexts:
    """One receiver's stream decoded: frames (wsproto), messages (JSON), the text of every room line (bytes)."""

    def __init__(self):
        self.frames = FrameProtocol(client=True, extensions=[])
        self.parts = []

    def __call__(self, data):
        self.frames.receive_bytes(data)
        out = []
        for frame in self.frames.received_frames():
            if frame.opcode not in (Opcode.TEXT, Opcode.CONTINUATION):
                continue  # a ping or close: nothing the bench answers
            self.parts.append(frame.payload)
            if not frame.message_finished:
                continue
            message = json.loads("".join(self.parts))
            self.parts = []
            if message.get("type") == "events":
                out += [event["text"].encode() for event in message["events"] if event.get("kind") == "say"]
        return out
