//! A fetch through the fleet's store (the `fleet` feature): adopt the stored token, or fetch
//! under the store's lock and store the result; compare-and-swap after a rejection.
//!
//! The store never fails a fetch: whenever it cannot answer ([`Loaded::Unavailable`], a lock
//! call that fails), the process fetches from its source as it would without a fleet, and
//! offers the token to the store when it can.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::fetch::{Obtained, Reason};
use super::schedule::{later, lifetime, schedule};
use super::{authorization_header, Entry, TokenCache};
use crate::fleet::{Eviction, FleetTag, ForcedBackoff, Loaded, Runtime, StoreKey, StoredToken};
use crate::Error;

/// A stored token with less usable life left than this is not adopted: fetching a new one is
/// better than a token that expires on the way.
const MIN_ADOPTED_LIFE: Duration = Duration::from_secs(1);
/// The first and the longest pause between reads while another process fetches.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);

impl TokenCache {
    /// A new token through the fleet's store: see the module docs of `fleet` for the protocol.
    pub(super) async fn obtain_through(
        &self,
        fleet: &Arc<Runtime>,
        reason: Reason,
        prior: Option<Arc<Entry>>,
    ) -> Result<Obtained, Error> {
        let key = fleet.key(&self.scopes);
        // The stored id of the token this fetch replaces, when it came from this key.
        let prior_id: Option<Arc<str>> = prior
            .as_ref()
            .and_then(|entry| entry.fleet.as_ref())
            .filter(|tag| tag.key == key)
            .map(|tag| Arc::clone(&tag.id));

        if reason == Reason::Forced {
            if let Some(id) = &prior_id {
                if let Some(kept) = self.evict(fleet, &key, id).await {
                    return Ok(kept);
                }
            }
        }

        let give_up_at = later(Instant::now(), fleet.lock_wait);
        let holder = fleet.holder();
        let mut poll = FIRST_POLL;
        loop {
            let read_at = Instant::now();
            match fleet.load(&key).await {
                Loaded::Found(stored) => {
                    if let Some(adopted) =
                        self.adoptable(fleet, &key, &stored, read_at, reason, prior_id.as_deref())
                    {
                        return Ok(adopted);
                    }
                }
                Loaded::Miss => {}
                Loaded::Unavailable => {
                    return self.fetch_and_offer(fleet, &key, reason, None).await
                }
            }
            match fleet.try_lock(&key, &holder).await {
                Some(true) => {
                    // Read again: the token may have landed between the read and the lock.
                    let read_at = Instant::now();
                    if let Loaded::Found(stored) = fleet.load(&key).await {
                        if let Some(adopted) = self.adoptable(
                            fleet,
                            &key,
                            &stored,
                            read_at,
                            reason,
                            prior_id.as_deref(),
                        ) {
                            fleet.unlock(&key, &holder).await;
                            return Ok(adopted);
                        }
                    }
                    return self
                        .fetch_and_offer(fleet, &key, reason, Some(holder))
                        .await;
                }
                Some(false) if Instant::now() < give_up_at => {
                    // Another process is fetching: wait for its token, with jitter.
                    tokio::time::sleep(poll.mul_f64(0.5 + fastrand::f64())).await;
                    poll = (poll * 3 / 2).min(MAX_POLL);
                }
                Some(false) => {
                    tracing::warn!(
                        endpoint = %self.shared.endpoint,
                        scopes = %self.scopes,
                        waited = ?fleet.lock_wait,
                        "another process held the fleet's lock too long; fetching without it"
                    );
                    return self.fetch_and_offer(fleet, &key, reason, None).await;
                }
                None => return self.fetch_and_offer(fleet, &key, reason, None).await,
            }
        }
    }

