//! The circuit breaker in front of a fleet's store, and its rate-limited log.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Failures in a row that open the breaker.
pub(crate) const FAILURES_TO_OPEN: u32 = 3;
/// How long the log stays quiet after it warned about the store.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    /// Failures in a row.
    failures: u32,
    /// While set and in the future, the store is not asked.
    open_until: Option<Instant>,
    /// How long the breaker opens next time (doubles while the store keeps failing).
    next_open: Duration,
    /// When the last warning was logged, and how many were left out since.
    logged_at: Option<Instant>,
    quiet: u64,
}

/// Stops asking a store that keeps failing, and asks it again later.
///
/// Closed: every call goes through. After [`FAILURES_TO_OPEN`] failures in a row it opens for
/// `open_for` (doubling, up to eight times that, while the store keeps failing): calls are
/// skipped. Then one call goes through (half-open): a success closes it, a failure opens it
/// again.
#[derive(Debug)]
pub(crate) struct Breaker {
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(open_for: Duration) -> Self {
        Self {
            open_for,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Never held across a panic point that could leave it half-updated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the store now.
    pub(crate) fn allows(&self) -> bool {
        let mut state = self.state();
        match state.open_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: let this call through; its outcome decides.
                state.open_until = None;
                state.failures = FAILURES_TO_OPEN - 1;
                true
            }
            None => true,
        }
    }

    pub(crate) fn success(&self) {
        let mut state = self.state();
        state.failures = 0;
        state.open_until = None;
        state.next_open = Duration::ZERO;
    }

    /// Records a failure; returns whether the breaker opened.
    pub(crate) fn failure(&self) -> bool {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        if state.failures < FAILURES_TO_OPEN {
            return false;
        }
        let open = if state.next_open.is_zero() {
            self.open_for
        } else {
            state.next_open
        };
        state.next_open = open.saturating_mul(2).min(self.open_for.saturating_mul(8));
        state.open_until = Instant::now().checked_add(open);
        true
    }

    /// Whether a warning may be logged now (one per ten seconds), and how many were left out
    /// since the last one.
    pub(crate) fn may_log(&self) -> Option<u64> {
        let mut state = self.state();
        let now = Instant::now();
        if state
            .logged_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOG_EVERY)
        {
            state.quiet = state.quiet.saturating_add(1);
            return None;
        }
        state.logged_at = Some(now);
        Some(std::mem::take(&mut state.quiet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_failures_in_a_row_and_half_opens_later() {
        let breaker = Breaker::new(Duration::from_secs(5));
        assert!(breaker.allows());
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        breaker.success();
        assert!(!breaker.failure());
        assert!(!breaker.failure());
        assert!(breaker.failure(), "the third in a row opens it");
        assert!(!breaker.allows());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(!breaker.allows());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.allows(), "half-open after 5 s");
        // One failure while half-open opens it again, for twice as long.
        assert!(breaker.failure());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!breaker.allows());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(breaker.allows());
        breaker.success();
        assert!(breaker.allows());
        assert!(
            !breaker.failure(),
            "closed again: one failure does not open it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_time_doubles_up_to_eight_times() {
        let breaker = Breaker::new(Duration::from_secs(1));
        let mut opened_for = Vec::new();
        for _ in 0..3 {
            breaker.failure();
        }
        for _ in 0..6 {
            let start = Instant::now();
            while !breaker.allows() {
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            opened_for.push(start.elapsed().as_millis());
            breaker.failure();
        }
        assert_eq!(opened_for, [1000, 2000, 4000, 8000, 8000, 8000]);
    }

    #[tokio::test(start_paused = true)]
    async fn warnings_are_rate_limited_and_count_what_they_left_out() {
        let breaker = Breaker::new(Duration::from_secs(1));
        assert_eq!(breaker.may_log(), Some(0));
        assert_eq!(breaker.may_log(), None);
        assert_eq!(breaker.may_log(), None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(breaker.may_log(), Some(2));
    }
}
