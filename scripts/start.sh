#!/usr/bin/env bash
# Command 1 of the README: set up, then start the gateway on http://127.0.0.1:8080.
# With ETCD_ENDPOINTS unset it runs an embedded single-member etcd under ./data/etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec npm start --silent
