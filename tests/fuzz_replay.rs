//! The fuzz targets' bodies (`fuzz/src/lib.rs`) over every input kept in `fuzz/seeds/<target>/`
//! (hand-made starting points), `fuzz/corpus/<target>/` (the corpora that fuzzing runs grew,
//! minimized) and `fuzz/artifacts/<target>/` (inputs that once crashed a target: regression
//! cases), on the stable toolchain. A separate binary: it
//! needs the hidden `__fuzzing` feature (`cargo test --all-features` turns it on).

use std::path::{Path, PathBuf};

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod bodies;

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut report = Vec::new();
    for (target, body) in bodies::TARGETS {
        let seeds = inputs(&root.join("seeds").join(target));
        let corpus = inputs(&root.join("corpus").join(target));
        let artifacts = inputs(&root.join("artifacts").join(target));
        assert!(
            !seeds.is_empty() && !corpus.is_empty(),
            "fuzz/seeds/{target} or fuzz/corpus/{target} is empty: nothing to replay"
        );
        for file in seeds.iter().chain(&corpus).chain(&artifacts) {
            let data = match std::fs::read(file) {
                Ok(data) => data,
                // Only while a fuzzer rewrites the corpus next to this test.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", file.display()),
            };
            if std::panic::catch_unwind(|| body(&data)).is_err() {
                panic!("{target}: {} fails its target", file.display());
            }
        }
        report.push(format!(
            "{target}: {} seeds, {} corpus, {} artifacts",
            seeds.len(),
            corpus.len(),
            artifacts.len()
        ));
    }
    println!("{}", report.join("\n"));
}

/// The bodies on hand-made inputs that take each branch (a corpus need not): what they
/// accept is what the parsers accept.
#[test]
fn the_bodies_take_both_branches() {
    use client_credentials::fuzzing;
    use std::time::{Duration, SystemTime};

    bodies::tenant_id(b"acme");
    bodies::tenant_id(b"line\nbreak");
    assert!(client_credentials::TenantId::new("line\nbreak").is_err());

    bodies::retry_after(b"120");
    // Two minutes before the date, as the clock in the first eight bytes.
    let clock: u64 = 1_796_169_480;
    let date = "Wed, 02 Dec 2026 00:00:00 GMT";
    bodies::retry_after(&[&clock.to_be_bytes()[..], date.as_bytes()].concat());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(clock);
    let header = http::HeaderValue::from_static(date);
    assert_eq!(
        fuzzing::parse_retry_after(&header, now),
        Some(Duration::from_secs(120))
    );

    bodies::signing_key(include_bytes!("keys/ec_pkcs8.pem"));
    bodies::signing_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");

    let value = br#"{"v":1,"token":"t","type":"Bearer","lifetime_ms":1000,"refresh_ms":750}"#;
    // The mode byte (even: plaintext codec), then the value: its format byte (0) and record.
    let plaintext = [&[0u8][..], value].concat();
    bodies::fleet_value(&[&[0u8][..], &plaintext].concat());
    let opened = fuzzing::fleet_open(false, "cc:fuzz", &plaintext).unwrap();
    assert_eq!(opened.token, "t");
    assert_eq!(opened.refresh_in, Duration::from_millis(750));

    // The encrypted seeds were sealed by another AES-256-GCM implementation (Python's
    // `cryptography`) from the format in `fleet/codec.rs`'s docs: they open.
    let seed = include_bytes!("../fuzz/seeds/fleet_value/encrypted-dpop");
    let opened = fuzzing::fleet_open(true, "cc:fuzz", &seed[1..]).unwrap();
    assert_eq!(
        (opened.token.as_str(), opened.scheme),
        ("dpop-bound", "DPoP")
    );
    assert_eq!(
        opened.jkt.as_deref(),
        Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    );
    assert_eq!(fuzzing::fleet_open(true, "cc:other", &seed[1..]), None);
}
