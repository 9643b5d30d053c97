#!/usr/bin/env bash
# stateful-soak.sh: the stateful random-sequence test of tests/cli/stateful.rs, with many more steps.
#
# Usage: scripts/stateful-soak.sh [STEPS]      (default 2000)
#   STEPS                    how many random steps (backups, killed backups, edits, damage, repair,
#                            verify, restore, cat), in sequences of 40 on fresh workspaces.
#   REDUNDO_STATEFUL_SEED=N  replays a run (each run prints the seed it used, and each sequence its own).
#   CARGO_TARGET_DIR=DIR     builds and runs from DIR; use a folder of its own when something else
#                            may rebuild target/ during the soak (a rebuilt binary fails the run).
#
# It builds like crash-soak.sh: the test profile, in which BLAKE3 (the hot loop) is optimized
# (Cargo.toml), so no second build is needed; about 8 steps a second on 2 cores. After every step the
# model's invariants are checked by the bytes on disk (no loss, no false OK, the source never
# written, no panic); each sequence stops at its first broken invariant and the others go on.
# It prints one summary line:
#   stateful soak: PASSED in 412s: 2000 random steps in 50 sequences (...), 0 failed; seed 123
# or, on failure, each failing sequence's message with a REDUNDO_STATEFUL_SCRIPT='...' that
# replays it, and exits 0 when every sequence passed, 1 when one failed, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

steps="${1:-2000}"
if [[ ! "$steps" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/stateful-soak.sh [STEPS]   (a positive number, default 2000)" >&2
    exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"

log="$(mktemp -t redundo-stateful-soak.XXXXXX)"
started=$(date +%s)
status=0
REDUNDO_STATEFUL_STEPS="$steps" cargo test --test cli stateful:: -- --nocapture \
    --test-threads=1 >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))

summary="$(grep -o '^stateful: .*' "$log" | head -n 1 | sed 's/^stateful: //' || true)"
seed="$(grep -o 'stateful test seed: REDUNDO_STATEFUL_SEED=[0-9]*' "$log" | head -n 1 | sed 's/.*=//' || true)"

if [ "$status" -ne 0 ]; then
    # Show every failing sequence (each message names the invariant, the step, the copies and
    # the script that replays it).
    awk '/^stateful sequence [0-9]+ FAILED:/{show=1; print; next} /^stateful sequence [0-9]+:/{show=0} show' \
        "$log" | head -n 200 >&2 || true
    grep -E 'test result' "$log" >&2 || true
    echo "full output: $log" >&2
    echo "stateful soak: FAILED after ${elapsed}s: ${summary:-the test did not finish} (seed ${seed:-unknown}); replay with REDUNDO_STATEFUL_SEED=<seed> scripts/stateful-soak.sh $steps" >&2
    exit 1
fi
rm -f "$log"
echo "stateful soak: PASSED in ${elapsed}s: ${summary:-?}; seed ${seed:-?}"
