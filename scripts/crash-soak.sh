#!/usr/bin/env bash
# crash-soak.sh: the crash-consistency tests of tests/cli/crash.rs, with many more kills.
#
# Usage: scripts/crash-soak.sh [KILLS]      (default 1000)
#   KILLS                 how many `redundo backup` runs are SIGKILLed at random moments; the
#                         repair test kills max(KILLS/5, 5) repairs.
#   REDUNDO_CRASH_SEED=N  replays a run (each run prints the seed it used).
#   CARGO_TARGET_DIR=DIR  builds and runs from DIR; use a folder of its own when something else
#                         may rebuild target/ during the soak (a rebuilt binary fails the run).
#
# After every kill it checks that no copy at its final name is torn and that `verify` reports
# no damage; at the end every target must equal the source. It prints one summary line:
#   crash soak: PASSED: backup: 812 of 1000 runs killed mid-run, 118342 copies checked, none torn; repair: 200 kill-and-repair rounds, nothing lost, every repair finished; seed 123
#   (seeds: the backup test's, then the repair test's)
# and exits 0 when both tests pass, 1 when one fails, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

kills="${1:-1000}"
if [[ ! "$kills" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/crash-soak.sh [KILLS]   (a positive number, default 1000)" >&2
    exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"

log="$(mktemp -t redundo-crash-soak.XXXXXX)"
started=$(date +%s)
status=0
REDUNDO_CRASH_KILLS="$kills" cargo test --test cli crash:: -- --nocapture --test-threads=1 \
    >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - started ))

summary="$(grep -o 'backup kills: .*' "$log" | head -n 1 | sed 's/^backup kills: //' || true)"
seeds="$(grep -o 'REDUNDO_CRASH_SEED=[0-9]*' "$log" | sed 's/.*=//' | awk '!seen[$0]++' | paste -sd, - || true)"
rounds=$(( kills / 5 > 5 ? kills / 5 : 5 ))

if [ "$status" -ne 0 ]; then
    # Show the failure (the test's own message names the kill, the delay and the seed).
    grep -A 3 -E 'panicked' "$log" | head -n 40 >&2 || true
    grep -E 'REDUNDO_CRASH_SEED|test result' "$log" >&2 || true
    echo "full output: $log" >&2
    echo "crash soak: FAILED after ${elapsed}s with $kills kills (seed ${seeds:-unknown}); replay with REDUNDO_CRASH_SEED=<seed> scripts/crash-soak.sh $kills" >&2
    exit 1
fi
rm -f "$log"
echo "crash soak: PASSED in ${elapsed}s: backup: ${summary:-?}; repair: $rounds kill-and-repair rounds, nothing lost, every repair finished; seeds (backup,repair) ${seeds:-?}"
