#!/usr/bin/env bash
# `make bench`: imagesearch side by side with a plain Python grpcio server doing the same work
# (bench/peer/server.py: thread pool, PIL, the same TorchScript files), both measured by the
# same load generator, point by point alternating, in one run: Score and Search at concurrency
# 1, 8 and 32, caches off (every request really encodes) and caches on; then overload (open
# loop far past capacity) and recovery. The TorchScript modules in a loop give the ceiling.
# Writes var/bench/report.md, report.json and compare.svg.
#
# Knobs: BENCH_DURATION_S (10 per point), BENCH_SWEEP (1,8,32), BENCH_REPEATS (2),
# BENCH_CACHES ("off on", or "none"), BENCH_OPS ("score search"), BENCH_OVERLOAD_RATE (Score/s offered,
# 300: ~5x what 2 cores answer; 0 = skip),
# BENCH_RUST_FLAGS (extra server flags, e.g. to measure a lever), IMAGESEARCH_DEVICE (cpu).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
cargo test --workspace --no-run
VERSION=$(ensure_version)
OUT="$ROOT/var/bench"
mkdir -p "$OUT"
rm -rf "$OUT/points"
DEVICE="${IMAGESEARCH_DEVICE:-cpu}"
DURATION="${BENCH_DURATION_S:-10}"
SWEEP="${BENCH_SWEEP:-1,8,32}"
REPEATS="${BENCH_REPEATS:-2}"
CACHES="${BENCH_CACHES:-off on}"
[ "$CACHES" = none ] && CACHES=""
OPS="${BENCH_OPS:-score search}"
OVERLOAD_RATE="${BENCH_OVERLOAD_RATE:-300}"
PORT="${BENCH_PORT:-50071}"
PEER_PORT="${BENCH_PEER_PORT:-50072}"
DATA="$IMAGESEARCH_DATA/image_search"
PY="$IMAGESEARCH_HOME/venv/bin/python"
RUST="http://127.0.0.1:$PORT"
PEER="http://127.0.0.1:$PEER_PORT"
export IMAGESEARCH_WRITER_TOKEN="${IMAGESEARCH_WRITER_TOKEN:-bench-writer-$$}"

log "naive ceiling: the TorchScript modules in a loop, one thread ($DEVICE)"
"$BIN_DIR/imagesearch-bench-models" --device "$DEVICE" --photos "$DATA/test_images" \
  --queries "$DATA/test_queries.csv" > "$OUT/models.json"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
wait_ready() { # endpoint pid log probe
  for _ in $(seq 1 600); do
    # The Rust server by health (Info answers while its models still warm; health says SERVING
    # once they are), the peer by info (it answers only once loaded).
    IMAGESEARCH_ENDPOINT=$1 "$BIN_DIR/imagesearch" "$4" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; exit 1; }
    sleep 0.5
  done
  echo "the server at $1 did not become ready" >&2; exit 1
}
RUST_PID=""; PEER_PID=""
start_rust() { # name, flags...
  local name=$1; shift
  # shellcheck disable=SC2086
  "$BIN_DIR/imagesearch-server" --listen "127.0.0.1:$PORT" --metrics-listen off --device "$DEVICE" \
    --data-dir "$OUT/server" "$@" ${BENCH_RUST_FLAGS:-} > "$OUT/server-$name.log" 2>&1 &
  RUST_PID=$!
  wait_ready "$RUST" "$RUST_PID" "$OUT/server-$name.log" health
}
start_peer() { # name, flags...
  local name=$1; shift
  "$PY" bench/peer/server.py --listen "127.0.0.1:$PEER_PORT" --models "$IMAGESEARCH_MODELS" \
    --version "$VERSION" --device "$DEVICE" --gallery "$DATA/test_images" "$@" > "$OUT/peer-$name.log" 2>&1 &
  PEER_PID=$!
  wait_ready "$PEER" "$PEER_PID" "$OUT/peer-$name.log" info
}
stop_all() {
  for pid in $RUST_PID $PEER_PID; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $RUST_PID $PEER_PID; do wait "$pid" 2>/dev/null || true; done
  RUST_PID=""; PEER_PID=""
}
trap stop_all EXIT

