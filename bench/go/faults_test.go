package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// addonBinary is the addon binary the end-to-end tests run (WOODPECKER_S3_LOGS_BIN, default
// the release build); the test is skipped without one.
func addonBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("WOODPECKER_S3_LOGS_BIN")
	if bin == "" {
		bin = "../../target/release/woodpecker-s3-logs"
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no addon binary at %s (build it with cargo build --release): %v", bin, err)
	}
	return bin
}

// TestPacedWorkloadUnderS3Faults (issue 12, "faults on the wire") runs the paced 32-step
// workload through the real addon, loaded by Woodpecker's addon client, with the counting
// proxy between the addon and SeaweedFS breaking one request in three: 503 SlowDown, 500
// InternalError, a connection reset mid-body, a truncated body, a wrong Content-Length, and
// once a 30 s stall. Beside it, steps archived before the faults get late lines (so their
// re-archive reads the previous object through the faults) and LogFinds, which must return
// the right lines or an error, never wrong ones. Then the faults stop and the archive drain
// is timed, and a last paced phase runs without faults. Every acknowledged line must be
// readable through LogFind and present in its step's archived object; no append may fail
// (S3 trouble never fails an append); the drain must complete. The figures (lines lost, peak RSS, drain
// time, faults injected) are printed as FIGURE lines.
//
// Needs the addon binary (WOODPECKER_S3_LOGS_BIN, default the release build) and the
// SeaweedFS that scripts/s3/start.sh starts; BENCH_FAULT_SECONDS sets the faulty phase
// (default 40).
func TestPacedWorkloadUnderS3Faults(t *testing.T) {
	bin := addonBinary(t)
	s3 := s3Config{
		Endpoint:  os.Getenv("ARCHIVE_TEST_SEAWEEDFS_ENDPOINT"),
		Bucket:    os.Getenv("ARCHIVE_TEST_SEAWEEDFS_BUCKET"),
		AccessKey: os.Getenv("ARCHIVE_TEST_SEAWEEDFS_ACCESS_KEY"),
		SecretKey: os.Getenv("ARCHIVE_TEST_SEAWEEDFS_SECRET_KEY"),
	}
	if s3.Endpoint == "" || s3.Bucket == "" {
		t.Skip("ARCHIVE_TEST_SEAWEEDFS_* is not set: run `eval \"$(scripts/s3/start.sh)\"` first (scripts/test.sh does)")
	}
	faultPhase := 40 * time.Second
	if v := os.Getenv("BENCH_FAULT_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("BENCH_FAULT_SECONDS=%q: want a whole number of seconds", v)
		}
		faultPhase = time.Duration(n) * time.Second
	}
	c := testCorpus(t)
	folder := fmt.Sprintf("bench-faults/%d", time.Now().UnixNano())
	dir := t.TempDir()
	env := append(append([]string(nil), addonEnv...), "WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER="+folder)
	in, err := open("addon-s3", dir, bin, s3, env)
	if err != nil {
		t.Fatal(err)
	}
	defer in.closeFn()
	client := bucketClient(t, s3)
	defer emptyFolder(client, s3.Bucket, folder)

	// Archived steps first, so that faults also meet real object bodies: reads of them and
	// re-archives after late lines GET the previous object through the proxy.
	warm, warmSteps := paced(in.t, c, 5*time.Second, 600000)
	if err := in.drained(2 * time.Minute); err != nil {
		t.Fatal(err)
	}

	schedule := newFaultSchedule(3, 30*time.Second)
	in.proxy.faults.Store(schedule)
	t.Logf("paced workload (%d steps at once) for %v with faults on, reads and late lines of %d archived steps beside it", workers, faultPhase, len(warmSteps))
	stopReads := make(chan struct{})
	readsDone := make(chan readStats)
	go func() { readsDone <- readAndAddLate(in, c, warmSteps, stopReads) }()
	faulty, faultySteps := paced(in.t, c, faultPhase, 700000)
	close(stopReads)
	reads := <-readsDone
	in.proxy.faults.Store(nil)
	faultsOff := time.Now()
	if err := in.drained(2 * time.Minute); err != nil {
		t.Fatalf("archive drain after the faults stopped never completed: %v\naddon log:\n%s", err, addonLog(dir))
	}
	drain := time.Since(faultsOff)
	injected, kinds := schedule.report()
	t.Logf("faults injected: %d: %s", injected, strings.Join(kinds, ", "))

	t.Logf("paced workload for 10s with faults off")
	clean, cleanSteps := paced(in.t, c, 10*time.Second, 800000)
	cleanEnd := time.Now()
	if err := in.drained(2 * time.Minute); err != nil {
		t.Fatalf("archive drain without faults never completed: %v", err)
	}
	cleanDrain := time.Since(cleanEnd)
	rss, err := procMemKiB(in.pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}

	steps := append(append(warmSteps, faultySteps...), cleanSteps...)
	var lines, lost int
	for _, ps := range steps {
		want := expectedEntries(c, ps)
		lines += len(want)
		lost += checkStep(t, in, client, s3.Bucket, folder, ps.ID, want)
	}
	snap := in.proxy.snapshot()
	perStepMax := 0
	for key, n := range snap.PerKey {
		if strings.HasPrefix(key, folder+"/") {
			perStepMax = max(perStepMax, n)
		}
	}
	for _, phase := range []struct {
		name string
		res  pacedResult
	}{{"before faults", warm}, {"faults on", faulty}, {"faults off", clean}} {
		if phase.res.Errors > 0 {
			t.Errorf("%s: %d appends failed (S3 trouble must never fail an append), first: %s", phase.name, phase.res.Errors, phase.res.FirstError)
		}
		t.Logf("FIGURE %s: %d steps, %d lines, %.0f lines/s, LogAppend p50 %.3f ms p99 %.3f ms, %d late batches",
			phase.name, phase.res.Steps, phase.res.Lines, phase.res.LinesPerSec, phase.res.P50Ms, phase.res.P99Ms, phase.res.Late)
	}
	t.Logf("FIGURE S3 faults: %d injected in %v (one request in 3); lines lost: %d of %d acknowledged in %d steps",
		injected, faultPhase, lost, lines, len(steps))
	t.Logf("FIGURE archive drain after the faults stopped: %v (without faults: %v); addon peak RSS (VmHWM) %.1f MiB; most requests for one step's object: %d",
		drain.Round(time.Millisecond), cleanDrain.Round(time.Millisecond), float64(rss)/1024, perStepMax)
	t.Logf("FIGURE LogFind of archived steps during the faults: %d right, %d failed with an error (first: %s), %d wrong; %d late lines appended to them (re-archived under faults)",
		reads.right, reads.failed, reads.firstError, reads.wrong, reads.late)
	if reads.wrong > 0 {
		t.Errorf("%d LogFinds during the faults returned wrong lines instead of an error; first: %s", reads.wrong, reads.firstWrong)
	}
	if reads.lateErrors > 0 {
		t.Errorf("%d late appends failed during the faults (S3 trouble must never fail an append)", reads.lateErrors)
	}
	t.Logf("S3 answers the addon saw fail (from the server, besides the injected ones): %v", snap.Failures)
	if warnings := strings.Count(addonLog(dir), `"@level":"warn"`); warnings > 0 {
		t.Logf("the addon logged %d warnings (retries)", warnings)
	}
	if lost > 0 {
		t.Errorf("%d acknowledged lines lost", lost)
	}
}

