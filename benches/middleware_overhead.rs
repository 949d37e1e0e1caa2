//! `middleware_overhead`: the same loopback request (GET, `200 ok`, body read) sent one at a
//! time
//! - through a plain `reqwest::Client` with a static `Authorization` default header, and
//!   through `reqwest_middleware` with our middleware on a warm cache;
//! - through a hyper-util client behind tower-http's
//!   `SetRequestHeader::overriding(AUTHORIZATION, value)`, and behind our tower layer on a warm
//!   cache (needs the `tower` feature).
//!
//! Target (issue 3): ours / baseline at most 1.05 for each pair.
//!
//! Two more, for attribution only: `middleware_static_header` (reqwest-middleware with a
//! one-line middleware that inserts the static header: the cost of the middleware framework
//! itself) and `ours_layer_without_replay` (our layer without the request clone kept for a
//! retry after a 401).
//!
//! The API runs on its own runtime thread; the client side on a current-thread runtime that
//! criterion drives.
//!
//! `MIDDLEWARE_OVERHEAD_PROFILE=<id>` skips criterion and sends 2,000 requests of that variant
//! inside `profile_loop`, for `valgrind --tool=callgrind --toggle-collect='*profile_loop*'`:
//! instructions per request on the client side, which the load of the machine does not change.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{criterion_median_ns, verdict};
use criterion::Criterion;
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};

const REQWEST_GROUP: &str = "middleware_overhead_reqwest";
const TOWER_GROUP: &str = "middleware_overhead_tower";

/// The static header as a middleware: what reqwest-middleware costs by itself.
struct StaticHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticHeader {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        req.headers_mut().insert(AUTHORIZATION, self.0.clone());
        next.run(req, extensions).await
    }
}

/// Every way of sending the request.
struct Clients {
    url: String,
    plain: reqwest::Client,
    static_middleware: ClientWithMiddleware,
    ours_middleware: ClientWithMiddleware,
    #[cfg(feature = "tower")]
    tower: tower_pair::Services,
}

/// (group, id) of every variant; the first two of each group are the pair the target is about.
const VARIANTS: &[(&str, &str)] = &[
    (REQWEST_GROUP, "plain_default_header"),
    (REQWEST_GROUP, "ours_middleware"),
    (REQWEST_GROUP, "middleware_static_header"),
    (TOWER_GROUP, "set_request_header"),
    (TOWER_GROUP, "ours_layer"),
    (TOWER_GROUP, "ours_layer_without_replay"),
];

impl Clients {
    async fn send(&self, id: &str) -> Bytes {
        let response = match id {
            "plain_default_header" => self.plain.get(&self.url).send().await.expect("request"),
            "ours_middleware" => self
                .ours_middleware
                .get(&self.url)
                .send()
                .await
                .expect("request"),
            "middleware_static_header" => self
                .static_middleware
                .get(&self.url)
                .send()
                .await
                .expect("request"),
            #[cfg(feature = "tower")]
            tower => return self.tower.send(tower, &self.url).await,
            #[cfg(not(feature = "tower"))]
            other => unreachable!("{other} needs the tower feature"),
        };
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("body")
    }
}

