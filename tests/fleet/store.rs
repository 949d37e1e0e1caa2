//! The store's own guarantees on a real server: the lock, values that are not ours, nothing
//! in plain text in Redis or in the logs.

use std::time::{Duration, SystemTime};

use client_credentials::{RedisStore, StoreKey, StoredToken, TokenStore};
use redis::Commands as _;

use crate::servers::{RedisServer, Servers};
use crate::worker::{credentials, credentials_with, run, spawn_members};

/// One request through a new member; returns the token it used.
async fn one_request(redis: &RedisServer, servers: &Servers) -> String {
    one_request_through(&credentials(&redis.url(), &servers.token_url), servers).await
}

/// One request through `member`; returns the token it used.
async fn one_request_through(
    member: &client_credentials::ClientCredentials,
    servers: &Servers,
) -> String {
    let report = run(
        member,
        &servers.api_url,
        SystemTime::now(),
        Duration::ZERO,
        Duration::ZERO,
    )
    .await;
    assert_eq!((report.ok, report.failed), (1, 0), "{report:?}");
    report.tokens.into_iter().next().unwrap()
}

/// A lock that outlived its time to live and was taken by another holder is not released by
/// the first holder.
#[tokio::test]
async fn a_lock_is_released_only_by_its_holder() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::new(&redis.url()).unwrap();
    let key = test_key("{cc:lock-test}");
    assert!(store
        .try_lock(&key, "a", Duration::from_millis(100))
        .await
        .unwrap());
    assert!(
        !store
            .try_lock(&key, "b", Duration::from_secs(5))
            .await
            .unwrap(),
        "held"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        store
            .try_lock(&key, "b", Duration::from_secs(5))
            .await
            .unwrap(),
        "expired"
    );
    store.unlock(&key, "a").await.unwrap();
    let mut raw = redis.raw();
    let holder: Option<String> = raw.get(key.lock()).unwrap();
    assert_eq!(
        holder.as_deref(),
        Some("b"),
        "a's late release left b's lock alone"
    );
    store.unlock(&key, "b").await.unwrap();
    let holder: Option<String> = raw.get(key.lock()).unwrap();
    assert_eq!(holder, None);
}

async fn eventually_key(redis: &RedisServer) -> String {
    let mut raw = redis.raw();
    for _ in 0..100 {
        let keys: Vec<String> = raw.keys("{cc:*}:token").unwrap();
        if let Some(key) = keys.into_iter().next() {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no token was stored");
}

fn test_key(tag: &str) -> StoreKey {
    StoreKey::from_tag(tag)
}

/// A change made to the stored value by hand.
type Tamper<'a> = Box<dyn Fn(&mut redis::Connection) + 'a>;

/// Values that are not a token this fleet wrote there are misses: the next member fetches and
/// replaces them, and the member after that adopts the replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_truncated_oversized_and_foreign_values_are_replaced() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    one_request(&redis, &servers).await;
    let key = eventually_key(&redis).await;
    let mut raw = redis.raw();
    let good: Vec<u8> = raw.hget(&key, "v").unwrap();

    // A value written under another store key (other scopes): right fleet key, wrong place.
    let other = credentials_with(&redis.url(), &servers.token_url, |f| f);
    let foreign = {
        let member = client_credentials::ClientCredentials::builder()
            .token_url(&servers.token_url)
            .client_id("fleet-test")
            .client_secret("fleet-secret")
            .scopes("other.scope")
            .fleet(
                client_credentials::Fleet::redis(&redis.url())
                    .unwrap()
                    .encryption_key(
                        client_credentials::EncryptionKey::from_base64(
                            "test-1",
                            crate::worker::KEY,
                        )
                        .unwrap(),
                    ),
            )
            .build()
            .unwrap();
        member.access_token().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let keys: Vec<String> = raw.keys("{cc:*}:token").unwrap();
        let other_key = keys.iter().find(|k| **k != key).unwrap().clone();
        let value: Vec<u8> = raw.hget(&other_key, "v").unwrap();
        value
    };
    drop(other);

    let cases: Vec<(&str, Tamper)> = vec![
        (
            "garbage",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.hset(&key, "v", b"\x01\x05hello not a value").unwrap();
            }),
        ),
        (
            "truncated",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.hset(&key, "v", &good[..good.len() / 2]).unwrap();
            }),
        ),
        (
            "a flipped bit",
            Box::new(|raw: &mut redis::Connection| {
                let mut bad = good.clone();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                let _: () = raw.hset(&key, "v", bad).unwrap();
            }),
        ),
        (
            "oversized",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.hset(&key, "v", vec![1u8; 200 * 1024]).unwrap();
            }),
        ),
        (
            "foreign",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.hset(&key, "v", &foreign).unwrap();
            }),
        ),
        (
            "another type",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.del(&key).unwrap();
                let _: () = raw.set_ex(&key, "a string", 3600).unwrap();
            }),
        ),
        (
            "no expiry",
            Box::new(|raw: &mut redis::Connection| {
                let _: () = raw.persist(&key).unwrap();
            }),
        ),
    ];
    for (what, tamper) in cases {
        // Restore a good value first (so each case starts from a stored token).
        let _: () = raw.del(&key).unwrap();
        one_request(&redis, &servers).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        tamper(&mut raw);
        let before = servers.token_requests();
        one_request(&redis, &servers).await;
        assert_eq!(
            servers.token_requests(),
            before + 1,
            "{what}: a miss, so a fetch"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let replaced = servers.token_requests();
        one_request(&redis, &servers).await;
        assert_eq!(
            servers.token_requests(),
            replaced,
            "{what}: replaced, so adopted"
        );
    }
}

