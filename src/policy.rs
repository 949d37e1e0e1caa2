//! Timing policy: when tokens are refreshed, how failed token requests are retried and backed
//! off, and the named defaults of each.

use std::time::Duration;

/// Start refreshing at this fraction of a token's lifetime, by default (0.75: AWS Cognito's
/// recommendation).
pub const DEFAULT_REFRESH_AT: f64 = 0.75;
/// Up to this fraction of the lifetime is taken off the refresh point at random, by default
/// (0.05), so a fleet started together does not refresh in lockstep.
pub const DEFAULT_REFRESH_JITTER: f64 = 0.05;
/// A token is never used within this margin of its expiry, by default (60 s). The margin is
/// at most a tenth of the token's lifetime, so short-lived tokens stay usable.
pub const DEFAULT_EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// The lifetime assumed when the server sends no `expires_in`, by default (5 minutes).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Lifetimes below this (including zero and negative `expires_in`) are raised to it (1 s), so
/// a server announcing `expires_in: 0` cannot turn every request into a token request.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// Lifetimes above this (ten years) are lowered to it, whatever announced them (a server's
/// `expires_in`, a [`TokenSource`](crate::TokenSource) returning `Duration::MAX`, a
/// [`default_lifetime`](crate::ClientCredentialsBuilder::default_lifetime)). Every delay the
/// cache computes (backoff, `Retry-After`, cooldown) is capped by it too, so no point in time is
/// ever out of range.
pub const MAX_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long one call of a token source may take before it fails with
/// [`Error::Timeout`](crate::Error::Timeout), by default (15 s; for the built-in endpoint, at
/// least its request timeout plus 5 s, so the request's own timeout fires first).
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(15);
/// After the API rejects a replacement token it never accepted, the next forced refresh waits
/// this long, by default (1 s), doubling with each such rejection up to
/// [`DEFAULT_FORCED_REFRESH_BACKOFF_MAX`]. A token the API accepted at least once is replaced at
/// once when rejected, however soon.
pub const DEFAULT_FORCED_REFRESH_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between forced refreshes of tokens the API never accepted, by default
/// (30 s): an API that rejects every token costs at most one token request per 30 s once the
/// backoff has grown.
pub const DEFAULT_FORCED_REFRESH_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The cache's timing settings, checked by `build()`.
#[derive(Debug, Clone)]
pub(crate) struct CachePolicy {
    pub(crate) refresh_at: f64,
    pub(crate) refresh_jitter: f64,
    pub(crate) expiry_margin: Duration,
    pub(crate) default_lifetime: Duration,
    pub(crate) forced_refresh_backoff: Duration,
    pub(crate) forced_refresh_backoff_max: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) load_timeout: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            refresh_at: DEFAULT_REFRESH_AT,
            refresh_jitter: DEFAULT_REFRESH_JITTER,
            expiry_margin: DEFAULT_EXPIRY_MARGIN,
            default_lifetime: DEFAULT_LIFETIME,
            forced_refresh_backoff: DEFAULT_FORCED_REFRESH_BACKOFF,
            forced_refresh_backoff_max: DEFAULT_FORCED_REFRESH_BACKOFF_MAX,
            retry: RetryPolicy::default(),
            load_timeout: DEFAULT_LOAD_TIMEOUT,
        }
    }
}

impl CachePolicy {
    /// How long after the last forced refresh the next may start for a token the API never
    /// accepted, when `strikes` forced refreshes ran since the API last accepted a token: none
    /// after zero (the API rejected the first token it was shown), then the backoff (the
    /// replacement of an accepted token was rejected too), doubling, up to its maximum. At most
    /// [`MAX_LIFETIME`].
    pub(crate) fn forced_refresh_wait(&self, strikes: u32) -> Duration {
        if strikes == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(strikes.saturating_sub(1).min(20));
        self.forced_refresh_backoff
            .saturating_mul(factor)
            .min(self.forced_refresh_backoff_max)
            .min(MAX_LIFETIME)
    }

