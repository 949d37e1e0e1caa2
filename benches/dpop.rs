//! `dpop`: what DPoP (RFC 9449) costs.
//!
//! 1. **One proof** (`DpopProofs::proof`: a random `jti`, the claims as JSON with the token's
//!    `ath` (its SHA-256, which the cache computes once per token), base64url, the signature,
//!    the header value) against its floor: **a bare
//!    signature of the same bytes with the same library** (aws-lc-rs, the same key loaded from
//!    the same PEM), for ES256 and EdDSA. Target (issue 10): at most 1.15x.
//! 2. **The adapters with DPoP** on a warm cache (a proof per request) against the same
//!    loopback request carrying static `Authorization` and `DPoP` headers: reqwest (a plain
//!    client with default headers) and tower (hyper-util behind two `SetRequestHeader`s).
//!    Target: at most 1.25x. Measured in an interleaved loop (blocks of each variant in turn,
//!    the median of per-block ratios), which keeps a busy machine's drift out of the ratio.
//!
//! `DPOP_PROFILE=ours|plain|signed` skips the rest and sends 1,500 requests of that variant
//! inside `profile_loop`, for `valgrind --tool=callgrind --toggle-collect='*profile_loop*'`.
//!
//! The Bearer path's figures are `cache_hit` and `middleware_overhead`'s; DPoP adds nothing to
//! it (one `Option` test per request).

mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine as _;
use bytes::Bytes;
use client_credentials::__bench::DpopProofs;
use client_credentials::{ClientCredentials, JwsAlgorithm, SigningKey};
use common::{median, verdict};
use criterion::Criterion;
use http::header::AUTHORIZATION;
use http::Method;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
const HTU: &str = "https://api.example.com/v1/accounts";
/// A token of a realistic length (a JWT access token is 600 to 1,200 bytes).
const TOKEN_LEN: usize = 900;

/// The DER inside a PEM file.
fn pem_der(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(format!("{KEYS}/{name}")).expect("test key");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64")
}

/// The floor: aws-lc-rs signing `input` with the same key, nothing else.
enum Floor {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Floor {
    fn sign(&self, input: &[u8]) -> usize {
        match self {
            Floor::Es256(k) => k
                .sign(&SystemRandom::new(), input)
                .expect("sign")
                .as_ref()
                .len(),
            Floor::EdDsa(k) => k.sign(input).as_ref().len(),
        }
    }
}

fn per_call<T>(n: u32, f: impl Fn() -> T) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        black_box(f());
    }
    started.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

fn proof_costs(criterion: &mut Criterion) {
    // The token's hash, which the cache computes once per token.
    let ath = DpopProofs::ath(&"t".repeat(TOKEN_LEN));
    let cases = [
        (
            JwsAlgorithm::Es256,
            "ec_pkcs8.pem",
            Floor::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &pem_der("ec_pkcs8.pem"),
                )
                .expect("P-256 key"),
            ),
        ),
        (
            JwsAlgorithm::EdDsa,
            "ed25519_pkcs8.pem",
            Floor::EdDsa(
                Ed25519KeyPair::from_pkcs8(&pem_der("ed25519_pkcs8.pem")).expect("Ed25519 key"),
            ),
        ),
    ];
    let mut verdicts = Vec::new();
    for (alg, file, floor) in cases {
        let pem = std::fs::read_to_string(format!("{KEYS}/{file}")).expect("test key");
        let proofs = DpopProofs::new(SigningKey::from_pem(alg, &pem).expect("key"));
        // The bytes a proof signs: its header and claims, as one proof has them.
        let sample = proofs.proof(&Method::GET, HTU, &ath);
        let sample = sample.to_str().expect("ascii");
        let input = sample.as_bytes()[..sample.rfind('.').expect("a JWS")].to_vec();
        let ours = || proofs.proof(&Method::GET, HTU, black_box(&ath));
        let bare = || floor.sign(black_box(&input));
        let mut group = criterion.benchmark_group(format!("dpop_proof_{alg}"));
        group.bench_function("bare_signature", |b| b.iter(bare));
        group.bench_function("ours_proof", |b| b.iter(ours));
        group.finish();

        let (blocks, per_block) = if common::bench_mode() {
            (15, 2_000)
        } else {
            (1, 10)
        };
        let (mut floor_ns, mut ours_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..blocks {
            let f = per_call(per_block, bare);
            let o = per_call(per_block, ours);
            floor_ns.push(f);
            ours_ns.push(o);
            ratios.push(o / f);
        }
        let ratio = median(&mut ratios);
        verdicts.push(format!(
            "  {alg}: bare signature {:.2} µs, our proof {:.2} µs: {ratio:.3}x (target <= 1.15) -> {}",
            median(&mut floor_ns) / 1e3,
            median(&mut ours_ns) / 1e3,
            verdict(ratio <= 1.15)
        ));
    }
    println!();
    println!("dpop proof, interleaved loop (medians of per-block ratios)");
    for line in verdicts {
        println!("{line}");
    }
}

