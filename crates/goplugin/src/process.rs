//! Process-level duties of a plugin: the stdio rules and signals of PROTOCOL.md
//! §Stdio and §Exit.
//!
//! These touch process-global state (file descriptors 0 and 1, signal dispositions), so they
//! are only called from [`crate::server::serve`], never from library code that may run inside
//! a test harness.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// Ignores SIGINT for good, as go-plugin's `Serve` does: the plugin shares the host's process
/// group, so a Ctrl-C in the host's terminal must not kill the plugin before the host has shut
/// it down in order.
pub fn ignore_sigint() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
}

/// Writes the handshake line to stdout and flushes it. The host reads only the first stdout
/// line, so this must be the first byte the process ever writes there.
pub fn announce(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Points fd 1 (stdout) and fd 0 (stdin) at /dev/null.
///
/// stdout: after the handshake the host only drains it, and a single line over 64 KiB makes
/// the host stop reading, after which any later stdout write blocks forever (PROTOCOL.md §Stdio). With
/// fd 1 on /dev/null no library or child process can trigger that.
/// stdin: it is the host's own stdin; reading it would steal the server's input.
pub fn seal_stdio() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: both descriptors are valid; dup2 atomically replaces the target descriptor.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes raw bytes to stderr, ignoring every error. After the host has died stderr is a
/// broken pipe; `eprintln!` would panic there (PROTOCOL.md §Stdio), this never does.
pub fn write_stderr(bytes: &[u8]) {
    let _ = io::stderr().lock().write_all(bytes);
}
