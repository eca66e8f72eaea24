#!/usr/bin/env python3
"""peerbench: a loopback load generator for chat servers (stdlib only, Python 3.11, Linux).

Scenarios
  fanout   R receivers and S senders in one room; every sender sends M messages as fast as the server
           reads them. Reports deliveries/s seen by the receivers, losses (every receiver must get S*M),
           order per sender (checked on the sampled receivers), server CPU per delivery.
  latency  the same room; the senders together send --rate messages/s for --duration seconds. Reports
           p50/p99/max one-way delivery latency from the send time embedded in every message.
  idle     C registered connections that do nothing. Reports server RSS before/after (KiB per connection)
           and the round-trip time of a cheap request (IRC PING) while they are all connected.

Protocol adapters
  Everything protocol-specific (how to log in, join a room, send a message, recognise a delivered message,
  answer keep-alives, what a refusal looks like) is in one small class: see Adapter (bench/adapters.py), IrcAdapter and
  LineAdapter (a line-based chat server driven by command templates given on the command line).
  A chat line always carries the payload  "~PB~ <sender> <seq> T<send_time_ns> xxxx..."  so a delivery is
  recognised by the tag ~PB~ whatever the protocol wraps around it.

Process layout (so that the generator is not the bottleneck)
  main process     logs every client in (receivers join one by one, so the join order is known), then
                   sends (flat out or paced) and drains what the server sends to the senders;
  sample process   a few receivers spread evenly over the join order; every line is parsed (latency,
                   order per sender); in the latency scenario they read as soon as data arrives;
  bulk process(es) all other receivers: recv_into() one preallocated buffer and bytes.count(tag), and
                   sleep --coalesce seconds between epoll rounds so each read returns many lines.
Every wait is bounded (--login-timeout, --max-seconds, a SIGALRM watchdog). Traffic goes to loopback only.
Output: one human-readable line and one line "RESULT {json}". Exit status 0 for a completed measurement
(losses are reported, not fatal), 2 for an error ("peerbench: error: ..."), 3 if the watchdog fired, 4 if
the result was disturbed: other processes used more than --max-other cores during the traffic phase.
`peerbench.py --summarize FILE...` prints markdown tables (medians over runs) from RESULT lines.
"""
import argparse
import errno
import json
import math
import os
import select
import signal
import socket
import statistics
import sys
import time

from bench.adapters import TAG, Adapter, BenchError


# ---------------------------------------------------------------- protocol adapters

class IrcAdapter(Adapter):
    """IRC (RFC 1459/2812): NICK/USER (PASS first if --password), JOIN, PRIVMSG, PING."""
    FAIL_NUMERICS = {b"401", b"403", b"405", b"431", b"432", b"433", b"436", b"437", b"451", b"461",
                     b"462", b"464", b"465", b"471", b"473", b"474", b"475", b"477"}

    def login(self, nick):
        n = nick.encode()
        hello = b"PASS %s\r\n" % self.args.password.encode() if self.args.password else b""
        hello += b"NICK %s\r\nUSER %s 0 * :peerbench %s\r\n" % (n, n, n)
        return [("register", hello, (b" 001 ",))]

    def join(self, nick, room=None):
        return [("join", b"JOIN %s\r\n" % (room or self.room).encode(), (b" 366 ",))]

    def message(self, text):
        return b"PRIVMSG %s :%s\r\n" % (self.room.encode(), text)

    def probe(self):
        return ("probe", b"PING :pb\r\n", (b"PONG",))

    def keepalive(self, data):
        if b"PING" not in data:
            return b""
        out = []
        for line in data.split(b"\n"):
            line = line.strip(b"\r")
            if line.startswith(b"PING"):
                out.append(b"PONG" + line[4:] + b"\r\n")
            elif line.startswith(b":") and b" PING " in line:
                out.append(b"PONG " + line.split(b" PING ", 1)[1] + b"\r\n")
        return b"".join(out)

    def failure(self, data):
        for line in data.split(b"\n"):
            parts = line.split(None, 2)
            if not parts:
                continue
            if parts[0] == b"ERROR" or (len(parts) > 1 and parts[1] in self.FAIL_NUMERICS) \
                    or b"Login failed" in line or b"Already logged in" in line:
                return line.strip()
        return None


class LineAdapter(Adapter):
    """A line-based chat server with its own commands, described on the command line (no code needed).

    --line-login and --line-join take 'SEND=>EXPECT' templates (repeatable, run in order); --line-message
    is the template of one chat line; templates may use {nick} {password} {room} {text} and \\n, \\r, \\t.
    SEND gets --line-end appended; an empty SEND sends nothing and only waits for EXPECT (e.g. the banner or
    menu a server prints on connect). Several EXPECT alternatives are separated by '|'; a step is done when
    one of them arrives after its SEND, so pick text that only the answer to this step contains (not a
    prompt such as '> ' that follows every answer). --line-fail lists substrings that mean a refusal.
    Example (a menu-driven server whose room mode broadcasts every line it is sent):
      --proto line --line-login '=>Main menu' --line-login 'login {nick} {password}=>Welcome' \\
      --line-join 'join {room}=>joined' --line-message '{text}' --line-probe 'ping=>pong' \\
      --line-fail 'error|denied'
    """

    def __init__(self, args):
        super().__init__(args)
        if not args.line_login or not args.line_message:
            raise BenchError("--proto line needs at least --line-login and --line-message")
        self.end = self._unescape(args.line_end)
        self.fail_needles = tuple(self._unescape(x) for x in args.line_fail.split("|") if x) if args.line_fail else ()

    @staticmethod
    def _unescape(s):
        return s.encode().decode("unicode_escape").encode("latin-1")

    def _fill(self, template, nick="", room=None):
        return self._unescape(template.replace("{nick}", nick).replace("{password}", self.args.password or "")
                              .replace("{room}", room or self.room))

    def _steps(self, templates, nick, name, room=None):
        steps = []
        for k, t in enumerate(templates):
            send, _, expect = t.partition("=>")
            needles = tuple(self._fill(e, nick, room) for e in expect.split("|") if e) or (b"\n",)
            data = self._fill(send, nick, room) + self.end if send else b""
            steps.append(("%s%d" % (name, k), data, needles))
        return steps

    def login(self, nick):
        return self._steps(self.args.line_login, nick, "login")

    def join(self, nick, room=None):
        return self._steps(self.args.line_join or [], nick, "join", room)

    def message(self, text):
        head, _, tail = self.args.line_message.partition("{text}")
        return self._fill(head) + text + self._fill(tail) + self.end

    def probe(self):
        if not self.args.line_probe:
            return None
        return self._steps([self.args.line_probe], "", "probe")[0]


