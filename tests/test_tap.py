"""The command-line options of ``twistd chatd`` (chatd/tap.py)."""

from __future__ import annotations

import pytest
from twisted.python import usage

from chatd.tap import MIN_OUTBOUND, Options


def _parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_max_outbound_below_one_mib_is_refused():
    """A file download keeps about one 350 KB piece queued per recipient: a smaller send limit is a usage error."""
    assert MIN_OUTBOUND == 1 << 20
    for value in ("65536", str(MIN_OUTBOUND - 1)):
        with pytest.raises(usage.UsageError, match="--max-outbound must be at least 1048576"):
            _parse("--max-outbound", value)
    assert _parse("--max-outbound", str(MIN_OUTBOUND)).settings().max_outbound == MIN_OUTBOUND
    assert _parse().settings().max_outbound == 4 * 1024 * 1024


def test_flood_defaults_and_relaxed_values_parse():
    """The default flood limit reaches Settings; the benchmark's relaxed values parse too."""
    settings = _parse().settings()
    assert (settings.flood_rate, settings.flood_burst) == (5.0, 50)
    settings = _parse("--flood-rate", "1e9", "--flood-burst", "1000000000").settings()
    assert (settings.flood_rate, settings.flood_burst) == (1e9, 1_000_000_000)


def test_upload_timeout_reaches_the_transfer_settings():
    """--upload-timeout sets how long an upload may stall; zero or less is refused."""
    from chatd.tap import makeService

    for value in ("0", "-1"):
        with pytest.raises(usage.UsageError, match="--upload-timeout"):
            _parse("--upload-timeout", value)
    options = _parse("--upload-timeout", "7.5")
    assert options["upload-timeout"] == 7.5
    service = makeService(options)
    assert service.factory.transfers.settings.upload_timeout == 7.5


@pytest.mark.parametrize(
    "hard, expected",
    [(4096, 4096 - 256), (1024, 1024 - 256), (20000, 20000 - 256), (65536, 20000), (200, 1), ("infinity", 20000)],
)
def test_default_max_connections_fits_the_hard_open_file_limit(monkeypatch, hard, expected):
    """The default --max-connections is 20000, lowered to the hard open-file limit minus 256; an explicit value stays."""
    import resource

    hard = resource.RLIM_INFINITY if hard == "infinity" else hard
    monkeypatch.setattr(resource, "getrlimit", lambda which: (min(1024, hard), hard))
    assert _parse().settings().max_connections == expected
    assert _parse("--max-connections", "30000").settings().max_connections == 30000
    assert _parse("--max-connections", "0").settings().max_connections == 0


def test_file_limits_and_spool_quotas_reach_the_transfer_settings():
    """--max-file-size 0 turns the limit off (as docs/OPERATIONS.md says); the quotas and the deadline parse."""
    from chatd.tap import makeService

    settings = makeService(_parse()).factory.transfers.settings
    assert (settings.max_file_size, settings.spool_quota, settings.user_spool_quota, settings.delivery_timeout) == (
        100 << 20, 1 << 30, 256 << 20, 1800.0)
    options = _parse("--max-file-size", "0", "--spool-quota", "2G", "--user-spool-quota", "0",
                     "--delivery-timeout", "90")
    settings = makeService(options).factory.transfers.settings
    assert (settings.max_file_size, settings.spool_quota, settings.user_spool_quota, settings.delivery_timeout) == (
        0, 2 << 30, 0, 90.0)
    for option, value in (("--spool-quota", "\u0665M"), ("--max-file-size", "-1"), ("--delivery-timeout", "-1")):
        with pytest.raises(usage.UsageError, match=option):
            _parse(option, value)


