//! How the client proves who it is to the token endpoint (RFC 6749 §2.3; OpenID Connect's
//! `token_endpoint_auth_method`).
//!
//! One concept, one type: [`ClientAuth`] holds everything the token request needs to
//! authenticate the client, and [`ClientAuth::authenticate`] adds it to one token request (the
//! form, the headers). A new method is a new variant and a new arm here; the token request
//! itself does not change.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};

use crate::rotation::SecretCell;
use crate::ClientSecret;

/// How the client authenticates to the token endpoint (RFC 6749 §2.3, OpenID Connect
/// `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `client_secret_basic`: `Authorization: Basic base64(id ":" secret)`, each part
    /// form-urlencoded first (RFC 6749 §2.3.1). The default: every server must support it.
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// `client_secret_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): a client assertion signed
    /// with HS256 and the client secret. Needs the `jwt` feature.
    ClientSecretJwt,
    /// `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): a client assertion signed
    /// with the client's private key ([`signing_key`](crate::ClientCredentialsBuilder::signing_key)).
    /// Needs the `jwt` feature.
    PrivateKeyJwt,
    /// `tls_client_auth` (RFC 8705 §2.1): the client certificate, issued by a CA the server
    /// trusts, presented by the HTTP client
    /// ([`http_client`](crate::ClientCredentialsBuilder::http_client) with an `identity`).
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 §2.2): a self-signed client certificate,
    /// registered with the server, presented by the HTTP client.
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The method's registered name (`client_secret_basic`, `private_key_jwt`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretJwt => "client_secret_jwt",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Reads a registered name; `None` for a method this crate does not implement.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Every method this crate implements.
    pub(crate) const ALL: [AuthMethod; 6] = [
        Self::ClientSecretBasic,
        Self::ClientSecretPost,
        Self::ClientSecretJwt,
        Self::PrivateKeyJwt,
        Self::TlsClientAuth,
        Self::SelfSignedTlsClientAuth,
    ];

    /// Whether the client certificate authenticates the client (RFC 8705).
    pub(crate) fn is_mutual_tls(&self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// The client's credentials and how they are presented.
#[derive(Clone)]
pub(crate) enum ClientAuth {
    SecretBasic {
        client_id: String,
        secret: Arc<SecretCell>,
        form_encode: bool,
    },
    SecretPost {
        client_id: String,
        secret: Arc<SecretCell>,
    },
    /// `client_secret_jwt` and `private_key_jwt`: a new signed assertion for every request.
    #[cfg(feature = "jwt")]
    Assertion {
        client_id: String,
        signer: AssertionSigner,
        audience: Arc<str>,
        lifetime: std::time::Duration,
    },
    /// Workload identity federation (`private_key_jwt` with a JWT the platform issued): the
    /// assertion is sent as it is.
    Federated {
        client_id: String,
        assertion: Arc<SecretCell>,
    },
    /// `tls_client_auth` and `self_signed_tls_client_auth`: the certificate is the HTTP
    /// client's; the form names the client.
    MutualTls {
        client_id: String,
        method: AuthMethod,
    },
}

/// What signs a client assertion.
#[cfg(feature = "jwt")]
#[derive(Clone)]
pub(crate) enum AssertionSigner {
    /// `client_secret_jwt`: HS256 with the client secret.
    Secret(Arc<SecretCell>),
    /// `private_key_jwt`: the client's private key.
    Key(Arc<crate::rotation::KeyCell>),
}

/// The credential one token request presents, read from its cell for that request: the secret
/// (or the platform's assertion), or the signing key.
#[derive(Clone)]
pub(crate) enum Presented {
    Secret(ClientSecret),
    #[cfg(feature = "jwt")]
    Key(crate::SigningKey),
}

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The parts of one token request that authentication adds to.
pub(crate) struct TokenRequest<'a> {
    pub(crate) form: &'a mut form_urlencoded::Serializer<'static, String>,
    pub(crate) headers: &'a mut HeaderMap,
}

impl ClientAuth {
    /// Who the client is and how it proves it, for a fleet's store key: the client id, the
    /// method, and a hash of the secret or the key's thumbprint (never a secret).
    #[cfg(feature = "fleet")]
    pub(crate) fn fleet_identity(&self, identity: &mut crate::fleet::Identity) {
        match self {
            Self::SecretBasic {
                client_id, secret, ..
            }
            | Self::SecretPost { client_id, secret } => {
                identity.push("client_id", client_id);
                identity.push("credential", secret_identity(secret));
            }
            #[cfg(feature = "jwt")]
            Self::Assertion {
                client_id,
                signer,
                audience,
                ..
            } => {
                identity.push("client_id", client_id);
                identity.push("audience", &**audience);
                match signer {
                    AssertionSigner::Secret(secret) => {
                        identity.push("credential", secret_identity(secret));
                    }
                    AssertionSigner::Key(key) => {
                        identity.push(
                            "credential",
                            match (key.fixed(), key.rotates()) {
                                (Some(key), _) => format!("key {}", key.thumbprint()),
                                (None, Some(origin)) => origin,
                                (None, None) => String::new(),
                            },
                        );
                    }
                }
            }
            Self::Federated {
                client_id,
                assertion,
            } => {
                identity.push("client_id", client_id);
                identity.push("credential", secret_identity(assertion));
            }
            Self::MutualTls { client_id, .. } => {
                identity.push("client_id", client_id);
            }
        }
        identity.push("auth_method", self.method().as_str());
    }

