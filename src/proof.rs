//! DPoP (RFC 9449): the proof key, the proofs, and the nonces servers hand out.
//!
//! One [`Dpop`] per `ClientCredentials`, shared by the token request (proofs of possession for
//! the token) and the adapters (a proof on every API request). A proof is a JWS with header
//! `{"typ":"dpop+jwt","alg":..,"jwk":<public key>}` (encoded once per key) and claims `jti`
//! (random), `htm`, `htu` (the request's URL without query and fragment), `iat`, and `ath` (the
//! token's SHA-256) and `nonce` when there is one.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Method, Uri};
use url::Url;

use crate::config::url::Origin;
use crate::jose::{self, Signer, SigningKey};
use crate::Error;

/// The `DPoP` header.
pub(crate) const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");
/// The `DPoP-Nonce` header.
pub(crate) const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// How many origins' nonces are remembered; the least recently given one is forgotten past it.
const MAX_NONCES: usize = 64;
/// The longest nonce remembered (RFC 9449 sets no limit; servers send tens of characters).
const MAX_NONCE_LEN: usize = 1024;

/// A key, its thumbprint and its encoded proof header.
struct Keyed {
    key: SigningKey,
    thumbprint: Arc<str>,
    header_b64: String,
}

impl Keyed {
    fn new(key: SigningKey) -> Self {
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"{}","jwk":{}}}"#,
            key.algorithm(),
            key.public_members()
        );
        Self {
            header_b64: jose::b64(header.as_bytes()),
            thumbprint: Arc::from(key.thumbprint()),
            key,
        }
    }
}

/// The DPoP state of one `ClientCredentials`.
pub(crate) struct Dpop {
    key: ArcSwap<Keyed>,
    /// Nonces by origin, most recently given last.
    nonces: Mutex<Vec<(Origin, Arc<str>)>>,
    /// Whether a token that is not DPoP-bound is an error (else it is used as a Bearer token).
    pub(crate) required: bool,
}