    /// Every setting in its range; the message names the setting.
    pub(crate) fn check(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError::OutOfRange;
        let fraction = |f: f64| f.is_finite() && (0.0..=1.0).contains(&f);
        if !fraction(self.refresh_at) {
            return Err(OutOfRange("refresh_at must be a fraction from 0 to 1"));
        }
        if !fraction(self.refresh_jitter) {
            return Err(OutOfRange("refresh_jitter must be a fraction from 0 to 1"));
        }
        if self.load_timeout.is_zero() {
            return Err(OutOfRange("load_timeout must be more than zero"));
        }
        if self.retry.max_attempts == 0 {
            return Err(OutOfRange("retry_policy: max_attempts must be at least 1"));
        }
        Ok(())
    }
}

/// How failed token requests are retried, and how callers are held back afterwards.
///
/// Within one fetch, a transient failure ([`Error::is_transient`](crate::Error::is_transient):
/// connection failures, timeouts, 408, 429, 5xx) is retried after an exponential backoff with
/// full jitter (`initial_backoff * 2^(attempt-1)`, capped at `max_backoff`, times a random
/// factor in `[0.5, 1]`), or after the server's `Retry-After` (capped at `retry_after_cap`),
/// for at most `max_attempts` attempts and `max_elapsed` in all. OAuth errors such as
/// `invalid_client` are not retried.
///
/// After a fetch has failed, callers that have no usable token get the error at once
/// ([`Error::BackingOff`](crate::Error::BackingOff)) until a cooldown has passed: the same
/// exponential backoff, by the number of consecutive failed fetches, or the server's
/// `Retry-After` if longer. So during an outage there is at most one token request in flight
/// and at most one fetch per cooldown, whatever the request rate. A still-usable token keeps
/// being used meanwhile.
///
/// ```
/// use std::time::Duration;
/// use client_credentials::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .initial_backoff(Duration::from_millis(100))
///     .max_backoff(Duration::from_secs(10));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_elapsed: Duration,
    pub(crate) retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries within a fetch (one attempt); the cooldown after failures still applies.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Attempts per fetch, the first included (default 3; `build()` refuses 0).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The first backoff delay (default 200 ms).
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// The longest backoff delay, and the longest cooldown (default 30 s).
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// No retry starts later than this after the first attempt (default 30 s).
    pub fn max_elapsed(mut self, total: Duration) -> Self {
        self.max_elapsed = total;
        self
    }

    /// The longest `Retry-After` that is honoured (default 60 s); longer ones are cut to it.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.retry_after_cap = cap;
        self
    }

    /// The ceiling of the `n`-th backoff (n from 1): `initial * 2^(n-1)`, capped.
    pub(crate) fn ceiling(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The delay before attempt `attempt + 1`: the server's `Retry-After` (capped), else the
    /// jittered backoff. At most [`MAX_LIFETIME`].
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(after) => after.min(self.retry_after_cap).min(MAX_LIFETIME),
            None => jitter(self.ceiling(attempt)),
        }
    }

    /// How long callers are held back after `failures` consecutive failed fetches, given the
    /// server's `Retry-After` of the last one: the jittered backoff, or the (capped)
    /// `Retry-After` if longer. At most [`MAX_LIFETIME`].
    pub(crate) fn cooldown(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = jitter(self.ceiling(failures));
        match retry_after {
            Some(after) => backoff.max(after.min(self.retry_after_cap).min(MAX_LIFETIME)),
            None => backoff,
        }
    }
}

