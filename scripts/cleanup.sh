#!/usr/bin/env bash
# Remove what earlier (crashed or interrupted) midoflow runs left behind:
#   * cloud hosts' OVS daemons (rundirs /tmp/mfl*) and Mininet shells (mininet:mfl*),
#     and every process living in their network namespaces (iperf3, nc, ...);
#   * midoflow agents (osken-manager running midoflow.apps.agent), and the
#     ZooKeeper servers, Cassandra nodes and Keystone servers started by midoflow.devenv;
#   * interfaces and bridges in the root namespace named mfl*, named netns mfl*,
#     and gateway agents' BGP links (mb<10 hex>) and namespaces (mbgp-<10 hex>),
#     health checkers' links (mh<10 hex>) and namespaces (mfhm-*);
#   * /tmp/mfl*-* run directories.
# It never touches the system OVS, other Mininet users, or anything not named
# with the project's prefixes (so it does NOT run `mn -c`, which killall's every
# mnexec and ovs-testcontroller on the machine).
#
# Usage: scripts/cleanup.sh [--dry-run] [--prefix mflXXXX] [--no-services]
#   --prefix      only this cloud's leftovers (default: every mfl* cloud)
#   --no-services keep agents and ZooKeeper (only clouds)
set -uo pipefail

PREFIX=mfl
DRY=0
SERVICES=1
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --prefix) PREFIX="$2"; shift ;;
    --no-services) SERVICES=0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "cleanup: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$PREFIX" == mfl* ]] || { echo "cleanup: prefix must start with mfl" >&2; exit 2; }
if [ "$(id -u)" != 0 ]; then
  echo "cleanup: needs root (namespaces, interfaces): run with sudo" >&2
  exit 2
fi

run() { if ((DRY)); then echo "would: $*"; else "$@" 2>/dev/null; fi; }
say() { echo "[cleanup] $*"; }

root_ns=$(readlink /proc/1/ns/net)
self=$$
declare -A nsset=()
declare -a kill_pids=()

for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$self" ] && continue
  cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
  [ -n "$cmd" ] || continue
  match=0
  case "$cmd" in
    *ovsdb-server*"/tmp/$PREFIX"*|*ovs-vswitchd*"/tmp/$PREFIX"*) match=1 ;;
    *"mininet:$PREFIX"*) match=1 ;;
  esac
  if ((SERVICES)) && [ "$PREFIX" = mfl ]; then
    case "$cmd" in
      *osken-manager*midoflow.apps.agent*|*midoflow-agent*) match=1 ;;
      *QuorumPeerMain*)
        cwd=$(readlink "$d/cwd" 2>/dev/null)
        case "$cwd $cmd" in *midoflow-zk*) match=1 ;; esac ;;
      *keystone-venv/bin/uwsgi*keystone.wsgi*) match=1 ;;  # midoflow.devenv.keystone
      *CassandraDaemon*)  # the project's nodes run from its jar cache
        case "$cmd" in *cassandra/lib*|*midoflow-cassandra*) match=1 ;; esac ;;
    esac
  fi
  ((match)) || continue
  kill_pids+=("$pid")
  ns=$(readlink "$d/ns/net" 2>/dev/null) || continue
  [ "$ns" != "$root_ns" ] && nsset["$ns"]=1
done

# Everything inside those namespaces goes too (so the namespaces vanish).
if ((${#nsset[@]})); then
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = "$self" ] && continue
    ns=$(readlink "$d/ns/net" 2>/dev/null) || continue
    [ -n "${nsset[$ns]:-}" ] && kill_pids+=("$pid")
  done
fi

if ((${#kill_pids[@]})); then
  mapfile -t uniq < <(printf '%s\n' "${kill_pids[@]}" | sort -un)
  say "killing ${#uniq[@]} process(es): ${uniq[*]}"
  for p in "${uniq[@]}"; do
    ((DRY)) && { echo "would: kill -9 $p ($(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | cut -c1-100))"; continue; }
    kill -9 "$p" 2>/dev/null
  done
  ((DRY)) || sleep 0.3
fi

# Root-namespace interfaces (underlay bridges mfl*ul, veths mfl*uN).
links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^$PREFIX" || true)
for l in $links; do say "deleting link $l"; run ip link del "$l"; done

# Agents' BGP links (mb + 10 hex digits of the uplink port id) left by a
# killed gateway agent: only when cleaning up every cloud.
if ((SERVICES)) && [ "$PREFIX" = mfl ]; then
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^mb[0-9a-f]{10}$' || true); do
    say "deleting BGP link $l"; run ip link del "$l"
  done
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mbgp-[0-9a-f]{1,10}$' || true); do
    say "deleting BGP namespace $n"; run ip netns del "$n"
  done
  # health checkers' links (mh + 10 hex) and namespaces (mfhm-<lb>-<host>)
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^mh[0-9a-f]{10}$' || true); do
    say "deleting health-check link $l"; run ip link del "$l"
  done
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mfhm-' || true); do
    say "deleting health-check namespace $n"; run ip netns del "$n"
  done
fi

# Named network namespaces, if any tool created some with our prefix.
for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX" || true); do
  say "deleting netns $n"; run ip netns del "$n"
done

# Run directories of clouds no process uses any more.
for dir in /tmp/"$PREFIX"*-*; do
  [ -d "$dir" ] || continue
  if ! grep -qs -- "$dir" /proc/[0-9]*/cmdline 2>/dev/null; then
    say "removing $dir"; run rm -rf -- "$dir"
  fi
done
say "done"
exit 0