class ChatdAdapter(Adapter):
    """chatd's plain (telnet) mode, as written down in chatd's docs/PROTOCOL.md.

    On connect the server prints a banner and the main menu ending in the prompt 'menu> '; 'login NAME' asks
    'Password:' and answers 'Logged in as NAME.'; 'join ROOM' answers 'Entered room ROOM ...'. In a room every
    line is said to everyone in it (the sender included) as '[HH:MM:SS] NAME: TEXT' + CRLF; '/ping' answers
    'pong' (at the menu: 'ping'). Accounts must exist: the bench writes them into users.csv before it starts
    the server (see bench/servers.py). The server's telnet negotiation (IAC WILL ECHO around the password) needs
    no answer.
    """
    fail_needles = (b"Login failed", b"Error:", b"Already logged in")

    def login(self, nick):
        n, pw = nick.encode(), (self.args.password or "").encode()
        return [("menu", b"", (b"menu> ",)),
                ("login", b"login %s\r\n" % n, (b"Password:",)),
                ("password", b"%s\r\n" % pw, (b"Logged in as %s." % n,))]

    def join(self, nick, room=None):
        r = (room or self.room).encode()
        return [("join", b"join %s\r\n" % r, (b"Entered room %s" % r,))]

    def message(self, text):
        return text + (b"\n" if self.args.chatd_lf else b"\r\n")

    def probe(self):
        return ("probe", b"/ping\r\n" if self.args.idle_join else b"ping\r\n", (b"pong",))


ADAPTERS = {"irc": IrcAdapter, "line": LineAdapter, "chatd": ChatdAdapter, "chatd-web": None}


def make_adapter(args):
    """The adapter of --proto; chatd-web's (bench/webproto.py) needs wsproto, imported only when used."""
    if args.proto == "chatd-web":
        from bench.webproto import ChatdWebAdapter
        return ChatdWebAdapter(args)
    return ADAPTERS[args.proto](args)


# ---------------------------------------------------------------- measurement functions

def proc_cpu(pid):
    """(utime, stime) of a process in seconds, from /proc/PID/stat (all threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        raise BenchError("server pid %d is gone (did the server crash?)" % pid)
    hz = os.sysconf("SC_CLK_TCK")
    return int(parts[11]) / hz, int(parts[12]) / hz


def node_port(args, k):
    """The port of connection k of a batch: --port, or with --also-port every node's in turn (k even on the
    first, odd on the second for two nodes: a room's receivers and senders split evenly)."""
    ports = [args.port] + (args.also_port or [])
    return ports[k % len(ports)]


def nodes_cpu(args):
    """(utime, stime) summed over the server's processes: --server-pid and every --also-pid (other nodes)."""
    pids = [args.server_pid] + (args.also_pid or [])
    ts = [proc_cpu(q) for q in pids]
    return sum(t[0] for t in ts), sum(t[1] for t in ts)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


def server_threads(pid):
    """Number of threads of the server process (1 for a single-threaded event loop)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def listen_overflows():
    """TcpExt ListenOverflows from /proc/net/netstat (system-wide): SYNs dropped because a listen backlog was full.

    A dropped SYN is retried by the kernel after 1 s, 3 s, 7 s...: logins stall although the server is idle."""
    try:
        with open("/proc/net/netstat") as f:
            rows = [line.split() for line in f if line.startswith("TcpExt:")]
        return int(dict(zip(rows[0][1:], rows[1][1:])).get("ListenOverflows", 0))
    except (OSError, IndexError, ValueError):
        return 0


def process_cpu_table(exclude):
    """{pid: CPU seconds (own + waited-for children)} of every process on the machine except `exclude`.

    Per-process times add up to each process's exact run time (the kernel scales its tick samples to it),
    unlike the machine-wide counters in /proc/stat, which are tick samples only and can be off by a third
    of a core when many processes sleep and wake thousands of times a second."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude:
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                parts = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d)] = sum(int(x) for x in parts[11:15]) / hz
    return out


def machine_jiffies():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def wait_quiet(limit_s, threshold=0.25):
    """Wait up to limit_s until other work on the machine (other benchmarks, builds) has stopped.

    Returns the busy fraction of all CPUs over the last half second; the caller records it with the result."""
    end = time.time() + limit_s
    while True:
        b0 = machine_jiffies()
        time.sleep(0.5)
        b1 = machine_jiffies()
        busy = (b1[0] - b0[0]) / max(1, b1[1] - b0[1])
        if busy < threshold or time.time() >= end:
            return busy


def pct(sorted_ns, p):
    """p-th percentile (nearest rank) of sorted nanoseconds, in ms."""
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, max(0, math.ceil(p / 100 * len(sorted_ns)) - 1))] / 1e6


# ---------------------------------------------------------------- logging clients in

class Conv:
    __slots__ = ("sock", "label", "steps", "step", "buf", "out", "t0")


def converse(args, adapter, items, window, deadline, what, times=None):
    """Run the step lists of many connections concurrently, at most `window` of them in flight.

    items: [(label, existing socket or None, steps)]; a None socket is connected first.
    Returns the sockets in the order of items. Raises BenchError on refusal, hang-up or timeout.
    times: if a list of len(items), times[k] gets the seconds item k took from its first step to its last.
    """
    ep = select.epoll()
    live, socks = {}, [None] * len(items)
    nxt = done = 0
    try:
        while done < len(items):
            while nxt < len(items) and len(live) < window:
                label, s, steps = items[nxt]
                if s is None:
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    port = node_port(args, nxt)
                    _connects[port] = _connects.get(port, 0) + 1
                    err = s.connect_ex((args.host, port))
                    if err not in (0, errno.EINPROGRESS):
                        s.close()
                        raise BenchError("connect %s:%d for %s: %s" % (args.host, port, label, os.strerror(err)))
                if not steps:
                    socks[nxt] = s
                    nxt += 1
                    done += 1
                    continue
                c = Conv()
                c.sock, c.label, c.steps, c.step, c.buf, c.out, c.t0 = s, nxt, steps, 0, b"", steps[0][1], time.time()
                live[s.fileno()] = c
                ep.register(s.fileno(), select.EPOLLIN | select.EPOLLOUT)
                nxt += 1
            if done == len(items):
                break
            left = deadline - time.time()
            if left <= 0:
                stages = {}
                for c in live.values():
                    stages[c.steps[c.step][0]] = stages.get(c.steps[c.step][0], 0) + 1
                ex = next(iter(live.values()))
                raise BenchError("%s timed out: %d of %d done; waiting at %s; e.g. %s waits for %r, has %r"
                                 % (what, done, len(items), stages, items[ex.label][0], ex.steps[ex.step][2], ex.buf[-200:]))
            for fd, ev in ep.poll(min(0.5, left)):
                c = live[fd]
                label, stepname = items[c.label][0], c.steps[c.step][0]
                if ev & select.EPOLLIN:
                    try:
                        data = c.sock.recv(65536)
                    except (BlockingIOError, InterruptedError):
                        data = None
                    except OSError as e:
                        raise BenchError("%s: %s during %s; got %r" % (label, e, stepname, c.buf[-300:]))
                    if data == b"":
                        raise BenchError("%s: server closed the connection during %s; last bytes %r" % (label, stepname, c.buf[-300:]))
                    if data:
                        c.buf += data
                        c.out += adapter.keepalive(data)
                        bad = adapter.failure(c.buf)
                        if bad is not None:
                            raise BenchError("%s: server refused %s: %r" % (label, stepname, bad[:300]))
                        if any(n in c.buf for n in c.steps[c.step][2]):
                            # the next step's answer can only come after its request, which is sent now
                            c.buf = b""
                            c.step += 1
                            if c.step == len(c.steps):
                                ep.unregister(fd)
                                del live[fd]
                                socks[c.label] = c.sock
                                done += 1
                                if times is not None:
                                    times[c.label] = time.time() - c.t0
                                if c.out:
                                    try:
                                        c.sock.send(c.out)
                                    except OSError:
                                        pass
                                continue
                            c.out += c.steps[c.step][1]
                elif ev & (select.EPOLLERR | select.EPOLLHUP):
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    raise BenchError("%s: connection failed during %s: %s" % (label, stepname, os.strerror(err) if err else "hang-up"))
                if c.out:
                    try:
                        c.out = c.out[c.sock.send(c.out):]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:
                        raise BenchError("%s: send failed during %s: %s" % (label, stepname, e))
                ep.modify(fd, select.EPOLLIN | (select.EPOLLOUT if c.out else 0))
        return socks
    except BaseException:
        for c in live.values():
            c.sock.close()
        for s in socks:
            if s is not None:
                s.close()
        raise
    finally:
        ep.close()


