package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/woodpecker-s3-logs/interop/internal/s3util"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// The S3 tests (issue 3) drive the addon through Woodpecker's client with a real bucket
// behind it, and look at the bucket with an independent Go S3 client. They need the test
// servers scripts/s3/start.sh starts (scripts/test.sh does so before the Go suite).

// s3Fixture is one test's view of a test server: a client and a key prefix of its own.
type s3Fixture struct {
	srv    s3util.Server
	client *minio.Client
	folder string
}

var folderUnsafe = regexp.MustCompile(`[^A-Za-z0-9-]+`)

// needS3 skips the test unless the named server (SEAWEEDFS or MOTO) is announced in the
// environment, and gives it a bucket folder no other test or run uses, emptied at cleanup.
func needS3(t *testing.T, name string) *s3Fixture {
	t.Helper()
	skipForReference(t)
	srv, missing := s3util.FromEnv(name)
	if missing != "" {
		t.Skipf("%s is not set: run `eval \"$(scripts/s3/start.sh)\"` first (scripts/test.sh does)", missing)
	}
	client, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	f := &s3Fixture{
		srv:    srv,
		client: client,
		folder: fmt.Sprintf("interop/%s-%d", folderUnsafe.ReplaceAllString(t.Name(), "-"), time.Now().UnixNano()),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for obj := range client.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: f.folder + "/", Recursive: true}) {
			if obj.Err == nil {
				_ = client.RemoveObject(ctx, srv.Bucket, obj.Key, minio.RemoveObjectOptions{})
			}
		}
	})
	return f
}

// env is the addon's environment for this fixture's folder, with the endpoint given (the
// server's own or a proxy's) and extra settings appended.
func (f *s3Fixture) env(endpoint string, extra ...string) []string {
	return append(f.srv.AddonEnv(endpoint, f.folder), extra...)
}

func (f *s3Fixture) key(step *woodpecker.Step) string {
	return s3util.Key(f.folder, step.ID)
}

// read returns the step's archive object, or an error wrapping s3util.ErrNoObject.
func (f *s3Fixture) read(step *woodpecker.Step) (*s3util.Archive, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s3util.ReadArchive(ctx, f.client, f.srv.Bucket, f.key(step))
}

// waitArchive polls the bucket until the step's object holds lines entries.
func (f *s3Fixture) waitArchive(t testing.TB, step *woodpecker.Step, lines int, limit time.Duration) *s3util.Archive {
	t.Helper()
	var arch *s3util.Archive
	var err error
	deadline := time.Now().Add(limit)
	for {
		arch, err = f.read(step)
		if err == nil && arch.LineCount() == lines && len(arch.Entries) == lines {
			return arch
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("step %d: no complete archive at %s after %v: %v", step.ID, f.key(step), limit, err)
	}
	t.Fatalf("step %d: archive %s has %d entries (line-count %q) after %v, want %d",
		step.ID, f.key(step), len(arch.Entries), arch.Meta("Line-Count"), limit, lines)
	return nil
}

// assertNoObject fails if the step has an archive object.
func (f *s3Fixture) assertNoObject(t testing.TB, step *woodpecker.Step) {
	t.Helper()
	if _, err := f.read(step); !errors.Is(err, s3util.ErrNoObject) {
		t.Fatalf("step %d: want no object at %s, got %v", step.ID, f.key(step), err)
	}
}

// checkArchive checks the object against the format contract (FORMAT.md) and against
// what LogFind returns, byte for byte per entry, and that LogFind returns want.
func checkArchive(t testing.TB, a *addon, step *woodpecker.Step, arch *s3util.Archive, want []*woodpecker.LogEntry) {
	t.Helper()
	assertLog(t, a, step, want)
	if got := arch.Info.ContentType; got != "application/x-ndjson" {
		t.Errorf("Content-Type %q, want application/x-ndjson", got)
	}
	if got := arch.Info.Metadata.Get("Content-Encoding"); got != "zstd" {
		t.Errorf("Content-Encoding %q, want zstd", got)
	}
	meta := map[string]string{
		"Format-Version":    "1",
		"Step-Id":           strconv.FormatInt(step.ID, 10),
		"Line-Count":        strconv.Itoa(len(want)),
		"Uncompressed-Size": strconv.Itoa(len(arch.NDJSON)),
	}
	if len(want) > 0 {
		meta["First-Line"] = strconv.Itoa(want[0].Line)
		meta["Last-Line"] = strconv.Itoa(want[len(want)-1].Line)
	}
	for name, value := range meta {
		if got := arch.Meta(name); got != value {
			t.Errorf("x-amz-meta-%s is %q, want %q", name, got, value)
		}
	}
	if !reflect.DeepEqual(arch.Entries, want) {
		t.Fatalf("archive entries differ from what was sent: lines %v, want %v", lines(arch.Entries), lines(want))
	}
	var found []json.RawMessage
	if err := json.Unmarshal(rawFind(t, a, step), &found); err != nil {
		t.Fatal(err)
	}
	objLines := bytes.Split(bytes.TrimSuffix(arch.NDJSON, []byte("\n")), []byte("\n"))
	if len(objLines) != len(found) {
		t.Fatalf("archive has %d NDJSON lines, LogFind %d entries", len(objLines), len(found))
	}
	for i := range found {
		var x, y bytes.Buffer
		_ = json.Compact(&x, found[i])
		_ = json.Compact(&y, objLines[i])
		if !bytes.Equal(x.Bytes(), y.Bytes()) {
			t.Fatalf("entry %d: LogFind %.300s, archive %.300s", i, x.Bytes(), y.Bytes())
		}
	}
}

// spoolFiles lists the step's files in the spool below an addon directory.
func spoolFiles(dir string, step *woodpecker.Step) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "spool", "steps", strconv.FormatInt(step.ID, 10)+".*"))
	return files
}

