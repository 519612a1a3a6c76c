package interop

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/rpc"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/woodpecker-s3-logs/interop/internal/s3util"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestS3ArchiveSeaweedFS archives five steps into SeaweedFS through a counting proxy and
// checks each object against FORMAT.md and LogFind; it reports requests per step, archive
// time and bytes at rest against Woodpecker's file store.
func TestS3ArchiveSeaweedFS(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	proxy, err := s3util.StartProxy(f.srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(proxy.URL, s3Settings...)...)
	// The addon checks the bucket once at start, in the background; let that pass before
	// counting.
	time.Sleep(time.Second)
	// Its first upload also probes once whether the server honours conditional writes (two
	// PUTs and a DELETE of a probe object): archive one step before counting, so the
	// figures below are per step.
	warm := newStep()
	warmLog := buildLog(warm, 0, 10)
	appendBatches(t, a, warm, warmLog, 100)
	finish(a, warm)
	f.waitArchive(t, warm, len(warmLog), 30*time.Second)
	waitSpoolEmpty(t, dir, warm)

	const steps, perStep = 5, 2000
	var sent, stored, ndjson int
	var archiveTime time.Duration
	archiveOps, findOps := map[string]int{}, map[string]int{}
	// delta adds the requests the proxy saw since before to into.
	delta := func(before map[string]int, into map[string]int) {
		for op, n := range proxy.Counts() {
			if d := n - before[op]; d > 0 {
				into[op] += d
			}
		}
	}
	for range steps {
		step := newStep()
		want := append(buildLog(step, 0, perStep), richBatch(step, perStep)...)
		before := proxy.Counts()
		appendBatches(t, a, step, want, 100)
		if len(spoolSegments(dir, step)) == 0 {
			t.Fatalf("step %d: nothing in the spool after LogAppend", step.ID)
		}
		start := time.Now()
		finish(a, step)
		arch := f.waitArchive(t, step, len(want), 30*time.Second)
		archiveTime += time.Since(start)
		waitSpoolEmpty(t, dir, step)
		delta(before, archiveOps)
		before = proxy.Counts()
		if _, err := a.svc.LogFind(step); err != nil {
			t.Fatal(err)
		}
		delta(before, findOps)
		checkArchive(t, a, step, arch, want)
		sent += fileStoreBytes(want)
		stored += int(arch.Compressed)
		ndjson += len(arch.NDJSON)
	}
	total := 0
	for _, n := range archiveOps {
		total += n
	}
	t.Logf("FIGURE S3 requests to stream and archive one step: %.1f (over %d steps: %v); LogFind of an archived step, %d calls: %v",
		float64(total)/steps, steps, archiveOps, steps, findOps)
	t.Logf("FIGURE archive time (StepFinished → object visible, incl. 200ms finalize delay, %d lines): %v per step",
		perStep+6, (archiveTime / steps).Round(time.Millisecond))
	var elapsed []float64
	for _, line := range stderrLevels(a.stderr.String(), "info") {
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil && fields["@message"] == "archived step log" {
			if ms, ok := fields["elapsed_ms"].(float64); ok {
				elapsed = append(elapsed, ms)
			}
		}
	}
	t.Logf("FIGURE archive run as the addon logs it (read previous, compress, upload, verify), ms per step: %v", elapsed)
	t.Logf("FIGURE bytes at rest: %d in S3 vs %d Woodpecker file-store NDJSON (%.1fx smaller); archive NDJSON %d",
		stored, sent, float64(sent)/float64(stored), ndjson)
	if archiveOps["PutObject"]+archiveOps["CompleteMultipartUpload"] != steps {
		t.Errorf("%d uploads for %d steps through the proxy: %v", archiveOps["PutObject"]+archiveOps["CompleteMultipartUpload"], steps, archiveOps)
	}
}

