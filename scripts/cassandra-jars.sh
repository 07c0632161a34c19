#!/usr/bin/env bash
# Resolve Apache Cassandra 5.0 (org.apache.cassandra:cassandra-all and its
# runtime dependencies, from Maven Central) into one folder, once:
#   .cache/cassandra/lib in the source tree (or $MIDOFLOW_CASSANDRA_LIB).
# Idempotent: does nothing when that folder already holds the version named in
# scripts/cassandra-pom.xml. Needs Maven and a JDK (make setup installs them).
# midoflow.devenv.cassandra runs the nodes from that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
POM=$PWD/scripts/cassandra-pom.xml
LIB=${MIDOFLOW_CASSANDRA_LIB:-$PWD/.cache/cassandra/lib}
VERSION=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM")
say() { echo "[cassandra-jars] $*"; }
err() { echo "[cassandra-jars] $*" >&2; }

cached() { [ -f "$LIB/.resolved" ] && [ "$(cat "$LIB/.resolved")" = "$VERSION" ]; }
if cached; then
  say "Cassandra $VERSION jars cached in $LIB"
  exit 0
fi

mkdir -p "$(dirname "$LIB")"
# One resolver at a time (parallel test workers, setup and a test run).
exec 9>"$(dirname "$LIB")/.lock"
flock 9
if cached; then
  say "Cassandra $VERSION jars cached in $LIB"
  exit 0
fi

command -v mvn >/dev/null || { err "mvn not found: run \`make setup\` (installs Debian's maven)"; exit 1; }
# Maven runs on any JDK; prefer 17 (a newer default java may be present too).
if [ -z "${JAVA_HOME:-}" ] && [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]; then
  export JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
fi

log=$(dirname "$LIB")/mvn.log
tmp=$(mktemp -d "$LIB.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "resolving cassandra-all $VERSION and its runtime dependencies from Maven Central into $LIB (first time on a machine: under a minute; log $log) ..."
start=$(date +%s)
mvn -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$tmp" >"$log" 2>&1 &
pid=$!
n=0
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  n=$((n + 1))
  if ((n % 15 == 0)) && kill -0 "$pid" 2>/dev/null; then
    say "still resolving ($(( $(date +%s) - start )) s; $(grep -c 'Downloaded from' "$log" || true) files downloaded) ..."
  fi
done
if ! wait "$pid"; then
  err "Maven failed: see $log (is Maven Central reachable?)"
  tail -n 15 "$log" >&2
  exit 1
fi
ls "$tmp"/cassandra-all-"$VERSION".jar >/dev/null 2>&1 || { err "cassandra-all-$VERSION.jar missing after Maven ran: see $log"; exit 1; }
echo "$VERSION" >"$tmp/.resolved"
rm -rf "$LIB"
mv "$tmp" "$LIB"
trap - EXIT
say "$(ls "$LIB"/*.jar | wc -l) jars ($(du -sh "$LIB" | cut -f1)) in $LIB in $(( $(date +%s) - start )) s"
