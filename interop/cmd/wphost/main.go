// Command wphost is a Woodpecker server in miniature for image-shaped tests: it loads the addon
// with Woodpecker's loader (woodpecker.Load, the same go-plugin client and environment
// handling), streams a few steps of log lines through it as agents do, finishes the steps,
// waits until the addon has archived them (their spool files are gone), and reads every step
// back with LogFind, before and after restarting the addon. It exits non-zero on any
// difference. Built with CGO_ENABLED=0 it needs nothing from the root it runs in, like the
// official Woodpecker server image.
//
// The addon's settings come from this process's environment, as they come from the server's.
//
//	wphost [-addon /opt/addons/woodpecker-s3-logs] [-spool /var/lib/woodpecker/s3-logs-spool]
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

func main() {
	addon := flag.String("addon", "/opt/addons/woodpecker-s3-logs", "the addon binary, as WOODPECKER_LOG_STORE_FILE_PATH")
	spool := flag.String("spool", "/var/lib/woodpecker/s3-logs-spool", "the addon's spool directory, watched to see archiving finish")
	steps := flag.Int("steps", 4, "steps streamed concurrently")
	lines := flag.Int("lines", 300, "lines per step")
	timeout := flag.Duration("timeout", 90*time.Second, "how long archiving may take")
	flag.Parse()
	if err := run(*addon, *spool, *steps, *lines, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "wphost: FAIL:", err)
		os.Exit(1)
	}
}

func run(addon, spool string, stepCount, lineCount int, timeout time.Duration) error {
	svc, err := woodpecker.Load(addon, woodpecker.Options{Stderr: os.Stderr})
	if err != nil {
		return err
	}
	defer func() { svc.Client.Kill() }()

	// Ids unique per run, so repeated runs against one bucket never mix.
	base := time.Now().Unix()%100_000_000*100 + 1
	steps := make([]*woodpecker.Step, stepCount)
	logs := make([][]*woodpecker.LogEntry, stepCount)
	for i := range steps {
		steps[i] = &woodpecker.Step{ID: base + int64(i), PipelineID: base, PID: i + 2, Name: fmt.Sprintf("step-%d", i), State: "running"}
		logs[i] = stepLog(steps[i].ID, lineCount)
	}

	// Agents stream steps at the same time, in batches, and retry a batch now and then.
	var wg sync.WaitGroup
	errs := make([]error, stepCount)
	for i := range steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			const batch = 50
			for start := 0; start < len(logs[i]); start += batch {
				end := min(start+batch, len(logs[i]))
				if err := svc.RPC.LogAppend(steps[i], logs[i][start:end]); err != nil {
					errs[i] = fmt.Errorf("LogAppend step %d: %w", steps[i].ID, err)
					return
				}
			}
			if err := svc.RPC.LogAppend(steps[i], logs[i][:min(10, len(logs[i]))]); err != nil {
				errs[i] = fmt.Errorf("LogAppend (retry) step %d: %w", steps[i].ID, err)
				return
			}
			svc.RPC.StepFinished(steps[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := compare(svc.RPC, steps, logs, "from spool or archive"); err != nil {
		return err
	}

	if err := waitArchived(spool, steps, timeout); err != nil {
		return err
	}
	if err := compare(svc.RPC, steps, logs, "after archiving"); err != nil {
		return err
	}

	// A new addon process has nothing but the archive (and an empty spool) to read from.
	svc.Client.Kill()
	svc, err = woodpecker.Load(addon, woodpecker.Options{Stderr: os.Stderr})
	if err != nil {
		return fmt.Errorf("restarting the addon: %w", err)
	}
	if err := compare(svc.RPC, steps, logs, "after restarting the addon"); err != nil {
		return err
	}
	if err := svc.RPC.LogDelete(steps[0]); err != nil {
		return fmt.Errorf("LogDelete step %d: %w", steps[0].ID, err)
	}
	if got, err := svc.RPC.LogFind(steps[0]); err != nil || len(got) != 0 {
		return fmt.Errorf("LogFind after LogDelete step %d: %d entries, error %v", steps[0].ID, len(got), err)
	}
	fmt.Printf("wphost: OK: %d steps x %d lines (non-UTF-8, empty and null data included) appended, archived and read back exactly, also after restarting the addon; LogDelete works\n", stepCount, lineCount)
	return nil
}

// stepLog is one step's lines as an agent sends them: text, bytes that are not UTF-8, empty
// and null data, every entry type, and the exit code last.
func stepLog(stepID int64, count int) []*woodpecker.LogEntry {
	entries := make([]*woodpecker.LogEntry, count)
	for line := range entries {
		var data []byte
		entryType := woodpecker.LogEntryStdout
		switch {
		case line == count-1:
			data, entryType = []byte("0"), woodpecker.LogEntryExitCode
		case line%50 == 7:
			data = []byte{0xff, 0xfe, 'x', 0xc3, 0x28, '\t', 0x00} // not UTF-8, with NUL
		case line%50 == 11:
			data = []byte{}
		case line%50 == 13:
			data = nil
		case line%50 == 17:
			data, entryType = []byte("warning: something on stderr"), woodpecker.LogEntryStderr
		case line%50 == 19:
			data, entryType = []byte(`{"progress":0.5}`), woodpecker.LogEntryProgress
		default:
			data = fmt.Appendf(nil, "step %d line %d: compiling crate_%d v0.%d.0 ✓", stepID, line, line%17, line%9)
		}
		entries[line] = &woodpecker.LogEntry{StepID: stepID, Time: int64(line / 20), Line: line, Data: data, Type: entryType}
	}
	return entries
}

// waitArchived waits until no spool segment of the steps is left: the addon removes them only
// once the archive is uploaded and verified.
func waitArchived(spool string, steps []*woodpecker.Step, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var left []string
		for _, step := range steps {
			matches, err := filepath.Glob(filepath.Join(spool, "steps", fmt.Sprintf("%d.*", step.ID)))
			if err != nil {
				return err
			}
			left = append(left, matches...)
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not archived within %s: %v still in the spool", timeout, left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// compare checks that LogFind returns exactly what was sent, field by field (null data apart
// from empty) and as JSON.
func compare(svc *woodpecker.RPC, steps []*woodpecker.Step, logs [][]*woodpecker.LogEntry, when string) error {
	for i, step := range steps {
		got, err := svc.LogFind(step)
		if err != nil {
			return fmt.Errorf("LogFind step %d %s: %w", step.ID, when, err)
		}
		if len(got) != len(logs[i]) {
			return fmt.Errorf("LogFind step %d %s: %d entries, want %d", step.ID, when, len(got), len(logs[i]))
		}
		for j, want := range logs[i] {
			if !reflect.DeepEqual(got[j], want) {
				g, _ := json.Marshal(got[j])
				w, _ := json.Marshal(want)
				return fmt.Errorf("LogFind step %d %s, entry %d:\n got %s\nwant %s", step.ID, when, j, g, w)
			}
		}
		gotJSON, _ := json.Marshal(got)
		wantJSON, _ := json.Marshal(logs[i])
		if !bytes.Equal(gotJSON, wantJSON) {
			return fmt.Errorf("LogFind step %d %s: JSON differs", step.ID, when)
		}
	}
	return nil
}
