//! The store never fails a request: Redis killed mid-run and restarted on the same port,
//! paused, down at start-up, refusing scripts. Zero failed requests, latency bounded by the
//! operation timeout, and the fleet converges again after.

use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;

use crate::servers::{free_port, RedisServer, Servers};
use crate::worker::{credentials, reports_of, spawn_members, Report};

/// `n` members sending requests for `run_for`, in this process.
fn members(
    n: usize,
    redis_url: &str,
    servers: &Servers,
    run_for: Duration,
) -> JoinSet<(Report, client_credentials::ClientCredentials)> {
    spawn_members(
        n,
        || credentials(redis_url, &servers.token_url),
        &servers.api_url,
        SystemTime::now(),
        run_for,
    )
}

fn assert_no_failures(reports: &[(Report, client_credentials::ClientCredentials)]) {
    for (report, _) in reports {
        assert_eq!(report.failed, 0, "{report:?}");
        assert!(report.ok > 0, "{report:?}");
    }
}

/// SIGKILL at 2 s, restarted empty on the same port at 4 s, four members on 3 s tokens for
/// 14 s: no request fails, none waits long, and at the end they share one token again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3), Duration::from_millis(20)).await;
    let running = members(4, &redis.url(), &servers, Duration::from_secs(14));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = servers.token_requests();
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    let all = running.join_all().await;

    assert_no_failures(&all);
    for (report, _) in &all {
        // The operation timeout is 250 ms; a fetch takes 20 ms.
        assert!(report.max_latency_ms < 1_500, "{report:?}");
    }
    let last: std::collections::HashSet<&String> =
        all.iter().map(|(r, _)| r.tokens.last().unwrap()).collect();
    assert_eq!(
        last.len(),
        1,
        "converged on one token after the restart: {last:?}"
    );
    let errors: u64 = all.iter().map(|(_, m)| m.stats().store_errors).sum();
    assert!(errors > 0, "the outage was seen");
    println!(
        "redis SIGKILL + restart: 0 failed of {} requests, max latency {} ms, {} token requests \
         ({before} before the kill), {errors} store errors",
        servers.api_requests(),
        all.iter().map(|(r, _)| r.max_latency_ms).max().unwrap(),
        servers.token_requests()
    );
}

/// SIGSTOP for 3 s: calls time out after 250 ms, the breaker stops asking, nobody fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(2), Duration::from_millis(20)).await;
    let running = members(4, &redis.url(), &servers, Duration::from_secs(9));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.resume();
    let all = running.join_all().await;

    assert_no_failures(&all);
    let max = all.iter().map(|(r, _)| r.max_latency_ms).max().unwrap();
    // At most a few timed-out store calls (250 ms each) before the breaker opens, then a fetch.
    assert!(
        max < 1_500,
        "latency bounded by the operation timeout: {max} ms"
    );
    let errors: u64 = all.iter().map(|(_, m)| m.stats().store_errors).sum();
    let skipped: u64 = all.iter().map(|(_, m)| m.stats().store_calls_skipped).sum();
    assert!(errors > 0, "the pause was seen");
    println!(
        "redis SIGSTOP 3 s: 0 failed of {} requests, max latency {max} ms, {} token requests, \
         {errors} store errors, {skipped} calls skipped by the breaker",
        servers.api_requests(),
        servers.token_requests()
    );
}

/// No Redis at start-up: every member fetches for itself and nobody fails. Once Redis is up,
/// the fleet converges: new members adopt the stored token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(20)).await;
    let all = members(4, &url, &servers, Duration::from_millis(1500))
        .join_all()
        .await;
    assert_no_failures(&all);
    assert_eq!(servers.token_requests(), 4, "each fetched for itself");
    let max = all.iter().map(|(r, _)| r.max_latency_ms).max().unwrap();
    assert!(max < 1_000, "{max} ms");

    // Redis comes up on that port: the next members share one token through it.
    let Some(redis) = RedisServer::start_on(port) else {
        return;
    };
    let later = members(4, &redis.url(), &servers, Duration::from_millis(500))
        .join_all()
        .await;
    assert_no_failures(&later);
    assert_eq!(
        servers.token_requests(),
        5,
        "one more for the four new members"
    );
    let tokens: std::collections::HashSet<&String> =
        later.iter().flat_map(|(r, _)| &r.tokens).collect();
    assert_eq!(tokens.len(), 1);
    println!("redis down at start-up: 0 failed, max latency {max} ms; converged after it came up");
}

/// An ACL user that may not run scripts: every store call fails (`NOPERM`), the members fetch
/// for themselves, nobody fails, and the errors are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_scripts_means_no_store() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    redis.cli(&[
        "ACL",
        "SETUSER",
        "noscripts",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-@scripting",
    ]);
    let url = format!("redis://noscripts:pw@127.0.0.1:{}", redis.port);
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(20)).await;
    let all = members(3, &url, &servers, Duration::from_millis(800))
        .join_all()
        .await;
    assert_no_failures(&all);
    assert_eq!(servers.token_requests(), 3);
    for (_, member) in &all {
        assert!(member.stats().store_errors > 0);
        assert_eq!(member.stats().tokens_adopted, 0);
    }
}

/// The fleet-wide limiter: an API that rejects every token, four members for 8 s. The fleet
/// replaces the token at once the first time, then after 1, 2 and 4 s: about as many token
/// requests as one process alone, not four times as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_rejects_everything_is_limited_fleet_wide() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(20)).await;
    servers.reject_all();
    let all = reports_of(members(4, &redis.url(), &servers, Duration::from_secs(8))).await;
    let requests = servers.token_requests();
    // Initial, then forced at about 0, 1, 3 and 7 s.
    println!("an API rejecting everything, 4 members, 8 s: {requests} token requests");
    assert!((4..=6).contains(&requests), "{requests}");
    for report in &all {
        assert_eq!(report.ok, 0);
    }
}