// readStats counts what readAndAddLate saw.
type readStats struct {
	right, failed, wrong, late, lateErrors int
	firstError, firstWrong                 string
}

// readAndAddLate works on archived steps until stop: for each, one late line (appended, then
// StepFinished again, so it is re-archived: the previous object is read back through the
// proxy), and LogFinds, which must return exactly the acknowledged lines or an error, never
// something else. Acknowledged late lines are added to the steps' Acked.
func readAndAddLate(in *instance, c *corpus, steps []*pacedStep, stop <-chan struct{}) readStats {
	var st readStats
	added := map[int64]bool{}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return st
		case <-time.After(50 * time.Millisecond):
		}
		ps := steps[i%len(steps)]
		step := wpStep(ps.ID, "success")
		if !added[ps.ID] {
			added[ps.ID] = true
			if err := in.t.Append(step, []agentLine{pacedLine(c, ps.ID, pacedStepLines)}); err != nil {
				st.lateErrors++
				continue
			}
			ps.Acked = append(ps.Acked, [2]int{pacedStepLines, pacedStepLines + 1})
			st.late++
			in.t.Finished(step)
			continue
		}
		got, err := in.addon.RPC.LogFind(step)
		if err != nil {
			st.failed++
			if st.firstError == "" {
				st.firstError = err.Error()
			}
			continue
		}
		if diff := sameEntries(got, expectedEntries(c, ps)); diff != "" {
			st.wrong++
			if st.firstWrong == "" {
				st.firstWrong = fmt.Sprintf("step %d: %s", ps.ID, diff)
			}
			continue
		}
		st.right++
	}
}