def open_room(args, adapter, nicks, deadline, what):
    """Log `nicks` in concurrently, then let them join the room one at a time (a known join order)."""
    socks = converse(args, adapter, [(n, None, adapter.login(n)) for n in nicks], args.window, deadline, what + " login")
    try:
        return converse(args, adapter, [(n, s, adapter.join(n)) for n, s in zip(nicks, socks)], 1, deadline, what + " join")
    except BaseException:
        for s in socks:
            s.close()
        raise


# ---------------------------------------------------------------- receivers (child processes)

def bulk_receive(socks, marker, want, deadline, coalesce, bufsize):
    """Count tagged lines on many sockets: one preallocated buffer, recv_into, bytearray.count."""
    ep = select.epoll(len(socks) + 1)
    slot = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        slot[s.fileno()] = i
    n, k = len(socks), len(marker) - 1
    counts, tails, eof = [0] * n, [b""] * n, []
    buf = bytearray(bufsize)
    waiting, total, t_first, t_last = n, 0, 0.0, 0.0
    now, sleep, poll = time.time, time.sleep, ep.poll
    while waiting:
        t = now()
        if t >= deadline:
            break
        got = 0
        for fd, ev in poll(min(0.5, deadline - t)):
            i = slot[fd]
            try:
                m = socks[i].recv_into(buf)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                m = 0
            if m == 0:
                ep.unregister(fd)
                eof.append(i)
                if counts[i] < want:
                    waiting -= 1
                continue
            c = buf.count(marker, 0, m)
            tail = tails[i]
            if tail:
                c += (tail + buf[:k]).count(marker)
            tails[i] = bytes(buf[m - k:m]) if m >= k else (tail + buf[:m])[-k:]
            if c:
                before = counts[i]
                counts[i] = before + c
                got += c
                if before < want <= before + c:
                    waiting -= 1
        if got:
            t_last = now()
            if not t_first:
                t_first = t_last
            total += got
            if coalesce:
                sleep(coalesce)
    ep.close()
    return dict(delivered=total, t_first=t_first, t_last=t_last, counts=counts, eof=len(eof),
                lat=[], out_of_order=0, gaps=0)


def sample_receive(socks, marker, want, deadline, coalesce, bufsize, senders, keep_latency, keep_stamps=False,
                   records=None):
    """Parse every line: latency from the embedded send time, and order per sender (no dup, no reorder).

    records: the adapter's records method (it returns None where lines end at LF)."""
    ep = select.epoll(len(socks) + 1)
    slot = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        slot[s.fileno()] = i
    n, L = len(socks), len(marker)
    counts, partial, eof = [0] * n, [b""] * n, []
    split = [records() if records is not None else None for _ in socks]
    expect = [[0] * senders for _ in range(n)]
    lat, lat_at, out_of_order, gaps = [], [], 0, 0
    waiting, total, t_first, t_last = n, 0, 0.0, 0.0
    while waiting:
        t = time.time()
        if t >= deadline:
            break
        got = 0
        for fd, ev in ep.poll(min(0.5, deadline - t)):
            i = slot[fd]
            try:
                data = socks[i].recv(bufsize)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            now_ns = time.time_ns()
            if not data:
                ep.unregister(fd)
                eof.append(i)
                if counts[i] < want:
                    waiting -= 1
                continue
            if split[i] is not None:
                lines = split[i](data)
            else:
                lines = (partial[i] + data).split(b"\n")
                partial[i] = lines.pop()
            c = 0
            exp = expect[i]
            for ln in lines:
                j = ln.find(marker)
                if j < 0:
                    continue
                c += 1
                try:
                    who, seq, stamp = ln[j + L:].split(None, 3)[:3]
                    who, seq = int(who), int(seq)
                    if keep_latency:
                        sent_ns = int(stamp[1:])
                        lat.append(now_ns - sent_ns)
                        if keep_stamps:
                            lat_at.append(sent_ns)
                except (ValueError, IndexError):
                    continue
                if seq != exp[who]:
                    if seq < exp[who]:
                        out_of_order += 1
                    else:
                        gaps += 1
                exp[who] = max(exp[who], seq + 1)
            if c:
                before = counts[i]
                counts[i] = before + c
                got += c
                if before < want <= before + c:
                    waiting -= 1
        if got:
            total += got
            t_last = time.time()
            if not t_first:
                t_first = t_last
            if coalesce:
                time.sleep(coalesce)
    ep.close()
    return dict(delivered=total, t_first=t_first, t_last=t_last, counts=counts, eof=len(eof),
                lat=lat, lat_at=lat_at, out_of_order=out_of_order, gaps=gaps)


