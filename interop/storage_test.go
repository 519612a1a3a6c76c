package interop

import (
	"bytes"
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// These tests reach past the protocol into the store behind it, still only through
// Woodpecker's client: acknowledged lines survive a crash, archived steps read back
// Woodpecker-exact, late lines merge, and a deleted log never comes back. The Go reference
// plugin keeps everything in memory, so they only run against the real addon.

func skipForReference(t *testing.T) {
	t.Helper()
	if reference {
		t.Skip("the Go reference plugin has no durable storage")
	}
}

// TestAcknowledgedLinesSurviveAddonCrash kills the addon with SIGKILL right after appends
// returned, then lets a new addon take over the same directories.
func TestAcknowledgedLinesSurviveAddonCrash(t *testing.T) {
	skipForReference(t)
	dir := t.TempDir()
	first := startAddonIn(t, dir)
	step := newStep()
	want := append(richBatch(step, 0), bigLine(step, 6))
	for _, batch := range [][]*woodpecker.LogEntry{want[:6], want[6:]} {
		if err := first.svc.LogAppend(step, batch); err != nil {
			t.Fatalf("LogAppend: %v", err)
		}
	}
	pid := first.Client.ReattachConfig().Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Client.Kill()

	second := startAddonIn(t, dir)
	assertLog(t, second, step, want)
	more := richBatch(step, 7)
	if err := second.svc.LogAppend(step, more); err != nil {
		t.Fatalf("LogAppend after restart: %v", err)
	}
	assertLog(t, second, step, append(want, more...))
}

// archiveFiles lists the regular files below the addon's archive directory.
func archiveFiles(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	files := map[string]time.Time{}
	root := filepath.Join(dir, "archive")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				files[path] = info.ModTime()
			}
		}
		return nil
	})
	return files
}

// waitFor polls cond for up to limit.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

// TestArchivedStepLifecycle finishes a step with a short finalize delay, reads it back
// once archived, adds late lines, restarts the addon, deletes the log and restarts again.
func TestArchivedStepLifecycle(t *testing.T) {
	skipForReference(t)
	dir := t.TempDir()
	env := []string{"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=100ms"}
	a := startAddonIn(t, dir, env...)
	step := newStep()
	want := richBatch(step, 0)
	if err := a.svc.LogAppend(step, want); err != nil {
		t.Fatal(err)
	}
	a.svc.StepFinished(step)
	if !waitFor(20*time.Second, func() bool { return len(archiveFiles(t, dir)) > 0 }) {
		t.Fatalf("no archive object below %s 20 s after StepFinished", filepath.Join(dir, "archive"))
	}
	archived := archiveFiles(t, dir)
	t.Logf("archive objects: %v", keys(archived))
	assertLog(t, a, step, want)

	// Late lines, one of them a resend with other content: merged on read at once.
	late := []*woodpecker.LogEntry{
		entryAt(step, 2, woodpecker.LogEntryStdout, []byte("resent, must lose")),
		entryAt(step, 9, woodpecker.LogEntryStdout, []byte("late line")),
		entryAt(step, 7, woodpecker.LogEntryStderr, nil),
	}
	if err := a.svc.LogAppend(step, late); err != nil {
		t.Fatal(err)
	}
	want = append(want, late[2], late[1])
	assertLog(t, a, step, want)
	a.svc.StepFinished(step)
	if waitFor(10*time.Second, func() bool {
		for path, mod := range archiveFiles(t, dir) {
			if before, ok := archived[path]; !ok || !mod.Equal(before) {
				return true
			}
		}
		return false
	}) {
		t.Log("late lines were merged into the archive")
	} else {
		t.Log("archive unchanged 10 s after the second StepFinished (late lines still staged)")
	}
	assertLog(t, a, step, want)
	a.Client.Kill()

	b := startAddonIn(t, dir, env...)
	assertLog(t, b, step, want)
	if err := b.svc.LogDelete(step); err != nil {
		t.Fatalf("LogDelete: %v", err)
	}
	assertEmpty(t, b, step)
	id := strconv.FormatInt(step.ID, 10)
	for path := range archiveFiles(t, dir) {
		if strings.Contains(path, id) {
			t.Errorf("archive object %s left after LogDelete", path)
		}
	}
	assertNoFileContains(t, filepath.Join(dir, "spool"), []byte("late line"),
		[]byte(base64.StdEncoding.EncodeToString([]byte("late line"))))
	b.Client.Kill()

	c := startAddonIn(t, dir, env...)
	assertEmpty(t, c, step)
}

func keys(m map[string]time.Time) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// assertNoFileContains fails if any file below root still holds one of the markers (staged
// lines are kept uncompressed, raw or base64, so a deleted line must not be found there).
func assertNoFileContains(t *testing.T, root string, markers ...[]byte) {
	t.Helper()
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		for _, marker := range markers {
			if err == nil && bytes.Contains(data, marker) {
				t.Errorf("%s still holds %q after LogDelete", path, marker)
			}
		}
		return nil
	})
}