/// A token endpoint answering a DPoP-bound token, on `runtime`.
fn serve_token_endpoint(runtime: &tokio::runtime::Handle) -> std::net::SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = format!(
        r#"{{"access_token":"{}","token_type":"DPoP","expires_in":3600}}"#,
        "t".repeat(TOKEN_LEN)
    );
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn adapter_costs() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let api = common::serve_loopback(server.handle());
    let auth = serve_token_endpoint(server.handle());
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let credentials = ClientCredentials::builder()
        .token_url(format!("http://{auth}/token"))
        .client_id("bench")
        .client_secret("bench-secret")
        .dpop()
        .build()
        .expect("credentials");
    let token = client_rt
        .block_on(credentials.access_token())
        .expect("a DPoP token");
    let url = format!("http://{api}/v1/accounts");
    // The baseline's static headers: the same token, one proof made once.
    let statics = client_rt
        .block_on(credentials.request_authorization(&Method::GET, &url))
        .expect("headers");
    assert_eq!(
        statics.authorization.to_str().expect("ascii"),
        format!("DPoP {}", token.secret())
    );
    let mut headers = http::HeaderMap::new();
    statics.apply_to(&mut headers);

    let plain = reqwest::Client::builder()
        .default_headers(headers.clone())
        .build()
        .expect("client");
    let ours = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(credentials.middleware())
        .build();
    let send_plain = || async {
        let r = plain.get(&url).send().await.expect("request");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body")
    };
    let send_ours = || async {
        let r = ours.get(&url).send().await.expect("request");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body")
    };
    #[cfg(feature = "tower")]
    let towers = tower_pair::Services::new(&client_rt, &credentials, &headers);

    let (blocks, per_block) = if common::bench_mode() {
        (20, 150)
    } else {
        (1, 3)
    };
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        f();
        started.elapsed().as_secs_f64()
    };
    let plain_block = || {
        client_rt.block_on(async {
            for _ in 0..per_block {
                black_box(send_plain().await);
            }
        })
    };
    let ours_block = || {
        client_rt.block_on(async {
            for _ in 0..per_block {
                black_box(send_ours().await);
            }
        })
    };
    // The least any DPoP client can do: the static request plus one ES256 signature (a proof's
    // length of input) per request.
    let signer = Floor::Es256(
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pem_der("ec_pkcs8.pem"),
        )
        .expect("P-256 key"),
    );
    let proof_input = vec![b'x'; statics.dpop.as_ref().map_or(0, |p| p.len() * 3 / 4)];
    let signed_block = || {
        client_rt.block_on(async {
            for _ in 0..per_block {
                black_box(signer.sign(black_box(&proof_input)));
                black_box(send_plain().await);
            }
        })
    };
    // Warm up connections.
    plain_block();
    ours_block();
    if let Ok(which) = std::env::var("DPOP_PROFILE") {
        profile_loop(&client_rt, &|| match which.as_str() {
            "ours" => ours_block(),
            "signed" => signed_block(),
            _ => plain_block(),
        });
        return;
    }
    let mut reqwest_ratios = Vec::new();
    let mut signed_ratios = Vec::new();
    let (mut plain_us, mut signed_us, mut ours_us) = (Vec::new(), Vec::new(), Vec::new());
    #[cfg(feature = "tower")]
    let (mut tower_ratios, mut tower_signed_ratios) = (Vec::new(), Vec::new());
    for _ in 0..blocks {
        let p = time(&mut || plain_block());
        let o = time(&mut || ours_block());
        let s = time(&mut || signed_block());
        reqwest_ratios.push(o / p);
        signed_ratios.push(o / s);
        let per_request = |t: f64| t * 1e6 / f64::from(per_block);
        plain_us.push(per_request(p));
        signed_us.push(per_request(s));
        ours_us.push(per_request(o));
        #[cfg(feature = "tower")]
        {
            let p = time(&mut || client_rt.block_on(towers.run("static", &url, per_block, &|| {})));
            let o = time(&mut || client_rt.block_on(towers.run("ours", &url, per_block, &|| {})));
            let s = time(&mut || {
                client_rt.block_on(towers.run("static", &url, per_block, &|| {
                    black_box(signer.sign(black_box(&proof_input)));
                }))
            });
            tower_ratios.push(o / p);
            tower_signed_ratios.push(o / s);
        }
    }
    println!();
    println!(
        "dpop adapters, interleaved loop ({blocks} blocks of {per_block} loopback requests of each \
         variant in turn; medians of the per-block ratios)"
    );
    let r = median(&mut reqwest_ratios);
    println!(
        "  reqwest: ours with DPoP / plain client with static Authorization + DPoP = {r:.3} (target <= 1.25) -> {}",
        verdict(r <= 1.25)
    );
    println!(
        "    per request: static {:.1} µs, static + one bare ES256 signature {:.1} µs, ours {:.1} µs; \
         ours / (static + signature) = {:.3}",
        median(&mut plain_us),
        median(&mut signed_us),
        median(&mut ours_us),
        median(&mut signed_ratios),
    );
    #[cfg(feature = "tower")]
    {
        let t = median(&mut tower_ratios);
        println!(
            "  tower: our layer with DPoP / SetRequestHeader x2 = {t:.3} (target <= 1.25) -> {}",
            verdict(t <= 1.25)
        );
        println!(
            "    ours / (SetRequestHeader x2 + one bare ES256 signature) = {:.3}",
            median(&mut tower_signed_ratios)
        );
    }
    let (plain_median, signed_median) = (
        median(&mut plain_us.clone()),
        median(&mut signed_us.clone()),
    );
    println!(
        "  One ES256 signature adds {:.2}x a loopback request here, so no DPoP client can meet \
         1.25x; the second line of each pair compares with that floor (the static request plus \
         one signature).",
        (signed_median - plain_median) / plain_median
    );
    let stats = credentials.stats();
    assert_eq!(stats.token_requests, 1, "every request was a cache hit");
    drop(server);
}

