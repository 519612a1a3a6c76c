package interop

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/rpc"
	"reflect"
	"testing"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// rawFind calls Plugin.LogFind as Woodpecker does but returns the reply bytes untouched.
func rawFind(t testing.TB, a *addon, step *woodpecker.Step) []byte {
	t.Helper()
	args, err := json.Marshal(step)
	if err != nil {
		t.Fatal(err)
	}
	var reply []byte
	if err := a.svc.Raw().Call("Plugin.LogFind", args, &reply); err != nil {
		t.Fatalf("LogFind step %d: %v", step.ID, err)
	}
	return reply
}

// assertLog checks that LogFind returns exactly want: field by field (a nil Data apart from
// an empty one), and as JSON, both re-marshalled and as the addon sent it.
func assertLog(t testing.TB, a *addon, step *woodpecker.Step, want []*woodpecker.LogEntry) {
	t.Helper()
	got, err := a.svc.LogFind(step)
	if err != nil {
		t.Fatalf("LogFind step %d: %v", step.ID, err)
	}
	if len(got) != len(want) {
		t.Fatalf("LogFind step %d: %d entries, want %d (lines %v, want %v)", step.ID, len(got), len(want), lines(got), lines(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("LogFind step %d entry %d:\n got %s\nwant %s", step.ID, i, show(got[i]), show(want[i]))
		}
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Fatalf("LogFind step %d: JSON differs:\n got %.600s\nwant %.600s", step.ID, gotJSON, wantJSON)
	}
	// Compare each entry's raw JSON fields with Go's encoding of what was sent, so that
	// null vs "" and the number forms are checked as the addon wrote them.
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(rawFind(t, a, step), &raw); err != nil {
		t.Fatalf("LogFind reply is no JSON array of objects: %v", err)
	}
	for i, entry := range raw {
		var sent map[string]json.RawMessage
		b, _ := json.Marshal(want[i])
		_ = json.Unmarshal(b, &sent)
		for key, value := range sent {
			if !bytes.Equal(entry[key], value) {
				t.Fatalf("LogFind step %d entry %d: %q is %.200s, sent %.200s", step.ID, i, key, entry[key], value)
			}
		}
	}
}

func lines(entries []*woodpecker.LogEntry) []int {
	out := make([]int, len(entries))
	for i, e := range entries {
		out[i] = e.Line
	}
	return out
}

func show(e *woodpecker.LogEntry) string {
	b, _ := json.Marshal(e)
	if len(b) > 300 {
		return fmt.Sprintf("%.300s… (%d bytes, data nil=%v len=%d)", b, len(b), e.Data == nil, len(e.Data))
	}
	return fmt.Sprintf("%s (data nil=%v)", b, e.Data == nil)
}

// pattern makes n deterministic bytes for a line, so that a mix-up between lines shows.
func pattern(line, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(line*31 + i*7 + i>>8)
	}
	return b
}

func entryAt(step *woodpecker.Step, line int, typ woodpecker.LogEntryType, data []byte) *woodpecker.LogEntry {
	return &woodpecker.LogEntry{StepID: step.ID, Time: 1735689600 + int64(line)*3, Line: line, Data: data, Type: typ}
}

// richBatch is six lines from line first on: every entry type, non-UTF-8 bytes, null and
// empty data, multi-byte unicode and JSON-hostile characters.
func richBatch(step *woodpecker.Step, first int) []*woodpecker.LogEntry {
	return []*woodpecker.LogEntry{
		entryAt(step, first, woodpecker.LogEntryStdout, []byte("+ make build\n")),
		entryAt(step, first+1, woodpecker.LogEntryStderr, []byte{0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0xed, 0xa0, 0x80}),
		entryAt(step, first+2, woodpecker.LogEntryExitCode, nil),
		entryAt(step, first+3, woodpecker.LogEntryMetadata, []byte{}),
		entryAt(step, first+4, woodpecker.LogEntryProgress, []byte("é 世界 😀 \u2028 \x00 \"quoted\" <html> \\")),
		entryAt(step, first+5, woodpecker.LogEntryStdout, []byte("plain")),
	}
}

// bigLine is a 1 MiB line of binary data.
func bigLine(step *woodpecker.Step, line int) *woodpecker.LogEntry {
	return entryAt(step, line, woodpecker.LogEntryStdout, pattern(line, 1<<20))
}

