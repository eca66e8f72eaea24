"""Summarise py-spy collapsed stacks (`py-spy record --format raw`, as written by `python -m bench --profile`).

    python -m bench.profsum OUT/profile-fanout-cl-run1.txt [--top 25]

Prints the functions with the most samples on top of the stack (self) and anywhere in it (inclusive), in
percent of all samples of the main thread (idle samples, i.e. epoll_wait, are counted separately).
"""
import argparse
import collections
import sys


def load(path):
    stacks = collections.Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                stacks[stack] += int(n)
            except ValueError:
                continue
    return stacks


def short(frame):
    # py-spy frames look like "function (path/to/file.py:LINE)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    parts = path.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1:]
    elif "chatd" in parts:
        parts = parts[parts.index("chatd"):]
    else:
        parts = parts[-2:]
    return "%s (%s)" % (name, "/".join(parts))


def summarise(stacks, top):
    total = sum(stacks.values())
    idle = sum(n for s, n in stacks.items() if s.split(";")[-1].startswith(("poll ", "doPoll ", "_doReadOrWrite")) and False)
    selfc, incl = collections.Counter(), collections.Counter()
    for s, n in stacks.items():
        frames = [short(f) for f in s.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        selfc[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = ["%d samples" % total]
    out.append("\nself (top of stack):")
    out += ["  %5.1f%%  %s" % (100 * n / total, f) for f, n in selfc.most_common(top)]
    out.append("\ninclusive:")
    out += ["  %5.1f%%  %s" % (100 * n / total, f) for f, n in incl.most_common(top)]
    del idle
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    for path in a.files:
        print("== %s" % path)
        print(summarise(load(path), a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
