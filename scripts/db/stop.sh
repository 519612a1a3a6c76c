#!/usr/bin/env bash
# Stops the servers scripts/db/start.sh started and removes their state directory (data,
# sockets, logs). Safe to run when nothing is running.
set -uo pipefail

state="${DB_TEST_DIR:-/tmp/woodpecker-db-test}"
[ -d "$state" ] || exit 0

pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [ -f "$state/postgres/data/postmaster.pid" ] && [ -n "$pg_bin" ]; then
    as_pg=()
    [ "$(id -u)" -ne 0 ] || as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    # Test data is disposable: immediate shutdown.
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$state/postgres/data" -m immediate -w stop >/dev/null 2>&1 \
        && echo "db/stop: stopped PostgreSQL"
fi

pidfile="$state/mariadb.pid"
if [ -f "$pidfile" ]; then
    pid="$(cat "$pidfile")"
    # Only a process that is still the server we started (a stale pid may be reused).
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q mariadbd; then
        # Started with setsid: its pid leads a process group of its own.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "db/stop: stopped MariaDB (pid $pid)"
    fi
fi
rm -rf "$state"
