#!/usr/bin/env bash
# Benchmarks against the real binaries: dispatch latency, burst, throughput,
# idle launcher memory, idle workers held by one server. `make bench` runs it.
#
#   ./scripts/bench.sh                 # everything (about 10 minutes)
#   ./scripts/bench.sh --quick         # shorter
#   ./scripts/bench.sh --only dispatch,burst
#   ./scripts/bench.sh --with-postgres --replicas 3   # also on a throwaway PostgreSQL, 3 replicas
#   ./scripts/bench.sh --help          # every option
#
# --with-postgres (this script's own option) starts a throwaway PostgreSQL
# cluster with production durability (scripts/throwaway-postgres.sh
# --durable), passes its URL as --database-url, and removes it afterwards.
#
# The figures are printed as a table on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo build --release (gantry, gantry-launcher, gantry-bench)" >&2
cargo build --release --quiet -p gantry -p gantry-bench

args=()
with_postgres=
for arg in "$@"; do
    if [ "$arg" = --with-postgres ]; then with_postgres=1; else args+=("$arg"); fi
done
if [ -n "$with_postgres" ]; then
    pg_dir=$PWD/target/bench-postgres
    ./scripts/throwaway-postgres.sh stop "$pg_dir"
    trap './scripts/throwaway-postgres.sh stop "$pg_dir"' EXIT
    url=$(./scripts/throwaway-postgres.sh start "$pg_dir" --durable)
    args+=(--database-url "$url")
fi
./target/release/gantry-bench --bin-dir ./target/release "${args[@]}"
