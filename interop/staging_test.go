package interop

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/internal/s3util"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// Database staging (issue 11, WOODPECKER_LOG_STORE_S3_STAGING=database): LogAppend commits
// the batch to Woodpecker's log_entries table; a finished or idle step is archived from the
// object (if any) + its rows, and its rows are deleted once the object is verified. No local
// state: a relaunched addon in a fresh container finds unarchived steps in log_entries.
// The tests run in parallel with each other (the S3 outage takes 60 s by itself).

// stagingSettings are the settings every test here starts from: archive 1 s after
// StepFinished, or after 5 s without a line.
var stagingSettings = []string{
	"WOODPECKER_LOG_STORE_S3_STAGING=database",
	"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=1s",
	"WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT=5s",
}

// rowsAsEntries turns log_entries rows into the entries they stage.
func rowsAsEntries(rows []stagedRow) []*woodpecker.LogEntry {
	out := make([]*woodpecker.LogEntry, len(rows))
	for i, r := range rows {
		out[i] = &woodpecker.LogEntry{ID: r.id, StepID: r.stepID, Time: r.time, Line: r.line, Data: r.data, Type: woodpecker.LogEntryType(r.typ)}
	}
	return out
}

// hasLines says whether the rows hold every line of [from, to).
func hasLines(rows []stagedRow, from, to int) bool {
	have := map[int]bool{}
	for _, r := range rows {
		have[r.line] = true
	}
	for line := from; line < to; line++ {
		if !have[line] {
			return false
		}
	}
	return true
}

