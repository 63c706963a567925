#!/usr/bin/env bash
# Runs the workspace's tests and closes with one summary line over all test
# binaries: "tests: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .run
log=.run/test.log
# Loads in tests run at full speed: on a machine the tests themselves keep
# busy, pacing by latency would slow them as it slows for readers. The
# pacing's own tests set their target.
export FS_INGEST_TARGET_LATENCY_MS="${FS_INGEST_TARGET_LATENCY_MS:-off}"
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