func TestRoundTripEveryMethod(t *testing.T) {
	a := startAddon(t)
	checkAddonStarted(t, a)
	step := newStep()
	batch, big := richBatch(step, 0), bigLine(step, 6)
	if err := a.svc.LogAppend(step, batch); err != nil {
		t.Fatalf("LogAppend: %v", err)
	}
	// A 1 MiB line travels alone, as the agent's 1 MiB batch limit would send it.
	if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{big}); err != nil {
		t.Fatalf("LogAppend 1 MiB line: %v", err)
	}
	assertLog(t, a, step, append(batch, big))

	// StepFinished must succeed (Woodpecker only logs its error, so ask the raw client).
	args, _ := json.Marshal(step)
	var reply []byte
	if err := a.svc.Raw().Call("Plugin.StepFinished", args, &reply); err != nil {
		t.Fatalf("StepFinished: %v", err)
	}
	assertLog(t, a, step, append(batch, big))

	if err := a.svc.LogDelete(step); err != nil {
		t.Fatalf("LogDelete: %v", err)
	}
	assertEmpty(t, a, step)
}

func assertEmpty(t testing.TB, a *addon, step *woodpecker.Step) {
	t.Helper()
	got, err := a.svc.LogFind(step)
	if err != nil {
		t.Fatalf("LogFind step %d: %v", step.ID, err)
	}
	if len(got) != 0 {
		t.Fatalf("LogFind step %d: %d entries (lines %v), want none", step.ID, len(got), lines(got))
	}
	if raw := rawFind(t, a, step); string(raw) != "[]" && string(raw) != "null" {
		t.Fatalf("LogFind step %d: reply %q, want [] (or null)", step.ID, raw)
	}
}

func TestResentAndOutOfOrderBatches(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	mk := func(tag string, from, to int, reverse bool) []*woodpecker.LogEntry {
		var out []*woodpecker.LogEntry
		for l := from; l <= to; l++ {
			out = append(out, &woodpecker.LogEntry{StepID: step.ID, Time: int64(100 + l), Line: l,
				Data: []byte(fmt.Sprintf("%s line %d", tag, l)), Type: woodpecker.LogEntryStdout})
		}
		if reverse {
			for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
				out[i], out[j] = out[j], out[i]
			}
		}
		return out
	}
	batchA := mk("a", 5, 9, true) // later lines first, themselves out of order
	batchB := mk("b", 0, 4, false)
	batchC := mk("c", 3, 7, false) // a retry that overlaps both with other content
	batchD := mk("a", 5, 9, true)  // an exact resend
	tail := mk("t", 20, 21, false) // a gap
	for i, b := range [][]*woodpecker.LogEntry{batchA, batchB, batchC, batchD, tail} {
		if err := a.svc.LogAppend(step, b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	var want []*woodpecker.LogEntry
	want = append(want, mk("b", 0, 4, false)...)
	want = append(want, mk("a", 5, 9, false)...)
	want = append(want, tail...)
	assertLog(t, a, step, want)

	// After StepFinished, late and resent lines are still welcome and still deduplicated.
	a.svc.StepFinished(step)
	late := mk("late", 8, 22, false)
	if err := a.svc.LogAppend(step, late); err != nil {
		t.Fatalf("late batch: %v", err)
	}
	want = nil
	for _, part := range [][]*woodpecker.LogEntry{
		mk("b", 0, 4, false), mk("a", 5, 9, false), mk("late", 10, 19, false), tail, mk("late", 22, 22, false),
	} {
		want = append(want, part...)
	}
	assertLog(t, a, step, want)
}

func TestUnknownStepIsEmpty(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	assertEmpty(t, a, step)
	if err := a.svc.LogDelete(step); err != nil {
		t.Fatalf("LogDelete of a step without log: %v", err)
	}
	assertEmpty(t, a, step)
}

func TestInvalidStepIDsAreErrors(t *testing.T) {
	a := startAddon(t)
	good := newStep()
	entry := []*woodpecker.LogEntry{{StepID: good.ID, Line: 0, Data: []byte("ok")}}
	if err := a.svc.LogAppend(good, entry); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{0, -1, math.MinInt64} {
		bad := &woodpecker.Step{ID: id, Name: "bad"}
		calls := map[string]error{
			"LogAppend": a.svc.LogAppend(bad, []*woodpecker.LogEntry{{StepID: id, Line: 0, Data: []byte("x")}}),
			"LogDelete": a.svc.LogDelete(bad),
		}
		_, calls["LogFind"] = a.svc.LogFind(bad)
		for name, err := range calls {
			var serverErr rpc.ServerError
			if !errors.As(err, &serverErr) {
				t.Errorf("%s with step id %d: got %v (%T), want an RPC error", name, id, err, err)
			} else {
				t.Logf("%s with step id %d: %v", name, id, err)
			}
		}
		// StepFinished errors are only logged by Woodpecker; it must not break anything.
		a.svc.StepFinished(bad)
		assertLog(t, a, good, entry)
	}
}
