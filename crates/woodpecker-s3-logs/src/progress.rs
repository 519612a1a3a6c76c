//! Progress of a long tool run (`migrate`, `gc`): a live bar when stderr is a terminal, one
//! plain line every few seconds otherwise (a log file or `kubectl logs` gets no escape codes).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain lines come when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Counters the workers add to; a reporter shows them.
#[derive(Default)]
pub(crate) struct Counters {
    /// Units done (steps for `migrate`, objects for `gc`).
    pub(crate) done: AtomicU64,
    /// Units expected in all, when known (0: unknown).
    pub(crate) total: AtomicU64,
    /// Log lines moved.
    pub(crate) lines: AtomicU64,
    /// Log lines expected in all, when known (0: unknown).
    pub(crate) lines_total: AtomicU64,
    /// Bytes written to (or found in) the archive.
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Shows [`Counters`] until dropped.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    plain: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing `counters`; `unit` names what `done` counts (e.g. `steps`).
    pub(crate) fn start(what: &'static str, unit: &'static str, counters: Arc<Counters>) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(format!("{what} ({unit})"));
            bar.enable_steady_tick(Duration::from_millis(200));
            let shown = bar.clone();
            let watched = counters.clone();
            let started = Instant::now();
            // The bar redraws itself; this task copies the counters into it.
            let updater = tokio::spawn(async move {
                loop {
                    update_bar(&shown, &watched, started.elapsed());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            return Self {
                bar: Some(bar),
                plain: Some(updater),
            };
        }
        let watched = counters.clone();
        let started = Instant::now();
        let plain = tokio::spawn(async move {
            loop {
                tokio::time::sleep(PLAIN_EVERY).await;
                eprintln!("{what}: {}", line(&watched, unit, started.elapsed()));
            }
        });
        Self {
            bar: None,
            plain: Some(plain),
        }
    }

    /// Stops showing progress, leaving the last state on screen.
    pub(crate) fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(task) = self.plain.take() {
            task.abort();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn update_bar(bar: &ProgressBar, counters: &Counters, elapsed: Duration) {
    let total = Counters::get(&counters.total);
    if total > 0 {
        bar.set_length(total);
    }
    bar.set_position(Counters::get(&counters.done));
    bar.set_message(rates(counters, elapsed));
}

/// One plain progress line: `120/2000 steps, 60000 lines (12000 lines/s), 3.2 MiB, ETA 2m 5s`.
pub(crate) fn line(counters: &Counters, unit: &str, elapsed: Duration) -> String {
    let done = Counters::get(&counters.done);
    let total = Counters::get(&counters.total);
    let head = if total > 0 {
        format!("{done}/{total} {unit}")
    } else {
        format!("{done} {unit}")
    };
    format!("{head}, {}", rates(counters, elapsed))
}

fn rates(counters: &Counters, elapsed: Duration) -> String {
    let lines = Counters::get(&counters.lines);
    let bytes = Counters::get(&counters.bytes);
    let seconds = elapsed.as_secs_f64().max(0.001);
    let mut text = format!(
        "{lines} lines ({:.0} lines/s), {}",
        lines as f64 / seconds,
        human_bytes(bytes)
    );
    // ETA by lines when their total is known (steps differ wildly in size), else by units.
    let (done, total) = match Counters::get(&counters.lines_total) {
        0 => (
            Counters::get(&counters.done),
            Counters::get(&counters.total),
        ),
        lines_total => (lines, lines_total),
    };
    if done > 0 && total > done {
        let left = seconds * (total - done) as f64 / done as f64;
        text.push_str(&format!(", ETA {}", human_duration(left)));
    }
    text
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2h 5m`, `3m 20s`, `42s`.
fn human_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_counts_rate_and_eta() {
        let counters = Counters::default();
        counters.done.store(50, Ordering::Relaxed);
        counters.total.store(200, Ordering::Relaxed);
        counters.lines.store(25_000, Ordering::Relaxed);
        counters.lines_total.store(100_000, Ordering::Relaxed);
        counters
            .bytes
            .store(3 * 1024 * 1024 + 300 * 1024, Ordering::Relaxed);
        assert_eq!(
            line(&counters, "steps", Duration::from_secs(10)),
            "50/200 steps, 25000 lines (2500 lines/s), 3.3 MiB, ETA 30s"
        );
        counters.lines_total.store(0, Ordering::Relaxed);
        counters.total.store(0, Ordering::Relaxed);
        assert_eq!(
            line(&counters, "objects", Duration::from_secs(10)),
            "50 objects, 25000 lines (2500 lines/s), 3.3 MiB"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_duration(3725.0), "1h 2m");
    }
}
