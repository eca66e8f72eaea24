"""Start and stop the servers under test: chatd (the real daemon, ``twistd -n chatd``), ngIRCd and InspIRCd.

Every server listens on 127.0.0.1 only, on a free port, in its own temporary directory, and is stopped by
the PID of the process this module started (SIGTERM, then SIGKILL after a bounded wait).

chatd needs accounts before a client can log in. Registering through the server would hash every password
with argon2id (tens of ms of CPU each), so the bench writes ``users.csv`` and ``rooms.csv`` into the data
directory before the server starts (rows ``name,hash,created`` and ``name,owner,created``, no header). All
bench users share ONE argon2id hash of the bench password: argon2 reads its cost parameters from the hash
string, so a cheap hash (time_cost=1, memory_cost=8 KiB) keeps logins cheap while the server itself runs its
default configuration. The login storm instead uses a hash made with the server's default cost, so that
each of its logins costs what a real login costs.
"""
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CREATED = "2026-11-24T10:00:00Z"
PASSWORD = "benchpass"

# chatd's defaults for new hashes (chatd/tap.py: --hash-time-cost, --hash-memory-kib; parallelism 1)
DEFAULT_HASH = dict(time_cost=2, memory_cost=19456, parallelism=1)
CHEAP_HASH = dict(time_cost=1, memory_cost=8, parallelism=1)


class ServerError(Exception):
    pass


class PortTaken(ServerError):
    """Another program bound a port picked for the server (between free_port() and the server's bind)."""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def accepts(port, timeout=0.2):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


_hash_cache = {}


def password_hash(cost):
    """One argon2id hash of PASSWORD with the given cost parameters (computed once per process)."""
    key = tuple(sorted(cost.items()))
    if key not in _hash_cache:
        from argon2 import PasswordHasher, Type
        _hash_cache[key] = PasswordHasher(type=Type.ID, **cost).hash(PASSWORD)
    return _hash_cache[key]


def _quoted(value):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()


def write_data_dir(path, users=(), rooms=(), default_cost_users=()):
    """Write users.csv and rooms.csv for chatd into a new data directory (mode 0700).

    users: names sharing the cheap hash; default_cost_users: names sharing a default-cost hash;
    rooms: (name, owner) pairs. Names are bench-generated (letters, digits), so they need no quoting;
    the hash (which contains commas) is quoted once with the csv module.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    chunk = 100000
    with open(os.path.join(path, "users.csv"), "w", newline="") as f:
        f.write("#chatd-users,2.0,name,password_hash,created\n")  # the versioned header (docs/OPERATIONS.md)
        for names, cost in ((users, CHEAP_HASH), (default_cost_users, DEFAULT_HASH)):
            tail = ",%s,%s\n" % (_quoted(password_hash(cost)), CREATED)
            names = list(names) if not isinstance(names, (list, range)) else names
            for i in range(0, len(names), chunk):
                f.write("".join(n + tail for n in names[i:i + chunk]))
    with open(os.path.join(path, "rooms.csv"), "w", newline="") as f:
        f.write("#chatd-rooms,2.0,name,owner,created\n")
        f.write("".join("%s,%s,%s\n" % (r, o, CREATED) for r, o in rooms))


def twistd_command():
    exe = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("twistd")
    if found:
        return [found]
    raise ServerError("twistd not found beside %s or on PATH (pip install twisted)" % sys.executable)


def src_env():
    """Environment that makes the source tree's chatd and twisted/plugins importable (a fresh clone works)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def chatd_available():
    """(True, '') if `twistd chatd` can be run from here, else (False, reason)."""
    try:
        cmd = twistd_command()
    except ServerError as e:
        return False, str(e)
    try:
        p = subprocess.run(cmd + ["chatd", "--help"], capture_output=True, text=True, timeout=60, env=src_env(),
                           cwd=REPO)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, "twistd chatd --help failed: %s" % e
    if p.returncode != 0 or "data-dir" not in p.stdout:
        return False, "twistd has no working chatd plugin yet: %s" % (p.stderr.strip().splitlines() or ["?"])[-1]
    return True, ""


