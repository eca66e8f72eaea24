"""The server's tunable limits, as one immutable value built from the command line."""

import attrs

#: The room that always exists and cannot be deleted.
PUBLIC_ROOM = "public"


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
