#!/usr/bin/env bash
# Run every cargo-fuzz target under fuzz/ for SECONDS each (default 60) and print how many
# inputs each one executed. Builds the targets the way `cargo fuzz build` does (libFuzzer with
# sanitizer coverage and AddressSanitizer), on the stable toolchain: RUSTC_BOOTSTRAP=1 admits
# the -Z flag, so neither nightly nor cargo-fuzz is needed. CI runs it for a few seconds per
# target (scripts/test.sh); run it longer by hand:
#
#   scripts/fuzz.sh 600                  # every target, 10 minutes each
#   scripts/fuzz.sh 60 frame_parse       # one target
#
# Crashes are written to fuzz/artifacts/TARGET/ and fail the script; the corpus grows in
# fuzz/corpus/TARGET/ (both are ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^tapnet-fuzz$')
fi

# The fuzz builds' own target dir, whatever CARGO_TARGET_DIR says: the binaries are run from it,
# and their sanitizer flags would rebuild a shared one from scratch.
export CARGO_TARGET_DIR="$PWD/target"
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Zsanitizer=address \
-Cdebug-assertions -Coverflow-checks"
export ASAN_OPTIONS=detect_leaks=0
TRIPLE=x86_64-unknown-linux-gnu
cargo build --release --target "$TRIPLE" --bins --quiet

status=0
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    if "target/$TRIPLE/release/$target" "corpus/$target" -max_total_time="$SECONDS_EACH" \
        -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $target: ${runs:-?} executions in ${SECONDS_EACH} s, no failure"
    else
        echo "fuzz $target: FAILED (see fuzz/artifacts/$target/)"
        tail -n 30 "$log"
        status=1
    fi
    rm -f "$log"
done
exit $status
