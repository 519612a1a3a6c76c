package wpstores

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
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
	out := map[string]Store{"file": file, "sqlite": db}
	// The same store on the database servers scripts/db/start.sh starts, when it ran: a
	// fresh database each, with Woodpecker's tables from the addon's fixtures, then xorm's
	// Sync as Woodpecker's migration runs it (a no-op on those tables).
	for driver, env := range map[string]string{"postgres": "WPDB_TEST_POSTGRES_DATASOURCE", "mysql": "WPDB_TEST_MYSQL_DATASOURCE"} {
		admin := os.Getenv(env)
		if admin == "" {
			t.Logf("%s not set: the %s store is not tested (eval \"$(scripts/db/start.sh)\")", env, driver)
			continue
		}
		fresh, err := CreateDatabase(driver, admin, "", fmt.Sprintf("wpstores_%d", time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fresh.Drop() })
		plain, err := fresh.Open()
		if err != nil {
			t.Fatal(err)
		}
		err = ApplySchema(plain, SchemaFile("../../../crates/woodpecker-db/tests/fixtures", driver))
		plain.Close()
		if err != nil {
			t.Fatal(err)
		}
		st, err := OpenDB(driver, fresh.Datasource)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		out[driver] = st
	}
	return out
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
	for name, db := range s {
		if name == "file" {
			continue
		}
		if err := db.LogAppend(1, batch(1, 0, 5)); err != nil {
			t.Fatal(name, err)
		}
		if err := db.LogAppend(1, batch(1, 3, 8)); err == nil {
			t.Fatalf("%s: a chunk with an already stored line was accepted", name)
		}
		if got, _ := db.LogFind(1); len(got) != 5 {
			t.Fatalf("%s: %d rows, want the first 5 only", name, len(got))
		}
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
