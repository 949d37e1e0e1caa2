//! A token as the cache holds it, and the credential handed to the adapters.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use super::schedule::{later, schedule};
use crate::error::InvalidResponse;
use crate::policy::CachePolicy;
use crate::source::TokenType;
#[cfg(test)]
use crate::Token;
use crate::{AccessToken, Error};

/// A cached token: the value, its header, and its two points in time.
pub(crate) struct Entry {
    /// Unique across the process (never zero): identifies this token in the state word, in
    /// the per-thread slots and in a rejection (compare-and-evict compares generations).
    pub(crate) gen: u64,
    pub(crate) token: AccessToken,
    /// `Bearer <token>` or `DPoP <token>`, marked sensitive.
    pub(crate) header: HeaderValue,
    /// For a DPoP-bound token, the thumbprint of the key it is bound to.
    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) dpop_jkt: Option<Arc<str>>,
    /// For a DPoP-bound token, its hash as proofs carry it (`ath`), computed once.
    #[cfg(feature = "jwt")]
    pub(crate) ath: Option<Arc<str>>,
    /// When the background refresh is due.
    pub(crate) refresh_at: Instant,
    /// The end of the token's usable life: never handed out from this point on.
    pub(crate) use_until: Instant,
    /// Whether the API has accepted this token at least once (an answer that was not a token
    /// rejection): such a token is replaced at once when rejected.
    pub(crate) accepted: AtomicBool,
    /// Where the fleet's store keeps this token, when it came from or went to one.
    #[cfg(feature = "fleet")]
    pub(crate) fleet: Option<crate::fleet::FleetTag>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("gen", &self.gen)
            .field("token", &self.token)
            .field("refresh_at", &self.refresh_at)
            .field("use_until", &self.use_until)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// The entry of a token requested at `started`, scheduled by the policy.
    #[cfg(test)]
    pub(crate) fn new(
        token: Token,
        started: Instant,
        policy: &CachePolicy,
        endpoint: &Arc<str>,
    ) -> Result<Arc<Self>, Error> {
        Self::obtained(super::Obtained::fetched(token, started), policy, endpoint)
    }

    /// The entry of an obtained token. Every token enters the cache here.
    pub(crate) fn obtained(
        obtained: super::Obtained,
        policy: &CachePolicy,
        endpoint: &Arc<str>,
    ) -> Result<Arc<Self>, Error> {
        let super::Obtained {
            token,
            started,
            schedule: scheduled,
            #[cfg(feature = "fleet")]
            fleet,
        } = obtained;
        let invalid = || Error::InvalidResponse {
            endpoint: Arc::clone(endpoint),
            kind: InvalidResponse::TokenNotHeaderSafe,
        };
        let header =
            authorization_header(token.token_type, &token.access_token).ok_or_else(invalid)?;
        let (refresh_in, use_for) =
            scheduled.unwrap_or_else(|| schedule(policy, token.expires_in, fastrand::f64()));
        Ok(Arc::new(Self {
            gen: super::next_id(),
            #[cfg(feature = "jwt")]
            ath: (token.token_type == TokenType::Dpop)
                .then(|| Arc::from(crate::proof::ath(token.access_token.secret()))),
            token: token.access_token,
            header,
            dpop_jkt: token.dpop_jkt,
            refresh_at: later(started, refresh_in),
            use_until: later(started, use_for),
            accepted: AtomicBool::new(false),
            #[cfg(feature = "fleet")]
            fleet,
        }))
    }

    /// What the adapters put on a request.
    pub(crate) fn credential(&self) -> Credential {
        Credential {
            header: self.header.clone(),
            gen: self.gen,
        }
    }
}

/// `Bearer <token>` (or `DPoP <token>`), marked sensitive; `None` for an empty token or one
/// that cannot be a header value. The one place the `Authorization` header is built.
pub(crate) fn authorization_header(
    token_type: TokenType,
    token: &AccessToken,
) -> Option<HeaderValue> {
    let secret = token.secret();
    if secret.is_empty() {
        return None;
    }
    let scheme = token_type.scheme();
    let mut value = String::with_capacity(scheme.len() + 1 + secret.len());
    value.push_str(scheme);
    value.push(' ');
    value.push_str(secret);
    let mut header = HeaderValue::try_from(value).ok()?;
    header.set_sensitive(true);
    // Clone once so the shared byte buffer is promoted now, not on the first hit: later
    // clones are a reference-count increment.
    let _promoted = header.clone();
    Some(header)
}

/// The token a request carries: its header value and the generation that identifies it when
/// the API rejects it.
#[derive(Clone)]
pub(crate) struct Credential {
    pub(crate) header: HeaderValue,
    pub(crate) gen: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("gen", &self.gen)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn authorization_header_is_sensitive_and_refuses_what_cannot_be_sent() {
        let header = authorization_header(TokenType::Bearer, &AccessToken::new("abc.def")).unwrap();
        assert_eq!(header, "Bearer abc.def");
        assert!(header.is_sensitive());
        let dpop = authorization_header(TokenType::Dpop, &AccessToken::new("abc.def")).unwrap();
        assert_eq!(dpop, "DPoP abc.def");
        for bad in ["", "a\nb", "tab\u{7f}", "nul\0"] {
            assert!(
                authorization_header(TokenType::Bearer, &AccessToken::new(bad)).is_none(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_get_unique_generations_and_saturated_times() {
        let endpoint: Arc<str> = Arc::from("https://auth.example/token");
        let policy = CachePolicy::default();
        let now = Instant::now();
        let token = |d| Token::new(AccessToken::new("t"), d);
        let a = Entry::new(
            token(Some(Duration::from_secs(100))),
            now,
            &policy,
            &endpoint,
        )
        .unwrap();
        let b = Entry::new(token(Some(Duration::MAX)), now, &policy, &endpoint).unwrap();
        assert_ne!(a.gen, b.gen);
        assert_ne!(a.gen, 0);
        assert_eq!(a.use_until, now + Duration::from_secs(90));
        assert!(
            a.refresh_at >= now + Duration::from_secs(70)
                && a.refresh_at <= now + Duration::from_secs(75)
        );
        assert_eq!(
            b.use_until,
            now + crate::MAX_LIFETIME - Duration::from_secs(60)
        );
        let err = Entry::new(token(None), now, &policy, &endpoint);
        assert!(err.is_ok());
        let Err(err) = Entry::new(
            Token::new(AccessToken::new(""), None),
            now,
            &policy,
            &endpoint,
        ) else {
            panic!("an empty token must be refused");
        };
        assert!(matches!(
            err,
            Error::InvalidResponse {
                kind: InvalidResponse::TokenNotHeaderSafe,
                ..
            }
        ));
    }
}
