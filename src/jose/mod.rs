//! JSON Web Signatures (RFC 7515) for client assertions (RFC 7523) and DPoP proofs (RFC 9449),
//! signed with aws-lc-rs.
//!
//! A compact JWS is `base64url(header) "." base64url(claims) "." base64url(signature)`. The
//! header of a DPoP proof never changes for a key, so it is encoded once
//! ([`Dpop`](crate::proof::Dpop) keeps it); per proof only the claims are serialized and the
//! input signed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;

use base64::Engine as _;

mod key;

pub use self::key::{JwsAlgorithm, SigningKey};

/// base64url without padding (RFC 7515 §2).
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url, padding allowed, as JWKs are found in the wild.
pub(crate) fn b64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// Where `jti`s come from: a 256-bit seed drawn once from the system's cryptographic random
/// source, and a counter.
struct JtiSource {
    seed: [u8; 32],
    counter: AtomicU64,
}

/// A new `jti`: 16 bytes, base64url, of SHA-256(seed || process id || counter).
///
/// Unique (the counter never repeats within a process, the process id tells a forked child
/// from its parent, the seed tells processes apart) and unpredictable without the seed, which
/// never leaves this function. Drawing 16 bytes with `aws_lc_rs::rand::fill` per proof cost
/// about 700 ns on our test machine; one SHA-256 block and reading the process id cost about
/// 370 ns together.
pub(crate) fn jti() -> Result<String, crate::Error> {
    let mut jti = String::with_capacity(22);
    push_jti(&mut jti)?;
    Ok(jti)
}

/// Appends a new `jti` (see [`jti`]) to `out`.
pub(crate) fn push_jti(out: &mut String) -> Result<(), crate::Error> {
    static SOURCE: OnceLock<JtiSource> = OnceLock::new();
    let source = match SOURCE.get() {
        Some(source) => source,
        None => {
            let mut seed = [0u8; 32];
            aws_lc_rs::rand::fill(&mut seed).map_err(|_| crate::Error::Signing)?;
            // Two threads may both draw a seed; one wins, and either is as good.
            SOURCE.get_or_init(|| JtiSource {
                seed,
                counter: AtomicU64::new(0),
            })
        }
    };
    let count = source.counter.fetch_add(1, Ordering::Relaxed);
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(&source.seed);
    hash.update(&std::process::id().to_le_bytes());
    hash.update(&count.to_le_bytes());
    let hash = hash.finish();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&hash.as_ref()[..16], out);
    Ok(())
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How a JWS is signed: a key pair, or a shared secret (`client_secret_jwt`, HS256).
pub(crate) enum Signer<'a> {
    Key(&'a SigningKey),
    Secret(&'a [u8]),
}

impl Signer<'_> {
    fn alg(&self) -> &'static str {
        match self {
            Signer::Key(key) => key.algorithm().as_str(),
            Signer::Secret(_) => "HS256",
        }
    }

    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, crate::Error> {
        match self {
            Signer::Key(key) => key.sign(input),
            Signer::Secret(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                Ok(aws_lc_rs::hmac::sign(&key, input).as_ref().to_vec())
            }
        }
    }
}

/// A compact JWS of `claims` (JSON) under the already encoded `header_b64`.
pub(crate) fn compact(
    header_b64: &str,
    claims: &str,
    signer: &Signer<'_>,
) -> Result<String, crate::Error> {
    let mut jws = String::with_capacity(header_b64.len() + claims.len() * 4 / 3 + 400);
    jws.push_str(header_b64);
    jws.push('.');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(claims, &mut jws);
    let signature = signer.sign(jws.as_bytes())?;
    jws.push('.');
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(signature, &mut jws);
    Ok(jws)
}

/// A client assertion (RFC 7523 §3, OpenID Connect Core §9): `iss` = `sub` = the client id,
/// `aud` a single string, a new random `jti`, `iat` now and a short `exp`; header
/// `typ: client-authentication+jwt` (draft-ietf-oauth-rfc7523bis), `kid` and `x5t#S256` when
/// known.
pub(crate) fn client_assertion(
    signer: &Signer<'_>,
    client_id: &str,
    audience: &str,
    lifetime_secs: u64,
) -> Result<zeroize::Zeroizing<String>, crate::Error> {
    #[derive(serde::Serialize)]
    struct Header<'a> {
        alg: &'a str,
        typ: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        kid: Option<&'a str>,
        #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
        x5t_s256: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        jti: String,
        iat: u64,
        exp: u64,
    }
    let (kid, x5t_s256) = match signer {
        Signer::Key(key) => (key.kid(), key.x5t_s256()),
        Signer::Secret(_) => (None, None),
    };
    let header = serde_json::to_string(&Header {
        alg: signer.alg(),
        typ: "client-authentication+jwt",
        kid,
        x5t_s256,
    })
    .map_err(|_| crate::Error::Signing)?;
    let iat = now_secs();
    let claims = serde_json::to_string(&Claims {
        iss: client_id,
        sub: client_id,
        aud: audience,
        jti: jti()?,
        iat,
        exp: iat.saturating_add(lifetime_secs),
    })
    .map_err(|_| crate::Error::Signing)?;
    compact(&b64(header.as_bytes()), &claims, signer).map(zeroize::Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_with_or_without_padding() {
        assert_eq!(b64(b"\xfb\xff"), "-_8");
        assert_eq!(b64_decode("-_8"), Some(b"\xfb\xff".to_vec()));
        assert_eq!(b64_decode("-_8="), Some(b"\xfb\xff".to_vec()));
        assert_eq!(b64_decode("+/8"), None);
    }

    #[test]
    fn jtis_are_random_and_long_enough() {
        let a = jti().unwrap();
        let b = jti().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22, "16 bytes, base64url");
    }

    #[test]
    fn jtis_never_repeat_and_look_random() {
        let jtis: std::collections::HashSet<String> = (0..10_000).map(|_| jti().unwrap()).collect();
        assert_eq!(jtis.len(), 10_000);
        // Not a counter in disguise: the bytes are spread over all values.
        let bytes: Vec<u8> = jtis.iter().flat_map(|j| b64_decode(j).unwrap()).collect();
        let mut seen = [0u32; 256];
        for b in &bytes {
            seen[usize::from(*b)] += 1;
        }
        let expected = bytes.len() as f64 / 256.0;
        assert!(
            seen.iter()
                .all(|&n| (f64::from(n) - expected).abs() < expected * 0.3),
            "{seen:?}"
        );
    }

    /// RFC 7515 A.1's HS256 example, to the byte.
    #[test]
    fn hs256_matches_the_rfc_example() {
        let key = b64_decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow").unwrap();
        let header_b64 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9";
        let claims =
            "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
        let jws = compact(header_b64, claims, &Signer::Secret(&key)).unwrap();
        assert_eq!(
            jws,
            "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
    }
}
