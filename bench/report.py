"""Tables (markdown, medians over runs, chatd/peer ratios) and the latency plot, from result dicts."""
import json
import math
import statistics

from bench.suite import P99_LIMIT_MS, point_ok

ORDER = ("chatd", "ngircd", "inspircd")


def load(paths):
    out = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("RESULT "):
                    line = line[7:]
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and not math.isinf(v)


def median(vals):
    vals = [v for v in vals if _num(v)]
    return statistics.median(vals) if vals else None


def fmt(v, f):
    if v is None:
        return "—"
    return f % v


def servers_in(results):
    """Servers in the peer tables (the irc-* and nodes-* scenarios have their own, irc_members and nodes_table)."""
    found = {r.get("server") for r in results if r.get("bench_scenario") not in (None, "meta")
             and not str(r.get("bench_scenario")).startswith(("irc-", "nodes-"))}
    return [s for s in ORDER if s in found] + sorted(found - set(ORDER) - {None})


def by(results, scenario, server, **match):
    return [r for r in results if r.get("bench_scenario") == scenario and r.get("server") == server
            and "error" not in r and not r.get("skipped") and all(r.get(k) == v for k, v in match.items())]


def capacity(results, server, scenario="latency"):
    """Median over runs of the highest paced rate whose p99 stayed within the limit (None if none did)."""
    caps = []
    for run in sorted({r["run"] for r in results if r.get("bench_scenario") == scenario and r.get("server") == server}):
        pts = [r for r in results if r.get("bench_scenario") == scenario and r.get("server") == server and r["run"] == run]
        good = [r["bench_rate"] for r in pts if point_ok(r)]
        caps.append(max(good) if good else 0)
    return median(caps), caps


