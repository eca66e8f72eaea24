#!/usr/bin/env bash
# Run irctest (third_party/irctest, pinned at b00c039) against chatd's IRC front-end and print the per-module
# table (pass / fail / error / skip), as ../shared/irctest/BASELINES.md measured ngIRCd and InspIRCd.
#
# usage: tests/irctest/run.sh [common|accounts|all|smoke] [extra pytest args...]
#        tests/irctest/run.sh module NAME... (one run per module of the common selection: join, chmodes/ban, ...)
#   common    the common selection: -m 'not Ergo and not deprecated and not strict and not services'
#   accounts  sasl and chathistory (they need accounts): -m 'not Ergo and not Sable and not deprecated and not strict'
#             (the Sable-marked classes test Sable's own history server and need faketime)
#   all       common, then accounts (the default; 5-15 minutes on 2 cores)
#   smoke     the tests in smoke.txt (registration, ping, join, part, privmsg, quit, names, topic, whois, away):
#             what CI runs (tests/test_irctest_smoke.py)
# Results: OUT/chatd-SELECTION.xml and .log (OUT defaults to ./irctest-results); the table covers every
# chatd-*.xml in OUT (a module run later replaces its earlier results). Environment: PYTHON runs pytest
# (default: the repository's .venv/bin/python, else python3; it needs pytest, and pytest-timeout if present
# is used), CHATD_PYTHON runs chatd (see chatd_controller.py), BASELINES (a BASELINES.md to print beside).
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
src=${IRCTEST_SRC:-$root/third_party/irctest}
out=${OUT:-$PWD/irctest-results}; mkdir -p "$out"; out=$(cd "$out" && pwd)
py=${PYTHON:-$root/.venv/bin/python}; [ -x "$py" ] || py=python3
common='not Ergo and not deprecated and not strict and not services'
accounts='not Ergo and not Sable and not deprecated and not strict'
timeout_arg=(); "$py" -c 'import pytest_timeout' 2>/dev/null && timeout_arg=(--timeout 120)
# irctest books its ports in TMPDIR/irctest_ports.json under a lock that is a no-op without the filelock package:
# a TMPDIR of the run's own keeps two runs at once from reading each other's half-written file.
export TMPDIR="$out/tmp"; mkdir -p "$TMPDIR"

run() {  # run LABEL MARKERS [pytest args: paths...]
    local label=$1 markers=$2; shift 2
    local start=$(date +%s)
    (cd "$src" && PYTHONPATH="$here:$src${PYTHONPATH:+:$PYTHONPATH}" timeout 1800 "$py" -m pytest \
        -p irctest_loopback -p no:cacheprovider --controller chatd_controller -m "$markers" \
        --junit-xml "$out/chatd-$label.xml" "${timeout_arg[@]}" -r fEsxX "$@") >"$out/chatd-$label.log" 2>&1
    local rc=$?
    echo "$label: rc=$rc wall=$(( $(date +%s) - start ))s $(tail -1 "$out/chatd-$label.log")"
    return $rc
}

what=${1:-all}; [ $# -gt 0 ] && shift
status=0
case $what in
    common) run common "$common" "$@" || status=$? ;;
    accounts) run accounts "$accounts" irctest/server_tests/sasl.py irctest/server_tests/chathistory.py "$@" || status=$? ;;
    all) run common "$common" "$@" || status=$?
         run accounts "$accounts" irctest/server_tests/sasl.py irctest/server_tests/chathistory.py "$@" || status=$? ;;
    smoke) mapfile -t ids <"$here/smoke.txt"; run smoke "$common" "${ids[@]}" "$@" || status=$? ;;
    module) for m in "$@"; do run "module-${m//\//.}" "$common" "irctest/server_tests/$m.py" || status=$?; done ;;
    *) echo "usage: $0 [common|accounts|all|smoke] [pytest args...] | module NAME..." >&2; exit 2 ;;
esac
# "rc 1" is pytest's "some tests failed": the table says which; anything else is an error of the run itself.
shopt -s nullglob; xmls=("$out"/chatd-*.xml)
[ ${#xmls[@]} -gt 0 ] && "$py" "$here/table.py" ${BASELINES:+--baselines "$BASELINES"} "${xmls[@]}"
exit $status
