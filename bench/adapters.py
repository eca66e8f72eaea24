"""What every peerbench protocol adapter shares: the payload tag, the error that ends a run, and the base class
Adapter (bench/peerbench.py has the line and IRC adapters, bench/webproto.py chatd's WebSocket one; both import
this module, and it imports neither). Stdlib only.
"""

TAG = b"~PB~"


class BenchError(Exception):
    """A failure that ends the run with a clear message and exit status 2."""


class Adapter:
    """The protocol-specific part of peerbench. A new protocol subclasses this and is added to ADAPTERS.

    A conversation step is a tuple (name, bytes_to_send, needles): the step is complete as soon as any of
    the needles (bytes) appears in what the server sent after the step's bytes were queued.
    """
    marker = TAG           # how a delivered chat line is recognised (the payload tag, unless overridden)
    fail_needles = ()      # server lines that mean a step failed for sure
    record_end = b"\n"     # what ends one delivered line in the byte stream (closed loop: complete ones only)

    def __init__(self, args):
        self.args = args
        self.room = args.room

    def login(self, nick):
        """Steps that take a fresh connection to 'logged in as nick' (not yet in a room)."""
        raise NotImplementedError

    def join(self, nick, room=None):
        """Steps that put a logged-in connection into `room` (default self.room), complete once the server confirms."""
        raise NotImplementedError

    def message(self, text):
        """Bytes that say `text` (bytes, no line end) to everyone in self.room."""
        raise NotImplementedError

    def probe(self):
        """One cheap request/response step, to time how promptly a loaded server answers."""
        raise NotImplementedError

    def keepalive(self, data):
        """Bytes a well-behaved client must answer to `data` from the server (e.g. PONG), or b""."""
        return b""

    def records(self):
        """For a sampled receiver: None to split its stream into lines at LF, or a callable that takes each
        chunk of received bytes and returns the delivered lines completed by it (protocols without lines)."""
        return None

    def failure(self, data):
        """The line in `data` that means the current step failed, or None."""
        for line in data.split(b"\n"):
            if any(n in line for n in self.fail_needles):
                return line.strip()
        return None
