//! `[snapshot] max_rows_per_sec`: a token bucket over rows, holding at most one second of
//! rows, so a snapshot never bursts above the limit for longer than that.

use std::time::{Duration, Instant};

/// Rows per second, at most; 0 = no limit.
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: f64,
    /// May go below 0: a row taken on credit, waited for by its taker.
    tokens: f64,
    last: Instant,
}

impl Throttle {
    pub(crate) fn new(rows_per_sec: u32) -> Throttle {
        Throttle {
            rate: f64::from(rows_per_sec),
            tokens: f64::from(rows_per_sec),
            last: Instant::now(),
        }
    }

    /// Waits until one more row may go.
    pub(crate) async fn take(&mut self) {
        if let Some(wait) = self.reserve(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one row at `now`; how long its taker must wait first, if at all.
    fn reserve(&mut self, now: Instant) -> Option<Duration> {
        if self.rate <= 0.0 {
            return None;
        }
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate.max(1.0));
        self.last = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn holds_rows_to_the_rate_after_one_second_of_burst() {
        let mut t = Throttle::new(100);
        let start = t.last;
        // 100 rows of burst go at once.
        for _ in 0..100 {
            assert_eq!(t.reserve(start), None);
        }
        // The next ones wait 10 ms each, cumulatively, when taken at the same instant.
        let waits: Vec<Duration> = (0..3).map(|_| t.reserve(start).unwrap()).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![10, 20, 30]);
        // A second later the debt is paid and 96 more rows are earned (the bucket's size).
        let later = start + Duration::from_millis(1030);
        assert_eq!(t.reserve(later), None);
        let mut free = Throttle::new(0);
        assert!((0..1000).all(|_| free.reserve(start).is_none()));
    }
}
