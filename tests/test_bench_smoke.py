"""
Smoke test of the benchmark suite: ``python -m bench --quick`` against the real daemon.

It runs every scenario at tiny sizes (a few seconds in all) and checks that
the suite works end to end and that no chat line was lost, duplicated or
reordered. It asserts no speed: timing assertions would be flaky; the
figures live in docs/PERFORMANCE.md. Part of the normal test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import servers  # noqa: E402


def _chatd_ready() -> tuple[bool, str]:
    try:
        import chatd.tap  # noqa: F401
    except Exception as error:  # the daemon is not importable yet
        return False, f"chatd is not importable: {error}"
    return servers.chatd_available()


def test_quick_suite_loses_no_line(tmp_path) -> None:
    ready, why = _chatd_ready()
    if not ready:
        pytest.skip(f"twistd chatd cannot run here: {why}")
    out = tmp_path / "bench"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-install", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by_scenario: dict[str, list[dict]] = {}
    for r in results:
        by_scenario.setdefault(r["bench_scenario"], []).append(r)
    errors = [r for r in results if "error" in r]
    assert not errors, f"failed measurements: {errors}\n{log}"
    assert proc.returncode == 0, log
    # every line reached every receiver, once, in order per sender
    for scenario in ("fanout", "fanout-cl", "latency", "storm"):
        assert by_scenario.get(scenario), f"no {scenario} result\n{log}"
        for r in by_scenario[scenario]:
            assert r["delivered"] == r["expected"] > 0, (scenario, r["delivered"], r["expected"])
            assert r["lost"] == 0 and r["out_of_order"] == 0 and r["gaps"] == 0, (scenario, r)
            assert r["disconnected"] == 0, (scenario, r)
    (storm,) = by_scenario["storm"]
    assert storm["storm_logins"] == 10
    (idle,) = by_scenario["idle"]
    assert idle["connections"] == 200 and idle["probe_p50_ms"] > 0
    (startup,) = by_scenario["startup"]
    assert startup["first_login_seconds"] >= startup["listen_seconds"] > 0
    (transfer,) = by_scenario["transfer"]
    # skipped only while the server has no /send; otherwise every recipient got the file, checked by SHA-256
    assert transfer.get("skipped") or (transfer["sha_ok"] and transfer["mb_per_s_min"] > 0), transfer
    assert "deliveries/s" in proc.stdout
