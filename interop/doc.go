// Package interop holds the end-to-end suite that drives the woodpecker-s3-logs binary
// through a Go re-statement of Woodpecker's own log-addon client (package woodpecker),
// over the real go-plugin v1.8.0 and hashicorp/yamux v0.1.2 stack.
//
// Run it with `go test -v -count=1 -timeout 20m ./...` from this directory. The binary
// comes from $WOODPECKER_S3_LOGS_BIN (default ../target/release/woodpecker-s3-logs);
// INTEROP_USE_REFERENCE=1 runs the suite against the Go reference plugin instead, to check
// the harness itself. INTEROP_ADDON_ENV adds newline-separated KEY=VALUE settings to the
// addon's environment (for example an S3 bucket and endpoint).
package interop
