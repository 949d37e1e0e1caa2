//! Fleet members: in-process instances, and child processes (this test binary run again with
//! `FLEET_WORKER` set, entering [`worker_process`]) that send requests for a while and print
//! what they saw.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use client_credentials::{ClientCredentials, EncryptionKey, Fleet};
use serde::{Deserialize, Serialize};

/// The fleet's shared encryption key (a test key: the tests never hold a real one).
pub const KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// One member's view of a fleet test.
pub fn credentials(redis_url: &str, token_url: &str) -> ClientCredentials {
    credentials_with(redis_url, token_url, |fleet| fleet)
}

/// One member, with the fleet settings changed by `tune`.
pub fn credentials_with(
    redis_url: &str,
    token_url: &str,
    tune: impl FnOnce(Fleet) -> Fleet,
) -> ClientCredentials {
    let fleet = Fleet::redis(redis_url).expect("a Redis URL");
    credentials_on(tune(fleet), token_url)
}

/// One member on `fleet` (the test key is added).
pub fn credentials_on(fleet: Fleet, token_url: &str) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(token_url)
        .client_id("fleet-test")
        .client_secret("fleet-secret")
        .fleet(fleet.encryption_key(EncryptionKey::from_base64("test-1", KEY).expect("a key")))
        .build()
        .expect("credentials")
}

/// What a member did: requests that succeeded and failed, the tokens the API saw from it (in
/// order of first use), its slowest request, and its counters.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub ok: u64,
    pub failed: u64,
    pub tokens: Vec<String>,
    pub max_latency_ms: u64,
    pub token_requests: u64,
    pub tokens_adopted: u64,
    pub store_errors: u64,
}

/// Sends a GET to `api_url` every `interval` from `start_at` for `duration`.
pub async fn run(
    credentials: &ClientCredentials,
    api_url: &str,
    start_at: SystemTime,
    duration: Duration,
    interval: Duration,
) -> Report {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(credentials.middleware())
        .build();
    if let Ok(wait) = start_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    // At least one request, then until `duration` has passed.
    loop {
        let sent = Instant::now();
        match client.get(api_url).send().await {
            Ok(response) if response.status().is_success() => {
                let token = response.text().await.unwrap_or_default();
                if seen.insert(token.clone()) {
                    report.tokens.push(token);
                }
                report.ok += 1;
            }
            Ok(response) => {
                eprintln!("request failed: {}", response.status());
                report.failed += 1;
            }
            Err(e) => {
                eprintln!("request failed: {e}");
                report.failed += 1;
            }
        }
        let took = sent.elapsed();
        report.max_latency_ms = report.max_latency_ms.max(took.as_millis() as u64);
        if started.elapsed() >= duration {
            break;
        }
        tokio::time::sleep(interval.saturating_sub(took)).await;
    }
    let stats = credentials.stats();
    report.token_requests = stats.token_requests;
    report.tokens_adopted = stats.tokens_adopted;
    report.store_errors = stats.store_errors;
    report
}

/// `n` members in this process, each made by `member()`, each sending a request every 20 ms
/// to `api_url` from `start_at` for `run_for`.
pub fn spawn_members(
    n: usize,
    member: impl Fn() -> ClientCredentials,
    api_url: &str,
    start_at: SystemTime,
    run_for: Duration,
) -> tokio::task::JoinSet<(Report, ClientCredentials)> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let member = member();
        let api = api_url.to_owned();
        set.spawn(async move {
            let report = run(&member, &api, start_at, run_for, Duration::from_millis(20)).await;
            (report, member)
        });
    }
    set
}

/// The reports of members spawned by [`spawn_members`].
pub async fn reports_of(set: tokio::task::JoinSet<(Report, ClientCredentials)>) -> Vec<Report> {
    set.join_all().await.into_iter().map(|(r, _)| r).collect()
}

/// `n` worker processes on the same fleet.
pub fn spawn_workers(
    n: usize,
    redis_url: &str,
    servers: &crate::servers::Servers,
    start_at: SystemTime,
    run_for: Duration,
) -> Vec<Worker> {
    (0..n)
        .map(|_| {
            Worker::spawn(
                redis_url,
                &servers.token_url,
                &servers.api_url,
                start_at,
                run_for,
            )
        })
        .collect()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A child process running [`worker_process`].
pub struct Worker(Child);

impl Worker {
    pub fn spawn(
        redis_url: &str,
        token_url: &str,
        api_url: &str,
        start_at: SystemTime,
        duration: Duration,
    ) -> Self {
        let child = Command::new(std::env::current_exe().expect("the test binary"))
            .args([
                "worker::worker_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("FLEET_WORKER", "1")
            .env("FLEET_REDIS", redis_url)
            .env("FLEET_TOKEN_URL", token_url)
            .env("FLEET_API_URL", api_url)
            .env("FLEET_START_AT", unix_ms(start_at).to_string())
            .env("FLEET_DURATION_MS", duration.as_millis().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("a worker process");
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits for a worker that was killed.
    pub fn report_or_nothing(mut self) {
        let _ = self.0.wait();
    }

    /// Waits for it and reads its report.
    pub fn report(self) -> Report {
        let output = self.0.wait_with_output().expect("the worker's output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("FLEET-REPORT "))
            .unwrap_or_else(|| panic!("no report from a worker: {stdout}"));
        serde_json::from_str(line).expect("a report")
    }
}

/// The body of a worker process; does nothing in a normal test run.
#[test]
#[ignore = "run by the fleet tests in child processes"]
fn worker_process() {
    if std::env::var_os("FLEET_WORKER").is_none() {
        return;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let start_at = UNIX_EPOCH + Duration::from_millis(var("FLEET_START_AT").parse().unwrap());
    let duration = Duration::from_millis(var("FLEET_DURATION_MS").parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let credentials = credentials(&var("FLEET_REDIS"), &var("FLEET_TOKEN_URL"));
        run(
            &credentials,
            &var("FLEET_API_URL"),
            start_at,
            duration,
            Duration::from_millis(20),
        )
        .await
    });
    println!("FLEET-REPORT {}", serde_json::to_string(&report).unwrap());
}
