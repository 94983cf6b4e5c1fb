#!/usr/bin/env bash
# Fuzzing with cargo fuzz (libFuzzer): the law's normaliser and lexicon, photo decoding, the
# gallery's write-ahead log, every RPC's request decoding with the law's checks. Corpora are seeded from the real data and kept under
# $IMAGESEARCH_HOME/fuzz; every saved crash input in fuzz/regressions/<target>/ is replayed first.
#
#   scripts/fuzz.sh            each target for $FUZZ_SECONDS (default 300) seconds
#   scripts/fuzz.sh --smoke    each target for 20 s (CI)
#   FUZZ_TARGETS="law" scripts/fuzz.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

SECONDS_EACH="${FUZZ_SECONDS:-300}"
[ "${1:-}" = "--smoke" ] && SECONDS_EACH=20
TARGETS="${FUZZ_TARGETS:-law image_decode wal_replay requests}"
TOOLS="$IMAGESEARCH_HOME/tools"
WORK="$IMAGESEARCH_HOME/fuzz"
OUT="$ROOT/var/fuzz"
mkdir -p "$WORK" "$OUT"

if [ ! -x "$TOOLS/bin/cargo-fuzz" ]; then
  log "installing cargo-fuzz into $TOOLS (once)"
  cargo install cargo-fuzz --locked --root "$TOOLS" >&2
fi
export PATH="$TOOLS/bin:$PATH"
# libFuzzer's instrumentation flags are nightly-only; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP (the same compiler, its unstable flags allowed).
case "$(rustc --version)" in *nightly*) ;; *) export RUSTC_BOOTSTRAP=1 ;; esac
FUZZ_TARGET_DIR="$IMAGESEARCH_HOME/fuzz-target"

seed() { # target dir
  local target=$1 dir=$2
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return 0
  mkdir -p "$dir"
  case $target in
    law)
      # Real captions and queries, one per file, plus every lexicon example in the crate docs.
      head -n 400 "$IMAGESEARCH_DATA/flickr8k_train/Flickr8k.token.txt" | cut -f2 | split -l 1 - "$dir/caption-"
      # (sed reads its whole input: no producer is cut off mid-write, which under pipefail
      # would end the script with SIGPIPE's status 141.)
      sed -n '2,201p' "$IMAGESEARCH_DATA/image_search/test_queries.csv" | cut -d'|' -f3 | split -l 1 - "$dir/query-"
      printf 'k\xe2\x80\x8bids in the park' > "$dir/zwsp"
      printf '\xef\xbd\x8b\xef\xbd\x89\xef\xbd\x84\xef\xbd\x93' > "$dir/fullwidth"
      printf 'a 7-year-old boy' > "$dir/age"
      ;;
    image_decode)
      # Real photos (the smaller ones), and a PNG and a WebP made from one of them.
      mapfile -t small < <(find "$IMAGESEARCH_DATA/image_search/test_images" -name '*.jpg' -size -60k | sort)
      cp "${small[@]:0:20}" "$dir/"
      ;;
    requests)
      # One encoded request of each kind (first byte: which message), with real query texts.
      "$IMAGESEARCH_HOME/venv/bin/python" - "$dir" <<'PY'
import os, sys
def varint(n):
    out = b''
    while True:
        b = n & 0x7f; n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n: return out
def field(num, payload): return varint(num << 3 | 2) + varint(len(payload)) + payload
routing = field(3, field(1, b'DE'))
pair = field(1, field(2, field(2, b'photo.jpg')) + field(2, 'two k\u200bids in the park'.encode()))
seeds = {
  0: pair + field(2, field(1, b'DE')),
  2: field(1, 'a dog jumps'.encode()) + varint(2 << 3) + varint(5) + routing,
  3: field(1, b'photo.jpg') + field(2, field(1, b'US')),
  4: field(1, b'photo.jpg') + field(3, b'a boy on a bike'),
  5: field(1, b'a') + field(1, b'b'),
  6: field(1, b'photo.jpg') + field(3, b'reviewer') + field(4, b'a statue'),
}
for kind, body in seeds.items():
    open(os.path.join(sys.argv[1], f'seed-{kind}'), 'wb').write(bytes([kind]) + body)
PY
      ;;
    wal_replay)
      "$IMAGESEARCH_HOME/venv/bin/python" - "$dir" <<'PY'
import struct, sys, zlib, os
def s(b): return struct.pack('<I', len(b)) + b
def frame(p): return struct.pack('<II', len(p), zlib.crc32(p) & 0xffffffff) + p
put = b'\x01' + s(b'photo-1.jpg') + bytes(range(32)) + s(b'image/jpeg') + struct.pack('<I', 1) + s(b'a dog') + b'\x00' + struct.pack('<I', 3) + struct.pack('<fff', 0.5, -1.0, 2.0)
rm = b'\x02' + s(b'photo-1.jpg')
flag = b'\x03' + s(b'photo-2.jpg') + b'\x02'
content = b'\x04' + bytes(32) + b'\x05' + s(b'reviewer') + s(b'note')
log = b''.join(frame(p) for p in [put, flag, content, rm])
open(os.path.join(sys.argv[1], 'log'), 'wb').write(log)
open(os.path.join(sys.argv[1], 'torn'), 'wb').write(log[:-3])
PY
      ;;
  esac
}

SUMMARY="$OUT/summary.md"
printf '| target | seconds | executions | corpus | crashes |\n|---|---|---|---|---|\n' > "$SUMMARY"
for t in $TARGETS; do
  corpus="$WORK/corpus/$t"
  seed "$t" "$corpus"
  regressions="$ROOT/fuzz/regressions/$t"
  artifacts="$WORK/artifacts/$t"
  mkdir -p "$artifacts"
  log "fuzz target $t: building"
  cargo fuzz build --fuzz-dir fuzz --target-dir "$FUZZ_TARGET_DIR" -O "$t" >&2
  bin="$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release/$t"
  if [ -n "$(ls -A "$regressions" 2>/dev/null)" ]; then
    log "$t: replaying $(ls "$regressions" | wc -l) saved crash inputs"
    "$bin" "$regressions"/* >&2
  fi
  log "$t: fuzzing for ${SECONDS_EACH}s"
  set +e
  "$bin" -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" 2> "$OUT/$t.log"
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -n1)
  crashes=$(find "$artifacts" -type f | wc -l)
  printf '| %s | %s | %s | %s files | %s |\n' "$t" "$SECONDS_EACH" "${execs:-?}" "$(ls "$corpus" | wc -l)" "$crashes" >> "$SUMMARY"
  if [ $rc -ne 0 ]; then
    tail -n 40 "$OUT/$t.log" >&2
    log "$t: crash saved under $artifacts; copy it to fuzz/regressions/$t/ and fix it"
    exit 1
  fi
done
cat "$SUMMARY"
