#!/usr/bin/env bash
# The main job, end to end on this machine: a control plane on SQLite, a
# worker pool made from a key generated here, a launcher, and a real run
# whose log streams to your terminal.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
[ -n "${NO_COLOR:-}" ] && say() { printf '\n==> %s\n' "$*"; }

say "building gantry and gantry-launcher"
cargo build --bins --quiet
BIN=$PWD/target/debug

DEMO=$(mktemp -d -t gantry-demo.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export GANTRY_URL=http://127.0.0.1:$PORT
export GANTRY_API_TOKEN=demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DEMO"
}
trap cleanup EXIT

say "starting the control plane on SQLite ($DEMO/data, $GANTRY_URL)"
GANTRY_ADMIN_TOKEN=$GANTRY_API_TOKEN GANTRY_LOG_FORMAT=text "$BIN/gantry" server \
    --listen "127.0.0.1:$PORT" --data-dir "$DEMO/data" 2>"$DEMO/server.log" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "$GANTRY_URL/api/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done

say "generating the pool's key and CSR locally (the key never leaves this machine)"
(cd "$DEMO" && "$BIN/gantry" pool keygen)

say "creating the worker pool 'demo' from the CSR; the token comes back"
"$BIN/gantry" pool create demo --csr "$DEMO/pool.csr" > "$DEMO/pool.token"
echo "token saved to $DEMO/pool.token ($(wc -c < "$DEMO/pool.token") bytes)"

say "starting a launcher with the token and the base64 private key"
GANTRY_TOKEN=$(cat "$DEMO/pool.token") \
GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 < "$DEMO/pool.key") \
GANTRY_EXECUTOR=process GANTRY_WORK_DIR="$DEMO/launcher" \
GANTRY_METADATA_host=$(hostname) GANTRY_LOG_FORMAT=text \
    "$BIN/gantry-launcher" 2>"$DEMO/launcher.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "registered" "$DEMO/launcher.log" 2>/dev/null && break; sleep 0.1; done
"$BIN/gantry" worker list

say "submitting a run and following its log live"
"$BIN/gantry" run submit --pool demo --wait --env GREETING="hello from Gantry" -- sh -c '
    echo "$GREETING"
    echo "running as $(id -un) on $(uname -sr), in $PWD"
    for step in plan apply verify; do echo "step: $step"; sleep 0.4; done
    echo "done"'

say "the run, as the control plane recorded it"
RUN_ID=$("$BIN/gantry" run list --limit 1 --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
"$BIN/gantry" run show "$RUN_ID"

say "draining the launcher (SIGTERM) and stopping the control plane"