/// Runs `block` ten times; a function of its own so that callgrind can count the instructions
/// inside it alone.
#[inline(never)]
fn profile_loop(_runtime: &tokio::runtime::Runtime, block: &dyn Fn()) {
    for _ in 0..10 {
        block();
    }
}

#[cfg(feature = "tower")]
mod tower_pair {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_http::set_header::SetRequestHeaderLayer;

    type Body = Empty<Bytes>;
    type Hyper = Client<HttpConnector, Body>;

    pub struct Services {
        statics: tower::util::BoxCloneService<
            http::Request<Body>,
            http::Response<Bytes>,
            Box<dyn std::error::Error + Send + Sync>,
        >,
        ours: tower::util::BoxCloneService<
            http::Request<Body>,
            http::Response<Bytes>,
            Box<dyn std::error::Error + Send + Sync>,
        >,
    }

    impl Services {
        pub fn new(
            _rt: &tokio::runtime::Runtime,
            credentials: &ClientCredentials,
            headers: &http::HeaderMap,
        ) -> Self {
            let hyper: Hyper = Client::builder(TokioExecutor::new()).build_http();
            let dpop = http::HeaderName::from_static("dpop");
            let statics = ServiceBuilder::new()
                .layer(SetRequestHeaderLayer::overriding(
                    AUTHORIZATION,
                    headers[AUTHORIZATION].clone(),
                ))
                .layer(SetRequestHeaderLayer::overriding(
                    dpop.clone(),
                    headers[&dpop].clone(),
                ))
                .service(hyper.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .and_then(collect);
            let ours = ServiceBuilder::new()
                .layer(credentials.layer().without_replay())
                .service(hyper)
                .and_then(collect);
            Self {
                statics: tower::util::BoxCloneService::new(statics),
                ours: tower::util::BoxCloneService::new(ours),
            }
        }

        /// Sends `n` requests through `which` service, calling `before` ahead of each.
        pub async fn run(&self, which: &str, url: &str, n: u32, before: &dyn Fn()) {
            let service = if which == "ours" {
                &self.ours
            } else {
                &self.statics
            };
            for _ in 0..n {
                before();
                let request = http::Request::get(url).body(Body::new()).expect("request");
                let response = service.clone().oneshot(request).await.expect("response");
                assert_eq!(response.status(), 200);
                black_box(response);
            }
        }
    }

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// The whole body, as the reqwest side reads it.
    async fn collect<B>(response: http::Response<B>) -> Result<http::Response<Bytes>, BoxError>
    where
        B: http_body::Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        let bytes = BodyExt::collect(body).await.map_err(Into::into)?.to_bytes();
        Ok(http::Response::from_parts(parts, bytes))
    }

    #[allow(dead_code)]
    fn _assert_service<S: Service<http::Request<Body>>>(_: &S) {}
}

fn main() {
    if std::env::var_os("DPOP_PROFILE").is_some() {
        adapter_costs();
        return;
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    proof_costs(&mut criterion);
    criterion.final_summary();
    adapter_costs();
}
