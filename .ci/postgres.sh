#!/usr/bin/env bash
# A throwaway PostgreSQL server for the distributed tests (tests/bench/search/ and tests/bench/scale/): installed when absent (Debian
# package `postgresql`, needs root), started on 127.0.0.1 on a free port from a fresh cluster in a temp
# dir, with a role and database protected by a random password.
#
#   .ci/postgres.sh start ENV_FILE    writes DCT_TEST_PG_URL=postgresql://dct:<pw>@127.0.0.1:<port>/dct
#                                     and DCT_TEST_PG_DIR=<cluster dir> to ENV_FILE (mode 600)
#   .ci/postgres.sh stop ENV_FILE     stops that server and removes its directory
#
# The password is only ever written to ENV_FILE; what this prints is redacted.
set -euo pipefail

cmd=${1:-start}
env_file=${2:-${TMPDIR:-/tmp}/dct-postgres.env}

find_bin() {
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

# initdb and the server refuse to run as root: run them as the `postgres` user then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "$cmd" = stop ]; then
  [ -f "$env_file" ] || exit 0
  dir=$(sed -n 's/^DCT_TEST_PG_DIR=//p' "$env_file")
  bin=$(find_bin) || exit 0
  if [ -n "$dir" ] && [ -d "$dir/data" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
  fi
  rm -f "$env_file"
  exit 0
fi

if ! bin=$(find_bin); then
  if [ "$(id -u)" != 0 ]; then
    echo "postgres.sh: PostgreSQL is not installed and installing it needs root" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(find_bin)
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/dct-pg.XXXXXX")
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres: "$dir"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1
# Unix socket in the cluster dir (not /var/run/postgresql), TCP on loopback only.
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200" \
  start >/dev/null

# The CREATE ROLE statement holds the password: keep it out of the server log even if it fails.
as_owner psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres >/dev/null <<SQL
SET log_min_error_statement = panic;
SET log_statement = 'none';
CREATE ROLE dct LOGIN PASSWORD '$password';
CREATE DATABASE dct OWNER dct;
SQL

umask 077
mkdir -p "$(dirname "$env_file")"
cat >"$env_file" <<EOF
DCT_TEST_PG_URL=postgresql://dct:$password@127.0.0.1:$port/dct
DCT_TEST_PG_DIR=$dir
EOF
echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (postgresql://dct:***@127.0.0.1:$port/dct); settings in $env_file"
