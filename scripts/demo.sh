#!/usr/bin/env bash
# The main job on the default data: set-up when missing, train a scorer version when none
# exists, evaluate it, serve it with the test and train photos in the gallery, and search
# through the client in a restricted and an open region (HTML page with the photos).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
log "building"
# The same build as `make test` (same packages and features), so nothing compiles twice.
cargo test --workspace --no-run
latest=$(ensure_version)
"$BIN_DIR/imagesearch-train" eval --version "$latest"
log "report: $IMAGESEARCH_MODELS/scorer/$latest/report.html"

# Serve: the server with the 100 test photos (no captions: the child detector flags them) and
# the 1000 train photos (their own captions decide their flags), then searches through the
# client in a restricted (DE) and an open (US) region.
DEMO="$ROOT/var/demo"
mkdir -p "$DEMO"
PORT="${IMAGESEARCH_DEMO_PORT:-50051}"
export IMAGESEARCH_ENDPOINT="http://127.0.0.1:$PORT"
export IMAGESEARCH_ADMIN_TOKEN="${IMAGESEARCH_ADMIN_TOKEN:-demo-admin-$(date +%s)}"
export IMAGESEARCH_WRITER_TOKEN="${IMAGESEARCH_WRITER_TOKEN:-demo-writer-$(date +%s)}"
log "starting imagesearch-server on $IMAGESEARCH_ENDPOINT (log: $DEMO/server.log, metrics: http://127.0.0.1:9091/metrics)"
"$BIN_DIR/imagesearch-server" --listen "127.0.0.1:$PORT" --data-dir "$ROOT/var/server" \
  --restricted-regions DE,FR > "$DEMO/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill -TERM $SERVER_PID 2>/dev/null || true' EXIT
wait_healthy "$SERVER_PID" "$DEMO/server.log"
"$BIN_DIR/imagesearch" info
photos=$("$BIN_DIR/imagesearch" --json gallery stats | sed -n 's/.*"photos": \([0-9]*\).*/\1/p')
if [ "${photos:-0}" -lt 1100 ]; then
  log "filling the gallery (photos are decoded and encoded once, then kept in var/server)"
  # Captions of the train photos: the rows of train_dataset.csv whose query_id names the photo.
  "$IMAGESEARCH_HOME/venv/bin/python" - "$IMAGESEARCH_DATA/image_search/train_dataset.csv" > "$DEMO/train_captions.tsv" <<'PY'
import csv, sys
seen = set()
for row in csv.DictReader(open(sys.argv[1], newline="")):
    qid, text = row["query_id"], row["query_text"]
    if qid not in seen:
        seen.add(qid)
        print(f"{qid.split('#')[0]}\t{' '.join(text.split())}")
PY
  "$BIN_DIR/imagesearch" gallery add "$IMAGESEARCH_DATA/image_search/test_images"
  "$BIN_DIR/imagesearch" gallery add "$IMAGESEARCH_DATA/image_search/train_images" --captions "$DEMO/train_captions.tsv"
fi
"$BIN_DIR/imagesearch" gallery stats

log "10 random test queries in DE (restricted) and US (open)"
tail -n +2 "$IMAGESEARCH_DATA/image_search/test_queries.csv" | cut -d'|' -f3 | sort -u \
  | shuf -n 10 --random-source=<(yes) > "$DEMO/queries.txt"
{
  echo "<!doctype html><meta charset='utf-8'><title>imagesearch demo</title><style>body{font-family:sans-serif;margin:2em}iframe{width:100%;height:330px;border:1px solid #ccc}</style>"
  echo "<h1>imagesearch demo: 10 test queries, restricted (DE) and open (US)</h1>"
} > "$DEMO/index.html"
i=0
while IFS= read -r q; do
  i=$((i + 1))
  for region in DE US; do
    echo "── [$region] $q"
    "$BIN_DIR/imagesearch" search "$q" --region "$region" -k 5 --html "$DEMO/q$i-$region.html" 2>/dev/null
    echo "<h3>[$region] $(printf '%s' "$q" | sed 's/&/\&amp;/g; s/</\&lt;/g')</h3><iframe src='q$i-$region.html'></iframe>" >> "$DEMO/index.html"
  done
done < "$DEMO/queries.txt"
log "page with the photos (or the disclaimer in their place): $DEMO/index.html"

log "stopping the server (SIGTERM: NOT_SERVING, drain, exit)"
kill -TERM $SERVER_PID
wait $SERVER_PID || true
trap - EXIT