def table(results):
    """Markdown: one section per scenario, a column per server, and chatd/peer ratios."""
    srv = servers_in(results)
    peers = [s for s in srv if s != "chatd"]
    meta = next((r for r in results if r.get("bench_scenario") == "meta"), {})
    runs = max([r.get("run", 1) for r in results if isinstance(r.get("run"), int)] or [1])
    out = []
    if meta:
        out.append("Machine: %s. %s. Median of %d run(s)%s." % (
            meta.get("machine", "?"), "; ".join("%s: %s" % kv for kv in meta.get("versions", {}).items()), runs,
            " (QUICK smoke sizes: not a measurement)" if meta.get("quick") else ""))
        if meta.get("chatd_args"):
            out.append("chatd ran with: %s" % " ".join(meta["chatd_args"]))
    head = "| figure | " + " | ".join(srv) + "".join(" | chatd/%s" % p for p in peers) + " |"
    sep = "|---" * (1 + len(srv) + len(peers)) + "|"

    def row(label, values, f, ratio=True):
        cells = [fmt(values.get(s), f) for s in srv]
        for p in peers:
            c, v = values.get("chatd"), values.get(p)
            cells.append("%.2f×" % (c / v) if ratio and c is not None and v not in (None, 0) else "—")
        return "| %s | %s |" % (label, " | ".join(cells))

    def med(scenario, key, scale=1.0, **match):
        vals = {}
        for s in srv:
            m = median([r.get(key) for r in by(results, scenario, s, **match)])
            vals[s] = m * scale if m is not None else None
        return vals

    def verdicts(scenario, **match):
        cells = []
        for s in srv:
            b = sorted({str(r.get("bound", "")).split(" (")[0] for r in by(results, scenario, s, **match)})
            gen = any(str(r.get("bound", "")).startswith("generator") for r in by(results, scenario, s, **match))
            cells.append(("**GENERATOR-SATURATED** " if gen else "") + ("/".join(b) or "—"))
        return "| bound (which side ran out of CPU) | %s |%s" % (" | ".join(cells), " |" * len(peers))

    def lost(scenario, **match):
        cells = []
        for s in srv:
            rs = by(results, scenario, s, **match)
            cells.append("%d / %d / %d" % (sum(r.get("lost", 0) for r in rs), sum(r.get("out_of_order", 0) for r in rs),
                                           sum(r.get("gaps", 0) for r in rs)) if rs else "—")
        return "| lost / reordered / gaps (sum over runs) | %s |%s" % (" | ".join(cells), " |" * len(peers))

    for sc, title in (("fanout", "Fanout, open loop (senders write flat out)"),
                      ("fanout-cl", "Fanout, closed loop (at most 50 lines in flight per sender)")):
        if not any(by(results, sc, s) for s in srv):
            continue
        r0 = next(r for s in srv for r in by(results, sc, s))
        out += ["", "### %s: %d receivers, %d senders × %d lines" % (title, r0["receivers"], r0["senders"],
                                                                        r0["messages_per_sender"]), "", head, sep,
                row("deliveries/s", med(sc, "deliveries_per_s"), "%.0f"),
                row("server µs CPU per delivery", med(sc, "server_us_per_delivery"), "%.2f"),
                row("server CPU (% of a core)", med(sc, "server_util", 100), "%.0f"),
                row("generator CPU (% of a core, all processes)", genmed(results, sc, srv), "%.0f", False),
                lost(sc), verdicts(sc)]
    rates = sorted({r["bench_rate"] for r in results if r.get("bench_scenario") == "latency" and "bench_rate" in r})
    if rates:
        r0 = next((r for r in results if r.get("bench_scenario") == "latency" and "receivers" in r), {})
        out += ["", "### Latency at paced rates into a room of %s receivers (+%s senders); p99 limit %.0f ms" % (
            r0.get("receivers", "?"), r0.get("senders", "?"), P99_LIMIT_MS), "", head, sep]
        for rate in rates:
            vals = {}
            for s in srv:
                rs = by(results, "latency", s, bench_rate=rate)
                vals[s] = rs
            for key, label, f in (("lat_p50_ms", "p50 ms", "%.2f"), ("lat_p99_ms", "p99 ms", "%.2f"),
                                  ("lat_max_ms", "max ms", "%.1f")):
                out.append(row("%d lines/s: %s" % (rate, label), {s: median([r.get(key) for r in vals[s]]) for s in srv}, f))
            out.append(row("%d lines/s: server CPU %%" % rate,
                           {s: (lambda m: m * 100 if m is not None else None)(median([r.get("server_util") for r in vals[s]]))
                            for s in srv}, "%.0f", False))
        caps = {s: capacity(results, s)[0] for s in srv}
        out.append(row("**highest rate with p99 ≤ %.0f ms** (lines/s; doubling, then bisection)" % P99_LIMIT_MS,
                       {s: (c if c else None) for s, c in caps.items()}, "%.0f"))
        gen_bound = [s for s in srv for r in by(results, "latency", s) if str(r.get("bound", "")).startswith("generator")]
        if gen_bound:
            out.append("\nGENERATOR-SATURATED latency points: %s" % ", ".join(sorted(set(gen_bound))))
    if any(by(results, "idle", s) for s in srv):
        r0 = next(r for s in srv for r in by(results, "idle", s))
        out += ["", "### Idle: %d logged-in connections sitting in %d rooms" % (r0["connections"], r0.get("rooms", 1)),
                "", head, sep,
                row("server KiB per connection", med("idle", "kib_per_connection"), "%.2f"),
                row("server RSS before (MiB)", med("idle", "rss_before_kib", 1 / 1024), "%.1f"),
                row("server RSS after (MiB)", med("idle", "rss_after_kib", 1 / 1024), "%.1f"),
                row("probe round trip p50 ms (/ping, PING)", med("idle", "probe_p50_ms"), "%.3f"),
                row("probe round trip max ms (20 probes)", med("idle", "probe_max_ms"), "%.3f"),
                row("seconds to log in and join", med("idle", "open_seconds"), "%.1f")]
    out += web_beside_line(results)
    out += irc_members(results)
    out += nodes_table(results)
    chatd_only = []
    st = by(results, "storm", "chatd")
    if st:
        m = lambda k: median([r.get(k) for r in st])  # noqa: E731
        chatd_only += [
            "| login storm: logins | %s |" % fmt(m("storm_logins"), "%.0f"),
            "| login storm: login duration p50 / p99 / max ms | %s / %s / %s |" % (
                fmt(m("storm_login_p50_ms"), "%.0f"), fmt(m("storm_login_p99_ms"), "%.0f"), fmt(m("storm_login_max_ms"), "%.0f")),
            "| login storm: seconds until all logged in | %s |" % fmt(m("storm_seconds"), "%.2f"),
            "| login storm: chat p50 / p99 / max ms during the storm (%s lines/s) | %s / %s / %s |" % (
                fmt(median([r.get("rate") for r in st]), "%.0f"), fmt(m("storm_lat_p50_ms"), "%.2f"),
                fmt(m("storm_lat_p99_ms"), "%.2f"), fmt(m("storm_lat_max_ms"), "%.1f")),
            "| login storm: chat p99 ms over the whole run / lost | %s / %d |" % (
                fmt(m("lat_p99_ms"), "%.2f"), sum(r.get("lost", 0) for r in st)),
            "| login storm: server CPU %% / bound | %s / %s |" % (
                fmt((m("server_util") or 0) * 100, "%.0f"), "/".join(sorted({str(r.get("bound", "")).split(" (")[0] for r in st})))]
    su = by(results, "startup", "chatd")
    if su:
        m = lambda k: median([r.get(k) for r in su])  # noqa: E731
        chatd_only += [
            "| startup: %s users, %s rooms (%s MB of CSV): seconds until the port accepts | %s |" % (
                fmt(m("users"), "%.0f"), fmt(m("rooms"), "%.0f"), fmt((m("csv_bytes") or 0) / 1e6, "%.0f"),
                fmt(m("listen_seconds"), "%.2f")),
            "| startup: seconds until the first login works | %s |" % fmt(m("first_login_seconds"), "%.2f"),
            "| startup: server RSS after loading (MiB) | %s |" % fmt((m("rss_kib") or 0) / 1024, "%.0f")]
    tr = [r for r in results if r.get("bench_scenario") == "transfer" and r.get("server") == "chatd"]
    if tr:
        good = [r for r in tr if not r.get("skipped") and "error" not in r]
        if good:
            m = lambda k: median([r.get(k) for r in good])  # noqa: E731
            chatd_only += ["| file transfer: MB/s per recipient | %s |" % fmt(m("mb_per_s_per_recipient"), "%.0f"),
                           "| file transfer: server peak RSS growth (MiB) | %s |" % fmt(m("peak_rss_growth_mib"), "%.1f")]
        else:
            chatd_only.append("| file transfer | skipped: %s |" % (tr[0].get("skipped") or tr[0].get("error")))
    if chatd_only:
        out += ["", "### chatd only", "", "| figure | chatd |", "|---|---|"] + chatd_only
    errs = [r for r in results if "error" in r]
    if errs:
        out += ["", "Failed measurements:"] + ["- %s %s run %s%s: %s" % (
            r.get("server"), r.get("bench_scenario"), r.get("run"),
            " at %s/s" % r["bench_rate"] if "bench_rate" in r else "", r["error"]) for r in errs]
    if any(by(results, sc, s) for sc in ("fanout", "fanout-cl") for s in peers):
        out += ["", "Ratios are chatd's median divided by the peer's: above 1 is better for chatd in deliveries/s and"
                " rates, below 1 is better in CPU, latency and memory."]
    return "\n".join(out)


