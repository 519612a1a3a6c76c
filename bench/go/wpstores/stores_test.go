package wpstores

import (
	"fmt"
	"path/filepath"
	"testing"
)

func batch(step int64, from, to int) []*LogEntry {
	var out []*LogEntry
	for i := from; i < to; i++ {
		out = append(out, &LogEntry{StepID: step, Line: i, Time: int64(i / 100), Data: []byte(fmt.Sprintf("line %d of step %d", i, step))})
	}
	return out
}

func stores(t *testing.T) map[string]Store {
	t.Helper()
	file, err := NewFileStore(filepath.Join(t.TempDir(), "logs"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenDBStore(filepath.Join(t.TempDir(), "woodpecker.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return map[string]Store{"file": file, "sqlite": db}
}

// Both stores give back what was appended; the database store orders by line, the file
// store keeps append order, as Woodpecker's do.
func TestRoundTripAndOrder(t *testing.T) {
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if err := s.LogAppend(7, batch(7, 1500, 2500)); err != nil {
				t.Fatal(err)
			}
			if err := s.LogAppend(7, batch(7, 0, 1500)); err != nil {
				t.Fatal(err)
			}
			if err := s.LogAppend(8, batch(8, 0, 10)); err != nil {
				t.Fatal(err)
			}
			got, err := s.LogFind(7)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2500 {
				t.Fatalf("%d entries, want 2500", len(got))
			}
			first := 0
			if name == "file" {
				first = 1500
			}
			if got[0].Line != first || string(got[0].Data) != fmt.Sprintf("line %d of step 7", first) {
				t.Fatalf("first entry %+v, want line %d", got[0], first)
			}
			if err := s.LogDelete(7); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.LogFind(7); len(got) != 0 {
				t.Fatalf("%d entries left after LogDelete", len(got))
			}
			if got, _ := s.LogFind(8); len(got) != 10 {
				t.Fatalf("LogDelete of step 7 touched step 8: %d entries left", len(got))
			}
		})
	}
}

// The schema from Woodpecker's model refuses a line stored twice (UNIQUE(step_id, line)),
// failing the whole chunk, while the file store appends the copy.
func TestDuplicateLines(t *testing.T) {
	s := stores(t)
	if err := s["sqlite"].LogAppend(1, batch(1, 0, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s["sqlite"].LogAppend(1, batch(1, 3, 8)); err == nil {
		t.Fatal("a chunk with an already stored line was accepted")
	}
	if got, _ := s["sqlite"].LogFind(1); len(got) != 5 {
		t.Fatalf("%d rows, want the first 5 only", len(got))
	}
	if err := s["file"].LogAppend(1, batch(1, 0, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s["file"].LogAppend(1, batch(1, 3, 8)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s["file"].LogFind(1); len(got) != 10 {
		t.Fatalf("%d entries, want all 10 appended", len(got))
	}
}

func BenchmarkDBAppend1000(b *testing.B) {
	db, err := OpenDBStore(filepath.Join(b.TempDir(), "woodpecker.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for i := 0; b.Loop(); i++ {
		if err := db.LogAppend(1, batch(1, i*1000, i*1000+1000)); err != nil {
			b.Fatal(err)
		}
	}
}
