//! [`SigningKey`]: a private key for client assertions and DPoP proofs, loaded from PEM or a
//! JWK, or generated.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use rustls_pki_types::pem::{self, PemObject as _, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use webpki::EndEntityCert;
use zeroize::Zeroizing;

use super::{b64, b64_decode};
use crate::ConfigError;

/// A JWS signing algorithm (RFC 7518 §3, RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwsAlgorithm {
    /// `ES256`: ECDSA on P-256 with SHA-256. The default for DPoP.
    Es256,
    /// `EdDSA` with Ed25519.
    EdDsa,
    /// `PS256`: RSASSA-PSS with SHA-256 (2048-bit keys at least).
    Ps256,
    /// `RS256`: RSASSA-PKCS1-v1_5 with SHA-256. Not for DPoP proofs.
    Rs256,
}

impl JwsAlgorithm {
    /// Every algorithm, in the order preferred when a server offers several.
    pub const ALL: [JwsAlgorithm; 4] = [Self::Es256, Self::EdDsa, Self::Ps256, Self::Rs256];

    /// The registered name (`ES256`, `EdDSA`, `PS256`, `RS256`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Ps256 => "PS256",
            Self::Rs256 => "RS256",
        }
    }

    /// Reads a registered name; `None` for an algorithm this crate does not sign with.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    fn family(self) -> &'static str {
        match self {
            Self::Es256 => "a P-256 EC key",
            Self::EdDsa => "an Ed25519 key",
            Self::Ps256 | Self::Rs256 => "an RSA key",
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// What every clone of a key shares.
struct Material {
    pair: Pair,
    /// The public JWK's required members in RFC 7638 order, as JSON (`{"crv":..,"kty":..,..}`):
    /// the thumbprint's input, and the `jwk` of a DPoP proof.
    public_members: String,
    /// RFC 7638 thumbprint: base64url(SHA-256(public_members)).
    thumbprint: String,
}

/// A private key that signs client assertions (`private_key_jwt`) and DPoP proofs.
///
/// Loaded from PEM ([`from_pem`](Self::from_pem): PKCS #8, SEC 1 and PKCS #1), from a JWK
/// ([`from_jwk`](Self::from_jwk)), or made at start-up ([`generate`](Self::generate)). Signing
/// uses aws-lc-rs (constant-time RSA, unlike the `rsa` crate's RUSTSEC-2023-0071). Cheap to
/// clone; `Debug` shows the algorithm, key id and thumbprint, never the private key, which
/// aws-lc-rs wipes when the last clone is dropped (the DER decoded from a PEM and a JWK's
/// private members are wiped once read).
///
/// ```
/// use client_credentials::{JwsAlgorithm, SigningKey};
///
/// let key = SigningKey::generate(JwsAlgorithm::Es256)?.with_kid("2026-12");
/// assert_eq!(key.algorithm(), JwsAlgorithm::Es256);
/// assert!(key.public_jwk().contains(r#""kid":"2026-12""#));
/// assert!(!format!("{key:?}").contains("\"d\""));
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    material: Arc<Material>,
    alg: JwsAlgorithm,
    kid: Option<Arc<str>>,
    /// The SHA-256 thumbprint of the key's X.509 certificate, base64url (`x5t#S256`).
    x5t_s256: Option<Arc<str>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("x5t#S256", &self.x5t_s256)
            .field("thumbprint", &self.material.thumbprint)
            .finish_non_exhaustive()
    }
}

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidKey(reason.into())
}

/// The private JWK members this crate reads (RFC 7517, RFC 7518 §6, RFC 8037).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
}

impl Drop for Jwk {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for secret in [
            &mut self.d,
            &mut self.p,
            &mut self.q,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
        ]
        .into_iter()
        .flatten()
        {
            secret.zeroize();
        }
    }
}

