#!/usr/bin/env bash
# Starts the database servers the Woodpecker-database tests run against, on 127.0.0.1 free
# ports, with no system service: PostgreSQL (initdb + pg_ctl) and MariaDB
# (mariadb-install-db + mariadbd), each in a state directory of its own. Installs them with
# apt when missing (`postgresql`, `mariadb-server`; `apt-get update` only then), waits until
# they answer, creates a `woodpecker` user allowed to create databases (each test makes a
# fresh one), and prints `export ...` lines with data sources in Woodpecker's formats:
#
#   eval "$(scripts/db/start.sh)"     # ... run tests ...     scripts/db/stop.sh
#
#   WPDB_TEST_POSTGRES_DATASOURCE  postgres://woodpecker:woodpecker@127.0.0.1:PORT/woodpecker?sslmode=disable
#   WPDB_TEST_MYSQL_DATASOURCE     woodpecker:woodpecker@tcp(127.0.0.1:PORT)/woodpecker?parseTime=true
#
# Everything but the export lines goes to stderr. State (data, sockets, logs) lives in
# $DB_TEST_DIR (default /tmp/woodpecker-db-test); a second start stops the first servers.
# PostgreSQL refuses to run as root: as root (CI), both servers run as the `postgres` /
# `mysql` system users the packages create, and the state directories are theirs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${DB_TEST_DIR:-/tmp/woodpecker-db-test}"
password="woodpecker"

log() { echo "db/start: $*" >&2; }

DB_TEST_DIR="$state" "$here/stop.sh" >&2 || true
mkdir -p "$state"
chmod 755 "$state"

# --- install (skipped when present) -------------------------------------------------------
pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
missing=()
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || missing+=(postgresql)
command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    log "installing ${missing[*]} with apt"
    "${sudo_cmd[@]}" apt-get update -qq >&2
    # No service is started: the packages' own start attempts fail harmlessly without an
    # init system, and these tests run their own servers below.
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi

# --- who runs them -------------------------------------------------------------------------
# As root, drop to the packages' system users (PostgreSQL refuses root); otherwise run as
# ourselves.
as_pg=()
as_my=()
if [ "$(id -u)" -eq 0 ]; then
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    as_my=(setpriv --reuid=mysql --regid=mysql --init-groups --)
fi

# --- ports -------------------------------------------------------------------------------
read -r pg_port my_port < <(python3 - <<'PY'
import socket
socks = []
for _ in range(2):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

# --- PostgreSQL ----------------------------------------------------------------------------
pg="$state/postgres"
mkdir -p "$pg"
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 --no-locale \
    --no-sync >"$state/postgres-initdb.log" 2>&1 \
    || { log "initdb failed; see $state/postgres-initdb.log"; exit 1; }
# Test data is disposable: no fsync. Sockets in the state dir, none in /var/run.
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pg_port -k $pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2 || { log "PostgreSQL did not start; see $pg/postgres.log"; exit 1; }
"${as_pg[@]}" "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE woodpecker LOGIN CREATEDB PASSWORD '$password'" \
    -c "CREATE DATABASE woodpecker OWNER woodpecker" >&2
log "PostgreSQL ready on 127.0.0.1:$pg_port"

# --- MariaDB -------------------------------------------------------------------------------
my="$state/mariadb"
mkdir -p "$my"
[ "$(id -u)" -ne 0 ] || chown mysql:mysql "$my"
"${as_my[@]}" mariadb-install-db --no-defaults --datadir="$my/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$state/mariadb-install.log" 2>&1 \
    || { log "mariadb-install-db failed; see $state/mariadb-install.log"; exit 1; }
(
    cd "$state"
    "${as_my[@]}" setsid mariadbd --no-defaults --datadir="$my/data" \
        --bind-address=127.0.0.1 --port="$my_port" --socket="$my/mysqld.sock" \
        --pid-file="$my/mariadbd.pid" --skip-name-resolve --innodb-flush-log-at-trx-commit=0 \
        --innodb-doublewrite=0 --innodb-buffer-pool-size=64M --skip-log-bin \
        </dev/null >"$state/mariadb.log" 2>&1 &
    echo $! >"$state/mariadb.pid"
)
for _ in $(seq 300); do
    if mariadb --no-defaults -uroot --socket="$my/mysqld.sock" -e 'SELECT 1' >/dev/null 2>&1; then
        break
    fi
    kill -0 "$(cat "$state/mariadb.pid")" 2>/dev/null \
        || { log "MariaDB exited; see $state/mariadb.log"; exit 1; }
    sleep 0.2
done
mariadb --no-defaults -uroot --socket="$my/mysqld.sock" -e "
    CREATE USER 'woodpecker'@'%' IDENTIFIED BY '$password';
    GRANT ALL ON *.* TO 'woodpecker'@'%';
    CREATE DATABASE woodpecker CHARACTER SET utf8mb4;" >&2 \
    || { log "MariaDB did not answer; see $state/mariadb.log"; exit 1; }
log "MariaDB ready on 127.0.0.1:$my_port"

cat <<EOF_EXPORTS
export DB_TEST_DIR='$state'
export WPDB_TEST_POSTGRES_DATASOURCE='postgres://woodpecker:$password@127.0.0.1:$pg_port/woodpecker?sslmode=disable'
export WPDB_TEST_MYSQL_DATASOURCE='woodpecker:$password@tcp(127.0.0.1:$my_port)/woodpecker?parseTime=true'
EOF_EXPORTS
