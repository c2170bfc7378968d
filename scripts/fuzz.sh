#!/usr/bin/env bash
# Fuzzes the pool token, the CA bundle, the CSR and the log chunk endpoint's
# body (fuzz/fuzz_targets/). For each target it first replays every input
# under fuzz/regressions/<target>/ (crashes found before, kept with their
# fix), then fuzzes for GANTRY_FUZZ_SECONDS (default 30) starting from
# fuzz/seeds/<target>/, the regressions and the local fuzz/corpus/<target>/.
# Targets run GANTRY_FUZZ_JOBS at a time (default: the number of CPUs, at
# most 2). A crash, a hang (an input slower than 20 s) or an out-of-memory
# fails the script, which names the input that did it.
#
#   scripts/fuzz.sh [TARGET...]            what `make fuzz` and test-all run
#   GANTRY_FUZZ_SECONDS=600 scripts/fuzz.sh csr
#   GANTRY_FUZZ_PROFILE=release scripts/fuzz.sh   optimised: slower to build, faster to run
#
# The default build is `cargo fuzz build --dev`: unoptimised, except the
# crates the fuzzers spend their time in (fuzz/Cargo.toml, [profile.dev.*]).
# Measured from clean on 2 cores: this build takes 410-475 s of CPU, 3.5 min
# when the machine is otherwise quiet and 6-7.5 min beside two other builds;
# cargo-fuzz's default release build takes 870 s of CPU (14-17 min beside
# those builds: one codegen unit per crate, SQLite's C at -O3), the release
# build at opt-level 1 655 s. Installing cargo-fuzz: 27 s with --debug,
# 100 s in release. Executions per second over 30 s from the seeds, dev
# (release): token 80-110k (120k), ca_bundle 10-18k (20k), csr 13-24k (24k),
# log_chunk 400-630 (2,500). This whole script from nothing: 5 min on a
# quiet machine (install 0.5, build 3.5, fuzzing 1.1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

CARGO_FUZZ_VERSION=0.13.1
SECONDS_PER_TARGET=${GANTRY_FUZZ_SECONDS:-30}
PROFILE=${GANTRY_FUZZ_PROFILE:-dev}
JOBS=${GANTRY_FUZZ_JOBS:-$(($(nproc) < 2 ? $(nproc) : 2))}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(token ca_bundle csr log_chunk)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
    # --debug: it only drives cargo, and builds in a quarter of the time.
    cargo install cargo-fuzz --locked --debug --version "$CARGO_FUZZ_VERSION"
fi

# Rust is memory-safe: what we hunt is panics, overflows (debug assertions
# are on), hangs and runaway memory, so no sanitizer (-s none), which also
# needs no nightly toolchain.
BUILD=(-s none)
case "$PROFILE" in
    dev) BUILD+=(--dev) ;;
    release) ;;
    *) echo "GANTRY_FUZZ_PROFILE must be dev or release, not $PROFILE" >&2; exit 2 ;;
esac
LIBFUZZER=(-timeout=20 -rss_limit_mb=2048)

echo "==> cargo fuzz build ${BUILD[*]} ($(cargo fuzz --version))"
start=$(date +%s)
cargo fuzz build "${BUILD[@]}"
echo "    built in $(($(date +%s) - start)) s"

# One target: replay its regressions, then fuzz; output in artifacts/<target>.log.
fuzz_target() {
    local target=$1 log=artifacts/$1.log
    local regressions=()
    mkdir -p "corpus/$target" "seeds/$target" "regressions/$target" "artifacts/$target"
    mapfile -t regressions < <(find "regressions/$target" -type f | sort)
    {
        if [ ${#regressions[@]} -gt 0 ]; then
            echo "--- replay ${#regressions[@]} input(s) from fuzz/regressions/$target"
            cargo fuzz run "${BUILD[@]}" "$target" "${regressions[@]}" -- "${LIBFUZZER[@]}" || return 1
        fi
        echo "--- fuzz for ${SECONDS_PER_TARGET}s"
        cargo fuzz run "${BUILD[@]}" "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
            "${LIBFUZZER[@]}" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1
    } >"$log" 2>&1
}

report() {
    local target=$1 status=$2 log=artifacts/$1.log
    if [ "$status" -eq 0 ]; then
        echo "==> $target: ok ($(grep -c '^Executed ' "$log" || true) regression(s) replayed;" \
            "$(grep -o 'number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs," \
            "$(grep -o 'average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$')/s," \
            "corpus $(find "corpus/$target" -type f | wc -l) inputs)"
        return
    fi
    echo "==> $target: FAILED"
    grep -E -A4 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -n 40 | sed 's/^/    /'
    if ! grep -q -- "^--- fuzz for" "$log"; then
        echo "    a saved regression failed again: $(sed -n 's/^Running: //p' "$log" | tail -n 1)"
    fi
    local input
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if [ -n "$input" ]; then
        echo "    the input that failed: fuzz/${input#"$PWD"/}"
        echo "    reproduce: (cd fuzz && cargo fuzz run ${BUILD[*]} $target ${input#"$PWD"/})"
        echo "    fix the crate at fault with a unit test, then keep the input in fuzz/regressions/$target/"
    fi
    echo "    full output: fuzz/$log"
}

failed=()
for ((i = 0; i < ${#TARGETS[@]}; i += JOBS)); do
    batch=("${TARGETS[@]:i:JOBS}")
    pids=()
    for target in "${batch[@]}"; do
        echo "==> fuzz $target (${SECONDS_PER_TARGET}s)"
        fuzz_target "$target" &
        pids+=($!)
    done
    for j in "${!batch[@]}"; do
        status=0
        wait "${pids[$j]}" || status=$?
        report "${batch[$j]}" "$status"
        [ "$status" -eq 0 ] || failed+=("${batch[$j]}")
    done
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