impl SigningKey {
    /// A new key pair, made with the system's random source: P-256 for `ES256`, Ed25519 for
    /// `EdDSA`, RSA 2048 for `PS256` and `RS256`.
    pub fn generate(alg: JwsAlgorithm) -> Result<Self, ConfigError> {
        let failed = |_| invalid(format!("could not generate {}", alg.family()));
        let pair = match alg {
            JwsAlgorithm::Es256 => Pair::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(failed)?,
            ),
            JwsAlgorithm::EdDsa => Pair::Ed(Ed25519KeyPair::generate().map_err(failed)?),
            JwsAlgorithm::Ps256 | JwsAlgorithm::Rs256 => {
                Pair::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(failed)?)
            }
        };
        Self::new(pair, alg, None)
    }

    /// A key from PEM: PKCS #8 (`BEGIN PRIVATE KEY`, every algorithm), SEC 1
    /// (`BEGIN EC PRIVATE KEY`) or PKCS #1 (`BEGIN RSA PRIVATE KEY`). A key that is not the
    /// kind `alg` signs with is [`ConfigError::InvalidKey`]; so is an encrypted key.
    pub fn from_pem(alg: JwsAlgorithm, pem: &str) -> Result<Self, ConfigError> {
        // rustls-pki-types reads the armour (constant-time base64 for private keys, the
        // buffers zeroized); aws-lc-rs reads the DER. The first private key block is taken.
        let key = Zeroizing::new(PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(
            |e| match e {
                pem::Error::NoItemsFound
                    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") =>
                {
                    invalid("encrypted private keys are not read: decrypt it first")
                }
                pem::Error::NoItemsFound => invalid(
                    "no private key PEM block (`PRIVATE KEY`, `EC PRIVATE KEY` or \
                     `RSA PRIVATE KEY`) found",
                ),
                _ => invalid("not a PEM block that can be read"),
            },
        )?);
        let label = match &*key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        let wrong = || {
            invalid(format!(
                "the `{label}` PEM block is not {} ({alg} needs one)",
                alg.family()
            ))
        };
        let pair = match (alg, &*key) {
            (JwsAlgorithm::Es256, PrivateKeyDer::Pkcs8(_) | PrivateKeyDer::Sec1(_)) => Pair::Ec(
                EcdsaKeyPair::from_private_key_der(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    key.secret_der(),
                )
                .map_err(|_| wrong())?,
            ),
            (JwsAlgorithm::EdDsa, PrivateKeyDer::Pkcs8(der)) => Pair::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
                    .map_err(|_| wrong())?,
            ),
            (JwsAlgorithm::Ps256 | JwsAlgorithm::Rs256, PrivateKeyDer::Pkcs8(der)) => {
                Pair::Rsa(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| wrong())?)
            }
            (JwsAlgorithm::Ps256 | JwsAlgorithm::Rs256, PrivateKeyDer::Pkcs1(der)) => {
                Pair::Rsa(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|_| wrong())?)
            }
            _ => return Err(wrong()),
        };
        Self::new(pair, alg, None)
    }

    /// A key from a private JWK (RFC 7517): `EC` with `crv` `P-256`, `OKP` with `crv`
    /// `Ed25519`, or `RSA` with every CRT member. The algorithm is the JWK's `alg` if it has
    /// one, else `ES256`, `EdDSA` or `RS256` by key type ([`with_algorithm`](Self::with_algorithm)
    /// picks `PS256` for an RSA key); its `kid` is kept.
    pub fn from_jwk(jwk: &str) -> Result<Self, ConfigError> {
        let jwk: Jwk = serde_json::from_str(jwk).map_err(|_| invalid("not a JSON Web Key"))?;
        let member =
            |name: &str, value: &Option<String>| -> Result<Zeroizing<Vec<u8>>, ConfigError> {
                let value = value.as_deref().ok_or_else(|| {
                    invalid(format!("the JWK has no `{name}` (a private JWK is needed)"))
                })?;
                b64_decode(value)
                    .map(Zeroizing::new)
                    .ok_or_else(|| invalid(format!("the JWK's `{name}` is not base64url")))
            };
        let (pair, default_alg) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let (x, y, d) = (
                    member("x", &jwk.x)?,
                    member("y", &jwk.y)?,
                    member("d", &jwk.d)?,
                );
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &point,
                )
                .map_err(|_| invalid("the EC JWK's members do not make a P-256 key pair"))?;
                (Pair::Ec(pair), JwsAlgorithm::Es256)
            }
            ("OKP", Some("Ed25519")) => {
                let (x, d) = (member("x", &jwk.x)?, member("d", &jwk.d)?);
                let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(|_| {
                    invalid("the OKP JWK's members do not make an Ed25519 key pair")
                })?;
                (Pair::Ed(pair), JwsAlgorithm::EdDsa)
            }
            ("RSA", _) => {
                let parts = [
                    member("n", &jwk.n)?,
                    member("e", &jwk.e)?,
                    member("d", &jwk.d)?,
                    member("p", &jwk.p)?,
                    member("q", &jwk.q)?,
                    member("dp", &jwk.dp)?,
                    member("dq", &jwk.dq)?,
                    member("qi", &jwk.qi)?,
                ];
                let [n, e, d, p, q, dp, dq, qi] = parts.each_ref().map(|p| &p[..]);
                let pair = RsaKeyPair::from_components(&KeyPairComponents {
                    // aws-lc-rs takes the public numbers without leading zero bytes.
                    public_key: PublicKeyComponents {
                        n: without_leading_zeros(n),
                        e: without_leading_zeros(e),
                    },
                    d,
                    p,
                    q,
                    dP: dp,
                    dQ: dq,
                    qInv: qi,
                })
                .map_err(|_| invalid("the RSA JWK's members do not make an RSA key pair"))?;
                (Pair::Rsa(pair), JwsAlgorithm::Rs256)
            }
            (kty, crv) => {
                return Err(invalid(format!(
                "JWK key type `{}`{} is not one this crate signs with (EC P-256, OKP Ed25519, RSA)",
                crate::text::shown(kty),
                crv.map(|c| format!(" with curve `{}`", crate::text::shown(c)))
                    .unwrap_or_default()
            )))
            }
        };
        let alg = match jwk.alg.as_deref() {
            None => default_alg,
            Some(name) => JwsAlgorithm::parse(name).ok_or_else(|| {
                invalid(format!(
                    "the JWK's `alg` `{}` is not one this crate signs with",
                    crate::text::shown(name)
                ))
            })?,
        };
        let key = Self::new(pair, default_alg, jwk.kid.as_deref().map(Arc::from))?;
        key.with_algorithm(alg)
    }

    fn new(pair: Pair, alg: JwsAlgorithm, kid: Option<Arc<str>>) -> Result<Self, ConfigError> {
        let public_members = public_members(&pair)?;
        let thumbprint = thumbprint_of(&public_members);
        let key = Self {
            material: Arc::new(Material {
                pair,
                public_members,
                thumbprint,
            }),
            alg,
            kid,
            x5t_s256: None,
        };
        key.check_alg(alg)?;
        Ok(key)
    }

    fn check_alg(&self, alg: JwsAlgorithm) -> Result<(), ConfigError> {
        let fits = matches!(
            (&self.material.pair, alg),
            (Pair::Ec(_), JwsAlgorithm::Es256)
                | (Pair::Ed(_), JwsAlgorithm::EdDsa)
                | (Pair::Rsa(_), JwsAlgorithm::Ps256 | JwsAlgorithm::Rs256)
        );
        if !fits {
            return Err(invalid(format!(
                "{alg} needs {}, and this key is not one",
                alg.family()
            )));
        }
        if let Pair::Rsa(pair) = &self.material.pair {
            if pair.public_modulus_len() < 256 {
                return Err(invalid("RSA keys must be at least 2048 bits"));
            }
        }
        Ok(())
    }

    /// The same key signing with another algorithm of its kind (`PS256` or `RS256` for an RSA
    /// key); [`ConfigError::InvalidKey`] for one it cannot sign with.
    pub fn with_algorithm(mut self, alg: JwsAlgorithm) -> Result<Self, ConfigError> {
        self.check_alg(alg)?;
        self.alg = alg;
        Ok(self)
    }

    /// The same key with a key id, sent as `kid` in client assertions so the server can pick
    /// the right key from the client's JWK set.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(Arc::from(kid.into()));
        self
    }

    /// The same key with its X.509 certificate (PEM, `BEGIN CERTIFICATE`, the first one if
    /// there are several): client assertions then carry the certificate's SHA-256 thumbprint
    /// as `x5t#S256` (RFC 7515 §4.1.8), which Microsoft Entra ID requires of certificate
    /// credentials. A certificate for another key is [`ConfigError::InvalidKey`].
    ///
    /// ```no_run
    /// use client_credentials::{JwsAlgorithm, SigningKey};
    ///
    /// let key = SigningKey::from_pem(JwsAlgorithm::Ps256, &std::fs::read_to_string("client.key")?)?
    ///     .with_certificate(&std::fs::read_to_string("client.crt")?)?;
    /// # let _ = key;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_certificate(mut self, pem: &str) -> Result<Self, ConfigError> {
        // rustls-pki-types reads the armour, rustls-webpki the certificate.
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => {
                match <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes()) {
                    Ok((kind, der)) => {
                        drop(Zeroizing::new(der)); // perhaps a private key
                        invalid(format!(
                            "the `{}` PEM block is not a certificate",
                            section_label(kind)
                        ))
                    }
                    Err(_) => invalid("not a PEM block: no `CERTIFICATE` found"),
                }
            }
            _ => invalid("not a PEM block that can be read"),
        })?;
        let certificate = EndEntityCert::try_from(&der)
            .map_err(|_| invalid("the certificate could not be read"))?;
        // Both sides as X.509 SubjectPublicKeyInfo: the key's algorithm and its bits.
        let ours = match &self.material.pair {
            Pair::Ec(pair) => pair.public_key().as_der(),
            Pair::Ed(pair) => pair.public_key().as_der(),
            Pair::Rsa(pair) => pair.public_key().as_der(),
        }
        .map_err(|_| invalid("the key's public half could not be encoded"))?;
        if certificate.subject_public_key_info().as_ref() != ours.as_ref() {
            return Err(invalid("the certificate is for another key"));
        }
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        self.x5t_s256 = Some(Arc::from(super::b64(hash.as_ref())));
        Ok(self)
    }

    /// The `x5t#S256` set by [`with_certificate`](Self::with_certificate), if any.
    pub(crate) fn x5t_s256(&self) -> Option<&str> {
        self.x5t_s256.as_deref()
    }

    /// The algorithm it signs with.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The public key as a JWK (JSON), with `alg`, `use` (`sig`) and `kid` when set: what to
    /// register with the authorization server (in the client's `jwks`).
    pub fn public_jwk(&self) -> String {
        let mut jwk = self
            .material
            .public_members
            .trim_end_matches('}')
            .to_owned();
        jwk.push_str(&format!(r#","alg":"{}","use":"sig""#, self.alg));
        if let Some(kid) = &self.kid {
            jwk.push_str(",\"kid\":");
            jwk.push_str(&serde_json::Value::from(&**kid).to_string());
        }
        jwk.push('}');
        jwk
    }

    /// The RFC 7638 thumbprint of the public key (base64url of its SHA-256): DPoP's `jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.material.thumbprint
    }

    /// The public JWK's required members (RFC 7638 order), as DPoP puts them in a proof.
    pub(crate) fn public_members(&self) -> &str {
        &self.material.public_members
    }

    /// The JWS signature of `input` (RFC 7518: ECDSA as `r || s`).
    pub(crate) fn sign(&self, input: &[u8]) -> Result<Vec<u8>, crate::Error> {
        let failed = |_| crate::Error::Signing;
        match (&self.material.pair, self.alg) {
            (Pair::Ec(pair), _) => Ok(pair
                .sign(&SystemRandom::new(), input)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            (Pair::Ed(pair), _) => Ok(pair.sign(input).as_ref().to_vec()),
            (Pair::Rsa(pair), alg) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    JwsAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; pair.public_modulus_len()];
                pair.sign(padding, &SystemRandom::new(), input, &mut out)
                    .map_err(failed)?;
                Ok(out)
            }
        }
    }
}

