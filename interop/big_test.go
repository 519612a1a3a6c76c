package interop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestLogFind64MiB reads back one step whose LogFind answer is over 64 MiB of JSON (50 lines
// of 1 MiB, base64-encoded), checks every line, and logs how long the read takes.
func TestLogFind64MiB(t *testing.T) {
	const lineCount, lineSize = 50, 1 << 20
	a := startAddon(t)
	step := newStep()
	start := time.Now()
	for l := range lineCount {
		e := &woodpecker.LogEntry{StepID: step.ID, Line: l, Time: int64(l), Data: pattern(l, lineSize)}
		if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{e}); err != nil {
			t.Fatalf("append line %d: %v", l, err)
		}
	}
	appendTime := time.Since(start)
	a.svc.StepFinished(step)

	start = time.Now()
	raw := rawFind(t, a, step)
	rawTime := time.Since(start)
	if len(raw) < 64<<20 {
		t.Fatalf("LogFind answer is %d bytes, want at least 64 MiB", len(raw))
	}
	start = time.Now()
	got, err := a.svc.LogFind(step)
	if err != nil {
		t.Fatalf("LogFind: %v", err)
	}
	typedTime := time.Since(start)
	if len(got) != lineCount {
		t.Fatalf("%d entries, want %d", len(got), lineCount)
	}
	for l, e := range got {
		if e.Line != l || e.StepID != step.ID || e.Time != int64(l) || !bytes.Equal(e.Data, pattern(l, lineSize)) {
			t.Fatalf("entry %d: line %d step %d time %d, %d bytes of data (pattern match %v)",
				l, e.Line, e.StepID, e.Time, len(e.Data), bytes.Equal(e.Data, pattern(l, lineSize)))
		}
	}
	t.Logf("FIGURE 64MiB: appended %d x 1 MiB lines in %v; LogFind answer %.1f MiB: %v on the wire (rpc only), %v with JSON decoding",
		lineCount, appendTime.Round(time.Millisecond), float64(len(raw))/(1<<20),
		rawTime.Round(time.Millisecond), typedTime.Round(time.Millisecond))
}

// TestAppendThroughput logs (does not assert) LogAppend calls per second with batches of
// 1000 typical lines, and the time to read the result back.
func TestAppendThroughput(t *testing.T) {
	const batchLines, calls = 1000, 200
	a := startAddon(t)
	step := newStep()
	text := strings.Repeat("compiling crate foo v1.2.3 (/src) ", 2)
	var batches [][]*woodpecker.LogEntry
	batchBytes := 0
	for c := range calls {
		batch := make([]*woodpecker.LogEntry, batchLines)
		for i := range batch {
			line := c*batchLines + i
			batch[i] = &woodpecker.LogEntry{StepID: step.ID, Line: line, Time: int64(line / 100),
				Data: []byte(fmt.Sprintf("%s%d\n", text, line))}
		}
		if c == 0 {
			b, _ := json.Marshal(batch)
			batchBytes = len(b)
		}
		batches = append(batches, batch)
	}
	start := time.Now()
	for c, batch := range batches {
		if err := a.svc.LogAppend(step, batch); err != nil {
			t.Fatalf("append call %d: %v", c, err)
		}
	}
	elapsed := time.Since(start)
	start = time.Now()
	got, err := a.svc.LogFind(step)
	if err != nil {
		t.Fatalf("LogFind: %v", err)
	}
	findTime := time.Since(start)
	if len(got) != calls*batchLines {
		t.Fatalf("%d entries, want %d", len(got), calls*batchLines)
	}
	t.Logf("FIGURE append: %d LogAppend calls of %d lines (~%d KiB JSON each) in %v: %.0f calls/s, %.0f lines/s; LogFind of %d lines: %v",
		calls, batchLines, batchBytes>>10, elapsed.Round(time.Millisecond), float64(calls)/elapsed.Seconds(),
		float64(calls*batchLines)/elapsed.Seconds(), len(got), findTime.Round(time.Millisecond))
}
