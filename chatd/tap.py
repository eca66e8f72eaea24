"""
``twistd chatd``: command-line options and the service they build.

Imported only when twistd runs the plugin, never when plugins are listed.
"""

from __future__ import annotations

import importlib.util
import math
import re
from typing import Any

from twisted.python import usage

from chatd.frontends.web_host import valid_web_host
from chatd.settings import NODELAY_POLICIES, REPLAY_HOURS_MAX, REPLAY_LINES_MAX, Settings
from chatd.text import USER_NAME_MAX, check_name
from chatd.wire import DEFAULT_PORT, parse_count, parse_size

#: A listen backlog of 1024 (Twisted's default is 50) so a reconnect storm
#: after a restart is not met with dropped SYNs and 1-3 s retries.
DEFAULT_LISTEN = f"tcp:{DEFAULT_PORT}:backlog=1024"
#: The browser front-end is on by default, on every interface like DEFAULT_LISTEN (``--listen-web none``: off).
DEFAULT_LISTEN_WEB = "tcp:8080:backlog=1024"
DEFAULT_DATA_DIR = "chatd-data"
_DEFAULTS = Settings()
#: Smallest --max-outbound: a file download keeps up to about one piece (some
#: 350 KB of base64, chatd.transfer) queued per recipient, and that counts
#: against the limit, so a lower one would cut off recipients that read.
MIN_OUTBOUND = 1 << 20

#: Largest whole-number option value.
COUNT_MAX = 2**63 - 1


def count(text: str) -> int:
    """A whole-number option: ASCII digits only, as every number chatd reads (``chatd.wire.parse_count``)."""
    value = parse_count(str(text), COUNT_MAX)
    if value is None:
        raise ValueError(f"{text!r} is not a whole number in ASCII digits")
    return value


#: A decimal option as written: ASCII digits, one optional point, an optional exponent; no sign, space or ``_``.
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\Z")
#: Largest decimal option value (seconds, or lines per second): far beyond any useful setting.
NUMBER_MAX = 1e12


def number(text: str) -> float:
    """
    A decimal option (``2.5``, ``1e9``): ASCII digits only (``float()`` would take other scripts' digits,
    ``1_000`` and spaces), at most NUMBER_MAX, and never a non-zero value that rounds to 0 (``1e-400``).
    """
    text = str(text)
    value = float(text) if _DECIMAL.match(text) else math.nan
    if not math.isfinite(value) or value > NUMBER_MAX:
        raise ValueError(f"{text!r} is not a number in ASCII digits of at most {NUMBER_MAX:g}")
    if value == 0.0 and re.search(r"[1-9]", text.partition("e")[0].partition("E")[0]):
        raise ValueError(f"{text!r} is too small to be told from 0")
    return value


def size(text: str) -> int:
    """A size in bytes: ASCII digits, optionally ending in K, M or G (``chatd.wire.parse_size``)."""
    return parse_size(str(text))


#: What each kind of option value takes, for --help.
_KIND_DOCS = {count: "ASCII digits.", number: "A number in ASCII digits.", size: "Bytes; may end in K, M or G."}

