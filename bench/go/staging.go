package main

// The database-staging benchmark (issue 11, item 3): per database kind (SQLite, PostgreSQL,
// MySQL/MariaDB), in one run with one workload, Woodpecker's database store (wpstores, called
// in-process as the server calls it) and the addon loaded through Woodpecker's addon client
// with WOODPECKER_LOG_STORE_S3_STAGING=database on a fresh database of the same kind. Each
// target gets a fresh database with Woodpecker's tables. Phases, the same for every target:
//
//  1. paced: 32 steps at a time, each sending stagingBatch lines every stagingPeriod and
//     finishing after stagingStepLines lines, so steps keep finishing (and, for the addon,
//     being archived and their rows deleted) while the others stream. LogAppend latency.
//  2. burst: big finished steps are archived (addon: StepFinished, then its paced deletes)
//     or purged (database store: LogDelete, one DELETE each) while 32 running steps append
//     at the paced rate: LogAppend latency before, while archiving, while deleting, after.
//  3. saturated: the streaming plan of the main benchmark (1 MiB batches back to back, 32
//     steps at a time, StepFinished at each end). Throughput.
//  4. drain: wait until the addon has archived every step (log_entries empty), then read
//     every step back through LogFind and compare each acknowledged line.
//
// The log_entries row count is sampled all along (every rowSampleEvery) next to the lines
// the workload holds in steps not yet finished.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/woodpecker-s3-logs/bench/wpstores"
)

// stagingScale sizes the workload.
type stagingScale struct {
	PacedSeconds int `json:"paced_seconds"`
	BurstSteps   int `json:"burst_steps"`
	BurstLines   int `json:"burst_lines_per_step"`
	// BaselineSeconds: how long the running steps append before the big steps finish.
	BaselineSeconds int `json:"burst_baseline_seconds"`
	StreamSteps     int `json:"stream_steps"`
}

var (
	stagingFull  = stagingScale{PacedSeconds: 30, BurstSteps: 3, BurstLines: 50000, BaselineSeconds: 3, StreamSteps: 32}
	stagingQuick = stagingScale{PacedSeconds: 10, BurstSteps: 3, BurstLines: 20000, BaselineSeconds: 3, StreamSteps: 8}
	// stagingTest: the size scripts/test.sh runs (go test in bench/go).
	stagingTest = stagingScale{PacedSeconds: 5, BurstSteps: 2, BurstLines: 10000, BaselineSeconds: 2, StreamSteps: 4}
)

// The paced rate: 32 steps × 100 lines every 200 ms = 16,000 lines/s and 160 appends/s (five
// times the agent's once-a-second flush per step, so p99 rests on thousands of calls); a step
// lasts 3 s.
const (
	stagingPeriod    = 200 * time.Millisecond
	stagingBatch     = 100
	stagingStepLines = 1500
	// rowSampleEvery is the period of the log_entries row count.
	rowSampleEvery = 250 * time.Millisecond
)

// stagingConfig is what the staging benchmark needs.
type stagingConfig struct {
	Bin       string
	SchemaDir string // crates/woodpecker-db/tests/fixtures: Woodpecker's tables per driver
	Work      string
	Drivers   []string
	Admin     map[string]string // data source allowed to create databases, per server driver
	Scale     stagingScale
	// FinalizeDelay is the addon's WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY.
	FinalizeDelay string
	// S3: archive to this bucket when Endpoint is set, else to a local directory.
	S3 s3Config
	// AddonEnv: extra settings for the addon.
	AddonEnv []string
	// Stores: "woodpecker", "addon" or both.
	Stores []string
	// SQLiteWAL: put the SQLite file in WAL mode first (Woodpecker's default is the rollback
	// journal), for both stores.
	SQLiteWAL bool
	// Rounds: every store runs this many times per database (0 counts as 1), the order of
	// the stores alternating, and the table gives medians: a p99 of ~5,000 appends on 2
	// shared cores moves by up to 2x from one run to the next.
	Rounds int
	// SettleWait: before each target, wait up to this long for the CPUs to go idle (0: do
	// not; the tests run beside other tests).
	SettleWait time.Duration
}

// stagingRun is the JSON document of a staging benchmark run.
type stagingRun struct {
	Scale         stagingScale     `json:"scale"`
	FinalizeDelay string           `json:"finalize_delay"`
	Archive       string           `json:"archive"`
	Corpus        corpusInfo       `json:"corpus"`
	Rounds        int              `json:"rounds"`
	Results       []*stagingResult `json:"results"`
	GoVersion     string           `json:"go_version"`
	StartedAt     time.Time        `json:"started_at"`
	WallSeconds   float64          `json:"wall_seconds"`
	LoadBefore    string           `json:"load_before"`
	LoadAfter     string           `json:"load_after"`
}

