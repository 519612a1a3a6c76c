package interop

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// addonBin is the absolute path of the addon under test; reference is true when it is the
// Go reference plugin, whose Rust-only behaviours are skipped.
var (
	addonBin  string
	reference bool
)

func TestMain(m *testing.M) {
	if os.Getenv(hostHelperEnv) != "" {
		os.Exit(runHostHelper())
	}
	cleanup, err := resolveAddon()
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "interop: addon under test: %s (reference=%v)\n", addonBin, reference)
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func resolveAddon() (func(), error) {
	if os.Getenv("INTEROP_USE_REFERENCE") == "1" {
		dir, err := os.MkdirTemp("", "interop-ref")
		if err != nil {
			return nil, err
		}
		addonBin, reference = filepath.Join(dir, "refplugin"), true
		out, err := exec.Command("go", "build", "-o", addonBin, "./internal/refplugin").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("build the reference plugin: %v\n%s", err, out)
		}
		return func() { _ = os.RemoveAll(dir) }, nil
	}
	bin := os.Getenv("WOODPECKER_S3_LOGS_BIN")
	if bin == "" {
		bin = filepath.Join("..", "target", "release", "woodpecker-s3-logs")
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		return nil, fmt.Errorf("addon binary %s not found (WOODPECKER_S3_LOGS_BIN): build it with "+
			"`cargo build --release -p woodpecker-s3-logs`, or set INTEROP_USE_REFERENCE=1 to test the harness", abs)
	}
	addonBin = abs
	return func() {}, nil
}

// addonEnv is the environment a test's addon gets on top of this process's: a private
// spool, archive and temp directory below dir (so sockets, staging and archives of
// different tests never meet) plus whatever INTEROP_ADDON_ENV adds.
func addonEnv(t testing.TB, dir string) []string {
	t.Helper()
	spool, tmp := filepath.Join(dir, "spool"), filepath.Join(dir, "tmp")
	for _, d := range []string{spool, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{
		"WOODPECKER_LOG_STORE_S3_SPOOL_DIR=" + spool,
		"WOODPECKER_LOG_STORE_S3_ARCHIVE_DIR=" + filepath.Join(dir, "archive"),
		"TMPDIR=" + tmp,
	}
	return append(env, interopAddonEnv()...)
}

// interopAddonEnv is the KEY=VALUE lines of INTEROP_ADDON_ENV.
func interopAddonEnv() []string {
	var env []string
	for _, line := range strings.Split(os.Getenv("INTEROP_ADDON_ENV"), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			env = append(env, line)
		}
	}
	return env
}

// lockedBuffer is a goroutine-safe bytes.Buffer.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// addon is one running addon with everything it and the host logged.
type addon struct {
	*woodpecker.Addon
	svc     *woodpecker.RPC
	dir     string // the addon's private TMPDIR parent
	tmpDir  string
	stderr  *lockedBuffer // raw stderr lines
	hostLog *lockedBuffer // what go-plugin's client logged
}

// startAddon loads the addon under test as Woodpecker does. At cleanup it kills the addon
// and checks that every stderr line it wrote was a well-formed hclog JSON line.
func startAddon(t testing.TB, extraEnv ...string) *addon {
	t.Helper()
	return startAddonIn(t, t.TempDir(), extraEnv...)
}

// startAddonIn is startAddon with the addon's directories below dir, so that a second
// addon can take over the first one's spool and archive.
func startAddonIn(t testing.TB, dir string, extraEnv ...string) *addon {
	t.Helper()
	return startAddonWith(t, dir, filepath.Join(dir, "tmp"), append(addonEnv(t, dir), extraEnv...))
}

// startAddonWith loads the addon with exactly env on top of this process's environment
// (nothing is created for it): tmpDir is the TMPDIR that env gives it.
func startAddonWith(t testing.TB, dir, tmpDir string, env []string) *addon {
	t.Helper()
	a := &addon{dir: dir, tmpDir: tmpDir, stderr: &lockedBuffer{}, hostLog: &lockedBuffer{}}
	logger := hclog.New(&hclog.LoggerOptions{Name: "host", Level: hclog.Trace, Output: a.hostLog})
	loaded, err := woodpecker.Load(addonBin, woodpecker.Options{Env: env, Stderr: a.stderr, Logger: logger})
	if err != nil {
		t.Fatalf("load addon: %v\naddon stderr:\n%s\nhost log:\n%s", err, a.stderr, tail(a.hostLog.String()))
	}
	a.Addon, a.svc = loaded, loaded.RPC
	t.Cleanup(func() {
		a.Client.Kill()
		for _, problem := range hclogProblems(a.stderr.String()) {
			if reference {
				// go-plugin's own Go server logs one plain line when it quits.
				t.Logf("addon stderr (tolerated for the Go reference plugin): %s", problem)
			} else {
				t.Errorf("addon stderr: %s", problem)
			}
		}
		if t.Failed() {
			t.Logf("addon stderr (tail):\n%s", tail(a.stderr.String()))
			t.Logf("host log (tail):\n%s", tail(a.hostLog.String()))
		}
	})
	return a
}

