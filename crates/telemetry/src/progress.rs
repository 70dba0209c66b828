//! A progress line on stderr for operator commands that run long (`walcast sink rebuild`,
//! `walcast snapshot start`):
//!
//! ```text
//! rebuild replica-2 [#########.....................]  30.0%  30000/100000 events  12000 ev/s  ETA 6s
//! ```
//!
//! On a terminal the line is redrawn in place at most every 200 ms; otherwise (a log file, CI)
//! one line is written every 2 s.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What is counted: `events` with rate `ev/s`, `rows` with `rows/s`.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    pub name: &'static str,
    pub rate: &'static str,
}

/// Events of a topic.
pub const EVENTS: Unit = Unit {
    name: "events",
    rate: "ev/s",
};

/// Rows of a table.
pub const ROWS: Unit = Unit {
    name: "rows",
    rate: "rows/s",
};

/// See the module docs.
#[derive(Debug)]
pub struct Progress {
    label: String,
    unit: Unit,
    total: u64,
    done: u64,
    started: Instant,
    last: Option<Instant>,
    enabled: bool,
    tty: bool,
}

impl Progress {
    /// A line starting with `label`, towards `total`; draws nothing unless `enabled`.
    pub fn new(label: &str, unit: Unit, total: u64, enabled: bool) -> Progress {
        Progress {
            label: label.to_owned(),
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last: None,
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// `done` so far (redrawn when due).
    pub fn update(&mut self, done: u64) {
        self.done = done;
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|l| l.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        self.draw(false);
    }

    /// A new total (an estimate that changed).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// The final line, at 100%.
    pub fn finish(&mut self) {
        self.done = self.done.max(self.total);
        self.draw(true);
    }

    /// The final line as it stands (stopped before the end).
    pub fn abandon(&mut self) {
        self.draw(true);
    }

    fn draw(&self, last: bool) {
        if !self.enabled {
            return;
        }
        let line = render(
            &self.label,
            self.unit,
            self.done,
            self.total,
            self.started.elapsed(),
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
    }
}

/// One progress line.
pub fn render(label: &str, unit: Unit, done: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = ((frac * WIDTH as f64) as u64).min(WIDTH);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if done >= total {
        format!("done in {:.1}s", elapsed.as_secs_f64())
    } else if rate > 0.0 {
        format!("ETA {:.0}s", (total - done) as f64 / rate)
    } else {
        "ETA ?".to_owned()
    };
    format!(
        "{label} [{}{}] {:5.1}%  {done}/{total} {}  {rate:.0} {}  {eta}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        frac * 100.0,
        unit.name,
        unit.rate,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn progress_line_shows_percent_rate_and_eta() {
        let line = render(
            "rebuild replica-2",
            EVENTS,
            500,
            1000,
            Duration::from_secs(1),
        );
        assert!(line.starts_with("rebuild replica-2 ["), "{line}");
        assert!(line.contains(" 50.0%"), "{line}");
        assert!(
            line.contains("500/1000 events")
                && line.contains("500 ev/s")
                && line.contains("ETA 1s"),
            "{line}"
        );
        assert!(render("r", EVENTS, 0, 0, Duration::from_secs(1)).contains("done"));
        let rows = render("snapshot s", ROWS, 20, 10, Duration::from_secs(2));
        assert!(
            rows.contains("100.0%") && rows.contains("10 rows/s"),
            "{rows}"
        );
    }
}
