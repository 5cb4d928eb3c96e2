#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for tests (epsfinder sweeps on a shared Optuna storage).
#
#   scripts/pg-test-server.sh [start]   initdb (first time) + start; prints the URL on stdout (idempotent)
#   scripts/pg-test-server.sh url       prints the URL of the running server (exit 1 when it is not running)
#   scripts/pg-test-server.sh status    exit 0 when running
#   scripts/pg-test-server.sh stop      stops it (fast: -m immediate)
#   scripts/pg-test-server.sh destroy   stops it and removes its folder
#
# Settings (environment):
#   EPSFINDER_PG_DIR   folder for the cluster, port file and socket (default: ${TMPDIR:-/tmp}/epsfinder-pg)
#   EPSFINDER_PG_PORT  port (default: a random free port chosen at the first start, then kept)
#   PG_BIN             folder with initdb/pg_ctl (default: newest /usr/lib/postgresql/*/bin, else pg_config --bindir)
#
# Runs as root (the server then runs as the `postgres` user through runuser/su) or as any other user (the server
# runs as that user). Durability is off (fsync, synchronous_commit): never keep real data in it.
# Exit status 3 means the PostgreSQL binaries are missing (Debian: apt-get install postgresql).
set -euo pipefail

DIR="${EPSFINDER_PG_DIR:-${TMPDIR:-/tmp}/epsfinder-pg}"
DATA="$DIR/data"
USER_NAME=epsfinder
PASSWORD=epsfinder
DB=epsfinder
CMD="${1:-start}"

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir)"
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
  fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  echo ""
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
  echo "pg-test-server: PostgreSQL binaries (initdb, pg_ctl) not found; install them (Debian: apt-get install" \
       "postgresql) or set PG_BIN to their folder" >&2
  exit 3
fi

# Run a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

free_port() {
  local py
  py="$(command -v python3 || command -v python || true)"
  if [ -n "$py" ]; then
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    echo $(( 20000 + RANDOM % 40000 ))
  fi
}

url() { echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$(cat "$DIR/port")/$DB"; }

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR"; chmod 700 "$DIR"; fi
  if [ ! -f "$DIR/port" ]; then
    echo "${EPSFINDER_PG_PORT:-$(free_port)}" > "$DIR/port"
  fi
  local port
  port="$(cat "$DIR/port")"
  if running; then url; return 0; fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    local pwfile="$DIR/pwfile"
    echo "$PASSWORD" > "$pwfile"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$pwfile"
    as_owner "$BIN/initdb" -D "$DATA" -U "$USER_NAME" --pwfile="$pwfile" --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --no-sync >"$DIR/initdb.log" 2>&1 \
      || { echo "pg-test-server: initdb failed, see $DIR/initdb.log:" >&2; tail -n 20 "$DIR/initdb.log" >&2; exit 1; }
    rm -f "$pwfile"
    cat >>"$DATA/postgresql.conf" <<EOF
# epsfinder test server: loopback only, no durability
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  # The port can change between starts (EPSFINDER_PG_PORT), so it is passed on the command line.
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "-p $port" -w -t 60 start >/dev/null \
    || { echo "pg-test-server: the server did not start, see $DIR/server.log:" >&2; tail -n 20 "$DIR/server.log" >&2
         exit 1; }
  if ! as_owner "$BIN/psql" -h "$DIR" -p "$port" -U "$USER_NAME" -d postgres -tAc \
       "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
    as_owner "$BIN/createdb" -h "$DIR" -p "$port" -U "$USER_NAME" "$DB"
  fi
  url
}

case "$CMD" in
  start) start ;;
  url) running && url || { echo "pg-test-server: not running (data in $DIR)" >&2; exit 1; } ;;
  status) running ;;
  stop) if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null; fi ;;
  destroy)
    if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null; fi
    rm -rf "$DIR" ;;
  *) echo "usage: $0 [start|url|status|stop|destroy]" >&2; exit 2 ;;
esac