// spoolSegments lists the step's spool segments (its staged lines).
func spoolSegments(dir string, step *woodpecker.Step) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "spool", "steps", strconv.FormatInt(step.ID, 10)+".*.ndjson"))
	return files
}

// waitSpoolEmpty waits until the addon has removed the step's spool segments (it does so
// only after the upload has been verified).
func waitSpoolEmpty(t testing.TB, dir string, step *woodpecker.Step) {
	t.Helper()
	if !waitFor(20*time.Second, func() bool { return len(spoolSegments(dir, step)) == 0 }) {
		t.Fatalf("step %d: spool segments left 20 s after archiving: %v", step.ID, spoolSegments(dir, step))
	}
}

// buildLog makes n lines from line first on that look like build output (repetitive
// words, counters, hashes), so that compression figures mean something.
func buildLog(step *woodpecker.Step, first, n int) []*woodpecker.LogEntry {
	words := []string{"Compiling", "Downloading", "Checking", "Running", "Fresh", "Building"}
	crates := []string{"serde", "tokio", "hyper", "aws-sdk-s3", "zstd-sys", "clap", "tracing", "bytes"}
	out := make([]*woodpecker.LogEntry, 0, n)
	for line := first; line < first+n; line++ {
		data := fmt.Sprintf("[%7.3fs] %12s %s v1.%d.%d (registry+https://github.com/rust-lang/crates.io-index) #%08x",
			float64(line)*0.137, words[line%len(words)], crates[(line*7)%len(crates)], line%41, line%7, uint32(line*2654435761))
		typ := woodpecker.LogEntryStdout
		if line%17 == 0 {
			typ = woodpecker.LogEntryStderr
		}
		out = append(out, entryAt(step, line, typ, []byte(data)))
	}
	return out
}

// appendBatches sends entries in batches of size, as an agent does.
func appendBatches(t testing.TB, a *addon, step *woodpecker.Step, entries []*woodpecker.LogEntry, size int) {
	t.Helper()
	for i := 0; i < len(entries); i += size {
		if err := a.svc.LogAppend(step, entries[i:min(i+size, len(entries))]); err != nil {
			t.Fatalf("LogAppend step %d lines %d..: %v", step.ID, entries[i].Line, err)
		}
	}
}

// finish sends StepFinished with the step marked done, as the server does.
func finish(a *addon, step *woodpecker.Step) {
	done := *step
	done.State, done.Finished = "success", step.Started+60
	a.svc.StepFinished(&done)
}

// fileStoreBytes is what Woodpecker's file store writes for the entries: one JSON line each.
func fileStoreBytes(entries []*woodpecker.LogEntry) int {
	n := 0
	for _, e := range entries {
		b, _ := json.Marshal(e)
		n += len(b) + 1
	}
	return n
}

// stderrLevels returns the hclog @message of every stderr line at the given level.
func stderrLevels(stderr, level string) []string {
	var out []string
	for _, line := range bytes.Split([]byte(stderr), []byte("\n")) {
		var fields map[string]any
		if json.Unmarshal(line, &fields) == nil && fields["@level"] == level {
			out = append(out, string(line))
		}
	}
	return out
}

// s3Settings are the timing knobs most S3 tests use: archive soon after StepFinished.
var s3Settings = []string{"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=200ms"}
