#!/usr/bin/env bash
# Benchmark: a trivial run end to end through Gantry (the Docker executor)
# against a raw `docker run --rm` of the same image with the same command.
# The brief's target: Gantry takes at most 1.2x the time of docker run.
#
#   ./scripts/bench-docker.sh                  # 30 runs each, after 3 warm-ups
#   ./scripts/bench-docker.sh --runs 100
#   ./scripts/bench-docker.sh --bin-dir target/debug   # skip the release build
#
# "Through Gantry" is what a user waits for: `gantry run submit --wait`
# (submit, dispatch to an idle launcher, container create/attach/start/wait/
# remove, log upload, the end reported, the CLI printing the log and the end).
# `docker run --rm` does the same container work from the docker CLI. Both
# run `echo hello` in gantry-runner:<version>, timed by hyperfine (Debian).
# A control plane (SQLite, loopback) and one launcher are started for it and
# stopped at the end; nothing leaves this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=30
WARMUP=3
BIN_DIR=
while (($#)); do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --bin-dir) BIN_DIR=$2; shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-docker: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
IMAGE=gantry-runner:$VERSION

if ! command -v hyperfine >/dev/null; then
    log "apt-get install hyperfine"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get install -y -qq hyperfine >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq hyperfine >/dev/null; }
fi
if [ -z "$BIN_DIR" ]; then
    log "cargo build --release (gantry, gantry-launcher)"
    cargo build --release --quiet -p gantry --bin gantry --bin gantry-launcher
    BIN_DIR=$ROOT/target/release
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
GANTRY=$BIN_DIR/gantry
log "images (scripts/build-images.sh runner)"
"$ROOT/scripts/build-images.sh" runner >/dev/null

WORK=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export GANTRY_URL=http://127.0.0.1:$port GANTRY_API_TOKEN=bench-admin-token-0123456789 NO_COLOR=1
log "control plane on $GANTRY_URL"
GANTRY_ADMIN_TOKEN=$GANTRY_API_TOKEN GANTRY_LOG_FORMAT=json GANTRY_LOG_LEVEL=warn \
    "$GANTRY" server --listen "127.0.0.1:$port" --data-dir "$WORK/data" 2>"$WORK/server.log" &
pids+=($!)
for _ in $(seq 100); do curl -fs "$GANTRY_URL/api/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done

openssl req -new -newkey rsa:2048 -nodes -keyout "$WORK/pool.key" -out "$WORK/pool.csr" -subj /CN=bench 2>/dev/null
token=$("$GANTRY" pool create bench --csr "$WORK/pool.csr" --output json | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
GANTRY_TOKEN=$token GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 <"$WORK/pool.key") \
    GANTRY_EXECUTOR=docker GANTRY_DEFAULT_RUNNER_IMAGE=$IMAGE GANTRY_WORK_DIR=$WORK/launcher \
    GANTRY_LOG_FORMAT=json GANTRY_LOG_LEVEL=warn \
    "$BIN_DIR/gantry-launcher" 2>"$WORK/launcher.log" &
pids+=($!)
for _ in $(seq 100); do
    [ "$("$GANTRY" worker list --output json 2>/dev/null | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))' 2>/dev/null)" = 1 ] && break
    sleep 0.1
done

log "$RUNS runs each (after $WARMUP warm-ups): echo hello in $IMAGE"
hyperfine --style basic --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/results.json" \
    --command-name 'docker run --rm' "docker run --rm $IMAGE echo hello" \
    --command-name 'gantry run submit --wait' "$GANTRY run submit --pool bench --wait -- echo hello" >&2

python3 - "$WORK/results.json" "$RUNS" <<'EOF'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
docker, gantry = results["docker run --rm"], results["gantry run submit --wait"]
ratio_mean = gantry["mean"] / docker["mean"]
ratio_median = gantry["median"] / docker["median"]
print(f"{'what':<28}{'mean':>10}{'median':>10}{'min':>10}{'max':>10}")
for name, r in (("docker run --rm", docker), ("gantry run submit --wait", gantry)):
    print(f"{name:<28}{r['mean']*1000:>8.0f}ms{r['median']*1000:>8.0f}ms{r['min']*1000:>8.0f}ms{r['max']*1000:>8.0f}ms")
verdict = "meets" if ratio_mean <= 1.2 else "misses"
print(f"ratio gantry/docker over {sys.argv[2]} runs: mean {ratio_mean:.2f}x, median {ratio_median:.2f}x "
      f"(target <= 1.2x: {verdict})")
EOF
