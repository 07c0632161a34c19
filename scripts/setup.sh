#!/usr/bin/env bash
# Idempotent machine setup: Debian packages and the Python environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(openvswitch-switch mininet zookeeper frr gobgpd iperf3 ethtool iproute2
      bridge-utils tcpdump iputils-ping netcat-openbsd procps psmisc python3-venv
      isc-dhcp-client udhcpc keepalived dnsmasq-base curl ovn-central ovn-host)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || { echo "[setup] apt-get update failed: check the package mirror" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/tmp/midoflow-apt.log 2>&1 \
    || { echo "[setup] apt-get install failed; see /tmp/midoflow-apt.log" >&2; exit 1; }
  # The Debian services are not used: the project starts its own instances.
  for s in openvswitch-switch zookeeper frr; do
    (systemctl stop "$s" 2>/dev/null || service "$s" stop 2>/dev/null || true) >/dev/null 2>&1
  done
fi

# Mininet is installed for /usr/bin/python3; a venv with system site packages sees it.
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating the Python environment in .venv"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.midoflow-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  echo "[setup] installing midoflow and its Python dependencies"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]' || { echo "[setup] pip install failed (is PyPI reachable?)" >&2; exit 1; }
  touch "$stamp"
fi
# ---- Cassandra 5.0 (begin) ---------------------------------------------------
# Cassandra runs from Maven Central's jars on JDK 17 (midoflow.devenv.cassandra):
# Maven and the JDK from Debian, then the jars resolved once into .cache/cassandra/lib
# (scripts/cassandra-jars.sh: skips when cached).
cass_missing=()
for p in maven openjdk-17-jre-headless; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || cass_missing+=("$p")
done
if ((${#cass_missing[@]})); then
  echo "[setup] installing Debian packages for Cassandra: ${cass_missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || { echo "[setup] apt-get update failed: check the package mirror" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${cass_missing[@]}" >/tmp/midoflow-apt-cassandra.log 2>&1 \
    || { echo "[setup] apt-get install failed; see /tmp/midoflow-apt-cassandra.log" >&2; exit 1; }
fi
bash scripts/cassandra-jars.sh || { echo "[setup] could not resolve the Cassandra jars (see above)" >&2; exit 1; }
# ---- Cassandra 5.0 (end) -----------------------------------------------------
# ---- Keystone (begin) --------------------------------------------------------
# A real Keystone for the development environment (midoflow.devenv.keystone), from
# PyPI in its own venv: Debian's package pulls 228 packages and starts its own
# service; keystone's oslo/SQLAlchemy pins stay out of .venv. uwsgi compiles (gcc).
ksv=.keystone-venv
ks_stamp=$ksv/.midoflow-installed
if [ ! -f "$ks_stamp" ]; then
  echo "[setup] installing Keystone and uwsgi into $ksv (about a minute the first time)"
  ks_t0=$(date +%s)
  [ -x "$ksv/bin/python" ] || /usr/bin/python3 -m venv "$ksv"
  "$ksv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$ksv/bin/pip" install -q keystone uwsgi >/tmp/midoflow-keystone-pip.log 2>&1 \
    || { echo "[setup] pip install keystone uwsgi failed (is PyPI reachable? does gcc work?); see /tmp/midoflow-keystone-pip.log" >&2; exit 1; }
  for b in keystone-manage uwsgi; do
    [ -x "$ksv/bin/$b" ] || { echo "[setup] $ksv/bin/$b is missing after pip install: remove $ksv and run make setup again" >&2; exit 1; }
  done
  touch "$ks_stamp"
  echo "[setup] Keystone ready in $ksv ($(( $(date +%s) - ks_t0 )) s)"
fi
# ---- Keystone (end) ----------------------------------------------------------
echo "[setup] ready"
