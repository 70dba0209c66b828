//! Deterministic exponential backoff between reconnection attempts.

use std::time::Duration;

/// `initial * 2^attempt`, capped at `max`; no jitter, so tests and operators
/// can predict the schedule (100 ms, 200 ms, 400 ms, ... 30 s, 30 s, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Give up after this many consecutive failed attempts (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based), or `None` to give up.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if self.max_attempts.is_some_and(|m| attempt >= m) {
            return None;
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        Some(self.initial.saturating_mul(factor).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::default();
        let ms = |a| b.delay(a).map(|d| d.as_millis());
        assert_eq!(ms(0), Some(100));
        assert_eq!(ms(1), Some(200));
        assert_eq!(ms(3), Some(800));
        assert_eq!(ms(9), Some(30_000));
        assert_eq!(ms(1000), Some(30_000));
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let b = Backoff {
            max_attempts: Some(2),
            ..Backoff::default()
        };
        assert!(b.delay(1).is_some());
        assert_eq!(b.delay(2), None);
    }
}
