#!/usr/bin/env bash
# A/B of two server commands on `make bench`'s caches-off configuration and gallery
# (var/bench/server, which `make bench` fills): the two alternate point by point, 2 repeats,
# the same load generator. Measures a lever in the server's own code (old and new binary) or
# in its flags (a wrapper that adds them).
#
#   bash bench/ab.sh A_CMD B_CMD "op:concurrency ..."      e.g. "score:8 search:1"
#
# AB_DURATION_S (8) per point, AB_DATA (the product dataset: test_queries.csv, test_images/),
# AB_LOAD_FLAGS (more flags for `imagesearch loadtest`, e.g. --ignore-pushback).
# Prints one line per point: answered req/s, refusals, p50 / p99 ms, the server's CPU seconds;
# writes each point's loadtest JSON and the server's /metrics to var/ab/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
[ $# -eq 3 ] || { sed -n '2,12s/^# \{0,1\}//p' "$0" >&2; exit 2; }
A=$1; B=$2; POINTS=$3
DATA="${AB_DATA:-$IMAGESEARCH_DATA/image_search}"
OUT="$ROOT/var/ab"; mkdir -p "$OUT"
PORT=50081; METRICS=9181; EP="http://127.0.0.1:$PORT"
[ -d var/bench/server ] || { echo "run make bench once first (it fills var/bench/server)" >&2; exit 2; }

point() { # label cmd op concurrency repeat
  local name="$OUT/$1-$3-c$4-r$5" pid t0 t1
  $2 --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS" --device cpu --data-dir var/bench/server \
    --image-views original --image-cache 0 --text-cache 0 > "$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do IMAGESEARCH_ENDPOINT=$EP "$BIN_DIR/imagesearch" health >/dev/null 2>&1 && break; sleep 0.5; done
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  IMAGESEARCH_ENDPOINT=$EP "$BIN_DIR/imagesearch" --json loadtest --data "$DATA" --mix "$3" --concurrency "$4" \
    --duration-s "${AB_DURATION_S:-8}" --warmup-s 2 --region US ${AB_LOAD_FLAGS:-} > "$name.json"
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  curl -s "127.0.0.1:$METRICS/metrics" > "$name.metrics" || true
  kill -TERM "$pid"; wait "$pid" || true
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
refused, lat = sum(r.get("errors", {}).values()), r["latency"]
print("%s: %.1f req/s, %d refused, p50 %.0f / p99 %.0f ms, server CPU %.1f s"
      % (sys.argv[2], r["throughput_rps"], refused, lat["p50_ms"], lat["p99_ms"], int(sys.argv[3]) / 100))' \
    "$name.json" "$1 $3 c=$4 repeat $5" "$(( t1 - t0 ))"
}

for rep in 1 2; do
  for p in $POINTS; do
    if [ $(( rep % 2 )) -eq 1 ]; then order="A B"; else order="B A"; fi
    for side in $order; do
      if [ "$side" = A ]; then point A "$A" "${p%%:*}" "${p##*:}" "$rep"; else point B "$B" "${p%%:*}" "${p##*:}" "$rep"; fi
    done
  done
done
