#!/usr/bin/env bash
# Memory of the server under one closed-loop load, over time: starts the server on `make bench`'s
# caches-off configuration and gallery (var/bench/server) with the flags given, runs
# `imagesearch loadtest` in 10 s slices and prints VmRSS after each.
#
#   bash bench/rss_growth.sh [SERVER FLAGS...]      e.g. --encoder-files serving-bf16
#
# RSS_MIX (search), RSS_CONCURRENCY (32), RSS_SLICES (6).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/env.sh"
cd "$ROOT"
[ -d var/bench/server ] || { echo "run make bench once first (it fills var/bench/server)" >&2; exit 2; }
PORT=50091; EP="http://127.0.0.1:$PORT"; mkdir -p var/rss
"$BIN_DIR/imagesearch-server" --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:9191 --device cpu \
  --data-dir var/bench/server --image-views original --image-cache 0 --text-cache 0 "$@" > var/rss/server.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do IMAGESEARCH_ENDPOINT=$EP "$BIN_DIR/imagesearch" health >/dev/null 2>&1 && break; sleep 0.5; done
rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
echo "start: RSS $(rss) kB"
for i in $(seq 1 "${RSS_SLICES:-6}"); do
  IMAGESEARCH_ENDPOINT=$EP "$BIN_DIR/imagesearch" --json loadtest --data "$IMAGESEARCH_DATA/image_search" \
    --mix "${RSS_MIX:-search}" --concurrency "${RSS_CONCURRENCY:-32}" --duration-s 10 --warmup-s 0 --region US \
    --seed "$i" > var/rss/slice.json
  echo "after $(( i * 10 )) s: RSS $(rss) kB, $(python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["throughput_rps"]))' var/rss/slice.json) req/s"
done
