//! A timer task per token: "refresh due" at its refresh point, and the end of its use at the
//! end of its usable life, even when its refresh has stalled.
//!
//! The timer is identified by an id; it changes the state word only while it is the live one,
//! so replacing a timer never disturbs its successor. When its runtime shuts down, the task is
//! dropped and its guard ends the token's fast-path use: lookups then take the slow path, which
//! reads the clock and arms a new timer on their own runtime.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::hit::{CLOCK, DUE};
use super::{next_id, Entry, Slow, TokenCache};

impl TokenCache {
    /// Publishes `entry` for hits and arms its timer.
    pub(super) fn install(self: &Arc<Self>, slow: &mut Slow, entry: Arc<Entry>) {
        self.current.store(Some(Arc::clone(&entry)));
        self.publish(&entry, clock_bit(), Instant::now());
        self.arm(slow, &entry, entry.refresh_at);
    }

    /// (Re)starts the timer of `entry`: "refresh due" at `due_at`, unusable at `use_until`.
    pub(super) fn arm(self: &Arc<Self>, slow: &mut Slow, entry: &Arc<Entry>, due_at: Instant) {
        self.disarm(slow);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run a timer: leave the fast path off; the slow path reads the clock.
            self.unpublish();
            return;
        };
        let cache = Arc::downgrade(self);
        let gen = entry.gen;
        let use_until = entry.use_until;
        let timer_id = next_id();
        slow.armed_gen = gen;
        self.armed_timer.store(timer_id, Ordering::Release);
        slow.timer = Some(
            runtime
                .spawn(async move {
                    let _end_of_use = EndOfUse {
                        cache: cache.clone(),
                        gen,
                        timer_id,
                    };
                    tokio::time::sleep_until(due_at).await;
                    if let Some(cache) = cache.upgrade() {
                        cache.update_if_current(gen, |s| s | DUE);
                    }
                    tokio::time::sleep_until(use_until).await;
                    // Dropping `_end_of_use` ends the token's use.
                })
                .abort_handle(),
        );
    }

    /// Stops the current timer; the caller publishes the new state.
    pub(super) fn disarm(&self, slow: &mut Slow) {
        self.armed_timer.store(0, Ordering::Release);
        slow.armed_gen = 0;
        if let Some(timer) = slow.timer.take() {
            timer.abort();
        }
    }

    /// Whether `entry` has a live timer (its runtime may have gone away since it was armed).
    pub(super) fn is_armed(&self, slow: &Slow, entry: &Entry) -> bool {
        slow.armed_gen == entry.gen && self.armed_timer.load(Ordering::Acquire) != 0
    }
}

/// `CLOCK` unless the current runtime is a multi-thread one, which fires timers on time.
pub(super) fn clock_bit() -> u64 {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => 0,
        _ => CLOCK,
    }
}

/// Ends a token's fast-path use when its timer ends (at `use_until`, or when the runtime that
/// ran it shuts down), unless the timer was replaced meanwhile. Takes no lock: it may run
/// wherever the runtime drops the task.
struct EndOfUse {
    cache: Weak<TokenCache>,
    gen: u64,
    timer_id: u64,
}

impl Drop for EndOfUse {
    fn drop(&mut self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        if cache
            .armed_timer
            .compare_exchange(self.timer_id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // replaced by a newer timer, which now guards the state
        }
        cache.update_if_current(self.gen, |_| 0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{cache_with, manual_entry, settle, Counting};
    use super::*;

    /// The timer marks the refresh due at the refresh point and ends hits at the end of use.
    #[tokio::test(start_paused = true)]
    async fn the_timer_marks_due_then_ends_use() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(100)));
        let now = Instant::now();
        let entry = manual_entry(now + Duration::from_secs(10), now + Duration::from_secs(20));
        {
            let mut slow = cache.lock();
            cache.install(&mut slow, Arc::clone(&entry));
        }
        let state = || cache.state.load(Ordering::Acquire);
        assert_eq!(state() & DUE, 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        assert_ne!(state() & DUE, 0, "due at the refresh point");
        assert_eq!(cache.published_gen(), entry.gen);
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(state(), 0, "unusable at the end of use");
    }

    /// A replaced timer's end does not touch its successor's token.
    #[tokio::test(start_paused = true)]
    async fn a_replaced_timer_leaves_its_successor_alone() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(100)));
        let now = Instant::now();
        let first = manual_entry(now + Duration::from_secs(5), now + Duration::from_secs(5));
        let second = manual_entry(now + Duration::from_secs(50), now + Duration::from_secs(60));
        {
            let mut slow = cache.lock();
            cache.install(&mut slow, Arc::clone(&first));
            cache.install(&mut slow, Arc::clone(&second));
            assert!(cache.is_armed(&slow, &second));
            assert!(!cache.is_armed(&slow, &first));
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        settle().await;
        assert_eq!(cache.published_gen(), second.gen);
        assert!(cache.cached().is_some());
    }

    /// A timer whose runtime shut down ends the fast path; the slow path then re-arms.
    #[test]
    fn a_runtime_that_goes_away_ends_the_fast_path() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let entry = first.block_on(cache.entry()).unwrap();
        assert_eq!(cache.published_gen(), entry.gen);
        drop(first);
        assert_eq!(
            cache.published_gen(),
            0,
            "the timer's drop ended the fast path"
        );
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let again = second.block_on(cache.entry()).unwrap();
        assert_eq!(again.gen, entry.gen, "the same token, re-armed");
        assert_eq!(cache.published_gen(), entry.gen);
    }

    #[test]
    fn clock_bit_by_runtime_flavour() {
        assert_eq!(clock_bit(), CLOCK, "no runtime");
        let current = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current.block_on(async { clock_bit() }), CLOCK);
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert_eq!(multi.block_on(async { clock_bit() }), 0);
    }

    /// A token installed already past its refresh point (a slow answer, a timer re-armed on
    /// another runtime) is due at once, and stays due when its timer fires.
    #[tokio::test(start_paused = true)]
    async fn a_token_installed_past_its_refresh_point_stays_due() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(100)));
        let now = Instant::now();
        let entry = manual_entry(now, now + Duration::from_secs(20));
        {
            let mut slow = cache.lock();
            cache.install(&mut slow, Arc::clone(&entry));
        }
        assert_ne!(
            cache.state.load(Ordering::Acquire) & DUE,
            0,
            "due when published"
        );
        settle().await;
        assert_ne!(
            cache.state.load(Ordering::Acquire) & DUE,
            0,
            "still due after the timer fired"
        );
        assert_eq!(cache.published_gen(), entry.gen);
    }
}
