//! Token sources and helpers for the cache's unit tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::{authorization_header, next_id, Entry, Shared, TokenCache};
use crate::policy::CachePolicy;
use crate::stats::Counters;
use crate::{AccessToken, BoxFuture, Error, OAuthErrorCode, Scopes, Token, TokenSource};

/// A cache over `source` with the default policy.
pub(crate) fn cache_with<S: TokenSource>(source: S) -> (Arc<TokenCache>, Arc<S>) {
    cache_with_policy(source, CachePolicy::default())
}

/// A cache over `source` with `policy`; the source is shared so tests can count its calls.
pub(crate) fn cache_with_policy<S: TokenSource>(
    source: S,
    policy: CachePolicy,
) -> (Arc<TokenCache>, Arc<S>) {
    let source = Arc::new(source);
    let shared = Arc::new(Shared {
        source: Arc::clone(&source) as Arc<dyn TokenSource>,
        policy,
        counters: Arc::new(Counters::default()),
        endpoint: Arc::from("test source"),
        #[cfg(feature = "fleet")]
        fleet: None,
    });
    (Arc::new(TokenCache::new(Scopes::default(), shared)), source)
}

/// An entry made by hand, for tests of the hit path and the timers.
pub(crate) fn manual_entry(refresh_at: Instant, use_until: Instant) -> Arc<Entry> {
    let token = AccessToken::new(format!("manual-{}", next_id()));
    Arc::new(Entry {
        gen: next_id(),
        header: authorization_header(crate::source::TokenType::Bearer, &token).unwrap(),
        dpop_jkt: None,
        #[cfg(feature = "jwt")]
        ath: None,
        token,
        refresh_at,
        use_until,
        #[cfg(feature = "fleet")]
        fleet: None,
        accepted: Default::default(),
    })
}

/// Lets spawned tasks (timers, fetches) run on a current-thread runtime.
pub(crate) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Hands out `tok-1`, `tok-2`, ... with a fixed lifetime, optionally after a delay.
pub(crate) struct Counting {
    calls: AtomicUsize,
    lifetime: Duration,
    delay: Duration,
}

impl Counting {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self::slow(lifetime, Duration::ZERO)
    }

    pub(crate) fn slow(lifetime: Duration, delay: Duration) -> Self {
        Self {
            calls: AtomicUsize::new(0),
            lifetime,
            delay,
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl TokenSource for Counting {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            Ok(Token::new(
                AccessToken::new(format!("tok-{n}")),
                Some(self.lifetime),
            ))
        })
    }
}

type Step =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Token, Error>> + Send>> + Send + Sync>;

/// Answers each call with the next step of a script (the last one repeats).
pub(crate) struct Scripted {
    steps: Mutex<Vec<Step>>,
    calls: AtomicUsize,
}

impl Scripted {
    pub(crate) fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: Mutex::new(steps),
            calls: AtomicUsize::new(0),
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn ok(token: &'static str) -> Step {
        Arc::new(move || {
            Box::pin(async move {
                Ok(Token::new(
                    AccessToken::new(token),
                    Some(Duration::from_secs(3600)),
                ))
            })
        })
    }

    /// A 503: transient, retried.
    pub(crate) fn transient() -> Step {
        Arc::new(|| {
            Box::pin(async {
                Err(Error::Status {
                    endpoint: Arc::from("test source"),
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: None,
                })
            })
        })
    }

    /// `invalid_client`: not retried.
    pub(crate) fn permanent() -> Step {
        Arc::new(|| {
            Box::pin(async {
                Err(Error::OAuth {
                    endpoint: Arc::from("test source"),
                    status: StatusCode::BAD_REQUEST,
                    code: OAuthErrorCode::InvalidClient,
                    description: None,
                    uri: None,
                })
            })
        })
    }

    /// Never answers.
    pub(crate) fn hang() -> Step {
        Arc::new(|| Box::pin(std::future::pending()))
    }

    /// Panics inside the fetch.
    pub(crate) fn panic() -> Step {
        Arc::new(|| Box::pin(async { panic!("the source panicked (on purpose)") }))
    }
}

impl TokenSource for Scripted {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let step = {
            let mut steps = self.steps.lock().unwrap();
            if steps.len() > 1 {
                steps.remove(0)
            } else {
                Arc::clone(&steps[0])
            }
        };
        step()
    }
}
