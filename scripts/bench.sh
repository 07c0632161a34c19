#!/usr/bin/env bash
# Every benchmark; each prints one "BENCH name: value vs baseline (ratio)" line
# and writes benchmarks/results/<name>.json. `make bench ARGS=sim_l2` runs only
# the benchmarks whose module name contains ARGS.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONUNBUFFERED=1
filter="${1:-}"
rc=0
for f in benchmarks/bench_*.py; do
  mod=$(basename "$f" .py)
  [[ -n "$filter" && "$mod" != *"$filter"* ]] && continue
  echo "[bench] $mod"
  if ! $PY -m "benchmarks.$mod"; then
    echo "[bench] $mod FAILED" >&2
    rc=1
  fi
done
echo "[bench] results in benchmarks/results/"
exit $rc
