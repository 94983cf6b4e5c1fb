#!/usr/bin/env bash
# Offline checks of the imagesearch Helm chart: `helm lint --strict` and `helm template` with the
# defaults and every values file, kubernetes-validate --strict of every rendered manifest for
# each Kubernetes version from 1.27 to the newest the validator ships, a few invariants of the
# rendered Deployment, and combinations the chart must refuse. One line per check; exits
# non-zero when any check fails. Runnable from anywhere; tools from
# ${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}/tools (scripts/setup_deploy.sh installs them).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CHART="$HERE/imagesearch"
TOOLS="${IMAGESEARCH_HOME:-$HOME/.cache/imagesearch}/tools"
HELM="$TOOLS/bin/helm"
KV="$TOOLS/venv/bin/kubernetes-validate"
PY="$TOOLS/venv/bin/python"
MIN_MINOR=27   # Chart.yaml: kubeVersion >=1.27.0-0 (native gRPC probes are GA there)

for tool in "$HELM" "$KV" "$PY"; do
  [ -x "$tool" ] || { echo "check.sh: $tool missing (run scripts/setup_deploy.sh)" >&2; exit 2; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=0

ok()   { printf 'ok    %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; [ -z "${2:-}" ] || sed -n '1,20s/^/      /p' "$2"; failures=$((failures + 1)); }

# Scenarios: a name and the helm arguments that select its values.
# "features" turns on everything else the chart can render: the chart's own Secret (inline
# database URL, tokens and S3 keys), TLS with exec probes, ServiceMonitor, NetworkPolicy.
FEATURES=(-f "$HERE/values-postgres.yaml" -f "$HERE/values-gpu.yaml"
  --set database.existingSecret=,database.url=postgres://imagesearch:pw@postgres:5432/gallery
  --set auth.existingSecret=,auth.adminToken=admin-secret,auth.writerToken=writer-secret
  --set models.s3.existingSecret=,models.s3.accessKeyId=AKIA,models.s3.secretAccessKey=s3secret
  --set models.s3.endpoint=http://minio:9000,models.s3.allowHttp=true
  --set tls.enabled=true,tls.secretName=imagesearch-tls,tls.clientCA=true,probes.mode=exec
  --set metrics.serviceMonitor.enabled=true,metrics.podAnnotations=false
  --set networkPolicy.enabled=true,service.enabled=false --set 'server.versions={3,4}')
SCENARIOS=(default local postgres gpu postgres+gpu features)
args_of() {  # the helm arguments of a scenario, one per line
  case "$1" in
    default) ;;
    local) printf '%s\n' -f "$HERE/values-local.yaml" ;;
    postgres) printf '%s\n' -f "$HERE/values-postgres.yaml" ;;
    gpu) printf '%s\n' -f "$HERE/values-gpu.yaml" ;;
    postgres+gpu) printf '%s\n' -f "$HERE/values-postgres.yaml" -f "$HERE/values-gpu.yaml" ;;
    features) printf '%s\n' "${FEATURES[@]}" ;;
  esac
}

# 1. helm lint --strict, 2. helm template: each scenario.
for s in "${SCENARIOS[@]}"; do
  mapfile -t a < <(args_of "$s")
  if "$HELM" lint --strict "$CHART" "${a[@]}" >"$WORK/lint-$s.log" 2>&1; then
    ok "helm lint --strict ($s)"
  else
    fail "helm lint --strict ($s)" "$WORK/lint-$s.log"
  fi
  if "$HELM" template imagesearch "$CHART" --namespace imagesearch "${a[@]}" >"$WORK/$s.yaml" 2>"$WORK/template-$s.log"; then
    kinds="$(grep -E '^kind: ' "$WORK/$s.yaml" | cut -d' ' -f2 | sort | paste -sd, -)"
    ok "helm template ($s): $kinds"
  else
    fail "helm template ($s)" "$WORK/template-$s.log"
    rm -f "$WORK/$s.yaml"
  fi
done