/// Nothing in Redis, on the wire to it (`MONITOR`) or in the logs holds a token in plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_token_in_redis_on_the_wire_or_in_logs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "MONITOR"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli MONITOR");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = crate::logs::capture();
    let servers = Servers::start(Duration::from_secs(2), Duration::ZERO).await;
    // Several members, a refresh, a revocation: every kind of write.
    let running = spawn_members(
        3,
        || credentials(&redis.url(), &servers.token_url),
        &servers.api_url,
        SystemTime::now(),
        Duration::from_secs(3),
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    servers.revoke_all();
    running.join_all().await;

    let mut raw = redis.raw();
    let keys: Vec<String> = raw.keys("*").unwrap();
    let mut dump = Vec::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut raw).unwrap();
        match kind.as_str() {
            "hash" => {
                let fields: Vec<Vec<u8>> = raw.hgetall(key).unwrap();
                dump.extend(fields.into_iter().flatten());
            }
            "string" => {
                let value: Vec<u8> = raw.get(key).unwrap();
                dump.extend(value);
            }
            _ => {}
        }
    }
    let _ = monitor.kill();
    let wire = monitor.wait_with_output().unwrap().stdout;
    let log = logs.contents();
    let issued = servers.issued();
    assert!(issued.len() >= 3, "{issued:?}");
    assert!(
        !dump.is_empty() && wire.len() > 1000,
        "something was stored and monitored"
    );
    assert!(log.contains("token"), "the logs were captured");
    for token in &issued {
        let needle = token.as_bytes();
        assert!(
            !dump.windows(needle.len()).any(|w| w == needle),
            "{token} stored in plain text"
        );
        assert!(
            !wire.windows(needle.len()).any(|w| w == needle),
            "{token} sent in plain text"
        );
        assert!(!log.contains(token.as_str()), "{token} logged");
    }
    assert!(!log.contains("fleet-secret"));
}

/// A stored token's record, by hand: what a foreign writer cannot forge without the key.
#[tokio::test]
async fn the_store_round_trips_what_it_is_given() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::new(&redis.url()).unwrap();
    let key = test_key("{cc:roundtrip}");
    assert_eq!(store.load(&key).await.unwrap(), None);
    let token = StoredToken {
        id: "id-1".into(),
        value: vec![0, 1, 2, 255],
        ttl: Duration::from_secs(60),
    };
    assert!(store.save(&key, &token, None).await.unwrap());
    assert!(
        !store.save(&key, &token, None).await.unwrap(),
        "only if none is stored"
    );
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        (loaded.id.as_str(), &loaded.value[..]),
        ("id-1", &[0u8, 1, 2, 255][..])
    );
    assert!(loaded.ttl <= Duration::from_secs(60) && loaded.ttl > Duration::from_secs(58));
    // Under the lock: only by its holder.
    assert!(store
        .try_lock(&key, "h", Duration::from_secs(5))
        .await
        .unwrap());
    let newer = StoredToken {
        id: "id-2".into(),
        ..token.clone()
    };
    assert!(!store.save(&key, &newer, Some("other")).await.unwrap());
    assert!(store.save(&key, &newer, Some("h")).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap().unwrap().id, "id-2");
}

