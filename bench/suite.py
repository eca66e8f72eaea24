"""The benchmark suite: `python -m bench` (see docs/PERFORMANCE.md).

For every scenario and every run it starts a fresh server (chatd with `twistd -n chatd`, default
configuration but a flood limit relaxed like the peers', a temporary data directory, a free 127.0.0.1
port; with --peers also ngIRCd and InspIRCd), drives it with the load generator bench/peerbench.py in
separate processes, stops the server by its PID, and prints a table of medians. Results are kept as JSON
lines in --out.
"""
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from bench import nodes, servers
from bench.servers import PASSWORD, REPO, Server, ServerError

SCENARIOS = ("fanout", "fanout-cl", "latency", "idle", "transfer", "storm", "startup", "web-fanout", "web-fanout-cl",
             "web-idle", "irc-fanout", "irc-latency")
PEER_SCENARIOS = ("fanout", "fanout-cl", "latency", "idle")
PEERS = ("ngircd", "inspircd")
# chatd's IRC front-end beside the IRC peer it is compared with, in the same run (with or without --peers)
IRC_SCENARIOS = {"irc-fanout": "fanout", "irc-latency": "latency"}
IRC_PEER = "ngircd"
IRC_ROOM_OWNER = "benchowner"  # the room's owner: the only account, so every member's nick is free for a guest
P99_LIMIT_MS = 10.0


def profile(quick):
    """Sizes of every scenario: the full suite, or a seconds-long smoke version (--quick)."""
    if quick:
        return dict(receivers=10, senders=2, messages=200, inflight=50, rates=[200, 400], max_rate=400,
                    lat_seconds=1.0, idle=200, idle_rooms=10, storm=10, storm_rate=200, storm_seconds=2.0,
                    storm_delay=0.5, refine=0, startup_users=10000, startup_rooms=100, transfer_bytes=1 << 20,
                    transfer_recipients=2, quiet_wait=0, max_seconds=20, login_timeout=15)
    return dict(receivers=100, senders=10, messages=2000, inflight=50, rates=[500, 1000, 2000, 4000, 8000],
                max_rate=64000, lat_seconds=5.0, idle=10000, idle_rooms=100, storm=200, storm_rate=2000,
                storm_seconds=12.0, storm_delay=1.0, refine=2, startup_users=1000000, startup_rooms=10000,
                transfer_bytes=1 << 30, transfer_recipients=10, quiet_wait=20, max_seconds=60, login_timeout=60)


