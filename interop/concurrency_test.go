package interop

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestConcurrentMixedCalls shares one client between 64 goroutines, as the Woodpecker server
// shares its *rpc.Client, each making 500 mixed calls on its own steps and checking every
// answer against its own model of first-write-wins storage.
func TestConcurrentMixedCalls(t *testing.T) {
	const workers, callsEach = 64, 500
	a := startAddon(t)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			if err := mixedCalls(a.svc, w, callsEach); err != nil {
				errs <- fmt.Errorf("worker %d: %w", w, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	elapsed := time.Since(start)
	t.Logf("FIGURE concurrency: %d goroutines x %d mixed calls in %v (%.0f calls/s)",
		workers, callsEach, elapsed.Round(time.Millisecond), float64(workers*callsEach)/elapsed.Seconds())
}

func mixedCalls(svc *woodpecker.RPC, worker, calls int) error {
	rng := rand.New(rand.NewPCG(uint64(worker), 42))
	steps := []*woodpecker.Step{newStep(), newStep()}
	models := []map[int]*woodpecker.LogEntry{{}, {}}
	for call := range calls {
		s := rng.IntN(len(steps))
		step, model := steps[s], models[s]
		switch op := rng.IntN(20); {
		case op < 12: // append a batch, partly resending known lines with new content
			// Distinct lines within a batch (an agent never repeats a line in one batch),
			// in random order; resends happen across batches.
			n := 1 + rng.IntN(20)
			batch := make([]*woodpecker.LogEntry, 0, n)
			for _, line := range rng.Perm(200)[:n] {
				e := &woodpecker.LogEntry{StepID: step.ID, Line: line, Time: int64(call),
					Type: woodpecker.LogEntryType(rng.IntN(5)), Data: []byte(fmt.Sprintf("w%d c%d l%d", worker, call, line))}
				batch = append(batch, e)
			}
			if err := svc.LogAppend(step, batch); err != nil {
				return fmt.Errorf("call %d LogAppend: %w", call, err)
			}
			for _, e := range batch {
				if _, seen := model[e.Line]; !seen {
					model[e.Line] = e
				}
			}
		case op < 18:
			got, err := svc.LogFind(step)
			if err != nil {
				return fmt.Errorf("call %d LogFind: %w", call, err)
			}
			if err := sameLog(got, model); err != nil {
				return fmt.Errorf("call %d LogFind step %d: %w", call, step.ID, err)
			}
		case op < 19:
			svc.StepFinished(step)
		default:
			if err := svc.LogDelete(step); err != nil {
				return fmt.Errorf("call %d LogDelete: %w", call, err)
			}
			models[s] = map[int]*woodpecker.LogEntry{}
		}
	}
	return nil
}

func sameLog(got []*woodpecker.LogEntry, model map[int]*woodpecker.LogEntry) error {
	want := make([]*woodpecker.LogEntry, 0, len(model))
	for _, e := range model {
		want = append(want, e)
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Line < want[j].Line })
	if len(got) != len(want) {
		return fmt.Errorf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Line != w.Line || g.StepID != w.StepID || g.Time != w.Time || g.Type != w.Type || string(g.Data) != string(w.Data) {
			return fmt.Errorf("entry %d: got %s, want %s", i, show(g), show(w))
		}
	}
	return nil
}
