#!/usr/bin/env bash
# `npm run demo` (scripts/run.sh demo: Node 24 first on PATH, node_modules installed). Checks that this
# is Linux and root, installs the system tools the demo needs when apt-get can (else says which), builds
# dist/tenant-routing and the shim when they are missing or older than its sources, then runs scripts/demo.ts,
# which does everything in network namespaces of its own and removes them on exit, failure or Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "$(uname -s)" != Linux ]; then
  echo "demo: needs Linux (network namespaces, netfilter, policy routing); this is $(uname -s)." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: creates network namespaces, which needs root. Run it as:  sudo npm run demo" >&2
  exit 1
fi
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "demo: no build of the plugin for $(uname -m) (only x86_64 and aarch64)" >&2; exit 1 ;;
esac
# The plugin and the tools run ip, iptables, nft and sysctl, which live in sbin.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

cni=/usr/lib/cni
missing() {
  local m=()
  for tool in ip iptables ip6tables nft openssl sysctl timeout go; do
    command -v "$tool" >/dev/null 2>&1 || m+=("$tool")
  done
  for plugin in ptp host-local portmap; do
    [ -x "$cni/$plugin" ] || m+=("$cni/$plugin")
  done
  echo "${m[*]}"
}
packages="containernetworking-plugins iptables nftables iproute2 openssl procps golang-go"
need=$(missing)
if [ -n "$need" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "demo: missing $need; installing $packages with apt-get ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    # shellcheck disable=SC2086 # a list of package names
    apt-get install -y -qq --no-install-recommends $packages >/dev/null
    need=$(missing)
  fi
  if [ -n "$need" ]; then
    echo "demo: missing $need. Install them (Debian/Ubuntu packages: $packages) and run again." >&2
    exit 1
  fi
fi

binary=dist/tenant-routing
if [ ! -x "$binary" ] || [ ! -x dist/tenant-routing-wrapper ] ||
  [ -n "$(find src bin shim scripts/build.ts package-lock.json -newer "$binary" -print -quit)" ]; then
  echo "demo: building $binary for linux/$arch (missing or older than its sources; about a minute) ..." >&2
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  if ! bash scripts/run.sh build --arch "$arch" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "demo: the build failed (its last lines are above)" >&2
    exit 1
  fi
  rm -f "$log"
  trap - EXIT
fi

node=$(bash scripts/node24.sh)
exec "$node" scripts/demo.ts "$@"