class Suite:
    def __init__(self, args):
        self.args = args
        self.p = profile(args.quick)
        if args.lat_seconds:
            self.p["lat_seconds"] = args.lat_seconds
        if args.idle:
            self.p["idle"] = args.idle
        if args.transfer_mib:
            self.p["transfer_bytes"] = args.transfer_mib << 20
        if args.refine is not None:
            self.p["refine"] = args.refine
        if args.max_rate:
            self.p["max_rate"] = args.max_rate
        if args.quiet_wait is not None:
            self.p["quiet_wait"] = args.quiet_wait
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.results_path = os.path.join(self.out, "results.jsonl")
        self.work = tempfile.mkdtemp(prefix="chatd-bench-")
        self.results = []
        self.failures = []
        self.versions = {}

    def log(self, msg):
        sys.stderr.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    def record(self, r):
        self.results.append(r)
        with open(self.results_path, "a") as f:
            f.write(json.dumps(r, sort_keys=True) + "\n")

    # ------------------------------------------------------------ servers

    def server(self, kind, tag, users=(), rooms=(), default_cost_users=(), web=False, irc=False):
        d = os.path.join(self.work, "%s-%s" % (kind, tag))
        shutil.rmtree(d, ignore_errors=True)
        srv = Server(kind, d)
        if web:
            srv.web_port = servers.free_port()  # the generator speaks to --listen-web (bench/webproto.py)
        if irc and kind == "chatd":
            srv.irc_port = servers.free_port()  # the generator speaks IRC to --listen-irc, as guests
        if kind == "chatd":
            # The default flood limit (5 lines/s) would throttle the load generator's senders; like the
            # peers (bench/conf: relaxed flood protection) chatd is measured flat out. A huge rate and
            # burst rather than --flood-rate 0, which removes the token bucket: it still runs on every line.
            srv.extra = ["--flood-rate", "1e9", "--flood-burst", "1000000000"]
            if not default_cost_users:
                # The accounts share a cheap hash (bench/servers.py); a login whose stored hash has other
                # parameters than the server's is rehashed and saved (docs/PROTOCOL.md, "Login"), which
                # would add a default-cost hash and an fsync to every login of the scenario. So the server
                # hashes with the accounts' parameters. The storm keeps the defaults: it measures them.
                srv.extra += ["--hash-time-cost", str(servers.CHEAP_HASH["time_cost"]),
                              "--hash-memory-kib", str(servers.CHEAP_HASH["memory_cost"])]
            srv.extra += list(self.args.chatd_arg or [])
            servers.write_data_dir(srv.data_dir, users=users, rooms=rooms, default_cost_users=default_cost_users)
        return srv

    def room_users(self):
        R, S = self.p["receivers"], self.p["senders"]
        return ["r%d" % i for i in range(R)] + ["s%d" % i for i in range(S)]

    def gen_args(self, kind, web=False, irc=False):
        """peerbench arguments that depend on the server (web, irc: chatd's browser or IRC front-end)."""
        if web:
            return ["--proto", "chatd-web", "--password", PASSWORD, "--window", "32"]
        if irc and kind == "chatd":
            return ["--proto", "irc", "--window", "32"]  # guests (--irc-guests): no PASS, the nick is the name
        if kind == "chatd":
            # Twisted's listenTCP backlog is 50 unless the endpoint says otherwise: stay below it
            return ["--proto", "chatd", "--password", PASSWORD, "--window", "32"] + (["--chatd-lf"] if self.args.lf else [])
        if kind == "ngircd":
            return ["--proto", "irc", "--window", "8"]   # ngIRCd's listen backlog is hard-coded to 10
        if kind == "inspircd":
            return ["--proto", "irc", "--window", "1000"]  # registrations complete on a 1-second timer
        raise ValueError(kind)

    def room(self, kind, name, irc=False):
        return name if kind == "chatd" and not irc else "#" + name

    def peerbench(self, srv, run, extra, timeout):
        """Run one peerbench measurement against srv (its web port if it has one); return its RESULT dict
        (or raise ServerError)."""
        cmd = [sys.executable, "-m", "bench.peerbench", "--port", str(srv.web_port or srv.irc_port or srv.port), "--server-pid", str(srv.pid),
               "--label", srv.kind, "--version-string", self.versions.get(srv.kind, ""), "--run", str(run),
               "--quiet-wait", str(self.p["quiet_wait"]), "--max-seconds", str(self.p["max_seconds"]),
               "--login-timeout", str(self.p["login_timeout"])] + self.gen_args(srv.kind, bool(srv.web_port), bool(srv.irc_port)) + extra
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
        except subprocess.TimeoutExpired:
            raise ServerError("generator did not finish within %d s" % timeout)
        res = [json.loads(line[7:]) for line in p.stdout.splitlines() if line.startswith("RESULT ")]
        for line in p.stdout.splitlines():
            if not line.startswith("RESULT "):
                self.log("  " + line)
        for line in p.stderr.strip().splitlines()[-5:]:
            self.log("  " + line)
        if p.returncode not in (0, 4) or not res:
            raise ServerError("generator exit %d: %s" % (p.returncode, (p.stderr.strip().splitlines() or ["?"])[-1]))
        r = res[0]
        r["disturbed"] = p.returncode == 4
        return r

    def measure(self, kind, scenario, run, extra, tag, users=(), rooms=(), default_cost_users=(), timeout=600,
                web=False, irc=False, **fields):
        """Fresh server, one peerbench measurement (repeated up to 3 times if disturbed), server stopped.
        web: the generator connects to the server's browser front-end (--listen-web) instead; irc: to its IRC
        front-end (--listen-irc, --irc-guests)."""
        tries = self.args.tries or (1 if (self.args.quick or self.args.profile) else 3)
        for attempt in range(1, tries + 1):
            srv = self.server(kind, tag, users, rooms, default_cost_users, web, irc)
            prof = None
            try:
                srv.start()
                time.sleep(0.3)
                prof = self.start_profiler(srv, tag, run)
                r = self.peerbench(srv, run, extra, timeout)
            except ServerError as e:
                alive = srv.proc is not None and srv.proc.poll() is None
                raise ServerError("%s%s; server log: %s" % (e, "" if alive else " (the server process had exited)",
                                                            srv.log_tail()))
            finally:
                self.stop_profiler(prof)
                srv.stop()
            if r.get("disturbed") and attempt < tries:
                self.log("  disturbed by other work on the machine (%s); measuring again" % ", ".join(r.get("other_top", [])))
                time.sleep(3)
                continue
            r.update(fields)
            r["bench_scenario"] = scenario
            r["server"] = kind
            r["run"] = run
            return r

    def start_profiler(self, srv, tag, run):
        """--profile: sample chatd with py-spy during the measurement (collapsed stacks in --out)."""
        if not self.args.profile or srv.kind != "chatd":
            return None
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        if not os.path.exists(exe):
            raise ServerError("--profile needs py-spy (pip install py-spy)")
        path = os.path.join(self.out, "profile-%s-run%d.txt" % (tag, run))
        proc = subprocess.Popen([exe, "record", "--pid", str(srv.pid), "--format", "raw", "--rate", "200",
                                 "--output", path, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return proc

    def stop_profiler(self, proc):
        if proc is None:
            return
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # ------------------------------------------------------------ scenarios

    def bench_room(self, kind, irc):
        """(users, rooms) of the data directory for the fanout and latency room. IRC members of chatd are
        guests, so no member has an account (an account's name is no guest's nick)."""
        if irc and kind == "chatd":
            return [IRC_ROOM_OWNER], [("bench", IRC_ROOM_OWNER)]
        return self.room_users(), [("bench", "s0")]

    def run_fanout(self, kind, run, closed, web=False, irc=False):
        """fanout / fanout-cl; web, irc: the same room, sizes and method, all members browser (WebSocket) or
        IRC users (irc-fanout: open loop)."""
        p = self.p
        name = ("web-" if web else "irc-" if irc else "") + ("fanout-cl" if closed else "fanout")
        extra = ["--scenario", "fanout", "--receivers", str(p["receivers"]), "--senders", str(p["senders"]),
                 "--messages", str(p["messages"]), "--room", self.room(kind, "bench", irc)]
        if closed:
            extra += ["--inflight", str(p["inflight"])]
        users, rooms = self.bench_room(kind, irc)
        return self.measure(kind, name, run, extra, name, users=users, rooms=rooms, web=web, irc=irc)

    def run_latency_point(self, kind, run, rate, irc=False):
        p = self.p
        name = "irc-latency" if irc else "latency"
        extra = ["--scenario", "latency", "--receivers", str(p["receivers"]), "--senders", str(p["senders"]),
                 "--rate", str(rate), "--duration", str(p["lat_seconds"]), "--room", self.room(kind, "bench", irc)]
        users, rooms = self.bench_room(kind, irc)
        return self.measure(kind, name, run, extra, "%s-%d" % (name, rate), users=users, rooms=rooms, irc=irc,
                            bench_rate=rate)

    def run_latency(self, kind, run, irc=False):
        """Paced rates from the list, then doubling, until p99 passes the limit (or the server falls behind);
        then up to --refine bisection steps between the last rate that held and the first that did not."""
        rates = list(self.p["rates"])
        out = []

        def point(rate):
            try:
                r = self.run_latency_point(kind, run, rate, irc)
            except ServerError as e:
                self.log("  %s latency at %d/s: %s" % (kind, rate, e))
                r = dict(server=kind, run=run, bench_scenario="irc-latency" if irc else "latency", bench_rate=rate,
                         error=str(e))
            self.record(r)
            out.append(r)
            self.log("  %s %d lines/s: p50 %.2f p99 %.2f max %.1f ms; lost %s; server %.0f%%; %s" % (
                kind, rate, r.get("lat_p50_ms", math.nan), r.get("lat_p99_ms", math.nan), r.get("lat_max_ms", math.nan),
                r.get("lost", "?"), 100 * r.get("server_util", math.nan), r.get("bound", r.get("error", ""))))
            return point_ok(r)

        i, good, bad = 0, 0, 0
        while i < len(rates) and len(out) < 20:
            rate = rates[i]
            ok = point(rate)
            if ok:
                good = rate
                if i == len(rates) - 1 and rate * 2 <= self.p["max_rate"]:
                    rates.append(rate * 2)
            else:
                bad = rate
                break
            i += 1
        for _ in range(self.p.get("refine", 0)):
            if not (good and bad) or bad - good < 250:
                break
            mid = int(round((good + bad) / 2 / 250.0)) * 250
            if mid in (good, bad):
                break
            if point(mid):
                good = mid
            else:
                bad = mid
        return out

    def run_idle(self, kind, run, web=False):
        """idle; web: the same connections as browser (WebSocket) users."""
        p = self.p
        C, N = p["idle"], p["idle_rooms"]
        extra = ["--scenario", "idle", "--connections", str(C), "--idle-join", "--idle-rooms", str(N),
                 "--room", self.room(kind, "idle")]
        name = "web-idle" if web else "idle"
        return self.measure(kind, name, run, extra, name, users=["i%d" % k for k in range(C)],
                            rooms=[("idle%d" % k, "i%d" % k) for k in range(N)], timeout=900, web=web)

    def run_storm(self, run):
        p = self.p
        extra = ["--scenario", "latency", "--receivers", str(p["receivers"]), "--senders", str(p["senders"]),
                 "--rate", str(p["storm_rate"]), "--duration", str(p["storm_seconds"]), "--storm", str(p["storm"]),
                 "--storm-delay", str(p["storm_delay"]), "--room", "bench"]
        return self.measure("chatd", "storm", run, extra, "storm", users=self.room_users(), rooms=[("bench", "s0")],
                            default_cost_users=["st%d" % i for i in range(p["storm"])])

    def run_startup(self, run):
        """Time until the port accepts and until a login works, with many users and rooms in the CSV files."""
        p = self.p
        U, N = p["startup_users"], p["startup_rooms"]
        t = time.time()
        srv = self.server("chatd", "startup", users=["u%d" % k for k in range(U)],
                          rooms=[("room%d" % k, "u%d" % k) for k in range(N)])
        write_s = time.time() - t
        size = sum(os.path.getsize(os.path.join(srv.data_dir, f)) for f in ("users.csv", "rooms.csv"))
        try:
            srv.start(timeout=300)
            listen_s = srv.listen_seconds
            login_s = self.first_login(srv, "u%d" % (U - 1), deadline=srv.started_at + 300) - srv.started_at
            rss = srv.rss_kib()
            cpu = srv.cpu_seconds()
        finally:
            srv.stop()
        return dict(server="chatd", run=run, bench_scenario="startup", users=U, rooms=N, csv_bytes=size,
                    write_seconds=write_s, listen_seconds=listen_s, first_login_seconds=login_s, rss_kib=rss,
                    server_cpu_s=cpu, version=self.versions.get("chatd", ""))

    def first_login(self, srv, name, deadline):
        """Connect, log in as `name`; return the time.time() at which 'Logged in as' arrived."""
        with socket.create_connection(("127.0.0.1", srv.port), timeout=max(1.0, deadline - time.time())) as s:
            buf = b""
            for send, expect in ((b"", b"menu> "), (b"login %s\r\n" % name.encode(), b"Password:"),
                                 (PASSWORD.encode() + b"\r\n", b"Logged in as")):
                if send:
                    s.sendall(send)
                buf = b""
                while expect not in buf:
                    if time.time() > deadline:
                        raise ServerError("login as %s did not complete; got %r" % (name, buf[-200:]))
                    s.settimeout(max(0.1, deadline - time.time()))
                    data = s.recv(65536)
                    if not data:
                        raise ServerError("server closed the connection during login; got %r" % buf[-200:])
                    buf += data
                    if b"Login failed" in buf or b"Error:" in buf:
                        raise ServerError("login as %s refused: %r" % (name, buf[-200:]))
            return time.time()

    def run_transfer(self, run):
        """A file to N recipients (issue 3's /send); skipped cleanly while the server does not offer /send."""
        from bench import transfer
        p = self.p
        size, n = p["transfer_bytes"], p["transfer_recipients"]
        srv = self.server("chatd", "transfer", users=["f%d" % i for i in range(n + 1)], rooms=[("files", "f0")])
        # besides the relaxed flood limit, the only non-default option: the default --max-file-size (100 MiB)
        # refuses a 1 GiB file
        srv.extra += ["--max-file-size", str(size + (1 << 20))]
        try:
            try:
                srv.start()
            except ServerError:
                if "max-file-size" in srv.log_tail(20):
                    return dict(server="chatd", run=run, bench_scenario="transfer", skipped=(
                        "the server has no --max-file-size option, so no file transfer yet (issue 3)"))
                raise
            if not self.has_command(srv, "f0", "files", b"/send"):
                return dict(server="chatd", run=run, bench_scenario="transfer", skipped=(
                    "the server does not offer /send yet (file transfer, issue 3): /help in a room does not list it"))
            prof = self.start_profiler(srv, "transfer", run)
            try:
                r = transfer.run(srv.port, srv.pid, size, n, timeout=900)
            except transfer.TransferError as e:
                raise ServerError("file transfer: %s; server log: %s" % (e, srv.log_tail()))
            finally:
                self.stop_profiler(prof)
        finally:
            srv.stop()
        r.update(server="chatd", run=run, bench_scenario="transfer", version=self.versions.get("chatd", ""))
        self.log("  %d MiB to %d recipients: upload %.1f s (%.0f MB/s); per recipient median %.0f MB/s (min %.0f); "
                 "server peak RSS +%.1f MiB; sha256 %s" % (
                     size >> 20, n, r["upload_seconds"], r["upload_mb_per_s"], r["mb_per_s_per_recipient"],
                     r["mb_per_s_min"], r["peak_rss_growth_mib"], "ok" if r["sha_ok"] else "WRONG"))
        return r

    def has_command(self, srv, user, room, word):
        deadline = time.time() + 20
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
            for send, expect in ((b"", b"menu> "), (b"login %s\r\n" % user.encode(), b"Password:"),
                                 (PASSWORD.encode() + b"\r\n", b"Logged in as"), (b"join %s\r\n" % room.encode(), b"Entered room"),
                                 (b"/help\r\n", b"/exit")):
                if send:
                    s.sendall(send)
                buf = b""
                while expect not in buf:
                    if time.time() > deadline:
                        raise ServerError("no %r from the server; got %r" % (expect, buf[-200:]))
                    data = s.recv(65536)
                    if not data:
                        raise ServerError("server closed the connection; got %r" % buf[-200:])
                    buf += data
            time.sleep(0.2)
            s.settimeout(0.5)
            try:
                buf += s.recv(65536)
            except OSError:
                pass
            return word in buf

    # ------------------------------------------------------------ the whole suite

    def run(self):
        a = self.args
        scenarios = a.scenarios
        ok, why = servers.chatd_available()
        if not ok:
            raise ServerError("cannot run chatd: " + why)
        kinds = ["chatd"]
        irc_peer = False
        if any(sc in IRC_SCENARIOS for sc in scenarios):
            irc_peer = servers.ensure_peer(IRC_PEER, install=not a.no_install, log=self.log)
            if not irc_peer:
                self.log("irc-* scenarios: %s is not installed; chatd's IRC members are measured alone" % IRC_PEER)
        if a.peers:
            for peer in PEERS:
                if servers.ensure_peer(peer, install=not a.no_install, log=self.log):
                    kinds.append(peer)
                else:
                    self.log("skipping %s: not installed" % peer)
        self.versions["chatd"] = servers.chatd_version()
        for k in kinds[1:] + ([IRC_PEER] if irc_peer else []):
            self.versions[k] = servers.peer_version(k)
        meta = dict(bench_scenario="meta", date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    machine=machine(), versions=self.versions, quick=bool(a.quick), runs=a.runs, sizes=self.p,
                    chatd_args=list(a.chatd_arg or []) + (["(senders end lines with LF, not CRLF)"] if a.lf else []))
        self.record(meta)
        for k, v in self.versions.items():
            self.log("%s: %s" % (k, v))
        self.log("machine: %s" % meta["machine"])
        for run in range(1, a.runs + 1):
            for sc in scenarios:
                for kind in (["chatd"] + [IRC_PEER] * irc_peer if sc in IRC_SCENARIOS else
                             nodes.KINDS if sc in nodes.SCENARIOS else kinds):
                    if kind != "chatd" and sc not in PEER_SCENARIOS and sc not in IRC_SCENARIOS and sc not in nodes.SCENARIOS:
                        continue
                    self.log("run %d/%d  %s  %s" % (run, a.runs, kind, sc))
                    try:
                        if sc in ("fanout", "fanout-cl", "web-fanout", "web-fanout-cl"):
                            r = self.run_fanout(kind, run, sc.endswith("-cl"), web=sc.startswith("web-"))
                        elif sc in ("latency", "irc-latency"):
                            self.run_latency(kind, run, irc=sc == "irc-latency")  # records each point itself
                            continue
                        elif sc in nodes.SCENARIOS:
                            r = nodes.measure(self, kind, sc, run)
                        elif sc == "irc-fanout":
                            r = self.run_fanout(kind, run, False, irc=True)
                        elif sc in ("idle", "web-idle"):
                            r = self.run_idle(kind, run, web=sc == "web-idle")
                        elif sc == "storm":
                            r = self.run_storm(run)
                        elif sc == "startup":
                            r = self.run_startup(run)
                        elif sc == "transfer":
                            r = self.run_transfer(run)
                        else:
                            raise ServerError("unknown scenario %s" % sc)
                    except ServerError as e:
                        self.log("  FAILED: %s" % e)
                        r = dict(server=kind, run=run, bench_scenario=sc, error=str(e))
                        self.failures.append("%s %s run %d: %s" % (kind, sc, run, e))
                    self.record(r)
                    if r.get("skipped"):
                        self.log("  skipped: %s" % r["skipped"])
                    elif sc == "startup" and "error" not in r:
                        self.log("  %d users, %d rooms: listening after %.2f s, first login after %.2f s, RSS %.0f MiB" % (
                            r["users"], r["rooms"], r["listen_seconds"], r["first_login_seconds"], r["rss_kib"] / 1024))
        shutil.rmtree(self.work, ignore_errors=True)
        return self.results


def point_ok(r):
    """A latency point holds if it ran, lost nothing, kept the pace and had p99 within the limit."""
    return ("error" not in r and r.get("lost", 1) == 0 and r.get("lat_p99_ms", math.inf) <= P99_LIMIT_MS
            and not str(r.get("bound", "")).startswith("server (fell behind"))


def machine():
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return "%d vCPU (%s), %d GiB, Linux %s, CPython %s" % (os.cpu_count() or 0, model, mem, platform.release(),
                                                         platform.python_version())
