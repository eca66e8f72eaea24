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

#: Seconds a ``bench --quick`` run may take: a hang guard, not a speed goal (the bench's results say how fast it
#: was). Both runs of this module took 86 s together at load 4-6 on a 2-core machine; one went past 150 s at load 20.
BOUND = 400


def _chatd_ready() -> tuple[bool, str]:
    try:
        import chatd.tap  # noqa: F401
    except Exception as error:  # the daemon is not importable yet
        return False, f"chatd is not importable: {error}"
    return servers.chatd_available()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, list[dict]], str]:
    """``python -m bench --quick`` once for the module: (the process, results by scenario, the log's tail)."""
    ready, why = _chatd_ready()
    if not ready:
        pytest.skip(f"twistd chatd cannot run here: {why}")
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-install", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=BOUND,
    )
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    by_scenario: dict[str, list[dict]] = {}
    for r in results:
        by_scenario.setdefault(r["bench_scenario"], []).append(r)
    errors = [r for r in results if "error" in r]
    assert not errors, f"failed measurements: {errors}\n{log}"
    assert proc.returncode == 0, log
    return proc, by_scenario, log


def test_quick_suite_loses_no_line(quick_run) -> None:
    proc, by_scenario, log = quick_run
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


def test_quick_web_scenarios_measure_the_browser_front_end(quick_run) -> None:
    """web-fanout, web-fanout-cl and web-idle ran over WebSocket (issue 15) and produced figures beside the line's."""
    proc, by_scenario, log = quick_run
    for scenario in ("web-fanout", "web-fanout-cl"):
        (r,) = by_scenario.get(scenario) or [None]
        assert r is not None, f"no {scenario} result\n{log}"
        assert r["proto"] == "chatd-web", r
        # the sampled receivers decoded every frame and event: a line they missed would count as lost
        assert r["sampled_receivers"] > 0 and r["delivered"] == r["expected"] > 0, r
        assert r["lost"] == r["out_of_order"] == r["gaps"] == r["disconnected"] == 0, r
        assert r["deliveries_per_s"] > 0 and r["server_us_per_delivery"] > 0, r
    (idle,) = by_scenario["web-idle"]
    assert idle["proto"] == "chatd-web" and idle["connections"] == 200, idle
    assert idle["kib_per_connection"] > 0 and idle["probe_p50_ms"] > 0, idle
    assert "browser front-end (WebSocket, JSON) beside the line front-end" in proc.stdout


def test_web_adapter_speaks_rfc6455() -> None:
    """The bench's WebSocket client masks what it sends and decodes room lines from frames split anywhere."""
    from types import SimpleNamespace

    from wsproto.frame_protocol import FrameProtocol, Opcode

    from bench.webproto import ChatdWebAdapter

    adapter = ChatdWebAdapter(SimpleNamespace(room="lab", host="127.0.0.1", port=18600, password="pw"))
    upgrade = adapter.login("ann")[0][1]
    assert upgrade.startswith(b"GET /ws HTTP/1.1\r\n") and b"origin: http://127.0.0.1:18600" in upgrade.lower()
    server = FrameProtocol(client=False, extensions=[])  # refuses an unmasked client frame
    sent = adapter.message(b"~PB~ 0 7 T1 xx")
    assert b"~PB~" not in sent  # masked on the wire
    server.receive_bytes(sent)
    (frame,) = list(server.received_frames())
    assert frame.opcode is Opcode.TEXT and json.loads(frame.payload) == {
        "type": "command", "name": "say", "args": ["~PB~ 0 7 T1 xx"]}
    events = {"type": "events", "events": [
        {"room": "lab", "id": 3, "kind": "join", "sender": "bob", "text": ""},
        {"room": "lab", "id": 4, "kind": "say", "sender": "bob", "text": "~PB~ 1 0 T5 é"}]}
    wire = bytes(server.send_data(json.dumps(events, ensure_ascii=False)))
    wire += bytes(server.send_data(json.dumps({"type": "reply", "text": "pong"})))
    texts = adapter.records()
    got = [texts(wire[k:k + 7]) for k in range(0, len(wire), 7)]
    assert [line for chunk in got for line in chunk] == ["~PB~ 1 0 T5 é".encode()]