fn main() {
    let run_started = SystemTime::now();
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let addr = common::serve_loopback(server.handle());

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let (credentials, calls) = common::credentials(Duration::ZERO, Duration::from_secs(3600));
    let token = client_rt
        .block_on(credentials.access_token())
        .expect("the source answers");
    let static_header = common::bearer(token.secret());

    let mut headers = http::HeaderMap::new();
    headers.insert(AUTHORIZATION, static_header.clone());
    let clients = Clients {
        url: format!("http://{addr}/v1/accounts"),
        plain: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client"),
        static_middleware: reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(StaticHeader(static_header.clone()))
            .build(),
        ours_middleware: reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(credentials.middleware())
            .build(),
        #[cfg(feature = "tower")]
        tower: tower_pair::Services::new(&client_rt, &credentials, &static_header),
    };
    let variants: Vec<(&str, &str)> = VARIANTS
        .iter()
        .copied()
        .filter(|(group, _)| cfg!(feature = "tower") || *group != TOWER_GROUP)
        .collect();

    if let Ok(id) = std::env::var("MIDDLEWARE_OVERHEAD_PROFILE") {
        assert!(variants.iter().any(|v| v.1 == id), "unknown variant {id}");
        client_rt.block_on(async {
            for _ in 0..200 {
                clients.send(&id).await;
            }
        });
        profile_loop(&client_rt, &clients, &id, 2_000);
        return;
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for group_name in [REQWEST_GROUP, TOWER_GROUP] {
        let ids: Vec<&str> = variants
            .iter()
            .filter(|v| v.0 == group_name)
            .map(|v| v.1)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let mut group = criterion.benchmark_group(group_name);
        for id in ids {
            group.bench_function(id, |b| b.to_async(&client_rt).iter(|| clients.send(id)));
        }
        group.finish();
    }
    criterion.final_summary();
    // Every request was a cache hit on the one token.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    println!();
    println!("middleware_overhead (criterion medians of this run; absolute times vary by machine)");
    report(
        REQWEST_GROUP,
        "plain_default_header",
        &["ours_middleware", "middleware_static_header"],
        run_started,
    );
    if cfg!(feature = "tower") {
        report(
            TOWER_GROUP,
            "set_request_header",
            &["ours_layer", "ours_layer_without_replay"],
            run_started,
        );
    } else {
        println!("  {TOWER_GROUP}: skipped (run with --features tower or --all-features)");
    }

    if common::bench_mode() {
        println!();
        println!(
            "middleware_overhead, interleaved loop ({BLOCKS} blocks of {PER_BLOCK} requests of each \
             variant in turn; medians of the per-block ratios)"
        );
        for group in [REQWEST_GROUP, TOWER_GROUP] {
            let ids: Vec<&str> = variants
                .iter()
                .filter(|v| v.0 == group)
                .map(|v| v.1)
                .collect();
            if !ids.is_empty() {
                interleaved(&client_rt, &clients, group, &ids);
            }
        }
    }
    drop(server);
}

const BLOCKS: usize = 30;
const PER_BLOCK: usize = 200;

/// Sends blocks of each variant in turn and prints each one's time against the first's.
fn interleaved(runtime: &tokio::runtime::Runtime, clients: &Clients, group: &str, ids: &[&str]) {
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
    runtime.block_on(async {
        for _ in 0..BLOCKS {
            for (i, id) in ids.iter().enumerate() {
                let started = std::time::Instant::now();
                for _ in 0..PER_BLOCK {
                    clients.send(id).await;
                }
                us[i].push(started.elapsed().as_secs_f64() * 1e6 / PER_BLOCK as f64);
            }
        }
    });
    let mut base = us[0].clone();
    println!("  {group}: {} {:.2} us", ids[0], common::median(&mut base));
    for (i, id) in ids.iter().enumerate().skip(1) {
        let mut ratios: Vec<f64> = us[i].iter().zip(&us[0]).map(|(a, b)| a / b).collect();
        let ratio = common::median(&mut ratios);
        let mut own = us[i].clone();
        let judged = if i == 1 {
            format!("(target <= 1.05) -> {}", verdict(ratio <= 1.05))
        } else {
            "(attribution only)".to_owned()
        };
        println!(
            "  {group}: {id} {:.2} us, {id}/{} = {ratio:.3} {judged}",
            common::median(&mut own),
            ids[0]
        );
    }
}

/// Sends `n` requests of one variant; a function of its own so that callgrind can count the
/// instructions inside it alone.
#[inline(never)]
fn profile_loop(runtime: &tokio::runtime::Runtime, clients: &Clients, id: &str, n: usize) {
    runtime.block_on(async {
        for _ in 0..n {
            clients.send(id).await;
        }
    });
}

/// Prints each variant against the baseline; the first of `others` is the target pair.
fn report(group: &str, baseline: &str, others: &[&str], run_started: SystemTime) {
    let Some(base) = criterion_median_ns(group, baseline, run_started) else {
        println!("  {group}: no estimates from this run (test mode or a filter): no ratio");
        return;
    };
    println!("  {group}: {baseline} {:.2} us", base / 1e3);
    for (i, id) in others.iter().enumerate() {
        let Some(ns) = criterion_median_ns(group, id, run_started) else {
            continue;
        };
        let ratio = ns / base;
        let judged = if i == 0 {
            format!("(target <= 1.05) -> {}", verdict(ratio <= 1.05))
        } else {
            "(attribution only)".to_owned()
        };
        println!(
            "  {group}: {id} {:.2} us, {id}/{baseline} = {ratio:.3} {judged}",
            ns / 1e3
        );
    }
}

#[cfg(feature = "tower")]
mod tower_pair {
    use bytes::Bytes;
    use client_credentials::tower::ClientCredentialsService;
    use client_credentials::tower::NoReplay;
    use client_credentials::ClientCredentials;
    use http::header::AUTHORIZATION;
    use http::{HeaderValue, Request};
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{ServiceBuilder, ServiceExt as _};
    use tower_http::set_header::{SetRequestHeader, SetRequestHeaderLayer};

    type Hyper = Client<HttpConnector, Full<Bytes>>;

    pub(crate) struct Services {
        baseline: SetRequestHeader<Hyper, HeaderValue>,
        ours: ClientCredentialsService<Hyper>,
        ours_without_replay: ClientCredentialsService<Hyper, NoReplay>,
    }

    impl Services {
        pub(crate) fn new(
            runtime: &tokio::runtime::Runtime,
            credentials: &ClientCredentials,
            header: &HeaderValue,
        ) -> Self {
            let hyper: Hyper = {
                let _guard = runtime.enter();
                Client::builder(TokioExecutor::new()).build_http()
            };
            Self {
                baseline: ServiceBuilder::new()
                    .layer(SetRequestHeaderLayer::overriding(
                        AUTHORIZATION,
                        header.clone(),
                    ))
                    .service(hyper.clone()),
                ours: ServiceBuilder::new()
                    .layer(credentials.layer())
                    .service(hyper.clone()),
                ours_without_replay: ServiceBuilder::new()
                    .layer(credentials.layer().without_replay())
                    .service(hyper),
            }
        }

        pub(crate) async fn send(&self, id: &str, url: &str) -> Bytes {
            let request = Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("request");
            match id {
                "set_request_header" => {
                    let response = self
                        .baseline
                        .clone()
                        .oneshot(request)
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 200);
                    response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes()
                }
                "ours_layer" => {
                    let response = self.ours.clone().oneshot(request).await.expect("request");
                    assert_eq!(response.status(), 200);
                    response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes()
                }
                "ours_layer_without_replay" => {
                    let response = self
                        .ours_without_replay
                        .clone()
                        .oneshot(request)
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 200);
                    response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes()
                }
                other => unreachable!("unknown variant {other}"),
            }
        }
    }
}
