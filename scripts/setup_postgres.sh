#!/usr/bin/env bash
# PostgreSQL 15 with pgvector for the PostgreSQL gallery store and its tests (idempotent; needs
# root and Debian's package archive). Debian bookworm ships PostgreSQL 15 but no pgvector, so
# pgvector 0.8.0 is built from Debian trixie's source package, without -march=native (a
# native build dies with SIGILL on other CPUs). Measured here: 9.5 s for the pgvector build and
# install with PostgreSQL present; the Debian packages took 10 s more.
set -euo pipefail

PG_MAJOR="${IMAGESEARCH_PG_MAJOR:-15}"
PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config"
HOME_DIR="${IMAGESEARCH_HOME:-${HOME:?set HOME or IMAGESEARCH_HOME}/.cache/imagesearch}"
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

if [ -f "/usr/share/postgresql/$PG_MAJOR/extension/vector.control" ] && [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/initdb" ]; then
  log "PostgreSQL $PG_MAJOR with pgvector present"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "setup: PostgreSQL $PG_MAJOR + pgvector are missing and installing them needs root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A machine may carry the server without its headers (postgresql-server-dev), which the
# pgvector build needs: each is checked on its own.
server_headers() { [ -x "$PG_CONFIG" ] && [ -f "$("$PG_CONFIG" --includedir-server)/postgres.h" ]; }
if [ ! -x "/usr/lib/postgresql/$PG_MAJOR/bin/initdb" ] || ! server_headers; then
  log "installing PostgreSQL $PG_MAJOR (Debian packages)"
  apt-get update -q >/dev/null
  apt-get install -y -q "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR" dpkg-dev >/dev/null
  # The tests start their own clusters: the packaged one is not needed.
  if command -v pg_ctlcluster >/dev/null; then pg_ctlcluster "$PG_MAJOR" main stop >/dev/null 2>&1 || true; fi
fi
log "building pgvector from Debian trixie's source package"
SRC_LIST=/etc/apt/sources.list.d/imagesearch-trixie-src.sources
if [ ! -f "$SRC_LIST" ]; then
  cat > "$SRC_LIST" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi
apt-get update -q >/dev/null
BUILD="$HOME_DIR/build/pgvector"
rm -rf "$BUILD" && mkdir -p "$BUILD" && cd "$BUILD"
apt-get source --download-only -q pgvector >/dev/null 2>&1
tar xzf pgvector_*.orig.tar.gz
cd pgvector-*/
make -s OPTFLAGS="" PG_CONFIG="$PG_CONFIG" >/dev/null
make -s OPTFLAGS="" PG_CONFIG="$PG_CONFIG" install >/dev/null
log "pgvector $(basename "$PWD" | sed 's/pgvector-//') installed for PostgreSQL $PG_MAJOR"