/// The fleet-wide limiter, as the store keeps it: a token nobody saw accepted is evicted once
/// at once, then only after the backoff since the last eviction; an accepted one at once; the
/// wrong id never.
#[tokio::test]
async fn eviction_is_compare_and_swap_with_the_fleet_wide_limiter() {
    use client_credentials::{Eviction, ForcedBackoff};
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let store = RedisStore::new(&redis.url()).unwrap();
    let key = test_key("{cc:evict-test}");
    let backoff = ForcedBackoff {
        base: Duration::from_millis(400),
        max: Duration::from_secs(30),
    };
    let stored = |id: &str| StoredToken {
        id: id.into(),
        value: vec![1],
        ttl: Duration::from_secs(60),
    };
    assert_eq!(
        store.evict(&key, "a", backoff).await.unwrap(),
        Eviction::NotCurrent,
        "nothing stored"
    );

    assert!(store.save(&key, &stored("a"), None).await.unwrap());
    assert_eq!(
        store.evict(&key, "b", backoff).await.unwrap(),
        Eviction::NotCurrent,
        "not the stored id"
    );
    assert_eq!(
        store.evict(&key, "a", backoff).await.unwrap(),
        Eviction::Evicted,
        "the first at once"
    );
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert_eq!(
        store.evict(&key, "a", backoff).await.unwrap(),
        Eviction::NotCurrent,
        "only once"
    );

    // Its replacement, never accepted, rejected at once: held for the backoff (400 ms).
    assert!(store.save(&key, &stored("b"), None).await.unwrap());
    match store.evict(&key, "b", backoff).await.unwrap() {
        Eviction::Limited(wait) => assert!(
            wait <= Duration::from_millis(400) && wait > Duration::from_millis(300),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(store.load(&key).await.unwrap().is_some(), "kept");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store.evict(&key, "b", backoff).await.unwrap(),
        Eviction::Evicted,
        "after the backoff"
    );

    // The next one waits twice as long (800 ms), unless the API accepted it.
    assert!(store.save(&key, &stored("c"), None).await.unwrap());
    match store.evict(&key, "c", backoff).await.unwrap() {
        Eviction::Limited(wait) => assert!(wait > Duration::from_millis(700), "{wait:?}"),
        other => panic!("{other:?}"),
    }
    store.accepted(&key, "other-id").await.unwrap();
    assert!(
        matches!(
            store.evict(&key, "c", backoff).await.unwrap(),
            Eviction::Limited(_)
        ),
        "another id's acceptance does not count"
    );
    store.accepted(&key, "c").await.unwrap();
    assert_eq!(
        store.evict(&key, "c", backoff).await.unwrap(),
        Eviction::Evicted,
        "accepted: at once"
    );

    // Acceptance ended the strikes: the replacement of the accepted token, rejected without
    // ever being accepted, waits the first step (400 ms), not twice that and not zero (one
    // rejection episode, one token request at once).
    assert!(store.save(&key, &stored("d"), None).await.unwrap());
    match store.evict(&key, "d", backoff).await.unwrap() {
        Eviction::Limited(wait) => assert!(
            wait <= Duration::from_millis(400) && wait > Duration::from_millis(300),
            "{wait:?}"
        ),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        store.evict(&key, "d", backoff).await.unwrap(),
        Eviction::Evicted,
        "after the first step"
    );
}

/// The suite runs against the server it was asked for: `CC_FLEET_SERVER=valkey-server` must
/// not quietly test Redis (Valkey also reports a `redis_version` for compatibility).
#[tokio::test]
async fn the_server_is_the_one_the_run_asked_for() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let info = redis.cli(&["INFO", "server"]);
    let valkey = info.contains("server_name:valkey");
    if crate::servers::server_binary().starts_with("valkey") {
        assert!(valkey, "asked for Valkey, got:\n{info}");
        assert!(info.contains("valkey_version:"), "{info}");
    } else {
        assert!(!valkey, "asked for Redis, got Valkey:\n{info}");
        assert!(info.contains("redis_version:"), "{info}");
    }
    let field = if valkey {
        "valkey_version:"
    } else {
        "redis_version:"
    };
    let version = info.lines().find(|l| l.starts_with(field)).map(str::trim);
    eprintln!("fleet suite server: {version:?}");
}