def test_quick_irc_scenarios_measure_irc_members_beside_ngircd(quick_run) -> None:
    """irc-fanout and irc-latency (issue 16): every member an IRC client through bench.peerbench's IrcAdapter, in
    chatd (--listen-irc, --irc-guests) and, in the same run, in ngIRCd when it is installed; nothing lost."""
    proc, by_scenario, log = quick_run
    peer = servers.ensure_peer("ngircd", install=False, log=lambda msg: None)
    for scenario in ("irc-fanout", "irc-latency"):
        rs = by_scenario.get(scenario) or []
        got = {r["server"] for r in rs}
        assert got == ({"chatd", "ngircd"} if peer else {"chatd"}), (scenario, got, log)
        for r in rs:
            # the IRC adapter registers with NICK/USER and waits for 001: only an IRC front-end answers it
            assert r["proto"] == "irc", r
            assert r["sampled_receivers"] > 0 and r["delivered"] == r["expected"] > 0, r
            assert r["lost"] == r["out_of_order"] == r["gaps"] == r["disconnected"] == 0, r
    chatd_fanout = next(r for r in by_scenario["irc-fanout"] if r["server"] == "chatd")
    line_fanout = by_scenario["fanout"][0]
    assert chatd_fanout["expected"] == line_fanout["expected"]  # the same room and load as the telnet members'
    # the sweep starts where the line front-end's does, with its room (how far it goes depends on the machine)
    line_first = min(by_scenario["latency"], key=lambda r: r["bench_rate"])
    irc_first = min((r for r in by_scenario["irc-latency"] if r["server"] == "chatd"), key=lambda r: r["bench_rate"])
    assert irc_first["bench_rate"] == line_first["bench_rate"] and irc_first["expected"] == line_first["expected"]
    assert all(r["server_us_per_delivery"] > 0 for r in by_scenario["irc-latency"] if r["server"] == "chatd")
    assert "IRC members: chatd's IRC front-end beside its line front-end and ngIRCd" in proc.stdout


def test_quick_nodes_scenarios_split_one_room_over_two_nodes(tmp_path) -> None:
    """nodes-fanout and nodes-latency (issue 17, bench/nodes.py): the room on the CSV process, on one node and on
    two nodes sharing a private Redis and PostgreSQL, members split evenly over the two; nothing lost anywhere."""
    ready, why = _chatd_ready()
    if not ready:
        pytest.skip(f"twistd chatd cannot run here: {why}")
    from bench import nodes

    ok, why = nodes.available()
    if not ok:
        pytest.skip(f"the nodes-* scenarios need Redis and PostgreSQL: {why}")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-install", "--scenarios", "nodes-fanout,nodes-latency",
         "--out", str(tmp_path)], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=BOUND)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines() if line.strip()]
    for scenario in ("nodes-fanout", "nodes-latency"):
        rs = {r["server"]: r for r in results if r["bench_scenario"] == scenario}
        assert set(rs) == {"chatd", "chatd-1node", "chatd-2nodes"}, (scenario, rs, log)
        for r in rs.values():
            assert "error" not in r and r["delivered"] == r["expected"] > 0, r
            assert r["lost"] == r["out_of_order"] == r["gaps"] == r["disconnected"] == 0, r
        members = rs["chatd"]["receivers"] + rs["chatd"]["senders"]
        assert list(rs["chatd-1node"]["connections_by_port"].values()) == [members], rs["chatd-1node"]
        # half of the members on each node: every line crossed the bus to the other half
        assert sorted(rs["chatd-2nodes"]["connections_by_port"].values()) == [members // 2] * 2, rs["chatd-2nodes"]
        assert rs["chatd-2nodes"]["expected"] == rs["chatd"]["expected"]  # the same room and load
    assert "One room over two nodes (issue 17)" in proc.stdout
