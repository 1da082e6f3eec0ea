#!/usr/bin/env bash
# Command 2 of the README: set up, then run the whole test suite against real
# etcd clusters that the tests start and stop themselves.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
npx tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

# tap's summary reads `# { total: N, pass: P, fail: F }`; restate it as the
# plain closing line CI systems look for.
summary=$(grep -a -E '^# \{ total: [0-9]+' "$log" | tail -n 1)
if [ -n "$summary" ]; then
  pass=$(sed -E 's/.*pass: ([0-9]+).*/\1/' <<<"$summary")
  fail=$(grep -oE 'fail: [0-9]+' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
  echo "tests: ${pass} passed, ${fail:-0} failed"
fi
exit "$status"
