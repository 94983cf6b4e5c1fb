#!/bin/sh
# First start: a new cluster (password auth over TCP, from $POSTGRES_PASSWORD) and the
# database $POSTGRES_DB; then PostgreSQL in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
DB="${POSTGRES_DB:-gallery}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pw"
  initdb -D "$PGDATA" -U postgres -E UTF8 --locale=C --auth-local=trust --auth-host=scram-sha-256 --pwfile="$pw" >/dev/null
  rm -f "$pw"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  createdb -U postgres "$DB"
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "imagesearch-postgres: new cluster with database $DB"
fi
exec postgres -D "$PGDATA"
