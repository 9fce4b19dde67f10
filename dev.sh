#!/usr/bin/env bash
# The project's two entry points on a fresh machine:
#   ./dev.sh demo   a real ADD, its result and a DEL on an embedded store in ./demo-store (no root)
#   ./dev.sh test   lint, types and the whole test suite (what CI runs)
# Both install what they need into ./.venv first, from this checkout.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || { echo "dev.sh: cannot create a venv with $PYTHON (Debian: apt-get install python3-venv)" >&2; exit 1; }
  fi
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  # Not editable: the tests drive the installed launchers exactly as a runtime would.
  "$VENV/bin/python" -m pip install -q "$@"
}

demo() {
  install .
  local store="$PWD/demo-store" plugin="$VENV/bin/cnipam"
  export IPAM_DB_PATH="$store/ipam.db" CNI_CONTAINERID=demo-container CNI_IFNAME=eth0 CNI_NETNS=/var/run/netns/demo CNI_PATH="$VENV/bin"
  local config='{"cniVersion":"1.0.0","name":"demo","ipam":{"type":"cnipam","ipv4-subnet":"10.88.0.0/24","ipv6-subnet":"fd88::/64","ipv4-routes":[{"dst":"0.0.0.0/0"}]}}'
  echo "store:  $IPAM_DB_PATH"
  echo "config: $config"
  echo "--- ADD"
  echo "$config" | CNI_COMMAND=ADD "$plugin"
  echo "--- CHECK (exit $(echo "$config" | CNI_COMMAND=CHECK "$plugin" >/dev/null; echo $?))"
  echo "--- DEL (exit $(echo "$config" | CNI_COMMAND=DEL "$plugin"; echo $?))"
  echo "--- DEL again, idempotent (exit $(echo "$config" | CNI_COMMAND=DEL "$plugin"; echo $?))"
}

# Real peers the tests compare against or drive (and strace, which counts the store's syncs); installed as root
# (CI), skipped with a reason otherwise.
# podman (4.3 on Debian 12) also pulls in netavark; tests/e2e/test_podman_e2e.py selects the CNI backend itself.
# prometheus: a real server scrapes the daemons, and its promtool checks contrib/cnipam-alerts.yml (tests/metrics/).
DEBIAN_PACKAGES=(containernetworking-plugins iproute2 busybox-static docker.io etcd-server podman prometheus strace)

debian_packages() {
  local missing=()
  for package in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "dev.sh: not root (or no apt-get): tests needing ${missing[*]} will skip" >&2
    return 0
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

test_all() {
  debian_packages
  install ".[test]"
  "$VENV/bin/ruff" check cnipam tests bench campaigns setup.py
  "$VENV/bin/ruff" format --check cnipam tests bench campaigns setup.py
  "$VENV/bin/mypy"
  local status=0
  "$VENV/bin/python" -m pytest "$@" || status=$?
  [ "$status" -eq 5 ] && { echo "dev.sh: pytest collected no tests"; status=0; }
  return "$status"
}

case "${1:-}" in
  demo) demo ;;
  test) shift; test_all "$@" ;;
  *) echo "usage: ./dev.sh demo | ./dev.sh test [pytest args]" >&2; exit 2 ;;
esac
