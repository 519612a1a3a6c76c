// Package reference checks the addon's read contract against Woodpecker's own database
// store (re-stated in ../wpstores, on SQLite as Woodpecker runs it): for the same calls, the
// addon's LogFind must return what the database store returns, for running and for archived
// steps. The addon is loaded through Woodpecker's addon client (interop/woodpecker).
//
// The one deliberate difference: when a resent batch overlaps lines already stored, the
// database's unique index on (step_id, line) rejects the whole INSERT, new lines included;
// the addon keeps the new lines (first write still wins for the old ones).
package reference

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/bench/wpstores"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// A call sequence: batches of [from, to) lines, in the order sent. Data depends on the
// batch too, so "first write wins" is observable.
type sequence struct {
	name    string
	batches [][2]int
	// Lines the addon keeps that the database loses, because their batch overlapped stored
	// lines and the unique index refused the whole batch.
	extra []int
}

var sequences = []sequence{
	{name: "in order", batches: [][2]int{{0, 100}, {100, 250}, {250, 251}}},
	{name: "resent batch", batches: [][2]int{{0, 50}, {50, 100}, {50, 100}, {100, 120}}},
	{name: "out of order", batches: [][2]int{{60, 90}, {0, 30}, {90, 100}, {30, 60}}},
	{name: "overlapping resend", batches: [][2]int{{0, 40}, {30, 60}}, extra: rangeOf(40, 60)},
	{name: "conflicting resend", batches: [][2]int{{0, 20}, {0, 20}, {10, 15}}},
}

func rangeOf(from, to int) []int {
	var lines []int
	for i := from; i < to; i++ {
		lines = append(lines, i)
	}
	return lines
}

func entries(step int64, batch int, from, to int) []*woodpecker.LogEntry {
	var out []*woodpecker.LogEntry
	for line := from; line < to; line++ {
		out = append(out, &woodpecker.LogEntry{
			StepID: step,
			Time:   int64(line / 10),
			Line:   line,
			Data:   []byte(fmt.Sprintf("step %d line %d from batch %d \xff", step, line, batch)),
			Type:   woodpecker.LogEntryType(line % 5),
		})
	}
	return out
}

func toDB(in []*woodpecker.LogEntry) []*wpstores.LogEntry {
	out := make([]*wpstores.LogEntry, 0, len(in))
	for _, e := range in {
		out = append(out, &wpstores.LogEntry{StepID: e.StepID, Time: e.Time, Line: e.Line, Data: e.Data, Type: wpstores.LogEntryType(e.Type)})
	}
	return out
}

// key renders what a reader sees of an entry; the row id is the database's own and is not
// part of the contract (the file store returns 0 as well).
func key(stepID, t int64, line int, data []byte, typ int) string {
	return fmt.Sprintf("%d|%d|%d|%q|%d", stepID, t, line, data, typ)
}

func TestAddonReadsLikeWoodpeckersDatabaseStore(t *testing.T) {
	bin := os.Getenv("WOODPECKER_S3_LOGS_BIN")
	if bin == "" {
		bin = "../../../target/release/woodpecker-s3-logs"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no addon binary at %s (build it with cargo build --release): %v", bin, err)
	}
	dir := t.TempDir()
	db, err := wpstores.OpenDBStore(filepath.Join(dir, "woodpecker.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	archive := filepath.Join(dir, "archive")
	addon, err := woodpecker.Load(bin, woodpecker.Options{Env: []string{
		"WOODPECKER_LOG_STORE_S3_SPOOL_DIR=" + filepath.Join(dir, "spool"),
		"WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR=" + archive,
		"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=100ms",
		"TMPDIR=" + dir,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer addon.Client.Kill()

	steps := map[int64]sequence{}
	// Interleave the sequences: batch i of every step before batch i+1 of any.
	for round := 0; ; round++ {
		sent := false
		for i, seq := range sequences {
			id := int64(7001 + i)
			steps[id] = seq
			if round >= len(seq.batches) {
				continue
			}
			sent = true
			b := seq.batches[round]
			batch := entries(id, round, b[0], b[1])
			if err := addon.RPC.LogAppend(&woodpecker.Step{ID: id}, batch); err != nil {
				t.Fatalf("%s: addon LogAppend: %v", seq.name, err)
			}
			// Woodpecker logs the database's refusal and goes on; so does the reference.
			_ = db.LogAppend(id, toDB(batch))
		}
		if !sent {
			break
		}
	}

	compare := func(phase string) {
		for id, seq := range steps {
			want, err := db.LogFind(id)
			if err != nil {
				t.Fatal(err)
			}
			got, err := addon.RPC.LogFind(&woodpecker.Step{ID: id})
			if err != nil {
				t.Fatalf("%s %s: addon LogFind: %v", phase, seq.name, err)
			}
			extra := map[int]bool{}
			for _, line := range seq.extra {
				extra[line] = true
			}
			var gotKeys, wantKeys []string
			for _, e := range got {
				if !extra[e.Line] {
					gotKeys = append(gotKeys, key(e.StepID, e.Time, e.Line, e.Data, int(e.Type)))
				}
			}
			for _, e := range want {
				wantKeys = append(wantKeys, key(e.StepID, e.Time, e.Line, e.Data, int(e.Type)))
			}
			if fmt.Sprint(gotKeys) != fmt.Sprint(wantKeys) {
				t.Errorf("%s %s: addon and database store differ\naddon: %v\ndb:    %v", phase, seq.name, gotKeys, wantKeys)
			}
			if len(got) != len(want)+len(seq.extra) {
				t.Errorf("%s %s: addon has %d lines, database %d, expected %d more in the addon (lines of refused batches)",
					phase, seq.name, len(got), len(want), len(seq.extra))
			}
			for i := 1; i < len(got); i++ {
				if got[i].Line <= got[i-1].Line {
					t.Errorf("%s %s: addon lines out of order at %d", phase, seq.name, i)
				}
			}
		}
	}
	compare("running")

	for id := range steps {
		addon.RPC.StepFinished(&woodpecker.Step{ID: id})
	}
	deadline := time.Now().Add(30 * time.Second)
	for id := range steps {
		object := filepath.Join(archive, "v1", fmt.Sprintf("%03d", id%1000), fmt.Sprintf("%d.ndjson.zst", id))
		for {
			if _, err := os.Stat(object); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d not archived at %s within 30 s", id, object)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	compare("archived")
}