#: (option, Settings field, type, help) of each limit (docs/OPERATIONS.md, "Limits"); 0 turns a limit off.
_LIMITS = [
    ("flood-rate", "flood_rate", number,
     "Lines (and telnet commands) per second one connection, or once logged in one account, may send, "
     "sustained (0: no limit)."),
    ("flood-burst", "flood_burst", count, "Lines a connection (or account) may send at once before --flood-rate applies."),
    ("flood-mute", "flood_mute", number,
     "Seconds an account is muted in a room after being slowed down there for 10 s within a minute; if it goes "
     "on, its connection is cut off (0: never)."),
    ("max-connections", "max_connections", count,
     "Connections in total (0: no limit). Default: 20000, or the hard open-file limit minus 256 if that is lower."),
    ("max-per-address", "max_per_address", count, "Connections from one address (0: no limit)."),
    ("limit-exempt", "limit_exempt", str, "Networks exempt from per-address limits, comma-separated ('' for none)."),
    ("login-timeout", "login_timeout", number, "Seconds a connection may stay without logging in (0: forever)."),
    ("idle-timeout", "idle_timeout", number, "Seconds without input after which a connection is closed (0: never)."),
    ("close-grace", "close_grace", number,
     "Seconds a connection the server closes may take to drain its output before it is aborted."),
    ("keepalive", "keepalive", number, "Seconds of silence before TCP keepalive probes (0: off)."),
    ("web-ping", "web_ping", number,
     "Seconds between WebSocket pings to a silent browser connection; one that answers nothing by the next "
     "is closed (0: no pings)."),
    ("max-login-failures", "max_login_failures", count, "Failed logins after which a connection is closed."),
    ("address-login-failures", "address_login_failures", count,
     "Failed logins one address may have per --address-login-window (0: no limit)."),
    ("address-login-window", "address_login_window", number, "Seconds over which --address-login-failures count."),
    ("address-registrations", "address_registrations", count,
     "Accounts one address may register per --address-registration-window (0: no limit)."),
    ("address-registration-window", "address_registration_window", number,
     "Seconds over which --address-registrations count."),
    ("address-password-checks", "address_password_checks", count,
     "Password checks (logins, failed or not, and registrations: each costs a hash) one address may cause "
     "per --password-check-window (0: no limit)."),
    ("account-password-checks", "account_password_checks", count,
     "Password checks (logins, failed or not) of one account name per --password-check-window (0: no limit)."),
    ("password-check-window", "password_check_window", number,
     "Seconds over which --address-password-checks and --account-password-checks count."),
    ("offline-messages", "offline_messages", count,
     "Private messages kept for one offline account until its next login (0: none are kept)."),
    ("history-days", "history_days", count,
     "Days room history is kept on disk; older days are deleted whole, daily (0: keep no history at all)."),
    ("history-ring", "history_ring", count, "Events of each room kept in memory for replay and /history."),
    ("replay-lines", "replay_lines", count,
     "Lines of history shown to someone joining a room, at most 50 (0: no replay)."),
    ("replay-hours", "replay_hours", number, "Replay on join shows lines at most this many hours old (at most 24)."),
]

def default_max_connections() -> int:
    """
    The default ``--max-connections``: 20000, or fewer if the hard limit on
    open files (RLIMIT_NOFILE, one descriptor per connection) is lower, so
    that chatd can always raise its soft limit far enough and a default
    start never warns. At least 1.
    """
    from chatd.limits import FD_RESERVE

    try:
        import resource
    except ImportError:  # not on this platform
        return _DEFAULTS.max_connections
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return _DEFAULTS.max_connections
    return max(1, min(_DEFAULTS.max_connections, hard - FD_RESERVE))


def check_store(dsn: str) -> None:
    """``--store``: a ``postgresql://`` or ``postgres://`` URL, with psycopg installed; else UsageError."""
    if not re.match(r"postgres(ql)?://", dsn):
        raise usage.UsageError("--store takes a postgresql:// (or postgres://) URL; without --store the CSV "
                               "files in --data-dir are the store")  # (not echoed: it may hold a password)
    if importlib.util.find_spec("psycopg") is None:
        raise usage.UsageError("--store: PostgreSQL needs psycopg: pip install 'chatd[postgres]'")


def check_bus(url: str, store: str | None) -> None:
    """``--bus``: a ``redis://`` URL, with ``--store`` (the nodes share PostgreSQL) and txredisapi; else UsageError."""
    from chatd.buses.redis import parse_url

    try:
        parse_url(url)
    except ValueError as error:
        raise usage.UsageError(str(error)) from None
    if store is None:
        raise usage.UsageError("--bus needs --store postgresql://...: the nodes share accounts, rooms and history "
                               "through PostgreSQL")
    if importlib.util.find_spec("txredisapi") is None:
        raise usage.UsageError("--bus: Redis needs txredisapi: pip install 'chatd[cluster]'")


#: Options whose default is worked out when the server starts.
_AUTOMATIC = {"max-connections": default_max_connections}


