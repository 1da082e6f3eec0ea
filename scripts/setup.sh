#!/usr/bin/env bash
# Installs everything the gateway needs on a fresh Debian machine: etcd and
# etcdctl from Debian, the npm packages, and the build. With --test, also
# Debian's Chromium (browser tests) and python3-etcd3gw (a real /v3 client).
# Safe to run again: each step is skipped or repeated harmlessly.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=()
command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1 || packages+=(etcd-server etcd-client)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)
  command -v ss >/dev/null 2>&1 || packages+=(iproute2)
  # A real etcd JSON-gateway client for the /v3 compatibility tests.
  /usr/bin/python3 -c 'import etcd3gw' >/dev/null 2>&1 || packages+=(python3-etcd3gw)
fi
if [ ${#packages[@]} -gt 0 ]; then
  echo "setup: installing ${packages[*]} from Debian"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi

# npm ci only when the lock file changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  npm ci --no-audit --no-fund
fi

echo "setup: building"
npm run build --silent
