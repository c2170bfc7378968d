#!/usr/bin/env bash
# Benchmarks against the real binaries: dispatch latency, burst, throughput,
# idle launcher memory, idle workers held by one server. `make bench` runs it.
#
#   ./scripts/bench.sh                 # everything (about 10 minutes)
#   ./scripts/bench.sh --quick         # shorter
#   ./scripts/bench.sh --only dispatch,burst
#   ./scripts/bench.sh --help          # every option
#
# The figures are printed as a table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --release (gantry, gantry-launcher, gantry-bench)" >&2
cargo build --release --quiet -p gantry -p gantry-bench

exec ./target/release/gantry-bench --bin-dir ./target/release "$@"
