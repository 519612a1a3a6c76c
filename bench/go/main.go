// Command logbench drives, in one run and with one workload, Woodpecker's built-in file
// store, its database store on SQLite, and the woodpecker-s3-logs addon loaded through
// Woodpecker's addon client (go-plugin net/rpc), once archiving to a local directory and
// once to an S3 server through a counting proxy. It writes every figure as JSON for
// bench/report.py, which prints the table, checks the targets and writes BENCHMARKS.md.
//
//	logbench -bin target/release/woodpecker-s3-logs -corpus bench/corpus -out results.json \
//	         [-quick] [-s3-endpoint URL -s3-bucket B -s3-access-key K -s3-secret-key S]
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/woodpecker-s3-logs/bench/wpstores"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// workers is the number of steps streaming at once (the "32 concurrent steps").
const workers = 32

// sizes of the workload, full and --quick.
type scale struct {
	StreamSteps   int   `json:"stream_steps"`
	PacedSeconds  int   `json:"paced_seconds"`
	FindSizes     []int `json:"find_lines"`
	RunningLines  int   `json:"running_find_lines"`
	ManyStepLines int   `json:"many_steps_total_lines"`
	ManySteps     []int `json:"many_steps"`
}

var (
	fullScale  = scale{StreamSteps: 64, PacedSeconds: 30, FindSizes: []int{1000, 100000, 1000000}, RunningLines: 100000, ManyStepLines: 1000000, ManySteps: []int{32, 1000}}
	quickScale = scale{StreamSteps: 16, PacedSeconds: 8, FindSizes: []int{1000, 100000}, RunningLines: 10000, ManyStepLines: 200000, ManySteps: []int{32, 1000}}
)

type s3Config struct {
	Endpoint, Bucket, AccessKey, SecretKey string
}

func main() {
	bin := flag.String("bin", "../../target/release/woodpecker-s3-logs", "addon binary")
	corpusDir := flag.String("corpus", "../corpus", "corpus directory (bench/corpus.sh)")
	out := flag.String("out", "results.json", "where to write the results")
	work := flag.String("work", "", "scratch directory (default: a new temporary directory, removed at the end)")
	quick := flag.Bool("quick", false, "smaller workload (under 3 minutes)")
	extraEnv := flag.String("addon-env", "", "extra KEY=VALUE settings for the addon, comma-separated (for experiments)")
	only := flag.String("stores", "", "comma-separated subset of file,sqlite,addon-local,addon-s3 (for profiling; the report needs all)")
	var s3 s3Config
	flag.StringVar(&s3.Endpoint, "s3-endpoint", os.Getenv("ARCHIVE_TEST_SEAWEEDFS_ENDPOINT"), "S3 endpoint (empty: skip the S3 run)")
	flag.StringVar(&s3.Bucket, "s3-bucket", os.Getenv("ARCHIVE_TEST_SEAWEEDFS_BUCKET"), "S3 bucket")
	flag.StringVar(&s3.AccessKey, "s3-access-key", os.Getenv("ARCHIVE_TEST_SEAWEEDFS_ACCESS_KEY"), "S3 access key")
	flag.StringVar(&s3.SecretKey, "s3-secret-key", os.Getenv("ARCHIVE_TEST_SEAWEEDFS_SECRET_KEY"), "S3 secret key")
	staging := flag.Bool("staging", false, "run the database-staging benchmark (issue 11) instead: Woodpecker's database store vs the addon with STAGING=database, per database")
	stagingDBs := flag.String("staging-dbs", "sqlite3,postgres,mysql", "-staging: databases (postgres and mysql need -postgres / -mysql)")
	pgAdmin := flag.String("postgres", os.Getenv("WPDB_TEST_POSTGRES_DATASOURCE"), "-staging: PostgreSQL data source of a user who may create databases (scripts/db/start.sh)")
	myAdmin := flag.String("mysql", os.Getenv("WPDB_TEST_MYSQL_DATASOURCE"), "-staging: MySQL/MariaDB data source of a user who may create databases (scripts/db/start.sh)")
	schemas := flag.String("schemas", "../../crates/woodpecker-db/tests/fixtures", "-staging: directory of Woodpecker's table definitions (schema-<driver>.sql)")
	finalize := flag.String("finalize-delay", "1s", "-staging: the addon's FINALIZE_DELAY")
	stagingStores := flag.String("staging-stores", "woodpecker,addon", "-staging: stores to run (for experiments; the table needs both)")
	sqliteWAL := flag.Bool("sqlite-wal", false, "-staging: switch each SQLite file to WAL mode first, for both stores (Woodpecker's default is the rollback journal)")
	stagingArchive := flag.String("staging-archive", "local", "-staging: the addon's archive, local or s3 (needs -s3-*)")
	stagingRounds := flag.Int("staging-rounds", 1, "-staging: runs of each store per database, the table giving medians (p99 varies up to 2x between runs)")
	flag.Parse()
	if *extraEnv != "" {
		addonEnv = append(addonEnv, strings.Split(*extraEnv, ",")...)
	}
	log.SetFlags(log.Ltime)
	log.SetPrefix("logbench: ")

	if *staging {
		cfg := stagingConfig{Bin: *bin, SchemaDir: *schemas, Work: *work, FinalizeDelay: *finalize,
			Admin: map[string]string{"postgres": *pgAdmin, "mysql": *myAdmin}, Stores: strings.Split(*stagingStores, ","), SQLiteWAL: *sqliteWAL, Rounds: *stagingRounds, SettleWait: settleWait}
		if *extraEnv != "" {
			cfg.AddonEnv = strings.Split(*extraEnv, ",")
		}
		cfg.Scale = stagingFull
		if *quick {
			cfg.Scale = stagingQuick
		}
		switch *stagingArchive {
		case "local":
		case "s3":
			if s3.Endpoint == "" {
				log.Fatal("-staging-archive s3 needs -s3-endpoint")
			}
			cfg.S3 = s3
		default:
			log.Fatalf("-staging-archive %q: want local or s3", *stagingArchive)
		}
		for _, d := range strings.Split(*stagingDBs, ",") {
			if (d == "postgres" || d == "mysql") && cfg.Admin[d] == "" {
				log.Printf("no %s data source (-%s or scripts/db/start.sh's exports): skipping %s", d, d, d)
				continue
			}
			cfg.Drivers = append(cfg.Drivers, d)
		}
		if err := stagingMain(cfg, *corpusDir, *out); err != nil {
			log.Fatal(err)
		}
		return
	}

	if err := run(*bin, *corpusDir, *out, *work, *quick, *only, s3); err != nil {
		log.Fatal(err)
	}
}