/// A random duration in `[d/2, d]`, `d` first capped at [`MAX_LIFETIME`] (so the product
/// cannot overflow).
fn jitter(d: Duration) -> Duration {
    d.min(MAX_LIFETIME).mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_secs(1));
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(4), Duration::from_millis(800));
        assert_eq!(p.ceiling(5), Duration::from_secs(1));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
        for n in 1..10 {
            let d = p.cooldown(n, None);
            assert!(d >= p.ceiling(n) / 2 && d <= p.ceiling(n), "{n}: {d:?}");
        }
        // A Retry-After longer than the backoff wins, up to its cap.
        assert_eq!(
            p.cooldown(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.cooldown(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
    }
}

#[cfg(test)]
mod saturation {
    //! Issue 12: every delay the policy computes stays in range, whatever the settings and the
    //! server say.
    use super::*;

    #[test]
    fn delays_from_absurd_settings_and_servers_saturate() {
        let p = RetryPolicy::default()
            .initial_backoff(Duration::MAX)
            .max_backoff(Duration::MAX)
            .retry_after_cap(Duration::MAX);
        for n in [1, 2, 30, u32::MAX] {
            assert!(p.delay(n, None) <= MAX_LIFETIME, "{n}");
            assert!(p.cooldown(n, None) <= MAX_LIFETIME, "{n}");
            assert!(p.cooldown(n, None) >= MAX_LIFETIME / 2, "{n}");
        }
        assert_eq!(p.delay(1, Some(Duration::MAX)), MAX_LIFETIME);
        assert_eq!(p.cooldown(1, Some(Duration::MAX)), MAX_LIFETIME);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(u64::MAX))),
            MAX_LIFETIME
        );
    }

    #[test]
    fn forced_refresh_waits_double_up_to_the_cap_and_saturate() {
        let p = CachePolicy::default();
        let waits: Vec<u64> = (0..8).map(|n| p.forced_refresh_wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.forced_refresh_wait(u32::MAX), Duration::from_secs(30));
        let huge = CachePolicy {
            forced_refresh_backoff: Duration::MAX,
            forced_refresh_backoff_max: Duration::MAX,
            ..CachePolicy::default()
        };
        assert_eq!(huge.forced_refresh_wait(1), MAX_LIFETIME);
        assert_eq!(huge.forced_refresh_wait(40), MAX_LIFETIME);
    }

    #[test]
    fn settings_are_checked_in_build() {
        let ok = CachePolicy::default();
        assert!(ok.check().is_ok());
        let bad: [(&str, CachePolicy); 7] = [
            (
                "refresh_at NaN",
                CachePolicy {
                    refresh_at: f64::NAN,
                    ..ok.clone()
                },
            ),
            (
                "refresh_at 1.5",
                CachePolicy {
                    refresh_at: 1.5,
                    ..ok.clone()
                },
            ),
            (
                "refresh_at -0.1",
                CachePolicy {
                    refresh_at: -0.1,
                    ..ok.clone()
                },
            ),
            (
                "refresh_jitter inf",
                CachePolicy {
                    refresh_jitter: f64::INFINITY,
                    ..ok.clone()
                },
            ),
            (
                "refresh_jitter 2",
                CachePolicy {
                    refresh_jitter: 2.0,
                    ..ok.clone()
                },
            ),
            (
                "load_timeout 0",
                CachePolicy {
                    load_timeout: Duration::ZERO,
                    ..ok.clone()
                },
            ),
            (
                "max_attempts 0",
                CachePolicy {
                    retry: RetryPolicy::default().max_attempts(0),
                    ..ok.clone()
                },
            ),
        ];
        for (what, policy) in bad {
            assert!(
                matches!(policy.check(), Err(crate::ConfigError::OutOfRange(_))),
                "{what}"
            );
        }
        let edges = [
            CachePolicy {
                refresh_at: 0.0,
                refresh_jitter: 1.0,
                ..ok.clone()
            },
            CachePolicy {
                refresh_at: 1.0,
                refresh_jitter: 0.0,
                ..ok.clone()
            },
        ];
        for policy in edges {
            assert!(policy.check().is_ok(), "{policy:?}");
        }
    }
}
