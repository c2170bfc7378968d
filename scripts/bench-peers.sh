#!/usr/bin/env bash
# Gantry beside a real peer, Prefect (its server and a process work pool),
# on this machine in one invocation: pickup latency p50/p90, a 40-run burst
# on 4 workers, idle worker memory, side by side as ratios. `make
# bench-peers` runs it; it is not part of test-all. docs/benchmarks.md says
# how each figure is measured and what it gave.
#
#   ./scripts/bench-peers.sh                   # everything (about 20 minutes after the build)
#   ./scripts/bench-peers.sh --quick           # a smoke run: 5 samples, a 12-run burst, polling 1 s only
#   ./scripts/bench-peers.sh --samples 40      # more pickup samples
#
# Gantry: release binaries and crates/bench's `peer` benchmark. Prefect: the
# pinned scripts/bench-peers/requirements.txt in a throwaway venv,
# target/bench-peers/venv (never the test venv), measured by
# scripts/bench-peers/prefect.py with Prefect's default worker polling
# (10 s) and with 1 s. Results: target/bench-peers/{gantry,prefect}.json and
# table.txt. Progress goes to stderr, the table to stdout. Every process it
# starts ends with it, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/bench-peers
VENV=$OUT/venv
REQUIREMENTS=scripts/bench-peers/requirements.txt
samples=20 burst=40 workers=4 query=10,1 build=1

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

Options:
  --samples N          pickup latency samples on each system (default 20)
  --burst N            runs in the burst (default 40)
  --workers N          workers on each system, one run at a time each (default 4)
  --query-seconds L    Prefect worker polling settings, comma-separated (default 10,1)
  --quick              --samples 5 --burst 12 --query-seconds 1
  --no-build           use the release binaries already in target/release
EOF
}

number() {
    [[ $2 =~ ^[1-9][0-9]*$ ]] || { echo "bench-peers: $1 needs a positive whole number, got '$2'" >&2; exit 2; }
}

while [[ $# -gt 0 ]]; do
    case $1 in
        --samples) number "$1" "${2:-}"; samples=$2; shift 2 ;;
        --burst) number "$1" "${2:-}"; burst=$2; shift 2 ;;
        --workers) number "$1" "${2:-}"; workers=$2; shift 2 ;;
        --query-seconds)
            [[ ${2:-} =~ ^[0-9.]+(,[0-9.]+)*$ ]] || { echo "bench-peers: --query-seconds needs seconds, comma-separated (e.g. 10,1), got '${2:-}'" >&2; exit 2; }
            query=$2; shift 2 ;;
        --quick) samples=5 burst=12 query=1; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench-peers: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

# Each step runs in the background and is waited for, so a signal reaches
# this trap at once; the trap passes it on as SIGTERM, on which gantry-bench
# and prefect.py stop everything they started and remove their temporary
# directories.
child=
# shellcheck disable=SC2317 # called by the trap below
stop_child() {
    trap '' INT TERM HUP
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    echo "bench-peers: interrupted; stopped what it had started" >&2
    exit 130
}
trap stop_child INT TERM HUP
step() {
    "$@" &
    child=$!
    local status=0
    wait "$child" || status=$?
    child=
    return "$status"
}

load() { cut -d' ' -f1-3 /proc/loadavg; }

mkdir -p "$OUT"
command -v python3 >/dev/null || { echo "bench-peers: needs python3 (with venv) for Prefect" >&2; exit 1; }

# The venv is reinstalled whenever the pinned requirements change.
stamp=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ ! -x $VENV/bin/prefect || "$(cat "$VENV/.requirements" 2>/dev/null)" != "$stamp" ]]; then
    echo "==> a throwaway venv for Prefect: $VENV" >&2
    rm -rf "$VENV"
    step python3 -m venv "$VENV"
    step "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$stamp" > "$VENV/.requirements"
fi

if [[ $build = 1 ]]; then
    echo "==> cargo build --release (gantry, gantry-launcher, gantry-bench)" >&2
    step cargo build --release --quiet -p gantry -p gantry-bench
fi
for bin in gantry gantry-launcher gantry-bench; do
    [[ -x target/release/$bin ]] || { echo "bench-peers: target/release/$bin is missing; run without --no-build" >&2; exit 1; }
done

load_gantry=$(load)
echo "==> Gantry: $samples pickup samples, $burst runs on $workers launchers (load $load_gantry)" >&2
step ./target/release/gantry-bench --bin-dir ./target/release --only peer \
    --peer-samples "$samples" --peer-burst "$burst" --peer-workers "$workers" \
    --json "$OUT/gantry.json" > "$OUT/gantry.txt"

load_prefect=$(load)
echo "==> Prefect: $samples pickup samples, $burst runs on $workers workers, polling $query s (load $load_prefect)" >&2
# A polling setting that failed is reported in the table; the exit status says so too.
prefect_status=0
rm -f "$OUT/prefect.json"
step "$VENV/bin/python" scripts/bench-peers/prefect.py --out "$OUT/prefect.json" \
    --samples "$samples" --burst "$burst" --workers "$workers" --query-seconds "$query" || prefect_status=$?
[[ -f $OUT/prefect.json ]] || exit "$prefect_status"

step python3 scripts/bench-peers/table.py --gantry "$OUT/gantry.json" --prefect "$OUT/prefect.json" \
    --gantry-version "$(./target/release/gantry --version)" \
    --note "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs); load average (1, 5, 15 min) before Gantry $load_gantry, before Prefect $load_prefect, at the end $(load)" \
    --note "command: ./scripts/bench-peers.sh --samples $samples --burst $burst --workers $workers --query-seconds $query" \
    > "$OUT/table.txt"
cat "$OUT/table.txt"
exit "$prefect_status"