    /// Where the client secret (or the platform's client assertion) comes from, for the
    /// methods that send one.
    pub(crate) fn secret(&self) -> Option<&SecretCell> {
        match self {
            Self::SecretBasic { secret, .. } | Self::SecretPost { secret, .. } => Some(secret),
            Self::Federated { assertion, .. } => Some(assertion),
            #[cfg(feature = "jwt")]
            Self::Assertion {
                signer: AssertionSigner::Secret(secret),
                ..
            } => Some(secret),
            _ => None,
        }
    }

    /// The credential the next token request presents (`None` for mutual TLS, which presents
    /// the HTTP client's certificate).
    pub(crate) async fn present(&self) -> Result<Option<Presented>, crate::Error> {
        if let Some(cell) = self.secret() {
            return Ok(Some(Presented::Secret(cell.current().await?)));
        }
        #[cfg(feature = "jwt")]
        if let Self::Assertion {
            signer: AssertionSigner::Key(cell),
            ..
        } = self
        {
            return Ok(Some(Presented::Key(cell.current().await?)));
        }
        Ok(None)
    }

    /// After `invalid_client` to a request that presented `refused`: another credential to
    /// present once more, if there is one.
    pub(crate) async fn after_refusal(&self, refused: &Presented) -> Option<Presented> {
        match refused {
            Presented::Secret(secret) => self
                .secret()?
                .after_refusal(secret)
                .await
                .map(Presented::Secret),
            #[cfg(feature = "jwt")]
            Presented::Key(key) => match self {
                Self::Assertion {
                    signer: AssertionSigner::Key(cell),
                    ..
                } => cell.after_refusal(key).await.map(Presented::Key),
                _ => None,
            },
        }
    }

    /// The method.
    #[cfg(any(test, feature = "fleet"))]
    pub(crate) fn method(&self) -> AuthMethod {
        match self {
            Self::SecretBasic { .. } => AuthMethod::ClientSecretBasic,
            Self::SecretPost { .. } => AuthMethod::ClientSecretPost,
            #[cfg(feature = "jwt")]
            Self::Assertion {
                signer: AssertionSigner::Secret(_),
                ..
            } => AuthMethod::ClientSecretJwt,
            #[cfg(feature = "jwt")]
            Self::Assertion {
                signer: AssertionSigner::Key(_),
                ..
            } => AuthMethod::PrivateKeyJwt,
            Self::Federated { .. } => AuthMethod::PrivateKeyJwt,
            Self::MutualTls { method, .. } => *method,
        }
    }

