//! What only a fleet of real processes shows: a cold start, the steady state, a revocation
//! seen by every member, and a lock holder that dies.

use std::time::{Duration, SystemTime};

use crate::servers::{RedisServer, Servers};
use crate::worker::{credentials, reports_of, spawn_members, spawn_workers, Report, Worker};

/// Waits for the child processes' reports off the runtime's threads.
async fn reports(workers: Vec<Worker>) -> Vec<Report> {
    tokio::task::spawn_blocking(move || workers.into_iter().map(Worker::report).collect())
        .await
        .expect("worker reports")
}

/// 8 processes and 16 instances in this one, all starting at once on a cold fleet: one token
/// request between the 24 of them, and every one uses that token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_of_24_makes_one_token_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // A token endpoint that takes 300 ms, so the members overlap.
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(300)).await;
    let start_at = SystemTime::now() + Duration::from_millis(3000);
    let run_for = Duration::from_millis(1500);
    let workers = spawn_workers(8, &redis.url(), &servers, start_at, run_for);
    let instances = spawn_members(
        16,
        || credentials(&redis.url(), &servers.token_url),
        &servers.api_url,
        start_at,
        run_for,
    );
    let mut all = reports_of(instances).await;
    all.extend(reports(workers).await);

    assert_eq!(all.len(), 24);
    let issued = servers.issued();
    assert_eq!(
        servers.token_requests(),
        1,
        "one token request for the fleet: {issued:?}"
    );
    for report in &all {
        assert_eq!(report.failed, 0, "{report:?}");
        assert!(report.ok > 0, "{report:?}");
        assert_eq!(report.tokens, issued, "every member used the one token");
    }
    let fetched: u64 = all.iter().map(|r| r.token_requests).sum();
    let adopted: u64 = all.iter().map(|r| r.tokens_adopted).sum();
    assert_eq!((fetched, adopted), (1, 23), "one fetched, 23 adopted");
    println!(
        "cold start: 24 members (8 processes), {} API requests, {} token request",
        servers.api_requests(),
        servers.token_requests()
    );
}

/// 8 processes for 30 s on 6 s tokens: the fleet refreshes once per refresh point, about
/// `30 / (0.75 x 6)` token requests between them, not 8 times that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steady_state_of_8_processes_is_one_token_per_lifetime() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(6), Duration::from_millis(50)).await;
    let start_at = SystemTime::now() + Duration::from_millis(3000);
    let run_for = Duration::from_secs(30);
    let workers = spawn_workers(8, &redis.url(), &servers, start_at, run_for);
    let all = reports(workers).await;

    let requests = servers.token_requests();
    // One at the start, then one per refresh point (75% of 6 s, less up to 5% of jitter:
    // every 4.2 to 4.5 s): 7 or 8 in 30 s, whatever the fleet's size.
    let expected = 30.0 / (0.75 * 6.0);
    println!(
        "steady state: 8 processes, 30 s, 6 s tokens: {requests} token requests \
         (duration / (0.75 x lifetime) = {expected:.1}; one process alone would make the same, \
         8 without a fleet about {:.0}); {} API requests",
        8.0 * (expected + 1.0),
        servers.api_requests()
    );
    assert!((6..=9).contains(&requests), "{requests} token requests");
    for report in &all {
        assert_eq!(report.failed, 0, "{report:?}");
        assert!(report.ok > 1_000, "{report:?}");
    }
    assert_eq!(
        servers.api_401s(),
        0,
        "no member ever sent an expired token"
    );
}

/// A revocation seen by all 8 processes: one new token for the fleet, and no request lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_seen_by_8_processes_costs_one_token_request() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(100)).await;
    let start_at = SystemTime::now() + Duration::from_millis(3000);
    let workers = spawn_workers(8, &redis.url(), &servers, start_at, Duration::from_secs(5));
    // Revoke once every member uses the first token.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert_eq!(servers.token_requests(), 1);
    servers.revoke_all();
    let all = reports(workers).await;

    assert_eq!(servers.token_requests(), 2, "one replacement for the fleet");
    let issued = servers.issued();
    for report in &all {
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(report.tokens, issued, "{report:?}");
    }
    println!(
        "revocation: 8 processes saw it ({} rejections), 1 new token request",
        servers.api_401s()
    );
}

/// The process holding the lock dies mid-fetch (SIGKILL): the others wait out the lock's
/// time to live, then one fetches. One extra token request; nobody hangs or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_that_dies_costs_one_extra_fetch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // The first token request never gets its answer in time: its process dies waiting.
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_secs(60)).await;
    let holder = Worker::spawn(
        &redis.url(),
        &servers.token_url,
        &servers.api_url,
        SystemTime::now(),
        Duration::from_secs(60),
    );
    let mut raw = redis.raw();
    let lock_taken = async {
        loop {
            let locks: Vec<String> = redis::cmd("KEYS")
                .arg("{cc:*}:lock")
                .query(&mut raw)
                .unwrap();
            if !locks.is_empty() && servers.token_requests() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), lock_taken)
        .await
        .expect("the first process takes the lock");
    std::process::Command::new("kill")
        .args(["-KILL", &holder.pid().to_string()])
        .status()
        .unwrap();
    let _ = tokio::task::spawn_blocking(move || holder.report_or_nothing()).await;
    servers.set_delay(Duration::ZERO);

    // Four members start while the dead process's lock still stands (5 s time to live).
    let started = std::time::Instant::now();
    let members = spawn_members(
        4,
        || credentials(&redis.url(), &servers.token_url),
        &servers.api_url,
        SystemTime::now(),
        Duration::from_millis(300),
    );
    let all = reports_of(members).await;
    let took = started.elapsed();

    assert_eq!(
        servers.token_requests(),
        2,
        "the dead holder's, and one more"
    );
    for report in &all {
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(report.tokens.len(), 1, "{report:?}");
        assert!(
            report.max_latency_ms <= 7_000,
            "bounded by the lock's time to live: {report:?}"
        );
    }
    assert!(took < Duration::from_secs(10), "nobody hangs: {took:?}");
    println!(
        "dead lock holder: members waited {took:?} (lock time to live 5 s), 1 extra token request"
    );
}
