//! Waiting on a condition with a deadline, never on a bare sleep.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::KitError;

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);

/// Polls `ready` every 100 ms until it returns true, or fails naming `what` once `timeout`
/// has passed (the condition is always checked once more at the deadline).
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), KitError> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, timeout));
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for a condition that awaits (a query, an HTTP request) inside a Tokio runtime.
pub async fn wait_until_async<F, Fut>(
    what: &str,
    timeout: Duration,
    mut ready: F,
) -> Result<(), KitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(what, timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn timed_out(what: &str, timeout: Duration) -> KitError {
    KitError::TimedOut {
        what: what.to_owned(),
        timeout,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_holds_returns_and_one_that_never_does_is_named() {
        let mut calls = 0;
        assert!(
            wait_until("the third call", Duration::from_secs(5), || {
                calls += 1;
                calls == 3
            })
            .is_ok()
        );
        let e = wait_until("never", Duration::from_millis(150), || false).unwrap_err();
        assert!(e.to_string().contains("never"), "{e}");
        assert!(e.to_string().contains("150ms"), "{e}");
    }

    #[tokio::test]
    async fn the_async_form_waits_on_a_future() {
        let start = Instant::now();
        let r = wait_until_async("a second", Duration::from_secs(5), || async {
            start.elapsed() >= Duration::from_millis(200)
        })
        .await;
        assert!(r.is_ok());
        let e = wait_until_async("never", Duration::from_millis(100), || async { false })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("never"), "{e}");
    }
}
