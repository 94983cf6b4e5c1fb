#!/usr/bin/env bash
# `make soak`: the server (caches off unless SOAK_SERVER_FLAGS says otherwise) under mixed traffic
# (Score, ScoreStream, Search) at ~80% of its measured capacity for SOAK_DURATION_S (default 1800) in windows of SOAK_WINDOW_S (30), sampling its RSS,
# open file descriptors and threads after each window. Writes var/soak/report.md and soak.svg
# (RSS, p99 and throughput over time) and fails when RSS after warm-up drifts past ±10% or
# descriptors or threads grow.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
cargo test --workspace --no-run
ensure_version > /dev/null
OUT="$ROOT/var/soak"
mkdir -p "$OUT"
DURATION="${SOAK_DURATION_S:-1800}"
WINDOW="${SOAK_WINDOW_S:-30}"
MIX="${SOAK_MIX:-score=2,stream=1,search=2}"
LOAD="${SOAK_LOAD:-0.8}"
PORT="${SOAK_PORT:-50073}"
DATA="$IMAGESEARCH_DATA/image_search"
export IMAGESEARCH_ENDPOINT="http://127.0.0.1:$PORT"
export IMAGESEARCH_WRITER_TOKEN="${IMAGESEARCH_WRITER_TOKEN:-soak-writer-$$}"
# Caches off by default: every request really decodes and encodes (SOAK_SERVER_FLAGS="" keeps them).
# shellcheck disable=SC2086
"$BIN_DIR/imagesearch-server" --listen "127.0.0.1:$PORT" --metrics-listen off --device "${IMAGESEARCH_DEVICE:-cpu}" \
  --data-dir "$OUT/server" ${SOAK_SERVER_FLAGS---image-cache 0 --text-cache 0} > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true' EXIT
wait_healthy "$PID" "$OUT/server.log"
[ "$("$BIN_DIR/imagesearch" --json gallery stats | sed -n 's/.*"photos": \([0-9]*\).*/\1/p')" -ge 100 ] \
  || "$BIN_DIR/imagesearch" gallery add "$DATA/test_images" > /dev/null
log "capacity: closed loop at concurrency 8 for 15 s ($MIX)"
"$BIN_DIR/imagesearch" --json loadtest --data "$DATA" --mix "$MIX" --concurrency 8 --duration-s 15 \
  --warmup-s 3 --region US > "$OUT/capacity.json"
RATE=$("$IMAGESEARCH_HOME/venv/bin/python" -c "import json,sys; print(round(json.load(open(sys.argv[1]))['throughput_rps'] * float(sys.argv[2]), 1))" "$OUT/capacity.json" "$LOAD")
log "soak: open loop at $RATE req/s ($LOAD of capacity) for ${DURATION}s in ${WINDOW}s windows (server pid $PID)"
: > "$OUT/windows.jsonl"
start=$(date +%s)
i=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  i=$((i + 1))
  report=$("$BIN_DIR/imagesearch" --json loadtest --data "$DATA" --mix "$MIX" --mode open --rate "$RATE" \
    --duration-s "$WINDOW" --warmup-s 0 --region US --seed "$i" | tr -d '\n')
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$PID/status")
  fds=$(find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
  echo "{\"t_s\": $(( $(date +%s) - start )), \"rss_kb\": $rss, \"threads\": $threads, \"fds\": $fds, \"report\": $report}" >> "$OUT/windows.jsonl"
  log "  window $i: rss $((rss / 1024)) MB, threads $threads, fds $fds"
done
kill -TERM $PID; wait $PID || true
trap - EXIT
"$IMAGESEARCH_HOME/venv/bin/python" bench/soak_report.py "$OUT" "$RATE"
