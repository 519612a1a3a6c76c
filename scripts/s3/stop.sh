#!/usr/bin/env bash
# Stops the servers scripts/s3/start.sh started (by the pids it recorded) and removes their
# data. Safe to run when nothing is running.
set -uo pipefail

state="${S3_TEST_DIR:-/tmp/woodpecker-s3-test}"
[ -d "$state" ] || exit 0

for name in seaweedfs moto; do
    pidfile="$state/$name.pid"
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        # Each server was started with setsid: its pid leads a process group of its own.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "s3/stop: stopped $name (pid $pid)"
    fi
    rm -f "$pidfile"
done
rm -rf "$state/seaweedfs"
