#!/usr/bin/env bash
# Run a command with DATABASE_URL pointing at a reachable PostgreSQL.
#
#   scripts/with-postgres.sh <command> [args...]
#
# If DATABASE_URL is set and reachable it is used as is. Otherwise a throwaway cluster
# is created with the machine's initdb/pg_ctl in a temporary directory, started on a
# free loopback port, exported as DATABASE_URL for the command, and stopped and
# removed when the command exits (even on failure or Ctrl-C).
set -euo pipefail
# Dependencies that use sqlx's query macros (apalis-postgres) ship offline query data;
# without this, a rebuild inside this script would check them against the throwaway
# database (empty, so the build fails) instead of using that data.
export SQLX_OFFLINE=true

log() { printf '[with-postgres] %s\n' "$*" >&2; }

reachable() {
  local url=$1
  if command -v psql >/dev/null 2>&1; then
    psql "$url" -qAtc 'select 1' >/dev/null 2>&1
  elif command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -d "$url" >/dev/null 2>&1
  else
    return 1
  fi
}

if [[ -n "${DATABASE_URL:-}" ]] && reachable "$DATABASE_URL"; then
  log "using DATABASE_URL from the environment"
  exec "$@"
fi
[[ -n "${DATABASE_URL:-}" ]] && log "DATABASE_URL is set but not reachable; starting a throwaway cluster instead"

find_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin /opt/homebrew/bin; do
    [[ -x "$dir/$name" ]] && { echo "$dir/$name"; return 0; }
  done
  return 1
}

if ! INITDB=$(find_bin initdb) || ! PG_CTL=$(find_bin pg_ctl); then
  cat >&2 <<'MSG'
[with-postgres] PostgreSQL server binaries (initdb, pg_ctl) were not found, and DATABASE_URL
[with-postgres] is unset or unreachable. Either point DATABASE_URL at a PostgreSQL 13+ server
[with-postgres] (a user allowed to CREATE DATABASE and CREATE EXTENSION), or install PostgreSQL:
[with-postgres]   Debian/Ubuntu:  sudo apt-get update && sudo apt-get install -y postgresql
[with-postgres]   Fedora/RHEL:    sudo dnf install -y postgresql-server
[with-postgres]   macOS:          brew install postgresql@16
MSG
  exit 127
fi

# initdb refuses to run as root: run the cluster as an unprivileged user.
RUN_AS=()
if [[ $(id -u) -eq 0 ]]; then
  PG_USER=${CALSYNC_PG_OS_USER:-postgres}
  if ! id "$PG_USER" >/dev/null 2>&1; then
    PG_USER=calsync-pg
    id "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  fi
  if command -v runuser >/dev/null 2>&1; then RUN_AS=(runuser -u "$PG_USER" --); else RUN_AS=(su -s /bin/sh "$PG_USER" -c); fi
fi
as_pg() {
  if [[ ${#RUN_AS[@]} -eq 0 ]]; then "$@";
  elif [[ ${RUN_AS[0]} == runuser ]]; then "${RUN_AS[@]}" "$@";
  else "${RUN_AS[@]}" "$(printf '%q ' "$@")"; fi
}

PGTMP=$(mktemp -d "${TMPDIR:-/tmp}/calsync-pg.XXXXXX")
chmod 755 "$PGTMP"
[[ ${#RUN_AS[@]} -gt 0 ]] && chown "$PG_USER" "$PGTMP"

cleanup() {
  local rc=$?
  as_pg "$PG_CTL" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGTMP"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg "$INITDB" -D "$PGTMP/data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$PGTMP/initdb.log" 2>&1 \
  || { cat "$PGTMP/initdb.log" >&2; exit 1; }

# Tests want speed, not durability; benchmarks to publish need a normal cluster:
# CALSYNC_PG_DURABLE=1 keeps fsync, synchronous_commit and full_page_writes on.
if [[ "${CALSYNC_PG_DURABLE:-}" == 1 ]]; then
  DURABILITY=""
else
  DURABILITY="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
fi

# Ports below the kernel's ephemeral range (32768+), so an outgoing connection cannot
# hold the one we pick; start at a random one and move on if it is taken anyway.
port=""
candidate=$(( 20000 + RANDOM % 9000 ))
for attempt in $(seq 1 25); do
  p=$(( candidate + attempt ))
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
  if as_pg "$PG_CTL" -D "$PGTMP/data" -l "$PGTMP/postgres.log" -w -t 60 \
      -o "-p $p -k $PGTMP -c listen_addresses=127.0.0.1 -c max_connections=400 $DURABILITY -c shared_buffers=256MB" \
      start >/dev/null 2>&1; then
    port=$p
    break
  fi
  grep -q "already in use" "$PGTMP/postgres.log" 2>/dev/null || { cat "$PGTMP/postgres.log" >&2; exit 1; }
  : > "$PGTMP/postgres.log"
done
[[ -n "$port" ]] || { log "could not find a free port for PostgreSQL"; cat "$PGTMP/postgres.log" >&2; exit 1; }
log "started a throwaway PostgreSQL ($("$INITDB" --version | awk '{print $3}')) in $PGTMP on port $port"

export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
export CALSYNC_PG_DATA="$PGTMP/data" CALSYNC_PG_CTL="$PG_CTL"
log "DATABASE_URL=$DATABASE_URL"
"$@"
