//! One fetch: the token source under the load timeout, transient failures retried with
//! backoff.
//!
//! [`TokenCache::obtain`] is the one call through which every token enters the cache; the
//! single-flight layer ([`flight`](super::flight)) runs it in a task of its own. With a fleet,
//! it goes through the fleet's store first ([`fleet`](super::fleet)).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Entry, TokenCache};
use crate::{Error, Token};

/// A token on its way into the cache.
#[derive(Debug)]
pub(crate) struct Obtained {
    pub(crate) token: Token,
    /// When it was requested (or read from the store): its schedule counts from then.
    pub(crate) started: Instant,
    /// Its refresh point and end of use after `started`, when they were decided already (a
    /// token adopted from the fleet keeps the writer's); else the policy decides.
    pub(crate) schedule: Option<(Duration, Duration)>,
    /// Where the fleet's store keeps it.
    #[cfg(feature = "fleet")]
    pub(crate) fleet: Option<crate::fleet::FleetTag>,
}

impl Obtained {
    /// A token the source just gave.
    pub(crate) fn fetched(token: Token, started: Instant) -> Self {
        Self {
            token,
            started,
            schedule: None,
            #[cfg(feature = "fleet")]
            fleet: None,
        }
    }
}

/// Why a fetch runs (a tracing field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// A caller found no usable token.
    Demand,
    /// The refresh point of the current token passed.
    Ahead,
    /// The API rejected the current token.
    Forced,
}

impl Reason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Reason::Demand => "demand",
            Reason::Ahead => "refresh_ahead",
            Reason::Forced => "forced",
        }
    }
}

impl TokenCache {
    /// A new token. `prior` is the token this one replaces, if any: the rejected one for a
    /// forced refresh, the current one for a refresh ahead.
    pub(super) async fn obtain(
        &self,
        reason: Reason,
        prior: Option<Arc<Entry>>,
    ) -> Result<Obtained, Error> {
        #[cfg(feature = "fleet")]
        if let Some(fleet) = &self.shared.fleet {
            return self.obtain_through(fleet, reason, prior).await;
        }
        let _ = prior;
        self.fetch(reason)
            .await
            .map(|(token, started)| Obtained::fetched(token, started))
    }

