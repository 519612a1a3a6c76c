package interop

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// The disk-full test (issue 12, "what the review could not check"): the spool lives on a
// small tmpfs, so the kernel itself answers ENOSPC, exactly as on a full volume.

// spoolTmpfsSize is the tmpfs the spool gets: a few hundred batches fill it.
const spoolTmpfsSize = "8m"

// mountSpoolTmpfs mounts a tmpfs of spoolTmpfsSize at dir/spool (the directory the
// harness gives the addon as its spool) and unmounts it at cleanup, after the addon is
// gone (cleanups run last-registered first, so call this before starting the addon).
func mountSpoolTmpfs(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the disk-full test mounts a tmpfs for the spool and needs root (CI runs as root)")
	}
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+spoolTmpfsSize+",mode=0700", "tmpfs", spool).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a %s tmpfs at %s: %v: %s", spoolTmpfsSize, spool, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", spool).CombinedOutput(); err != nil {
			// Something still holds it (a leaked addon): detach it so the run goes on.
			t.Errorf("umount %s: %v: %s", spool, err, out)
			_ = exec.Command("umount", "-l", spool).Run()
		}
	})
	return spool
}

// freeBytes is the space left for unprivileged use on the file system holding path.
func freeBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// stagedStep is a step of the disk-full test and every line the addon acknowledged for it.
type stagedStep struct {
	step  *woodpecker.Step
	acked []*woodpecker.LogEntry
	next  int // the next line number to send
}

// send appends the step's next n lines (build output, which compresses like it, so an
// archive is much smaller than the spool it drains); acknowledged lines are remembered, refused ones are
// the host's lost lines (Woodpecker only logs the error) and not expected back.
func (s *stagedStep) send(a *addon, n int) error {
	batch := buildLog(s.step, s.next, n)
	s.next += n
	if err := a.svc.LogAppend(s.step, batch); err != nil {
		return err
	}
	s.acked = append(s.acked, batch...)
	return nil
}

// fillWith writes a file at path until the file system refuses: another process filling
// the volume the spool lives on.
func fillWith(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return n
		}
	}
}

// TestDiskFullSpool runs the spool on an 8 MiB tmpfs through Woodpecker's client.
//
//  1. Another writer fills the file system: appends fail with the kernel's ENOSPC, their
//     half-written batches are cut back (reads show exactly the acknowledged lines), and the
//     error names the spool directory and the fix, in the RPC answer (which the host logs)
//     and in the addon's own log. When the writer's file goes, appends work again.
//  2. The addon's own lines fill it: appends are refused while the space archive builds
//     need is all that is left, with the same clear error.
//  3. Two steps finish while the spool is full: their archives still reach the bucket (on
//     another file system), their segments leave the spool, and the space they free makes
//     appends work again without a restart.
//
// At the end every acknowledged line is readable through LogFind and present in the
// archived objects.
func TestDiskFullSpool(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	dir := t.TempDir()
	spool := mountSpoolTmpfs(t, dir)
	a := startAddonIn(t, dir, f.env(f.srv.Endpoint, s3Settings...)...)
	steps := make([]*stagedStep, 4)
	for i := range steps {
		steps[i] = &stagedStep{step: newStep()}
	}
	// 200-line batches: about 50 KiB of spool each.
	const batch = 200
	for _, s := range steps {
		if err := s.send(a, batch); err != nil {
			t.Fatalf("first append: %v", err)
		}
	}

	// 1. Another writer takes every byte.
	filler := filepath.Join(spool, "filler")
	filled := fillWith(t, filler)
	for i, s := range steps {
		err := s.send(a, batch)
		if err == nil {
			t.Fatalf("append acknowledged with the spool's file system full (%d bytes written by another process, %d free)", filled, freeBytes(t, spool))
		}
		checkDiskFullMessage(t, "the LogAppend error (ENOSPC)", err.Error(), spool)
		if i == 0 {
			t.Logf("append error with the volume filled by another process, as the host logs it: %v", err)
		}
	}
	for _, s := range steps {
		assertLog(t, a, s.step, s.acked)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if err := s.send(a, batch); err != nil {
			t.Fatalf("append after the other process's file was removed (%d KiB free): %v", freeBytes(t, spool)>>10, err)
		}
	}

	// 2. The addon's own lines fill it, round-robin, until appends are refused; then a few
	// more, each of which fails or is acknowledged (and then must be read back).
	var firstErr error
	refused, sent := 0, 0
	for round := 0; refused < 8 && round < 10000; round++ {
		sent++
		if err := steps[round%len(steps)].send(a, batch); err != nil {
			firstErr = cmpErr(firstErr, err)
			refused++
		}
	}
	if firstErr == nil {
		t.Fatalf("%d batches into an %s spool and no append failed", sent, spoolTmpfsSize)
	}
	acked := 0
	for _, s := range steps {
		acked += len(s.acked)
	}
	t.Logf("FIGURE disk full: %d of %d batches acknowledged before appends stopped on an %s tmpfs (%d lines staged in all); %d KiB left free for archive builds",
		sent-refused, sent, spoolTmpfsSize, acked, freeBytes(t, spool)>>10)
	t.Logf("append error on the full spool, as the host logs it: %v", firstErr)
	checkDiskFullMessage(t, "the LogAppend error (spool full)", firstErr.Error(), spool)
	var logged []string
	for _, line := range stderrLevels(a.stderr.String(), "error") {
		if strings.Contains(line, "cannot stage log lines") {
			logged = append(logged, line)
		}
	}
	if len(logged) == 0 {
		t.Errorf("no error about the full spool in the addon's log; stderr:\n%s", tail(a.stderr.String()))
	}
	for _, line := range logged {
		checkDiskFullMessage(t, "the addon's log line", line, spool)
	}
	for _, s := range steps {
		assertLog(t, a, s.step, s.acked)
	}

	// 3. Two steps finish while the spool is full: they drain to the bucket.
	drainStart := time.Now()
	for _, s := range steps[:2] {
		finish(a, s.step)
	}
	for _, s := range steps[:2] {
		arch := f.waitArchive(t, s.step, len(s.acked), 90*time.Second)
		waitSpoolEmpty(t, dir, s.step)
		checkArchive(t, a, s.step, arch, s.acked)
	}
	t.Logf("FIGURE disk full: two finished steps archived from the full spool in %v; %d KiB free afterwards",
		time.Since(drainStart).Round(time.Millisecond), freeBytes(t, spool)>>10)
	// The space is back: the running steps take lines again, with no restart.
	for round := 0; round < 8; round++ {
		if err := steps[2+round%2].send(a, batch); err != nil {
			t.Fatalf("append %d after two steps drained (%d KiB free): %v", round, freeBytes(t, spool)>>10, err)
		}
	}
	for _, s := range steps[2:] {
		finish(a, s.step)
	}
	for _, s := range steps[2:] {
		arch := f.waitArchive(t, s.step, len(s.acked), 90*time.Second)
		waitSpoolEmpty(t, dir, s.step)
		checkArchive(t, a, s.step, arch, s.acked)
	}
	for _, s := range steps {
		assertLog(t, a, s.step, s.acked)
	}
}

// cmpErr keeps the first error.
func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

// checkDiskFullMessage fails unless msg names the spool directory, says it is full and
// says what to do about it.
func checkDiskFullMessage(t *testing.T, what, msg, spool string) {
	t.Helper()
	for _, want := range []string{spool, "is full", "free space", "WOODPECKER_LOG_STORE_S3_SPOOL_DIR"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%s does not say %q: %s", what, want, msg)
		}
	}
}