/// A holder that is stuck, not dead (its lock does not expire while the others wait), does not
/// block the fleet: a member waits `lock_wait`, then fetches for itself, and leaves the other's
/// lock alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_lock_wait_is_given_up_on() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    let first = one_request(&redis, &servers).await;
    let token_key = eventually_key(&redis).await;
    let lock_key = token_key.replace(":token", ":lock");
    let mut raw = redis.raw();
    let _: () = raw.del(&token_key).unwrap();
    redis::cmd("SET")
        .arg(&lock_key)
        .arg("stuck-holder")
        .arg("PX")
        .arg(120_000)
        .query::<()>(&mut raw)
        .unwrap();
    let wait = Duration::from_millis(600);
    let member = credentials_with(&redis.url(), &servers.token_url, |f| f.lock_wait(wait));
    let started = std::time::Instant::now();
    let token = one_request_through(&member, &servers).await;
    let waited = started.elapsed();
    assert!(waited >= wait, "it waited for the holder first: {waited:?}");
    assert!(
        waited < Duration::from_secs(60),
        "it gave up after lock_wait, not when the lock expired: {waited:?}"
    );
    assert_ne!(token, first, "a token of its own");
    assert_eq!(servers.token_requests(), 2);
    let holder: Option<String> = raw.get(&lock_key).unwrap();
    assert_eq!(holder.as_deref(), Some("stuck-holder"), "the other's lock");
}

/// Members of different clients share one Redis but never one token: the token URL, the
/// client id, the secret and the extra parameters each name another store key. A second member
/// of the first client adopts its token, so the store is shared where it should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_different_clients_never_share_a_token() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    let member = |token_url: &str, client_id: &str, secret: &str, param: Option<(&str, &str)>| {
        let fleet = client_credentials::Fleet::redis(&redis.url())
            .unwrap()
            .encryption_key(
                client_credentials::EncryptionKey::from_base64("test-1", crate::worker::KEY)
                    .unwrap(),
            );
        let mut builder = client_credentials::ClientCredentials::builder()
            .token_url(token_url)
            .client_id(client_id)
            .client_secret(secret)
            .fleet(fleet);
        if let Some((name, value)) = param {
            builder = builder.param(name, value);
        }
        builder.build().unwrap()
    };
    let other_url = servers.token_url.replace("/token", "/other/token");
    let first = one_request_through(&member(&servers.token_url, "a", "s", None), &servers).await;
    let variants = [
        member(&other_url, "a", "s", None),
        member(&servers.token_url, "b", "s", None),
        member(&servers.token_url, "a", "another secret", None),
        member(&servers.token_url, "a", "s", Some(("audience", "payments"))),
    ];
    let mut seen = vec![first.clone()];
    for variant in &variants {
        let token = one_request_through(variant, &servers).await;
        assert!(!seen.contains(&token), "{token} was shared across clients");
        seen.push(token);
    }
    assert_eq!(servers.token_requests(), 5, "each client fetched its own");
    let again = one_request_through(&member(&servers.token_url, "a", "s", None), &servers).await;
    assert_eq!(again, first, "the same client adopts the stored token");
    assert_eq!(servers.token_requests(), 5);
}

/// A fleet whose members read the client secret from one file (a Kubernetes secret volume):
/// a member that started after the file was rotated still adopts the token the others share,
/// since a rotating secret names the store key by its file, not by its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reading_a_rotated_secret_file_still_share_one_token() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    let dir = std::env::temp_dir().join(format!("cc-fleet-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client-secret");
    std::fs::write(&file, "secret-one").unwrap();
    let member = |file: &std::path::Path| {
        let fleet = client_credentials::Fleet::redis(&redis.url())
            .unwrap()
            .encryption_key(
                client_credentials::EncryptionKey::from_base64("test-1", crate::worker::KEY)
                    .unwrap(),
            );
        client_credentials::ClientCredentials::builder()
            .token_url(&servers.token_url)
            .client_id("fleet-test")
            .client_secret_file(file)
            .fleet(fleet)
            .build()
            .unwrap()
    };
    let first = one_request_through(&member(&file), &servers).await;
    std::fs::write(&file, "secret-two").unwrap();
    let later = one_request_through(&member(&file), &servers).await;
    assert_eq!(later, first, "adopted across the rotation");
    assert_eq!(servers.token_requests(), 1);
    // Another secret file (another deployment of the same client id) is another store key.
    let other = dir.join("other-client-secret");
    std::fs::write(&other, "secret-two").unwrap();
    let elsewhere = one_request_through(&member(&other), &servers).await;
    assert_ne!(elsewhere, first, "not shared with another file's members");
    assert_eq!(servers.token_requests(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