// stagingMain prepares what runStaging needs, runs it and prints the table.
func stagingMain(cfg stagingConfig, corpusDir, out string) error {
	c, err := loadCorpus(corpusDir)
	if err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.log"))
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	if cfg.Work == "" {
		if cfg.Work, err = os.MkdirTemp("", "logbench-staging-"); err != nil {
			return err
		}
		defer os.RemoveAll(cfg.Work)
	}
	if cfg.Bin, err = filepath.Abs(cfg.Bin); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.Bin); err != nil {
		return fmt.Errorf("addon binary: %w (cargo build --release -p woodpecker-s3-logs)", err)
	}
	log.Printf("corpus: %d lines, %.1f MB; databases %s; finalize delay %s", len(c.lines), float64(c.bytes)/1e6, strings.Join(cfg.Drivers, ", "), cfg.FinalizeDelay)
	run, err := runStaging(cfg, c, files, out)
	if err != nil {
		return err
	}
	fmt.Print(stagingTable(run))
	return nil
}

// results is the JSON document bench/report.py reads.
type results struct {
	Quick       bool           `json:"quick"`
	Scale       scale          `json:"scale"`
	Corpus      corpusInfo     `json:"corpus"`
	Stores      []*storeResult `json:"stores"`
	ManySteps   []manyResult   `json:"many_steps"`
	GoVersion   string         `json:"go_version"`
	StartedAt   time.Time      `json:"started_at"`
	WallSeconds float64        `json:"wall_seconds"`
}

type corpusInfo struct {
	Files []string `json:"files"`
	Lines int      `json:"lines"`
	Bytes int64    `json:"bytes"`
}

