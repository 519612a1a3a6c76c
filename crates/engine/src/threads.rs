//! Where the engine's work runs: its own runtime thread for archiving, Tokio's blocking pool
//! for short file work, and fresh low-priority threads for archive builds.
//!
//! This is the crate's only `unsafe` code (lowering a thread's scheduling policy).

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use tokio::sync::oneshot;

/// The engine's own Tokio runtime, on a thread of its own, where archiving and the spool's
/// housekeeping run: uploads (the S3 client's signing, HTTP and XML work) then never take the
/// thread that answers the host's calls, which keeps LogAppend fast while archives upload.
pub(crate) struct Background {
    handle: tokio::runtime::Handle,
    /// Dropped with the engine: the thread then stops its runtime, abandoning what runs.
    _stop: oneshot::Sender<()>,
}

impl Background {
    /// Starts the runtime and its thread.
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("archive-blocking")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("archive".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// The runtime's handle, for spawning onto it.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

/// Runs `f` on Tokio's blocking pool (file work that may take a while), passing on its panic.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => resume_unwind(e.into_panic()),
    }
}

/// Runs CPU-heavy background work (building an archive: sorting, zstd) on a thread of its
/// own under Linux's `SCHED_IDLE` policy, so that on a busy machine the appends' spool writes
/// and the protocol's tasks always run first: LogAppend latency must not depend on how many
/// archives are being built. `SCHED_IDLE` rather than nice 19 because the scheduler counts a
/// CPU running only such threads as idle when it places a waking thread, so a waking append
/// preempts a build at once instead of queueing behind another busy CPU (measured with
/// `perf sched`: nice-19 builds still delayed the runtime's threads by up to 3 ms). Builds
/// still progress on a saturated machine, at a small share. A fresh thread, because a
/// thread's policy cannot be raised again without privileges, so a pooled one would stay
/// slow for whatever runs on it next.
pub(crate) async fn at_idle_priority<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            lower_priority();
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => Err(std::io::Error::other(format!("the {name} thread vanished"))),
    }
}

/// Puts the calling thread under `SCHED_IDLE`, or at nice 19 where that is refused. A
/// failure of both leaves the default priority: correct, just less considerate.
///
/// The raw system call rather than libc's `sched_setscheduler`: musl's wrapper refuses with
/// `ENOSYS` (the call applies to a thread on Linux, not to a process as POSIX says), while the
/// system call does what we want on every libc. `sched_param` has private padding on musl, so
/// it is built zeroed rather than with a struct literal.
fn lower_priority() {
    // SAFETY: `sched_param` is a plain C struct of integers, for which all-zero bytes are a
    // valid value (priority 0, the only one SCHED_IDLE accepts).
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // SAFETY: both calls only read their arguments, and `param` outlives the call; on Linux,
    // id 0 is the calling thread.
    unsafe {
        let refused = libc::syscall(
            libc::SYS_sched_setscheduler,
            0 as libc::pid_t,
            libc::SCHED_IDLE,
            &param as *const libc::sched_param,
        ) != 0;
        if refused {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_at_low_priority_and_panics_reach_the_caller() {
        let (policy, nice) = at_idle_priority("test-idle", || {
            // SAFETY: both calls read the calling thread's scheduling; no pointers involved.
            unsafe {
                (
                    libc::syscall(libc::SYS_sched_getscheduler, 0 as libc::pid_t),
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                )
            }
        })
        .await
        .unwrap();
        assert!(
            policy == libc::c_long::from(libc::SCHED_IDLE) || nice == 19,
            "policy {policy}, nice {nice}"
        );
        let panicked = tokio::spawn(at_idle_priority("test-panic", || panic!("boom"))).await;
        assert!(panicked.unwrap_err().is_panic());
    }
}
