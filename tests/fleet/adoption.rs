//! When a member adopts the stored token and when it must not (issue 16: mutation survivors
//! in `cache/fleet.rs`): a refresh ahead never adopts the due token it is replacing, and no
//! member adopts a token with less than a second of use left. Real Redis, real time (the store's
//! TTLs run on the server's clock), 6 s tokens.

use std::time::Duration;

use client_credentials::{ClientCredentials, EncryptionKey, Fleet};

use crate::servers::{RedisServer, Servers};
use crate::worker::{run, KEY};

const LIFETIME: Duration = Duration::from_secs(6);

/// A member refreshing at `refresh_at` of the lifetime, without jitter.
fn member(redis: &RedisServer, servers: &Servers, refresh_at: f64) -> ClientCredentials {
    let fleet = Fleet::redis(&redis.url())
        .unwrap()
        .encryption_key(EncryptionKey::from_base64("test-1", KEY).unwrap());
    ClientCredentials::builder()
        .token_url(&servers.token_url)
        .client_id("fleet-test")
        .client_secret("fleet-secret")
        .refresh_at(refresh_at)
        .refresh_jitter(0.0)
        .fleet(fleet)
        .build()
        .unwrap()
}

async fn one_request(member: &ClientCredentials, servers: &Servers) -> String {
    let report = run(
        member,
        &servers.api_url,
        std::time::SystemTime::now(),
        Duration::ZERO,
        Duration::ZERO,
    )
    .await;
    assert_eq!((report.ok, report.failed), (1, 0), "{report:?}");
    report.tokens.into_iter().next().unwrap()
}

/// The refresh ahead of a 6 s token is due at 3 s. At 3.5 s the store still holds that token,
/// with 1.9 s of use left: adoptable by anyone else, but not by the refresh that replaces it, which must
/// fetch (else it adopts the same token again and again until it is nearly expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_ahead_fetches_instead_of_adopting_the_token_it_replaces() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(LIFETIME, Duration::ZERO).await;
    let member = member(&redis, &servers, 0.5);
    let first = one_request(&member, &servers).await;
    assert_eq!(servers.token_requests(), 1);
    // The timer marks the refresh due at 3 s; the next request starts it in the background
    // and is served the current token.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(one_request(&member, &servers).await, first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = member.stats();
    assert_eq!(stats.refreshes_ahead, 1, "{stats:?}");
    assert_eq!(
        servers.token_requests(),
        2,
        "the refresh ahead fetched a new token"
    );
    assert_eq!(
        stats.tokens_adopted, 0,
        "the due token it replaces was never adopted"
    );
    let second = one_request(&member, &servers).await;
    assert_ne!(second, first);
    assert_eq!(second, servers.issued()[1]);
}

/// A member that joins while the stored token has 1.4 s left (0.8 s of use, after the 0.6 s
/// margin of a 6 s token) fetches its own; one that joins at 1 s adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_under_a_second_of_use_left_is_not_adopted() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(LIFETIME, Duration::ZERO).await;
    // Refreshes at the end of use (5.4 s), after the joiners below.
    let first_member = member(&redis, &servers, 1.0);
    let first = one_request(&first_member, &servers).await;

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let early = member(&redis, &servers, 1.0);
    assert_eq!(one_request(&early, &servers).await, first, "adopted");
    assert_eq!(early.stats().tokens_adopted, 1);

    tokio::time::sleep(Duration::from_millis(3_600)).await;
    let late = member(&redis, &servers, 1.0);
    let own = one_request(&late, &servers).await;
    assert_ne!(own, first, "too little left to adopt");
    assert_eq!(late.stats().tokens_adopted, 0);
    assert_eq!(servers.token_requests(), 2);
}