def chatd_version():
    p = subprocess.run([sys.executable, "-c", "import chatd, twisted, platform; print('chatd %s (Twisted %s, CPython %s)'"
                        " % (chatd.__version__, twisted.__version__, platform.python_version()))"],
                       capture_output=True, text=True, timeout=60, env=src_env(), cwd=REPO)
    return p.stdout.strip() or "chatd (version unknown)"


def peer_version(name):
    try:
        if name == "ngircd":
            out = subprocess.run(["ngircd", "--version"], capture_output=True, text=True, timeout=10).stdout
            return out.splitlines()[0].split("-")[0] if out else "ngIRCd ?"
        if name == "inspircd":
            out = subprocess.run(["inspircd", "--version"], capture_output=True, text=True, timeout=10).stdout
            return out.strip().splitlines()[0] if out.strip() else "InspIRCd ?"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        pass
    return name + " ?"


_apt_updated = [False]


def ensure_peer(name, install=True, log=print):
    """True if the peer's binary is present (installing the Debian package first if allowed)."""
    if shutil.which(name) or os.path.exists("/usr/sbin/" + name):
        return True
    if not install:
        log("%s is not installed (apt-get install %s)" % (name, name))
        return False
    if os.geteuid() != 0:
        log("%s is not installed and this is not root: run apt-get install %s" % (name, name))
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        if not _apt_updated[0]:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300, env=env)
            _apt_updated[0] = True
        p = subprocess.run(["apt-get", "install", "-y", "-qq", name], capture_output=True, text=True, timeout=600, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        log("could not install %s: %s" % (name, e))
        return False
    if p.returncode != 0:
        log("could not install %s: %s" % (name, p.stderr.strip()[-300:]))
        return False
    return bool(shutil.which(name) or os.path.exists("/usr/sbin/" + name))


def _listener_pid(port):
    """PID of the process listening on 127.0.0.1:port (from ss), or 0."""
    try:
        out = subprocess.run(["ss", "-Hltnp", "sport = :%d" % port], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    for part in out.split("pid=")[1:]:
        digits = part.split(",")[0]
        if digits.isdigit():
            return int(digits)
    return 0


def _parent_pid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class Server:
    """One server process under test. kind: 'chatd', 'ngircd' or 'inspircd'."""

    def __init__(self, kind, workdir, port=None, data_ready=None):
        self.kind = kind
        self.dir = workdir
        self.port = port or free_port()
        self.own_ports = port is None  # picked here (free_port): start() may pick others if one is taken meanwhile
        self.proc = None
        self.pid = 0
        self.started_at = 0.0
        self.listen_seconds = float("nan")
        self.log_path = os.path.join(workdir, "server.log")
        os.makedirs(workdir, exist_ok=True)
        self.data_dir = os.path.join(workdir, "data")
        self.extra = []  # extra chatd options: the relaxed flood limit (like the peers'), and the file-size limit for the transfer scenario
        self.web_port = 0  # chatd: also --listen-web on this port (the browser front-end's scenarios)
        self.irc_port = 0  # chatd: also --listen-irc on this port with --irc-guests (the irc-* scenarios)

    def _render(self, template, target):
        with open(os.path.join(HERE, "conf", template)) as f:
            text = f.read().replace("@PORT@", str(self.port)).replace("@RUNDIR@", self.dir)
        with open(target, "w") as f:
            f.write(text)

    def command(self):
        if self.kind == "chatd":
            web = ["--listen-web", "tcp:%d:interface=127.0.0.1" % self.web_port if self.web_port else "none"]
            irc = ["--listen-irc", "tcp:%d:interface=127.0.0.1" % self.irc_port, "--irc-guests"] if self.irc_port else []
            return twistd_command() + ["-n", "--pidfile=", "--logfile", self.log_path, "chatd",
                                       "--listen", "tcp:%d:interface=127.0.0.1" % self.port, "--data-dir", self.data_dir] + web + irc + self.extra
        if self.kind == "ngircd":
            os.chmod(self.dir, 0o777)  # ngircd drops to nobody and writes its pid file here
            os.makedirs(os.path.join(self.dir, "conf.d"), exist_ok=True)
            self._render("ngircd.conf", os.path.join(self.dir, "ngircd.conf"))
            return ["ngircd", "-n", "-f", os.path.join(self.dir, "ngircd.conf")]
        if self.kind == "inspircd":
            self._render("inspircd.conf", os.path.join(self.dir, "inspircd.conf"))
            return ["inspircd", "--config", os.path.join(self.dir, "inspircd.conf"), "--nofork", "--runasroot"]
        raise ServerError("unknown server kind %r" % self.kind)

    #: Starts tried when a port picked by free_port() is taken before the server binds it (another program's).
    PORT_ATTEMPTS = 4

    def start(self, timeout=60.0):
        """
        Start the server and wait (at most `timeout` s per attempt) until its port (and web and IRC ports)
        accept connections. A port picked by free_port() is only free when picked: if another program binds
        it first, the server is stopped and started again on fresh ports (at most PORT_ATTEMPTS starts;
        never with a port the caller gave). Raises ServerError.
        """
        for attempt in range(1, self.PORT_ATTEMPTS + 1):
            try:
                return self._start_once(timeout)
            except PortTaken as taken:
                if not self.own_ports or attempt == self.PORT_ATTEMPTS:
                    raise ServerError(str(taken)) from None
                print("%s; starting %s again on other ports" % (taken, self.kind), file=sys.stderr)
                self.port = free_port()
                self.web_port = free_port() if self.web_port else 0
                self.irc_port = free_port() if self.irc_port else 0

    def _start_once(self, timeout):
        for port in filter(None, (self.port, self.web_port, self.irc_port)):
            if accepts(port):
                raise PortTaken("port %d is already in use" % port)
        cmd = self.command()
        out = open(os.path.join(self.dir, "stdout.log"), "ab")
        self.started_at = time.time()
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.dir if self.kind != "chatd" else REPO,
                                     env=src_env() if self.kind == "chatd" else None)
        out.close()
        self.pid = self.proc.pid
        end = self.started_at + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                why = "%s exited with status %s before listening: %s" % (self.kind, self.proc.returncode, self.log_tail())
                self.proc = None
                raise (PortTaken if "in use" in why else ServerError)(why)  # EADDRINUSE: "Address already in use"
            if all(accepts(port) for port in filter(None, (self.port, self.web_port, self.irc_port))):
                self.listen_seconds = time.time() - self.started_at
                lp = _listener_pid(self.port)
                if lp and lp != self.pid:
                    if self.kind == "chatd" or _parent_pid(lp) != self.pid:
                        # another program took the port between free_port() and our bind
                        self.stop()
                        raise PortTaken("port %d was taken by another process (pid %d)" % (self.port, lp))
                    self.pid = lp  # a peer's child process listens; still a process we started
                return self
            time.sleep(0.01)
        self.stop()
        raise ServerError("%s did not listen on port %d within %.0f s; see %s" % (self.kind, self.port, timeout, self.dir))

    def stop(self, timeout=10.0):
        """Stop the server by its PID: SIGTERM, then SIGKILL after `timeout` s."""
        if self.proc is None:
            return
        pids = [self.proc.pid] + ([self.pid] if self.pid != self.proc.pid else [])
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
        self.proc = None

    def log_tail(self, n=3):
        lines = []
        for name in ("server.log", "stdout.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    lines += f.read().strip().splitlines()[-n:]
            except OSError:
                pass
        return " | ".join(lines)[-600:] or "(no log)"

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def cpu_seconds(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return float("nan")