    /// A new token from the source, and when it was requested (its lifetime counts from then).
    pub(super) async fn fetch(&self, reason: Reason) -> Result<(Token, Instant), Error> {
        let retry = &self.shared.policy.retry;
        let first = Instant::now();
        let mut attempt: u32 = 1;
        loop {
            let started = Instant::now();
            self.counters()
                .token_requests
                .fetch_add(1, Ordering::Relaxed);
            let span = tracing::debug_span!(
                "token_request",
                endpoint = %self.shared.endpoint,
                scopes = %self.scopes,
                attempt,
                reason = reason.as_str(),
            );
            let result = tracing::Instrument::instrument(self.fetch_once(), span.clone()).await;
            let error = match result {
                Ok(token) => {
                    tracing::debug!(
                        parent: &span,
                        expires_in = token.expires_in.map(|d| d.as_secs()),
                        outcome = "ok",
                        "token fetched"
                    );
                    return Ok((token, started));
                }
                Err(error) => error,
            };
            self.counters()
                .token_failures
                .fetch_add(1, Ordering::Relaxed);
            let delay = retry.delay(attempt, error.retry_after());
            let give_up = !error.is_transient()
                || attempt >= retry.max_attempts
                || first.elapsed().saturating_add(delay) > retry.max_elapsed;
            tracing::warn!(
                parent: &span,
                outcome = "error",
                error = %error,
                retry_in = ?(!give_up).then_some(delay),
                "token request failed"
            );
            if give_up {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One call of the source, bounded by the load timeout.
    async fn fetch_once(&self) -> Result<Token, Error> {
        let timeout = self.shared.policy.load_timeout;
        match tokio::time::timeout(timeout, self.shared.source.fetch_token(&self.scopes)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                endpoint: Arc::clone(&self.shared.endpoint),
                timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{cache_with_policy, Scripted};
    use super::*;
    use crate::policy::{CachePolicy, RetryPolicy};

    fn policy(attempts: u32) -> CachePolicy {
        CachePolicy {
            retry: RetryPolicy::default()
                .max_attempts(attempts)
                .initial_backoff(Duration::from_millis(100))
                .max_backoff(Duration::from_secs(1)),
            load_timeout: Duration::from_secs(2),
            ..CachePolicy::default()
        }
    }

    /// Transient failures are retried, with growing delays, until a token comes.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_a_token_comes() {
        let source = Scripted::new(vec![
            Scripted::transient(),
            Scripted::transient(),
            Scripted::ok("t"),
        ]);
        let (cache, source) = cache_with_policy(source, policy(3));
        let start = Instant::now();
        let (token, started) = cache.fetch(Reason::Demand).await.unwrap();
        assert_eq!(token.access_token.secret(), "t");
        assert_eq!(source.calls(), 3);
        // Two backoffs: [50, 100] ms then [100, 200] ms.
        let waited = started - start;
        assert!(
            waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300),
            "{waited:?}"
        );
        let stats = cache.shared.counters.snapshot();
        assert_eq!((stats.token_requests, stats.token_failures), (3, 2));
    }

    /// A failure that is not transient is returned at once; transient ones stop at
    /// `max_attempts`.
    #[tokio::test(start_paused = true)]
    async fn permanent_failures_and_max_attempts_stop_the_retries() {
        let (cache, source) =
            cache_with_policy(Scripted::new(vec![Scripted::permanent()]), policy(5));
        assert!(matches!(
            cache.fetch(Reason::Demand).await,
            Err(Error::OAuth { .. })
        ));
        assert_eq!(source.calls(), 1);

        let always = Scripted::new(vec![Scripted::transient(); 10]);
        let (cache, source) = cache_with_policy(always, policy(3));
        assert!(cache
            .fetch(Reason::Demand)
            .await
            .unwrap_err()
            .is_transient());
        assert_eq!(source.calls(), 3);
    }

    /// Issue 8: a source that hangs fails with a timeout naming the source, after the load
    /// timeout, and counts as a failed (transient, so retried) attempt.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_source_times_out_after_the_load_timeout() {
        let source = Scripted::new(vec![Scripted::hang(), Scripted::ok("after")]);
        let (cache, source) = cache_with_policy(source, policy(2));
        let start = Instant::now();
        let (token, started) = cache.fetch(Reason::Demand).await.unwrap();
        assert_eq!(token.access_token.secret(), "after");
        assert!(
            started - start >= Duration::from_secs(2),
            "waited the load timeout"
        );
        assert_eq!(source.calls(), 2);

        let (cache, _) = cache_with_policy(Scripted::new(vec![Scripted::hang()]), policy(1));
        match cache.fetch(Reason::Demand).await {
            Err(Error::Timeout { endpoint, timeout }) => {
                assert_eq!(&*endpoint, "test source");
                assert_eq!(timeout, Duration::from_secs(2));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cache.shared.counters.snapshot().token_failures, 1);
    }

    /// `max_elapsed` stops retries that would start too late, even with absurd delays
    /// (issue 12: the sum saturates instead of overflowing).
    #[tokio::test(start_paused = true)]
    async fn max_elapsed_bounds_retries_and_the_sum_saturates() {
        let huge = CachePolicy {
            retry: RetryPolicy::default()
                .max_attempts(u32::MAX)
                .initial_backoff(Duration::MAX)
                .max_backoff(Duration::MAX)
                .max_elapsed(Duration::from_secs(30)),
            ..CachePolicy::default()
        };
        let (cache, source) =
            cache_with_policy(Scripted::new(vec![Scripted::transient(); 3]), huge);
        assert!(cache.fetch(Reason::Demand).await.is_err());
        assert_eq!(
            source.calls(),
            1,
            "the first backoff already passes max_elapsed"
        );
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<_> = [Reason::Demand, Reason::Ahead, Reason::Forced]
            .iter()
            .map(|r| r.as_str())
            .collect();
        assert_eq!(names, ["demand", "refresh_ahead", "forced"]);
    }
}