# 3. Invariants of the rendered objects that schemas cannot see.
if "$PY" - "$WORK" "${SCENARIOS[@]}" >"$WORK/invariants.log" 2>&1 <<'PY'
import os, sys, yaml
work, scenarios = sys.argv[1], sys.argv[2:]
problems = []
for s in scenarios:
    path = os.path.join(work, s + ".yaml")
    if not os.path.exists(path):
        continue
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    def bad(msg):
        problems.append(f"{s}: {msg}")
    dep = by_kind["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    drain = int(env["IMAGESEARCH_DRAIN_TIMEOUT_S"])
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    if pod["terminationGracePeriodSeconds"] <= drain + sleep:
        bad(f"grace {pod['terminationGracePeriodSeconds']} s does not cover preStop {sleep} s + drain {drain} s")
    store = env["IMAGESEARCH_STORE"]
    many = dep["spec"].get("replicas", 1) > 1 or "HorizontalPodAutoscaler" in by_kind
    if many and store != "postgres":
        bad("several replicas without store=postgres")
    if store == "local" and dep["spec"]["strategy"]["type"] != "Recreate":
        bad("store=local must use the Recreate strategy")
    if store == "local" and "persistentVolumeClaim" not in next(v for v in pod["volumes"] if v["name"] == "data"):
        bad("store=local without a PersistentVolumeClaim for the data dir")
    gpu = "nvidia.com/gpu" in c["resources"].get("limits", {})
    if gpu != c["image"].endswith("-cuda") or gpu != env["IMAGESEARCH_DEVICE"].startswith("cuda"):
        bad(f"GPU limit, -cuda image and device disagree ({c['image']}, {env['IMAGESEARCH_DEVICE']})")
    sc = c["securityContext"]
    if not (sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"]["drop"] == ["ALL"]):
        bad("container securityContext is not locked down")
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    if not {"/var/lib/imagesearch", "/tmp"} <= mounts:
        bad("data dir or /tmp is not a writable volume")
    for probe, service in (("startupProbe", ""), ("readinessProbe", ""), ("livenessProbe", "liveness")):
        p = c[probe]
        if "grpc" in p:
            if p["grpc"].get("service", "") != service:
                bad(f"{probe} checks service {p['grpc'].get('service')!r}, not {service!r}")
            if "IMAGESEARCH_TLS_CERT" in env:
                bad(f"{probe} is a native gRPC probe against a TLS server")
        elif service and service not in p["exec"]["command"]:
            bad(f"{probe} exec does not check service {service!r}")
    headless = [d for d in by_kind["Service"] if d["spec"].get("clusterIP") == "None"]
    if not headless or not any(p["name"] == "grpc" and p.get("appProtocol") == "grpc" for p in headless[0]["spec"]["ports"]):
        bad("no headless Service with a grpc port (appProtocol grpc)")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
PY
then
  ok "invariants (grace period covers preStop + drain, replicas need postgres, GPU parts agree, probes, volumes, headless Service)"
else
  fail "invariants" "$WORK/invariants.log"
fi

# 4. kubernetes-validate --strict of every render, per Kubernetes version. Any schema it cannot
# find is a failure (a mistyped or removed apiVersion only warns), except the ServiceMonitor CRD.
SCHEMAS="$(ls -d "$TOOLS"/venv/lib/python*/site-packages/kubernetes_validate/kubernetes-json-schema 2>/dev/null | head -n1)"
[ -n "$SCHEMAS" ] || SCHEMAS="$("$PY" -c 'import kubernetes_validate, os; print(os.path.join(os.path.dirname(kubernetes_validate.__file__), "kubernetes-json-schema"))')"
mapfile -t VERSIONS < <(ls "$SCHEMAS" | sed -nE 's/^v1\.([0-9]+)\.0-local-strict$/\1/p' | sort -n | awk -v m="$MIN_MINOR" '$1 >= m { print "1." $1 }')
[ "${#VERSIONS[@]}" -gt 0 ] || { fail "kubernetes-validate: no schemas for 1.$MIN_MINOR or later in $SCHEMAS"; VERSIONS=(); }
renders=()
for s in "${SCENARIOS[@]}"; do [ -f "$WORK/$s.yaml" ] && renders+=("$WORK/$s.yaml"); done
for v in "${VERSIONS[@]}"; do
  log="$WORK/validate-$v.log"
  "$KV" --strict -k "$v" "${renders[@]}" >"$log" 2>&1 && rc=0 || rc=$?
  passed="$(grep -c ' passed for resource ' "$log" || true)"
  if [ "$rc" -eq 0 ] && ! grep -v 'with api version monitoring.coreos.com/' "$log" | grep -E '^(WARN|ERROR)' >/dev/null; then
    ok "kubernetes-validate --strict -k $v: $passed resources in ${#renders[@]} renders"
  else
    fail "kubernetes-validate --strict -k $v" <(grep -E '^(WARN|ERROR)' "$log" | grep -v 'monitoring.coreos.com/' || cat "$log")
  fi
done

# 5. What the chart must refuse: `helm template` fails, with the reason in its message.
refuse() {  # refuse "what" "expected message part" helm-args...
  local what="$1" expect="$2"; shift 2
  if "$HELM" template imagesearch "$CHART" "$@" >/dev/null 2>"$WORK/refuse.log"; then
    fail "refused: $what (helm template succeeded)"
  elif grep -q -- "$expect" "$WORK/refuse.log"; then
    ok "refused: $what"
  else
    fail "refused: $what (failed for another reason)" "$WORK/refuse.log"
  fi
}
refuse "store=local with replicaCount=3" "exactly one replica" --set store=local,replicaCount=3
refuse "store=local with autoscaling" "exactly one replica" --set store=local,autoscaling.enabled=true
refuse "store=postgres without a database URL" "needs database.url" --set store=postgres
refuse "searchIndex=postgres-hnsw with store=local" "needs store: postgres" --set searchIndex=postgres-hnsw
refuse "TLS with native gRPC probes" "cannot speak TLS" --set tls.enabled=true,tls.secretName=x,probes.mode=grpc
refuse "Kubernetes 1.26 (kubeVersion >=1.27)" "kubeVersion" --kube-version 1.26.0

if [ "$failures" -gt 0 ]; then
  echo "check.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "check.sh: all checks passed (Kubernetes ${VERSIONS[0]}..${VERSIONS[-1]})"