// stagingResult is one target: one store on one database.
type stagingResult struct {
	Database string `json:"database"`
	// Store is "woodpecker" (its database store) or "addon" (STAGING=database).
	Store               string       `json:"store"`
	Round               int          `json:"round"`
	Paced               pacedResult  `json:"paced"`
	PacedAppendsPerSec  float64      `json:"paced_appends_per_second"`
	Burst               burstResult  `json:"burst"`
	Stream              streamResult `json:"stream"`
	StreamAppendsPerSec float64      `json:"stream_appends_per_second"`
	DrainSeconds        float64      `json:"final_drain_seconds"`
	Rows                rowsResult   `json:"log_entries"`
	Verify              verifyResult `json:"verify"`
	SpoolDirCreated     bool         `json:"spool_dir_created,omitempty"`
	JournalMode         string       `json:"sqlite_journal_mode,omitempty"`
	// SettleSeconds: how long the run waited for the machine to go idle first.
	SettleSeconds float64 `json:"settle_seconds"`
}

func (r *stagingResult) label() string { return r.Database + "/" + r.Store }

// burstResult: what archiving (addon) or purging (database store) big steps does to
// concurrent appends.
type burstResult struct {
	Event         string  `json:"event"`
	Rows          int64   `json:"rows"`
	ReadSeconds   float64 `json:"finish_to_first_delete_seconds"`
	DeleteSeconds float64 `json:"delete_seconds"`
	RowsPerSec    float64 `json:"delete_rows_per_second"`
	// Appends by when they ran: before the big steps finished, between StepFinished and
	// the first row deleted (archive read and upload), while rows were being deleted (an
	// append overlapping that window), after the last row was gone.
	Before     latencyStats `json:"appends_before"`
	Archiving  latencyStats `json:"appends_while_archiving"`
	Deleting   latencyStats `json:"appends_while_deleting"`
	After      latencyStats `json:"appends_after"`
	Errors     int          `json:"errors"`
	FirstError string       `json:"first_error,omitempty"`
}

type rowSample struct {
	At    float64 `json:"t"`
	Phase string  `json:"phase"`
	Rows  int64   `json:"rows"`
	// Live is the number of acknowledged lines in steps that have not finished yet.
	Live int64 `json:"running_step_lines"`
}

// rowsResult is the log_entries row count over the run.
type rowsResult struct {
	Start          int64 `json:"start"`
	Max            int64 `json:"max"`
	MaxPhase       string
	EndOfStreaming int64 `json:"end_of_streaming"`
	AfterArchive   int64 `json:"after_final_archive"`
	// MaxBeyondLive is the largest excess of rows over the lines of running steps: rows of
	// finished steps not yet archived (plus what a sample's timing skews).
	MaxBeyondLive int64            `json:"max_rows_beyond_running_steps"`
	MaxLive       int64            `json:"max_running_step_lines"`
	PhaseMax      map[string]int64 `json:"max_per_phase"`
	// PhaseBeyond is MaxBeyondLive per phase.
	PhaseBeyond map[string]int64 `json:"max_beyond_running_per_phase"`
	Samples     []rowSample      `json:"samples"`
}

type verifyResult struct {
	Steps   int    `json:"steps"`
	Lines   int64  `json:"acked_lines"`
	Missing int64  `json:"missing"`
	Wrong   int64  `json:"wrong"`
	Extra   int64  `json:"extra"`
	Errors  int    `json:"find_errors"`
	First   string `json:"first_problem,omitempty"`
}

// ok: every acknowledged line was read back, right, once, in order.
func (v verifyResult) ok() bool { return v.Missing == 0 && v.Wrong == 0 && v.Errors == 0 }

// trackedStep is a step whose acknowledged lines are checked at the end.
type trackedStep struct {
	ID    int64
	Acked [][2]int // [from, to) line ranges of acknowledged batches
	// Purged: deleted through LogDelete; nothing may be read back.
	Purged bool
	line   func(int) agentLine
}

// runState is shared by the workload and the row sampler of one target.
type runState struct {
	live  atomic.Int64
	phase atomic.Value // string
	mu    sync.Mutex
	steps []*trackedStep
}

func (s *runState) track(ts *trackedStep) {
	s.mu.Lock()
	s.steps = append(s.steps, ts)
	s.mu.Unlock()
}

func (s *runState) setPhase(p string) { s.phase.Store(p) }

