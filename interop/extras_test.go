package interop

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/rpc"
	"strings"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestExtremeValues sends numbers at the edges of Go's int64, which a JSON layer built on
// float64 would round, and line numbers far apart.
func TestExtremeValues(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	entries := []*woodpecker.LogEntry{
		{StepID: step.ID, Line: 0, Time: math.MinInt64, Data: []byte("min time")},
		{StepID: step.ID, Line: 1, Time: math.MaxInt64, Data: []byte("max time"), Type: woodpecker.LogEntryProgress},
		{StepID: step.ID, Line: 1 << 53, Time: 1<<53 + 1, Data: []byte("2^53")},
		{StepID: step.ID, Line: math.MaxInt64, Time: -1, Data: []byte("last line")},
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if err := a.svc.LogAppend(step, entries[i:i+1]); err != nil {
			t.Fatalf("LogAppend line %d: %v", entries[i].Line, err)
		}
	}
	assertLog(t, a, step, entries)
}

// TestNewerWoodpeckerStepFields sends a step with fields this client does not know, as a
// newer Woodpecker (or an older one with environ/children) would.
func TestNewerWoodpeckerStepFields(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	entries := []*woodpecker.LogEntry{{StepID: step.ID, Line: 0, Time: 1, Data: []byte("x")}}
	if err := a.svc.LogAppend(step, entries); err != nil {
		t.Fatal(err)
	}
	args := fmt.Sprintf(`{"id":%d,"uuid":"u","pipeline_id":1,"pid":1,"ppid":0,"pgid":3,"name":"n","state":"success",`+
		`"exit_code":0,"start_time":1,"environ":{"A":"b"},"children":[],"verify":{"url":"http://x"},"failure":"ignore"}`, step.ID)
	var reply []byte
	if err := a.svc.Raw().Call("Plugin.LogFind", []byte(args), &reply); err != nil {
		t.Fatalf("LogFind with unknown step fields: %v", err)
	}
	var got []*woodpecker.LogEntry
	if err := json.Unmarshal(reply, &got); err != nil || len(got) != 1 || string(got[0].Data) != "x" {
		t.Fatalf("LogFind with unknown step fields: %s (%v)", reply, err)
	}
	if err := a.svc.Raw().Call("Plugin.StepFinished", []byte(args), &reply); err != nil {
		t.Fatalf("StepFinished with unknown step fields: %v", err)
	}
}

// TestControlPing is go-plugin's ClientProtocol.Ping (Control.Ping on the control stream).
func TestControlPing(t *testing.T) {
	a := startAddon(t)
	proto, err := a.Client.Client()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := proto.Ping(); err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
	}
	assertEmpty(t, a, newStep())
}

// TestHugeArguments sends one LogAppend of 80 MiB and one of 300 MiB. Woodpecker never sends
// more than about 1 MiB, but the design promises that huge payloads get an RPC error (or
// are served) and never cost the host its session.
func TestHugeArguments(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 380 MiB: skipped with -short")
	}
	a := startAddon(t)
	step := newStep()
	for _, size := range []int{60 << 20, 225 << 20} {
		args := fmt.Sprintf(`{"step":{"id":%d},"log_entries":[{"step_id":%d,"line":%d,"data":"%s"}]}`,
			step.ID, step.ID, size, base64.StdEncoding.EncodeToString(pattern(1, size)))
		start := time.Now()
		var reply []byte
		// net/rpc writes the request inside Call, so a peer that stops reading blocks the
		// call in yamux's flow control: watch it from here.
		answered := make(chan error, 1)
		go func() { answered <- a.svc.Raw().Call("Plugin.LogAppend", []byte(args), &reply) }()
		var err error
		select {
		case err = <-answered:
		case <-time.After(time.Minute):
			t.Fatalf("LogAppend of %d MiB of arguments: no answer after 1 min; the host's call hangs", len(args)>>20)
		}
		var serverErr rpc.ServerError
		switch {
		case err == nil:
			t.Logf("LogAppend of %d MiB of arguments: accepted in %v", len(args)>>20, time.Since(start).Round(time.Millisecond))
		case errors.As(err, &serverErr):
			t.Logf("LogAppend of %d MiB of arguments: RPC error in %v: %.200s", len(args)>>20, time.Since(start).Round(time.Millisecond), err)
		default:
			t.Errorf("LogAppend of %d MiB of arguments: %v (%T): the session is lost", len(args)>>20, err, err)
		}
		entry := []*woodpecker.LogEntry{{StepID: step.ID, Line: 0, Time: 1, Data: []byte(strings.Repeat("after ", 3))}}
		if err := a.svc.LogAppend(step, entry); err != nil {
			t.Fatalf("LogAppend after %d MiB arguments: %v", len(args)>>20, err)
		}
	}
	got, err := a.svc.LogFind(step)
	if err != nil || len(got) == 0 || got[0].Line != 0 {
		t.Fatalf("LogFind after huge arguments: %d entries, %v", len(got), err)
	}
	t.Logf("log holds %d entries after the huge calls", len(got))
}

// TestConcurrentMixedCallsWhileArchiving is the 64 x 500 workload with a finalize delay of
// 50 ms, so that steps get archived, re-opened by late lines and merged while the calls go on.
func TestConcurrentMixedCallsWhileArchiving(t *testing.T) {
	skipForReference(t)
	const workers, callsEach = 64, 500
	a := startAddon(t, "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=50ms")
	start := time.Now()
	errs := make(chan error, workers)
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			if err := mixedCalls(a.svc, 1000+w, callsEach); err != nil {
				errs <- fmt.Errorf("worker %d: %w", w, err)
			}
		}()
	}
	for range workers {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d goroutines x %d mixed calls while archiving in %v", workers, callsEach, time.Since(start).Round(time.Millisecond))
}
