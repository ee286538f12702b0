#!/usr/bin/env bash
# Checks the Helm chart, its alerts and dashboard, and the Dockerfiles; `make test` runs it.
# With --write it regenerates the committed files (the CRD copy, the rendered manifests).
set -euo pipefail
cd "$(dirname "$0")/.."

HELM=target/tools/helm
PY=target/test-venv/bin/python
CHART=charts/castyard
RENDERED=charts/rendered
K8S_VERSION=1.32.0

render() {
  local values=("$@")
  "$HELM" template castyard "$CHART" --namespace castyard "${values[@]}"
}

if [ "${1:-}" = "--write" ]; then
  cp crds/broadcast.yaml "$CHART/files/broadcast-crd.yaml"
  mkdir -p "$RENDERED"
  render > "$RENDERED/default.yaml"
  render -f "$CHART/ci/full-values.yaml" > "$RENDERED/full.yaml"
  exit 0
fi

fail() { echo "check-chart: $*" >&2; exit 1; }

cmp -s crds/broadcast.yaml "$CHART/files/broadcast-crd.yaml" ||
  fail "$CHART/files/broadcast-crd.yaml differs from crds/broadcast.yaml: run make chart"

"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" -f "$CHART/ci/full-values.yaml"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render > "$tmp/default.yaml"
render -f "$CHART/ci/full-values.yaml" > "$tmp/full.yaml"
for f in default full; do
  diff -u "$RENDERED/$f.yaml" "$tmp/$f.yaml" ||
    fail "$RENDERED/$f.yaml is stale: run make chart"
  target/test-venv/bin/kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$tmp/$f.yaml"
done

# The binaries accept the environment the chart gives them: a flag they reject exits 2 (clap);
# past the flags they fail (exit 1) or wait (killed by timeout) on the missing cluster or database.
cargo build -q --bin castyard --bin castyard-operator
for f in default full; do
  for c in operator api; do
    mapfile -t env < <("$PY" - "$tmp/$f.yaml" "$c" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-" + sys.argv[2]):
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]:
            # Secrets and the downward API: stand-ins of the right shape.
            v = e.get("value", {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
                                 "CASTYARD_ENCRYPTION_KEY": "A" * 43 + "="}.get(e["name"], "x"))
            print(f"{e['name']}={v}")
PY
)
    bin=target/debug/castyard-operator args=()
    [ "$c" = api ] && bin=target/debug/castyard args=(api)
    code=0
    env -i PATH="$PATH" KUBECONFIG=/nonexistent "${env[@]}" timeout 5 "$bin" "${args[@]}" \
      >"$tmp/out" 2>&1 || code=$?
    [ "$code" -ne 2 ] && [ "$code" -ne 0 ] ||
      fail "the $c refuses the chart's $f environment (exit $code): $(cat "$tmp/out")"
  done
done

# Values the schema must refuse, each with the reason helm gives.
refuse() {
  local why=$1; shift
  if out=$(render "$@" 2>&1); then fail "values accepted but should fail ($why): $*"; fi
  grep -q -- "$why" <<<"$out" || fail "values refused for another reason than '$why': $out"
}
refuse "strategy" --set udp.strategy=public-ip
refuse "advertiseAddress" --set udp.advertiseAddress=media.example.com
refuse "limts" --set-json 'mediaWorker.sfuResources={"limts":{"cpu":"1"}}'
refuse "replicas" --set operator.replicas=0
refuse "enabled" --set networkPolicy.enabled=sometimes
refuse "existingSecret" --set api.database.existingSecret=
refuse "publicUrl" --set api.publicUrl=studio.example.com
refuse "publicUrl" --set api.rtmp.publicUrl=rtmps://ingest.example.com/live
refuse "tokenSecret" --set metrics.podMonitor.tokenSecret=Not_A_Secret_Name
refuse "extraCaConfigMap" --set tls.extraCaConfigMap=Not_A_ConfigMap

# The alerts: as a plain rules file, their unit tests, and as the chart embeds them.
promtool check rules "$CHART/files/alerts.yaml"
promtool test rules "$CHART/tests/alerts.test.yaml"
"$PY" - "$tmp/full.yaml" "$tmp/rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, "one PrometheusRule with full values"
yaml.safe_dump(rules[0]["spec"], open(sys.argv[2], "w"))
PY
promtool check rules "$tmp/rules.yaml"

# The dashboard: valid JSON, carried whole by the ConfigMap, every panel with a query.
"$PY" - "$CHART/files/dashboard.json" "$tmp/full.yaml" <<'PY'
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
assert len(cm) == 1 and json.loads(cm[0]["data"]["castyard.json"]) == dash, "ConfigMap carries the dashboard"
assert cm[0]["metadata"]["labels"].get("grafana_dashboard") == "1", "sidecar label"
ids = [p["id"] for p in dash["panels"]]
assert len(ids) == len(set(ids)), "panel ids are unique"
for p in dash["panels"]:
    if p["type"] != "row":
        assert p.get("targets") and all(t["expr"].strip() for t in p["targets"]), p["title"]
PY

# The chart README documents every value.
"$PY" - "$CHART/values.yaml" "$CHART/README.md" <<'PY'
import sys, yaml
values, readme = yaml.safe_load(open(sys.argv[1])), open(sys.argv[2]).read()
def leaves(v, path=""):
    # Maps of user-chosen keys (labels, annotations, resources, selectors) are one value.
    if isinstance(v, dict) and v and not path.endswith(("labels", "annotations", "Annotations",
            "Selector", "Resources", "resources", "SecurityContext", "securityContext", "affinity")):
        for k, x in v.items():
            yield from leaves(x, f"{path}.{k}" if path else k)
    else:
        yield path
missing = [p for p in leaves(values) if f"`{p}`" not in readme]
assert not missing, f"values missing from the chart README: {missing}"
PY

# Dockerfiles: multi-stage, non-root, and building with the Makefile's own targets.
for f in docker/*.Dockerfile; do
  [ "$(grep -c '^FROM ' "$f")" -ge 2 ] || fail "$f is not multi-stage"
  grep -Eq '^USER [0-9]+(:[0-9]+)?$' "$f" || fail "$f does not end as a numeric non-root USER"
  ! grep -Eq '^USER (0|root)' "$f" || fail "$f runs as root"
  grep -Eo 'make [a-z-]+' "$f" | while read -r _ target; do
    grep -q "^$target:" Makefile || fail "$f runs 'make $target', which the Makefile lacks"
  done
  grep -q 'make ' "$f" || fail "$f does not build with make"
done
echo "check-chart: ok"