// runStaging runs the staging benchmark and writes its JSON to out.
func runStaging(cfg stagingConfig, c *corpus, files []string, out string) (*stagingRun, error) {
	start := time.Now()
	run := &stagingRun{
		Scale: cfg.Scale, FinalizeDelay: cfg.FinalizeDelay, Archive: "local directory",
		Corpus:    corpusInfo{Files: files, Lines: len(c.lines), Bytes: c.bytes},
		GoVersion: runtime.Version(), StartedAt: start.UTC(), LoadBefore: loadAvg(),
	}
	if cfg.S3.Endpoint != "" {
		run.Archive = "S3 (SeaweedFS on 127.0.0.1, through the counting proxy)"
	}
	plan := streamingPlan(c, cfg.Scale.StreamSteps, 1001)
	run.Rounds = max(cfg.Rounds, 1)
	for _, driver := range cfg.Drivers {
		for round := 1; round <= run.Rounds; round++ {
			// Alternating which store goes first cancels what drifts over a run (the
			// database server's caches, background purge, the machine's load).
			stores := slices.Clone(cfg.Stores)
			if round%2 == 0 {
				slices.Reverse(stores)
			}
			for _, store := range stores {
				if run.Rounds > 1 {
					log.Printf("%s/%s: round %d of %d", driver, store, round, run.Rounds)
				}
				settled := waitForIdleCPU(cpuIdleTarget, cfg.SettleWait)
				r, err := stagingTargetRun(cfg, driver, store, round, c, plan)
				if err != nil {
					return run, fmt.Errorf("%s/%s: %w", driver, store, err)
				}
				r.Round = round
				r.SettleSeconds = settled.Seconds()
				run.Results = append(run.Results, r)
			}
		}
	}
	run.WallSeconds = time.Since(start).Seconds()
	run.LoadAfter = loadAvg()
	if out != "" {
		raw, err := json.MarshalIndent(run, "", "  ")
		if err != nil {
			return run, err
		}
		if err := os.WriteFile(out, raw, 0o644); err != nil {
			return run, err
		}
	}
	return run, nil
}

// Before each target the machine should be idle: the database servers go on working after
// a run (InnoDB purges the addon's deleted rows and drops the last database, PostgreSQL
// vacuums and checkpoints, the page cache flushes SQLite's file): the addon's paced p99 on
// MariaDB was 7.0-9.1 ms in paced phases run alone and 13.7-14.0 ms where one followed the
// previous target's saturated phase at once (2026-12-03).
const (
	cpuIdleTarget = 0.90
	// settleWait is the benchmark's SettleWait.
	settleWait = 60 * time.Second
)

// waitForIdleCPU waits until the CPUs were idle for at least target of one second (from
// /proc/stat), at most max; returns how long it waited.
func waitForIdleCPU(target float64, max time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < max {
		before, ok1 := cpuTimes()
		time.Sleep(time.Second)
		after, ok2 := cpuTimes()
		if !ok1 || !ok2 {
			break
		}
		if total := after[0] - before[0]; total > 0 && float64(after[1]-before[1])/float64(total) >= target {
			break
		}
	}
	return time.Since(start)
}

// cpuTimes: all CPUs' jiffies in total and idle (idle + iowait), from /proc/stat.
func cpuTimes() ([2]uint64, bool) {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}, false
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] != "cpu" {
		return [2]uint64{}, false
	}
	var t [2]uint64
	for i, f := range fields[1:] {
		var v uint64
		if _, err := fmt.Sscan(f, &v); err != nil {
			return [2]uint64{}, false
		}
		t[0] += v
		if i == 3 || i == 4 { // idle, iowait
			t[1] += v
		}
	}
	return t, true
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(raw))
	return strings.Join(f[:min(3, len(f))], " ")
}

