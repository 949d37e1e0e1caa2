//! Verifying what the crate signs, with `jsonwebtoken`.

use base64::Engine as _;
use client_credentials::SigningKey;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Header, Validation};
use serde_json::Value;
use wiremock::Request;

pub const TEST_KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

/// A test key file's contents.
pub fn key_file(name: &str) -> String {
    std::fs::read_to_string(format!("{TEST_KEYS}/{name}")).unwrap()
}

/// The form of a request, as name-value pairs.
pub fn form(request: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

/// One form field (the first with that name).
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The JSON of a JWS part, without checking anything (to look at the raw `aud`, say).
pub fn raw_part(jws: &str, index: usize) -> Value {
    let part = jws.split('.').nth(index).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn algorithm(name: &str) -> Algorithm {
    match name {
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        "PS256" => Algorithm::PS256,
        "RS256" => Algorithm::RS256,
        "HS256" => Algorithm::HS256,
        other => panic!("unexpected alg {other}"),
    }
}

/// Verifies a client assertion signed by `key` (or with `secret` for HS256): signature,
/// `iss`, `sub`, `aud` (one string), `exp`, and the header's `typ`. Returns header and claims.
pub fn verify_assertion(
    jws: &str,
    key: Option<&SigningKey>,
    secret: Option<&str>,
    client_id: &str,
    audience: &str,
) -> (Header, Value) {
    let header = decode_header(jws).unwrap();
    let decoding = match (key, secret) {
        (Some(key), _) => {
            let jwk: Jwk = serde_json::from_str(&key.public_jwk()).unwrap();
            DecodingKey::from_jwk(&jwk).unwrap()
        }
        (None, Some(secret)) => DecodingKey::from_secret(secret.as_bytes()),
        (None, None) => unreachable!(),
    };
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = 0;
    let claims = decode::<Value>(jws, &decoding, &validation)
        .unwrap_or_else(|e| panic!("the assertion does not verify: {e}"))
        .claims;
    assert_eq!(header.typ.as_deref(), Some("client-authentication+jwt"));
    assert!(
        raw_part(jws, 1)["aud"].is_string(),
        "aud is one string, never an array"
    );
    (header, claims)
}

/// Verifies a DPoP proof with the key in its own header (RFC 9449 §4.3): `typ`, a public
/// `jwk`, the signature. Returns the claims and the key's RFC 7638 thumbprint.
pub fn verify_proof(jws: &str) -> (Value, String) {
    let header = decode_header(jws).unwrap();
    assert_eq!(header.typ.as_deref(), Some("dpop+jwt"));
    let jwk = header.jwk.expect("a proof carries its public key");
    let raw_jwk = &raw_part(jws, 0)["jwk"];
    assert!(raw_jwk.get("d").is_none(), "never a private member");
    let key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(algorithm(&format!("{:?}", header.alg)));
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let claims = decode::<Value>(jws, &key, &validation)
        .unwrap_or_else(|e| panic!("the proof does not verify: {e}"))
        .claims;
    (claims, jwk.thumbprint(ThumbprintHash::SHA256))
}

/// base64url(SHA-256(token)), computed here (not by the crate).
pub fn ath(token: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
