#!/usr/bin/env bash
# Run one end-to-end test file N times and report how often each test passed.
#
#   scripts/repeat-e2e.sh tests/e2e/test_agent_restart.py 20 [pytest args...]
#
# One ZooKeeper and one Cassandra serve every run (started here, stopped on
# exit) unless MIDOFLOW_ZK_HOSTS / MIDOFLOW_CASSANDRA_HOSTS name your own.
# Each run's output is kept in $OUT (default: a new temp dir); a failed run's
# is named run-<i>.FAILED.txt. The last line is machine-readable:
#   repeat-e2e: <file> runs=<N> all_passed=<runs with no failure> <test>=<passes>/<N> ...
# Exit status: 0 if every run passed. Needs root (Mininet, OVS), like the e2e tests.
set -u
cd "$(dirname "$0")/.."

file=${1:?usage: scripts/repeat-e2e.sh TEST_FILE N [pytest args...]}
n=${2:?usage: scripts/repeat-e2e.sh TEST_FILE N [pytest args...]}
shift 2
[ -f "$file" ] || { echo "repeat-e2e: no such test file: $file" >&2; exit 2; }
case $n in ''|*[!0-9]*) echo "repeat-e2e: N must be a positive integer, not '$n'" >&2; exit 2;; esac
py=.venv/bin/python
[ -x "$py" ] || { echo "repeat-e2e: $py not found: run 'make setup' first" >&2; exit 2; }

OUT=${OUT:-$(mktemp -d /tmp/repeat-e2e.XXXXXX)}
mkdir -p "$OUT"
started=()
cleanup() {
    for svc in "${started[@]}"; do
        "$py" -m "midoflow.devenv.$svc" stop --dir "$OUT/$svc" >/dev/null 2>&1
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${MIDOFLOW_ZK_HOSTS:-}" ]; then
    MIDOFLOW_ZK_HOSTS=$("$py" -m midoflow.devenv.zookeeper start --background \
                        --dir "$OUT/zookeeper" 2>"$OUT/zookeeper.err" | tail -1) \
        || { echo "repeat-e2e: ZooKeeper did not start: see $OUT/zookeeper.err" >&2; exit 1; }
    started+=(zookeeper)
fi
if [ -z "${MIDOFLOW_CASSANDRA_HOSTS:-}" ]; then
    MIDOFLOW_CASSANDRA_HOSTS=$("$py" -m midoflow.devenv.cassandra start --background \
                               --dir "$OUT/cassandra" 2>"$OUT/cassandra.err" | tail -1) \
        || { echo "repeat-e2e: Cassandra did not start: see $OUT/cassandra.err" >&2; exit 1; }
    started+=(cassandra)
fi
export MIDOFLOW_ZK_HOSTS MIDOFLOW_CASSANDRA_HOSTS

declare -A passed=()
all=0
for i in $(seq 1 "$n"); do
    log="$OUT/run-$i.txt"
    t0=$(date +%s)
    "$py" -m pytest -q -p no:cacheprovider -rA "$file" "$@" >"$log" 2>&1
    rc=$?
    # every test of the file, from the -rA summary: "PASSED path::name", "FAILED path::name - ..."
    while read -r status test; do
        test=${test%% *}
        test=${test##*::}
        [ -n "${passed[$test]+x}" ] || passed[$test]=0
        [ "$status" = PASSED ] && passed[$test]=$((passed[$test] + 1))
    done < <(grep -E '^(PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) ' "$log")
    if [ $rc -eq 0 ]; then
        all=$((all + 1))
        verdict=passed
    else
        mv "$log" "$OUT/run-$i.FAILED.txt"
        verdict="FAILED (exit $rc): $OUT/run-$i.FAILED.txt"
    fi
    echo "run $i/$n: $verdict in $(( $(date +%s) - t0 )) s; $all of $i runs passed" >&2
done

summary="repeat-e2e: $file runs=$n all_passed=$all"
for t in $(printf '%s\n' "${!passed[@]}" | sort); do
    summary+=" $t=${passed[$t]}/$n"
done
echo "$summary"
[ "$all" -eq "$n" ]
