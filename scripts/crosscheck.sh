#!/usr/bin/env bash
# Cross-checks `imagesearch loadtest` against an independent Python grpcio client on the same
# running server (closed-loop Search at the given concurrencies). Needs a server on
# $IMAGESEARCH_ENDPOINT with a filled gallery (e.g. during `make demo`, or `make bench`'s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
VENV="$IMAGESEARCH_HOME/crosscheck-venv"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV (grpcio, grpcio-tools)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q grpcio==1.76.0 grpcio-tools==1.76.0
fi
STUBS="$ROOT/var/crosscheck/stubs"
mkdir -p "$STUBS"
"$VENV/bin/python" -m grpc_tools.protoc -I proto --python_out="$STUBS" --grpc_python_out="$STUBS" proto/imagesearch/v1/*.proto
touch "$STUBS/imagesearch/__init__.py" "$STUBS/imagesearch/v1/__init__.py"
QUERIES="$IMAGESEARCH_DATA/image_search/test_queries.csv"
DURATION="${CROSSCHECK_DURATION_S:-10}"
for c in ${CROSSCHECK_CONCURRENCY:-1 8}; do
  "$BIN_DIR/imagesearch" --json loadtest --data "$IMAGESEARCH_DATA/image_search" --mix search --concurrency "$c" \
    --duration-s "$DURATION" --warmup-s 2 --region US \
    | "$VENV/bin/python" -c "import json,sys; r=json.load(sys.stdin); l=r['latency']; print(json.dumps({'client':'imagesearch loadtest','concurrency':$c,'requests':r['ok'],'errors':r['errors'],'throughput_rps':r['throughput_rps'],'p50_ms':l['p50_ms'],'p90_ms':l['p90_ms'],'p99_ms':l['p99_ms']}))"
  "$VENV/bin/python" scripts/crosscheck.py "${IMAGESEARCH_ENDPOINT#http://}" "$QUERIES" "$c" "$DURATION" US 5 "$STUBS"
done
