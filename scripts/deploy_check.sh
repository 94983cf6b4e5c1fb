#!/usr/bin/env bash
# `make deploy-check`: deploy/ validated offline — the Helm chart (helm lint, helm template,
# kubernetes-validate --strict per Kubernetes version), the Prometheus configs and rules
# (promtool check + rule unit tests), the Grafana dashboard (type-checked against
# @grafana/schema) and the compose file (docker-compose config). The dashboard's queries and
# the rules also run against a real Prometheus in tests/tests/observability.rs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup_deploy.sh
log "deploy check: Helm chart"
bash deploy/helm/check.sh
log "deploy check: Prometheus"
bash deploy/prometheus/check.sh
log "deploy check: Grafana dashboard"
bash deploy/grafana/check.sh
log "deploy check: compose file"
IMAGESEARCH_MODELS_DIR=/models IMAGESEARCH_SECRETS_DIR=/secrets docker-compose -f deploy/compose/compose.yaml config --quiet
echo "compose.yaml: ok"
