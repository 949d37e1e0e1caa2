//! The client authentication and DPoP settings of the token endpoint builder, and the checks
//! that turn them into a [`ClientAuth`] and a DPoP state.

use std::sync::Arc;
use std::time::Duration;

use super::builder::Endpoint;
use super::ClientCredentialsBuilder;
use crate::client_auth::ClientAuth;
use crate::rotation::SecretCell;
use crate::{AuthMethod, ConfigError};
#[cfg(feature = "jwt")]
use crate::{JwsAlgorithm, SigningKey};

/// The default lifetime of a client assertion (60 s): long enough for a slow token request,
/// short enough that a leaked one is soon useless.
pub const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);

/// The `aud` of a client assertion (`private_key_jwt`, `client_secret_jwt`).
///
/// The default is the authorization server's **issuer identifier**, as one JSON string (never
/// an array): what draft-ietf-oauth-rfc7523bis requires since the 2025 disclosure of audience
/// injection attacks, and what OpenID Connect servers accept. Some servers want the token
/// endpoint's URL instead (Microsoft Entra ID); that, or any other value, is an explicit choice.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The issuer identifier: from [`discover`](ClientCredentialsBuilder::discover), or set
    /// with [`issuer`](ClientCredentialsBuilder::issuer).
    #[default]
    Issuer,
    /// The token endpoint's URL (Microsoft Entra ID's rule).
    TokenEndpoint,
    /// This value.
    Custom(String),
}

/// Where a client assertion of the platform's (workload identity federation) comes from.
#[derive(Clone)]
pub(crate) enum AssertionChoice {
    File(std::path::PathBuf),
    Env(String),
    Provider(Arc<dyn crate::CredentialProvider>),
}

impl std::fmt::Debug for AssertionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::Provider(_) => f.write_str("Provider"),
        }
    }
}

/// Where the `private_key_jwt` signing key comes from.
#[cfg(feature = "jwt")]
#[derive(Clone)]
pub(crate) enum KeyChoice {
    Value(SigningKey),
    File(JwsAlgorithm, std::path::PathBuf),
    Provider(JwsAlgorithm, Arc<dyn crate::CredentialProvider>),
}

#[cfg(feature = "jwt")]
impl std::fmt::Debug for KeyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(key) => f.debug_tuple("Value").field(key).finish(),
            Self::File(alg, path) => f.debug_tuple("File").field(alg).field(path).finish(),
            Self::Provider(alg, _) => f.debug_tuple("Provider").field(alg).finish(),
        }
    }
}

/// How the DPoP key is had.
#[cfg(feature = "jwt")]
#[derive(Debug, Clone)]
pub(crate) enum DpopChoice {
    /// Made at start-up: this algorithm, or the first of ES256, EdDSA and PS256 that the
    /// server's metadata offers (ES256 without metadata).
    Generate(Option<JwsAlgorithm>),
    /// This key.
    Key(SigningKey),
}

