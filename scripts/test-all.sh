#!/usr/bin/env bash
# The whole test suite: what `make test-all` and CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-true}"

./scripts/install-test-deps.sh

echo "==> cargo build"
cargo build --workspace --all-targets

echo "==> images: gantry-runner, gantry-launcher (from the debug build above)"
./scripts/build-images.sh --profile debug

echo "==> cargo test (fast and slow tests)"
cargo test --workspace --no-fail-fast -- --include-ignored

if [ -d tests/deploy ]; then
    echo "==> pytest tests/deploy"
    .venv/bin/pytest -q tests/deploy
fi

echo "==> pytest tests/api_contract (schemathesis over the OpenAPI document, live server)"
.venv/bin/pytest -q tests/api_contract

echo "==> fuzz: replay fuzz/regressions, then every target for ${GANTRY_FUZZ_SECONDS:-30}s"
./scripts/fuzz.sh
