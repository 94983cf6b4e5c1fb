#!/usr/bin/env bash
# `make scale`: search at gallery scale — the embedded flat index against pgvector (exact and
# HNSW) on synthetic clustered 2,560-d embeddings, in a throw-away PostgreSQL cluster.
# SCALE_PHOTOS (default 100000) vectors; writes var/scale/scale-<N>.json.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
cargo build -p imagesearch-server --bin imagesearch-bench-scale
N="${SCALE_PHOTOS:-100000}"
OUT="$ROOT/var/scale"
mkdir -p "$OUT"
PGBIN="$(pg_config --bindir)"
[ -x "$PGBIN/initdb" ] || PGBIN=/usr/lib/postgresql/15/bin
PGDIR="$(mktemp -d /tmp/imagesearch-scale-pg.XXXXXX)"
PORT="${SCALE_PG_PORT:-55439}"
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust >/dev/null
stop() { as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"; }
trap stop EXIT
as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -w -l "$PGDIR/log" \
  -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c shared_buffers=2GB -c max_wal_size=8GB -c synchronous_commit=off" start >/dev/null
log "scale bench: $N vectors (PostgreSQL on port $PORT)"
"$BIN_DIR/imagesearch-bench-scale" --database-url "postgres://postgres@127.0.0.1:$PORT/postgres" --photos "$N" "$@" | tee "$OUT/scale-$N.json"
