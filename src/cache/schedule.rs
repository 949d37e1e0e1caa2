//! When a token is refreshed and until when it is used: pure functions of its announced
//! lifetime and the policy, and the one saturating rule for points in time.
//!
//! Every token enters the cache through [`schedule`] (whatever its source: the built-in
//! endpoint, a custom [`TokenSource`](crate::TokenSource), a shared store), so the lifetime rule
//! of [`Token::new`](crate::Token::new) is applied here once: raised to
//! [`MIN_LIFETIME`], lowered to [`MAX_LIFETIME`]. Every point in time the cache computes from a
//! duration goes through [`later`], which cannot overflow.

use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{CachePolicy, MAX_LIFETIME, MIN_LIFETIME};

/// A token's lifetime as the cache uses it: `expires_in`, or the default when absent, clamped
/// to `MIN_LIFETIME..=MAX_LIFETIME`.
pub(crate) fn lifetime(policy: &CachePolicy, expires_in: Option<Duration>) -> Duration {
    expires_in
        .unwrap_or(policy.default_lifetime)
        .clamp(MIN_LIFETIME, MAX_LIFETIME)
}

/// How long after its request a token's refresh is due, and how long it is used, from its
/// announced lifetime and a jitter draw in `[0, 1]`.
///
/// The margin before expiry is the configured one, but at most a tenth of the lifetime, so a
/// 60 s token is still used for 54 s. The refresh point is `refresh_at - refresh_jitter × draw`
/// of the lifetime, never after the end of use.
pub(crate) fn schedule(
    policy: &CachePolicy,
    expires_in: Option<Duration>,
    jitter: f64,
) -> (Duration, Duration) {
    let lifetime = lifetime(policy, expires_in);
    let margin = policy.expiry_margin.min(lifetime / 10);
    let use_for = lifetime - margin;
    let draw = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let fraction = (policy.refresh_at - policy.refresh_jitter * draw).clamp(0.0, 1.0);
    // `fraction` is in [0, 1] and `lifetime` at most ten years: the product cannot overflow.
    let refresh_in = lifetime.mul_f64(fraction).min(use_for);
    (refresh_in, use_for)
}

/// `at + delay`, saturating: a delay that would overflow `Instant` is cut to
/// [`MAX_LIFETIME`] (which cannot: an `Instant` is a monotonic clock reading plus at most ten
/// years), and if even that fails, `at` itself.
pub(crate) fn later(at: Instant, delay: Duration) -> Instant {
    at.checked_add(delay)
        .or_else(|| at.checked_add(delay.min(MAX_LIFETIME)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DEFAULT_EXPIRY_MARGIN, DEFAULT_LIFETIME};

    #[test]
    fn schedule_table() {
        let p = CachePolicy::default();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (expires_in, jitter draw, refresh after, use for)
        let cases: &[(Option<Duration>, f64, Duration, Duration)] = &[
            (Some(s(3600)), 0.0, s(2700), s(3540)),
            (Some(s(3600)), 1.0, s(2520), s(3540)),
            (Some(s(3600)), f64::NAN, s(2700), s(3540)),
            (Some(s(3600)), 7.0, s(2520), s(3540)),
            (Some(s(60)), 0.0, s(45), s(54)),
            (Some(s(2)), 0.0, ms(1500), ms(1800)),
            (None, 0.0, s(225), s(270)),
            (Some(s(0)), 0.0, ms(750), ms(900)),
            (Some(ms(1)), 0.0, ms(750), ms(900)),
        ];
        for &(expires_in, draw, refresh, use_for) in cases {
            assert_eq!(
                schedule(&p, expires_in, draw),
                (refresh, use_for),
                "{expires_in:?} {draw}"
            );
        }
        assert_eq!(DEFAULT_LIFETIME, s(300));
        assert_eq!(DEFAULT_EXPIRY_MARGIN, s(60));
    }

    /// Issue 12: a source announcing `Duration::MAX` (or half of `u64::MAX` seconds) gets ten
    /// years, the same as the endpoint's `expires_in` clamp.
    #[test]
    fn absurd_lifetimes_are_clamped_to_ten_years() {
        let p = CachePolicy::default();
        for huge in [
            Duration::MAX,
            Duration::from_secs(u64::MAX / 2),
            Duration::from_secs(100 * 365 * 86_400),
            MAX_LIFETIME + Duration::from_nanos(1),
        ] {
            assert_eq!(lifetime(&p, Some(huge)), MAX_LIFETIME, "{huge:?}");
            let (refresh_in, use_for) = schedule(&p, Some(huge), 0.0);
            assert_eq!(use_for, MAX_LIFETIME - DEFAULT_EXPIRY_MARGIN, "{huge:?}");
            assert_eq!(refresh_in, MAX_LIFETIME.mul_f64(0.75), "{huge:?}");
        }
        let huge_default = CachePolicy {
            default_lifetime: Duration::MAX,
            expiry_margin: Duration::MAX,
            ..CachePolicy::default()
        };
        assert_eq!(lifetime(&huge_default, None), MAX_LIFETIME);
        let (refresh_in, use_for) = schedule(&huge_default, None, 1.0);
        assert_eq!(use_for, MAX_LIFETIME - MAX_LIFETIME / 10);
        assert!(refresh_in <= use_for);
    }

    #[test]
    fn refresh_never_comes_after_the_end_of_use() {
        let p = CachePolicy {
            refresh_at: 1.0,
            refresh_jitter: 0.0,
            ..CachePolicy::default()
        };
        let (refresh_in, use_for) = schedule(&p, Some(Duration::from_secs(100)), 0.0);
        assert_eq!((refresh_in, use_for), (use_for, Duration::from_secs(90)));
    }

    #[tokio::test(start_paused = true)]
    async fn later_saturates_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let far = later(now, Duration::MAX);
        assert_eq!(far, now + MAX_LIFETIME);
        assert_eq!(
            later(now, Duration::from_secs(u64::MAX / 2)),
            now + MAX_LIFETIME
        );
        assert_eq!(later(now, Duration::ZERO), now);
    }
}