def fork_receiver(kind, socks, all_socks, go_timeout, max_seconds, work):
    """Fork a child that owns `socks`, waits for the go byte, runs work(socks, deadline), sends back JSON."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        status = 0
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(go_timeout) + 5)  # backstop: the child never outlives a dead parent for long
            os.close(go_w)
            os.close(res_r)
            mine = {s.fileno() for s in socks}
            for s in all_socks:
                if s.fileno() not in mine:
                    s.close()
            r, _, _ = select.select([go_r], [], [], go_timeout)
            if not r or os.read(go_r, 1) != b"g":
                raise BenchError("no start signal")
            c0 = time.process_time()
            out = work(socks, time.time() + max_seconds)
            out["cpu"] = time.process_time() - c0
            out["kind"], out["n"] = kind, len(socks)
        except BaseException as e:
            out, status = {"error": "%s receivers: %s: %s" % (kind, type(e).__name__, e)}, 2
        data = json.dumps(out).encode()
        try:
            while data:
                data = data[os.write(res_w, data):]
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(res_w)
    return dict(kind=kind, pid=pid, go=go_w, res=res_r, buf=b"", done=False)


# ---------------------------------------------------------------- senders (main process)

def drain(sock, tails, i, marker, k, buf):
    """Read and discard what the server sends to sender i; return the tagged lines in it."""
    try:
        m = sock.recv_into(buf)
    except (BlockingIOError, InterruptedError):
        return 0
    if m == 0:
        raise BenchError("server closed sender connection s%d" % i)
    c = buf.count(marker, 0, m)
    if tails[i]:
        c += (tails[i] + buf[:k]).count(marker)
    tails[i] = bytes(buf[m - k:m]) if m >= k else (tails[i] + buf[:m])[-k:]
    return c


def payload(i, seq, pad):
    return b"%s %d %d T%d %s" % (TAG, i, seq, time.time_ns(), pad)


def send_traffic(args, ad, senders, M, paced, deadline):
    """Send M messages per sender: flat out (fanout) or args.rate messages/s in total (latency).

    Flat out with --inflight W > 0, sender j never has more than W messages that have not yet been seen
    delivered to the other senders (closed loop); W = 0 writes whenever the socket takes more (open loop).
    """
    S = len(senders)
    slot = {s.fileno(): i for i, s in enumerate(senders)}
    ep = select.epoll()
    for s in senders:
        ep.register(s.fileno(), select.EPOLLIN | (0 if paced else select.EPOLLOUT))
    # pad the chat line (protocol framing included) to about --size bytes
    probe_len = len(ad.message(payload(S - 1, M, b"")))
    pad = b"x" * max(1, args.size - probe_len - 1)
    seq, pending, tails = [0] * S, [b""] * S, [b""] * S
    k, marker, buf = len(ad.marker) - 1, ad.marker, bytearray(1 << 18)
    seen = 0
    W = args.inflight if (args.inflight > 0 and S > 1 and not paced) else 0
    heard = [-1] * S                    # closed loop: highest seq of sender j seen on another sender's socket
    partial = [b""] * S
    tags = [b"%s %d " % (marker, j) for j in range(S)]
    blocked = set()

    def observe(i, m):
        """Closed loop: note the newest message of every other sender in what sender i just received."""
        data = partial[i] + bytes(buf[:m])
        cut = data.rfind(ad.record_end)
        partial[i] = data[cut + 1:]
        for j in range(S):
            if j != i:
                p = data.rfind(tags[j], 0, cut)
                if p >= 0:
                    q = p + len(tags[j])
                    n = int(data[q:data.index(b" ", q)])
                    if n > heard[j]:
                        heard[j] = n

    def read_sender(i):
        nonlocal seen
        try:
            m = senders[i].recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        if m == 0:
            raise BenchError("server closed sender connection s%d" % i)
        c = buf.count(marker, 0, m)
        if tails[i]:
            c += (tails[i] + buf[:k]).count(marker)
        tails[i] = bytes(buf[m - k:m]) if m >= k else (tails[i] + buf[:m])[-k:]
        seen += c
        if W:
            observe(i, m)

    t0 = time.time()
    if not paced:
        unfinished = S
        while unfinished:
            if time.time() > deadline:
                raise BenchError("senders could not write all messages within --max-seconds (server not reading?)")
            for fd, ev in ep.poll(0.5):
                i = slot[fd]
                if ev & select.EPOLLIN:
                    read_sender(i)
                if ev & select.EPOLLOUT:
                    if not pending[i]:
                        room = 256 if not W else min(256, W - (seq[i] - 1 - heard[i]))
                        if room <= 0:
                            blocked.add(i)
                            ep.modify(fd, select.EPOLLIN)
                            continue
                        batch = []
                        while seq[i] < M and len(batch) < room:
                            batch.append(ad.message(payload(i, seq[i], pad)))
                            seq[i] += 1
                        pending[i] = memoryview(b"".join(batch))
                    try:
                        pending[i] = pending[i][senders[i].send(pending[i]):]
                    except (BlockingIOError, InterruptedError):
                        pass
                    if not pending[i] and seq[i] >= M:
                        ep.modify(fd, select.EPOLLIN)
                        unfinished -= 1
                elif ev & (select.EPOLLERR | select.EPOLLHUP):
                    raise BenchError("sender s%d: connection error" % i)
            for i in list(blocked):  # closed loop: re-arm senders whose messages have been delivered
                if W - (seq[i] - 1 - heard[i]) > 0:
                    blocked.discard(i)
                    ep.modify(senders[i].fileno(), select.EPOLLIN | select.EPOLLOUT)
    else:
        total, gap, sent = S * M, 1.0 / args.rate, 0
        while sent < total or any(pending):
            now = time.time()
            if now > deadline:
                raise BenchError("paced senders fell behind past --max-seconds (server not reading?)")
            due = t0 + sent * gap if sent < total else now + 0.01
            wait = due - now
            for fd, ev in ep.poll(max(0.0, wait - 0.0015) if wait > 0.002 else 0):
                i = slot[fd]
                if ev & select.EPOLLIN:
                    read_sender(i)
                if ev & select.EPOLLOUT and pending[i]:
                    try:
                        pending[i] = pending[i][senders[i].send(pending[i]):]
                    except (BlockingIOError, InterruptedError):
                        pass
                    if not pending[i]:
                        ep.modify(fd, select.EPOLLIN)
            if sent >= total:
                continue
            w = due - time.time()
            if w > 0.002:
                continue
            if w > 0:
                time.sleep(w)
            i = sent % S
            msg = ad.message(payload(i, seq[i], pad))
            seq[i] += 1
            sent += 1
            if pending[i]:
                pending[i] = memoryview(bytes(pending[i]) + msg)
                continue
            try:
                n = senders[i].send(msg)
            except (BlockingIOError, InterruptedError):
                n = 0
            if n < len(msg):
                pending[i] = memoryview(msg)[n:]
                ep.modify(senders[i].fileno(), select.EPOLLIN | select.EPOLLOUT)
    ep.close()
    return time.time() - t0, seen, tails, probe_len + len(pad) + 1


# ---------------------------------------------------------------- scenarios

_children = []
_connects = {}  # port -> connections made to it (with --also-port: how the members were split over the nodes)
_stage = ["start"]


def _kill_children():
    for c in _children:
        try:
            os.kill(c["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(c["pid"], 0)
        except ChildProcessError:
            pass
    _children.clear()


def _watchdog(signum, frame):
    sys.stderr.write("peerbench: error: watchdog expired during %s; stopping\n" % _stage[0])
    _kill_children()
    os._exit(3)


def spread(R, n):
    """n indices spread evenly over range(R) (the middle of n equal slices)."""
    n = min(n, R)
    return sorted({int((j + 0.5) * R / n) for j in range(n)})


def run_traffic(args, paced):
    R, S = args.receivers, args.senders
    M = max(1, int(round(args.rate * args.duration / S))) if paced else args.messages
    ad = make_adapter(args)
    want = S * M
    _stage[0] = "receiver login"
    t_login = time.time()
    recv = open_room(args, ad, ["%sr%d" % (args.nick_prefix, i) for i in range(R)], t_login + args.login_timeout, "receivers")
    _stage[0] = "sender login"
    try:
        senders = open_room(args, ad, ["%ss%d" % (args.nick_prefix, i) for i in range(S)], time.time() + args.login_timeout, "senders")
    except BaseException:
        for s in recv:
            s.close()
        raise
    login_s = time.time() - t_login
    storm_socks = []
    if paced and args.storm > 0:
        _stage[0] = "storm connect"
        storm_nicks = ["%sst%d" % (args.nick_prefix, i) for i in range(args.storm)]
        pre = [[st for st in ad.login(n) if not st[1]] for n in storm_nicks]  # steps that only wait (the menu)
        try:
            storm_socks = converse(args, ad, [(n, None, p) for n, p in zip(storm_nicks, pre)], args.window,
                                   time.time() + args.login_timeout, "storm connect")
        except BaseException:
            for s in recv + senders:
                s.close()
            raise
    all_socks = recv + senders + storm_socks
    # receivers: a sample spread over the join order (parsed line by line), the rest counted in bulk
    nsample = args.sample if args.sample >= 0 else (5 if paced else 2)
    sample_idx = set(spread(R, nsample)) if nsample else set()
    bulk = [s for i, s in enumerate(recv) if i not in sample_idx]
    sample = [recv[i] for i in sorted(sample_idx)]
    end = time.time() + args.login_timeout + args.max_seconds + 30  # children give up by then
    go_timeout = args.max_seconds + 60
    coalesce = 0.0 if paced else args.coalesce
    if sample:
        _children.append(fork_receiver("sample", sample, all_socks, go_timeout, args.max_seconds,
                                       lambda ss, dl: sample_receive(ss, ad.marker, want, dl, coalesce, 1 << 18, S, paced,
                                                                     bool(storm_socks), ad.records)))
    procs = max(1, min(args.procs, len(bulk))) if bulk else 0
    for j in range(procs):
        part = bulk[j::procs]
        _children.append(fork_receiver("bulk%d" % j, part, all_socks, go_timeout, args.max_seconds,
                                       lambda ss, dl: bulk_receive(ss, ad.marker, want, dl, args.coalesce, args.bufsize)))
    if storm_socks:
        def storm(ss, dl):
            time.sleep(args.storm_delay)
            steps = [[st for st in ad.login(n) if st[1]] for n in storm_nicks]
            times = [None] * len(ss)
            t_a = time.time()
            converse(args, ad, [(n, s, st) for n, s, st in zip(storm_nicks, ss, steps)], len(ss), dl, "storm login",
                     times)
            t_b = time.time()
            done = sorted(t for t in times if t is not None)
            return dict(delivered=0, t_first=0.0, t_last=0.0, counts=[], eof=0, lat=[], out_of_order=0, gaps=0,
                        storm_start=t_a, storm_end=t_b, login_times=done)
        _children.append(fork_receiver("storm", storm_socks, all_socks, go_timeout, args.max_seconds, storm))
        for s in storm_socks:
            s.close()
    for s in recv:  # the children own the receivers now
        s.close()
    time.sleep(args.pause)
    pid = args.server_pid
    srv0 = nodes_cpu(args) if pid else (0.0, 0.0)
    # the other nodes and the servers they share (--helper-pid: Redis, PostgreSQL) are no outside disturbance
    mine = {os.getpid(), pid} | {c["pid"] for c in _children} | set(args.also_pid or []) | set(args.helper_pid or [])
    h0 = sum(sum(proc_cpu(q)) for q in args.helper_pid or [])
    o0 = process_cpu_table(mine)
    m0 = machine_jiffies()
    me0 = time.process_time()
    _stage[0] = "traffic"
    t0 = time.time()
    for c in _children:
        os.write(c["go"], b"g")
    try:
        send_s, seen, tails, line_len = send_traffic(args, ad, senders, M, paced, t0 + args.max_seconds)
        # keep draining the senders until every receiver process has reported
        ep = select.epoll()
        slot = {}
        for i, s in enumerate(senders):
            ep.register(s.fileno(), select.EPOLLIN)
            slot[s.fileno()] = i
        for c in _children:
            ep.register(c["res"], select.EPOLLIN)
            slot[c["res"]] = c
        buf, k = bytearray(1 << 18), len(ad.marker) - 1
        results = []
        while len(results) < len(_children):
            if time.time() > end:
                raise BenchError("receiver processes did not report in time")
            for fd, ev in ep.poll(0.05):
                x = slot[fd]
                if isinstance(x, dict):
                    chunk = os.read(fd, 1 << 20)
                    if chunk:
                        x["buf"] += chunk
                        continue
                    ep.unregister(fd)
                    os.close(fd)
                    try:
                        r = json.loads(x["buf"])
                    except ValueError:
                        raise BenchError("%s receiver process died without a result" % x["kind"])
                    if "error" in r:
                        raise BenchError(r["error"])
                    results.append(r)
                else:
                    try:
                        seen += drain(senders[x], tails, x, ad.marker, k, buf)
                    except BenchError:
                        ep.unregister(fd)
        me = time.process_time() - me0
        srv1 = nodes_cpu(args) if pid else (float("nan"), float("nan"))
        helper_cpu = sum(sum(proc_cpu(q)) for q in args.helper_pid or []) - h0
        m1 = machine_jiffies()
        o1 = process_cpu_table(mine)
        window = time.time() - t0  # the span over which the CPU counters above were taken
        ep.close()
    finally:
        for s in senders:
            s.close()
        _kill_children()
    storm_r = [r for r in results if r["kind"] == "storm"]
    results = [r for r in results if r["kind"] != "storm"]
    extra = {}
    if storm_r:
        sr = storm_r[0]
        lt = sorted(x * 1e9 for x in sr["login_times"])
        a_ns, b_ns = int(sr["storm_start"] * 1e9), int(sr["storm_end"] * 1e9)
        during = sorted(l for r in results for l, at in zip(r["lat"], r.get("lat_at", [])) if a_ns <= at <= b_ns)
        extra = dict(storm_logins=len(lt), storm_seconds=sr["storm_end"] - sr["storm_start"],
                     storm_login_p50_ms=pct(lt, 50), storm_login_p99_ms=pct(lt, 99), storm_login_max_ms=pct(lt, 100),
                     storm_lat_n=len(during), storm_lat_p50_ms=pct(during, 50), storm_lat_p99_ms=pct(during, 99),
                     storm_lat_max_ms=pct(during, 100),
                     storm_covered=(sr["storm_end"] <= t0 + send_s))
    delivered = sum(r["delivered"] for r in results)
    t_last = max((r["t_last"] for r in results if r["t_last"]), default=t0)
    secs = max(1e-9, t_last - t0)
    lat = sorted(x for r in results for x in r["lat"])
    short = sum(1 for r in results for c in r["counts"] if c < want)
    gen = {"sender": me}
    gen.update({r["kind"]: r["cpu"] for r in results})
    gen.update({r["kind"]: r["cpu"] for r in storm_r})
    gen_util = {k2: v / secs for k2, v in gen.items()}
    srv_cpu = (srv1[0] - srv0[0]) + (srv1[1] - srv0[1])
    srv_util = srv_cpu / secs
    # the server also delivers every message to the S-1 other senders; those copies cost it the same work.
    # Not all of them are read before the receivers finish, so count them in proportion to what arrived.
    copies = delivered + max(seen, S * (S - 1) * M * delivered / max(1, R * S * M))
    mach = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
    ncpu = os.cpu_count() or 1
    top_gen = max(gen_util, key=gen_util.get)
    # CPU used on this machine by processes that are neither the server nor the generator (another benchmark,
    # a build...); a process that started during the window counts with all its CPU time
    other = sum(max(0.0, v - o0.get(q, 0.0)) for q, v in o1.items()) / max(1e-9, window)
    top_other = sorted(((max(0.0, v - o0.get(q, 0.0)), q) for q, v in o1.items()), reverse=True)[:3]
    threads = server_threads(pid) if pid else 0
    # what "saturated" means for the server: one core if it is single-threaded, otherwise every core
    srv_cap = 1 if threads == 1 else ncpu
    if paced and delivered and R * S * M / secs < 0.9 * args.rate * R:
        bound = "server (fell behind the paced rate)"
    elif paced and srv_util >= 0.9 * srv_cap:
        bound = "server (%.0f%% of a core, at its limit; kept the paced rate with queueing)" % (100 * srv_util)
    elif paced:
        bound = "paced (nothing saturated)" if mach < 0.9 else "machine (%d cores busy)" % ncpu
    elif gen_util[top_gen] >= 0.9:
        bound = "generator (%s process at %.0f%%)" % (top_gen, 100 * gen_util[top_gen])
    elif srv_util >= 0.9 * srv_cap and mach < 0.95:
        bound = "server (%.0f%% of a core)" % (100 * srv_util)
    elif mach >= 0.95:
        bound = "machine (%d cores busy; server %.0f%%, generator %.0f%%)" % (ncpu, 100 * srv_util, 100 * sum(gen_util.values()))
    else:
        bound = "unclear (nothing saturated: server %.0f%%, machine %.0f%%)" % (100 * srv_util, 100 * mach)
    return dict(expected=R * S * M, delivered=delivered, lost=R * S * M - delivered, messages_per_sender=M,
                offered_per_s=(args.rate * R if paced else float("nan")),
                line_bytes=line_len, receivers_short=short, disconnected=sum(r["eof"] for r in results),
                sampled_receivers=len(sample), out_of_order=sum(r["out_of_order"] for r in results),
                gaps=sum(r["gaps"] for r in results), login_seconds=login_s,
                seconds=secs, send_seconds=send_s, deliveries_per_s=delivered / secs, sender_copies=seen,
                server_cpu_s=srv_cpu, helper_cpu_s=helper_cpu, server_user_s=srv1[0] - srv0[0], server_sys_s=srv1[1] - srv0[1],
                server_util=srv_util, server_us_per_delivery=srv_cpu / max(1, copies) * 1e6,
                gen_cpu_s=sum(gen.values()), gen_cpu=gen, gen_util=gen_util, machine_busy=mach, cpus=ncpu,
                bound=bound, other_cpu=other, disturbed=other > args.max_other, server_threads=threads,
                other_top=["pid %d: %.2fs" % (q, v) for v, q in top_other if v > 0],
                lat_n=len(lat), lat_p50_ms=pct(lat, 50), lat_p99_ms=pct(lat, 99), lat_max_ms=pct(lat, 100), **extra)



def run_idle(args):
    ad = make_adapter(args)
    pid = args.server_pid
    before = rss_kib(pid) if pid else 0
    c0 = proc_cpu(pid) if pid else (0.0, 0.0)
    _stage[0] = "idle login"
    t0 = time.time()
    nicks = ["%si%d" % (args.nick_prefix, i) for i in range(args.connections)]
    def room_of(k):
        return "%s%d" % (args.room, k % args.idle_rooms) if args.idle_rooms > 0 else args.room
    def steps_of(k, n):
        if args.idle_connect_only:  # only the steps that wait for the greeting (no login)
            return [st for st in ad.login(n) if not st[1]]
        return ad.login(n) + (ad.join(n, room_of(k)) if args.idle_join else [])
    items = [(n, None, steps_of(k, n)) for k, n in enumerate(nicks)]
    socks = converse(args, ad, items, args.window, t0 + args.login_timeout, "idle login")
    t_open = time.time() - t0
    ep = select.epoll(len(socks) + 1)
    try:
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
        closed = 0
        end = time.time() + args.settle
        while time.time() < end:  # answer keep-alives, watch for the server dropping anyone
            for fd, ev in ep.poll(0.1):
                try:
                    data = os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    ep.unregister(fd)
                    closed += 1
                    continue
                r = ad.keepalive(data)
                if r:
                    os.write(fd, r)
        after = rss_kib(pid) if pid else 0
        c1 = proc_cpu(pid) if pid else (0.0, 0.0)
        if closed:
            raise BenchError("server closed %d of %d idle connections" % (closed, len(socks)))
        # responsiveness: one probe round trip on connections spread over the population, one at a time
        rtts = []
        step = ad.probe()
        if step and not args.idle_connect_only:
            ep.close()
            ep = select.epoll()
            for i in spread(len(socks), 20):
                t = time.time()
                converse(args, ad, [("probe", socks[i], [step])], 1, t + 10, "probe")
                rtts.append((time.time() - t) * 1e9)
            rtts.sort()
    finally:
        ep.close()
        for s in socks:
            s.close()
    return dict(connections=len(socks), joined=bool(args.idle_join), rooms=args.idle_rooms or 1, open_seconds=t_open,
                connections_per_s=len(socks) / max(1e-9, t_open), rss_before_kib=before, rss_after_kib=after,
                kib_per_connection=(after - before) / len(socks), server_login_cpu_s=sum(c1) - sum(c0),
                probe_p50_ms=pct(rtts, 50), probe_max_ms=pct(rtts, 100))


# ---------------------------------------------------------------- summary tables

def summarize(paths):
    """Markdown tables from RESULT lines: the median over runs, with the (min–max) range."""
    rows, order = {}, []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("RESULT "):
                    line = line[7:]
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                key = r["scenario"]
                if key == "idle":
                    key = "idle%d" % r["connections"]
                elif key == "fanout" and r.get("inflight"):
                    key = "fanout-cl"
                if r["server"] not in rows:
                    order.append(r["server"])
                rows.setdefault(r["server"], {}).setdefault(key, []).append(r)

    def med(rs, key, fmt, scale=1.0, show_range=True):
        vals = [r.get(key) for r in rs]
        vals = [v * scale for v in vals if isinstance(v, (int, float)) and v == v]
        if not vals:
            return "—"
        m = fmt % statistics.median(vals)
        if show_range and len(vals) > 1:
            m += " (%s–%s)" % (fmt % min(vals), fmt % max(vals))
        return m

    def bounds(rs):
        return "/".join(sorted({r["bound"].split(" (")[0] for r in rs})) or "—"

    nruns = max((len(v) for s in rows.values() for v in s.values()), default=0)
    out = ["Median of %d run(s) per cell, (min–max) over runs." % nruns]
    for key, title in (("fanout", "open loop: every sender writes whenever its socket takes more"),
                       ("fanout-cl", "closed loop: at most %s messages per sender sent but not yet delivered")):
        if not any(key in s for s in rows.values()):
            continue
        some = [r for s in rows.values() for r in s.get(key, [])]
        if "%s" in title:
            title %= "/".join(sorted({str(r.get("inflight")) for r in some}))
        title += "; %s messages per sender" % "/".join(sorted({str(r["messages_per_sender"]) for r in some}, key=int))
        out += ["", "Fanout, %s:" % title, "",
                "| server | version | deliveries/s | lost / reordered | server CPU s per 1M deliveries | server CPU %"
                " | generator CPU % | bound |", "|---|---|---|---|---|---|---|---|"]
        for server in order:
            f = rows[server].get(key, [])
            if not f:
                continue
            gen = [dict(g=r["gen_cpu_s"] / r["seconds"]) for r in f]
            out.append("| %s | %s | %s | %d / %d | %s | %s | %s | %s |" % (
                server, f[0].get("version", ""), med(f, "deliveries_per_s", "%.0f"), sum(r.get("lost", 0) for r in f),
                sum(r.get("out_of_order", 0) for r in f), med(f, "server_us_per_delivery", "%.2f"),
                med(f, "server_util", "%.0f", 100), med(gen, "g", "%.0f", 100), bounds(f)))
    if any("latency" in s for s in rows.values()):
        lr0 = next(r for s in rows.values() for r in s.get("latency", []))
        out += ["", "Latency at %.0f messages/s into a room of %d receivers (%d deliveries/s offered):" % (
            lr0["rate"], lr0["receivers"], lr0["rate"] * lr0["receivers"]), "",
            "| server | p50 ms | p99 ms | max ms | lost | achieved deliveries/s | server CPU % | bound |",
            "|---|---|---|---|---|---|---|---|"]
        for server in order:
            lr = rows[server].get("latency", [])
            if not lr:
                continue
            out.append("| %s | %s | %s | %s | %d | %s | %s | %s |" % (
                server, med(lr, "lat_p50_ms", "%.2f"), med(lr, "lat_p99_ms", "%.2f"), med(lr, "lat_max_ms", "%.1f"),
                sum(r["lost"] for r in lr), med(lr, "deliveries_per_s", "%.0f", 1, False),
                med(lr, "server_util", "%.0f", 100), bounds(lr)))
    idle_keys = sorted({k for s in rows.values() for k in s if k.startswith("idle")}, key=lambda k: int(k[4:]))
    if idle_keys:
        out += ["", "Idle registered connections (server RSS from /proc/PID/status, fresh server each time):", "",
                "| server | " + " | ".join("%s idle: KiB per connection | RSS before → after MiB | PING ms" % k[4:]
                                         for k in idle_keys) + " |",
                "|---|" + "---|---|---|" * len(idle_keys)]
        for server in order:
            cells = []
            for k in idle_keys:
                ir = rows[server].get(k, [])
                if not ir:
                    cells += ["—", "—", "—"]
                    continue
                cells += [med(ir, "kib_per_connection", "%.1f"),
                          "%.1f → %.1f" % (statistics.median(r["rss_before_kib"] for r in ir) / 1024,
                                           statistics.median(r["rss_after_kib"] for r in ir) / 1024),
                          med(ir, "probe_p50_ms", "%.2f", 1, False)]
            out.append("| %s | %s |" % (server, " | ".join(cells)))
    return "\n".join(out)


# ---------------------------------------------------------------- command line

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proto", default="irc", choices=sorted(ADAPTERS), help="protocol adapter (default irc)")
    ap.add_argument("--host", default="127.0.0.1", help="server address; must be loopback")
    ap.add_argument("--port", type=int, help="server port")
    ap.add_argument("--password", default="", help="login password (IRC: sent as PASS), if the server needs one")
    ap.add_argument("--room", default="#bench", help="room to join (default #bench)")
    ap.add_argument("--scenario", choices=["fanout", "latency", "idle"])
    g = ap.add_argument_group("fanout / latency")
    g.add_argument("--receivers", type=int, default=100, help="R (default 100)")
    g.add_argument("--senders", type=int, default=10, help="S (default 10)")
    g.add_argument("--messages", type=int, default=2000, help="fanout: M messages per sender (default 2000)")
    g.add_argument("--rate", type=float, default=2000.0, help="latency: messages/s over all senders (default 2000)")
    g.add_argument("--duration", type=float, default=5.0, help="latency: seconds of paced sending (default 5)")
    g.add_argument("--size", type=int, default=100, help="bytes per chat line as sent, framing included (default 100)")
    g.add_argument("--inflight", type=int, default=0,
                   help="fanout: at most this many messages per sender not yet seen delivered (closed loop); 0 = open loop")
    g.add_argument("--sample", type=int, default=-1, help="receivers parsed line by line (default: 2 fanout, 5 latency)")
    g.add_argument("--procs", type=int, default=1, help="bulk receiver processes (default 1)")
    g.add_argument("--coalesce", type=float, default=0.002, help="bulk receivers sleep this long between epoll rounds")
    g.add_argument("--bufsize", type=int, default=1 << 18, help="bytes per recv (default 256 KiB)")
    g.add_argument("--pause", type=float, default=0.3, help="seconds between logins and traffic")
    g.add_argument("--storm", type=int, default=0,
                   help="latency: this many more connections wait at the menu and all log in at once during the traffic")
    g.add_argument("--storm-delay", type=float, default=1.0, help="seconds into the traffic when the storm starts")
    g = ap.add_argument_group("idle")
    g.add_argument("--connections", type=int, default=2000, help="C registered idle connections (default 2000)")
    g.add_argument("--idle-join", action="store_true", help="idle connections also join the room")
    g.add_argument("--idle-connect-only", action="store_true",
                   help="idle connections only wait for the greeting (no login): the cost of a bare connection")
    g.add_argument("--idle-rooms", type=int, default=0,
                   help="with --idle-join: spread the idle connections over this many rooms, named --room + 0..N-1")
    g.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS (default 2)")
    g = ap.add_argument_group("limits and labels")
    g.add_argument("--window", type=int, default=32,
                   help="logins in flight at once (default 32; keep it below the server's listen backlog: "
                        "Twisted's listenTCP default is 50, ngIRCd's is 10)")
    g.add_argument("--nick-prefix", default="", help="prefix for generated nicks (r0.., s0.., i0..)")
    g.add_argument("--server-pid", type=int, default=0, help="server pid, for CPU and RSS figures from /proc")
    g.add_argument("--also-port", type=int, action="append", metavar="PORT",
                   help="another node serving the same room: connections go to --port and each --also-port in turn")
    g.add_argument("--also-pid", type=int, action="append", metavar="PID",
                   help="another node's pid: server CPU is the sum over --server-pid and every --also-pid")
    g.add_argument("--helper-pid", type=int, action="append", metavar="PID",
                   help="a process the nodes share (Redis, PostgreSQL): its CPU is reported apart (helper_cpu_s)")
    g.add_argument("--max-seconds", type=float, default=60.0, help="limit for the traffic phase (default 60)")
    g.add_argument("--login-timeout", type=float, default=60.0, help="limit for each login phase (default 60)")
    g.add_argument("--max-other", type=float, default=0.25,
                   help="flag the result as disturbed (exit 4) if other processes used more than this many cores")
    g.add_argument("--quiet-wait", type=float, default=60.0,
                   help="first wait up to this long for the machine to be idle (<25%% busy); 0 = do not check")
    g.add_argument("--label", default="", help="server name written into the result")
    g.add_argument("--version-string", default="", help="server version written into the result")
    g.add_argument("--run", default="", help="run label written into the result")
    g = ap.add_argument_group("--proto line (see LineAdapter)")
    g.add_argument("--line-login", action="append", metavar="'SEND=>EXPECT'")
    g.add_argument("--line-join", action="append", metavar="'SEND=>EXPECT'")
    g.add_argument("--line-message", metavar="TEMPLATE", help="one chat line, e.g. '{text}' or 'say {room} {text}'")
    g.add_argument("--line-probe", metavar="'SEND=>EXPECT'")
    g.add_argument("--line-fail", metavar="A|B", help="substrings that mean a refusal")
    g.add_argument("--line-end", default="\\n", help="line terminator (default \\n)")
    g.add_argument("--chatd-lf", action="store_true", help="--proto chatd: end chat lines with LF instead of CRLF")
    ap.add_argument("--summarize", nargs="+", metavar="FILE", help="print markdown tables from RESULT lines and exit")
    args = ap.parse_args()
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if args.port is None or args.scenario is None:
        ap.error("--port and --scenario are required")
    try:
        if not socket.inet_aton(socket.gethostbyname(args.host)).startswith(b"\x7f"):
            ap.error("--host must be a loopback address")
    except OSError as e:
        ap.error("--host: %s" % e)
    signal.signal(signal.SIGALRM, _watchdog)
    signal.alarm(int(3 * args.login_timeout + args.max_seconds + args.quiet_wait + 120))
    try:
        if args.server_pid:
            proc_cpu(args.server_pid)
        busy_before = wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else float("nan")
        if busy_before >= 0.25:
            sys.stderr.write("peerbench: warning: the machine was %.0f%% busy before the run (other work?)\n" % (100 * busy_before))
        lo0 = listen_overflows()
        if args.scenario == "idle":
            r = run_idle(args)
            human = ("%s idle: %d connections%s in %.1fs (%.0f/s); server RSS %d -> %d KiB = %.1f KiB/connection; "
                     "probe RTT p50 %.2f ms max %.2f ms") % (
                args.label, r["connections"], " (joined)" if r["joined"] else "", r["open_seconds"],
                r["connections_per_s"], r["rss_before_kib"], r["rss_after_kib"], r["kib_per_connection"],
                r["probe_p50_ms"], r["probe_max_ms"])
        else:
            r = run_traffic(args, paced=args.scenario == "latency")
            human = ("%s %s: %d/%d delivered (lost %d, %d receivers short, %d disconnected; %d reordered, %d gaps on %d "
                     "sampled receivers) in %.2fs = %.0f deliveries/s; latency p50 %.2f p99 %.2f max %.2f ms (n=%d); "
                     "server cpu %.2fs (%.0f%% of a core) = %.2f us/delivery; generator cpu %.2fs [%s]; machine %.0f%% busy; "
                     "bound: %s") % (
                args.label, args.scenario, r["delivered"], r["expected"], r["lost"], r["receivers_short"],
                r["disconnected"], r["out_of_order"], r["gaps"], r["sampled_receivers"], r["seconds"],
                r["deliveries_per_s"], r["lat_p50_ms"], r["lat_p99_ms"], r["lat_max_ms"], r["lat_n"],
                r["server_cpu_s"], 100 * r["server_util"], r["server_us_per_delivery"], r["gen_cpu_s"],
                ", ".join("%s %.0f%%" % (k, 100 * v) for k, v in r["gen_util"].items()), 100 * r["machine_busy"],
                r["bound"]) + ("; other processes %.0f%% of a core" % (100 * r["other_cpu"]))
    except BenchError as e:
        sys.stderr.write("peerbench: error: %s: %s\n" % (args.label or args.scenario, e))
        _kill_children()
        return 2
    signal.alarm(0)
    r["listen_overflows"] = listen_overflows() - lo0
    if r["listen_overflows"]:
        sys.stderr.write("peerbench: warning: %d connection attempts overflowed a listen backlog (SYNs dropped and "
                         "retried after 1 s or more): lower --window below the server's backlog\n" % r["listen_overflows"])
    r.update(server=args.label, version=args.version_string, run=args.run, scenario=args.scenario, port=args.port,
             connections_by_port={str(k): v for k, v in sorted(_connects.items())},
             proto=args.proto, receivers=args.receivers, senders=args.senders, rate=args.rate, procs=args.procs,
             inflight=args.inflight, machine_busy_before=busy_before)
    print(human)
    print("RESULT " + json.dumps(r, sort_keys=True))
    sys.stdout.flush()
    if r.get("disturbed"):
        sys.stderr.write("peerbench: warning: other processes used %.2f cores during the run (%s): result is disturbed\n"
                         % (r["other_cpu"], ", ".join(r["other_top"])))
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