func tail(s string) string {
	const max = 8 << 10
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

// hclogTimestamp is hclog's TimeFormatJSON, the only layout go-plugin's host parses:
// exactly six fractional digits and a Z or ±hh:mm zone.
var hclogTimestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$`)

// hclogProblems lists every stderr line that go-plugin's host would not take as an hclog
// JSON entry at a known level. A non-string @message/@level/@timestamp would panic the
// Woodpecker server (go-plugin does unchecked type assertions).
func hclogProblems(stderr string) []string {
	var problems []string
	for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if line == "" && stderr == "" {
			continue
		}
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			problems = append(problems, fmt.Sprintf("not a JSON object (%v): %q", err, line))
			continue
		}
		for _, key := range []string{"@level", "@message", "@timestamp"} {
			if _, ok := fields[key].(string); !ok {
				problems = append(problems, fmt.Sprintf("%s is %T, not a string: %q", key, fields[key], line))
			}
		}
		if ts, ok := fields["@timestamp"].(string); ok {
			if _, err := time.Parse(hclog.TimeFormatJSON, ts); err != nil || !hclogTimestamp.MatchString(ts) {
				problems = append(problems, fmt.Sprintf("@timestamp %q is not in layout %s: %q", ts, hclog.TimeFormatJSON, line))
			}
		}
		if lvl, ok := fields["@level"].(string); ok {
			if l := hclog.LevelFromString(lvl); l == hclog.NoLevel || l == hclog.Off {
				problems = append(problems, fmt.Sprintf("@level %q is no hclog level: %q", lvl, line))
			}
		}
	}
	return problems
}

var stepCounter atomic.Int64

// newStep returns a running step whose id no other test (or earlier run sharing an
// archive) uses.
func newStep() *woodpecker.Step {
	base := time.Now().UnixMicro() % (1 << 40) * 1000
	id := base + stepCounter.Add(1)
	return &woodpecker.Step{
		ID: id, UUID: fmt.Sprintf("01JINTEROP%016d", id), PipelineID: 7, PID: 2, PPID: 1,
		Name: "build", State: "running", Started: 1735689600, Type: "commands",
	}
}

// TestIdleConnection leaves a session idle for 90 s between calls: longer than the host's
// 75 s stream-open timeout (streams 3 and 5 must have been ACKed) and spanning three
// 30 s yamux keepalives. It comes first in the file order and goes parallel after its
// first calls, so that its idle time overlaps the serial tests.
func TestIdleConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("90 s idle connection: skipped with -short")
	}
	start := time.Now()
	a := startAddon(t)
	step := newStep()
	before := []*woodpecker.LogEntry{{StepID: step.ID, Line: 0, Time: 1, Data: []byte("before idle")}}
	if err := a.svc.LogAppend(step, before); err != nil {
		t.Fatalf("append before idle: %v", err)
	}
	t.Parallel()
	time.Sleep(time.Until(start.Add(90 * time.Second)))
	after := []*woodpecker.LogEntry{{StepID: step.ID, Line: 1, Time: 2, Data: []byte("after idle")}}
	if err := a.svc.LogAppend(step, after); err != nil {
		t.Fatalf("append after %v idle: %v", time.Since(start), err)
	}
	assertLog(t, a, step, append(before, after...))
	t.Logf("session served calls before and after %v of idleness", time.Since(start).Round(time.Second))
}

// hostHelperEnv makes the test binary act as a Woodpecker host process (see runHostHelper).
const hostHelperEnv = "INTEROP_HOST_HELPER_ADDON"

// runHostHelper loads the addon named by hostHelperEnv, proves the session works, prints
// "ready <pid> <socket>" and then waits to be killed; the addon inherits this process's
// environment, as Woodpecker's does.
func runHostHelper() int {
	loaded, err := woodpecker.Load(os.Getenv(hostHelperEnv), woodpecker.Options{Stderr: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "host helper:", err)
		return 1
	}
	step := newStep()
	if err := loaded.RPC.LogAppend(step, []*woodpecker.LogEntry{{StepID: step.ID, Data: []byte("x")}}); err != nil {
		fmt.Fprintln(os.Stderr, "host helper: append:", err)
		return 1
	}
	rc := loaded.Client.ReattachConfig()
	fmt.Printf("ready %d %s\n", rc.Pid, rc.Addr.String())
	// The parent kills this process; the timeout only guards against a leaked helper.
	time.Sleep(2 * time.Minute)
	return 2
}

// startHostHelper starts the test binary as a host in its own process and waits for its
// ready line; tmpDir is the TMPDIR the addon got.
func startHostHelper(t *testing.T) (host *exec.Cmd, addonPid int, socket, tmpDir string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tmpDir = filepath.Join(dir, "tmp")
	host = exec.Command(self)
	host.Env = append(append(os.Environ(), addonEnv(t, dir)...), hostHelperEnv+"="+addonBin)
	stdout, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	host.Stderr = &stderr
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = host.Process.Kill()
		_ = host.Wait()
		if t.Failed() {
			t.Logf("host helper stderr:\n%s", tail(stderr.String()))
		}
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-lines:
		if _, err := fmt.Sscanf(line, "ready %d %s", &addonPid, &socket); err != nil {
			t.Fatalf("host helper said %q (%v); stderr:\n%s", line, err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("host helper not ready after 30 s; stderr:\n%s", stderr.String())
	}
	return host, addonPid, socket, tmpDir
}

// checkAddonStarted guards against the plugin-mode helpers (plugin.ClientConfig et al.)
// drifting from what Woodpecker sets: the handshake must have negotiated net/rpc over unix.
func checkAddonStarted(t *testing.T, a *addon) {
	t.Helper()
	rc := a.Client.ReattachConfig()
	if rc == nil || rc.Protocol != plugin.ProtocolNetRPC || rc.Addr.Network() != "unix" {
		t.Fatalf("addon handshake: %+v, want netrpc over unix", rc)
	}
}
