#!/usr/bin/env bash
# The whole test suite: what `make test-all` and CI run.
#
# Every test step runs even when an earlier one failed; the script fails at
# the end, naming the steps that did. The cargo tests run last so that the
# closing line is the test runner's summary. tests/deploy runs in the
# background beside tests/api_contract and the fuzzing.
#
# The cargo tests run twice: on PostgreSQL first (GANTRY_TEST_ENGINE=postgres,
# every server on its own database of one throwaway cluster started for this
# run and stopped at its end), then on SQLite, the default.
#
# The ignored cargo tests include the web UI's in a real Chromium
# (tests/ui.rs; chromium and chromium-driver come from install-test-deps.sh).
#
# The cargo tests run under cargo-nextest when it is installed (each test in
# its own process, GANTRY_TEST_THREADS at a time across all test binaries, so
# the slow real-tool binaries overlap instead of queueing one after the
# other), else under `cargo test`. GANTRY_TEST_RUNNER=cargo forces the latter.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}"

./scripts/install-test-deps.sh

# The autoscaler (AWS SDK) is a feature the demo's build leaves out; the
# tests and releases build it.
features=(--features gantry/autoscaler)

echo "==> cargo build"
cargo build --workspace --all-targets "${features[@]}"

echo "==> images: gantry-runner, gantry-launcher (from the debug build above)"
./scripts/build-images.sh --profile debug

failed=()
ended() { # name status start: reports a step, remembers a failure
    echo "    $1: $([ "$2" -eq 0 ] && echo ok || echo "FAILED (exit $2)") in $((SECONDS - $3)) s"
    [ "$2" -eq 0 ] || failed+=("$1")
}
step() { # name command...: runs it, remembers a failure, goes on
    local name=$1 start=$SECONDS status=0
    shift
    echo "==> $name"
    "$@" || status=$?
    ended "$name" "$status" "$start"
}

# tests/deploy mostly waits on containers and a fake AWS (little CPU): it
# runs in the background, beside the contract tests and the fuzzing, and its
# output is shown when it ends.
deploy_pid=
if [ -d tests/deploy ]; then
    echo "==> pytest tests/deploy: started in the background, its output follows the fuzzing"
    deploy_log=$(mktemp)
    deploy_start=$SECONDS
    .venv/bin/pytest -q tests/deploy >"$deploy_log" 2>&1 &
    deploy_pid=$!
    trap 'kill "$deploy_pid" 2>/dev/null || true; rm -f "$deploy_log"' EXIT
fi
step "pytest tests/api_contract (schemathesis over the OpenAPI document, live server)" \
    .venv/bin/pytest -q tests/api_contract
step "fuzz: replay fuzz/regressions, then every target for ${GANTRY_FUZZ_SECONDS:-30}s" \
    ./scripts/fuzz.sh
if [ -n "$deploy_pid" ]; then
    status=0
    wait "$deploy_pid" || status=$?
    echo "==> pytest tests/deploy"
    cat "$deploy_log"
    ended "pytest tests/deploy" "$status" "$deploy_start"
    trap - EXIT
    rm -f "$deploy_log"
fi

pg_dir=$(mktemp -d)
trap './scripts/throwaway-postgres.sh stop "$pg_dir/cluster"; rmdir "$pg_dir" 2>/dev/null || true' EXIT
echo "==> a throwaway PostgreSQL cluster for this run"
GANTRY_TEST_POSTGRES_URL=$(./scripts/throwaway-postgres.sh start "$pg_dir/cluster")
export GANTRY_TEST_POSTGRES_URL

if [ "${GANTRY_TEST_RUNNER:-}" != cargo ] && cargo nextest --version >/dev/null 2>&1; then
    cargo_tests=(cargo nextest run --workspace "${features[@]}" --no-fail-fast --run-ignored all
        --test-threads "${GANTRY_TEST_THREADS:-$(nproc)}")
    # What depends on the engine: the store's tests and the end-to-end
    # suite, but what the engine cannot change (containers and images, the
    # launcher's TLS, proxies and links, the browser, the demo's own
    # SQLite server), and the replica suite itself, which is PostgreSQL's
    # anyway.
    postgres_tests=("${cargo_tests[@]}" -E 'package(gantry-store) | (package(gantry)
        & !binary(replicas) & !binary(/^docker_/) & !binary(stacks_docker) & !binary(launcher_tls)
        & !binary(launcher_start) & !binary(proxy) & !binary(ui) & !binary(demo)
        & !binary(faults_partition))')
else
    cargo_tests=(cargo test --workspace "${features[@]}" --no-fail-fast -- --include-ignored)
    postgres_tests=(cargo test -p gantry-store -p gantry "${features[@]}" --no-fail-fast -- --include-ignored)
fi
step "cargo tests on PostgreSQL: ${postgres_tests[*]}" \
    env GANTRY_TEST_ENGINE=postgres "${postgres_tests[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "==> failed before the cargo tests: ${failed[*]}" >&2
fi
echo "==> cargo tests on SQLite, fast and slow: ${cargo_tests[*]}"
status=0
"${cargo_tests[@]}" || status=$?
if [ ${#failed[@]} -gt 0 ] && [ "$status" -eq 0 ]; then
    status=1
fi
exit "$status"
