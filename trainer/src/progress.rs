//! Progress of the trainer's long loops (encoding photos and texts): a bar on a terminal, plain
//! log lines everywhere else.
//!
//! indicatif hides its bars when stderr is not a terminal, so in CI and in log files a long
//! encoding pass printed nothing until it ended. Off a terminal, [`Progress`] logs
//! `tracing::info!` lines with the count, the rate (items/s) and the ETA every [`LOG_EVERY`]
//! or whenever another tenth of the work is done, whichever comes first.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// The longest quiet time between two log lines off a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress of one loop over a known number of items.
pub struct Progress {
    inner: Inner,
}

enum Inner {
    Bar(ProgressBar),
    Log(LogState),
}

/// What the log-line mode remembers between increments.
struct LogState {
    what: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    /// The tenth of the work (0..=10) reached at the last line.
    last_tenth: u64,
}

impl Progress {
    /// A bar when stderr is a terminal, log lines otherwise; `what` names the items.
    pub fn new(total: usize, what: &str) -> Self {
        if std::io::stderr().is_terminal() {
            Self::bar(total, what)
        } else {
            Self::lines(total, what)
        }
    }

    /// An indicatif bar on stderr.
    pub fn bar(total: usize, what: &str) -> Self {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        Progress { inner: Inner::Bar(bar) }
    }

    /// Plain log lines (what [`Progress::new`] picks off a terminal).
    pub fn lines(total: usize, what: &str) -> Self {
        let now = Instant::now();
        tracing::info!("{what}: {total} to do");
        Progress {
            inner: Inner::Log(LogState {
                what: what.to_string(),
                total: total as u64,
                done: 0,
                started: now,
                last_line: now,
                last_tenth: 0,
            }),
        }
    }

    /// Counts `n` more items done.
    pub fn inc(&mut self, n: usize) {
        match &mut self.inner {
            Inner::Bar(bar) => bar.inc(n as u64),
            Inner::Log(s) => {
                s.done += n as u64;
                let now = Instant::now();
                if s.done < s.total && line_due(s.done, s.total, s.last_tenth, now - s.last_line) {
                    tracing::info!("{}", progress_line(&s.what, s.done, s.total, now - s.started));
                    s.last_line = now;
                    s.last_tenth = tenth(s.done, s.total);
                }
            }
        }
    }

    /// Ends the loop: the bar stays at its last state; off a terminal, one closing line.
    pub fn finish(self) {
        match self.inner {
            Inner::Bar(bar) => bar.finish(),
            Inner::Log(s) => tracing::info!("{}", finish_line(&s.what, s.done, s.total, s.started.elapsed())),
        }
    }
}

/// The tenth of the work (0..=10) that `done` of `total` has reached.
fn tenth(done: u64, total: u64) -> u64 {
    if total == 0 {
        10
    } else {
        done.min(total) * 10 / total
    }
}

/// Whether a log line is due: `done` reached a new tenth of `total` since the last line (which
/// was at `last_tenth`), or [`LOG_EVERY`] has passed since it.
pub fn line_due(done: u64, total: u64, last_tenth: u64, since_last_line: Duration) -> bool {
    tenth(done, total) > last_tenth || since_last_line >= LOG_EVERY
}

/// Items per second, or None before any time has passed.
pub fn rate(done: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (secs > 0.0).then(|| done as f64 / secs)
}

/// A rate with about three significant digits: `1234/s`, `12.3/s`, `0.42/s`.
pub fn format_rate(per_second: f64) -> String {
    if per_second >= 100.0 {
        format!("{per_second:.0}/s")
    } else if per_second >= 1.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{per_second:.2}/s")
    }
}

/// A duration rounded to seconds: `45s`, `3m07s`, `2h05m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Time left at the current rate, or None while the rate is unknown or zero.
pub fn eta(done: u64, total: u64, elapsed: Duration) -> Option<Duration> {
    let r = rate(done, elapsed).filter(|r| *r > 0.0)?;
    Duration::try_from_secs_f64(total.saturating_sub(done) as f64 / r).ok()
}