def web_beside_line(results):
    """Markdown lines: chatd's browser front-end (the web-* scenarios) beside its line front-end, same sizes."""
    pairs = [(sc, "web-" + sc) for sc in ("fanout", "fanout-cl", "idle")
             if by(results, "web-" + sc, "chatd")]
    if not pairs:
        return []
    sizes = []
    for line, web in pairs:
        w0 = by(results, web, "chatd")[0]
        sizes.append("idle: %d logged-in connections in %d rooms" % (w0["connections"], w0.get("rooms", 1))
                     if line == "idle" else "%s: %d receivers, %d senders × %d lines" % (
                         web, w0["receivers"], w0["senders"], w0["messages_per_sender"]))
    out = ["", "### chatd: the browser front-end (WebSocket, JSON) beside the line front-end (telnet)", "",
           "Every member a browser user, or every member a telnet user; %s." % "; ".join(sizes), "",
           "| figure | line | browser | browser/line |", "|---|---|---|---|"]

    def row(label, line, web, key, f, scale=1.0):
        a = median([r.get(key) for r in by(results, line, "chatd")])
        b = median([r.get(key) for r in by(results, web, "chatd")])
        a, b = (a * scale if a is not None else None), (b * scale if b is not None else None)
        ratio = "%.2f×" % (b / a) if a and b is not None else "—"
        out.append("| %s | %s | %s | %s |" % (label, fmt(a, f), fmt(b, f), ratio))

    for line, web in pairs:
        if line == "idle":
            what = "idle"
            row(what + ": server KiB per connection", line, web, "kib_per_connection", "%.2f")
            row(what + ": server RSS after (MiB)", line, web, "rss_after_kib", "%.1f", 1 / 1024)
            row(what + ": probe round trip p50 ms", line, web, "probe_p50_ms", "%.3f")
            row(what + ": seconds to log in and join", line, web, "open_seconds", "%.1f")
            continue
        what = "fanout closed loop" if line.endswith("-cl") else "fanout open loop"
        row(what + ": deliveries/s", line, web, "deliveries_per_s", "%.0f")
        row(what + ": server µs CPU per delivery", line, web, "server_us_per_delivery", "%.2f")
        row(what + ": server CPU (% of a core)", line, web, "server_util", "%.0f", 100)
        lost = [sum(r.get(k, 0) for r in by(results, sc, "chatd")) for sc in (line, web) for k in ("lost", "out_of_order", "gaps")]
        out.append("| %s: lost / reordered / gaps (sum over runs) | %d / %d / %d | %d / %d / %d | |" % ((what,) + tuple(lost)))
        bounds = ["/".join(sorted({str(r.get("bound", "")).split(" (")[0] for r in by(results, sc, "chatd")})) or "—"
                  for sc in (line, web)]
        out.append("| %s: bound | %s | %s | |" % (what, bounds[0], bounds[1]))
    return out