    /// The forced refresh of the stored token `id`, fleet-wide: evicts it if it is still the
    /// stored one and the fleet's limiter allows. When the limiter holds it, the rejected token
    /// is kept (returned, to be used again; the caller gets the API's rejection as it was
    /// sent), as the in-process limiter does.
    async fn evict(&self, fleet: &Arc<Runtime>, key: &StoreKey, id: &str) -> Option<Obtained> {
        let policy = &self.shared.policy;
        let backoff = ForcedBackoff {
            base: policy.forced_refresh_backoff,
            max: policy.forced_refresh_backoff_max,
        };
        let Some(Eviction::Limited(wait)) = fleet.evict(key, id, backoff).await else {
            return None;
        };
        self.counters()
            .forced_refreshes_suppressed
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            endpoint = %self.shared.endpoint,
            scopes = %self.scopes,
            retry_in = ?wait,
            "the API rejected a replacement token no process of the fleet saw accepted; \
             not fetching another yet"
        );
        let read_at = Instant::now();
        match fleet.load(key).await {
            Loaded::Found(stored) if stored.id == id => self
                .adopt(fleet, key, &stored, read_at)
                .map(|kept| self.adopted(kept)),
            _ => None,
        }
    }

    /// The stored token, if this fetch may adopt it: not the rejected one (for a forced
    /// refresh), not the one being refreshed once its refresh is due (for a refresh ahead).
    fn adoptable(
        &self,
        fleet: &Runtime,
        key: &StoreKey,
        stored: &StoredToken,
        read_at: Instant,
        reason: Reason,
        prior_id: Option<&str>,
    ) -> Option<Obtained> {
        let is_prior = prior_id == Some(stored.id.as_str());
        if is_prior && reason == Reason::Forced {
            return None;
        }
        let adopted = self.adopt(fleet, key, stored, read_at)?;
        let due = adopted
            .schedule
            .is_some_and(|(refresh_in, _)| refresh_in.is_zero());
        if is_prior && reason == Reason::Ahead && due {
            return None;
        }
        Some(self.adopted(adopted))
    }

    /// Counts and logs a stored token this fetch takes.
    fn adopted(&self, adopted: Obtained) -> Obtained {
        self.counters()
            .tokens_adopted
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            endpoint = %self.shared.endpoint,
            scopes = %self.scopes,
            refresh_in = ?adopted.schedule.map(|(refresh_in, _)| refresh_in),
            use_for = ?adopted.schedule.map(|(_, use_for)| use_for),
            "token adopted from the fleet's store"
        );
        adopted
    }

    /// A stored token as this process would use it: its remaining life by the store's clock,
    /// its original refresh point, this process's expiry margin. `None` for a value that does
    /// not open (garbage, another key's, another fleet key's) or a token about to expire. The
    /// caller counts it ([`adopted`](Self::adopted)) once it decides to take it.
    fn adopt(
        &self,
        fleet: &Runtime,
        key: &StoreKey,
        stored: &StoredToken,
        read_at: Instant,
    ) -> Option<Obtained> {
        let opened = fleet.codec.open(&key.token, &stored.value)?;
        if let Some(jkt) = &opened.token.dpop_jkt {
            // Bound to a key this process does not hold (the store key includes the
            // thumbprint, so only a value written under a rotated key gets here).
            if fleet.dpop_thumbprint().as_deref() != Some(&**jkt) {
                return None;
            }
        }
        authorization_header(opened.token.token_type, &opened.token.access_token)?;
        let remaining = stored.ttl;
        let lifetime = opened.lifetime.max(remaining);
        let elapsed = lifetime - remaining;
        let margin = self.shared.policy.expiry_margin.min(lifetime / 10);
        let use_for = remaining.saturating_sub(margin);
        if use_for < MIN_ADOPTED_LIFE {
            return None;
        }
        let refresh_in = opened.refresh_in.saturating_sub(elapsed).min(use_for);
        Some(Obtained {
            token: opened.token,
            started: read_at,
            schedule: Some((refresh_in, use_for)),
            fleet: Some(FleetTag {
                key: key.clone(),
                id: Arc::from(stored.id.as_str()),
            }),
        })
    }

    /// Fetches from the source and offers the token to the store: under the lock when
    /// `holder` holds it (then releases it), else only if no token is stored. The store is
    /// written in the background: the token is used at once.
    async fn fetch_and_offer(
        &self,
        fleet: &Arc<Runtime>,
        key: &StoreKey,
        reason: Reason,
        holder: Option<String>,
    ) -> Result<Obtained, Error> {
        let (token, started) = match self.fetch(reason).await {
            Ok(fetched) => fetched,
            Err(error) => {
                if let Some(holder) = &holder {
                    fleet.unlock(key, holder).await;
                }
                return Err(error);
            }
        };
        let policy = &self.shared.policy;
        let lifetime = lifetime(policy, token.expires_in);
        let (refresh_in, use_for) = schedule(policy, token.expires_in, fastrand::f64());
        let mut obtained = Obtained {
            token,
            started,
            schedule: Some((refresh_in, use_for)),
            fleet: None,
        };
        let ttl = lifetime.saturating_sub(started.elapsed());
        // A token that cannot be a header value is refused by the cache; never store it.
        let storable = !ttl.is_zero()
            && authorization_header(obtained.token.token_type, &obtained.token.access_token)
                .is_some();
        let sealed = storable
            .then(|| {
                fleet
                    .codec
                    .seal(&key.token, &obtained.token, lifetime, refresh_in)
            })
            .flatten();
        let offer = match (sealed, Runtime::new_id()) {
            (Some(value), Some(id)) => {
                // Tagged before it is stored: if the write fails, the tag names a token the
                // store does not hold, and compare-and-swap on it simply finds another.
                obtained.fleet = Some(FleetTag {
                    key: key.clone(),
                    id: Arc::clone(&id),
                });
                Some(StoredToken {
                    id: id.to_string(),
                    value,
                    ttl,
                })
            }
            _ => None,
        };
        let fleet = Arc::clone(fleet);
        let key = key.clone();
        let write = async move {
            if let Some(offer) = offer {
                fleet.save(&key, &offer, holder.as_deref()).await;
            }
            if let Some(holder) = holder {
                fleet.unlock(&key, &holder).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(write);
            }
            Err(_) => write.await,
        }
        Ok(obtained)
    }
}