/// The public JWK's required members in lexicographic order (RFC 7638 §3.2), as compact JSON.
fn public_members(pair: &Pair) -> Result<String, ConfigError> {
    Ok(match pair {
        Pair::Ec(pair) => {
            // The uncompressed point: 0x04 || x || y, 32 bytes each.
            let point = pair.public_key().as_ref();
            if point.len() != 65 {
                return Err(invalid("unexpected P-256 public key encoding"));
            }
            format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(&point[1..33]),
                b64(&point[33..])
            )
        }
        Pair::Ed(pair) => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            b64(pair.public_key().as_ref())
        ),
        Pair::Rsa(pair) => {
            let public = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            rsa_members(
                without_leading_zeros(&public.n),
                without_leading_zeros(&public.e),
            )
        }
    })
}

/// A big-endian number without its leading zero bytes (one zero stays for zero itself): JWK
/// members (RFC 7518 §6.3.1) and aws-lc-rs's public components are written so.
fn without_leading_zeros(v: &[u8]) -> &[u8] {
    let skip = v.iter().take_while(|b| **b == 0).count();
    &v[skip.min(v.len().saturating_sub(1))..]
}

/// How a PEM block of this kind is labelled (`-----BEGIN <label>-----`).
fn section_label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        SectionKind::Certificate => "CERTIFICATE",
        _ => "unknown",
    }
}