def irc_members(results):
    """Markdown lines: the irc-* scenarios, every member an IRC client (bench.peerbench's IrcAdapter): chatd's
    IRC front-end (guests) beside its line front-end (fanout, latency of the same run, if measured) and ngIRCd."""
    if not any(r.get("bench_scenario") in ("irc-fanout", "irc-latency") and "error" not in r for r in results):
        return []
    cols = [("chatd line", "", "chatd"), ("chatd IRC", "irc-", "chatd"), ("ngIRCd", "irc-", "ngircd")]
    out = ["", "### IRC members: chatd's IRC front-end beside its line front-end and ngIRCd", "",
           "Every member an IRC client (guests, `--irc-guests`) in chatd and ngIRCd; the line column is the same run's "
           "fanout/latency with telnet members, if measured. Same room, sizes and CPU method.", "",
           "| figure | " + " | ".join(c[0] for c in cols) + " | chatd IRC/ngIRCd | chatd IRC/line |", "|---" * 6 + "|"]

    def row(label, vals, f):
        cells = [fmt(v, f) for v in vals]
        ratios = ["%.2f×" % (vals[1] / v) if vals[1] is not None and v else "—" for v in (vals[2], vals[0])]
        out.append("| %s | %s |" % (label, " | ".join(cells + ratios)))

    def med(sc, key, scale=1.0, **match):
        vals = []
        for _, prefix, server in cols:
            m = median([r.get(key) for r in by(results, prefix + sc, server, **match)])
            vals.append(m * scale if m is not None else None)
        return vals

    f0 = next(iter(by(results, "irc-fanout", "chatd") + by(results, "irc-fanout", "ngircd")), None)
    if f0:
        what = "fanout (%d receivers, %d senders × %d lines)" % (f0["receivers"], f0["senders"], f0["messages_per_sender"])
        row(what + ": deliveries/s", med("fanout", "deliveries_per_s"), "%.0f")
        row(what + ": server µs CPU per delivery", med("fanout", "server_us_per_delivery"), "%.2f")
        row(what + ": server CPU (% of a core)", med("fanout", "server_util", 100), "%.0f")
        row(what + ": lost + reordered + gaps (sum over runs)", [
            sum(r.get(k, 0) for r in by(results, prefix + "fanout", server) for k in ("lost", "out_of_order", "gaps"))
            if by(results, prefix + "fanout", server) else None for _, prefix, server in cols], "%d")
    rates = sorted({r["bench_rate"] for r in results if r.get("bench_scenario") == "irc-latency" and "bench_rate" in r})
    for rate in rates:
        row("%d lines/s: p50 ms" % rate, med("latency", "lat_p50_ms", bench_rate=rate), "%.2f")
        row("%d lines/s: p99 ms" % rate, med("latency", "lat_p99_ms", bench_rate=rate), "%.2f")
        row("%d lines/s: server µs CPU per delivery" % rate, med("latency", "server_us_per_delivery", bench_rate=rate), "%.2f")
    if rates:
        row("**highest rate with p99 ≤ %.0f ms** (lines/s)" % P99_LIMIT_MS,
            [capacity(results, server, prefix + "latency")[0] or None for _, prefix, server in cols], "%.0f")
    return out


