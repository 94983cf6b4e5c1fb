#!/usr/bin/env bash
# `make compose`: the one-machine deployment of deploy/compose/compose.yaml, for real. Builds the
# three images here (the server's with scripts/image.sh; PostgreSQL 17 + pgvector on a Debian
# trixie base and Prometheus on the bookworm base, both from debootstrap), starts the stack,
# waits for the server's health, adds photos and searches through the CLI, checks that
# Prometheus scrapes the server, then stops it (--keep leaves it running).
#   bash scripts/compose.sh [--models DIR] [--keep]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
MODELS="$IMAGESEARCH_MODELS"
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "compose.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
ls "$MODELS"/scorer/*/manifest.json >/dev/null 2>&1 || { echo "compose.sh: no scorer version in $MODELS (run make demo, or pass --models DIR)" >&2; exit 1; }
ls "$MODELS"/encoders/*/manifest.json >/dev/null 2>&1 || { echo "compose.sh: $MODELS has no encoders/ (the container sees only the model repository: link or copy the exported encoders there)" >&2; exit 1; }

bash scripts/image.sh
DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1
bash scripts/base_image.sh trixie
log "building imagesearch-postgres:17 and imagesearch-prometheus:2"
"$DOCKER" build --quiet -t imagesearch-postgres:17 deploy/container/postgres >/dev/null
"$DOCKER" build --quiet -t imagesearch-prometheus:2 deploy/container/prometheus >/dev/null

# The deployment's own copy of the models (links resolved: the container sees only /models) and
# secrets readable by the image's user.
RUN="$ROOT/var/compose"
rm -rf "$RUN/models" && mkdir -p "$RUN/secrets"
cp -rL "$MODELS" "$RUN/models"
for s in admin-token writer-token postgres-password; do
  [ -s "$RUN/secrets/$s" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN/secrets/$s"
done
chmod 0755 "$RUN/secrets" && chmod 0644 "$RUN/secrets"/*
export IMAGESEARCH_MODELS_DIR="$RUN/models" IMAGESEARCH_SECRETS_DIR="$RUN/secrets"
COMPOSE=(docker-compose -p imagesearch -f deploy/compose/compose.yaml)
"${COMPOSE[@]}" up -d
trap '[ "$KEEP" = 1 ] || "${COMPOSE[@]}" down -v >/dev/null 2>&1' EXIT

CLI=("$BIN_DIR/imagesearch" --endpoint http://127.0.0.1:50051)
for _ in $(seq 1 240); do "${CLI[@]}" health >/dev/null 2>&1 && break; sleep 1; done
"${CLI[@]}" health 2>/dev/null || { "${COMPOSE[@]}" logs --tail 30 imagesearch >&2; echo "compose.sh: the server did not turn healthy in 240 s" >&2; exit 1; }
PHOTOS="$IMAGESEARCH_DATA/image_search/test_images"
mkdir -p "$RUN/photos"
mapfile -t photos < <(ls "$PHOTOS")
for f in "${photos[@]:0:20}"; do cp "$PHOTOS/$f" "$RUN/photos/"; done
IMAGESEARCH_WRITER_TOKEN="$(cat "$RUN/secrets/writer-token")" "${CLI[@]}" gallery add "$RUN/photos"
"${CLI[@]}" search --region US --k 3 "a dog running on the grass"
"${CLI[@]}" search --region DE --k 3 "a dog running on the grass"
promql() { curl -sfG http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$1"; }
for _ in $(seq 1 60); do
  promql 'sum(imagesearch_requests_total{method="Search"})' | grep -q '"value"' && break; sleep 1
done
promql 'up{job="imagesearch"} == 1' | grep -q '"value"' || { echo "compose.sh: Prometheus does not scrape the server" >&2; exit 1; }
scraped="$(promql 'sum by (method) (imagesearch_requests_total)' | python3 -c 'import json, sys
print(", ".join(r["metric"]["method"] + " " + r["value"][1] for r in json.load(sys.stdin)["data"]["result"]))')"
alerts="$(curl -sf http://127.0.0.1:9090/api/v1/rules | python3 -c 'import json, sys; print(sum(r["type"] == "alerting" for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]))')"
log "compose stack served a search; Prometheus scrapes it (requests: $scraped; $alerts alert rules loaded)"
