# Two commands matter: `make up` (run Castyard on this machine) and `make test` (the whole suite).
SHELL := /bin/bash
CASTYARD_TEST_POSTGRES ?= postgres://castyard:castyard@127.0.0.1:5432
export CASTYARD_TEST_POSTGRES

.PHONY: up test deps run-deps build lint crds openapi bench

## Install what is missing, build, and run the embedded server (API + studio + SQLite).
up: run-deps
	cargo build --release --bin castyard --bin castyard-media-worker
	./target/release/castyard up

## The whole suite: unit, API on SQLite and PostgreSQL, CRD schema, drift checks.
test: deps
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

# Test dependencies: ffmpeg, nginx + RTMP module, a running PostgreSQL with a test role, npm packages.
deps:
	bash scripts/test-deps.sh

run-deps:
	@command -v cargo >/dev/null || { echo "Rust (cargo) is required: https://rustup.rs"; exit 1; }
	@command -v npm >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q nodejs npm; }
	@[ -f frontend/node_modules/swagger-ui-dist/swagger-ui-bundle.js ] || (cd frontend && npm ci --no-audit --no-fund --loglevel=error)

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Regenerate committed files from the code (tests fail when they drift).
crds:
	cargo run -q -p castyard-crd --bin crdgen > crds/broadcast.yaml

openapi:
	cargo run -q -p castyard-api --bin castyard -- openapi > api/openapi.json

## Benchmarks print ratios against a reference measured in the same run.
bench:
	cargo bench -p castyard-api --bench http
	cargo bench -p castyard-operator --bench converge