// TestS3LateLines sends lines 0.1 s and 3 s after StepFinished, after the archive exists
// and a minute later: each is readable at once, present once and in order, and merged
// into the object by a re-archive. A resent line number keeps its first content.
func TestS3LateLines(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	t.Parallel()
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(f.srv.Endpoint, "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=1s")...)
	step := newStep()
	want := buildLog(step, 0, 50)
	appendBatches(t, a, step, want, 10)
	finished := time.Now()
	finish(a, step)

	late := func(at time.Duration, line int) {
		t.Helper()
		time.Sleep(time.Until(finished.Add(at)))
		entry := entryAt(step, line, woodpecker.LogEntryStdout, []byte("late line "+strconv.Itoa(line)))
		resent := entryAt(step, line%50, woodpecker.LogEntryStdout, []byte("resent: must lose"))
		if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{resent, entry}); err != nil {
			t.Fatalf("late LogAppend at +%v: %v", time.Since(finished).Round(time.Millisecond), err)
		}
		want = append(want, entry)
		assertLog(t, a, step, want)
	}
	late(100*time.Millisecond, 50)
	late(3*time.Second, 51)
	checkArchive(t, a, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
	t.Logf("archived with the +0.1 s and +3 s lines %v after StepFinished", time.Since(finished).Round(time.Millisecond))

	late(time.Since(finished), 52) // now: the archive exists
	checkArchive(t, a, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
	waitSpoolEmpty(t, dir, step)

	late(60*time.Second, 53)
	checkArchive(t, a, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
	waitSpoolEmpty(t, dir, step)
}

// TestS3Outage cuts the S3 endpoint (a proxy that refuses connections, as a stopped
// server does) for 60 s while two steps are being archived and lines keep coming: LogFind
// serves them from the spool meanwhile, and once S3 is back everything is archived.
func TestS3Outage(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	t.Parallel()
	proxy, err := s3util.StartProxy(f.srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(proxy.URL, s3Settings...)...)

	before := newStep()
	wantBefore := buildLog(before, 0, 100)
	appendBatches(t, a, before, wantBefore, 50)
	finish(a, before)
	f.waitArchive(t, before, len(wantBefore), 30*time.Second)

	steps := []*woodpecker.Step{newStep(), newStep()}
	wants := make([][]*woodpecker.LogEntry, len(steps))
	for i, step := range steps {
		wants[i] = buildLog(step, 0, 300)
		appendBatches(t, a, step, wants[i][:200], 50)
	}
	proxy.Down()
	down := time.Now()
	for i, step := range steps {
		finish(a, step)
		// The agent's last batches arrive while the upload fails.
		appendBatches(t, a, step, wants[i][200:], 50)
	}
	for time.Since(down) < 60*time.Second {
		for i, step := range steps {
			assertLog(t, a, step, wants[i])
			f.assertNoObject(t, step)
		}
		time.Sleep(5 * time.Second)
	}
	// The already archived step lives only in the unreachable bucket: its LogFind must come
	// back promptly as an RPC error naming the endpoint, not hang or take the addon down.
	asked := time.Now()
	if _, err := a.svc.LogFind(before); err == nil || !strings.Contains(err.Error(), proxy.URL[len("http://"):]) {
		t.Errorf("LogFind of an archived step during the outage: %v, want an error naming the endpoint", err)
	} else if took := time.Since(asked); took > 20*time.Second {
		t.Errorf("LogFind of an archived step during the outage took %v", took)
	} else {
		t.Logf("LogFind of an archived step during the outage (%v): %v", took.Round(time.Millisecond), err)
	}
	if warns := stderrLevels(a.stderr.String(), "warn"); len(warns) == 0 {
		t.Errorf("no warning logged during a 60 s S3 outage; stderr:\n%s", tail(a.stderr.String()))
	} else {
		t.Logf("%d warnings during the outage, the first: %s", len(warns), warns[0])
		t.Logf("the last: %s", warns[len(warns)-1])
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	// Backoff doubles from 1 s with jitter: the retry after a 60 s outage is due within
	// about 64 s; allow twice that.
	for i, step := range steps {
		arch := f.waitArchive(t, step, len(wants[i]), 150*time.Second-time.Since(up))
		checkArchive(t, a, step, arch, wants[i])
		waitSpoolEmpty(t, dir, step)
	}
	t.Logf("FIGURE outage: archived %v after S3 came back from a 60 s outage", time.Since(up).Round(time.Second))
	checkArchive(t, a, before, f.waitArchive(t, before, len(wantBefore), time.Second), wantBefore)
}

// TestS3SIGKILLWhileStreaming kills the addon with SIGKILL while 20 steps stream, then
// loads it again on the same spool and bucket: every acknowledged line is there, a batch
// in flight is there whole or not at all, and every step archives completely.
func TestS3SIGKILLWhileStreaming(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	t.Parallel()
	dir := t.TempDir()
	env := f.env(f.srv.Endpoint, s3Settings...)
	first := startAddonIn(t, dir, env...)

	type stream struct {
		step     *woodpecker.Step
		acked    []*woodpecker.LogEntry
		inFlight []*woodpecker.LogEntry
	}
	streams := make([]*stream, 20)
	done := make(chan struct{})
	for i := range streams {
		s := &stream{step: newStep()}
		streams[i] = s
		go func() {
			defer func() { done <- struct{}{} }()
			for line := 0; ; line += 10 {
				batch := buildLog(s.step, line, 10)
				s.inFlight = batch
				if err := first.svc.LogAppend(s.step, batch); err != nil {
					return
				}
				s.acked, s.inFlight = append(s.acked, batch...), nil
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	if err := syscall.Kill(first.Client.ReattachConfig().Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range streams {
		<-done
	}
	first.Client.Kill()

	second := startAddonIn(t, dir, env...)
	total := 0
	for _, s := range streams {
		got, err := second.svc.LogFind(s.step)
		if err != nil {
			t.Fatalf("LogFind step %d after the restart: %v", s.step.ID, err)
		}
		want := s.acked
		if len(got) > len(s.acked) {
			want = append(want, s.inFlight...)
		}
		assertLog(t, second, s.step, want)
		if len(s.acked) == 0 {
			t.Errorf("step %d: no batch was acknowledged in 1.5 s", s.step.ID)
		}
		total += len(s.acked)
		rest := buildLog(s.step, len(want), 25)
		appendBatches(t, second, s.step, rest, 10)
		s.acked = append(want, rest...)
		finish(second, s.step)
	}
	t.Logf("%d acknowledged lines in 20 steps before SIGKILL", total)
	for _, s := range streams {
		checkArchive(t, second, s.step, f.waitArchive(t, s.step, len(s.acked), 60*time.Second), s.acked)
		waitSpoolEmpty(t, dir, s.step)
	}
}

// TestS3IdleTimeoutArchives never sends StepFinished (a killed agent): the sweeper
// archives the step after IDLE_TIMEOUT of silence.
func TestS3IdleTimeoutArchives(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	t.Parallel()
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(f.srv.Endpoint, "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT=2s")...)
	step := newStep()
	want := buildLog(step, 0, 120)
	appendBatches(t, a, step, want, 40)
	last := time.Now()
	arch := f.waitArchive(t, step, len(want), 30*time.Second)
	if idle := time.Since(last); idle < 2*time.Second {
		t.Fatalf("archived %v after the last line, before the 2 s idle timeout", idle)
	}
	checkArchive(t, a, step, arch, want)
	waitSpoolEmpty(t, dir, step)
}

// TestS3LogDelete deletes an archived step that also has late lines staged: LogFind gives
// [] and neither the object nor a spool file is left, also after a restart.
func TestS3LogDelete(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	dir := t.TempDir()
	env := f.env(f.srv.Endpoint, "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=10s")
	a := startAddonIn(t, dir, env...)
	step, other := newStep(), newStep()
	want := buildLog(step, 0, 30)
	appendBatches(t, a, step, want, 30)
	appendBatches(t, a, other, buildLog(other, 0, 5), 5)
	// Archive by restarting with a short delay, then stage a late line under a long one.
	a.Client.Kill()
	a = startAddonIn(t, dir, f.env(f.srv.Endpoint, s3Settings...)...)
	finish(a, step)
	f.waitArchive(t, step, len(want), 30*time.Second)
	waitSpoolEmpty(t, dir, step)
	a.Client.Kill()
	a = startAddonIn(t, dir, env...)
	if err := a.svc.LogAppend(step, buildLog(step, 30, 1)); err != nil {
		t.Fatal(err)
	}
	if len(spoolSegments(dir, step)) == 0 {
		t.Fatal("the late line is not in the spool")
	}

	if err := a.svc.LogDelete(step); err != nil {
		t.Fatalf("LogDelete: %v", err)
	}
	assertEmpty(t, a, step)
	f.assertNoObject(t, step)
	if files := spoolFiles(dir, step); len(files) != 0 {
		t.Fatalf("spool files left after LogDelete: %v", files)
	}
	assertLog(t, a, other, buildLog(other, 0, 5))
	a.Client.Kill()
	b := startAddonIn(t, dir, env...)
	assertEmpty(t, b, step)
	f.assertNoObject(t, step)
}

// TestS3CorruptObject overwrites an archive with garbage: LogFind of that step is an RPC
// error naming the cause, the addon keeps serving, other steps are unaffected.
func TestS3CorruptObject(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(f.srv.Endpoint, s3Settings...)...)
	bad, good := newStep(), newStep()
	wantGood := buildLog(good, 0, 20)
	for _, step := range []*woodpecker.Step{bad, good} {
		appendBatches(t, a, step, buildLog(step, 0, 20), 20)
		finish(a, step)
		f.waitArchive(t, step, 20, 30*time.Second)
		waitSpoolEmpty(t, dir, step)
	}
	garbage := strings.NewReader("this is not zstd \x00\xff\xfe")
	ctx := context.Background()
	if _, err := f.client.PutObject(ctx, f.srv.Bucket, f.key(bad), garbage, garbage.Size(),
		minio.PutObjectOptions{ContentType: "application/x-ndjson"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := a.svc.LogFind(bad)
		var serverErr rpc.ServerError
		if !errors.As(err, &serverErr) {
			t.Fatalf("LogFind of a corrupted object: got %v (%T), want an RPC error", err, err)
		}
		msg := strings.ToLower(err.Error())
		if !strings.Contains(msg, strconv.FormatInt(bad.ID, 10)) || !(strings.Contains(msg, "zstd") ||
			strings.Contains(msg, "corrupt") || strings.Contains(msg, "decompress") || strings.Contains(msg, "magic")) {
			t.Errorf("error does not name the step and the cause: %v", err)
		}
		t.Logf("LogFind of the corrupted object: %v", err)
		checkArchive(t, a, good, f.waitArchive(t, good, 20, time.Second), wantGood)
	}
	// Invalid step ids stay clear errors with an S3 backend, and reach no object.
	for _, id := range []int64{0, -7} {
		step := &woodpecker.Step{ID: id, Name: "bad"}
		err := a.svc.LogAppend(step, []*woodpecker.LogEntry{{StepID: id, Data: []byte("x")}})
		if err == nil || !strings.Contains(err.Error(), strconv.FormatInt(id, 10)) {
			t.Errorf("LogAppend with step id %d: %v, want an error naming the id", id, err)
		}
		if _, err := a.svc.LogFind(step); err == nil {
			t.Errorf("LogFind with step id %d succeeded", id)
		}
	}
	count := 0
	for obj := range f.client.ListObjects(ctx, f.srv.Bucket, minio.ListObjectsOptions{Prefix: f.folder + "/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatal(obj.Err)
		}
		count++
	}
	if count != 2 {
		t.Errorf("%d objects in the test folder, want the 2 steps'", count)
	}
}

// TestS3TruncatedSpool cuts the spool segment in the middle of its last record while the
// addon is stopped: the next addon reads every complete record and keeps working.
func TestS3TruncatedSpool(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	dir := t.TempDir()
	env := f.env(f.srv.Endpoint, "WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=1m")
	a := startAddonIn(t, dir, env...)
	step := newStep()
	want := buildLog(step, 0, 12)
	appendBatches(t, a, step, want, 1)
	a.Client.Kill()

	files := spoolFiles(dir, step)
	var segment string
	for _, file := range files {
		if strings.HasSuffix(file, ".ndjson") {
			segment = file
		}
	}
	if segment == "" {
		t.Fatalf("no spool segment for step %d: %v", step.ID, files)
	}
	data, err := os.ReadFile(segment)
	if err != nil {
		t.Fatal(err)
	}
	trimmed := strings.TrimSuffix(string(data), "\n")
	lastStart := strings.LastIndexByte(trimmed, '\n') + 1
	cut := lastStart + (len(trimmed)-lastStart)/2
	if err := os.Truncate(segment, int64(cut)); err != nil {
		t.Fatal(err)
	}
	t.Logf("cut %s from %d to %d bytes", segment, len(data), cut)

	b := startAddonIn(t, dir, env...)
	want = want[:len(want)-1]
	assertLog(t, b, step, want)
	more := buildLog(step, 11, 3)
	appendBatches(t, b, step, more, 3)
	want = append(want, more...)
	assertLog(t, b, step, want)
	b.Client.Kill()
	c := startAddonIn(t, dir, f.env(f.srv.Endpoint, s3Settings...)...)
	finish(c, step)
	checkArchive(t, c, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
}

// TestS3MotoRoundTrip archives, re-archives and deletes one step on moto.
func TestS3MotoRoundTrip(t *testing.T) {
	f := needS3(t, "MOTO")
	dir := t.TempDir()
	a := startAddonIn(t, dir, f.env(f.srv.Endpoint, s3Settings...)...)
	step := newStep()
	want := append(buildLog(step, 0, 500), richBatch(step, 500)...)
	appendBatches(t, a, step, want, 100)
	finish(a, step)
	checkArchive(t, a, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
	waitSpoolEmpty(t, dir, step)
	late := buildLog(step, 506, 2)
	appendBatches(t, a, step, late, 2)
	want = append(want, late...)
	checkArchive(t, a, step, f.waitArchive(t, step, len(want), 30*time.Second), want)
	if err := a.svc.LogDelete(step); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, a, step)
	f.assertNoObject(t, step)
}

// TestS3UnreachableBucketAtStart points the addon at a closed port: it starts anyway,
// logs a warning, and appends and reads work from the spool.
func TestS3UnreachableBucketAtStart(t *testing.T) {
	skipForReference(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	_ = ln.Close()
	srv := s3util.Server{Bucket: "ci-logs", AccessKey: "k", SecretKey: "s"}
	a := startAddon(t, append(srv.AddonEnv(closed, "x"), s3Settings...)...)
	step := newStep()
	want := buildLog(step, 0, 40)
	appendBatches(t, a, step, want, 10)
	finish(a, step)
	if !waitFor(30*time.Second, func() bool { return len(stderrLevels(a.stderr.String(), "warn")) > 0 }) {
		t.Fatalf("no warn-level line on stderr 30 s after starting against %s:\n%s", closed, tail(a.stderr.String()))
	}
	warning := stderrLevels(a.stderr.String(), "warn")[0]
	if !strings.Contains(warning, ln.Addr().String()) {
		t.Errorf("the warning does not name the endpoint %s: %s", closed, warning)
	}
	t.Logf("warning: %s", warning)
	more := buildLog(step, 40, 5)
	appendBatches(t, a, step, more, 5)
	assertLog(t, a, step, append(want, more...))
}

// TestS3MultipartArchive archives a log whose compressed size exceeds PART_SIZE (5 MiB,
// the S3 minimum) on SeaweedFS and on moto: the upload goes in parts through the counting
// proxy and the object reads back whole.
func TestS3MultipartArchive(t *testing.T) {
	for _, server := range []string{"SEAWEEDFS", "MOTO"} {
		t.Run(server, func(t *testing.T) {
			f := needS3(t, server)
			proxy, err := s3util.StartProxy(f.srv.Endpoint)
			if err != nil {
				t.Fatal(err)
			}
			defer proxy.Close()
			dir := t.TempDir()
			a := startAddonIn(t, dir, f.env(proxy.URL, append(s3Settings, "WOODPECKER_LOG_STORE_S3_PART_SIZE=5MiB")...)...)
			step := newStep()
			// 8 MiB of incompressible bytes: about 8 MiB compressed, two parts.
			rng := rand.New(rand.NewPCG(uint64(step.ID), 1))
			want := make([]*woodpecker.LogEntry, 8192)
			for line := range want {
				data := make([]byte, 1024)
				for i := range data {
					data[i] = byte(rng.Uint32())
				}
				want[line] = entryAt(step, line, woodpecker.LogEntryStdout, data)
			}
			appendBatches(t, a, step, want, 1000)
			finish(a, step)
			arch := f.waitArchive(t, step, len(want), 60*time.Second)
			checkArchive(t, a, step, arch, want)
			waitSpoolEmpty(t, dir, step)
			counts := proxy.Counts()
			if counts["CreateMultipartUpload"] != 1 || counts["UploadPart"] < 2 || counts["CompleteMultipartUpload"] != 1 {
				t.Errorf("a %d-byte object was not uploaded in parts: %v", arch.Compressed, counts)
			}
			t.Logf("%d bytes at rest, requests: %v", arch.Compressed, counts)
		})
	}
}
