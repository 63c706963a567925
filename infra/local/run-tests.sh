#!/usr/bin/env bash
# Runs the workspace's tests and closes with one summary line over all test
# binaries: "tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .run
log=.run/test.log
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
