# Developer chores. `make help` lists them.
.PHONY: help demo test test-all deps lint bench bench-peers release images fuzz

help:
	@echo "make demo      build, start a control plane on SQLite, a pool, a launcher, and take a Terraform stack from plan to apply"
	@echo "make test      the fast tests (cargo test)"
	@echo "make test-all  every test: installs what they need first (apt, venv, Terraform, images)"
	@echo "make deps      install the test dependencies only"
	@echo "make lint      cargo fmt --check and clippy -D warnings"
	@echo "make bench     benchmarks: dispatch latency, burst, throughput, idle launchers"
	@echo "make bench-peers  Gantry beside Prefect (from PyPI, in a throwaway venv): pickup latency, a burst, idle worker memory"
	@echo "make release   build dist/gantry-<version>-linux-x86_64.tar.gz"
	@echo "make fuzz      replay fuzz/regressions, then fuzz each target for GANTRY_FUZZ_SECONDS (default 30)"

demo:
	./scripts/demo.sh

test:
	cargo test --workspace

test-all:
	./scripts/test-all.sh

deps:
	./scripts/install-test-deps.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

bench:
	./scripts/bench.sh

# Not part of test-all: installs Prefect from PyPI into target/bench-peers/venv.
bench-peers:
	./scripts/bench-peers.sh

release:
	./scripts/release.sh

fuzz:
	./scripts/fuzz.sh
