# Two commands matter: `make up` (run Castyard on this machine) and `make test` (the whole suite).
SHELL := /bin/bash
CASTYARD_TEST_POSTGRES ?= postgres://castyard:castyard@127.0.0.1:5432
export CASTYARD_TEST_POSTGRES

.PHONY: up test web-test deps run-deps release web lint crds openapi chart check-chart bench

## Install what is missing (Node.js, FFmpeg, the studio's packages), build, and run the
## embedded server (API + studio + SQLite + media workers).
up: run-deps
	$(MAKE) release BIN="castyard castyard-media-worker"
	./target/release/castyard up

## Release binaries (the Dockerfiles build with this too): make release BIN="castyard ...".
BIN ?= castyard castyard-operator castyard-media-worker
release:
	cargo build --release --locked $(addprefix --bin ,$(BIN))

## The web assets castyard serves (frontend/dist, Swagger UI); the API image builds with this.
web:
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run build --if-present

## The whole suite: unit, API on SQLite and PostgreSQL, CRD schema, drift checks, the
## frontend's own tests and the browser tests.
test: deps check-chart web-test
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi

## The frontend: its API types match the OpenAPI document, type-checks, Vitest.
web-test: deps
	cd frontend && npm run --silent check-api-types && npx tsc --noEmit && npm test --silent

# Test dependencies: ffmpeg, nginx + RTMP module, a running PostgreSQL with a test role, npm packages.
deps:
	bash scripts/test-deps.sh

run-deps:
	@command -v cargo >/dev/null || { echo "Rust (cargo) is required: https://rustup.rs"; exit 1; }
	@command -v npm >/dev/null || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q nodejs npm; }
	@command -v ffmpeg >/dev/null || { command -v apt-get >/dev/null && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -q && \
		$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -q --no-install-recommends ffmpeg; } || \
		echo "FFmpeg (with libx264 and AAC) is needed to go live: install it, or set CASTYARD_FFMPEG"
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' || \
		{ echo "The web studio needs Node.js 20.19 or newer (found $$(node --version))"; exit 1; }
	@[ -f frontend/node_modules/.package-lock.json ] && [ frontend/node_modules/.package-lock.json -nt frontend/package-lock.json ] || \
		(cd frontend && npm ci --no-audit --no-fund --loglevel=error)
	cd frontend && npm run --silent build >/dev/null

## Helm chart, alerts (promtool), dashboard and Dockerfile checks.
check-chart: deps
	bash scripts/check-chart.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## Regenerate committed files from the code (tests fail when they drift).
crds:
	cargo run -q -p castyard-crd --bin crdgen > crds/broadcast.yaml

## The chart's copy of the CRD and the rendered manifests (charts/rendered/).
chart: deps
	bash scripts/check-chart.sh --write

openapi:
	cargo run -q -p castyard-api --bin castyard -- openapi > api/openapi.json

## Benchmarks print ratios against a reference measured in the same run.
bench:
	cargo bench -p castyard-api --bench http
	cargo bench -p castyard-api --bench ingest
	cargo bench -p castyard-operator --bench converge
	cargo bench -p castyard-media-worker --bench sfu
	cargo bench -p castyard-media-worker --bench compositor
	cd frontend && npm run --silent build && node bench/studio.mjs