/// An RSA public key's required JWK members, in RFC 7638 order.
fn rsa_members(n: &[u8], e: &[u8]) -> String {
    format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
}

/// RFC 7638 §3: base64url(SHA-256(the required members, in order, as compact JSON)).
fn thumbprint_of(members: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, members.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{UnparsedPublicKey, VerificationAlgorithm};

    use super::*;
    use crate::jose::b64_decode;

    const EC_SEC1: &str = include_str!("../../tests/keys/ec_sec1.pem");
    const EC_PKCS8: &str = include_str!("../../tests/keys/ec_pkcs8.pem");
    const EC_JWK: &str = include_str!("../../tests/keys/ec.jwk.json");
    const ED_PKCS8: &str = include_str!("../../tests/keys/ed25519_pkcs8.pem");
    const ED_JWK: &str = include_str!("../../tests/keys/ed25519.jwk.json");
    const RSA_PKCS1: &str = include_str!("../../tests/keys/rsa_pkcs1.pem");
    const RSA_PKCS8: &str = include_str!("../../tests/keys/rsa_pkcs8.pem");
    const RSA_JWK: &str = include_str!("../../tests/keys/rsa.jwk.json");
    const RSA_1024: &str = include_str!("../../tests/keys/rsa1024_pkcs1.pem");

    /// RFC 7638 §3.1's example key and its thumbprint.
    #[test]
    fn thumbprint_matches_rfc_7638() {
        let n = b64_decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw").unwrap();
        let members = rsa_members(&n, &b64_decode("AQAB").unwrap());
        assert_eq!(
            thumbprint_of(&members),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn every_format_loads_and_formats_of_one_key_agree() {
        let ec = [
            SigningKey::from_pem(JwsAlgorithm::Es256, EC_SEC1).unwrap(),
            SigningKey::from_pem(JwsAlgorithm::Es256, EC_PKCS8).unwrap(),
            SigningKey::from_jwk(EC_JWK).unwrap(),
        ];
        let ed = [
            SigningKey::from_pem(JwsAlgorithm::EdDsa, ED_PKCS8).unwrap(),
            SigningKey::from_jwk(ED_JWK).unwrap(),
        ];
        let rsa = [
            SigningKey::from_pem(JwsAlgorithm::Ps256, RSA_PKCS1).unwrap(),
            SigningKey::from_pem(JwsAlgorithm::Rs256, RSA_PKCS8).unwrap(),
            SigningKey::from_jwk(RSA_JWK).unwrap(),
        ];
        for keys in [&ec[..], &ed[..], &rsa[..]] {
            for key in keys {
                assert_eq!(key.thumbprint(), keys[0].thumbprint(), "{key:?}");
                assert_eq!(key.public_members(), keys[0].public_members());
            }
        }
        // The JWKs carry their `alg` and `kid`.
        assert_eq!(ec[2].algorithm(), JwsAlgorithm::Es256);
        assert_eq!(ed[1].algorithm(), JwsAlgorithm::EdDsa);
        assert_eq!(rsa[2].algorithm(), JwsAlgorithm::Ps256);
        assert_eq!(ec[2].kid(), Some("ec_pkcs8"));
        // The thumbprint is that of the members, and the members are those of the JWK.
        for key in [&ec[0], &ed[0], &rsa[0]] {
            assert_eq!(key.thumbprint(), thumbprint_of(key.public_members()));
        }
        // Leading zero bytes on an RSA JWK's public numbers (not minimal, still the same key).
        let mut padded: serde_json::Value = serde_json::from_str(RSA_JWK).unwrap();
        for member in ["n", "e"] {
            let mut bytes = vec![0, 0];
            bytes.extend(b64_decode(padded[member].as_str().unwrap()).unwrap());
            padded[member] = b64(&bytes).into();
        }
        let padded = SigningKey::from_jwk(&padded.to_string()).unwrap();
        assert_eq!(padded.thumbprint(), rsa[0].thumbprint());
        assert_eq!(without_leading_zeros(&[0, 0, 1, 0]), [1, 0]);
        assert_eq!(without_leading_zeros(&[0, 0]), [0]);
        assert_eq!(without_leading_zeros(&[]), [0u8; 0]);
        let jwk: serde_json::Value = serde_json::from_str(EC_JWK).unwrap();
        assert!(ec[0].public_members().contains(jwk["x"].as_str().unwrap()));
        assert!(ec[0].public_members().contains(jwk["y"].as_str().unwrap()));
    }

    #[test]
    fn keys_that_do_not_fit_are_refused_without_showing_them() {
        let pem = |label: &str, body: &str| {
            format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
        };
        let cases: Vec<(&str, Result<SigningKey, ConfigError>, &str)> = vec![
            (
                "EC PEM as EdDSA",
                SigningKey::from_pem(JwsAlgorithm::EdDsa, EC_PKCS8),
                "the `PRIVATE KEY` PEM block is not an Ed25519 key (EdDSA needs one)",
            ),
            (
                "EC PEM as RS256",
                SigningKey::from_pem(JwsAlgorithm::Rs256, EC_SEC1),
                "the `EC PRIVATE KEY` PEM block is not an RSA key",
            ),
            (
                "RSA PEM as ES256",
                SigningKey::from_pem(JwsAlgorithm::Es256, RSA_PKCS8),
                "the `PRIVATE KEY` PEM block is not a P-256 EC key",
            ),
            (
                "RSA PKCS #1 as ES256",
                SigningKey::from_pem(JwsAlgorithm::Es256, RSA_PKCS1),
                "the `RSA PRIVATE KEY` PEM block is not a P-256 EC key",
            ),
            (
                "Ed25519 PEM as ES256",
                SigningKey::from_pem(JwsAlgorithm::Es256, ED_PKCS8),
                "not a P-256 EC key",
            ),
            (
                "RSA 1024",
                SigningKey::from_pem(JwsAlgorithm::Rs256, RSA_1024),
                "RSA",
            ),
            (
                "not PEM",
                SigningKey::from_pem(JwsAlgorithm::Es256, "hello"),
                "no private key PEM block",
            ),
            (
                "a certificate",
                SigningKey::from_pem(JwsAlgorithm::Es256, &pem("CERTIFICATE", "MAMCAQA=")),
                "no private key PEM block",
            ),
            (
                "encrypted",
                SigningKey::from_pem(JwsAlgorithm::Es256, &pem("ENCRYPTED PRIVATE KEY", "AAAA")),
                "encrypted private keys are not read",
            ),
            (
                "bad base64",
                SigningKey::from_pem(JwsAlgorithm::Es256, &pem("PRIVATE KEY", "!!!!")),
                "not a PEM block that can be read",
            ),
            (
                "no end line",
                SigningKey::from_pem(JwsAlgorithm::Es256, "-----BEGIN PRIVATE KEY-----\nAAAA\n"),
                "not a PEM block that can be read",
            ),
            (
                "garbage DER",
                SigningKey::from_pem(JwsAlgorithm::Es256, &pem("PRIVATE KEY", "AAAA")),
                "the `PRIVATE KEY` PEM block is not a P-256 EC key",
            ),
            (
                "garbage PKCS #1",
                SigningKey::from_pem(JwsAlgorithm::Rs256, &pem("RSA PRIVATE KEY", "AAAA")),
                "the `RSA PRIVATE KEY` PEM block is not an RSA key",
            ),
            (
                "JWK not JSON",
                SigningKey::from_jwk("{"),
                "not a JSON Web Key",
            ),
            (
                "public JWK",
                SigningKey::from_jwk(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#),
                "the JWK has no `d`",
            ),
            (
                "JWK member not base64url",
                SigningKey::from_jwk(r#"{"kty":"OKP","crv":"Ed25519","x":"A+A","d":"AA"}"#),
                "the JWK's `x` is not base64url",
            ),
            (
                "JWK with another curve",
                SigningKey::from_jwk(r#"{"kty":"EC","crv":"P-384","d":"AA"}"#),
                "`EC` with curve `P-384`",
            ),
            (
                "JWK of an unknown type",
                SigningKey::from_jwk(r#"{"kty":"oct","k":"AA"}"#),
                "`oct` is not one",
            ),
            (
                "JWK with an unknown alg",
                SigningKey::from_jwk(&EC_JWK.replace("ES256", "ES512")),
                "`alg` `ES512`",
            ),
            (
                "JWK with an alg that does not fit",
                SigningKey::from_jwk(&EC_JWK.replace("ES256", "EdDSA")),
                "EdDSA needs an Ed25519 key",
            ),
            (
                "JWK whose members do not match",
                SigningKey::from_jwk(&{
                    let mut jwk: serde_json::Value = serde_json::from_str(EC_JWK).unwrap();
                    let other: serde_json::Value = serde_json::from_str(
                        &SigningKey::generate(JwsAlgorithm::Es256)
                            .unwrap()
                            .public_jwk(),
                    )
                    .unwrap();
                    jwk["x"] = other["x"].clone();
                    jwk.to_string()
                }),
                "do not make a P-256 key pair",
            ),
            (
                "RSA JWK whose members do not match",
                SigningKey::from_jwk(&{
                    let mut jwk: serde_json::Value = serde_json::from_str(RSA_JWK).unwrap();
                    jwk["qi"] = jwk["dq"].clone();
                    jwk.to_string()
                }),
                "do not make an RSA key pair",
            ),
            (
                "OKP JWK whose members do not match",
                SigningKey::from_jwk(&{
                    let mut jwk: serde_json::Value = serde_json::from_str(ED_JWK).unwrap();
                    let other: serde_json::Value = serde_json::from_str(
                        &SigningKey::generate(JwsAlgorithm::EdDsa)
                            .unwrap()
                            .public_jwk(),
                    )
                    .unwrap();
                    jwk["x"] = other["x"].clone();
                    jwk.to_string()
                }),
                "do not make an Ed25519 key pair",
            ),
        ];
        let secret_d = serde_json::from_str::<serde_json::Value>(EC_JWK).unwrap()["d"]
            .as_str()
            .unwrap()
            .to_owned();
        for (what, result, expected) in cases {
            match result {
                Err(ConfigError::InvalidKey(reason)) => {
                    assert!(reason.contains(expected), "{what}: {reason}");
                    assert!(!reason.contains(&secret_d), "{what}: {reason}");
                    assert!(!reason.contains("MII"), "{what}: {reason}");
                }
                other => panic!("{what}: {other:?}"),
            }
        }
        let ec = SigningKey::from_pem(JwsAlgorithm::Es256, EC_PKCS8).unwrap();
        assert!(matches!(
            ec.with_algorithm(JwsAlgorithm::Ps256),
            Err(ConfigError::InvalidKey(_))
        ));
        let rsa = SigningKey::from_pem(JwsAlgorithm::Rs256, RSA_PKCS1).unwrap();
        assert_eq!(
            rsa.with_algorithm(JwsAlgorithm::Ps256).unwrap().algorithm(),
            JwsAlgorithm::Ps256
        );
    }

    /// Each algorithm's signature verifies with aws-lc-rs under the JWS algorithm it names
    /// (the independent check, with another JOSE library, is in the integration tests).
    #[test]
    fn signatures_verify_under_their_algorithm() {
        let verify: [(JwsAlgorithm, &'static dyn VerificationAlgorithm); 4] = [
            (JwsAlgorithm::Es256, &signature::ECDSA_P256_SHA256_FIXED),
            (JwsAlgorithm::EdDsa, &signature::ED25519),
            (JwsAlgorithm::Ps256, &signature::RSA_PSS_2048_8192_SHA256),
            (JwsAlgorithm::Rs256, &signature::RSA_PKCS1_2048_8192_SHA256),
        ];
        for (alg, verifier) in verify {
            let key = SigningKey::generate(alg).unwrap();
            let signature = key.sign(b"header.claims").unwrap();
            let public = match &key.material.pair {
                Pair::Ec(p) => p.public_key().as_ref().to_vec(),
                Pair::Ed(p) => p.public_key().as_ref().to_vec(),
                Pair::Rsa(p) => p.public_key().as_ref().to_vec(),
            };
            UnparsedPublicKey::new(verifier, &public)
                .verify(b"header.claims", &signature)
                .unwrap_or_else(|_| panic!("{alg}"));
            assert!(UnparsedPublicKey::new(verifier, &public)
                .verify(b"header.claimz", &signature)
                .is_err());
            assert!(format!("{key:?}").contains(key.thumbprint()));
        }
    }

    /// RSA keys of 2048 bits and more sign (3072 and 4096 are common for certificates); the
    /// 2048-bit floor itself is also aws-lc-rs's, so a 1024-bit key is refused when read.
    #[test]
    fn larger_rsa_keys_are_accepted() {
        for size in [
            aws_lc_rs::rsa::KeySize::Rsa3072,
            aws_lc_rs::rsa::KeySize::Rsa4096,
        ] {
            let pair = RsaKeyPair::generate(size).unwrap();
            let key = SigningKey::new(Pair::Rsa(pair), JwsAlgorithm::Ps256, None).unwrap();
            assert_eq!(key.algorithm(), JwsAlgorithm::Ps256);
            assert!(key.sign(b"x").is_ok());
        }
    }

    /// Each label is the one rustls-pki-types reads as that kind.
    #[test]
    fn section_labels_are_those_of_the_pem_reader() {
        use rustls_pki_types::pem::PemObject as _;
        for kind in [
            SectionKind::Certificate,
            SectionKind::PublicKey,
            SectionKind::RsaPrivateKey,
            SectionKind::PrivateKey,
            SectionKind::EcPrivateKey,
            SectionKind::Crl,
            SectionKind::Csr,
        ] {
            let label = section_label(kind);
            let pem = format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
            let (read, _) = <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(read, kind, "{label}");
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in JwsAlgorithm::ALL {
            assert_eq!(JwsAlgorithm::parse(alg.as_str()), Some(alg));
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!(JwsAlgorithm::parse("HS256"), None);
        assert_eq!(JwsAlgorithm::parse("es256"), None);
    }
}
