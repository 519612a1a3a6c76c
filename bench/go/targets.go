package main

import (
	"fmt"

	"github.com/woodpecker-s3-logs/bench/wpstores"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// target is a log store as the Woodpecker server sees it. Append converts the agent's lines
// into the store's model entries first, as the server's RPC handler does for every store.
type target interface {
	Append(step *woodpecker.Step, lines []agentLine) error
	Finished(step *woodpecker.Step)
	// Find returns the number of entries and the first and last line numbers.
	Find(step *woodpecker.Step) (n, first, last int, err error)
	Delete(step *woodpecker.Step) error
	// Entries returns the step's whole log as the server receives it, in its order.
	Entries(step *woodpecker.Step) ([]agentLine, error)
}

// builtin is one of Woodpecker's stores called in-process, as the server calls them.
type builtin struct {
	store wpstores.Store
}

func (b builtin) Append(step *woodpecker.Step, lines []agentLine) error {
	entries := make([]*wpstores.LogEntry, 0, len(lines))
	for _, l := range lines {
		entries = append(entries, &wpstores.LogEntry{
			StepID: step.ID, Time: l.Time, Line: l.Line, Data: l.Data, Type: wpstores.LogEntryType(l.Type),
		})
	}
	return b.store.LogAppend(step.ID, entries)
}

// Finished does nothing: Woodpecker's built-in stores ignore StepFinished.
func (builtin) Finished(*woodpecker.Step) {}

func (b builtin) Find(step *woodpecker.Step) (int, int, int, error) {
	entries, err := b.store.LogFind(step.ID)
	if err != nil || len(entries) == 0 {
		return 0, 0, 0, err
	}
	return len(entries), entries[0].Line, entries[len(entries)-1].Line, nil
}

func (b builtin) Entries(step *woodpecker.Step) ([]agentLine, error) {
	entries, err := b.store.LogFind(step.ID)
	out := make([]agentLine, 0, len(entries))
	for _, e := range entries {
		out = append(out, agentLine{Line: e.Line, Time: e.Time, Data: e.Data, Type: int(e.Type)})
	}
	return out, err
}

func (b builtin) Delete(step *woodpecker.Step) error {
	return b.store.LogDelete(step.ID)
}

// addonTarget is our addon behind Woodpecker's addon client (go-plugin net/rpc).
type addonTarget struct {
	rpc *woodpecker.RPC
}

func (a addonTarget) Append(step *woodpecker.Step, lines []agentLine) error {
	entries := make([]*woodpecker.LogEntry, 0, len(lines))
	for _, l := range lines {
		entries = append(entries, &woodpecker.LogEntry{
			StepID: step.ID, Time: l.Time, Line: l.Line, Data: l.Data, Type: woodpecker.LogEntryType(l.Type),
		})
	}
	return a.rpc.LogAppend(step, entries)
}

func (a addonTarget) Finished(step *woodpecker.Step) {
	a.rpc.StepFinished(step)
}

func (a addonTarget) Find(step *woodpecker.Step) (int, int, int, error) {
	entries, err := a.rpc.LogFind(step)
	if err != nil || len(entries) == 0 {
		return 0, 0, 0, err
	}
	return len(entries), entries[0].Line, entries[len(entries)-1].Line, nil
}

func (a addonTarget) Entries(step *woodpecker.Step) ([]agentLine, error) {
	entries, err := a.rpc.LogFind(step)
	out := make([]agentLine, 0, len(entries))
	for _, e := range entries {
		out = append(out, agentLine{Line: e.Line, Time: e.Time, Data: e.Data, Type: int(e.Type)})
	}
	return out, err
}

func (a addonTarget) Delete(step *woodpecker.Step) error {
	return a.rpc.LogDelete(step)
}

// findRawSize asks the addon for the step's log and returns the size of the JSON answer
// it sent: the "LogFind answer in flight" the RSS target is relative to.
func findRawSize(rpc *woodpecker.RPC, step *woodpecker.Step, stepJSON []byte) (int, error) {
	var reply []byte
	if err := rpc.Raw().Call("Plugin.LogFind", stepJSON, &reply); err != nil {
		return 0, fmt.Errorf("raw LogFind of step %d: %w", step.ID, err)
	}
	return len(reply), nil
}

// wpStep is the model.Step the server passes along with every call.
func wpStep(id int64, state string) *woodpecker.Step {
	return &woodpecker.Step{
		ID: id, UUID: fmt.Sprintf("01BENCH%019d", id), PipelineID: 1 + id/8, PID: int(id % 8),
		Name: fmt.Sprintf("step-%d", id), State: woodpecker.StatusValue(state), Type: "commands",
		Started: 1718000000,
	}
}
