//! The hot path: the state word and the per-thread slots.
//!
//! A hit is one atomic load of the state word, one thread-local slot tagged with the token's
//! generation, and one clone of the header value held there. Everything else (no token, a
//! refresh due, a slot to fill, a clock check that failed, thread teardown) is in one `#[cold]`
//! function, so the common case compiles to a short straight line.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use super::{Credential, Entry, TokenCache};
use crate::stats::Counters;

/// The "refresh due" bit of the state word; the generation sits above the flag bits.
pub(super) const DUE: u64 = 1;
/// The "check the clock on a hit" bit of the state word: the token's timer runs on a runtime
/// that may not be driven between lookups.
pub(super) const CLOCK: u64 = 2;
/// The "the API accepted this token" bit of the state word (also kept in `Entry::accepted`):
/// once set, marking the token accepted again is one relaxed load.
pub(super) const ACCEPTED: u64 = 4;
/// Where the generation starts in the state word.
pub(super) const GEN_SHIFT: u32 = 3;

/// The generation a state word names (zero: no usable token).
pub(super) fn gen_of(state: u64) -> u64 {
    state >> GEN_SHIFT
}

const SLOTS: usize = 8;
/// Hits are counted per thread and added to the shared counter in batches, so the hot path
/// never writes a cache line another thread reads.
const HIT_BATCH: u64 = 64;

