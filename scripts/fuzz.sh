#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (GANTRY_FUZZ_SECONDS each,
# default 15), after replaying the saved regression inputs. A crash fails
# the script; save its input under fuzz/regressions/<target>/ with the fix.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET=${GANTRY_FUZZ_SECONDS:-15}
TARGETS=(token ca_bundle csr log_chunk)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
# cargo-fuzz passes nightly-only flags; this stable toolchain accepts them so.
export RUSTC_BOOTSTRAP=1

# Rust is memory-safe: what we hunt is panics, so skip ASan (much faster builds).
cargo fuzz build -s none
for target in "${TARGETS[@]}"; do
    mkdir -p "corpus/$target"
    if [ -d "regressions/$target" ]; then
        cp -n "regressions/$target"/* "corpus/$target/" 2>/dev/null || true
    fi
    echo "==> fuzz $target for ${SECONDS_PER_TARGET}s"
    cargo fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 30
done