/// One progress line, e.g. `photos: 120/1000 (12%), 8.0/s, eta 1m50s`.
pub fn progress_line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let percent = if total == 0 { 100 } else { done.min(total) * 100 / total };
    let rate = rate(done, elapsed).map_or_else(|| "?/s".to_string(), format_rate);
    let eta = eta(done, total, elapsed).map_or_else(|| "unknown".to_string(), format_duration);
    format!("{what}: {done}/{total} ({percent}%), {rate}, eta {eta}")
}

/// The closing line, e.g. `photos: 1000/1000 done in 2m05s (8.0/s)`.
pub fn finish_line(what: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let rate = rate(done, elapsed).map_or_else(|| "?/s".to_string(), format_rate);
    format!("{what}: {done}/{total} done in {} ({rate})", format_duration(elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_count_rate_and_eta() {
        let line = progress_line("photos", 120, 1000, Duration::from_secs(15));
        assert_eq!(line, "photos: 120/1000 (12%), 8.0/s, eta 1m50s");
        assert_eq!(
            progress_line("texts", 5000, 40000, Duration::from_secs(10)),
            "texts: 5000/40000 (12%), 500/s, eta 1m10s"
        );
        assert_eq!(progress_line("photos", 0, 10, Duration::ZERO), "photos: 0/10 (0%), ?/s, eta unknown");
        assert_eq!(progress_line("photos", 0, 10, Duration::from_secs(3)), "photos: 0/10 (0%), 0.00/s, eta unknown");
        assert_eq!(
            finish_line("photos", 1000, 1000, Duration::from_secs(125)),
            "photos: 1000/1000 done in 2m05s (8.0/s)"
        );
    }

    #[test]
    fn rates_and_durations_format_compactly() {
        assert_eq!(rate(30, Duration::from_secs(4)), Some(7.5));
        assert_eq!(rate(30, Duration::ZERO), None);
        assert_eq!(format_rate(1234.4), "1234/s");
        assert_eq!(format_rate(12.34), "12.3/s");
        assert_eq!(format_rate(0.4199), "0.42/s");
        assert_eq!(format_duration(Duration::from_millis(44_600)), "45s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m07s");
        assert_eq!(format_duration(Duration::from_secs(2 * 3600 + 5 * 60 + 59)), "2h05m");
        assert_eq!(eta(50, 100, Duration::from_secs(20)), Some(Duration::from_secs(20)));
        assert_eq!(eta(0, 100, Duration::from_secs(20)), None);
        assert_eq!(eta(100, 100, Duration::from_secs(20)), Some(Duration::ZERO));
    }

    #[test]
    fn a_line_is_due_every_tenth_or_every_ten_seconds() {
        let quiet = Duration::from_secs(1);
        assert!(!line_due(5, 100, 0, quiet), "5% is still in the first tenth");
        assert!(line_due(10, 100, 0, quiet), "10% starts the second tenth");
        assert!(!line_due(19, 100, 1, quiet));
        assert!(line_due(35, 100, 1, quiet), "a batch may skip a tenth");
        assert!(line_due(11, 100, 1, LOG_EVERY), "ten quiet seconds");
        assert!(!line_due(11, 100, 1, LOG_EVERY - Duration::from_millis(1)));
        assert!(line_due(0, 0, 0, quiet), "nothing to do counts as done");
    }

    #[test]
    fn log_mode_counts_without_a_terminal() {
        let mut p = Progress::lines(3, "things");
        p.inc(1);
        p.inc(2);
        match &p.inner {
            Inner::Log(s) => assert_eq!((s.done, s.total, s.last_tenth), (3, 3, 3)),
            Inner::Bar(_) => panic!("lines() made a bar"),
        }
        p.finish();
    }
}
