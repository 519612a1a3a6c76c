package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/woodpecker-s3-logs/interop/woodpecker"
)

// TestHostKilled kills the Woodpecker host with SIGKILL: no Quit, no FIN, just EOF on the
// socket. Woodpecker never reconnects, so the addon must go away by itself, within 1 s,
// and leave neither its socket nor a private socket directory behind.
func TestHostKilled(t *testing.T) {
	if reference {
		t.Skip("the Go reference plugin keeps running when its host dies (go-plugin does not exit on EOF)")
	}
	// Become the subreaper, so that the orphaned addon is re-parented to this process and
	// can be reaped here instead of lingering as a zombie of init.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, 36 /* PR_SET_CHILD_SUBREAPER */, 1, 0); errno != 0 {
		t.Logf("PR_SET_CHILD_SUBREAPER: %v; falling back to /proc", errno)
	}
	host, pid, socket, tmpDir := startHostHelper(t)
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL); reap(pid) })
	// An addon may unlink its socket once the host is connected (it accepts one connection);
	// either way nothing may be left after the kill.
	if _, err := os.Stat(socket); err != nil {
		t.Logf("socket %s already gone while connected: %v", socket, err)
	}
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	killed := time.Now()

	gone, status := false, ""
	for time.Since(killed) < time.Second && !gone {
		gone, status = exited(pid)
		if !gone {
			time.Sleep(10 * time.Millisecond)
		}
	}
	took := time.Since(killed)
	if !gone {
		t.Fatalf("addon pid %d still running %v after its host was killed", pid, took.Round(time.Millisecond))
	}
	t.Logf("addon pid %d gone %v after the host was killed (%s)", pid, took.Round(time.Millisecond), status)
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind (stat: %v)", socket, err)
	}
	// A socket directory the addon made itself (below its TMPDIR) must go too.
	if dir := filepath.Dir(socket); dir != tmpDir {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket directory %s left behind (stat: %v)", dir, err)
		}
	}
}

// exited reports whether pid has exited: reaped here, or a zombie elsewhere, or gone.
func exited(pid int) (bool, string) {
	var ws syscall.WaitStatus
	got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	switch {
	case err == nil && got == pid:
		return true, fmt.Sprintf("exit status %d, signaled %v", ws.ExitStatus(), ws.Signaled())
	case err == nil:
		return false, ""
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true, "no /proc entry"
	}
	if fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(fields) > 0 && fields[0] == "Z" {
		return true, "zombie"
	}
	return false, ""
}

func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}

// TestStartedWithoutCookie runs the binary as a person would, without (or with a wrong)
// magic cookie: go-plugin's message on stderr, exit status 1, nothing on stdout.
func TestStartedWithoutCookie(t *testing.T) {
	const message = "This binary is a plugin. These are not meant to be executed directly. " +
		"Please execute the program that consumes these plugins, which will load any plugins automatically"
	for name, cookie := range map[string]string{"missing": "", "wrong": "woodpecker-plugin-magic-cookie-value "} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, addonBin)
			for _, kv := range append(os.Environ(), addonEnv(t, t.TempDir())...) {
				if !strings.HasPrefix(kv, woodpecker.HandshakeConfig.MagicCookieKey+"=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if cookie != "" {
				cmd.Env = append(cmd.Env, woodpecker.HandshakeConfig.MagicCookieKey+"="+cookie)
			}
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var exitErr *exec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
				t.Errorf("exit: %v, want exit status 1", err)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
			// go-plugin wraps the message over three lines; compare the words.
			if !strings.Contains(strings.Join(strings.Fields(stderr.String()), " "), message) {
				t.Errorf("stderr: %q, want go-plugin's message %q", stderr.String(), message)
			}
		})
	}
}

// TestGracefulQuit is go-plugin's Kill: Control.Quit, then up to 2 s for the process to
// leave by itself before SIGKILL. Woodpecker does not call it today; a well-behaved addon
// still honours it, and removes its socket.
func TestGracefulQuit(t *testing.T) {
	a := startAddon(t)
	step := newStep()
	if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{{StepID: step.ID, Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	socket := a.Client.ReattachConfig().Addr.String()
	start := time.Now()
	a.Client.Kill()
	if log := a.hostLog.String(); strings.Contains(log, "plugin failed to exit gracefully") {
		// go-plugin's Go server may exit before its Quit reply is flushed, which the host
		// takes for a failure; an addon must reply first, then exit.
		report := t.Errorf
		if reference {
			report = t.Logf
		}
		report("Control.Quit got no reply before the addon exited, or did not make it exit (host fell back to SIGKILL after %v)",
			time.Since(start).Round(time.Millisecond))
	}
	if !a.Client.Exited() {
		t.Error("addon still running after Kill")
	}
	if _, err := os.Stat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind after Quit (stat: %v)", socket, err)
	}
	t.Logf("Quit took %v", time.Since(start).Round(time.Millisecond))
}

// TestStderrIsHclogJSON makes the addon talk (trace level, errors, bad calls) and checks
// that it said something and that every line is an hclog JSON entry the host can parse.
// (startAddon's cleanup checks the lines of every other test's addon too.)
func TestStderrIsHclogJSON(t *testing.T) {
	a := startAddon(t, "WOODPECKER_LOG_STORE_S3_LOG_LEVEL=trace")
	step := newStep()
	if err := a.svc.LogAppend(step, []*woodpecker.LogEntry{{StepID: step.ID, Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	a.svc.StepFinished(step)
	_, _ = a.svc.LogFind(&woodpecker.Step{ID: -1})
	var reply []byte
	_ = a.svc.Raw().Call("Plugin.LogFind", []byte("{"), &reply)
	_ = a.svc.Raw().Call("Plugin.Nope", []byte("{}"), &reply)
	a.Client.Kill()
	lines := strings.Count(a.stderr.String(), "\n")
	if lines == 0 {
		t.Fatal("the addon wrote nothing to stderr at trace level")
	}
	t.Logf("%d stderr lines, first: %s", lines, strings.SplitN(a.stderr.String(), "\n", 2)[0])
}
