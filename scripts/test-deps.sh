#!/usr/bin/env bash
# Installs and starts what the test suite needs on a Debian machine; safe to run again.
set -euo pipefail

SUDO=""
AS_PG="runuser -u postgres --"
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; AS_PG="sudo -u postgres"; fi

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
[ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(nginx libnginx-mod-rtmp)
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# PostgreSQL: the cluster Debian creates, a login role the tests create databases with.
PGVER=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$PGVER main"; then
  $SUDO pg_createcluster "$PGVER" main
fi
pg_lsclusters -h | grep -q "^$PGVER main .* online" || $SUDO pg_ctlcluster "$PGVER" main start
for _ in $(seq 1 30); do
  $AS_PG psql -qAtc 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.5
done
$AS_PG psql -qAtc "SELECT 1 FROM pg_roles WHERE rolname = 'castyard'" | grep -q 1 ||
  $AS_PG psql -qc "CREATE ROLE castyard LOGIN CREATEDB PASSWORD 'castyard'"
# Databases left by interrupted test runs.
for db in $($AS_PG psql -qAtc "SELECT datname FROM pg_database WHERE datname LIKE 'castyard_test_%'"); do
  $AS_PG psql -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null
done

# Swagger UI assets (npm's swagger-ui-dist) for /api-docs.
if [ ! -f frontend/node_modules/swagger-ui-dist/swagger-ui-bundle.js ]; then
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
fi

# kmock's Kubernetes API emulator for the operator's whole-binary tests, in its own venv.
REQ=operator/tests/emulator/requirements.txt
VENV=target/test-venv
if ! cmp -s "$REQ" "$VENV/requirements.txt" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/requirements.txt"
fi
