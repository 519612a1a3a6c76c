package main

import (
	"os"
	"strings"
	"testing"
)

// TestDatabaseStagingAgainstDatabaseStore (issue 11, item 3) runs the database-staging
// benchmark at test size: per database (SQLite always; PostgreSQL and MariaDB when
// scripts/db/start.sh's data sources are set), Woodpecker's database store and the addon
// with WOODPECKER_LOG_STORE_S3_STAGING=database, each on a fresh database, through the paced,
// burst and saturated phases of staging.go. It fails when the addon fails an append, when
// an acknowledged line does not come back right (for either store; on SQLite a failed append
// is only reported, see below), or when log_entries
// still holds rows after the addon archived every step; latency and row counts are printed as
// FIGURE lines, not asserted (the machine is shared). `bench/run --staging` is the full size.
//
// Needs the addon binary (WOODPECKER_S3_LOGS_BIN, default the release build).
func TestDatabaseStagingAgainstDatabaseStore(t *testing.T) {
	bin := addonBinary(t)
	cfg := stagingConfig{
		Bin: bin, SchemaDir: "../../crates/woodpecker-db/tests/fixtures", Work: t.TempDir(),
		FinalizeDelay: "1s", Scale: stagingTest, Stores: []string{"woodpecker", "addon"},
		Drivers: []string{"sqlite3"},
		Admin: map[string]string{
			"postgres": os.Getenv("WPDB_TEST_POSTGRES_DATASOURCE"),
			"mysql":    os.Getenv("WPDB_TEST_MYSQL_DATASOURCE"),
		},
	}
	for _, d := range []string{"postgres", "mysql"} {
		if cfg.Admin[d] == "" {
			t.Logf("no %s data source: run `eval \"$(scripts/db/start.sh)\"` first (scripts/test.sh does); %s is left out", d, d)
			continue
		}
		cfg.Drivers = append(cfg.Drivers, d)
	}
	run, err := runStaging(cfg, testCorpus(t), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range run.Results {
		name := r.label()
		if !r.Verify.ok() {
			t.Errorf("%s: acknowledged lines not read back right: %+v", name, r.Verify)
		}
		if r.Store == "addon" {
			// A failed append is a batch the host drops. On SQLite both stores can fail one
			// with "database is locked" once a writer waits past the 5 s busy timeout, which
			// a loaded machine causes (bench/findings.md, "Database staging"): reported there,
			// not a test failure; on the servers none may fail.
			if n := r.Paced.Errors + r.Burst.Errors + r.Stream.Errors; n > 0 && r.Database == "sqlite3" {
				t.Logf("FIGURE staging %s: %d appends failed (lines the host would drop; first: %s%s%s)", name, n, r.Paced.FirstError, r.Burst.FirstError, r.Stream.FirstError)
			} else if n > 0 {
				t.Errorf("%s: %d appends failed (first: %s%s%s)", name, n, r.Paced.FirstError, r.Burst.FirstError, r.Stream.FirstError)
			}
			if r.Rows.AfterArchive != 0 {
				t.Errorf("%s: log_entries holds %d rows after every step was archived", name, r.Rows.AfterArchive)
			}
		} else if n := r.Paced.Errors + r.Burst.Errors + r.Stream.Errors; n > 0 {
			t.Logf("%s: %d appends failed (lines Woodpecker would lose; first: %s%s%s)", name, n, r.Paced.FirstError, r.Burst.FirstError, r.Stream.FirstError)
		}
		t.Logf("FIGURE staging %s: paced LogAppend p50 %.2f ms p99 %.2f ms, %.0f lines/s, %.0f appends/s, %d late, %d failed; saturated %.0f lines/s, %.1f appends/s",
			name, r.Paced.P50Ms, r.Paced.P99Ms, r.Paced.LinesPerSec, r.PacedAppendsPerSec, r.Paced.Late, r.Paced.Errors, r.Stream.LinesPerSec, r.StreamAppendsPerSec)
		t.Logf("FIGURE staging %s: burst %s of %d rows in %.2f s; append p99 before %.2f ms, while archiving %.2f ms, while deleting %.2f ms, after %.2f ms",
			name, r.Burst.Event, r.Burst.Rows, r.Burst.DeleteSeconds, r.Burst.Before.P99Ms, r.Burst.Archiving.P99Ms, r.Burst.Deleting.P99Ms, r.Burst.After.P99Ms)
		t.Logf("FIGURE staging %s: log_entries rows start %d, max %d, end of streaming %d, after the final archive %d (most beyond running steps' lines: %d); %d acknowledged lines read back",
			name, r.Rows.Start, r.Rows.Max, r.Rows.EndOfStreaming, r.Rows.AfterArchive, r.Rows.MaxBeyondLive, r.Verify.Lines-r.Verify.Missing)
	}
	for _, db := range cfg.Drivers {
		var s, a *stagingResult
		for _, r := range run.Results {
			if r.Database == db && r.Store == "woodpecker" {
				s = r
			} else if r.Database == db {
				a = r
			}
		}
		if s != nil && a != nil && s.Paced.P50Ms > 0 && s.Paced.P99Ms > 0 {
			t.Logf("FIGURE staging %s: addon / database store paced LogAppend p50 %.2f×, p99 %.2f× (below 1: addon faster)", db, a.Paced.P50Ms/s.Paced.P50Ms, a.Paced.P99Ms/s.Paced.P99Ms)
		}
	}
}

// TestStagingTableGivesMediansOverRounds: with several rounds the table's figures are the
// medians of the rounds (not the first or last round), ratios are of those medians, and the
// paced latencies of each round are listed with each round's ratio.
func TestStagingTableGivesMediansOverRounds(t *testing.T) {
	result := func(store string, round int, p99 float64, missing int64) *stagingResult {
		r := &stagingResult{Database: "mysql", Store: store, Round: round}
		r.Paced.P50Ms = 1
		r.Paced.P99Ms = p99
		r.Verify.Lines = 100
		r.Verify.Missing = missing
		return r
	}
	run := &stagingRun{Rounds: 3, Results: []*stagingResult{
		result("woodpecker", 1, 10, 0), result("addon", 1, 40, 0),
		result("addon", 2, 5, 1), result("woodpecker", 2, 20, 0),
		result("woodpecker", 3, 8, 0), result("addon", 3, 6, 0),
	}}
	table := stagingTable(run)
	for _, want := range []string{
		"Medians over 3 rounds",
		"| paced LogAppend p99, ms | 10.00 | 6.00 | 0.60× |",
		"| paced LogAppend p99 by round, ms | 10.00 / 20.00 / 8.00 | 40.00 / 5.00 / 6.00 | 4.00× / 0.25× / 0.75× |",
		"| acked lines read back (missing, wrong) | 300 (0, 0) | 299 (1, 0) | – |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