func run(bin, corpusDir, out, work string, quick bool, only string, s3 s3Config) error {
	start := time.Now()
	sc := fullScale
	if quick {
		sc = quickScale
	}
	c, err := loadCorpus(corpusDir)
	if err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.log"))
	for i := range files {
		files[i] = filepath.Base(files[i])
	}
	if work == "" {
		if work, err = os.MkdirTemp("", "logbench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("addon binary: %w (cargo build --release -p woodpecker-s3-logs)", err)
	}

	res := &results{
		Quick: quick, Scale: sc, GoVersion: runtime.Version(), StartedAt: start.UTC(),
		Corpus: corpusInfo{Files: files, Lines: len(c.lines), Bytes: c.bytes},
	}
	plan := streamingPlan(c, sc.StreamSteps, 1001)
	log.Printf("corpus: %d lines, %.1f MB; streaming %d steps with %d workers", len(c.lines), float64(c.bytes)/1e6, len(plan), workers)

	kinds := []string{"file", "sqlite", "addon-local"}
	if s3.Endpoint != "" {
		kinds = append(kinds, "addon-s3")
	} else {
		log.Printf("no S3 endpoint given: skipping the S3 run")
	}
	if only != "" {
		kinds = strings.Split(only, ",")
	}
	for _, kind := range kinds {
		r, err := runStore(kind, filepath.Join(work, kind), bin, c, plan, sc, s3)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		res.Stores = append(res.Stores, r)
	}
	for _, n := range sc.ManySteps {
		m, err := runManySteps(filepath.Join(work, fmt.Sprintf("many-%d", n)), bin, c, n, sc.ManyStepLines)
		if err != nil {
			return fmt.Errorf("%d running steps: %w", n, err)
		}
		res.ManySteps = append(res.ManySteps, m)
	}
	res.WallSeconds = time.Since(start).Seconds()
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(out, raw, 0o644)
}

type storeResult struct {
	Name          string                 `json:"name"`
	Stream        streamResult           `json:"stream"`
	Paced         pacedResult            `json:"paced"`
	ArchiveSecs   float64                `json:"archive_drain_seconds"`
	BytesAtRest   int64                  `json:"bytes_at_rest"`
	SpoolLeft     int64                  `json:"spool_bytes_left"`
	CPUSeconds    float64                `json:"cpu_seconds"`
	CPUPerGB      float64                `json:"cpu_seconds_per_gb"`
	CPUWho        string                 `json:"cpu_measured_on"`
	Find          map[string]*findResult `json:"find"`
	Delete        latencyStats           `json:"delete"`
	RSS           *rssResult             `json:"rss,omitempty"`
	S3            *s3Result              `json:"s3,omitempty"`
	FindAnswerMax int                    `json:"largest_find_answer_bytes,omitempty"`
}

type rssResult struct {
	AfterStreamKiB int64 `json:"peak_after_stream_kib"`
	AfterFindKiB   int64 `json:"peak_after_find_kib"`
}

type s3Result struct {
	Steps            int            `json:"steps"`
	PacedSteps       int            `json:"paced_steps"`
	PacedPerStepMax  int            `json:"paced_requests_per_step_max"`
	PerStepMean      float64        `json:"requests_per_step_mean"`
	PerStepMax       int            `json:"requests_per_step_max"`
	BucketRequests   int            `json:"bucket_level_requests"`
	StreamOps        map[string]int `json:"stream_and_archive_ops"`
	FindAndDeleteOps map[string]int `json:"find_and_delete_ops"`
	Failed           map[string]int `json:"failed_requests"`
}

// instance is one store under test with what is needed to measure it.
type instance struct {
	t         target
	addon     *woodpecker.Addon
	pid       int
	spool     string
	archive   string
	proxy     *s3Counter
	closeFn   func()
	atRest    func() int64
	finalized bool // StepFinished leads to archiving that must be waited for
}

func open(kind, dir, bin string, s3 s3Config, env []string) (*instance, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	switch kind {
	case "file":
		base := filepath.Join(dir, "logs")
		st, err := wpstores.NewFileStore(base)
		if err != nil {
			return nil, err
		}
		return &instance{t: builtin{st}, closeFn: func() {}, atRest: func() int64 { return dirBytes(base) }}, nil
	case "sqlite":
		path := filepath.Join(dir, "woodpecker.sqlite")
		st, err := wpstores.OpenDBStore(path)
		if err != nil {
			return nil, err
		}
		return &instance{t: builtin{st}, closeFn: func() { st.Close() }, atRest: func() int64 { return dirBytes(dir) }}, nil
	}
	in := &instance{spool: filepath.Join(dir, "spool"), archive: filepath.Join(dir, "archive"), finalized: true}
	env = append(env,
		"WOODPECKER_LOG_STORE_S3_SPOOL_DIR="+in.spool,
		"WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR="+in.archive,
		"WOODPECKER_LOG_STORE_S3_LOG_LEVEL=warn",
		"TMPDIR="+dir,
	)
	if kind == "addon-s3" {
		p, err := startS3Counter(s3.Endpoint, s3.Bucket)
		if err != nil {
			return nil, err
		}
		in.proxy = p
		env = append(env,
			"WOODPECKER_LOG_STORE_S3_BUCKET="+s3.Bucket,
			"WOODPECKER_LOG_STORE_S3_ENDPOINT="+p.URL,
			"WOODPECKER_LOG_STORE_S3_PATH_STYLE=true",
			"AWS_ACCESS_KEY_ID="+s3.AccessKey,
			"AWS_SECRET_ACCESS_KEY="+s3.SecretKey,
			"AWS_REGION=us-east-1",
		)
	}
	stderr, err := os.Create(filepath.Join(dir, "addon-stderr.log"))
	if err != nil {
		return nil, err
	}
	a, err := woodpecker.Load(bin, woodpecker.Options{Env: env, Stderr: stderr})
	if err != nil {
		stderr.Close()
		return nil, err
	}
	in.addon = a
	in.t = addonTarget{a.RPC}
	in.pid = a.Client.ReattachConfig().Pid
	in.closeFn = func() {
		a.Client.Kill()
		stderr.Close()
		if in.proxy != nil {
			in.proxy.Close()
		}
	}
	if in.proxy != nil {
		in.atRest = func() int64 { return in.proxy.snapshot().Bytes }
	} else {
		in.atRest = func() int64 { return dirBytes(in.archive) }
	}
	return in, nil
}

// drained waits until the addon has archived every finished step: its spool holds no
// segment file any more (they are removed only after the archive object is verified).
func (in *instance) drained(timeout time.Duration) error {
	if !in.finalized {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for countFiles(filepath.Join(in.spool, "steps"), ".ndjson") > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("spool %s still holds %d segments after %s", in.spool,
				countFiles(filepath.Join(in.spool, "steps"), ".ndjson"), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// addonEnv: archive a finished step 200 ms after StepFinished (the default 5 s only delays
// the benchmark; archiving still overlaps streaming, as the p99 target demands), and never
// archive a silent running step during the run.
var addonEnv = []string{
	"WOODPECKER_LOG_STORE_S3_FINALIZE_DELAY=200ms",
	"WOODPECKER_LOG_STORE_S3_IDLE_TIMEOUT=1h",
}

func runStore(kind, dir, bin string, c *corpus, plan []stepPlan, sc scale, s3 s3Config) (*storeResult, error) {
	log.Printf("%s: streaming", kind)
	in, err := open(kind, dir, bin, s3, append([]string(nil), addonEnv...))
	if err != nil {
		return nil, err
	}
	defer in.closeFn()
	r := &storeResult{Name: kind, Find: map[string]*findResult{}}

	cpu0 := selfCPU()
	r.CPUWho = "server process (in-process store)"
	if in.pid != 0 {
		if cpu0, err = procCPU(in.pid); err != nil {
			return nil, err
		}
		r.CPUWho = "addon process"
	}
	r.Stream = stream(in.t, c, plan, nil)
	// A failed append is a lost batch (Woodpecker only logs it): reported, not fatal, since
	// it is a property of the store under this load (SQLite answers "database is locked").
	if r.Stream.Errors > 0 {
		log.Printf("%s: %d appends failed, first: %s", kind, r.Stream.Errors, r.Stream.FirstError)
	}
	t0 := time.Now()
	if err := in.drained(5 * time.Minute); err != nil {
		return nil, err
	}
	r.ArchiveSecs = time.Since(t0).Seconds()
	cpu1 := selfCPU()
	if in.pid != 0 {
		if cpu1, err = procCPU(in.pid); err != nil {
			return nil, err
		}
	}
	r.CPUSeconds = (cpu1 - cpu0).Seconds()
	r.CPUPerGB = r.CPUSeconds / (float64(r.Stream.Bytes) / 1e9)
	r.BytesAtRest = in.atRest()
	if in.spool != "" {
		r.SpoolLeft = dirBytes(filepath.Join(in.spool, "steps"))
	}
	if in.pid != 0 {
		r.RSS = &rssResult{}
		if r.RSS.AfterStreamKiB, err = procMemKiB(in.pid, "VmHWM"); err != nil {
			return nil, err
		}
	}
	var streamSnap s3Snapshot
	if in.proxy != nil {
		streamSnap = in.proxy.snapshot()
		r.S3 = perStep(streamSnap, plan)
	}
	log.Printf("%s: %.0f lines/s, %.1f MB/s, p99 %.2f ms, archive drain %.2f s, at rest %d bytes",
		kind, r.Stream.LinesPerSec, r.Stream.MBPerSec, r.Stream.P99Ms, r.ArchiveSecs, r.BytesAtRest)

	log.Printf("%s: paced streaming for %d s", kind, sc.PacedSeconds)
	var pacedSteps []*pacedStep
	r.Paced, pacedSteps = paced(in.t, c, time.Duration(sc.PacedSeconds)*time.Second, 700000)
	if r.Paced.Errors > 0 {
		log.Printf("%s: %d paced appends failed, first: %s", kind, r.Paced.Errors, r.Paced.FirstError)
	}
	if err := in.drained(5 * time.Minute); err != nil {
		return nil, err
	}
	if in.proxy != nil {
		snap := in.proxy.snapshot()
		r.S3.PacedSteps = len(pacedSteps)
		for _, ps := range pacedSteps {
			r.S3.PacedPerStepMax = max(r.S3.PacedPerStepMax, snap.PerKey[objectKey(ps.ID)])
		}
		streamSnap = snap
	}
	log.Printf("%s: paced %.0f lines/s, LogAppend p50 %.3f ms, p99 %.3f ms", kind, r.Paced.LinesPerSec, r.Paced.P50Ms, r.Paced.P99Ms)

	if err := finds(in, c, sc, r); err != nil {
		return nil, err
	}
	if in.pid != 0 {
		if r.RSS.AfterFindKiB, err = procMemKiB(in.pid, "VmHWM"); err != nil {
			return nil, err
		}
	}
	log.Printf("%s: deleting", kind)
	var dl []time.Duration
	for _, p := range plan {
		t := time.Now()
		if err := in.t.Delete(wpStep(p.ID, "success")); err != nil {
			return nil, fmt.Errorf("LogDelete of step %d: %w", p.ID, err)
		}
		dl = append(dl, time.Since(t))
	}
	for _, ps := range pacedSteps {
		if err := in.t.Delete(wpStep(ps.ID, "success")); err != nil {
			return nil, fmt.Errorf("LogDelete of step %d: %w", ps.ID, err)
		}
	}
	r.Delete = stats(dl)
	if in.proxy != nil {
		end := in.proxy.snapshot()
		r.S3.FindAndDeleteOps = map[string]int{}
		for k, v := range end.Ops {
			if d := v - streamSnap.Ops[k]; d > 0 {
				r.S3.FindAndDeleteOps[k] = d
			}
		}
		r.S3.Failed = end.Failures
	}
	return r, nil
}

// perStep counts the S3 requests each streamed step's object received.
func perStep(s s3Snapshot, plan []stepPlan) *s3Result {
	r := &s3Result{Steps: len(plan), StreamOps: s.Ops, Failed: s.Failures}
	total := 0
	for _, p := range plan {
		n := s.PerKey[objectKey(p.ID)]
		total += n
		r.PerStepMax = max(r.PerStepMax, n)
	}
	all := 0
	for _, v := range s.Ops {
		all += v
	}
	r.BucketRequests = all - total
	r.PerStepMean = float64(total) / float64(len(plan))
	return r
}

// objectKey is the addon's archive key of a step (crates/engine/FORMAT.md, no folder).
func objectKey(id int64) string {
	return fmt.Sprintf("v1/%03d/%d.ndjson.zst", id%1000, id)
}

type findResult struct {
	Lines int `json:"lines"`
	// Addon peak RSS before the first LogFind of the step (after filling and archiving it)
	// and after the last: what LogFind itself adds to the high-water mark.
	PeakBeforeKiB int64   `json:"peak_rss_before_kib,omitempty"`
	PeakAfterKiB  int64   `json:"peak_rss_after_kib,omitempty"`
	AnswerBytes   int     `json:"answer_bytes,omitempty"`
	Reps          int     `json:"reps"`
	Median        float64 `json:"median_ms"`
	Min           float64 `json:"min_ms"`
}

// finds measures LogFind of finished steps of every size and of a running step.
func finds(in *instance, c *corpus, sc scale, r *storeResult) error {
	id := int64(900001)
	type job struct {
		name    string
		lines   int
		running bool
	}
	var jobs []job
	for _, n := range sc.FindSizes {
		jobs = append(jobs, job{name: label(n), lines: n})
	}
	jobs = append(jobs, job{name: "running " + label(sc.RunningLines), lines: sc.RunningLines, running: true})
	for _, j := range jobs {
		id++
		log.Printf("%s: LogFind of %s lines", r.Name, j.name)
		step := wpStep(id, "running")
		p := stepPlan{ID: id, Offset: int(id) % len(c.lines), Lines: j.lines}
		if err := c.batches(p, func(b []agentLine) error { return in.t.Append(step, b) }); err != nil {
			return fmt.Errorf("filling step %d: %w", id, err)
		}
		if !j.running {
			step.State = "success"
			in.t.Finished(step)
			time.Sleep(250 * time.Millisecond) // past FINALIZE_DELAY: archiving has begun
			if err := in.drained(5 * time.Minute); err != nil {
				return err
			}
		}
		reps := max(3, min(20, 200_000/j.lines))
		var before int64
		if in.pid != 0 {
			var err error
			if before, err = procMemKiB(in.pid, "VmHWM"); err != nil {
				return err
			}
		}
		var ds []time.Duration
		for range reps {
			t := time.Now()
			n, first, last, err := in.t.Find(step)
			ds = append(ds, time.Since(t))
			if err != nil {
				return fmt.Errorf("LogFind of step %d: %w", id, err)
			}
			if n != j.lines || first != 0 || last != j.lines-1 {
				return fmt.Errorf("LogFind of step %d: %d entries, lines %d..%d, want %d entries 0..%d", id, n, first, last, j.lines, j.lines-1)
			}
		}
		s := stats(ds)
		fr := &findResult{Lines: j.lines, Reps: reps, Median: s.P50Ms, Min: s.MinMs, PeakBeforeKiB: before}
		r.Find[j.name] = fr
		if in.addon != nil {
			raw, err := json.Marshal(step)
			if err != nil {
				return err
			}
			if fr.AnswerBytes, err = findRawSize(in.addon.RPC, step, raw); err != nil {
				return err
			}
			r.FindAnswerMax = max(r.FindAnswerMax, fr.AnswerBytes)
			if fr.PeakAfterKiB, err = procMemKiB(in.pid, "VmHWM"); err != nil {
				return err
			}
		}
		if err := in.t.Delete(step); err != nil {
			return fmt.Errorf("LogDelete of step %d: %w", id, err)
		}
	}
	return nil
}

func label(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

type streamResult struct {
	Steps       int     `json:"steps"`
	Lines       int64   `json:"lines"`
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	LinesPerSec float64 `json:"lines_per_second"`
	MBPerSec    float64 `json:"mb_per_second"`
	latencyStats
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
}

type latencyStats struct {
	Calls  int     `json:"calls"`
	MinMs  float64 `json:"min_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func stats(ds []time.Duration) latencyStats {
	if len(ds) == 0 {
		return latencyStats{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	q := func(p float64) float64 {
		i := int(p * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	return latencyStats{Calls: len(ds), MinMs: q(0), P50Ms: q(0.5), P99Ms: q(0.99), P999Ms: q(0.999), MaxMs: q(1)}
}

// streamHooks lets a caller follow the streaming workload: acked is called after every
// LogAppend (err nil: acknowledged), finished before each StepFinished. Calls for one step
// come from one goroutine, those of different steps concurrently.
type streamHooks struct {
	acked    func(p stepPlan, batch []agentLine, err error)
	finished func(p stepPlan)
}

// stream runs the plan with 32 steps at a time, each sending its batches back to back as an
// agent with a fast step does, and StepFinished at its end; it times every LogAppend. hooks
// may be nil.
func stream(t target, c *corpus, plan []stepPlan, hooks *streamHooks) streamResult {
	next := make(chan stepPlan)
	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			var bad int
			var firstBad error
			for p := range next {
				step := wpStep(p.ID, "running")
				_ = c.batches(p, func(b []agentLine) error {
					t0 := time.Now()
					err := t.Append(step, b)
					mine = append(mine, time.Since(t0))
					if err != nil {
						bad++
						firstBad = cmp(firstBad, err)
					}
					if hooks != nil {
						hooks.acked(p, b, err)
					}
					return nil // the server only logs a failed append; the agent goes on
				})
				step.State = "success"
				if hooks != nil {
					hooks.finished(p)
				}
				t.Finished(step)
			}
			mu.Lock()
			all = append(all, mine...)
			errs += bad
			firstErr = cmp(firstErr, firstBad)
			mu.Unlock()
		}()
	}
	for _, p := range plan {
		next <- p
	}
	close(next)
	wg.Wait()
	secs := time.Since(start).Seconds()
	r := streamResult{Steps: len(plan), Seconds: secs, latencyStats: stats(all), Errors: errs}
	for _, p := range plan {
		r.Lines += int64(p.Lines)
		r.Bytes += c.dataBytes(p)
	}
	r.LinesPerSec = float64(r.Lines) / secs
	r.MBPerSec = float64(r.Bytes) / 1e6 / secs
	if firstErr != nil {
		r.FirstError = firstErr.Error()
	}
	return r
}

func cmp(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

type manyResult struct {
	Steps       int     `json:"running_steps"`
	Lines       int     `json:"lines"`
	Bytes       int64   `json:"bytes"`
	PeakRSSKiB  int64   `json:"peak_rss_kib"`
	Seconds     float64 `json:"seconds"`
	SpoolFiles  int     `json:"spool_segments"`
	AppendP99Ms float64 `json:"append_p99_ms"`
}

// runManySteps starts a fresh addon and keeps n steps running at once, each receiving the
// same share of total lines in small agent-like batches, round robin, none finished: the
// peak RSS must not grow with n.
func runManySteps(dir, bin string, c *corpus, n, total int) (manyResult, error) {
	log.Printf("%d running steps: %d lines", n, total)
	in, err := open("addon-local", dir, bin, s3Config{}, append([]string(nil), addonEnv...))
	if err != nil {
		return manyResult{}, err
	}
	defer in.closeFn()
	perStep := total / n
	const batchLines = 50
	rounds := (perStep + batchLines - 1) / batchLines
	res := manyResult{Steps: n, Lines: perStep * n}
	start := time.Now()
	var (
		mu  sync.Mutex
		all []time.Duration
		bad error
	)
	for round := range rounds {
		ids := make(chan int, n)
		for i := range n {
			ids <- i
		}
		close(ids)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for i := range ids {
					id := int64(500001 + i)
					step := wpStep(id, "running")
					from := round * batchLines
					to := min(perStep, from+batchLines)
					batch := make([]agentLine, 0, to-from)
					for l := from; l < to; l++ {
						data := c.lines[(int(id)*131+l)%len(c.lines)]
						batch = append(batch, agentLine{Line: l, Time: int64(l / 20), Data: data})
					}
					t0 := time.Now()
					err := in.t.Append(step, batch)
					mine = append(mine, time.Since(t0))
					mu.Lock()
					if err != nil && bad == nil {
						bad = err
					}
					for _, l := range batch {
						res.Bytes += int64(len(l.Data))
					}
					mu.Unlock()
				}
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if bad != nil {
		return res, fmt.Errorf("append: %w", bad)
	}
	res.Seconds = time.Since(start).Seconds()
	res.AppendP99Ms = stats(all).P99Ms
	res.SpoolFiles = countFiles(filepath.Join(in.spool, "steps"), ".ndjson")
	if res.PeakRSSKiB, err = procMemKiB(in.pid, "VmHWM"); err != nil {
		return res, err
	}
	return res, nil
}

// walkFiles calls visit for every regular file under dir.
func walkFiles(dir string, visit func(name string, size int64)) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return nil // removed while walking
			}
			visit(d.Name(), info.Size())
		}
		return nil
	})
}

// Paced streaming: what a busy server sees. 32 steps run at once; each sends a batch of
// pacedBatch lines every pacedPeriod (ten times the agent's flush rate: a chatty build) and
// finishes after pacedStepLines lines, so steps keep finishing and being archived while the
// others stream. LogAppend latency is measured here, not under saturation, where it only
// reflects the queue the benchmark itself builds.
const (
	pacedPeriod    = 100 * time.Millisecond
	pacedBatch     = 150
	pacedStepLines = 3000
)

type pacedResult struct {
	Steps       int     `json:"steps"`
	Lines       int64   `json:"lines"`
	Seconds     float64 `json:"seconds"`
	LinesPerSec float64 `json:"lines_per_second"`
	latencyStats
	Errors     int    `json:"errors"`
	FirstError string `json:"first_error,omitempty"`
	Late       int    `json:"late_batches"`
}

// pacedStep is one step of the paced workload and the lines the store acknowledged.
type pacedStep struct {
	ID int64
	// Acked are the [from, to) line ranges of the batches whose append succeeded.
	Acked [][2]int
}

// pacedLine is line l of paced step id, as the workload sends it.
func pacedLine(c *corpus, id int64, l int) agentLine {
	offset := int(id*977) % len(c.lines)
	return agentLine{Line: l, Time: int64(l / 1500), Data: c.lines[(offset+l)%len(c.lines)]}
}

// lineBatch is lines [from, to) of a step, line(l) each.
func lineBatch(line func(int) agentLine, from, to int) []agentLine {
	batch := make([]agentLine, 0, to-from)
	for l := from; l < to; l++ {
		batch = append(batch, line(l))
	}
	return batch
}

// nextTick moves tick on by period and sleeps until then; when that time has already
// passed (the store could not keep the pace) it returns true and restarts the pace from
// now instead of catching up.
func nextTick(tick *time.Time, period time.Duration) (late bool) {
	*tick = tick.Add(period)
	if wait := time.Until(*tick); wait > 0 {
		time.Sleep(wait)
		return false
	}
	*tick = time.Now()
	return true
}

// pacedRun is what the workers of a paced workload share: its figures and every append's
// latency.
type pacedRun struct {
	mu    sync.Mutex
	res   pacedResult
	first error
	all   []time.Duration
}

// appended counts a batch of n lines whose append returned err.
func (p *pacedRun) appended(n int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Lines += int64(n)
	if err != nil {
		p.res.Errors++
		p.first = cmp(p.first, err)
	}
}

// late counts a batch after which the store could not keep the pace.
func (p *pacedRun) late() {
	p.mu.Lock()
	p.res.Late++
	p.mu.Unlock()
}

// run runs the workers for d and returns the figures. Each worker starts at its share of
// one period (steps do not start in lockstep) and calls step until d has passed; step
// runs one step, adding the latency of each append to mine.
func (p *pacedRun) run(d, period time.Duration, step func(deadline time.Time, mine *[]time.Duration)) pacedResult {
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(period * time.Duration(w) / workers)
			var mine []time.Duration
			for time.Now().Before(deadline) {
				step(deadline, &mine)
			}
			p.mu.Lock()
			p.all = append(p.all, mine...)
			p.mu.Unlock()
		}()
	}
	wg.Wait()
	res := p.res
	res.Seconds = time.Since(start).Seconds()
	res.LinesPerSec = float64(res.Lines) / res.Seconds
	res.latencyStats = stats(p.all)
	if p.first != nil {
		res.FirstError = p.first.Error()
	}
	return res
}

// paced runs the paced workload for d with step ids after firstID and returns its figures
// and its steps.
func paced(t target, c *corpus, d time.Duration, firstID int64) (pacedResult, []*pacedStep) {
	var (
		p      pacedRun
		steps  []*pacedStep
		nextID = firstID
	)
	res := p.run(d, pacedPeriod, func(deadline time.Time, mine *[]time.Duration) {
		p.mu.Lock()
		nextID++
		ps := &pacedStep{ID: nextID}
		steps = append(steps, ps)
		p.mu.Unlock()
		step := wpStep(ps.ID, "running")
		tick := time.Now()
		for from := 0; from < pacedStepLines && time.Now().Before(deadline); from += pacedBatch {
			to := min(pacedStepLines, from+pacedBatch)
			batch := lineBatch(func(l int) agentLine { return pacedLine(c, ps.ID, l) }, from, to)
			t0 := time.Now()
			err := t.Append(step, batch)
			*mine = append(*mine, time.Since(t0))
			if err == nil {
				// Only this worker touches its step.
				ps.Acked = append(ps.Acked, [2]int{from, to})
			}
			p.appended(len(batch), err)
			if nextTick(&tick, pacedPeriod) {
				p.late() // the store could not keep the pace: no catching up
			}
		}
		step.State = "success"
		t.Finished(step)
	})
	res.Steps = len(steps)
	return res, steps
}