// sameEntries is "" when got holds exactly want, in order, else what differs first.
func sameEntries(got, want []*woodpecker.LogEntry) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d entries, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.StepID != w.StepID || g.Line != w.Line || g.Time != w.Time || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
			return fmt.Sprintf("entry %d is line %d, want line %d", i, g.Line, w.Line)
		}
	}
	return ""
}

// testCorpus is bench/corpus (bench/corpus.sh) when it has been built, else the lines of the
// repository's own sources and docs: real text either way, and no set-up in CI.
func testCorpus(t *testing.T) *corpus {
	t.Helper()
	if files, _ := filepath.Glob("../corpus/*.log"); len(files) > 0 {
		c, err := loadCorpus("../corpus")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var files []string
	for _, pattern := range []string{"../../crates/*/src/*.rs", "../../*.md", "../../interop/*.go"} {
		found, _ := filepath.Glob(pattern)
		files = append(files, found...)
	}
	c := &corpus{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range bytes.Split(raw, []byte("\n")) {
			c.lines = append(c.lines, l)
			c.bytes += int64(len(l))
		}
	}
	if len(c.lines) == 0 {
		t.Fatal("no corpus: neither bench/corpus/*.log nor the repository's sources found")
	}
	return c
}

// expectedEntries is what the store must return for a paced step: every acknowledged line.
func expectedEntries(c *corpus, ps *pacedStep) []*woodpecker.LogEntry {
	var out []*woodpecker.LogEntry
	for _, r := range ps.Acked {
		for l := r[0]; l < r[1]; l++ {
			line := pacedLine(c, ps.ID, l)
			out = append(out, &woodpecker.LogEntry{StepID: ps.ID, Line: line.Line, Time: line.Time, Data: line.Data, Type: woodpecker.LogEntryType(line.Type)})
		}
	}
	return out
}

// checkStep compares LogFind and the step's archived object with want, and returns how many
// wanted lines either of them lacks.
func checkStep(t *testing.T, in *instance, client *minio.Client, bucket, folder string, id int64, want []*woodpecker.LogEntry) int {
	t.Helper()
	found, err := in.addon.RPC.LogFind(wpStep(id, "success"))
	if err != nil {
		t.Errorf("LogFind of step %d: %v", id, err)
		return len(want)
	}
	key := folder + "/" + objectKey(id)
	archived, err := readObject(client, bucket, key)
	if err != nil {
		t.Errorf("step %d: %v", id, err)
		return len(want)
	}
	lost := 0
	for source, got := range map[string][]*woodpecker.LogEntry{"LogFind": found, "object " + key: archived} {
		byLine := make(map[int]*woodpecker.LogEntry, len(got))
		for _, e := range got {
			byLine[e.Line] = e
		}
		missing, differ := 0, 0
		for _, w := range want {
			g, ok := byLine[w.Line]
			switch {
			case !ok:
				missing++
			case g.StepID != w.StepID || g.Time != w.Time || g.Type != w.Type || !bytes.Equal(g.Data, w.Data):
				differ++
			}
		}
		if missing+differ > 0 || len(got) != len(want) {
			t.Errorf("step %d, %s: %d entries, want %d; %d missing, %d different", id, source, len(got), len(want), missing, differ)
		}
		lost = max(lost, missing+differ)
	}
	return lost
}

// bucketClient is an S3 client of its own (minio-go, not the addon's SDK), straight to the
// server, never through the proxy.
func bucketClient(t *testing.T, s3 s3Config) *minio.Client {
	t.Helper()
	u, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readObject downloads an archive object and decodes it: one zstd frame of NDJSON entries.
func readObject(client *minio.Client, bucket, key string) ([]*woodpecker.LogEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	obj, err := client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", key, err)
	}
	defer obj.Close()
	body, err := io.ReadAll(obj)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", key, err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	ndjson, err := dec.DecodeAll(body, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %d bytes are no zstd frame: %w", key, len(body), err)
	}
	var out []*woodpecker.LogEntry
	for i, line := range bytes.Split(bytes.TrimSuffix(ndjson, []byte("\n")), []byte("\n")) {
		var e woodpecker.LogEntry
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%s: NDJSON line %d: %w", key, i+1, err)
		}
		out = append(out, &e)
	}
	return out, nil
}

// emptyFolder removes the test's objects.
func emptyFolder(client *minio.Client, bucket, folder string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for obj := range client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: folder + "/", Recursive: true}) {
		if obj.Err == nil {
			_ = client.RemoveObject(ctx, bucket, obj.Key, minio.RemoveObjectOptions{})
		}
	}
}

// addonLog is what the addon wrote to stderr (open keeps it in addon-stderr.log).
func addonLog(dir string) string {
	raw, _ := os.ReadFile(filepath.Join(dir, "addon-stderr.log"))
	return string(raw)
}