    /// Adds what authenticates the client to one token request, with `presented` (what
    /// [`present`](Self::present) read for this request) for the methods that send one.
    /// An assertion is signed anew for every request, retries included (servers refuse a `jti`
    /// they have seen).
    pub(crate) fn authenticate(
        &self,
        presented: Option<&Presented>,
        request: TokenRequest<'_>,
    ) -> Result<(), crate::Error> {
        // The endpoint presents the credential of every method that has one; kept as an error,
        // not a panic, all the same.
        let missing = || crate::Error::from_source("no credential was read for the request");
        let secret = || match presented {
            Some(Presented::Secret(secret)) => Ok(secret),
            _ => Err(missing()),
        };
        match self {
            Self::SecretBasic {
                client_id,
                form_encode,
                ..
            } => {
                request.headers.insert(
                    AUTHORIZATION,
                    basic_header(client_id, secret()?, *form_encode),
                );
            }
            Self::SecretPost { client_id, .. } => {
                let secret = secret()?;
                request.form.append_pair("client_id", client_id);
                request
                    .form
                    .append_pair("client_secret", secret.expose_secret());
            }
            #[cfg(feature = "jwt")]
            Self::Assertion {
                client_id,
                signer,
                audience,
                lifetime,
            } => {
                let signer = match signer {
                    AssertionSigner::Secret(_) => {
                        crate::jose::Signer::Secret(secret()?.expose_secret().as_bytes())
                    }
                    AssertionSigner::Key(_) => match presented {
                        Some(Presented::Key(key)) => crate::jose::Signer::Key(key),
                        _ => return Err(missing()),
                    },
                };
                let assertion = crate::jose::client_assertion(
                    &signer,
                    client_id,
                    audience,
                    lifetime.as_secs().max(1),
                )?;
                // RFC 7521 §4.2 makes `client_id` optional; Entra ID and others want it.
                request.form.append_pair("client_id", client_id);
                request
                    .form
                    .append_pair("client_assertion_type", JWT_BEARER);
                request.form.append_pair("client_assertion", &assertion);
            }
            Self::Federated { client_id, .. } => {
                let assertion = secret()?;
                request.form.append_pair("client_id", client_id);
                request
                    .form
                    .append_pair("client_assertion_type", JWT_BEARER);
                request
                    .form
                    .append_pair("client_assertion", assertion.expose_secret());
            }
            Self::MutualTls { client_id, .. } => {
                request.form.append_pair("client_id", client_id);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretBasic {
                client_id,
                secret,
                form_encode,
            } => f
                .debug_struct("ClientSecretBasic")
                .field("client_id", client_id)
                .field("client_secret", secret)
                .field("form_encode", form_encode)
                .finish(),
            Self::SecretPost { client_id, secret } => f
                .debug_struct("ClientSecretPost")
                .field("client_id", client_id)
                .field("client_secret", secret)
                .finish(),
            #[cfg(feature = "jwt")]
            Self::Assertion {
                client_id,
                signer,
                audience,
                lifetime,
            } => {
                let mut d = f.debug_struct(match signer {
                    AssertionSigner::Secret(_) => "ClientSecretJwt",
                    AssertionSigner::Key(_) => "PrivateKeyJwt",
                });
                d.field("client_id", client_id);
                match signer {
                    AssertionSigner::Secret(secret) => d.field("client_secret", secret),
                    AssertionSigner::Key(key) => d.field("key", key),
                };
                d.field("audience", audience)
                    .field("lifetime", lifetime)
                    .finish()
            }
            Self::Federated {
                client_id,
                assertion,
            } => f
                .debug_struct("FederatedAssertion")
                .field("client_id", client_id)
                .field("client_assertion", assertion)
                .finish(),
            Self::MutualTls { client_id, method } => f
                .debug_struct("MutualTls")
                .field("method", &method.as_str())
                .field("client_id", client_id)
                .finish(),
        }
    }
}

/// A client secret in a fleet's identity: a hash of a secret given as a value (never the
/// secret); where it comes from for one that rotates, so members that read a rotated file at
/// different moments still share one token.
#[cfg(feature = "fleet")]
fn secret_identity(secret: &SecretCell) -> String {
    match (secret.fixed(), secret.rotates()) {
        (Some(secret), _) => crate::fleet::Identity::secret_hash(secret.expose_secret()),
        (None, Some(origin)) => origin,
        (None, None) => String::new(),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive.
fn basic_header(client_id: &str, secret: &ClientSecret, form_encode: bool) -> HeaderValue {
    let credentials = zeroize::Zeroizing::new(if form_encode {
        // RFC 6749 §2.3.1: id and secret are encoded with application/x-www-form-urlencoded
        // before they are joined, so a ':' in the id cannot be misread as the separator.
        format!(
            "{}:{}",
            form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect::<String>()
        )
    } else {
        format!("{}:{}", client_id, secret.expose_secret())
    });
    let encoded = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes())
    ));
    let mut value = HeaderValue::from_str(&encoded)
        // Base64 output and the "Basic " prefix are always visible ASCII.
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_encodes_per_rfc6749() {
        let secret = ClientSecret::new("p@ss:w/rd+%");
        let value = basic_header("id:1 x", &secret, true);
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"id%3A1+x:p%40ss%3Aw%2Frd%2B%25");
        let raw = basic_header("id", &secret, false);
        let encoded = raw.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            b"id:p@ss:w/rd+%"
        );
    }

    #[test]
    fn each_method_adds_its_part_to_the_request() {
        let secret = ClientSecret::new("s");
        let cell = Arc::new(SecretCell::value(secret.clone(), None));
        let cases = [
            (
                ClientAuth::SecretBasic {
                    client_id: "id".into(),
                    secret: Arc::clone(&cell),
                    form_encode: true,
                },
                "",
                true,
            ),
            (
                ClientAuth::SecretPost {
                    client_id: "id".into(),
                    secret: cell,
                },
                "client_id=id&client_secret=s",
                false,
            ),
        ];
        for (auth, form_expected, has_header) in cases {
            let mut form = form_urlencoded::Serializer::new(String::new());
            let mut headers = HeaderMap::new();
            auth.authenticate(
                Some(&Presented::Secret(secret.clone())),
                TokenRequest {
                    form: &mut form,
                    headers: &mut headers,
                },
            )
            .unwrap();
            assert_eq!(form.finish(), form_expected, "{:?}", auth.method());
            assert_eq!(headers.contains_key(AUTHORIZATION), has_header);
            assert!(!format!("{auth:?}").contains("\"s\""));
        }
    }

    #[test]
    fn method_names_round_trip() {
        for method in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(method.as_str()), Some(method));
        }
        assert_eq!(
            AuthMethod::parse("private_key_jwt"),
            Some(AuthMethod::PrivateKeyJwt)
        );
        assert_eq!(AuthMethod::parse("none"), None);
        assert_eq!(AuthMethod::parse("Client_Secret_Basic"), None);
    }
}