/// The client authentication and DPoP settings.
impl ClientCredentialsBuilder<Endpoint> {
    /// The authorization server's issuer identifier (default: none, or the one
    /// [`discover`](Self::discover) read): the default audience of client assertions.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.source.issuer = Some(issuer.into());
        self
    }

    /// The `aud` of client assertions (default [`AssertionAudience::Issuer`]). `build()`
    /// refuses it with a method that sends no assertion.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn assertion_audience(mut self, audience: AssertionAudience) -> Self {
        self.source.assertion_audience = Some(audience);
        self
    }

    /// How long a client assertion is valid, its `exp` after its `iat` (default 60 s; from 1 s
    /// to 10 minutes). A new assertion, with a new `jti`, is signed for every token request.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn assertion_lifetime(mut self, lifetime: Duration) -> Self {
        self.source.assertion_lifetime = Some(lifetime);
        self
    }

    /// Workload identity federation: the client authenticates with a JWT its platform issued
    /// it (a Kubernetes projected service-account token, `AZURE_FEDERATED_TOKEN_FILE` on AKS, a
    /// SPIFFE JWT-SVID), read from this file and sent as the client assertion (RFC 7523 §2.2,
    /// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`): no
    /// client secret, no key. The method is `private_key_jwt` (the server checks the JWT
    /// against the issuer's keys it trusts).
    ///
    /// The file is read by `build()` and refused if it is no JWT with an `exp` (or missing,
    /// empty, writable by every user, over 64 KiB); then, like
    /// [`client_secret_file`](Self::client_secret_file), looked at before token requests at
    /// most once per [`credential_file_check_interval`](Self::credential_file_check_interval)
    /// and read again when it changed, when the JWT has under a minute of life left, or when the
    /// token endpoint answers `invalid_client` (then the token request is sent once more with
    /// the new JWT). A JWT whose `exp` has passed is never sent: the token request fails with
    /// [`Error::Credential`](crate::Error::Credential), naming the file. The JWT is not
    /// verified here (the server does that); only its `exp` is read.
    pub fn client_assertion_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source.client_assertion = Some(AssertionChoice::File(path.into()));
        self
    }

    /// Workload identity federation with the client assertion in this environment variable,
    /// read by `build()` and again before every token request (a JWT with an `exp`, never sent
    /// once expired; see [`client_assertion_file`](Self::client_assertion_file)).
    pub fn client_assertion_env(mut self, name: impl Into<String>) -> Self {
        self.source.client_assertion = Some(AssertionChoice::Env(name.into()));
        self
    }

    /// Workload identity federation with the client assertion asked of a provider of your own
    /// (the value it gives is the JWT): when the first token request needs it, when the last
    /// one has under a minute of life left, and when the token endpoint answers
    /// `invalid_client`. A JWT whose `exp` has passed is never sent.
    pub fn client_assertion_provider(mut self, provider: impl crate::CredentialProvider) -> Self {
        self.source.client_assertion = Some(AssertionChoice::Provider(Arc::new(provider)));
        self
    }

    /// The private key for `private_key_jwt` (which becomes the default method when a key is
    /// set). Register its [`public_jwk`](SigningKey::public_jwk) with the server.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn signing_key(mut self, key: SigningKey) -> Self {
        self.source.signing_key = Some(KeyChoice::Value(key));
        self
    }

    /// The private key for `private_key_jwt`, read from this file (PEM, or a private JWK whose
    /// `kid` is kept), to sign with `alg`; read again when it changes, as
    /// [`client_secret_file`](Self::client_secret_file) is (the same refusals, a world-writable
    /// file among them, the same check interval), and at once when the token endpoint answers
    /// `invalid_client`, before the token request is sent once more signed with the new key.
    /// A file that no longer holds a usable key keeps the last good one.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn signing_key_file(
        mut self,
        alg: JwsAlgorithm,
        path: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.source.signing_key = Some(KeyChoice::File(alg, path.into()));
        self
    }

    /// The private key for `private_key_jwt`, asked of a provider of your own (a key vault;
    /// the value it gives is the PEM or the private JWK), to sign with `alg`: when first needed
    /// and again after `invalid_client`.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn signing_key_provider(
        mut self,
        alg: JwsAlgorithm,
        provider: impl crate::CredentialProvider,
    ) -> Self {
        self.source.signing_key = Some(KeyChoice::Provider(alg, Arc::new(provider)));
        self
    }

    /// The key that was current before a rotation, during the window in which the server may
    /// know only one of the two: when it answers `invalid_client` to an assertion signed with
    /// the current key (and no new key was read), the token request is sent once more signed
    /// with this one, which is used first while it works.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn previous_signing_key(mut self, key: SigningKey) -> Self {
        self.source.previous_signing_key = Some(key);
        self
    }

    /// DPoP (RFC 9449) with a key made at start-up: ES256, or the first of ES256, EdDSA and
    /// PS256 the server's `dpop_signing_alg_values_supported` offers when
    /// [`discover`](Self::discover) read one. Tokens are bound to the key; every request gets
    /// `Authorization: DPoP <token>` and a fresh proof.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop(mut self) -> Self {
        self.source.dpop = Some(DpopChoice::Generate(None));
        self
    }

    /// DPoP with a key of this algorithm made at start-up (`ES256`, `EdDSA` or `PS256`).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_algorithm(mut self, alg: JwsAlgorithm) -> Self {
        self.source.dpop = Some(DpopChoice::Generate(Some(alg)));
        self
    }

    /// DPoP with this key (kept across restarts, for instance, so tokens stay usable).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_key(mut self, key: SigningKey) -> Self {
        self.source.dpop = Some(DpopChoice::Key(key));
        self
    }

    /// Whether a token that is not DPoP-bound is an error (default `true`). With `true`, a
    /// server that answers `token_type: Bearer` to a DPoP request fails the token request with
    /// `InvalidResponse::NotDpopBound`; with `false`, the token is used as a Bearer token (and a
    /// warning logged), for servers that do not support DPoP for every client yet.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_required(mut self, required: bool) -> Self {
        self.source.dpop_required = Some(required);
        self
    }
}