impl std::fmt::Debug for Dpop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dpop")
            .field("key", &self.key.load().key)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Dpop {
    pub(crate) fn new(key: SigningKey, required: bool) -> Self {
        Self {
            key: ArcSwap::from_pointee(Keyed::new(key)),
            nonces: Mutex::new(Vec::new()),
            required,
        }
    }

    /// The thumbprint of the current key (a DPoP-bound token's `cnf.jkt`).
    pub(crate) fn thumbprint(&self) -> Arc<str> {
        Arc::clone(&self.key.load().thumbprint)
    }

    /// Whether `entry`'s token is bound to a key other than the current one (it was fetched
    /// before the key was replaced): it cannot be proved with the current key.
    pub(crate) fn is_bound_elsewhere(&self, entry: &crate::cache::Entry) -> bool {
        entry
            .dpop_jkt
            .as_deref()
            .is_some_and(|jkt| jkt != &*self.thumbprint())
    }

    /// The current key.
    pub(crate) fn key(&self) -> SigningKey {
        self.key.load().key.clone()
    }

    /// Replaces the key; returns the new one's thumbprint.
    pub(crate) fn set_key(&self, key: SigningKey) -> Arc<str> {
        let thumbprint = Arc::from(key.thumbprint());
        self.key.store(Arc::new(Keyed::new(key)));
        thumbprint
    }

    /// A proof for `method` on `htu`, with `ath` (the token's hash, see [`ath`]) when it is a
    /// resource request, with the nonce the server at `origin` gave last.
    pub(crate) fn proof(
        &self,
        method: &Method,
        htu: &str,
        ath: Option<&str>,
        origin: Option<&Origin>,
    ) -> Result<HeaderValue, Error> {
        let nonce = origin.and_then(|o| self.nonce(o));
        let claims = claims(method, htu, ath, nonce.as_deref())?;
        let keyed = self.key.load();
        let proof = jose::compact(&keyed.header_b64, &claims, &Signer::Key(&keyed.key))?;
        let mut value = HeaderValue::try_from(proof).map_err(|_| Error::Signing)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The nonce the server at `origin` gave last, if any.
    pub(crate) fn nonce(&self, origin: &Origin) -> Option<Arc<str>> {
        let nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        nonces
            .iter()
            .rev()
            .find(|(o, _)| o == origin)
            .map(|(_, n)| Arc::clone(n))
    }

    /// Remembers the `DPoP-Nonce` an answer from `origin` carries, if it carries a valid one.
    /// Returns whether it did.
    pub(crate) fn remember_nonce(&self, origin: &Origin, headers: &HeaderMap) -> bool {
        let Some(nonce) = headers.get(DPOP_NONCE).and_then(parse_nonce) else {
            return false;
        };
        let mut nonces = self.nonces.lock().unwrap_or_else(PoisonError::into_inner);
        nonces.retain(|(o, _)| o != origin);
        if nonces.len() >= MAX_NONCES {
            nonces.remove(0);
        }
        nonces.push((origin.clone(), Arc::from(nonce)));
        true
    }
}

/// A proof's claims as compact JSON: `{"jti":..,"htm":..,"htu":..,"iat":..,"ath":..,"nonce":..}`.
///
/// Written by hand, the hot part of a proof after the signature: every member but `htu` is
/// known to need no escaping (`jti` and `ath` are base64url, `htm` is an HTTP token, a nonce
/// was checked to be `NQCHAR`s, `iat` a number); `htu` is escaped as JSON when it must be.
fn claims(
    method: &Method,
    htu: &str,
    ath: Option<&str>,
    nonce: Option<&str>,
) -> Result<String, Error> {
    use std::fmt::Write as _;
    let mut claims =
        String::with_capacity(96 + htu.len() + ath.map_or(0, str::len) + nonce.map_or(0, str::len));
    claims.push_str(r#"{"jti":""#);
    jose::push_jti(&mut claims)?;
    claims.push_str(r#"","htm":""#);
    claims.push_str(method.as_str());
    claims.push_str(r#"","htu":"#);
    if htu.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        claims.push('"');
        claims.push_str(htu);
        claims.push('"');
    } else {
        claims.push_str(&serde_json::to_string(htu).map_err(|_| Error::Signing)?);
    }
    // Writing to a String cannot fail.
    let _ = write!(claims, r#","iat":{}"#, jose::now_secs());
    if let Some(ath) = ath {
        claims.push_str(r#","ath":""#);
        claims.push_str(ath);
        claims.push('"');
    }
    if let Some(nonce) = nonce {
        claims.push_str(r#","nonce":""#);
        claims.push_str(nonce);
        claims.push('"');
    }
    claims.push('}');
    Ok(claims)
}

/// A `DPoP-Nonce` value (RFC 9449 §8.1: `1*NQCHAR`, printable ASCII but `"` and `\`), or
/// `None` for anything else, which is ignored.
pub(crate) fn parse_nonce(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let valid = !text.is_empty()
        && text.len() <= MAX_NONCE_LEN
        && text
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
    valid.then_some(text)
}

/// base64url(SHA-256(token)): a proof's `ath`.
pub(crate) fn ath(token: &str) -> String {
    jose::b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// A request's `htu`: scheme, host and port (the scheme's default left out), and path; no
/// query, no fragment (RFC 9449 §4.2). `None` without a scheme and a host.
///
/// A `Url` keeps its serialization normalized (lowercase scheme and host, the default port left
/// out), so without credentials in it the `htu` is a prefix of it.
pub(crate) fn htu_of_url(url: &Url) -> Option<Cow<'_, str>> {
    let host = url.host_str()?;
    if url.username().is_empty() && url.password().is_none() {
        return Some(Cow::Borrowed(&url[..url::Position::AfterPath]));
    }
    let mut htu = format!("{}://{}", url.scheme(), host);
    if let Some(port) = url.port() {
        htu.push_str(&format!(":{port}"));
    }
    htu.push_str(url.path());
    Some(Cow::Owned(htu))
}

/// [`htu_of_url`] for an `http::Uri`.
pub(crate) fn htu_of_uri(uri: &Uri) -> Option<Cow<'_, str>> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let mut htu = format!("{scheme}://{host}");
    let default = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    if let Some(port) = uri.port_u16().filter(|p| Some(*p) != default) {
        htu.push_str(&format!(":{port}"));
    }
    let path = uri.path();
    htu.push_str(if path.is_empty() { "/" } else { path });
    Some(Cow::Owned(htu))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JwsAlgorithm;

    #[test]
    fn claims_are_json_whatever_the_htu() {
        // Mixed text, and a string made only of each kind of byte that needs escaping (the
        // check that picks the unescaped path must turn each of them away).
        let htus = [
            "https://api.example.com/v1",
            "https://x/\"q\"\\\n\u{1}é",
            "\"",
            "\\",
            "\u{1}\n",
            "",
        ];
        for htu in htus {
            for (ath, nonce) in [(None, None), (Some("YXRo"), Some("n-1!~"))] {
                let json = claims(&Method::PATCH, htu, ath, nonce).unwrap();
                let value: serde_json::Value = serde_json::from_str(&json).unwrap();
                assert_eq!(value["htu"], htu);
                assert_eq!(value["htm"], "PATCH");
                assert_eq!(value["jti"].as_str().unwrap().len(), 22);
                assert!(value["iat"].as_u64().unwrap() > 1_700_000_000);
                assert_eq!(value.get("ath").and_then(|v| v.as_str()), ath);
                assert_eq!(value.get("nonce").and_then(|v| v.as_str()), nonce);
                let members = value.as_object().unwrap().len();
                assert_eq!(members, 4 + usize::from(ath.is_some()) * 2);
            }
        }
    }

    #[test]
    fn htu_drops_query_fragment_and_default_ports() {
        // (URL, htu)
        let cases = [
            (
                "https://api.example.com/v1/items?page=2#top",
                "https://api.example.com/v1/items",
            ),
            (
                "https://API.Example.com:443/v1",
                "https://api.example.com/v1",
            ),
            ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
            ("https://api.example.com", "https://api.example.com/"),
            ("https://[::1]:9443/a/b/", "https://[::1]:9443/a/b/"),
            (
                "https://user:pw@api.example.com:8443/v1?x=1",
                "https://api.example.com:8443/v1",
            ),
            (
                "https://user@api.example.com/v1",
                "https://api.example.com/v1",
            ),
            (
                "https://:pw@api.example.com/v1",
                "https://api.example.com/v1",
            ),
            ("http://api.example.com:80/v1", "http://api.example.com/v1"),
            (
                "HTTP://api.example.com:443/v1",
                "http://api.example.com:443/v1",
            ),
        ];
        for (input, htu) in cases {
            assert_eq!(
                htu_of_url(&Url::parse(input).unwrap()).as_deref(),
                Some(htu),
                "{input}"
            );
            assert_eq!(
                htu_of_uri(&input.parse().unwrap()).as_deref(),
                Some(htu),
                "{input}"
            );
        }
        assert_eq!(htu_of_uri(&"/relative/path".parse().unwrap()), None);
    }

    #[test]
    fn nonces_are_checked_remembered_per_origin_and_bounded() {
        let ok = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_nonce(&ok("eyJ7S_zG.9a-z")), Some("eyJ7S_zG.9a-z"));
        assert_eq!(parse_nonce(&ok(" n ")), Some("n"));
        for bad in ["", "a b", "quo\"te", "back\\slash"] {
            assert_eq!(parse_nonce(&ok(bad)), None, "{bad:?}");
        }
        assert_eq!(
            parse_nonce(&HeaderValue::from_str(&"n".repeat(MAX_NONCE_LEN + 1)).unwrap()),
            None
        );
        assert_eq!(
            parse_nonce(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()),
            None
        );

        let dpop = Dpop::new(SigningKey::generate(JwsAlgorithm::Es256).unwrap(), true);
        let a = Origin::parse("https://a.example").unwrap();
        let b = Origin::parse("https://b.example").unwrap();
        let with = |n: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(DPOP_NONCE, ok(n));
            h
        };
        assert!(dpop.remember_nonce(&a, &with("n1")));
        assert!(!dpop.remember_nonce(&b, &HeaderMap::new()));
        assert!(!dpop.remember_nonce(&b, &with("bad nonce")));
        assert_eq!(dpop.nonce(&a).as_deref(), Some("n1"));
        assert_eq!(dpop.nonce(&b), None);
        assert!(dpop.remember_nonce(&a, &with("n2")));
        assert_eq!(dpop.nonce(&a).as_deref(), Some("n2"));
        for i in 0..MAX_NONCES {
            let origin = Origin::parse(&format!("https://o{i}.example")).unwrap();
            dpop.remember_nonce(&origin, &with("x"));
        }
        assert_eq!(
            dpop.nonce(&a),
            None,
            "the oldest origin is forgotten past the bound"
        );
        assert_eq!(dpop.nonces.lock().unwrap().len(), MAX_NONCES);
    }

    /// 10,000 proofs, 10,000 different `jti`s; each proof's claims as RFC 9449 §4.2 lists them.
    #[test]
    fn jtis_are_unique_across_ten_thousand_proofs() {
        let dpop = Dpop::new(SigningKey::generate(JwsAlgorithm::EdDsa).unwrap(), true);
        let origin = Origin::parse("https://api.example").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(DPOP_NONCE, HeaderValue::from_static("n-1"));
        dpop.remember_nonce(&origin, &headers);
        let mut jtis = std::collections::HashSet::new();
        let token_hash = ath("tok");
        for _ in 0..10_000 {
            let proof = dpop
                .proof(
                    &Method::PUT,
                    "https://api.example/x",
                    Some(&token_hash),
                    Some(&origin),
                )
                .unwrap();
            assert!(proof.is_sensitive());
            let claims = proof.to_str().unwrap().split('.').nth(1).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&jose::b64_decode(claims).unwrap()).unwrap();
            assert_eq!(claims["htm"], "PUT");
            assert_eq!(claims["nonce"], "n-1");
            assert_eq!(claims["ath"], ath("tok"));
            assert!(jtis.insert(claims["jti"].as_str().unwrap().to_owned()));
        }
        assert_eq!(jtis.len(), 10_000);
    }

    #[test]
    fn ath_is_the_base64url_sha256_of_the_token() {
        // RFC 9449 §7.1's example token and its `ath`.
        assert_eq!(
            ath("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
