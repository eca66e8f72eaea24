"""Issue 17 scenarios of `python -m bench`: one room over two chatd nodes (docs/PERFORMANCE.md, "Issue 17: one
room over two nodes").

nodes-fanout and nodes-latency measure the fanout and latency scenarios' room (R receivers and S senders) and
load (fanout: M lines per sender, open loop; latency: paced at 2,000 lines/s, --quick 400) on three setups in
the same run:

- ``chatd``: the single process on the CSV store (the reference; the same measurement as ``fanout`` and one
  point of ``latency``);
- ``chatd-1node``: one node with ``--bus redis://... --store postgresql://...``, all members on it;
- ``chatd-2nodes``: two nodes on the same Redis and PostgreSQL, the members split evenly (peerbench
  ``--also-port``: connection k of each batch goes to node k mod 2, so half of the receivers and half of the
  senders are on each); server CPU is both nodes' summed (``--also-pid``), Redis's and PostgreSQL's apart
  (``helper_cpu_s``: redis-server and the postmaster; PostgreSQL's backends are not counted).

Each measurement gets a private redis-server and PostgreSQL cluster (the tests' tests/redis.py and tests/pg.py:
temporary directories, free 127.0.0.1 ports, stopped by PID), a fresh database filled from the scenario's CSV
data directory with ``chatd-admin migrate-to-postgres``, and nodes started on it; a node takes members once its
log says it reads the stream (docs/OPERATIONS.md, "Several nodes").
"""
import importlib
import os
import subprocess
import sys
import time

from bench import servers
from bench.servers import REPO, ServerError

SCENARIOS = {"nodes-fanout": "fanout", "nodes-latency": "latency"}
KINDS = ("chatd", "chatd-1node", "chatd-2nodes")
READY = "bus: Redis stream"  # a node's log line once it reads the stream (chatd/buses/redis.py)


def _tests_module(name):
    """tests/NAME.py, imported as bench/redis_bus.py and bench/postgres_store.py do (tests/ on sys.path)."""
    tests = os.path.join(REPO, "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module(name)


def available():
    """(True, '') if redis-server, PostgreSQL and psycopg are here, else (False, why)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False, "psycopg is not installed (pip install '.[postgres]')"
    if _tests_module("redis").SERVER is None:
        return False, "redis-server is not installed (Debian: apt-get install redis-server)"
    if _tests_module("pg").binaries() is None:
        return False, "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    return True, ""


def load(suite, base):
    """peerbench arguments of the scenario's load (base: 'fanout' or 'latency') and the latency rate."""
    p = suite.p
    extra = ["--scenario", base, "--receivers", str(p["receivers"]), "--senders", str(p["senders"]),
             "--room", "bench"]
    if base == "fanout":
        return extra + ["--messages", str(p["messages"])], None
    rate = 400 if suite.args.quick else 2000
    return extra + ["--rate", str(rate), "--duration", str(p["lat_seconds"])], rate


def wait_ready(srv, deadline):
    while time.time() < deadline:
        if srv.proc.poll() is not None:
            raise ServerError("node exited with status %s: %s" % (srv.proc.returncode, srv.log_tail()))
        try:
            with open(srv.log_path, errors="replace") as f:
                if READY in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise ServerError("node on port %d did not read the bus within the limit: %s" % (srv.port, srv.log_tail()))


def measure_nodes(suite, count, scenario, run, extra, tag):
    """One measurement on `count` nodes sharing a fresh Redis and PostgreSQL; returns peerbench's result."""
    pg, rd = _tests_module("pg"), _tests_module("redis")
    redis = rd.RedisServer()
    cluster = pg.Cluster(pg.binaries(), settings=())  # PostgreSQL's defaults: durable commits
    nodes = []
    try:
        redis.start()
        cluster.start()
        dsn = cluster.create_database()
        for k in range(count):
            users, rooms = suite.bench_room("chatd", False) if k == 0 else ((), ())
            srv = suite.server("chatd", "%s-%s" % (tag, "ab"[k]), users, rooms)
            srv.extra += ["--store", dsn, "--bus", redis.url, "--node-name", "ab"[k]]
            nodes.append(srv)
        admin = os.path.join(os.path.dirname(sys.executable), "chatd-admin")
        cmd = [admin] if os.path.exists(admin) else [sys.executable, "-m", "chatd.admin_tool"]
        p = subprocess.run(cmd + ["--data-dir", nodes[0].data_dir, "migrate-to-postgres", dsn], capture_output=True,
                           text=True, timeout=120, env=servers.src_env(), cwd=REPO)
        if p.returncode != 0:
            raise ServerError("migrate-to-postgres: %s" % (p.stderr.strip() or p.stdout.strip()))
        for srv in nodes:
            srv.start()
            wait_ready(srv, time.time() + 60)
        more = []
        for srv in nodes[1:]:
            more += ["--also-port", str(srv.port), "--also-pid", str(srv.pid)]
        more += ["--helper-pid", str(redis.process.pid), "--helper-pid", str(cluster.process.pid)]
        try:
            r = suite.peerbench(nodes[0], run, extra + more, 600)
        except ServerError as e:
            raise ServerError("%s; node logs: %s" % (e, " | ".join(s.log_tail() for s in nodes)))
        r["nodes"] = count
        return r
    finally:
        for srv in nodes:
            srv.stop()
        redis.stop()
        cluster.remove()


def measure(suite, kind, scenario, run):
    """The scenario (nodes-fanout, nodes-latency) on one setup of KINDS; returns the result to record."""
    base = SCENARIOS[scenario]
    extra, rate = load(suite, base)
    tag = "%s-%s" % (scenario, kind)
    if kind == "chatd":
        users, rooms = suite.bench_room("chatd", False)
        r = suite.measure("chatd", scenario, run, extra, tag, users=users, rooms=rooms)
        r["nodes"] = 0  # no bus, CSV store
    else:
        ok, why = available()
        if not ok:
            return dict(server=kind, run=run, bench_scenario=scenario, skipped=why)
        tries = suite.args.tries or (1 if suite.args.quick else 3)
        for attempt in range(1, tries + 1):
            r = measure_nodes(suite, 2 if kind == "chatd-2nodes" else 1, scenario, run, extra, tag)
            if not r.get("disturbed") or attempt == tries:
                break
            suite.log("  disturbed by other work on the machine (%s); measuring again"
                      % ", ".join(r.get("other_top", [])))
    r.update(bench_scenario=scenario, server=kind, run=run)
    if rate:
        r["bench_rate"] = rate
    return r