impl Endpoint {
    /// The method: the one set, else `private_key_jwt` when a client assertion or a signing key
    /// is set, else `client_secret_basic`.
    pub(crate) fn method(&self) -> AuthMethod {
        if let Some(method) = self.auth_method {
            return method;
        }
        if self.client_assertion.is_some() {
            return AuthMethod::PrivateKeyJwt;
        }
        #[cfg(feature = "jwt")]
        if self.signing_key.is_some() {
            return AuthMethod::PrivateKeyJwt;
        }
        AuthMethod::ClientSecretBasic
    }

    /// How the client authenticates to the token endpoint at `token_url`, every setting
    /// checked: each one the method needs is there, and none it would ignore is set.
    pub(crate) fn client_auth(
        &self,
        client_id: String,
        token_url: &url::Url,
        counters: &Arc<crate::stats::Counters>,
    ) -> Result<ClientAuth, ConfigError> {
        let method = self.method();
        let name = method.as_str();
        let unused = |setting: &'static str| ConfigError::OutOfRange(setting);
        if let Some(choice) = &self.client_assertion {
            return self.federated(choice, method, client_id, counters);
        }
        if self.form_encode_basic.is_some() && method != AuthMethod::ClientSecretBasic {
            return Err(unused(
                "form_encode_basic_credentials applies to client_secret_basic only",
            ));
        }
        let is_assertion = matches!(
            method,
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt
        );
        if !is_assertion && (self.assertion_audience.is_some() || self.assertion_lifetime.is_some())
        {
            return Err(unused(
                "assertion_audience and assertion_lifetime apply to private_key_jwt and \
                 client_secret_jwt only",
            ));
        }
        #[cfg(feature = "jwt")]
        if (self.signing_key.is_some() || self.previous_signing_key.is_some())
            && method != AuthMethod::PrivateKeyJwt
        {
            return Err(unused(
                "signing_key, signing_key_file, signing_key_provider and previous_signing_key \
                 apply to private_key_jwt only",
            ));
        }
        let uses_secret = matches!(
            method,
            AuthMethod::ClientSecretBasic
                | AuthMethod::ClientSecretPost
                | AuthMethod::ClientSecretJwt
        );
        let given = [
            self.client_secret.is_some(),
            self.client_secret_file.is_some(),
            self.client_secret_provider.is_some(),
        ]
        .into_iter()
        .filter(|given| *given)
        .count();
        if given > 1 {
            return Err(unused(
                "client_secret, client_secret_file and client_secret_provider are three ways to \
                 give one secret: set one",
            ));
        }
        if !uses_secret && (given > 0 || self.previous_client_secret.is_some()) {
            return Err(unused(
                "client_secret, client_secret_file, client_secret_provider and \
                 previous_client_secret apply to client_secret_basic, client_secret_post and \
                 client_secret_jwt only",
            ));
        }
        #[cfg(feature = "jwt")]
        let key_file = matches!(self.signing_key, Some(KeyChoice::File(..)));
        #[cfg(not(feature = "jwt"))]
        let key_file = false;
        if self.credential_file_check_interval.is_some()
            && self.client_secret_file.is_none()
            && !key_file
        {
            return Err(unused(
                "credential_file_check_interval applies to client_secret_file, \
                 client_assertion_file and signing_key_file only",
            ));
        }
        let secret = || -> Result<Arc<SecretCell>, ConfigError> {
            let previous = self.previous_client_secret.clone();
            let cell = if let Some(path) = &self.client_secret_file {
                SecretCell::file(
                    crate::rotation::Kind::Secret,
                    path.clone(),
                    self.credential_file_check_interval
                        .unwrap_or(crate::DEFAULT_FILE_CHECK_INTERVAL),
                    previous,
                    Arc::clone(counters),
                )?
            } else if let Some(provider) = &self.client_secret_provider {
                SecretCell::provider(
                    crate::rotation::Kind::Secret,
                    Arc::clone(provider),
                    previous,
                    Arc::clone(counters),
                )
            } else {
                let secret = self
                    .client_secret
                    .clone()
                    .ok_or(ConfigError::MissingClientSecret(name))?;
                SecretCell::value(secret, previous)
            };
            Ok(Arc::new(cell))
        };
        Ok(match method {
            AuthMethod::ClientSecretBasic => ClientAuth::SecretBasic {
                client_id,
                secret: secret()?,
                form_encode: self.form_encode_basic.unwrap_or(true),
            },
            AuthMethod::ClientSecretPost => ClientAuth::SecretPost {
                client_id,
                secret: secret()?,
            },
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                if self.http_client.is_none() {
                    return Err(ConfigError::MissingClientCertificate(name));
                }
                ClientAuth::MutualTls { client_id, method }
            }
            #[cfg(feature = "jwt")]
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt => {
                use crate::client_auth::AssertionSigner;
                let signer = if method == AuthMethod::ClientSecretJwt {
                    AssertionSigner::Secret(secret()?)
                } else {
                    AssertionSigner::Key(Arc::new(self.key_cell(name, counters)?))
                };
                let audience = match self.assertion_audience.clone().unwrap_or_default() {
                    AssertionAudience::Issuer => {
                        self.issuer.clone().ok_or(ConfigError::MissingIssuer)?
                    }
                    AssertionAudience::TokenEndpoint => token_url.as_str().to_owned(),
                    AssertionAudience::Custom(audience) => audience,
                };
                let lifetime = self
                    .assertion_lifetime
                    .unwrap_or(DEFAULT_ASSERTION_LIFETIME);
                if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&lifetime) {
                    return Err(unused("assertion_lifetime must be from 1 s to 10 minutes"));
                }
                ClientAuth::Assertion {
                    client_id,
                    signer,
                    audience: Arc::from(audience),
                    lifetime,
                }
            }
            #[cfg(not(feature = "jwt"))]
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt => {
                let _ = (token_url, secret);
                return Err(ConfigError::FeatureMissing(name, "jwt"));
            }
        })
    }

    /// The signing key's cell, from the key, its file or its provider, with the previous key.
    #[cfg(feature = "jwt")]
    fn key_cell(
        &self,
        name: &'static str,
        counters: &Arc<crate::stats::Counters>,
    ) -> Result<crate::rotation::KeyCell, ConfigError> {
        use crate::rotation::{KeyCell, Kind};
        let previous = self.previous_signing_key.clone();
        let interval = self
            .credential_file_check_interval
            .unwrap_or(crate::DEFAULT_FILE_CHECK_INTERVAL);
        Ok(match self.signing_key.clone() {
            None => return Err(ConfigError::MissingSigningKey(name)),
            Some(KeyChoice::Value(key)) => KeyCell::value(key, previous),
            Some(KeyChoice::File(alg, path)) => KeyCell::text(
                alg,
                SecretCell::file(Kind::Key(alg), path, interval, None, Arc::clone(counters))?,
                previous,
            ),
            Some(KeyChoice::Provider(alg, provider)) => KeyCell::text(
                alg,
                SecretCell::provider(Kind::Key(alg), provider, None, Arc::clone(counters)),
                previous,
            ),
        })
    }

    /// Workload identity federation: every setting checked (the method `private_key_jwt`, no
    /// secret, no key, none of the settings of assertions this crate signs).
    fn federated(
        &self,
        choice: &AssertionChoice,
        method: AuthMethod,
        client_id: String,
        counters: &Arc<crate::stats::Counters>,
    ) -> Result<ClientAuth, ConfigError> {
        use crate::rotation::Kind;
        if method != AuthMethod::PrivateKeyJwt {
            return Err(ConfigError::OutOfRange(
                "client_assertion_file, client_assertion_env and client_assertion_provider \
                 authenticate with private_key_jwt: leave auth_method unset or set that",
            ));
        }
        #[cfg(feature = "jwt")]
        let key = self.signing_key.is_some() || self.previous_signing_key.is_some();
        #[cfg(not(feature = "jwt"))]
        let key = false;
        if key
            || self.client_secret.is_some()
            || self.client_secret_file.is_some()
            || self.client_secret_provider.is_some()
            || self.previous_client_secret.is_some()
        {
            return Err(ConfigError::OutOfRange(
                "a client assertion from the platform replaces the client secret and the \
                 signing key: set only one of them",
            ));
        }
        if self.assertion_audience.is_some() || self.assertion_lifetime.is_some() {
            return Err(ConfigError::OutOfRange(
                "assertion_audience and assertion_lifetime apply to the assertions this crate \
                 signs, not to one the platform issued",
            ));
        }
        let interval = self
            .credential_file_check_interval
            .unwrap_or(crate::DEFAULT_FILE_CHECK_INTERVAL);
        let cell = match choice {
            AssertionChoice::File(path) => SecretCell::file(
                Kind::Assertion,
                path.clone(),
                interval,
                None,
                Arc::clone(counters),
            )?,
            AssertionChoice::Env(name) => {
                if self.credential_file_check_interval.is_some() {
                    return Err(ConfigError::OutOfRange(
                        "credential_file_check_interval applies to files only",
                    ));
                }
                SecretCell::env(name.clone(), Arc::clone(counters))?
            }
            AssertionChoice::Provider(provider) => {
                if self.credential_file_check_interval.is_some() {
                    return Err(ConfigError::OutOfRange(
                        "credential_file_check_interval applies to files only",
                    ));
                }
                SecretCell::provider(
                    Kind::Assertion,
                    Arc::clone(provider),
                    None,
                    Arc::clone(counters),
                )
            }
        };
        Ok(ClientAuth::Federated {
            client_id,
            assertion: Arc::new(cell),
        })
    }

    /// The DPoP state, if DPoP is configured: the key loaded or made, its algorithm one the
    /// server offers (when its metadata was read).
    #[cfg(feature = "jwt")]
    pub(crate) fn dpop_state(&self) -> Result<Option<Arc<crate::proof::Dpop>>, ConfigError> {
        let Some(choice) = &self.dpop else {
            if self.dpop_required.is_some() {
                return Err(ConfigError::OutOfRange(
                    "dpop_required applies only with dpop, dpop_algorithm or dpop_key",
                ));
            }
            return Ok(None);
        };
        let offered = |alg: JwsAlgorithm| {
            self.dpop_algs_offered
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| a == alg.as_str()))
        };
        let key = match choice {
            DpopChoice::Key(key) => key.clone(),
            DpopChoice::Generate(Some(alg)) => SigningKey::generate(*alg)?,
            DpopChoice::Generate(None) => {
                let alg = [
                    JwsAlgorithm::Es256,
                    JwsAlgorithm::EdDsa,
                    JwsAlgorithm::Ps256,
                ]
                .into_iter()
                .find(|a| offered(*a))
                .ok_or_else(|| {
                    ConfigError::InvalidKey(
                        "the server's dpop_signing_alg_values_supported offers none of ES256, \
                             EdDSA, PS256"
                            .to_owned(),
                    )
                })?;
                SigningKey::generate(alg)?
            }
        };
        let alg = key.algorithm();
        if alg == JwsAlgorithm::Rs256 {
            return Err(ConfigError::InvalidKey(
                "DPoP proofs are signed with ES256, EdDSA or PS256 (an RSA key can use PS256)"
                    .to_owned(),
            ));
        }
        if !offered(alg) {
            return Err(ConfigError::InvalidKey(format!(
                "the server's dpop_signing_alg_values_supported does not offer {alg}"
            )));
        }
        Ok(Some(Arc::new(crate::proof::Dpop::new(
            key,
            self.dpop_required.unwrap_or(true),
        ))))
    }
}
