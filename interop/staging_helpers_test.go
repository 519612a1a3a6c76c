package interop

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	_ "github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3"

	"github.com/woodpecker-s3-logs/interop/internal/s3util"
	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// Helpers of the database-staging tests (issue 11, WOODPECKER_LOG_STORE_S3_STAGING=database):
// a Woodpecker database with its log_entries table (a SQLite file, or a private PostgreSQL
// server the test can stop and start), the test's own connection to it to look at the rows,
// fresh "container" roots, and a view of the archive (S3 or a local directory) that compares
// entries independently of the addon.

// schemaFixture is Woodpecker's schema as xorm's Sync creates it (the Rust tests' fixtures,
// with the unique index on (step_id, line) of Woodpecker >= 3.15).
func schemaFixture(t testing.TB, driver string) string {
	t.Helper()
	name := map[string]string{"sqlite3": "sqlite", "postgres": "postgres"}[driver]
	b, err := os.ReadFile(filepath.Join("..", "crates", "woodpecker-db", "tests", "fixtures", "schema-"+name+".sql"))
	if err != nil {
		t.Fatalf("Woodpecker's schema for %s: %v", driver, err)
	}
	return string(b)
}

// stagingDB is a Woodpecker database as the addon sees it (driver and data source, inherited
// from the server's environment) and the test's own connection to it.
type stagingDB struct {
	driver     string
	datasource string
	db         *sql.DB
}

// env is what a Woodpecker server using this database has in its environment.
func (d *stagingDB) env() []string {
	return []string{"WOODPECKER_DATABASE_DRIVER=" + d.driver, "WOODPECKER_DATABASE_DATASOURCE=" + d.datasource}
}

