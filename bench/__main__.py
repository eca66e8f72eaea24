"""`python -m bench`: run the benchmark suite and print a table (see docs/PERFORMANCE.md)."""
import argparse
import os
import resource
import shutil
import sys
import time

from bench import nodes, report
from bench.servers import REPO, ServerError
from bench.suite import SCENARIOS, Suite


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--peers", action="store_true",
                    help="also run fanout, fanout-cl, latency and idle against ngIRCd and InspIRCd (apt-get installs them "
                         "if missing) and print chatd/peer ratios")
    ap.add_argument("--runs", type=int, default=1, help="runs of every scenario; the table shows medians (default 1)")
    ap.add_argument("--quick", action="store_true", help="smoke sizes that run in seconds (checks it works, measures nothing)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated subset of: %s (default all), or of %s (issue 17: chatd nodes on a private "
                         "Redis and PostgreSQL; not in the default)" % (",".join(SCENARIOS), ",".join(nodes.SCENARIOS)))
    ap.add_argument("--out", default="", help="directory for results.jsonl and table.md (default /tmp/chatd-bench-DATE)")
    ap.add_argument("--plot", nargs="?", const=os.path.join(REPO, "docs", "latency.png"), default=None, metavar="PNG",
                    help="draw p99 latency against rate (matplotlib) into PNG (default docs/latency.png)")
    ap.add_argument("--summarize", nargs="+", metavar="JSONL", help="print the table (and --plot) from saved results, run nothing")
    ap.add_argument("--profile", action="store_true",
                    help="sample chatd with py-spy during every measurement (figures are then disturbed); "
                         "collapsed stacks go to --out/profile-*.txt")
    ap.add_argument("--chatd-arg", action="append", metavar="ARG",
                    help="extra option for twistd chatd, e.g. --chatd-arg=--tcp-nodelay=never (repeatable; for "
                         "experiments: the suite's figures use the default configuration)")
    ap.add_argument("--transfer-mib", type=int, default=0, help="file size for the transfer scenario (default 1024 MiB)")
    ap.add_argument("--lf", action="store_true", help="chatd senders end chat lines with LF instead of CRLF (an experiment)")
    ap.add_argument("--refine", type=int, default=None,
                    help="bisection steps between the last rate with p99 <= 10 ms and the first above (default 2; --quick 0)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    ap.add_argument("--lat-seconds", type=float, default=0, help="seconds of paced sending per latency point")
    ap.add_argument("--idle", type=int, default=0, help="idle connections (default 10000, --quick 200)")
    ap.add_argument("--max-rate", type=int, default=0, help="highest paced rate to try (default 64000 lines/s)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds to wait for a quiet machine before each measurement (default 20, --quick 0)")
    ap.add_argument("--tries", type=int, default=None,
                    help="measurements of a point disturbed by other work, at most (default 3; --quick, --profile 1)")
    a = ap.parse_args(argv)
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    bad = [s for s in a.scenarios if s not in SCENARIOS and s not in nodes.SCENARIOS]
    if bad:
        ap.error("unknown scenario(s): %s" % ", ".join(bad))
    if a.runs < 1 or a.runs > 20:
        ap.error("--runs must be 1..20")
    if a.summarize:
        results = report.load(a.summarize)
        print(report.table(results))
        if a.plot:
            print("plot: %s" % report.plot(results, a.plot))
        return 0
    a.out = a.out or "/tmp/chatd-bench-%s" % time.strftime("%Y%m%d-%H%M%S")
    # 10,000 idle connections need about 2 descriptors each across the server and the generator
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    suite = Suite(a)
    try:
        results = suite.run()
    except ServerError as e:
        sys.stderr.write("bench: error: %s\n" % e)
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("bench: interrupted\n")
        return 130
    finally:
        shutil.rmtree(suite.work, ignore_errors=True)  # the servers' temporary directories
    text = report.table(results)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    print("\nraw results: %s" % suite.results_path)
    if a.plot:
        try:
            print("plot: %s" % report.plot(results, a.plot))
        except ImportError:
            sys.stderr.write("bench: --plot needs matplotlib (pip install matplotlib)\n")
    lost = [r for r in results if r.get("lost")]
    if suite.failures or lost:
        sys.stderr.write("bench: %d failed measurement(s), %d with lost lines\n" % (len(suite.failures), len(lost)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
