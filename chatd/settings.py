"""The server's tunable limits, as one immutable value built from the command line."""

from typing import Literal, get_args

import attrs

#: The room that always exists and cannot be deleted.
PUBLIC_ROOM = "public"

#: When to set TCP_NODELAY (``--tcp-nodelay``): on a connection once it says
#: something in a room, on all connections, or never.
NoDelayPolicy = Literal["talkers", "all", "never"]
NODELAY_POLICIES: tuple[NoDelayPolicy, ...] = get_args(NoDelayPolicy)


#: The largest --replay-lines and --replay-hours (issue 13: at most 50 lines and at most 24 hours old).
REPLAY_LINES_MAX = 50
REPLAY_HOURS_MAX = 24.0


@attrs.frozen
class Settings:
    """Limits and timings; every field has a command-line option in ``tap.py``."""

    #: Longest accepted line, in bytes (without the line end).
    max_line: int = 4096
    #: Seconds a connection waits after its n-th failed login: min(2**(n-1), cap).
    login_delay_cap: float = 30.0
    #: Failed logins after which a connection is closed.
    max_login_failures: int = 10
    #: Bytes that may wait unsent for one connection before it is cut off.
    max_outbound: int = 4 * 1024 * 1024

    # Limits against load and abuse (chatd/limits.py; the reasoning behind
    # each default is in docs/OPERATIONS.md, "Limits").

    #: Lines per second one connection may send, sustained (0 = no limit).
    #: A connection over it is paused (not dropped) until its bucket refills.
    flood_rate: float = 5.0
    #: Lines one connection may send in a burst before the rate applies (a
    #: pasted snippet goes through at once; a flood is slowed and told).
    flood_burst: int = 50
    #: Seconds an account that keeps flooding a room is muted there (chatd.limits, "escalation"; 0: never).
    flood_mute: float = 60.0
    #: Connections in total (0 = no limit).
    max_connections: int = 20000
    #: Connections from one address (0 = no limit); exempt networks don't count.
    max_per_address: int = 100
    #: Networks (comma-separated) exempt from the per-address limits.
    limit_exempt: str = "127.0.0.0/8,::1/128"
    #: Seconds a connection may stay without logging in (0 = no limit).
    login_timeout: float = 120.0
    #: Seconds without a received line after which a connection is closed (0 = never).
    idle_timeout: float = 0.0
    #: Seconds between WebSocket pings to a browser connection that sent nothing meanwhile; one that answers
    #: nothing until the next is closed (0 = no pings; chatd.frontends.web_resume).
    web_ping: float = 30.0
    #: Seconds of silence before TCP keepalive probes start (0 = off); a dead
    #: peer is found after about twice this.
    keepalive: float = 120.0
    #: Failed logins one address may have within ``address_login_window``
    #: seconds (0 = no limit); further attempts are refused without hashing.
    address_login_failures: int = 20
    address_login_window: float = 300.0
    #: Accounts one address may register within ``address_registration_window``
    #: seconds (0 = no limit); further attempts are refused without hashing.
    address_registrations: int = 20
    address_registration_window: float = 3600.0
    #: Password checks (logins, failed or not, and registrations: each costs
    #: an argon2 hash) per ``password_check_window`` seconds, per address and
    #: per account name (0 = no limit); further attempts are refused without hashing.
    address_password_checks: int = 60
    account_password_checks: int = 10
    password_check_window: float = 60.0
    #: Private messages kept for one offline account until its next login (0: none; /msg to the offline fails).
    offline_messages: int = 100
    #: Days room history is kept (whole daily segments are deleted once older; 0: no history is kept at all).
    history_days: int = 30
    #: Events of each room kept in memory for replay and recent /history (the ring).
    history_ring: int = 200
    #: Lines replayed to someone joining a room (0: no replay), at most REPLAY_LINES_MAX.
    replay_lines: int = 20
    #: Replay shows only lines younger than this many hours, at most REPLAY_HOURS_MAX.
    replay_hours: float = 24.0
    #: When to set TCP_NODELAY: "talkers" (on a connection once it says
    #: something in a room), "all" connections, or "never". See
    #: docs/PERFORMANCE.md for the measured trade-off.
    tcp_nodelay: NoDelayPolicy = attrs.field(default="talkers", validator=attrs.validators.in_(NODELAY_POLICIES))
    #: Seconds a connection the server closes (kicked, replaced, timed out,
    #: quit) may take to drain its output before it is aborted.
    close_grace: float = 5.0
    #: Accounts that are server admins (``--admin``, repeatable; more by the stored flag: chatd.admin).
    admins: tuple[str, ...] = ()