// stagingTargetRun runs every phase against one store on a fresh database of driver.
func stagingTargetRun(cfg stagingConfig, driver, store string, round int, c *corpus, plan []stepPlan) (*stagingResult, error) {
	name := fmt.Sprintf("%s/%s", driver, store)
	// A directory per round: the addon's local archive of an earlier round holds objects of
	// the same step ids, which LogFind and the archive runs would merge.
	dir := filepath.Join(cfg.Work, fmt.Sprintf("%s-%s-%d", driver, store, round))
	fresh, err := wpstores.CreateDatabase(driver, cfg.Admin[driver], filepath.Join(dir, "db"),
		fmt.Sprintf("bench_staging_%s_%d", store, time.Now().UnixNano()))
	if err != nil {
		return nil, err
	}
	defer fresh.Drop()
	plain, err := fresh.Open()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", driver, err)
	}
	defer plain.Close()
	if err := wpstores.ApplySchema(plain, wpstores.SchemaFile(cfg.SchemaDir, driver)); err != nil {
		return nil, err
	}
	if driver == "sqlite3" && cfg.SQLiteWAL {
		// Persistent in the file: both stores open it in WAL mode from then on.
		var mode string
		if err := plain.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode); err != nil || mode != "wal" {
			return nil, fmt.Errorf("switching the SQLite file to WAL: mode %q, %v", mode, err)
		}
	}

	r := &stagingResult{Database: driver, Store: store}
	var in *instance
	if store == "woodpecker" {
		st, err := wpstores.OpenDB(driver, fresh.Datasource)
		if err != nil {
			return nil, err
		}
		defer st.Close()
		in = &instance{t: builtin{st}, closeFn: func() {}}
	} else {
		kind := "addon-local"
		env := []string{
			"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=" + cfg.FinalizeDelay,
			"WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT=1h",
			"WOODPECKER_LOG_STORE_S3_STAGING=database",
			"WOODPECKER_DATABASE_DRIVER=" + driver,
			"WOODPECKER_DATABASE_DATASOURCE=" + fresh.Datasource,
		}
		if cfg.S3.Endpoint != "" {
			kind = "addon-s3"
			env = append(env, fmt.Sprintf("WOODPECKER_LOG_STORE_S3_BUCKET_FOLDER=bench-staging/%d/%s", time.Now().UnixNano(), driver))
		}
		if in, err = open(kind, dir, cfg.Bin, cfg.S3, append(env, cfg.AddonEnv...)); err != nil {
			return nil, err
		}
		defer in.closeFn()
	}
	isAddon := store == "addon"

	st := &runState{}
	st.setPhase("start")
	count := func(where string) (int64, error) {
		var n int64
		err := plain.QueryRow("SELECT COUNT(*) FROM log_entries" + where).Scan(&n)
		return n, err
	}
	sampler := startRowSampler(count, st)
	defer sampler.stop()
	drain := func(what string) error {
		if !isAddon {
			return nil
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			n, err := count("")
			if err == nil && n == 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: log_entries still holds %d rows (err %v) 5 minutes after the last StepFinished", what, n, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	log.Printf("%s: paced streaming for %d s", name, cfg.Scale.PacedSeconds)
	st.setPhase("paced")
	r.Paced = stagingPaced(in.t, c, st, time.Duration(cfg.Scale.PacedSeconds)*time.Second, 700000)
	r.PacedAppendsPerSec = float64(r.Paced.Calls) / r.Paced.Seconds
	log.Printf("%s: paced %.0f lines/s, LogAppend p50 %.2f ms p99 %.2f ms, %d late, %d failed",
		name, r.Paced.LinesPerSec, r.Paced.P50Ms, r.Paced.P99Ms, r.Paced.Late, r.Paced.Errors)
	st.setPhase("paced drain")
	if err := drain("after the paced phase"); err != nil {
		return nil, err
	}

	log.Printf("%s: burst (%d finished steps of %d lines while 32 steps append)", name, cfg.Scale.BurstSteps, cfg.Scale.BurstLines)
	st.setPhase("burst")
	if r.Burst, err = stagingBurst(in.t, c, st, cfg.Scale, isAddon, count); err != nil {
		return nil, err
	}
	log.Printf("%s: burst: %s of %d rows in %.2f s (%.0f rows/s) after %.2f s; appends p99 before %.2f ms, archiving %.2f ms, deleting %.2f ms, after %.2f ms",
		name, r.Burst.Event, r.Burst.Rows, r.Burst.DeleteSeconds, r.Burst.RowsPerSec, r.Burst.ReadSeconds,
		r.Burst.Before.P99Ms, r.Burst.Archiving.P99Ms, r.Burst.Deleting.P99Ms, r.Burst.After.P99Ms)
	st.setPhase("burst drain")
	if err := drain("after the burst phase"); err != nil {
		return nil, err
	}

	log.Printf("%s: saturated streaming of %d steps", name, len(plan))
	st.setPhase("saturated")
	r.Stream = stream(in.t, c, plan, stagingStreamHooks(c, st))
	r.StreamAppendsPerSec = float64(r.Stream.Calls) / r.Stream.Seconds
	log.Printf("%s: saturated %.0f lines/s, %.1f appends/s, p50 %.1f ms p99 %.1f ms, %d failed",
		name, r.Stream.LinesPerSec, r.StreamAppendsPerSec, r.Stream.P50Ms, r.Stream.P99Ms, r.Stream.Errors)

	st.setPhase("final drain")
	if n, err := count(""); err == nil {
		r.Rows.EndOfStreaming = n
	}
	t0 := time.Now()
	if err := drain("final"); err != nil {
		return nil, err
	}
	r.DrainSeconds = time.Since(t0).Seconds()
	n, err := count("")
	if err != nil {
		return nil, fmt.Errorf("count log_entries: %w", err)
	}
	r.Rows.AfterArchive = n
	sampler.stop()
	sampler.summarize(&r.Rows)

	log.Printf("%s: reading back %d steps", name, len(st.steps))
	r.Verify = verifySteps(in.t, st.steps)
	if in.spool != "" {
		_, err := os.Stat(in.spool)
		r.SpoolDirCreated = err == nil
	}
	if driver == "sqlite3" {
		_ = plain.QueryRow("PRAGMA journal_mode").Scan(&r.JournalMode)
	}
	log.Printf("%s: log_entries rows: start %d, max %d (%s), end of streaming %d, after the final archive %d; max rows beyond running steps %d; verify %+v",
		name, r.Rows.Start, r.Rows.Max, r.Rows.MaxPhase, r.Rows.EndOfStreaming, r.Rows.AfterArchive, r.Rows.MaxBeyondLive, r.Verify)
	return r, nil
}

// rowSampler counts log_entries rows every rowSampleEvery.
type rowSampler struct {
	st      *runState
	samples []rowSample
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func startRowSampler(count func(string) (int64, error), st *runState) *rowSampler {
	s := &rowSampler{st: st, quit: make(chan struct{}), done: make(chan struct{})}
	start := time.Now()
	take := func() {
		live := st.live.Load()
		phase, _ := st.phase.Load().(string)
		n, err := count("")
		if err != nil {
			return // e.g. SQLite busy: a missing sample, not a failure
		}
		s.samples = append(s.samples, rowSample{At: time.Since(start).Seconds(), Phase: phase, Rows: n, Live: live})
	}
	take()
	go func() {
		defer close(s.done)
		tick := time.NewTicker(rowSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.quit:
				take()
				return
			case <-tick.C:
				take()
			}
		}
	}()
	return s
}

func (s *rowSampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

func (s *rowSampler) summarize(r *rowsResult) {
	r.Samples = s.samples
	r.PhaseMax = map[string]int64{}
	r.PhaseBeyond = map[string]int64{}
	if len(s.samples) > 0 {
		r.Start = s.samples[0].Rows
	}
	for _, x := range s.samples {
		if x.Rows > r.Max {
			r.Max, r.MaxPhase = x.Rows, x.Phase
		}
		r.PhaseMax[x.Phase] = max(r.PhaseMax[x.Phase], x.Rows)
		r.MaxLive = max(r.MaxLive, x.Live)
		r.MaxBeyondLive = max(r.MaxBeyondLive, x.Rows-x.Live)
		r.PhaseBeyond[x.Phase] = max(r.PhaseBeyond[x.Phase], x.Rows-x.Live)
	}
}

// stagingPaced runs the paced workload for d with step ids after firstID.
func stagingPaced(t target, c *corpus, st *runState, d time.Duration, firstID int64) pacedResult {
	var (
		p      pacedRun
		nextID = firstID
	)
	return p.run(d, stagingPeriod, func(deadline time.Time, mine *[]time.Duration) {
		p.mu.Lock()
		nextID++
		p.res.Steps++
		ts := &trackedStep{ID: nextID}
		p.mu.Unlock()
		id := ts.ID
		ts.line = func(l int) agentLine { return pacedLine(c, id, l) }
		st.track(ts)
		step := wpStep(ts.ID, "running")
		var acked int64
		tick := time.Now()
		for from := 0; from < stagingStepLines && time.Now().Before(deadline); from += stagingBatch {
			to := min(stagingStepLines, from+stagingBatch)
			batch := lineBatch(ts.line, from, to)
			t0 := time.Now()
			err := t.Append(step, batch)
			*mine = append(*mine, time.Since(t0))
			if err == nil {
				ts.Acked = append(ts.Acked, [2]int{from, to})
				acked += int64(len(batch))
				st.live.Add(int64(len(batch)))
			}
			p.appended(len(batch), err)
			if nextTick(&tick, stagingPeriod) {
				p.late()
			}
		}
		step.State = "success"
		st.live.Add(-acked)
		t.Finished(step)
	})
}

// timedAppend is one LogAppend of the burst phase.
type timedAppend struct {
	start time.Time
	d     time.Duration
}

// stagingBurst: big steps are filled, then 32 running steps append at the paced rate; after
// sc.BaselineSeconds the big steps finish (addon: StepFinished, so they are archived and their
// rows deleted in paced batches) or are purged (database store: LogDelete, one DELETE per
// step, as Woodpecker's log purge does). Appends are grouped by when they ran.
func stagingBurst(t target, c *corpus, st *runState, sc stagingScale, isAddon bool, count func(string) (int64, error)) (burstResult, error) {
	res := burstResult{Event: "StepFinished: archive, then paced deletes"}
	if !isAddon {
		res.Event = "LogDelete (Woodpecker's purge: one DELETE per step)"
	}
	var ids []string
	var big []stepPlan
	for i := range sc.BurstSteps {
		p := stepPlan{ID: int64(800001 + i), Offset: (i * 7919) % len(c.lines), Lines: sc.BurstLines}
		big = append(big, p)
		ids = append(ids, fmt.Sprint(p.ID))
		ts := &trackedStep{ID: p.ID, Purged: !isAddon, line: planLine(c, p)}
		step := wpStep(p.ID, "running")
		if err := c.batches(p, func(b []agentLine) error {
			if err := t.Append(step, b); err != nil {
				return err
			}
			ts.Acked = append(ts.Acked, [2]int{b[0].Line, b[len(b)-1].Line + 1})
			st.live.Add(int64(len(b)))
			return nil
		}); err != nil {
			return res, fmt.Errorf("filling step %d: %w", p.ID, err)
		}
		st.track(ts)
		res.Rows += int64(p.Lines)
	}
	where := " WHERE step_id IN (" + strings.Join(ids, ",") + ")"
	if n, err := count(where); err != nil || n != res.Rows {
		return res, fmt.Errorf("the big steps hold %d rows (err %v), want %d", n, err, res.Rows)
	}

	var (
		mu    sync.Mutex
		all   []timedAppend
		first error
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(stagingPeriod * time.Duration(w) / workers)
			id := int64(810001 + w)
			ts := &trackedStep{ID: id, line: func(l int) agentLine { return pacedLine(c, id, l) }}
			st.track(ts)
			step := wpStep(id, "running")
			var mine []timedAppend
			var acked int64
			tick := time.Now()
			for from := 0; ; from += stagingBatch {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					step.State = "success"
					st.live.Add(-acked)
					t.Finished(step)
					return
				default:
				}
				batch := lineBatch(ts.line, from, from+stagingBatch)
				t0 := time.Now()
				err := t.Append(step, batch)
				mine = append(mine, timedAppend{t0, time.Since(t0)})
				if err == nil {
					ts.Acked = append(ts.Acked, [2]int{from, from + stagingBatch})
					acked += stagingBatch
					st.live.Add(stagingBatch)
				} else {
					mu.Lock()
					res.Errors++
					first = cmp(first, err)
					mu.Unlock()
				}
				nextTick(&tick, stagingPeriod)
			}
		}()
	}
	time.Sleep(time.Duration(sc.BaselineSeconds) * time.Second)
	finish := time.Now()
	var purged chan error
	if isAddon {
		for _, p := range big {
			step := wpStep(p.ID, "success")
			st.live.Add(-int64(p.Lines))
			t.Finished(step)
		}
	} else {
		purged = make(chan error, 1)
		go func() {
			var errs error
			for _, p := range big {
				if err := t.Delete(wpStep(p.ID, "success")); err != nil && errs == nil {
					errs = err
				}
				st.live.Add(-int64(p.Lines))
			}
			purged <- errs
		}()
	}
	var delStart, delEnd time.Time
	if !isAddon {
		delStart = finish
	}
	deadline := finish.Add(3 * time.Minute)
	var pollErr error
	for {
		n, err := count(where)
		now := time.Now()
		if err == nil {
			if n < res.Rows && delStart.IsZero() {
				delStart = now
			}
			if n == 0 {
				delEnd = now
				break
			}
		}
		if now.After(deadline) {
			pollErr = fmt.Errorf("the finished big steps still hold %d rows (err %v) 3 minutes later", n, err)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if purged != nil {
		if err := <-purged; err != nil && pollErr == nil {
			pollErr = fmt.Errorf("LogDelete: %w", err)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if pollErr != nil {
		return res, pollErr
	}
	if first != nil {
		res.FirstError = first.Error()
	}
	res.ReadSeconds = delStart.Sub(finish).Seconds()
	res.DeleteSeconds = delEnd.Sub(delStart).Seconds()
	if res.DeleteSeconds > 0 {
		res.RowsPerSec = float64(res.Rows) / res.DeleteSeconds
	}
	var before, archiving, deleting, after []time.Duration
	for _, a := range all {
		end := a.start.Add(a.d)
		switch {
		case !end.After(finish):
			before = append(before, a.d)
		case a.start.Before(delEnd) && end.After(delStart):
			deleting = append(deleting, a.d)
		case a.start.Before(delStart):
			archiving = append(archiving, a.d)
		default:
			after = append(after, a.d)
		}
	}
	res.Before, res.Archiving, res.Deleting, res.After = stats(before), stats(archiving), stats(deleting), stats(after)
	return res, nil
}

// planLine is line l of a step of a streaming plan, as corpus.batches sends it.
func planLine(c *corpus, p stepPlan) func(int) agentLine {
	return func(l int) agentLine {
		return agentLine{Line: l, Time: int64(l / 2000), Data: c.lines[(p.Offset+l)%len(c.lines)]}
	}
}

// stagingStreamHooks tracks the saturated phase's steps and their acknowledged lines.
func stagingStreamHooks(c *corpus, st *runState) *streamHooks {
	var mu sync.Mutex
	byID := map[int64]*trackedStep{}
	acked := map[int64]int64{}
	get := func(p stepPlan) *trackedStep {
		mu.Lock()
		defer mu.Unlock()
		ts := byID[p.ID]
		if ts == nil {
			ts = &trackedStep{ID: p.ID, line: planLine(c, p)}
			byID[p.ID] = ts
			st.track(ts)
		}
		return ts
	}
	return &streamHooks{
		acked: func(p stepPlan, b []agentLine, err error) {
			ts := get(p)
			if err != nil || len(b) == 0 {
				return
			}
			ts.Acked = append(ts.Acked, [2]int{b[0].Line, b[len(b)-1].Line + 1})
			st.live.Add(int64(len(b)))
			mu.Lock()
			acked[p.ID] += int64(len(b))
			mu.Unlock()
		},
		finished: func(p stepPlan) {
			get(p)
			mu.Lock()
			n := acked[p.ID]
			mu.Unlock()
			st.live.Add(-n)
		},
	}
}

// verifySteps reads every tracked step back and compares it with the acknowledged lines:
// each must come back once, in line order, with its data, time and type.
func verifySteps(t target, steps []*trackedStep) verifyResult {
	var v verifyResult
	problem := func(format string, args ...any) {
		if v.First == "" {
			v.First = fmt.Sprintf(format, args...)
		}
	}
	sorted := append([]*trackedStep(nil), steps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for _, ts := range sorted {
		v.Steps++
		want := map[int]bool{}
		if !ts.Purged {
			for _, r := range ts.Acked {
				for l := r[0]; l < r[1]; l++ {
					want[l] = true
				}
			}
		}
		v.Lines += int64(len(want))
		got, err := t.Entries(wpStep(ts.ID, "success"))
		if err != nil {
			v.Errors++
			problem("LogFind of step %d: %v", ts.ID, err)
			continue
		}
		seen := map[int]bool{}
		last := -1
		for _, e := range got {
			if e.Line <= last {
				v.Wrong++
				problem("step %d: line %d after line %d", ts.ID, e.Line, last)
				continue
			}
			last = e.Line
			if !want[e.Line] {
				v.Extra++
				continue
			}
			seen[e.Line] = true
			w := ts.line(e.Line)
			if !bytes.Equal(e.Data, w.Data) || e.Time != w.Time || e.Type != w.Type {
				v.Wrong++
				problem("step %d line %d: got %q (time %d, type %d), want %q (time %d, type %d)",
					ts.ID, e.Line, e.Data, e.Time, e.Type, w.Data, w.Time, w.Type)
			}
		}
		for l := range want {
			if !seen[l] {
				v.Missing++
				problem("step %d: acknowledged line %d not read back", ts.ID, l)
			}
		}
	}
	return v
}

// stagingTable is the comparison as a Markdown table: per database, the database store,
// the addon, and the addon's ratio (addon / store: below 1 is faster for latency, above 1
// is more for throughput). With several rounds, figures are medians over the rounds, and
// the paced latencies of each round follow; failures and acknowledged lines are summed,
// row counts are the largest of any round.
func stagingTable(run *stagingRun) string {
	var b strings.Builder
	byKey := map[string][]*stagingResult{}
	var dbs []string
	for _, r := range run.Results {
		if _, seen := byKey[r.Database+"/woodpecker"]; !seen && r.Store == "woodpecker" {
			dbs = append(dbs, r.Database)
		}
		byKey[r.label()] = append(byKey[r.label()], r)
	}
	rounds := max(run.Rounds, 1)
	if rounds > 1 {
		fmt.Fprintf(&b, "Medians over %d rounds per database (the stores' order alternating by round).\n\n", rounds)
	}
	ms := func(v float64) string {
		if v >= 100 {
			return fmt.Sprintf("%.0f", v)
		}
		return fmt.Sprintf("%.2f", v)
	}
	ratio := func(a, s float64) string {
		if s == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f×", a/s)
	}
	// Over rounds: the median, the sum, the largest.
	median := func(rs []*stagingResult, get func(*stagingResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = get(r)
		}
		sort.Float64s(vs)
		if n := len(vs); n%2 == 1 {
			return vs[n/2]
		} else {
			return (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	sum := func(rs []*stagingResult, get func(*stagingResult) int64) int64 {
		var t int64
		for _, r := range rs {
			t += get(r)
		}
		return t
	}
	largest := func(rs []*stagingResult, get func(*stagingResult) int64) int64 {
		var m int64
		for _, r := range rs {
			m = max(m, get(r))
		}
		return m
	}
	// byRound: one figure per round, "a / b / c"; ratios of the rounds' pairs the same way.
	byRound := func(rs []*stagingResult, get func(*stagingResult) float64, f func(float64) string) string {
		parts := make([]string, len(rs))
		for i, r := range rs {
			parts[i] = f(get(r))
		}
		return strings.Join(parts, " / ")
	}
	type row struct {
		name string
		get  func(*stagingResult) float64
		fmt  func(float64) string
	}
	num := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	p50 := func(r *stagingResult) float64 { return r.Paced.P50Ms }
	p99 := func(r *stagingResult) float64 { return r.Paced.P99Ms }
	rows := []row{
		{"paced LogAppend p50, ms", p50, ms},
		{"paced LogAppend p99, ms", p99, ms},
		{"paced LogAppend max, ms", func(r *stagingResult) float64 { return r.Paced.MaxMs }, ms},
		{"paced lines/s (offered 16,000)", func(r *stagingResult) float64 { return r.Paced.LinesPerSec }, num},
		{"paced appends/s (offered 160)", func(r *stagingResult) float64 { return r.PacedAppendsPerSec }, num},
		{"paced batches late / failed", nil, nil},
		{"saturated lines/s", func(r *stagingResult) float64 { return r.Stream.LinesPerSec }, num},
		{"saturated appends/s", func(r *stagingResult) float64 { return r.StreamAppendsPerSec }, func(v float64) string { return fmt.Sprintf("%.1f", v) }},
		{"saturated LogAppend p50, ms", func(r *stagingResult) float64 { return r.Stream.P50Ms }, ms},
		{"saturated LogAppend p99, ms", func(r *stagingResult) float64 { return r.Stream.P99Ms }, ms},
		{"saturated LogAppend calls (1 MiB batches)", func(r *stagingResult) float64 { return float64(r.Stream.Calls) }, num},
		{"burst: appends p99 before / while archiving / while deleting / after, ms", nil, nil},
		{"burst: rows deleted, s (rows/s)", nil, nil},
		{"log_entries rows: start / max / end of streaming / after final archive", nil, nil},
		{"log_entries rows beyond running steps' lines, max: paced / whole run", nil, nil},
		{"acked lines read back (missing, wrong)", nil, nil},
	}
	if rounds > 1 {
		rows = append(rows,
			row{"paced LogAppend p50 by round, ms", nil, nil},
			row{"paced LogAppend p99 by round, ms", nil, nil})
	}
	fmt.Fprintf(&b, "| measure |")
	for _, db := range dbs {
		fmt.Fprintf(&b, " %s: database store | %s: addon | ratio |", db, db)
	}
	b.WriteString("\n|---|")
	for range dbs {
		b.WriteString("---|---|---|")
	}
	b.WriteString("\n")
	for _, rw := range rows {
		fmt.Fprintf(&b, "| %s |", rw.name)
		for _, db := range dbs {
			s, a := byKey[db+"/woodpecker"], byKey[db+"/addon"]
			cell := func(rs []*stagingResult) string {
				if len(rs) == 0 {
					return "–"
				}
				med := func(get func(*stagingResult) float64) string { return ms(median(rs, get)) }
				switch rw.name {
				case "paced batches late / failed":
					return fmt.Sprintf("%d / %d of %d",
						sum(rs, func(r *stagingResult) int64 { return int64(r.Paced.Late) }),
						sum(rs, func(r *stagingResult) int64 { return int64(r.Paced.Errors) }),
						sum(rs, func(r *stagingResult) int64 { return int64(r.Paced.Calls) }))
				case "burst: appends p99 before / while archiving / while deleting / after, ms":
					return fmt.Sprintf("%s / %s / %s / %s",
						med(func(r *stagingResult) float64 { return r.Burst.Before.P99Ms }),
						med(func(r *stagingResult) float64 { return r.Burst.Archiving.P99Ms }),
						med(func(r *stagingResult) float64 { return r.Burst.Deleting.P99Ms }),
						med(func(r *stagingResult) float64 { return r.Burst.After.P99Ms }))
				case "burst: rows deleted, s (rows/s)":
					return fmt.Sprintf("%.0f in %.2f s (%.0f/s)",
						median(rs, func(r *stagingResult) float64 { return float64(r.Burst.Rows) }),
						median(rs, func(r *stagingResult) float64 { return r.Burst.DeleteSeconds }),
						median(rs, func(r *stagingResult) float64 { return r.Burst.RowsPerSec }))
				case "log_entries rows: start / max / end of streaming / after final archive":
					return fmt.Sprintf("%d / %d / %d / %d",
						largest(rs, func(r *stagingResult) int64 { return r.Rows.Start }),
						largest(rs, func(r *stagingResult) int64 { return r.Rows.Max }),
						largest(rs, func(r *stagingResult) int64 { return r.Rows.EndOfStreaming }),
						largest(rs, func(r *stagingResult) int64 { return r.Rows.AfterArchive }))
				case "log_entries rows beyond running steps' lines, max: paced / whole run":
					return fmt.Sprintf("%d / %d",
						largest(rs, func(r *stagingResult) int64 { return r.Rows.PhaseBeyond["paced"] }),
						largest(rs, func(r *stagingResult) int64 { return r.Rows.MaxBeyondLive }))
				case "acked lines read back (missing, wrong)":
					missing := sum(rs, func(r *stagingResult) int64 { return r.Verify.Missing })
					return fmt.Sprintf("%d (%d, %d)",
						sum(rs, func(r *stagingResult) int64 { return r.Verify.Lines })-missing, missing,
						sum(rs, func(r *stagingResult) int64 { return r.Verify.Wrong }))
				case "paced LogAppend p50 by round, ms":
					return byRound(rs, p50, ms)
				case "paced LogAppend p99 by round, ms":
					return byRound(rs, p99, ms)
				}
				return rw.fmt(median(rs, rw.get))
			}
			rat := "–"
			switch {
			case len(s) == 0 || len(a) == 0:
			case rw.get != nil:
				rat = ratio(median(a, rw.get), median(s, rw.get))
			case len(s) == len(a) && strings.HasSuffix(rw.name, "by round, ms"):
				get := p50
				if strings.Contains(rw.name, "p99") {
					get = p99
				}
				parts := make([]string, len(a))
				for i := range a {
					parts[i] = ratio(get(a[i]), get(s[i]))
				}
				rat = strings.Join(parts, " / ")
			}
			fmt.Fprintf(&b, " %s | %s | %s |", cell(s), cell(a), rat)
		}
		b.WriteString("\n")
	}
	return b.String()
}