def nodes_table(results):
    """Markdown lines: nodes-fanout and nodes-latency (bench/nodes.py): one room over two nodes on Redis and
    PostgreSQL, beside one such node and the single CSV process of the same run."""
    if not any(str(r.get("bench_scenario")).startswith("nodes-") and "error" not in r for r in results):
        return []
    cols = [("CSV, one process", "chatd"), ("Redis+PG, 1 node", "chatd-1node"), ("Redis+PG, 2 nodes", "chatd-2nodes")]
    out = ["", "### One room over two nodes (issue 17)", "",
           "The same room and load on the single CSV process, one node and two nodes on one Redis and PostgreSQL "
           "(members split evenly); server CPU is both nodes' summed, Redis's and PostgreSQL's postmaster apart.", "",
           "| figure | " + " | ".join(c[0] for c in cols) + " |", "|---" * 4 + "|"]

    def row(label, sc, key, f, scale=1.0):
        vals = [median([r.get(key) for r in by(results, sc, server)]) for _, server in cols]
        out.append("| %s | %s |" % (label, " | ".join(fmt(v * scale if v is not None else None, f) for v in vals)))

    for sc, what in (("nodes-fanout", "fanout"), ("nodes-latency", "latency")):
        r0 = next(iter(by(results, sc, "chatd-2nodes") + by(results, sc, "chatd")), None)
        if r0 is None:
            continue
        if sc == "nodes-latency":
            what = "%d lines/s" % r0.get("bench_rate", 0)
        row(what + ": deliveries/s", sc, "deliveries_per_s", "%.0f")
        row(what + ": server µs CPU per delivery", sc, "server_us_per_delivery", "%.2f")
        row(what + ": server CPU (% of a core)", sc, "server_util", "%.0f", 100)
        row(what + ": Redis + postmaster CPU s", sc, "helper_cpu_s", "%.2f")
        row(what + ": latency p50 ms", sc, "lat_p50_ms", "%.2f")
        row(what + ": latency p99 ms", sc, "lat_p99_ms", "%.2f")
        out.append("| %s: lost + reordered + gaps | %s |" % (what, " | ".join(
            fmt(sum(r.get(k, 0) for r in by(results, sc, server) for k in ("lost", "out_of_order", "gaps"))
                if by(results, sc, server) else None, "%d") for _, server in cols)))
    return out


def genmed(results, sc, srv):
    vals = {}
    for s in srv:
        m = median([r["gen_cpu_s"] / r["seconds"] for r in by(results, sc, s) if r.get("seconds")])
        vals[s] = m * 100 if m is not None else None
    return vals


def plot(results, path):
    """PNG: p99 (and p50) latency against paced rate, one line per server (matplotlib, imported here only)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    colors = {"chatd": "tab:blue", "ngircd": "tab:green", "inspircd": "tab:orange"}
    for s in servers_in(results):
        rates = sorted({r["bench_rate"] for r in by(results, "latency", s)})
        if not rates:
            continue
        p99 = [median([r.get("lat_p99_ms") for r in by(results, "latency", s, bench_rate=x)]) for x in rates]
        p50 = [median([r.get("lat_p50_ms") for r in by(results, "latency", s, bench_rate=x)]) for x in rates]
        c = colors.get(s)
        ax.plot(rates, p99, "o-", color=c, label="%s p99" % s)
        ax.plot(rates, p50, "x:", color=c, alpha=0.6, label="%s p50" % s)
    ax.axhline(P99_LIMIT_MS, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({r["bench_rate"] for r in results if r.get("bench_scenario") == "latency" and "bench_rate" in r})
    if ticks:
        # label the doubling rates only (the bisection's rates in between would overlap)
        ticks = [t for t in ticks if math.log2(t / ticks[0]).is_integer()] or ticks
        ax.set_xticks(ticks)
        ax.set_xticklabels(["%g" % t for t in ticks], fontsize=8)
        ax.minorticks_off()
        ax.text(ticks[0], P99_LIMIT_MS * 1.1, "p99 limit %.0f ms" % P99_LIMIT_MS, color="grey", fontsize=8)
    ax.set_xlabel("lines/s into one room of 100 receivers + 10 senders")
    ax.set_ylabel("delivery latency, ms")
    meta = next((r for r in results if r.get("bench_scenario") == "meta"), {})
    runs = max([r.get("run", 1) for r in results if isinstance(r.get("run"), int)] or [1])
    ax.set_title("Delivery latency against paced rate, median of %d runs, %s" % (runs, meta.get("date", "")[:10]), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