struct Slot {
    cache: u64,
    gen: u64,
    header: Option<HeaderValue>,
    /// The token's usable life, for hits that must read the clock (`CLOCK`).
    use_until: Option<Instant>,
    hits: u64,
    counters: Option<Arc<Counters>>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        cache: 0,
        gen: 0,
        header: None,
        use_until: None,
        hits: 0,
        counters: None,
    };

    #[cold]
    #[inline(never)]
    fn flush(&mut self) {
        if self.hits > 0 {
            if let Some(c) = &self.counters {
                c.cache_hits.fetch_add(self.hits, Ordering::Relaxed);
            }
            self.hits = 0;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static HIT_SLOTS: RefCell<[Slot; SLOTS]> = const { RefCell::new([Slot::EMPTY; SLOTS]) };
}

impl TokenCache {
    /// The credential of the current token if it is usable, without lock, await or
    /// allocation. Starts a background refresh when one is due.
    #[inline]
    pub(crate) fn cached(self: &Arc<Self>) -> Option<Credential> {
        let state = self.state.load(Ordering::Acquire);
        if state != 0 && state & DUE == 0 {
            let id = self.id;
            let gen = gen_of(state);
            let hit = HIT_SLOTS.try_with(|slots| {
                let mut slots = slots.try_borrow_mut().ok()?;
                let slot = &mut slots[(id % SLOTS as u64) as usize];
                if slot.cache != id || slot.gen != gen {
                    return None;
                }
                if state & CLOCK != 0 && slot.use_until.is_none_or(|t| Instant::now() >= t) {
                    return None;
                }
                slot.hits += 1;
                if slot.hits >= HIT_BATCH {
                    slot.flush();
                }
                slot.header.clone()
            });
            if let Ok(Some(header)) = hit {
                return Some(Credential { header, gen });
            }
        }
        self.cached_cold(state)
    }

    /// Everything but the common hit.
    #[cold]
    #[inline(never)]
    fn cached_cold(self: &Arc<Self>, state: u64) -> Option<Credential> {
        if state == 0 {
            return None;
        }
        let gen = gen_of(state);
        let entry = self.current.load_full().filter(|e| e.gen == gen)?;
        if state & CLOCK != 0 && Instant::now() >= entry.use_until {
            return None; // the slow path reads the clock again and decides
        }
        self.fill_slot(&entry);
        if state & DUE != 0 {
            self.refresh_ahead();
        }
        Some(entry.credential())
    }

    /// Puts `entry` in this thread's slot for this cache, and counts the hit.
    fn fill_slot(&self, entry: &Entry) {
        let _ = HIT_SLOTS.try_with(|slots| {
            if let Ok(mut slots) = slots.try_borrow_mut() {
                let slot = &mut slots[(self.id % SLOTS as u64) as usize];
                if slot.cache != self.id || slot.gen != entry.gen {
                    slot.flush();
                    if slot.cache != self.id {
                        slot.counters = Some(Arc::clone(&self.shared.counters));
                    }
                    slot.cache = self.id;
                    slot.gen = entry.gen;
                    slot.header = Some(entry.header.clone());
                    slot.use_until = Some(entry.use_until);
                }
                slot.hits += 1;
            }
        });
    }

    /// Makes `entry` the token hits see: its generation, the clock bit of the runtime its
    /// timer runs on, the "refresh due" bit if its refresh point has passed, and the
    /// "accepted" bit if the API accepted it.
    pub(super) fn publish(&self, entry: &Entry, clock: u64, now: Instant) {
        let due = if now >= entry.refresh_at { DUE } else { 0 };
        let accepted = if entry.accepted.load(Ordering::Acquire) {
            ACCEPTED
        } else {
            0
        };
        self.state.store(
            entry.gen << GEN_SHIFT | clock | due | accepted,
            Ordering::Release,
        );
    }

    /// The API accepted the token of generation `gen` (an answer that was not a token
    /// rejection). On every answer, so the common case (already marked) is one relaxed load.
    #[inline]
    pub(crate) fn mark_accepted(&self, gen: u64) {
        let state = self.state.load(Ordering::Relaxed);
        if gen_of(state) == gen && state & ACCEPTED != 0 {
            return;
        }
        self.mark_accepted_cold(gen);
    }

    /// The first acceptance of a token (or one whose state word was cleared): marks the entry,
    /// ends the limiter's backoff, and sets the bit.
    #[cold]
    #[inline(never)]
    fn mark_accepted_cold(&self, gen: u64) {
        let Some(entry) = self.current.load_full().filter(|e| e.gen == gen) else {
            return; // already replaced: nothing to mark
        };
        if !entry.accepted.swap(true, Ordering::AcqRel) {
            self.lock().strikes = 0;
            #[cfg(feature = "fleet")]
            if let (Some(fleet), Some(tag)) = (&self.shared.fleet, &entry.fleet) {
                fleet.accepted(tag);
            }
        }
        self.update_if_current(gen, |s| s | ACCEPTED);
    }

    /// No usable token for hits: the next lookup takes the slow path.
    pub(super) fn unpublish(&self) {
        self.state.store(0, Ordering::Release);
    }

    /// Ends hits on `gen` if it is still the published token; `then` is the new state (zero,
    /// or the same with `DUE`).
    pub(super) fn update_if_current(&self, gen: u64, then: impl Fn(u64) -> u64) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (gen_of(s) == gen).then(|| then(s))
            });
    }

    /// Clears the "refresh due" bit; returns whether this caller cleared it (so it, and only
    /// it, starts the refresh). Hits take the fast path again at once, instead of the cold path
    /// for as long as the refresh runs.
    pub(super) fn take_due(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        state & DUE != 0
            && self
                .state
                .compare_exchange(state, state & !DUE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Whether the published state says "refresh due".
    #[cfg(test)]
    pub(super) fn is_due(&self) -> bool {
        self.state.load(Ordering::Acquire) & DUE != 0
    }

    /// The generation hits currently see (zero: none).
    #[cfg(test)]
    pub(super) fn published_gen(&self) -> u64 {
        gen_of(self.state.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{cache_with, manual_entry, Counting};
    use super::*;

    /// A hit serves the token the slow path fetched, from this thread's slot, and counts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_hit_serves_the_fetched_token_and_counts() {
        let (cache, source) = cache_with(Counting::new(Duration::from_secs(3600)));
        assert!(cache.cached().is_none(), "cold cache: no hit");
        let fetched = cache.entry().await.unwrap();
        for _ in 0..200 {
            let hit = cache.cached().expect("a hit");
            assert_eq!(hit.gen, fetched.gen);
            assert_eq!(hit.header, "Bearer tok-1");
        }
        assert_eq!(source.calls(), 1);
        // 200 hits, published in batches of 64 (the rest when the thread's slot is flushed).
        let counted = cache.shared.counters.snapshot().cache_hits;
        assert!((192..=200).contains(&counted), "{counted}");
    }

    /// Marking a token accepted sets the entry's flag and the state bit, once; a replaced
    /// token's acceptance marks nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn marking_accepted_sets_the_flag_and_the_bit_of_the_current_token_only() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let entry = cache.entry().await.unwrap();
        let state = || cache.state.load(Ordering::Acquire);
        assert_eq!(state() & ACCEPTED, 0);
        cache.lock().strikes = 3;
        cache.mark_accepted(entry.gen + 1);
        assert!(
            !entry.accepted.load(Ordering::Acquire),
            "another generation"
        );
        assert_eq!(cache.lock().strikes, 3);
        cache.mark_accepted(entry.gen);
        assert!(entry.accepted.load(Ordering::Acquire));
        assert_ne!(state() & ACCEPTED, 0);
        assert_eq!(
            cache.lock().strikes,
            0,
            "an accepted token ends the backoff"
        );
        assert_eq!(
            cache.cached().map(|c| c.gen),
            Some(entry.gen),
            "still a hit"
        );
        // Re-published (a new timer on another runtime): the bit comes from the entry.
        cache.publish(&entry, 0, Instant::now());
        assert_ne!(state() & ACCEPTED, 0);
    }

    /// The state word decides: a stale generation in the slot, or a cleared state, is no hit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_state_word_decides_what_is_a_hit() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let first = cache.entry().await.unwrap();
        assert!(cache.cached().is_some());
        cache.unpublish();
        assert!(cache.cached().is_none(), "a cleared state is never a hit");
        cache.publish(&first, 0, Instant::now());
        assert_eq!(cache.published_gen(), first.gen);
        cache.update_if_current(first.gen + 1, |_| 0);
        assert_eq!(
            cache.published_gen(),
            first.gen,
            "another generation is left alone"
        );
        cache.update_if_current(first.gen, |_| 0);
        assert_eq!(cache.published_gen(), 0);
    }

    /// With the clock bit, a hit reads the clock: a token past its usable life is not handed
    /// out even though no timer ended it. Without the bit, the timer is trusted.
    #[tokio::test(start_paused = true)]
    async fn with_the_clock_bit_a_hit_checks_expiry() {
        for (clock, served_after_expiry) in [(CLOCK, false), (0, true)] {
            let (cache, _source) = cache_with(Counting::new(Duration::from_secs(10)));
            let now = Instant::now();
            let entry = manual_entry(
                now + Duration::from_secs(100),
                now + Duration::from_secs(10),
            );
            cache.current.store(Some(Arc::clone(&entry)));
            cache.publish(&entry, clock, now);
            assert!(cache.cached().is_some(), "fills this thread's slot");
            assert!(cache.cached().is_some(), "served from the slot");
            tokio::time::advance(Duration::from_secs(10)).await; // no timer is armed
            assert_eq!(
                cache.cached().is_some(),
                served_after_expiry,
                "clock bit {clock}"
            );
        }
    }

    /// A lookup fills this thread's slot with the token; the next ones are served from the slot
    /// and counted there (published in batches); a new token refills it at its first lookup.
    #[tokio::test(start_paused = true)]
    async fn the_slot_holds_the_token_and_counts_its_hits_until_a_new_one() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let slot = || {
            HIT_SLOTS.with(|slots| {
                let slots = slots.borrow();
                let slot = &slots[(cache.id % SLOTS as u64) as usize];
                (slot.cache, slot.gen, slot.hits, slot.header.clone())
            })
        };
        let entry = cache.entry().await.unwrap();
        assert!(cache.cached().is_some());
        let (id, gen, filled, header) = slot();
        assert_eq!((id, gen), (cache.id, entry.gen));
        assert_eq!(header.as_ref(), Some(&entry.header));
        assert!(filled >= 1, "the filling lookup is counted");
        for _ in 0..10 {
            assert!(cache.cached().is_some());
        }
        assert_eq!(
            slot().2,
            filled + 10,
            "counted in the slot, not yet published"
        );
        let now = Instant::now();
        let next = manual_entry(
            now + Duration::from_secs(100),
            now + Duration::from_secs(50),
        );
        cache.current.store(Some(Arc::clone(&next)));
        cache.publish(&next, 0, now);
        assert_eq!(cache.cached().map(|c| c.gen), Some(next.gen));
        let (id, gen, hits, header) = slot();
        assert_eq!(
            (id, gen, hits),
            (cache.id, next.gen, 1),
            "refilled, counting afresh"
        );
        assert_eq!(header.as_ref(), Some(&next.header));
    }
}