point() { # server endpoint pid cache op concurrency repeat
  local dir="$OUT/points/$1-cache$4-$5-c$6-r$7" t0 t1
  t0=$(cpu_ticks "$3")
  IMAGESEARCH_ENDPOINT=$2 "$BIN_DIR/imagesearch" loadtest --data "$DATA" --mix "$5" --sweep "$6" \
    --duration-s "$DURATION" --warmup-s 2 --region US --out-dir "$dir" > /dev/null
  t1=$(cpu_ticks "$3")
  printf '{"server": "%s", "cache": "%s", "op": "%s", "concurrency": %s, "repeat": %s, "cpu_s": %s, "wall_s": %s, "rss_kb": %s}\n' \
    "$1" "$4" "$5" "$6" "$7" "$(( t1 - t0 ))e-2" "$(( DURATION + 2 ))" "$(rss_kb "$3")" > "$dir/proc.json"
}

# The Rust server's gallery (the 100 test photos) is filled once and kept in var/bench/server;
# the peer embeds the same photos at its start.
start_rust fill
[ "$(IMAGESEARCH_ENDPOINT=$RUST "$BIN_DIR/imagesearch" --json gallery stats | sed -n 's/.*"photos": \([0-9]*\).*/\1/p')" -ge 100 ] \
  || IMAGESEARCH_ENDPOINT=$RUST "$BIN_DIR/imagesearch" gallery add "$DATA/test_images"
stop_all

for cache in $CACHES; do
  if [ "$cache" = off ]; then
    start_rust nocache --image-views original --image-cache 0 --text-cache 0
    start_peer nocache --cache 0
  else
    start_rust cache --image-views original
    start_peer cache --cache 4096
  fi
  log "caches $cache: Rust (pid $RUST_PID) and Python peer (pid $PEER_PID) alternating, ${DURATION}s per point"
  for op in $OPS; do
    for c in ${SWEEP//,/ }; do
      for r in $(seq 1 "$REPEATS"); do
        # Alternate which server goes first, so drift on the machine favours neither.
        if [ $(( r % 2 )) -eq 1 ]; then order="rust peer"; else order="peer rust"; fi
        for s in $order; do
          if [ "$s" = rust ]; then point rust "$RUST" "$RUST_PID" "$cache" "$op" "$c" "$r"
          else point peer "$PEER" "$PEER_PID" "$cache" "$op" "$c" "$r"; fi
        done
        log "  $op c=$c repeat $r done"
      done
    done
  done
  stop_all
done

if [ "$OVERLOAD_RATE" != 0 ]; then
  # Score: heavy for the server, light for the load generator sharing its cores (an open loop of
  # cheap Searches fast enough to overload the server would mostly measure the generator).
  log "overload: open loop, $OVERLOAD_RATE Score/s for 20 s on the Rust server (caches off), then recovery"
  start_rust overload --image-views original --image-cache 0 --text-cache 0
  IMAGESEARCH_ENDPOINT=$RUST "$BIN_DIR/imagesearch" --json loadtest --data "$DATA" --mix score --mode open \
    --rate "$OVERLOAD_RATE" --duration-s 20 --warmup-s 0 --region US > "$OUT/overload.json"
  for after in 1 5; do
    sleep $(( after == 1 ? 1 : 4 ))
    IMAGESEARCH_ENDPOINT=$RUST "$BIN_DIR/imagesearch" --json loadtest --data "$DATA" --mix score \
      --concurrency 1 --requests 5 --warmup-s 0 --region US --seed "$after" > "$OUT/recovery-$after.json"
  done
  echo "{\"rss_kb\": $(rss_kb "$RUST_PID")}" > "$OUT/overload-proc.json"
  stop_all
fi
trap - EXIT

"$PY" bench/report.py "$OUT"
log "report: $OUT/report.md (plot: $OUT/compare.svg)"