def test_numeric_options_take_ascii_digits_only():
    """int() and float() read '٥' (ARABIC-INDIC FIVE) and '1_000'; options, like every number chatd reads, do not."""
    for option, value in (("--max-line", "\u0665"), ("--max-line", "1_000"), ("--flood-burst", "+5"),
                          ("--flood-rate", "\u0665"), ("--login-timeout", "nan"), ("--idle-timeout", "inf"),
                          ("--max-connections", "9" * 400)):
        with pytest.raises(usage.UsageError, match="ASCII"):
            _parse(option, value)
    settings = _parse("--max-line", "2048", "--flood-rate", "2.5", "--login-timeout", "1e2").settings()
    assert (settings.max_line, settings.flood_rate, settings.login_timeout) == (2048, 2.5, 100.0)


def test_size_options_take_k_m_g_and_every_bad_value_names_its_option():
    """Every size option in bytes takes K, M or G (OPERATIONS.md 'Limits'); a bad value of any option names that
    option (usage.Options' own coercion named the last option twistd read, '-n')."""
    settings = _parse("--max-outbound", "2M", "--max-line", "4K").settings()
    assert (settings.max_outbound, settings.max_line) == (2 << 20, 4096)
    options = _parse("--max-file-size", "1G", "--spool-quota", "3g", "--user-spool-quota", "512K")
    assert (options["max-file-size"], options["spool-quota"], options["user-spool-quota"]) == (
        1 << 30, 3 << 30, 512 << 10)
    for option, value in (("--max-outbound", "2X"), ("--max-line", "4.5K"), ("--flood-rate", "fast"),
                          ("--flood-burst", "1_000"), ("--close-grace", "nan"), ("--hash-threads", "two"),
                          ("--max-file-size", "lots"), ("--max-connections", "-1")):
        with pytest.raises(usage.UsageError) as raised:
            _parse("--flood-rate", "5", option, value)
        assert str(raised.value).startswith(f"{option}: "), str(raised.value)


def test_twistd_reports_a_bad_option_value_under_its_own_name():
    """Through twistd's own command line (what `twistd -n chatd --max-outbound 2X` prints)."""
    from twisted.scripts.twistd import ServerOptions as TwistdOptions

    with pytest.raises(usage.UsageError) as raised:
        TwistdOptions().parseOptions(["-n", "chatd", "--max-outbound", "2X"])
    assert str(raised.value).startswith("--max-outbound: ")
    options = TwistdOptions()
    options.parseOptions(["-n", "chatd", "--max-outbound", "2M"])
    assert options.subOptions.settings().max_outbound == 2 << 20


@pytest.mark.parametrize("option", ["--flood-rate", "--login-timeout", "--idle-timeout", "--close-grace",
                                    "--keepalive", "--upload-timeout", "--delivery-timeout",
                                    "--password-check-window", "--address-login-window"])
@pytest.mark.parametrize("value", ["1_000", " 5", "5 ", "9" * 26, "1e-400", "-1", "+1", "0x10"])
def test_decimal_options_take_only_plain_ascii_numbers(option, value):
    """The final attacker's sweep: decimal options took '1_000', spaces, 1e26 and '1e-400' (silently 0: off)."""
    with pytest.raises(usage.UsageError, match=option):
        _parse(option, value)


@pytest.mark.parametrize("option", ["--max-line", "--max-file-size", "--spool-quota", "--user-spool-quota"])
@pytest.mark.parametrize("value", [" 5", "5 ", "4 K"])
def test_size_options_take_no_spaces(option, value):
    """Sizes are ASCII digits with an optional K, M or G, without spaces (the sweep found ' 5' and '5 ' taken)."""
    with pytest.raises(usage.UsageError, match=option):
        _parse(option, value)


def test_admin_is_repeatable_and_takes_only_account_names():
    """--admin NAME names server admins (chatd.admin); a name that breaks the naming rule is a usage error."""
    assert _parse().settings().admins == ()
    assert _parse("--admin", "root", "--admin", "Ann").settings().admins == ("root", "Ann")
    with pytest.raises(usage.UsageError, match="--admin: "):
        _parse("--admin", "bad name!")
