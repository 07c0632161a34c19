#!/usr/bin/env bash
# The whole test suite: lint, unit, integration (real ZooKeeper), REST fuzzing,
# end to end (real OVS, Mininet, agents). `make test ARGS='-k foo'` passes ARGS
# to pytest and runs just that selection.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYTHONUNBUFFERED=1

if [ "$(id -u)" != 0 ]; then
  echo "[test] the end-to-end tests create network namespaces and OVS instances: run as root" >&2
  exit 2
fi
bash scripts/cleanup.sh >/dev/null 2>&1 || true

if [ $# -gt 0 ]; then
  $PY -m pytest "$@"
  exit $?
fi

echo "[test] ruff"
.venv/bin/ruff check midoflow topologies tests benchmarks || exit 1

start=$(date +%s)
echo "[test] unit, integration and fuzz tests"
$PY -m pytest -q -p no:cacheprovider tests/unit tests/integration
rc1=$?
echo "[test] end-to-end tests (real OVS and agents)"
$PY -m pytest -q -p no:cacheprovider tests/e2e
rc2=$?
echo "[test] done in $(( $(date +%s) - start )) s (unit/integration rc=$rc1, e2e rc=$rc2)"
bash scripts/cleanup.sh >/dev/null 2>&1 || true
[ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]
