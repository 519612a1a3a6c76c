// Command refplugin is a Go reference log addon: go-plugin's own server plus an in-memory
// store with the read contract the Rust addon must meet (entries ordered by line, one per
// line number, first write wins; step ids must be positive). The interop suite runs against
// it with INTEROP_USE_REFERENCE=1 to prove that the harness passes against a known-good
// peer, so that a failure against the Rust binary points at the binary, not the harness.
package main

import (
	"fmt"
	"sort"
	"sync"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

type memoryStore struct {
	mu    sync.Mutex
	steps map[int64]map[int]*woodpecker.LogEntry
}

func stepID(step *woodpecker.Step) (int64, error) {
	if step == nil {
		return 0, fmt.Errorf("no step given")
	}
	if step.ID <= 0 {
		return 0, fmt.Errorf("invalid step id %d: must be positive", step.ID)
	}
	return step.ID, nil
}

func (m *memoryStore) LogFind(step *woodpecker.Step) ([]*woodpecker.LogEntry, error) {
	id, err := stepID(step)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*woodpecker.LogEntry, 0, len(m.steps[id]))
	for _, e := range m.steps[id] {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out, nil
}

func (m *memoryStore) LogAppend(step *woodpecker.Step, entries []*woodpecker.LogEntry) error {
	id, err := stepID(step)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	lines := m.steps[id]
	if lines == nil {
		lines = map[int]*woodpecker.LogEntry{}
		m.steps[id] = lines
	}
	for _, e := range entries {
		if _, seen := lines[e.Line]; !seen {
			lines[e.Line] = e
		}
	}
	return nil
}

func (m *memoryStore) LogDelete(step *woodpecker.Step) error {
	id, err := stepID(step)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.steps, id)
	return nil
}

func (m *memoryStore) StepFinished(*woodpecker.Step) {}

func main() {
	woodpecker.Serve(&memoryStore{steps: map[int64]map[int]*woodpecker.LogEntry{}})
}
