#!/usr/bin/env bash
# Every test of the project, on a fresh machine: installs what the tests need (Python S3
# servers, Go modules), starts SeaweedFS and moto on 127.0.0.1, runs the Rust tests, builds
# the release binary and runs the Go interop suite against it through go-plugin, the way
# Woodpecker loads it. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "==> $*"; }

step "starting S3-compatible test servers (SeaweedFS, moto) on 127.0.0.1"
eval "$(scripts/s3/start.sh)"
trap 'scripts/s3/stop.sh >/dev/null 2>&1 || true' EXIT

step "Rust tests"
cargo test --workspace --locked

step "release binary"
cargo build --release --locked -p woodpecker-s3-logs
export WOODPECKER_S3_LOGS_BIN="$PWD/target/release/woodpecker-s3-logs"

step "Go interop suite (go-plugin v1.8.0 host, Woodpecker's addon client)"
(cd interop && go vet ./... && go test -count=1 -timeout 30m ./...)

step "demo on the embedded default (local directory)"
"$WOODPECKER_S3_LOGS_BIN" demo