// TestDatabaseStagingSigkill SIGKILLs the addon while 20 steps stream into a SQLite
// database, then relaunches it in a fresh root (new HOME, XDG directories and TMPDIR, no file
// of the first run) on the same database and archive. Every acknowledged line is in
// log_entries, as Woodpecker's database store writes it, and readable through LogFind; half
// the steps get more lines and StepFinished, the other half nothing: the relaunched addon
// must find those in log_entries by itself. Every step is archived whole and its rows are
// deleted; neither addon creates a spool directory or any other local state.
func TestDatabaseStagingSigkill(t *testing.T) {
	skipForReference(t)
	var av archiveView
	if _, missing := s3util.FromEnv("SEAWEEDFS"); missing == "" {
		f := needS3(t, "SEAWEEDFS")
		av = s3Archive{f: f, endpoint: f.srv.Endpoint}
	} else {
		av = localArchive{dir: filepath.Join(t.TempDir(), "archive")}
		t.Logf("%s is not set: archiving to a local directory both roots share", missing)
	}
	t.Parallel()
	db := newSQLiteDB(t, t.TempDir())
	env := append(append(db.env(), av.env()...), stagingSettings...)
	began := time.Now()
	root1 := newFreshRoot(t)
	first := startInRoot(t, root1, env...)

	streams := make([]*stream, 20)
	var wg sync.WaitGroup
	for i := range streams {
		s := &stream{step: newStep(), rich: i == 0}
		streams[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s.send(first, 10) == nil {
			}
		}()
	}
	// Stream for 1.5 s, and until every step has an acknowledged batch (20 writers queue for
	// SQLite's one write lock: a batch can wait a while).
	time.Sleep(1500 * time.Millisecond)
	if !waitFor(15*time.Second, func() bool {
		for _, s := range streams {
			if len(s.ackedLines()) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Errorf("a step had no batch acknowledged %v after the streams began", time.Since(began).Round(time.Millisecond))
	}
	killed := time.Now()
	if err := syscall.Kill(first.Client.ReattachConfig().Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	first.Client.Kill()
	root1.checkNoLocalState(t, "first")

	// What the dead addon left in log_entries: every acknowledged line; of the batch in flight
	// at the kill, all lines or none (one statement).
	wants := make([][]*woodpecker.LogEntry, len(streams))
	total := 0
	var latencies []time.Duration
	for i, s := range streams {
		for _, c := range s.calls {
			if c.err != nil && c.end.Before(killed) {
				t.Errorf("step %d: LogAppend of lines %d.. failed before the SIGKILL (%v after start): %v",
					s.step.ID, c.first, c.end.Sub(began).Round(time.Millisecond), c.err)
			}
		}
		for _, c := range s.calls {
			if c.err == nil {
				latencies = append(latencies, c.end.Sub(c.start))
			}
		}
		rows, err := db.rows(s.step)
		if err != nil {
			t.Fatal(err)
		}
		if problem := s.checkHolds(rowsAsEntries(rows)); problem != "" {
			t.Fatalf("step %d: log_entries after the SIGKILL: %s", s.step.ID, problem)
		}
		wants[i] = s.ackedLines()
		switch len(rows) {
		case len(s.acked):
		case len(s.acked) + len(s.failed):
			wants[i] = append(wants[i], s.failed...)
		default:
			t.Fatalf("step %d: %d rows after the SIGKILL: %d acknowledged lines and a batch of %d in flight (whole or nothing)",
				s.step.ID, len(rows), len(s.acked), len(s.failed))
		}
		db.checkRowsAreWoodpeckers(t, s.step, wants[i], began)
		total += len(s.acked)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if len(latencies) == 0 {
		t.Fatal("no append acknowledged")
	}
	pct := func(p int) time.Duration { return latencies[(len(latencies)-1)*p/100].Round(time.Millisecond) }
	t.Logf("%d acknowledged lines in 20 steps in the %v before the SIGKILL; LogAppend of 10 lines, 20 writers on SQLite: p50 %v, p99 %v, max %v",
		total, killed.Sub(began).Round(time.Millisecond), pct(50), pct(99), pct(100))

	// The relaunch: a new container (nothing of root1), its spool setting pointing at a
	// directory that does not exist.
	root2 := newFreshRoot(t)
	relaunched := time.Now()
	second := startInRoot(t, root2, append(env, "WOODPECKER_LOG_STORE_S3_SPOOL_DIR="+filepath.Join(root2.dir, "spool"))...)
	for i, s := range streams[:10] {
		assertFind(t, second, s.step, wants[i])
		if err := s.send(second, 25); err != nil {
			t.Fatalf("step %d: LogAppend after the relaunch: %v", s.step.ID, err)
		}
		wants[i] = append(wants[i], s.acked[len(s.acked)-25:]...)
		finish(second, s.step)
	}
	// Steps 10-19 get nothing: the relaunched addon has to find them in log_entries.
	for i, s := range streams {
		waitArchived(t, av, s.step, wants[i], 60*time.Second)
		if i == 10 {
			t.Logf("the first step of the untouched ten archived %v after the relaunch", time.Since(relaunched).Round(time.Millisecond))
		}
	}
	t.Logf("all 20 steps archived %v after the relaunch", time.Since(relaunched).Round(time.Millisecond))
	steps := make([]*woodpecker.Step, len(streams))
	for i, s := range streams {
		steps[i] = s.step
	}
	db.waitNoRows(t, 30*time.Second, steps...)
	t.Logf("log_entries empty for the 20 steps %v after the relaunch", time.Since(relaunched).Round(time.Millisecond))
	for i, s := range streams {
		assertFind(t, second, s.step, wants[i])
	}
	root1.checkNoLocalState(t, "first")
	root2.checkNoLocalState(t, "second")
}

// TestDatabaseStagingDatabaseRestart stops a private PostgreSQL server (immediate mode: every
// session cut) for 15 s while six steps stream, then starts it again. While it is down every
// LogAppend returns an error, promptly; a LogFind either fails or returns every acknowledged
// line (never a silently partial log). After it is back, appends succeed again, and every
// acknowledged line is readable, archived, and its rows deleted.
func TestDatabaseStagingDatabaseRestart(t *testing.T) {
	skipForReference(t)
	t.Parallel()
	pg, db := startPrivatePostgres(t)
	av := localArchive{dir: filepath.Join(t.TempDir(), "archive")}
	root := newFreshRoot(t)
	a := startInRoot(t, root, append(append(db.env(), av.env()...), stagingSettings...)...)
	defer func() {
		if t.Failed() {
			t.Logf("postgres.log (tail):\n%s", pg.logTail())
		}
	}()

	streams := make([]*stream, 6)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range streams {
		s := &stream{step: newStep()}
		streams[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				_ = s.send(a, 10)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	if err := pg.stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(2 * time.Second)
	var finds sync.WaitGroup
	for i, s := range streams {
		finds.Add(1)
		go func() {
			defer finds.Done()
			asked := time.Now()
			got, err := a.svc.LogFind(s.step)
			if err != nil {
				if i == 0 {
					t.Logf("LogFind with the database down failed after %v: %v", time.Since(asked).Round(time.Millisecond), err)
				}
				return
			}
			if problem := s.checkHolds(got); problem != "" {
				t.Errorf("step %d: LogFind with the database down returned a partial log: %s", s.step.ID, problem)
			}
		}()
	}
	finds.Wait()
	// 15 s: a failing append waits up to 5 s for a connection, so that every stream has
	// appends that begin and end while the database is down.
	time.Sleep(time.Until(down.Add(15 * time.Second)))
	restarting := time.Now()
	if err := pg.start(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	t.Logf("PostgreSQL was down for %v (its start took %v)", up.Sub(down).Round(time.Millisecond), up.Sub(restarting).Round(time.Millisecond))
	recovered := waitFor(30*time.Second, func() bool {
		for _, s := range streams {
			s.mu.Lock()
			ok := false
			for _, c := range s.calls {
				ok = ok || (c.err == nil && c.start.After(up))
			}
			s.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	if !recovered {
		close(stop)
		wg.Wait()
		t.Fatalf("appends still failing 30 s after PostgreSQL came back; the last error: %v", streams[0].calls[len(streams[0].calls)-1].err)
	}
	t.Logf("every step appended again %v after PostgreSQL came back", time.Since(up).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	failedDown, slowest := 0, time.Duration(0)
	var firstErr error
	for _, s := range streams {
		downCalls, succeeded := 0, []string{}
		for _, c := range s.calls {
			if c.start.Before(down) || c.end.After(restarting) {
				continue
			}
			downCalls++
			if c.err == nil {
				succeeded = append(succeeded, fmt.Sprintf("lines %d.. at +%v", c.first, c.start.Sub(down).Round(time.Millisecond)))
				continue
			}
			failedDown++
			if firstErr == nil {
				firstErr = c.err
			}
			slowest = max(slowest, c.end.Sub(c.start))
		}
		if len(succeeded) > 0 {
			t.Errorf("step %d: %d of %d LogAppends that began and ended while the database was down succeeded (acknowledged without a database), the first: %s",
				s.step.ID, len(succeeded), downCalls, succeeded[0])
		}
		if downCalls == 0 {
			t.Errorf("step %d: no LogAppend began and ended while the database was down", s.step.ID)
		}
	}
	t.Logf("%d appends failed while the database was down, the slowest after %v; the first error: %v", failedDown, slowest.Round(time.Millisecond), firstErr)
	if slowest > 15*time.Second {
		t.Errorf("a LogAppend with the database down took %v to fail", slowest)
	}
	if firstErr != nil && !strings.Contains(strings.ToLower(firstErr.Error()), "database") && !strings.Contains(firstErr.Error(), "127.0.0.1") {
		t.Logf("note: the append error names neither the database nor its address: %v", firstErr)
	}

	steps := make([]*woodpecker.Step, len(streams))
	finals := make([][]*woodpecker.LogEntry, len(streams))
	for i, s := range streams {
		steps[i] = s.step
		got, err := a.svc.LogFind(s.step)
		if err != nil {
			t.Fatalf("step %d: LogFind after the restart: %v", s.step.ID, err)
		}
		if problem := s.checkHolds(got); problem != "" {
			t.Fatalf("step %d: after the database restart: %s", s.step.ID, problem)
		}
		finals[i] = got
		t.Logf("step %d: %d lines acknowledged, %d failed, LogFind has %d (lines %s)", s.step.ID, len(s.acked), len(s.failed), len(got), lineRanges(got))
		finish(a, s.step)
	}
	for i, s := range streams {
		waitArchived(t, av, s.step, finals[i], 60*time.Second)
	}
	db.waitNoRows(t, 30*time.Second, steps...)
	for i, s := range streams {
		assertFind(t, a, s.step, finals[i])
	}
	root.checkNoLocalState(t, "the")
}

// TestDatabaseStagingS3Down cuts S3 (a proxy in front of SeaweedFS that refuses connections)
// for 60 s while four steps stream, two of them finished at the start of the outage: appends
// keep succeeding at once, the rows stay in log_entries, LogFind serves them, nothing is
// archived meanwhile; once S3 is back every step is archived and its rows deleted.
func TestDatabaseStagingS3Down(t *testing.T) {
	f := needS3(t, "SEAWEEDFS")
	t.Parallel()
	proxy, err := s3util.StartProxy(f.srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	db := newSQLiteDB(t, t.TempDir())
	av := s3Archive{f: f, endpoint: proxy.URL}
	root := newFreshRoot(t)
	a := startInRoot(t, root, append(append(db.env(), av.env()...), stagingSettings...)...)

	// One step archived through the proxy first: the path works (and the once-per-process
	// conditional-write probe is behind us).
	warm := &stream{step: newStep()}
	if err := warm.send(a, 50); err != nil {
		t.Fatal(err)
	}
	finish(a, warm.step)
	waitArchived(t, av, warm.step, warm.acked, 30*time.Second)
	db.waitNoRows(t, 30*time.Second, warm.step)

	streams := make([]*stream, 4)
	for i := range streams {
		streams[i] = &stream{step: newStep()}
		for range 2 {
			if err := streams[i].send(a, 50); err != nil {
				t.Fatal(err)
			}
		}
	}
	proxy.Down()
	down := time.Now()
	slowest := time.Duration(0)
	send := func(s *stream, n int) {
		t.Helper()
		start := time.Now()
		if err := s.send(a, n); err != nil {
			t.Fatalf("step %d: LogAppend during the S3 outage (%v in): %v", s.step.ID, time.Since(down).Round(time.Second), err)
		}
		slowest = max(slowest, time.Since(start))
	}
	for _, s := range streams[:2] {
		finish(a, s.step)
		send(s, 10) // the agent's last batch, after StepFinished
	}
	checks := 0
	for tick := 1; time.Since(down) < 60*time.Second; tick++ {
		time.Sleep(time.Until(down.Add(time.Duration(tick) * time.Second)))
		for _, s := range streams[2:] {
			send(s, 10)
		}
		if tick%10 != 5 {
			continue
		}
		checks++
		for _, s := range streams {
			assertFind(t, a, s.step, s.acked)
			if n := db.countRows(t, s.step); n != len(s.acked) {
				t.Fatalf("step %d: %d rows in log_entries %v into the outage, want its %d lines", s.step.ID, n, time.Since(down).Round(time.Second), len(s.acked))
			}
			f.assertNoObject(t, s.step)
		}
	}
	t.Logf("appends during the outage: the slowest took %v; %d checks of LogFind, rows and bucket", slowest.Round(time.Millisecond), checks)
	if slowest > 3*time.Second {
		t.Errorf("a LogAppend took %v during the S3 outage (appends never wait on the network)", slowest)
	}
	var warns []string
	for _, w := range stderrLevels(a.stderr.String(), "warn") {
		if strings.Contains(w, strings.TrimPrefix(proxy.URL, "http://")) {
			warns = append(warns, w)
		}
	}
	if len(warns) == 0 {
		t.Errorf("no warning naming the S3 endpoint %s logged during a 60 s S3 outage", proxy.URL)
	} else {
		t.Logf("%d warnings naming the endpoint during the outage, the first: %s", len(warns), warns[0])
	}
	if err := proxy.Up(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	for _, s := range streams[2:] {
		finish(a, s.step)
	}
	// Back-off doubles from 1 s: the retry after a 60 s outage is due within about 64 s.
	steps := []*woodpecker.Step{}
	for _, s := range streams {
		waitArchived(t, av, s.step, s.acked, 150*time.Second-time.Since(up))
		steps = append(steps, s.step)
	}
	t.Logf("FIGURE database staging, S3 outage: every step archived %v after S3 came back from a 60 s outage", time.Since(up).Round(time.Second))
	db.waitNoRows(t, 30*time.Second, steps...)
	for _, s := range streams {
		assertFind(t, a, s.step, s.acked)
	}
	root.checkNoLocalState(t, "the")
}

// TestStagingSwitchModes restarts the addon from spool to database staging and back, with
// steps in flight each time (same spool directory, database and archive): nothing is lost,
// every line reads back after each switch, and every step is archived in the end, its spool
// segments and rows gone. Steps: 1-4 start in the spool; 5-6 start in the database; 1 is
// archived in database mode from spool + rows, then gets a late line in spool mode; 6 is
// never touched after the switch back to the spool.
func TestStagingSwitchModes(t *testing.T) {
	skipForReference(t)
	t.Parallel()
	base := t.TempDir()
	db := newSQLiteDB(t, base)
	av := localArchive{dir: filepath.Join(base, "archive")}
	root := newFreshRoot(t)
	env := append(append(db.env(), av.env()...), "WOODPECKER_LOG_STORE_S3_SPOOL_DIR="+filepath.Join(base, "spool"))
	mode := func(staging, finalize, idle string) []string {
		return append(append([]string{}, env...), "WOODPECKER_LOG_STORE_S3_STAGING="+staging,
			"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY="+finalize, "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT="+idle)
	}
	streams := make([]*stream, 7) // 1-based
	for i := 1; i < len(streams); i++ {
		streams[i] = &stream{step: newStep(), rich: i == 1 || i == 5}
	}
	send := func(a *addon, phase string, s *stream, n int) {
		t.Helper()
		if err := s.send(a, n); err != nil {
			t.Fatalf("%s: step %d: LogAppend: %v", phase, s.step.ID, err)
		}
	}
	findAll := func(a *addon, phase string, which ...int) {
		t.Helper()
		for _, i := range which {
			got, err := a.svc.LogFind(streams[i].step)
			problem := ""
			if err != nil {
				problem = err.Error()
			} else {
				problem = diffEntries(got, streams[i].acked)
			}
			if problem == "" {
				continue
			}
			// Say whether it is a matter of time (lines still being moved) or lost.
			asked := time.Now()
			later := waitFor(20*time.Second, func() bool {
				got, err := a.svc.LogFind(streams[i].step)
				return err == nil && diffEntries(got, streams[i].acked) == ""
			})
			t.Fatalf("%s: LogFind step %d: %s (complete again %v later: %v)", phase, i, problem,
				time.Since(asked).Round(100*time.Millisecond), later)
		}
	}

	phase := "phase 1 (spool)"
	a1 := startInRoot(t, root, mode("spool", "1m", "1m")...)
	for _, s := range streams[1:5] {
		send(a1, phase, s, 50)
		send(a1, phase, s, 50)
	}
	if len(spoolSegments(base, streams[1].step)) == 0 {
		t.Fatalf("%s: nothing in the spool", phase)
	}
	findAll(a1, phase, 1, 2, 3, 4)
	a1.Client.Kill() // a graceful restart, as an admin switching modes does

	phase = "phase 2 (database, after a graceful restart from spool)"
	a2 := startInRoot(t, root, mode("database", "1s", "1m")...)
	findAll(a2, phase, 1, 2, 3, 4)
	for _, s := range streams[1:5] {
		send(a2, phase, s, 50)
		send(a2, phase, s, 50)
	}
	// The lines appended in database mode are rows (the spool's may have been moved there too).
	if rows, err := db.rows(streams[2].step); err != nil {
		t.Fatal(err)
	} else if have := lineRanges(rowsAsEntries(rows)); !hasLines(rows, 100, 200) {
		t.Errorf("%s: step 2 has rows of lines %s in log_entries, want those appended in database mode (100-199) among them", phase, have)
	}
	for _, s := range streams[5:7] {
		send(a2, phase, s, 50)
		send(a2, phase, s, 50)
	}
	findAll(a2, phase, 1, 2, 3, 4, 5, 6)
	finish(a2, streams[1].step)
	waitArchived(t, av, streams[1].step, streams[1].acked, 30*time.Second)
	db.waitNoRows(t, 30*time.Second, streams[1].step)
	if !waitFor(20*time.Second, func() bool { return len(spoolSegments(base, streams[1].step)) == 0 }) {
		t.Errorf("%s: step 1 archived, but its spool segments are left: %v", phase, spoolSegments(base, streams[1].step))
	}
	findAll(a2, phase, 1, 2, 3, 4, 5, 6)
	if err := syscall.Kill(a2.Client.ReattachConfig().Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a2.Client.Kill()

	phase = "phase 3 (spool, after a SIGKILL in database mode)"
	a3 := startInRoot(t, root, mode("spool", "1s", "5s")...)
	findAll(a3, phase, 1, 2, 3, 4, 5, 6)
	send(a3, phase, streams[1], 1) // a late line of the archived step
	for _, s := range streams[2:6] {
		send(a3, phase, s, 50)
		finish(a3, s.step)
	}
	findAll(a3, phase, 1, 2, 3, 4, 5, 6)
	var missing []string
	for i, s := range streams[1:] {
		got, err := av.entries(s.step)
		_ = got
		waitFor(60*time.Second, func() bool {
			got, err = av.entries(s.step)
			return err == nil && diffEntries(got, s.acked) == ""
		})
		if err != nil {
			missing = append(missing, fmt.Sprintf("step %d: %v", i+1, err))
		} else if d := diffEntries(got, s.acked); d != "" {
			missing = append(missing, fmt.Sprintf("step %d: archive %s", i+1, d))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s: not archived whole within 60 s:\n%s", phase, strings.Join(missing, "\n"))
	}
	steps := []*woodpecker.Step{}
	for _, s := range streams[1:] {
		steps = append(steps, s.step)
	}
	db.waitNoRows(t, 30*time.Second, steps...)
	for i, s := range streams[1:] {
		if !waitFor(20*time.Second, func() bool { return len(spoolSegments(base, s.step)) == 0 }) {
			t.Errorf("%s: step %d archived, but its spool segments are left: %v", phase, i+1, spoolSegments(base, s.step))
		}
	}
	findAll(a3, phase, 1, 2, 3, 4, 5, 6)
}

// TestStagingSwitchLogDeleteDuringMove deletes a step's log right after a mode switch, while
// the addon is still moving the other staging's lines (40 steps of 2000 lines, the deleted
// one last in id order): once the move is done the deleted log must stay deleted, in both
// directions (invariant 6: a log deleted for a leaked secret never resurfaces).
func TestStagingSwitchLogDeleteDuringMove(t *testing.T) {
	skipForReference(t)
	t.Parallel()
	for _, dir := range []struct{ from, to string }{{"spool", "database"}, {"database", "spool"}} {
		t.Run(dir.from+"-to-"+dir.to, func(t *testing.T) {
			base := t.TempDir()
			db := newSQLiteDB(t, base)
			av := localArchive{dir: filepath.Join(base, "archive")}
			root := newFreshRoot(t)
			env := append(append(db.env(), av.env()...), "WOODPECKER_LOG_STORE_S3_SPOOL_DIR="+filepath.Join(base, "spool"),
				"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=1m", "WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT=1m")
			a1 := startInRoot(t, root, append(env, "WOODPECKER_LOG_STORE_S3_STAGING="+dir.from)...)
			streams := make([]*stream, 40)
			for i := range streams {
				streams[i] = &stream{step: newStep()}
				for range 4 {
					if err := streams[i].send(a1, 500); err != nil {
						t.Fatal(err)
					}
				}
			}
			a1.Client.Kill()
			victim := streams[len(streams)-1]
			a2 := startInRoot(t, root, append(env, "WOODPECKER_LOG_STORE_S3_STAGING="+dir.to)...)
			if err := a2.svc.LogDelete(victim.step); err != nil {
				t.Fatalf("LogDelete right after the switch: %v", err)
			}
			deleted := time.Now()
			// The move is done when the staging left holds nothing of the other steps.
			moved := waitFor(60*time.Second, func() bool {
				for _, s := range streams[:len(streams)-1] {
					if dir.from == "spool" && len(spoolSegments(base, s.step)) > 0 ||
						dir.from == "database" && db.countRows(t, s.step) > 0 {
						return false
					}
				}
				return true
			})
			if !moved {
				t.Fatalf("the lines of %s staging not moved 60 s after the switch", dir.from)
			}
			t.Logf("move done %v after the LogDelete", time.Since(deleted).Round(time.Millisecond))
			got, err := a2.svc.LogFind(victim.step)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) > 0 {
				t.Errorf("the log deleted right after the switch is back once the move is done: %d lines %s (rows in log_entries: %d, spool segments: %d)",
					len(got), lineRanges(got), db.countRows(t, victim.step), len(spoolSegments(base, victim.step)))
			}
			for _, s := range streams[:3] {
				assertFind(t, a2, s.step, s.acked)
			}
		})
	}
}
