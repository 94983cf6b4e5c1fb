#!/usr/bin/env bash
# `make bench`: Score and Search throughput and latency through the real server (batching on
# and off, caches on and off) at concurrency 1, 8 and 32, and the same TorchScript modules
# called directly in a loop (the naive ceiling). Writes var/bench/report.md (+ JSON, SVG plots).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
cargo test --workspace --no-run
OUT="$ROOT/var/bench"
mkdir -p "$OUT"
DEVICE="${IMAGESEARCH_DEVICE:-cpu}"
DURATION="${BENCH_DURATION_S:-10}"
SWEEP="${BENCH_SWEEP:-1,8,32}"
PORT="${BENCH_PORT:-50071}"
export IMAGESEARCH_ENDPOINT="http://127.0.0.1:$PORT"
DATA="$IMAGESEARCH_DATA/image_search"

log "naive ceiling: the TorchScript modules in a loop, one thread ($DEVICE)"
"$BIN_DIR/imagesearch-bench-models" --device "$DEVICE" --photos "$DATA/test_images" \
  --queries "$DATA/test_queries.csv" > "$OUT/models.json"
cat "$OUT/models.json"

export IMAGESEARCH_WRITER_TOKEN="${IMAGESEARCH_WRITER_TOKEN:-bench-writer-$$}"
run_server() { # name, extra server flags...
  local name=$1; shift
  "$BIN_DIR/imagesearch-server" --listen "127.0.0.1:$PORT" --metrics-listen off --device "$DEVICE" \
    --data-dir "$OUT/server" "$@" > "$OUT/server-$name.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    "$BIN_DIR/imagesearch" health >/dev/null 2>&1 && return 0
    kill -0 $SERVER_PID 2>/dev/null || { cat "$OUT/server-$name.log"; exit 1; }
    sleep 0.5
  done
  echo "server $name did not become ready" >&2; exit 1
}
stop_server() { kill -TERM $SERVER_PID; wait $SERVER_PID || true; }
trap 'kill -TERM ${SERVER_PID:-0} 2>/dev/null || true' EXIT

sweep() { # config name, mix
  log "$1: $2 at concurrency $SWEEP (${DURATION}s each)"
  "$BIN_DIR/imagesearch" loadtest --data "$DATA" --mix "$2" --sweep "$SWEEP" --duration-s "$DURATION" \
    --warmup-s 2 --region US --out-dir "$OUT/$1-$2" > /dev/null
}

# The gallery (100 test photos) is filled once and kept in var/bench/server.
run_server fill
[ "$("$BIN_DIR/imagesearch" --json gallery stats | sed -n 's/.*"photos": \([0-9]*\).*/\1/p')" -ge 100 ] \
  || "$BIN_DIR/imagesearch" gallery add "$DATA/test_images"
stop_server

for config in "batched:--max-batch-size 32" "unbatched:--max-batch-size 1" \
              "batched-nocache:--max-batch-size 32 --image-cache 0 --text-cache 0" \
              "unbatched-nocache:--max-batch-size 1 --image-cache 0 --text-cache 0"; do
  name=${config%%:*}; flags=${config#*:}
  # shellcheck disable=SC2086
  run_server "$name" $flags
  sweep "$name" score
  sweep "$name" search
  stop_server
done
trap - EXIT

"$IMAGESEARCH_HOME/venv/bin/python" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
models = json.loads((out / "models.json").read_text())
ceil = {"score": models["score_batch1"]["pairs_per_s"], "search": models["search_batch1"]["searches_per_s"]}
ceil8 = {"score": models["score_batch8"]["pairs_per_s"], "search": models["search_batch8"]["searches_per_s"]}
own = {"score": models["score_batch1"]["ms_per_call"], "search": models["search_batch1"]["ms_per_call"]}
lines = [f"# imagesearch benchmark ({models['device']}, scorer version {models['version']}, gallery {models['gallery_photos']} photos)", "",
         "Naive ceiling (modules in a loop, one thread, no server): "
         f"Score {ceil['score']:.1f} pairs/s at batch 1 ({own['score']:.1f} ms each), {ceil8['score']:.1f} at batch 8; "
         f"Search {ceil['search']:.1f}/s at batch 1 ({own['search']:.1f} ms each), {ceil8['search']:.1f} at batch 8.", "",
         "| config | op | concurrency | req/s | × naive | p50 ms | p95 ms | p99 ms | p50 − model ms | errors |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
for d in sorted(out.glob("*-score")) + sorted(out.glob("*-search")):
    config, op = d.name.rsplit("-", 1)
    for row in json.loads((d / "sweep.json").read_text()):
        r, c = row["report"], row["concurrency"]
        l = r["latency"]
        lines.append(f"| {config} | {op} | {c} | {r['throughput_rps']:.1f} | {r['throughput_rps'] / ceil[op]:.2f} | {l['p50_ms']:.1f} | {l['p95_ms']:.1f} | {l['p99_ms']:.1f} | {l['p50_ms'] - own[op]:+.1f} | {sum(r['errors'].values())} |")
lines += ["", "`× naive` = throughput / naive batch-1 throughput; "
          "`p50 − model` = median latency minus the modules' own time for one request. Plots: `*/sweep.svg`."]
(out / "report.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "report: $OUT/report.md"
