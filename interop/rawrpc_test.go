package interop

import (
	"errors"
	"net/rpc"
	"testing"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestBadCallsGetRPCErrors sends what Woodpecker never sends, through the same session, and
// checks that each call fails with an RPC error (not a dead connection) and that the
// session keeps serving afterwards.
func TestBadCallsGetRPCErrors(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	var served []*woodpecker.LogEntry
	cases := []struct {
		name, method string
		args         any
	}{
		{"malformed JSON to LogFind", "Plugin.LogFind", []byte(`{"id":`)},
		{"malformed JSON to LogAppend", "Plugin.LogAppend", []byte(`{"step":{"id":5},"log_entries":[`)},
		{"malformed JSON to LogDelete", "Plugin.LogDelete", []byte("\xff\xfe")},
		{"empty args to LogFind", "Plugin.LogFind", []byte{}},
		{"array instead of a step", "Plugin.LogFind", []byte(`[1,2]`)},
		{"string step id", "Plugin.LogFind", []byte(`{"id":"5"}`)},
		{"data not base64", "Plugin.LogAppend", []byte(`{"step":{"id":5},"log_entries":[{"line":1,"data":"%%%"}]}`)},
		{"null step in LogAppend", "Plugin.LogAppend", []byte(`{"step":null,"log_entries":[]}`)},
		{"unknown method", "Plugin.LogTruncate", []byte(`{"id":5}`)},
		{"unknown service", "Store.LogFind", []byte(`{"id":5}`)},
		{"no dot", "LogFind", []byte(`{"id":5}`)},
		{"empty method", "", []byte(`{"id":5}`)},
		{"gob string instead of []byte", "Plugin.LogFind", `{"id":5}`},
		{"gob bool instead of []byte", "Plugin.LogAppend", true},
	}
	for i, c := range cases {
		var reply []byte
		err := a.svc.Raw().Call(c.method, c.args, &reply)
		var serverErr rpc.ServerError
		if !errors.As(err, &serverErr) {
			t.Fatalf("%s: got %v (%T), want an RPC error", c.name, err, err)
		}
		t.Logf("%s: %v", c.name, err)
		// The session must still serve real calls, on the same client.
		entry := &woodpecker.LogEntry{StepID: step.ID, Line: i, Time: int64(i), Data: []byte(c.name)}
		if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{entry}); err != nil {
			t.Fatalf("after %s: LogAppend: %v", c.name, err)
		}
		served = append(served, entry)
		assertLog(t, a, step, served)
	}
}
