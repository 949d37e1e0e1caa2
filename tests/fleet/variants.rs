//! The deployments users run: Redis Cluster, TLS (`rediss://`), ACL users.

use std::time::{Duration, SystemTime};

use crate::servers::{RedisServer, Servers};
use crate::worker::{credentials_on, reports_of, spawn_members, Report};
use client_credentials::{Fleet, RedisStore};

/// Four members on `fleet()`, each sending requests for half a second. The operation timeout
/// is 2 s: a first TLS handshake or cluster discovery on a loaded test machine can take longer
/// than the default 250 ms, and these tests are about the deployments, not the timeouts.
async fn four_members(fleet: impl Fn() -> Fleet, servers: &Servers) -> Vec<Report> {
    let members = spawn_members(
        4,
        || {
            credentials_on(
                fleet().operation_timeout(Duration::from_secs(2)),
                &servers.token_url,
            )
        },
        &servers.api_url,
        SystemTime::now(),
        Duration::from_millis(500),
    );
    reports_of(members).await
}

fn assert_shared(reports: &[Report], servers: &Servers) {
    assert_eq!(servers.token_requests(), 1, "one token for the four");
    for report in reports {
        assert_eq!(report.failed, 0, "{report:?}");
        assert_eq!(report.tokens, servers.issued(), "{report:?}");
    }
}

/// A one-node Redis Cluster (every slot on one node): the cluster client routes by the hash
/// tag, and the scripts' keys are in one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster() {
    let Some(redis) = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]) else {
        return;
    };
    redis.cli(&["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    for _ in 0..100 {
        if redis.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(100)).await;
    let url = redis.url();
    let reports = four_members(
        || Fleet::new(RedisStore::cluster([url.as_str()]).unwrap(), "cluster"),
        &servers,
    )
    .await;
    assert_shared(&reports, &servers);
}

/// TLS with a private CA: `rediss://` through a `redis::Client` that trusts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("cc-fleet-tls-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    };
    let (cert, key, ca_file) = (
        write("server.crt", server.pem()),
        write("server.key", server_key.serialize_pem()),
        write("ca.crt", ca.pem()),
    );
    let Some(redis) = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "no",
    ]) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(100)).await;
    let ca_pem = ca.pem();
    let reports = four_members(
        || {
            let client = redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca_pem.clone().into_bytes()),
                },
            )
            .unwrap();
            Fleet::new(RedisStore::from_client(client), "tls")
        },
        &servers,
    )
    .await;
    assert_shared(&reports, &servers);
    let _ = std::fs::remove_dir_all(&dir);

    // Without the CA, the handshake fails: no store, but no failed request either.
    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    let untrusting = four_members(|| Fleet::redis(&url).unwrap(), &servers).await;
    for report in &untrusting {
        assert_eq!(report.failed, 0);
        assert!(report.store_errors > 0, "{report:?}");
    }
}

/// An ACL user limited to the fleet's keys works; a wrong password means no store, and no
/// failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_the_fleet_keys() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    redis.cli(&[
        "ACL",
        "SETUSER",
        "fleet",
        "on",
        ">s3cret",
        "~{cc:*",
        "+@read",
        "+@write",
        "+@scripting",
        "+@connection",
    ]);
    let servers = Servers::start(Duration::from_secs(3600), Duration::from_millis(100)).await;
    let url = format!("redis://fleet:s3cret@127.0.0.1:{}", redis.port);
    let reports = four_members(|| Fleet::redis(&url).unwrap(), &servers).await;
    assert_shared(&reports, &servers);

    let servers = Servers::start(Duration::from_secs(3600), Duration::ZERO).await;
    let wrong = format!("redis://fleet:wrong@127.0.0.1:{}", redis.port);
    let reports = four_members(|| Fleet::redis(&wrong).unwrap(), &servers).await;
    for report in &reports {
        assert_eq!(report.failed, 0);
        assert!(report.store_errors > 0, "{report:?}");
    }
    // The password is never in how the store is named.
    let fleet = Fleet::redis(&url).unwrap();
    assert!(!format!("{fleet:?}").contains("s3cret"), "{fleet:?}");
}
