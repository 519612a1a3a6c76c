#!/usr/bin/env bash
# Stops the servers scripts/s3/start.sh started (by the pids it recorded) and removes their
# data. Safe to run when nothing is running.
set -uo pipefail

state="${S3_TEST_DIR:-/tmp/woodpecker-s3-test}"
[ -d "$state" ] || exit 0

# Running and not a zombie (an exited server whose parent has not reaped it yet counts as
# stopped).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    [ "$(echo "${stat##*) }" | cut -d' ' -f1)" != Z ]
}

for name in seaweedfs moto; do
    pidfile="$state/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    # A stale pid file (e.g. after a reboot) may name someone else's process: only stop a
    # process that is still the server we started.
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq 'weed|moto'; then
        # Each server was started with setsid: its pid leads a process group of its own.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        # Test data is disposable: no need to wait long for a graceful shutdown.
        for _ in $(seq 30); do
            alive "$pid" || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "s3/stop: stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done
rm -rf "$state/seaweedfs"
