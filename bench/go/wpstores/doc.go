// Package wpstores re-states, in our own words, Woodpecker's two built-in log stores so the
// benchmark can drive them in the same process and run as our addon:
//
//   - the file store (go.woodpecker-ci.org/woodpecker/v3 server/services/log/file): one
//     NDJSON file per step, opened with O_APPEND for every batch, each entry marshalled
//     with encoding/json and the batch written with one write; LogFind scans the file with a
//     bufio.Scanner and unmarshals line by line; no ordering, no deduplication;
//   - the database store (server/store/datastore/log.go with the model in
//     server/model/log.go): xorm with the drivers Woodpecker registers: github.com/mattn/go-sqlite3
//     (cgo, "sqlite3"), github.com/lib/pq ("postgres") and github.com/go-sql-driver/mysql
//     ("mysql", MySQL and MariaDB); xorm v1.4.1 and go-sqlite3 v1.14.50 as Woodpecker's
//     go.mod pins them, lib/pq v1.12.3 and go-sql-driver/mysql v1.10.2 (the newest on the
//     module proxy; Woodpecker v3's own pins could not be read here), the log_entries table
//     created by xorm's Sync from the model (UNIQUE(step_id, line), INDEX(step_id)),
//     inserts in chunks of 1000 rows, reads ORDER BY line, the server's default connection
//     pool settings (100 open, 2 idle, 3 s lifetime).
//
// Why a re-statement and not an import: the Go module proxy reachable from this project's
// machines refuses go.woodpecker-ci.org/woodpecker/v3, so the real packages cannot be
// imported. What decides the cost of each store (system calls, encoding, SQL statements,
// driver, schema, pool) is kept as Woodpecker has it; logging calls and error wrapping are
// reduced to what the benchmark needs. Everything here was written from reading Woodpecker's
// sources, not copied.
package wpstores
