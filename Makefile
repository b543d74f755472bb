# The two commands that matter: `make demo` and `make test`.
CARGO ?= cargo

.PHONY: demo replay test lint deps build build-pgo bench

## The daemon on live generated traffic with incidents, for 75 seconds.
demo:
	$(CARGO) run --release --quiet -- demo

## Judge the bundled example logs (a working day, 08:00–16:11, of provisioning with incidents) in one batch.
replay:
	$(CARGO) run --release --quiet -- replay --config examples/scimwatch.toml

## Everything CI runs: install what the tests need, lint, then every test.
test: deps lint
	$(CARGO) test --quiet --no-fail-fast

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings

## Tools the tests use beyond cargo (idempotent; safe to re-run).
deps:
	@bash scripts/install-test-deps.sh

build:
	$(CARGO) build --release

## A profile-guided release build, trained on generated traffic: target/pgo/release/scimwatch.
build-pgo:
	bash scripts/build-pgo.sh

## Replay vs DuckDB side by side, then the daemon's live throughput (README "Performance").
bench:
	bash scripts/bench-replay.sh
	bash scripts/bench-live.sh