class Options(usage.Options):
    """Options of ``twistd chatd``."""

    synopsis = "[options]"
    longdesc = (
        "A multi-room chat server for telnet and the bundled 'chat' client. "
        "Accounts, rooms and an event log are kept as CSV files in --data-dir."
    )
    optParameters: list[list[Any]] = [
        ["tcp-nodelay", None, _DEFAULTS.tcp_nodelay,
         "When to set TCP_NODELAY: talkers (once a connection says something in a room), all, or never."],
        ["data-dir", "d", DEFAULT_DATA_DIR, "Directory for users.csv, rooms.csv, log.csv and offline.csv (created 0700)."],
        ["store", None, None, "Keep accounts, rooms, the event log and history in PostgreSQL instead of --data-dir's "
         "CSV files: a postgresql:// (or postgres://) URL, e.g. postgresql://chatd:PASSWORD@db.example.org/chatd "
         "(needs the 'postgres' extra: psycopg). --data-dir still holds the file spool and the lock."],
        ["bus", None, None, "Share rooms with other chatd nodes through a Redis Stream: redis://HOST:PORT/DB "
         "(needs --store postgresql://... and the 'cluster' extra: txredisapi). Without it: one process."],
        ["node-name", None, None, "This node's name on the bus (default HOST.PID)."],
        ["max-line", None, _DEFAULTS.max_line, "Longest accepted input line, in bytes.", size],
        ["max-outbound", None, _DEFAULTS.max_outbound,
         "Unsent bytes past which a connection is cut off instead of queuing more.", size],
        ["hash-threads", None, 1, "Threads that hash passwords (bounded, so logins never starve chat).", count],
        ["hash-time-cost", None, 2, "argon2id iterations for new password hashes.", count],
        ["hash-memory-kib", None, 19456, "argon2id memory for new password hashes, in KiB.", count],
        ["max-file-size", None, "100M", "Largest file users may send: bytes, or with K, M or G (0: no limit).", size],
        ["max-uploads", None, 2, "Files one user may be uploading at once.", count],
        ["upload-timeout", None, 60.0, "Seconds an upload may go without a frame before it fails.", number],
        ["spool-quota", None, "1G", "Bytes all files waiting in the spool may take together (K, M, G; 0: no limit).", size],
        ["user-spool-quota", None, "256M", "Bytes the files of one user waiting in the spool may take (0: no limit).", size],
        ["delivery-timeout", None, 1800.0,
         "Seconds after a file is shared within which each recipient must take it (0: no deadline).", number],
        *([option, None, None if option in _AUTOMATIC else getattr(_DEFAULTS, field), text, kind]
          for option, field, kind, text in _LIMITS),
    ]
    #: The type of each option's value. Values are converted in postOptions, not by
    #: usage.Options (whose error names the last option twistd read, not this one),
    #: so that every bad value is refused as ``--OPTION: WHY``.
    _kinds = {row[0]: row.pop() for row in optParameters if len(row) == 5 and row[4] is not str}
    for row in optParameters:
        if row[0] in _kinds:
            row[3] = f"{row[3]} {_KIND_DOCS[_kinds[row[0]]]}"
        del row[4:]
    del row

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["listen-web"] = []
        self["web-origin"] = []
        self["web-host"] = []
        self["listen-irc"] = []
        self["irc-guests"] = False
        self["irc-server-name"] = "chatd"
        self["admin"] = []

    def opt_listen(self, description: str) -> None:
        """Listen on this endpoint (e.g. tcp:8023, ssl:8024:privateKey=k.pem:certKey=c.pem; haproxy:tcp:2323 behind a load balancer sending the PROXY header, on every --listen-*); repeatable. Default tcp:8023:backlog=1024."""
        self["listen"].append(description)

    def opt_listen_web(self, description: str) -> None:
        """Serve the browser client (a page at /, its WebSocket at /ws) on this endpoint (e.g. tcp:8080, ssl:8443:...); repeatable; none: no browser client. Default tcp:8080:backlog=1024."""
        self["listen-web"].append(description)

    def opt_listen_irc(self, description: str) -> None:
        """Serve IRC clients on this endpoint (e.g. tcp:6667, ssl:6697:...; docs/IRC.md); repeatable. Default: none."""
        self["listen-irc"].append(description)

    def opt_irc_guests(self) -> None:
        """IRC connections without an account may chat as guests under any free nick (never stored)."""
        self["irc-guests"] = True

    def opt_irc_server_name(self, name: str) -> None:
        """The IRC front-end's server name (numerics' source, PONG, 004: a host-like name, e.g. irc.example.org). Default chatd."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", name):
            raise usage.UsageError(f"--irc-server-name: {name!r} is not a name such as irc.example.org")
        self["irc-server-name"] = name

    def opt_web_origin(self, origin: str) -> None:
        """An Origin allowed to open the WebSocket (e.g. https://chat.example.org); repeatable. Default: the page's own."""
        if not re.fullmatch(r"https?://[^/\s]+/?", origin):
            raise usage.UsageError(f"--web-origin: {origin!r} is not an origin such as https://chat.example.org")
        self["web-origin"].append(origin)

    def opt_web_host(self, name: str) -> None:
        """A host name the browser front-end answers to (e.g. chat.example.org); repeatable. Default: IP addresses, localhost and this machine's names."""
        if not valid_web_host(name):
            raise usage.UsageError(f"--web-host: {name!r} is not a host name such as chat.example.org")
        self["web-host"].append(name)

    def opt_admin(self, name: str) -> None:
        """Make the account NAME a server admin (repeatable; chatd-admin make-admin stores one instead)."""
        problem = check_name(name, "user", USER_NAME_MAX)
        if problem:
            raise usage.UsageError(f"--admin: {problem}")
        self["admin"].append(name)

    def postOptions(self) -> None:
        for name, kind in self._kinds.items():
            if self[name] is not None:
                try:
                    self[name] = kind(self[name])
                except ValueError as error:
                    raise usage.UsageError(f"--{name}: {error}") from None
        if self["tcp-nodelay"] not in NODELAY_POLICIES:
            raise usage.UsageError(f"--tcp-nodelay is one of: {', '.join(NODELAY_POLICIES)}")
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        if "none" in self["listen-web"]:
            if len(self["listen-web"]) > 1:
                raise usage.UsageError("--listen-web none turns the browser client off: give no other --listen-web")
            self["listen-web"] = []
        elif not self["listen-web"]:
            self["listen-web"] = [DEFAULT_LISTEN_WEB]
        for name in ("max-line", "max-outbound", "hash-threads", "hash-time-cost", "hash-memory-kib"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["max-outbound"] < MIN_OUTBOUND:
            raise usage.UsageError(
                f"--max-outbound must be at least {MIN_OUTBOUND} (1 MiB): a file download keeps "
                "up to about 350 KB queued per recipient, and it counts against this limit")
        for option, compute in _AUTOMATIC.items():
            if self[option] is None:
                self[option] = compute()
        for option, _, kind, _ in _LIMITS:
            if kind is not str and self[option] < 0:
                raise usage.UsageError(f"--{option} cannot be negative")
        if (self["max-login-failures"] < 1 or self["address-login-window"] <= 0
                or self["address-registration-window"] <= 0 or self["password-check-window"] <= 0):
            raise usage.UsageError(
                "--max-login-failures, --address-login-window, --address-registration-window and "
                "--password-check-window must be positive")
        if self["max-uploads"] < 1:
            raise usage.UsageError("--max-uploads must be at least 1")
        if self["replay-lines"] > REPLAY_LINES_MAX or self["replay-hours"] > REPLAY_HOURS_MAX:
            raise usage.UsageError(f"--replay-lines is at most {REPLAY_LINES_MAX} and --replay-hours at most "
                                   f"{REPLAY_HOURS_MAX:g}: replay on join is a short reminder (/history shows more)")
        if self["history-ring"] < 1:
            raise usage.UsageError("--history-ring must be at least 1")
        if self["upload-timeout"] <= 0:
            raise usage.UsageError("--upload-timeout must be more than 0 seconds")
        if self["delivery-timeout"] < 0:
            raise usage.UsageError("--delivery-timeout cannot be negative")
        if self["store"] is not None:
            check_store(self["store"])
        if self["bus"] is not None:
            check_bus(self["bus"], self["store"])
        from chatd.limits import parse_networks

        try:
            parse_networks(self["limit-exempt"])
        except ValueError as error:
            raise usage.UsageError(f"--limit-exempt: {error}") from None

    def settings(self) -> Settings:
        """The :class:`Settings` these options describe."""
        return Settings(
            max_line=self["max-line"], max_outbound=self["max-outbound"], tcp_nodelay=self["tcp-nodelay"],
            admins=tuple(self["admin"]),
            **{field: self[option] for option, field, _, _ in _LIMITS},
        )


def makeService(options: Options) -> Any:
    """Build the chat service (twistd calls this)."""
    from twisted.internet import reactor

    from chatd.service import ChatService
    from chatd.transfer import TransferSettings

    return ChatService(
        reactor,
        listen=options["listen"],
        data_dir=options["data-dir"],
        settings=options.settings(),
        hash_threads=options["hash-threads"],
        hash_params={"time_cost": options["hash-time-cost"], "memory_kib": options["hash-memory-kib"]},
        transfer_settings=TransferSettings(
            options["max-file-size"], options["max-uploads"], upload_timeout=options["upload-timeout"],
            spool_quota=options["spool-quota"], user_spool_quota=options["user-spool-quota"],
            delivery_timeout=options["delivery-timeout"],
        ),
        gc_tuning=True,
        listen_web=options["listen-web"],
        web_origins=options["web-origin"],
        web_hosts=options["web-host"],
        store_dsn=options["store"],
        bus_url=options["bus"],
        node_name=options["node-name"],
        listen_irc=options["listen-irc"],
        irc_guests=options["irc-guests"],
        irc_server_name=options["irc-server-name"],
    )