func (d *stagingDB) placeholder(i int) string {
	if d.driver == "postgres" {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

// newSQLiteDB makes a Woodpecker SQLite database file in dir with Woodpecker's tables.
func newSQLiteDB(t testing.TB, dir string) *stagingDB {
	t.Helper()
	path := filepath.Join(dir, "woodpecker.sqlite")
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(schemaFixture(t, "sqlite3")); err != nil {
		t.Fatalf("create Woodpecker's tables in %s: %v", path, err)
	}
	return &stagingDB{driver: "sqlite3", datasource: path, db: db}
}

// stagedRow is a log_entries row.
type stagedRow struct {
	id, stepID, time, created int64
	line, typ                 int
	data                      []byte
}

// rows returns the step's rows in log_entries ordered by line, id.
func (d *stagingDB) rows(step *woodpecker.Step) ([]stagedRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := "SELECT id, step_id, time, line, data, created, type FROM log_entries WHERE step_id = " + d.placeholder(1) + " ORDER BY line, id"
	res, err := d.db.QueryContext(ctx, q, step.ID)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []stagedRow
	for res.Next() {
		var r stagedRow
		var created sql.NullInt64
		if err := res.Scan(&r.id, &r.stepID, &r.time, &r.line, &r.data, &created, &r.typ); err != nil {
			return nil, err
		}
		r.created = created.Int64
		out = append(out, r)
	}
	return out, res.Err()
}

// countRows is the number of the step's rows in log_entries.
func (d *stagingDB) countRows(t testing.TB, step *woodpecker.Step) int {
	t.Helper()
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM log_entries WHERE step_id = "+d.placeholder(1), step.ID).Scan(&n); err != nil {
		t.Fatalf("count the rows of step %d: %v", step.ID, err)
	}
	return n
}

// waitNoRows waits until log_entries holds no row of the steps (the addon deletes them once
// their object is verified).
func (d *stagingDB) waitNoRows(t testing.TB, limit time.Duration, steps ...*woodpecker.Step) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for _, step := range steps {
		for {
			n := d.countRows(t, step)
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("step %d: %d rows left in log_entries %v after it was archived", step.ID, n, limit)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// checkRowsAreWoodpeckers compares the step's rows with what was sent, as Woodpecker's
// database store writes them: one row per line, step_id/time/line/data/type as sent, a NULL
// data for a nil one, created = the server's clock at insert.
func (d *stagingDB) checkRowsAreWoodpeckers(t testing.TB, step *woodpecker.Step, want []*woodpecker.LogEntry, since time.Time) {
	t.Helper()
	rows, err := d.rows(step)
	if err != nil {
		t.Fatalf("read the rows of step %d: %v", step.ID, err)
	}
	if len(rows) != len(want) {
		t.Fatalf("step %d: %d rows in log_entries, want %d (one per line sent)", step.ID, len(rows), len(want))
	}
	for i, r := range rows {
		w := want[i]
		got := &woodpecker.LogEntry{StepID: r.stepID, Time: r.time, Line: r.line, Data: r.data, Type: woodpecker.LogEntryType(r.typ)}
		if !reflect.DeepEqual(got, &woodpecker.LogEntry{StepID: w.StepID, Time: w.Time, Line: w.Line, Data: w.Data, Type: w.Type}) {
			t.Fatalf("step %d row %d (id %d): %s, sent %s", step.ID, i, r.id, show(got), show(w))
		}
		if r.created < since.Unix()-1 || r.created > time.Now().Unix()+1 {
			t.Fatalf("step %d row %d: created %d, want the insert time (%d..%d)", step.ID, i, r.created, since.Unix(), time.Now().Unix())
		}
	}
}

// pgServer is a private PostgreSQL server of one test, which it may stop and start (the
// shared one of scripts/db/start.sh serves other tests).
type pgServer struct {
	bin, dir, data string
	port           int
	as             []string // setpriv prefix when running as root
}

// startPrivatePostgres initialises and starts a PostgreSQL server on a free 127.0.0.1 port,
// with a woodpecker role owning a woodpecker database that holds Woodpecker's tables. It
// skips the test only when the PostgreSQL binaries are not installed.
func startPrivatePostgres(t *testing.T) (*pgServer, *stagingDB) {
	t.Helper()
	bin := ""
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) < pgMajor(dirs[j]) })
		bin = dirs[len(dirs)-1]
	} else if initdb, err := exec.LookPath("initdb"); err == nil {
		bin = filepath.Dir(initdb)
	}
	for _, tool := range []string{"initdb", "pg_ctl"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); bin == "" || err != nil {
			t.Skipf("PostgreSQL binaries are not installed (no %s in /usr/lib/postgresql/*/bin or PATH): "+
				"install Debian's postgresql package (scripts/db/start.sh does)", tool)
		}
	}
	dir, err := os.MkdirTemp("", "interop-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p := &pgServer{bin: bin, dir: dir, data: filepath.Join(dir, "data")}
	t.Cleanup(func() {
		_ = p.run("pg_ctl", "-D", p.data, "-m", "immediate", "-w", "stop")
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL refuses to run as root: as root (CI), run it as the package's postgres user.
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, PostgreSQL needs the postgres system user (Debian's package makes it): %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.as = []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	}
	if err := p.run("initdb", "-D", p.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("postgres", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, stmt := range []string{"CREATE ROLE woodpecker LOGIN PASSWORD 'woodpecker'", "CREATE DATABASE woodpecker OWNER woodpecker"} {
		if _, err := admin.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	source := fmt.Sprintf("postgres://woodpecker:woodpecker@127.0.0.1:%d/woodpecker?sslmode=disable", p.port)
	db, err := sql.Open("postgres", source)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if _, err := db.Exec(schemaFixture(t, "postgres")); err != nil {
		t.Fatalf("create Woodpecker's tables: %v", err)
	}
	return p, &stagingDB{driver: "postgres", datasource: source, db: db}
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func (p *pgServer) run(tool string, args ...string) error {
	argv := append(append(append([]string{}, p.as...), filepath.Join(p.bin, tool)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = p.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return nil
}

// start starts the server (again) and waits until it accepts connections. Durable commits
// (synchronous_commit stays on), so an immediate stop loses nothing that was committed.
func (p *pgServer) start() error {
	return p.run("pg_ctl", "-D", p.data, "-l", filepath.Join(p.dir, "postgres.log"), "-w", "-t", "60",
		"-o", fmt.Sprintf("-h 127.0.0.1 -p %d -k %s -c fsync=off -c full_page_writes=off", p.port, p.dir), "start")
}

// stop stops the server the hard way (all sessions cut, crash recovery at the next start).
func (p *pgServer) stop() error {
	return p.run("pg_ctl", "-D", p.data, "-m", "immediate", "-w", "stop")
}

func (p *pgServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	return tail(string(b))
}

// freshRoot is the file system of a new server container: its own HOME, XDG directories and
// TMPDIR, nothing in them.
type freshRoot struct {
	dir    string
	before map[string]bool // what the test itself made
}

func newFreshRoot(t testing.TB) *freshRoot {
	t.Helper()
	r := &freshRoot{dir: t.TempDir(), before: map[string]bool{}}
	for _, d := range []string{"home", "tmp"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		r.before[d] = true
	}
	return r
}

// env points every per-user location of the addon into the root (the XDG directories do
// not exist until someone makes them).
func (r *freshRoot) env() []string {
	return []string{
		"HOME=" + filepath.Join(r.dir, "home"),
		"XDG_STATE_HOME=" + filepath.Join(r.dir, "state"),
		"XDG_DATA_HOME=" + filepath.Join(r.dir, "data"),
		"XDG_CACHE_HOME=" + filepath.Join(r.dir, "cache"),
		"XDG_CONFIG_HOME=" + filepath.Join(r.dir, "config"),
		"TMPDIR=" + filepath.Join(r.dir, "tmp"),
	}
}

// localState lists what the addon left in the root, apart from TMPDIR (where go-plugin's
// socket lives; a SIGKILLed addon cannot remove it).
func (r *freshRoot) localState() []string {
	var found []string
	_ = filepath.WalkDir(r.dir, func(path string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(r.dir, path)
		switch {
		case err != nil || rel == ".":
			return nil
		case rel == "tmp":
			return fs.SkipDir
		case r.before[rel]:
			return nil
		}
		found = append(found, rel)
		return nil
	})
	return found
}

// checkNoLocalState fails when the addon created anything in the root: in database staging
// there is no spool directory and no other local state.
func (r *freshRoot) checkNoLocalState(t testing.TB, which string) {
	t.Helper()
	if found := r.localState(); len(found) > 0 {
		if len(found) > 12 {
			found = append(found[:12:12], fmt.Sprintf("… %d more", len(found)-12))
		}
		t.Errorf("%s root %s: the addon created %v (database staging keeps no local state, no spool directory)", which, r.dir, found)
	}
}

// startInRoot loads the addon with the root's environment plus env.
func startInRoot(t testing.TB, r *freshRoot, env ...string) *addon {
	t.Helper()
	return startAddonWith(t, r.dir, filepath.Join(r.dir, "tmp"), append(append(interopAddonEnv(), r.env()...), env...))
}

// archiveView reads a step's archive object without the addon: from the bucket with an
// independent S3 client, or from the local archive directory's files.
type archiveView interface {
	env() []string
	// entries returns the object's entries, or an error wrapping s3util.ErrNoObject.
	entries(step *woodpecker.Step) ([]*woodpecker.LogEntry, error)
	describe(step *woodpecker.Step) string
}

// s3Archive is a bucket folder of a test server reached at endpoint (the server or a proxy).
type s3Archive struct {
	f        *s3Fixture
	endpoint string
}

func (a s3Archive) env() []string { return a.f.env(a.endpoint) }

func (a s3Archive) entries(step *woodpecker.Step) ([]*woodpecker.LogEntry, error) {
	arch, err := a.f.read(step)
	if err != nil {
		return nil, err
	}
	if n := arch.LineCount(); n != len(arch.Entries) {
		return arch.Entries, fmt.Errorf("object %s: line-count metadata %d, %d entries", a.f.key(step), n, len(arch.Entries))
	}
	return arch.Entries, nil
}

func (a s3Archive) describe(step *woodpecker.Step) string {
	return "s3://" + a.f.srv.Bucket + "/" + a.f.key(step)
}

// localArchive is a local archive directory (WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR).
type localArchive struct{ dir string }

func (a localArchive) env() []string {
	return []string{"WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR=" + a.dir}
}

func (a localArchive) describe(step *woodpecker.Step) string {
	return filepath.Join(a.dir, s3util.Key("", step.ID))
}

// entries reads the file: one line of the store's JSON header, then the object (a zstd frame
// of NDJSON entries).
func (a localArchive) entries(step *woodpecker.Step) ([]*woodpecker.LogEntry, error) {
	path := a.describe(step)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, s3util.ErrNoObject)
	} else if err != nil {
		return nil, err
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return nil, fmt.Errorf("%s: no header line", path)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	ndjson, err := dec.DecodeAll(b[nl+1:], nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []*woodpecker.LogEntry
	sc := bufio.NewScanner(bytes.NewReader(ndjson))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var e woodpecker.LogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, &e)
	}
	return out, sc.Err()
}

// withoutIDs copies entries with id 0: the id is the row's in log_entries (as in Woodpecker's
// own LogFind) and "as the server sent it" in an object, so it is not compared; every other
// field is, nil data apart from empty.
func withoutIDs(entries []*woodpecker.LogEntry) []*woodpecker.LogEntry {
	out := make([]*woodpecker.LogEntry, len(entries))
	for i, e := range entries {
		c := *e
		c.ID = 0
		out[i] = &c
	}
	return out
}

// diffEntries says how got differs from want (ids aside), or "" when it does not.
func diffEntries(got, want []*woodpecker.LogEntry) string {
	g, w := withoutIDs(got), withoutIDs(want)
	if len(g) != len(w) {
		return fmt.Sprintf("%d entries (lines %s), want %d (lines %s)", len(g), lineRanges(g), len(w), lineRanges(w))
	}
	for i := range w {
		if !reflect.DeepEqual(g[i], w[i]) {
			return fmt.Sprintf("entry %d: %s, want %s", i, show(g[i]), show(w[i]))
		}
	}
	return ""
}

// lineRanges writes the line numbers compactly: 0-99,110-119.
func lineRanges(entries []*woodpecker.LogEntry) string {
	var parts []string
	for i := 0; i < len(entries); {
		j := i
		for j+1 < len(entries) && entries[j+1].Line == entries[j].Line+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.Itoa(entries[i].Line))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", entries[i].Line, entries[j].Line))
		}
		i = j + 1
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// assertFind checks that LogFind returns exactly want (ids aside).
func assertFind(t testing.TB, a *addon, step *woodpecker.Step, want []*woodpecker.LogEntry) {
	t.Helper()
	got, err := a.svc.LogFind(step)
	if err != nil {
		t.Fatalf("LogFind step %d: %v", step.ID, err)
	}
	if d := diffEntries(got, want); d != "" {
		t.Fatalf("LogFind step %d: %s", step.ID, d)
	}
}

// waitArchived waits until the step's object holds exactly want (ids aside).
func waitArchived(t testing.TB, av archiveView, step *woodpecker.Step, want []*woodpecker.LogEntry, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		got, err := av.entries(step)
		problem := ""
		if err != nil {
			problem = err.Error()
		} else {
			problem = diffEntries(got, want)
		}
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("step %d: the archive %s does not hold the step's %d lines %v after %v: %s",
				step.ID, av.describe(step), len(want), limit, lineRanges(want), problem)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// stream is one step whose lines an agent sends in batches while the test does something
// else; like Woodpecker's server, it does not resend a batch whose append failed.
type stream struct {
	step *woodpecker.Step
	// rich makes the first batch richBatch (every type, nil and empty data, non-UTF-8).
	rich bool

	mu       sync.Mutex
	next     int
	acked    []*woodpecker.LogEntry // appends that returned success, in order
	failed   []*woodpecker.LogEntry // appends that returned an error
	inFlight []*woodpecker.LogEntry
	calls    []appendCall
}

// appendCall is one LogAppend as the stream saw it.
type appendCall struct {
	start, end time.Time
	first, n   int
	err        error
}

// send appends the next n lines; it returns the append's error.
func (s *stream) send(a *addon, n int) error {
	s.mu.Lock()
	batch := buildLog(s.step, s.next, n)
	if s.rich && s.next == 0 {
		batch = richBatch(s.step, 0)
	}
	s.next += len(batch)
	s.inFlight = batch
	s.mu.Unlock()
	start := time.Now()
	err := a.svc.LogAppend(s.step, batch)
	end := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight = nil
	if err == nil {
		s.acked = append(s.acked, batch...)
	} else {
		s.failed = append(s.failed, batch...)
	}
	s.calls = append(s.calls, appendCall{start: start, end: end, first: batch[0].Line, n: len(batch), err: err})
	return err
}

func (s *stream) ackedLines() []*woodpecker.LogEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*woodpecker.LogEntry(nil), s.acked...)
}

// sentLines is every line sent, acknowledged or not, by line number.
func (s *stream) sentLines() map[int]*woodpecker.LogEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]*woodpecker.LogEntry{}
	for _, list := range [][]*woodpecker.LogEntry{s.acked, s.failed, s.inFlight} {
		for _, e := range list {
			out[e.Line] = e
		}
	}
	return out
}

// checkHolds checks that got (a LogFind or an object) holds every acknowledged line, and
// otherwise only lines that were sent, each as sent; it returns "" or the problem.
func (s *stream) checkHolds(got []*woodpecker.LogEntry) string {
	sent := s.sentLines()
	have := map[int]bool{}
	for i, e := range withoutIDs(got) {
		w, ok := sent[e.Line]
		if !ok {
			return fmt.Sprintf("entry %d: line %d was never sent", i, e.Line)
		}
		if !reflect.DeepEqual(e, withoutIDs([]*woodpecker.LogEntry{w})[0]) {
			return fmt.Sprintf("entry %d: %s, sent %s", i, show(e), show(w))
		}
		if i > 0 && got[i-1].Line >= e.Line {
			return fmt.Sprintf("entry %d: line %d after line %d", i, e.Line, got[i-1].Line)
		}
		have[e.Line] = true
	}
	var lost []*woodpecker.LogEntry
	for _, e := range s.ackedLines() {
		if !have[e.Line] {
			lost = append(lost, e)
		}
	}
	if len(lost) > 0 {
		return fmt.Sprintf("%d acknowledged lines missing: %s (has %s)", len(lost), lineRanges(lost), lineRanges(got))
	}
	return ""
}
