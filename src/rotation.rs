//! Credentials that change while the process runs: the client secret or a client assertion
//! (a JWT the platform issues the workload: workload identity federation) read from a file,
//! which is read again when it changes, or from an environment variable, or asked of a provider
//! of the user's own, which is asked again when the token endpoint refuses the client; and the
//! previous secret of a rotation window, tried once when the current one is refused.
//!
//! Only token requests read a credential, so none of this is on the per-request path: a cache
//! hit never looks at the file.
//!
//! One concept, one type: [`SecretCell`] holds where the credential comes from and the last
//! good value. [`SecretCell::current`] is what the next token request sends;
//! [`SecretCell::after_refusal`] is what to send once more after the token endpoint answered
//! `invalid_client` to a value (a changed value read again, else the other of current and
//! previous), or nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::stats::Counters;
use crate::{BoxFuture, ClientSecret, Error};

/// How often a credential file is read again, at most: before a token request, and only when
/// this long has passed since the last read (1 s). A token
/// endpoint answering `invalid_client` makes the next look immediate.
pub const DEFAULT_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The largest credential file read (64 KiB): a secret, a key or a JWT is far smaller; a
/// larger file is someone else's.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// A client assertion with less life left than this is replaced before it is sent: the file or
/// the environment read again, the provider asked again (60 s).
const ASSERTION_RENEW_BELOW: Duration = Duration::from_secs(60);

/// A source of the client secret of your own: a secret manager, a vault, a sidecar.
///
/// Asked when the first token request needs the secret, and again when the token endpoint
/// answers `invalid_client` (the secret was rotated), before one more try of the token request
/// with the new value. A failure keeps the last good value (and is counted in
/// [`Stats::credential_errors`](crate::Stats::credential_errors) and logged); with no good
/// value yet, the token request fails with the provider's error. The call runs inside the
/// token request, so the [`load_timeout`](crate::ClientCredentialsBuilder::load_timeout)
/// bounds a provider that hangs.
///
/// # Example
///
/// ```
/// use client_credentials::{BoxFuture, ClientCredentials, ClientSecret, CredentialProvider, Error};
///
/// struct FromSecretManager;
///
/// impl CredentialProvider for FromSecretManager {
///     fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>> {
///         Box::pin(async {
///             // e.g. an AWS Secrets Manager GetSecretValue call
///             Ok(ClientSecret::new("from-the-secret-manager"))
///         })
///     }
/// }
///
/// let credentials = ClientCredentials::builder()
///     .token_url("https://auth.example.com/oauth2/token")
///     .client_id("my-service")
///     .client_secret_provider(FromSecretManager)
///     .build()?;
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
pub trait CredentialProvider: Send + Sync + 'static {
    /// The current value. Report failures with [`Error::from_source`].
    fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>>;
}

/// What a cell holds: a client secret, or a client assertion (a JWT, sent as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Secret,
    Assertion,
    /// A private key (PEM, or a private JWK) for `private_key_jwt`, signing with this
    /// algorithm.
    #[cfg(feature = "jwt")]
    Key(crate::JwsAlgorithm),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Secret => "client secret",
            Self::Assertion => "client assertion",
            #[cfg(feature = "jwt")]
            Self::Key(_) => "signing key",
        }
    }

    /// Checks a value read from a file, the environment or a provider.
    fn check(self, value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err("empty".to_owned());
        }
        match self {
            Self::Secret => Ok(()),
            Self::Assertion => jwt_expiry(value).map(|_| ()),
            #[cfg(feature = "jwt")]
            Self::Key(alg) => parse_key(alg, value).map(|_| ()),
        }
    }
}

/// Where the credential comes from, and the last good value.
pub(crate) struct SecretCell {
    kind: Kind,
    origin: Origin,
    previous: Option<ClientSecret>,
    state: Mutex<State>,
    counters: Arc<Counters>,
}

enum Origin {
    Value(ClientSecret),
    File {
        path: PathBuf,
        check_interval: Duration,
    },
    Env(String),
    Provider(Arc<dyn CredentialProvider>),
}

#[derive(Default)]
struct State {
    /// The last good value read from the file, the environment or the provider.
    current: Option<ClientSecret>,
    /// When the file was last looked at.
    checked_at: Option<Instant>,
    /// The previous secret worked where the current one was refused: send it first.
    use_previous: bool,
}

impl SecretCell {
    /// A secret given as a value.
    pub(crate) fn value(secret: ClientSecret, previous: Option<ClientSecret>) -> Self {
        Self::new(
            Kind::Secret,
            Origin::Value(secret),
            previous,
            Arc::default(),
        )
    }

    /// A credential read from `path` now (a file that cannot be used is a configuration
    /// error), and again when it changes.
    pub(crate) fn file(
        kind: Kind,
        path: PathBuf,
        check_interval: Duration,
        previous: Option<ClientSecret>,
        counters: Arc<Counters>,
    ) -> Result<Self, crate::ConfigError> {
        let value = read_file(&path, kind).map_err(|reason| {
            crate::ConfigError::CredentialFile(format!("{}: {reason}", path.display()))
        })?;
        let cell = Self::new(
            kind,
            Origin::File {
                path,
                check_interval,
            },
            previous,
            counters,
        );
        let mut state = cell.lock();
        state.current = Some(value);
        // The read at build time is the first look: the interval counts from it.
        state.checked_at = Some(Instant::now());
        drop(state);
        Ok(cell)
    }

    /// A client assertion read from the environment variable `name` now and before every
    /// token request.
    pub(crate) fn env(name: String, counters: Arc<Counters>) -> Result<Self, crate::ConfigError> {
        let value =
            read_env(&name, Kind::Assertion).map_err(|reason| crate::ConfigError::InvalidEnv {
                name: name.clone(),
                reason,
            })?;
        let cell = Self::new(Kind::Assertion, Origin::Env(name), None, counters);
        cell.lock().current = Some(value);
        Ok(cell)
    }

    /// A credential asked of `provider` when first needed.
    pub(crate) fn provider(
        kind: Kind,
        provider: Arc<dyn CredentialProvider>,
        previous: Option<ClientSecret>,
        counters: Arc<Counters>,
    ) -> Self {
        Self::new(kind, Origin::Provider(provider), previous, counters)
    }

    fn new(
        kind: Kind,
        origin: Origin,
        previous: Option<ClientSecret>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            kind,
            origin,
            previous,
            state: Mutex::default(),
            counters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data, consistent after every statement: a panic elsewhere while
        // it was held leaves nothing half-written to guard against.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the credential comes from, as errors and logs name it (never a value).
    fn origin_label(&self) -> String {
        let what = self.kind.name();
        match &self.origin {
            Origin::Value(_) => format!("{what} given as a value"),
            Origin::File { path, .. } => format!("{what} file {}", path.display()),
            Origin::Env(name) => format!("{what} from environment variable {name}"),
            Origin::Provider(_) => format!("{what} provider"),
        }
    }

    /// Where a credential that can change comes from (a file, the environment, a provider),
    /// for the fleet's identity; `None` for a value given once.
    #[cfg(feature = "fleet")]
    pub(crate) fn rotates(&self) -> Option<String> {
        match &self.origin {
            Origin::Value(_) => None,
            _ => Some(self.origin_label()),
        }
    }

    /// The secret as it was given, for the fleet's identity of a secret that does not rotate.
    #[cfg(feature = "fleet")]
    pub(crate) fn fixed(&self) -> Option<&ClientSecret> {
        match &self.origin {
            Origin::Value(secret) => Some(secret),
            _ => None,
        }
    }

    /// What the next token request sends: the previous secret if it is the one that worked
    /// last, else the current value (the file looked at again if its check interval has
    /// passed, the environment read again, the provider asked if it has not given a value yet).
    /// A client assertion with under a minute of life left is replaced first; one that has
    /// expired is never sent (a typed error naming where it came from).
    pub(crate) async fn current(&self) -> Result<ClientSecret, Error> {
        if let Some(previous) = self.previous.as_ref().filter(|_| self.lock().use_previous) {
            return Ok(previous.clone());
        }
        let value = match &self.origin {
            Origin::Value(secret) => secret.clone(),
            Origin::File {
                path,
                check_interval,
            } => {
                let mut state = self.lock();
                let due = state
                    .checked_at
                    .is_none_or(|at| at.elapsed() >= *check_interval);
                if due || self.renew(state.current.as_ref()) {
                    self.look(path, &mut state);
                }
                state.current.clone().ok_or_else(|| self.never_read())?
            }
            Origin::Env(name) => {
                let mut state = self.lock();
                self.take_env(name, &mut state);
                state.current.clone().ok_or_else(|| self.never_read())?
            }
            Origin::Provider(provider) => {
                let current = self.lock().current.clone();
                match current {
                    Some(value) if !self.renew(Some(&value)) => value,
                    _ => self.ask(provider).await?,
                }
            }
        };
        if self.kind == Kind::Assertion {
            self.unexpired(&value)?;
        }
        Ok(value)
    }

    /// Whether a client assertion has under [`ASSERTION_RENEW_BELOW`] of life left.
    fn renew(&self, value: Option<&ClientSecret>) -> bool {
        self.kind == Kind::Assertion
            && value.is_some_and(|v| {
                jwt_expiry(v.expose_secret())
                    .is_ok_and(|exp| exp < SystemTime::now() + ASSERTION_RENEW_BELOW)
            })
    }

    /// A client assertion past its `exp` is an error, not a request.
    fn unexpired(&self, value: &ClientSecret) -> Result<(), Error> {
        let exp = jwt_expiry(value.expose_secret()).map_err(|reason| self.error(reason))?;
        match SystemTime::now().duration_since(exp) {
            Ok(ago) => Err(self.error(format!(
                "the JWT expired {} s ago (its exp); it is not sent",
                ago.as_secs()
            ))),
            Err(_) => Ok(()),
        }
    }

    fn error(&self, reason: String) -> Error {
        Error::Credential {
            origin: Arc::from(self.origin_label()),
            reason: Arc::from(reason),
        }
    }

    /// A file or environment cell always holds a value (the first read is at build time);
    /// kept as an error, not a panic, all the same.
    fn never_read(&self) -> Error {
        self.error("no value was ever read".to_owned())
    }

    /// After the token endpoint answered `invalid_client` to `refused`: the value to send once
    /// more, if there is another one. The file or the environment is read again (whatever the
    /// check interval) or the provider asked again; a new value is the answer; else the other
    /// of the current and the previous secret, if there is a previous one; else nothing.
    pub(crate) async fn after_refusal(&self, refused: &ClientSecret) -> Option<ClientSecret> {
        let current = match &self.origin {
            Origin::Value(secret) => Some(secret.clone()),
            Origin::File { path, .. } => {
                let mut state = self.lock();
                self.look(path, &mut state);
                state.current.clone()
            }
            Origin::Env(name) => {
                let mut state = self.lock();
                self.take_env(name, &mut state);
                state.current.clone()
            }
            Origin::Provider(provider) => match self.ask(provider).await {
                Ok(value) => Some(value),
                Err(_) => self.lock().current.clone(),
            },
        }?;
        if current != *refused {
            if self.kind == Kind::Assertion && self.unexpired(&current).is_err() {
                return None;
            }
            self.lock().use_previous = false;
            return Some(current);
        }
        let previous = self.previous.clone().filter(|p| p != refused)?;
        self.lock().use_previous = true;
        tracing::info!("the token endpoint refused the current client secret; trying the previous one (rotation window)");
        Some(previous)
    }

    /// Takes `value` as the current one if it differs (counted and logged as a rotation when
    /// there was one before).
    fn take(&self, state: &mut State, value: ClientSecret) {
        if state.current.as_ref() == Some(&value) {
            return;
        }
        if state.current.is_some() {
            self.counters
                .credentials_reloaded
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(origin = %self.origin_label(), "the credential changed; the next token request sends the new one");
        }
        state.current = Some(value);
        state.use_previous = false;
    }

    /// A read that failed: counted and logged; the last good value is kept.
    fn failed(&self, reason: &str) {
        self.counters
            .credential_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(origin = %self.origin_label(), %reason, "the credential could not be read; keeping the last good one");
    }

    /// Looks at the file: reads it, and takes its content when it differs from the last good
    /// value. (Its modification time and size are not trusted to tell a change: a rewrite of the
    /// same length within the file system's timestamp granularity keeps both; the file is a
    /// few hundred bytes, read at most once per check interval, before a token request.) A
    /// read that fails keeps the last good value, and is counted and logged.
    fn look(&self, path: &Path, state: &mut State) {
        state.checked_at = Some(Instant::now());
        match read_file(path, self.kind) {
            Ok(value) => self.take(state, value),
            Err(reason) => self.failed(&reason),
        }
    }

    /// Reads the environment variable again.
    fn take_env(&self, name: &str, state: &mut State) {
        match read_env(name, self.kind) {
            Ok(value) => self.take(state, value),
            Err(reason) => self.failed(&reason),
        }
    }

    /// Asks the provider; a failure keeps the last good value (and is counted and logged), and
    /// is the answer only when there is none.
    async fn ask(&self, provider: &Arc<dyn CredentialProvider>) -> Result<ClientSecret, Error> {
        let result = provider.credential().await.and_then(|value| {
            match self.kind.check(value.expose_secret()) {
                Ok(()) => Ok(value),
                Err(reason) => Err(self.error(reason)),
            }
        });
        match result {
            Ok(value) => {
                self.take(&mut self.lock(), value.clone());
                Ok(value)
            }
            Err(error) => {
                self.failed(&error.to_string());
                self.lock().current.clone().ok_or(error)
            }
        }
    }
}

/// Removes one trailing line break (`echo` writes one); nothing else.
fn one_line(text: &str) -> &str {
    text.strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text)
}

/// Reads a credential file: at most [`MAX_FILE_BYTES`], not writable by everyone, UTF-8, one
/// trailing line break removed, not empty, and for an assertion a JWT with an `exp`. The reason
/// of a failure never shows the content.
pub(crate) fn read_file(path: &Path, kind: Kind) -> Result<ClientSecret, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.kind().to_string())?;
    let meta = file.metadata().map_err(|e| e.kind().to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(
                "writable by every user (a credential file must not be: chmod o-w)".to_owned(),
            );
        }
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let text = one_line(text);
    kind.check(text)?;
    Ok(ClientSecret::new(text))
}

/// Reads a credential from an environment variable (one trailing line break removed).
fn read_env(name: &str, kind: Kind) -> Result<ClientSecret, String> {
    let value = zeroize::Zeroizing::new(std::env::var(name).map_err(|e| match e {
        std::env::VarError::NotPresent => "not set".to_owned(),
        std::env::VarError::NotUnicode(_) => "not valid Unicode".to_owned(),
    })?);
    let text = one_line(&value);
    kind.check(text)?;
    Ok(ClientSecret::new(text))
}

/// The `exp` of a JWT (a JWS in compact form: three base64url parts), read without checking
/// the signature (the authorization server checks it; the client only must not send one that
/// has expired). The reason of a failure never shows the token.
pub(crate) fn jwt_expiry(jwt: &str) -> Result<SystemTime, String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Value>,
    }
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("not a JWT (three base64url parts separated by dots)".to_owned());
    };
    let payload = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| "not a JWT (its payload is not base64url)".to_owned())?,
    );
    let claims: Claims = serde_json::from_slice(&payload)
        .map_err(|_| "not a JWT (its payload is not a JSON object)".to_owned())?;
    let exp = claims
        .exp
        .as_ref()
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "the JWT has no exp claim (RFC 7523 §3 requires one)".to_owned())?;
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .ok_or_else(|| "the JWT's exp is out of range".to_owned())
}

/// A private key from its text: a private JWK (its `kid` kept) when it starts with `{`, else
/// PEM; to sign with `alg`. The reason of a failure never shows the key.
#[cfg(feature = "jwt")]
pub(crate) fn parse_key(alg: crate::JwsAlgorithm, text: &str) -> Result<crate::SigningKey, String> {
    let key = if text.trim_start().starts_with('{') {
        crate::SigningKey::from_jwk(text).and_then(|key| key.with_algorithm(alg))
    } else {
        crate::SigningKey::from_pem(alg, text)
    };
    key.map_err(|e| e.to_string())
}

/// The signing key of `private_key_jwt`: given as a value, or read from a file or a provider
/// (as text, through a [`SecretCell`]) and parsed when it changes; and the previous key of a
/// rotation window.
#[cfg(feature = "jwt")]
pub(crate) struct KeyCell {
    origin: KeyOrigin,
    previous: Option<crate::SigningKey>,
    state: Mutex<KeyState>,
}

#[cfg(feature = "jwt")]
enum KeyOrigin {
    Value(crate::SigningKey),
    Text {
        alg: crate::JwsAlgorithm,
        cell: SecretCell,
    },
}

#[cfg(feature = "jwt")]
#[derive(Default)]
struct KeyState {
    /// The last text read and the key parsed from it.
    parsed: Option<(ClientSecret, crate::SigningKey)>,
    /// The previous key worked where the current one was refused: sign with it first.
    use_previous: bool,
}

#[cfg(feature = "jwt")]
impl KeyCell {
    pub(crate) fn value(key: crate::SigningKey, previous: Option<crate::SigningKey>) -> Self {
        Self::new(KeyOrigin::Value(key), previous)
    }

    /// A key whose text comes from `cell` (a file or a provider of [`Kind::Key`]).
    pub(crate) fn text(
        alg: crate::JwsAlgorithm,
        cell: SecretCell,
        previous: Option<crate::SigningKey>,
    ) -> Self {
        Self::new(KeyOrigin::Text { alg, cell }, previous)
    }

    fn new(origin: KeyOrigin, previous: Option<crate::SigningKey>) -> Self {
        Self {
            origin,
            previous,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyState> {
        // Plain data, consistent after every statement (see `SecretCell::lock`).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the key comes from when it can change, for the fleet's identity.
    #[cfg(feature = "fleet")]
    pub(crate) fn rotates(&self) -> Option<String> {
        match &self.origin {
            KeyOrigin::Value(_) => None,
            KeyOrigin::Text { cell, .. } => cell.rotates(),
        }
    }

    /// The key as it was given, when it does not rotate.
    #[cfg(feature = "fleet")]
    pub(crate) fn fixed(&self) -> Option<&crate::SigningKey> {
        match &self.origin {
            KeyOrigin::Value(key) => Some(key),
            KeyOrigin::Text { .. } => None,
        }
    }

    /// The key parsed from `text` (parsed once per text).
    fn parse(
        &self,
        alg: crate::JwsAlgorithm,
        text: ClientSecret,
    ) -> Result<crate::SigningKey, Error> {
        let mut state = self.lock();
        if let Some((seen, key)) = &state.parsed {
            if *seen == text {
                return Ok(key.clone());
            }
        }
        // The cell checked the text parses; a failure here is kept as an error all the same.
        let key = parse_key(alg, text.expose_secret()).map_err(|reason| Error::Credential {
            origin: Arc::from("signing key"),
            reason: Arc::from(reason),
        })?;
        state.parsed = Some((text, key.clone()));
        Ok(key)
    }

    /// What the next assertion is signed with: the previous key if it is the one that worked
    /// last, else the current one (read again from its file or provider as a secret is).
    pub(crate) async fn current(&self) -> Result<crate::SigningKey, Error> {
        if let Some(previous) = self.previous.as_ref().filter(|_| self.lock().use_previous) {
            return Ok(previous.clone());
        }
        match &self.origin {
            KeyOrigin::Value(key) => Ok(key.clone()),
            KeyOrigin::Text { alg, cell } => {
                let text = cell.current().await?;
                self.parse(*alg, text)
            }
        }
    }

    /// After `invalid_client` to an assertion signed with `refused`: the key to sign with once
    /// more (a new one read again, else the other of current and previous), or nothing.
    pub(crate) async fn after_refusal(
        &self,
        refused: &crate::SigningKey,
    ) -> Option<crate::SigningKey> {
        let same = |a: &crate::SigningKey, b: &crate::SigningKey| a.thumbprint() == b.thumbprint();
        let current = match &self.origin {
            KeyOrigin::Value(key) => key.clone(),
            KeyOrigin::Text { alg, cell } => {
                let sent = self.lock().parsed.as_ref().map(|(text, _)| text.clone());
                let text = match sent {
                    Some(text) => cell.after_refusal(&text).await.unwrap_or(text),
                    None => cell.current().await.ok()?,
                };
                self.parse(*alg, text).ok()?
            }
        };
        if !same(&current, refused) {
            self.lock().use_previous = false;
            return Some(current);
        }
        let previous = self.previous.clone().filter(|p| !same(p, refused))?;
        self.lock().use_previous = true;
        tracing::info!("the token endpoint refused the assertion signed with the current key; signing with the previous one (rotation window)");
        Some(previous)
    }
}

#[cfg(feature = "jwt")]
impl fmt::Debug for KeyCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SigningKeyCell");
        match &self.origin {
            KeyOrigin::Value(key) => d.field("key", key),
            KeyOrigin::Text { cell, .. } => d.field("from", cell),
        };
        d.field("previous", &self.previous).finish()
    }
}

impl fmt::Debug for SecretCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct(match self.kind {
            Kind::Secret => "ClientSecret",
            Kind::Assertion => "ClientAssertion",
            #[cfg(feature = "jwt")]
            Kind::Key(_) => "SigningKey",
        });
        match &self.origin {
            Origin::Value(_) => d.field("value", &"[redacted]"),
            Origin::File { path, .. } => d.field("file", path),
            Origin::Env(name) => d.field("env", name),
            Origin::Provider(_) => d.field("provider", &"[yours]"),
        };
        d.field("previous", &self.previous.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str) {
        // Written beside, then renamed into place: as Kubernetes and Vault agent do.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "cc-rotation-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn secret(s: &str) -> ClientSecret {
        ClientSecret::new(s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_taken_at_the_first_look_after_the_check_interval() {
        let dir = dir();
        let path = dir.join("secret");
        write(&path, "one\n");
        let counters = Arc::new(Counters::default());
        let cell = SecretCell::file(
            Kind::Secret,
            path.clone(),
            Duration::from_secs(10),
            None,
            Arc::clone(&counters),
        )
        .unwrap();
        assert_eq!(cell.current().await.unwrap(), secret("one"));
        write(&path, "two");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            cell.current().await.unwrap(),
            secret("one"),
            "not looked at within the interval"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cell.current().await.unwrap(), secret("two"));
        let stats = counters.snapshot();
        assert_eq!(
            (stats.credentials_reloaded, stats.credential_errors),
            (1, 0)
        );
        // The same content written again is no rotation.
        write(&path, "two\n");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(cell.current().await.unwrap(), secret("two"));
        assert_eq!(counters.snapshot().credentials_reloaded, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_reads_the_file_at_once_and_a_bad_read_keeps_the_last_good_value() {
        let dir = dir();
        let path = dir.join("secret");
        write(&path, "one");
        let counters = Arc::new(Counters::default());
        let cell = SecretCell::file(
            Kind::Secret,
            path.clone(),
            Duration::from_secs(3600),
            None,
            Arc::clone(&counters),
        )
        .unwrap();
        write(&path, "two");
        assert_eq!(cell.current().await.unwrap(), secret("one"), "interval");
        assert_eq!(
            cell.after_refusal(&secret("one")).await,
            Some(secret("two"))
        );
        assert_eq!(cell.current().await.unwrap(), secret("two"));
        // Refused again with no change and no previous secret: nothing else to try.
        assert_eq!(cell.after_refusal(&secret("two")).await, None);
        for broken in ["", "\n"] {
            write(&path, broken);
            assert_eq!(cell.after_refusal(&secret("two")).await, None);
            assert_eq!(cell.current().await.unwrap(), secret("two"));
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(cell.after_refusal(&secret("two")).await, None);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(cell.current().await.unwrap(), secret("two"), "removed");
        let stats = counters.snapshot();
        assert_eq!(
            (stats.credentials_reloaded, stats.credential_errors),
            (1, 4)
        );
        write(&path, "three");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(cell.current().await.unwrap(), secret("three"), "back");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn files_everyone_may_write_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = dir();
        let path = dir.join("secret");
        write(&path, "hunter2-one");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = SecretCell::file(
            Kind::Secret,
            path.clone(),
            Duration::ZERO,
            None,
            Arc::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("writable by every user"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let counters = Arc::new(Counters::default());
        let cell = SecretCell::file(
            Kind::Secret,
            path.clone(),
            Duration::ZERO,
            None,
            Arc::clone(&counters),
        )
        .unwrap();
        write(&path, "planted");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o646)).unwrap();
        assert_eq!(
            cell.current().await.unwrap(),
            secret("hunter2-one"),
            "not taken"
        );
        assert_eq!(counters.snapshot().credential_errors, 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_that_are_no_secret_are_refused_without_showing_them() {
        let dir = dir();
        let cases: [(&str, &[u8], &str); 4] = [
            ("empty", b"", "empty"),
            ("newline", b"\r\n", "empty"),
            ("binary", b"\xff\xfe-not-text", "not UTF-8 text"),
            ("large", &[b'x'; 64 * 1024 + 1], "larger than 65536 bytes"),
        ];
        for (name, content, reason) in cases {
            let path = dir.join(name);
            std::fs::write(&path, content).unwrap();
            assert_eq!(
                read_file(&path, Kind::Secret).unwrap_err(),
                reason,
                "{name}"
            );
        }
        let path = dir.join("exact");
        std::fs::write(&path, vec![b'y'; 64 * 1024]).unwrap();
        assert_eq!(
            read_file(&path, Kind::Secret)
                .unwrap()
                .expose_secret()
                .len(),
            64 * 1024
        );
        std::fs::write(&path, "a\r\n\n").unwrap();
        assert_eq!(
            read_file(&path, Kind::Secret).unwrap(),
            secret("a\r\n"),
            "one line break"
        );
        assert_eq!(
            read_file(&dir, Kind::Secret).unwrap_err(),
            "not a regular file"
        );
        assert_eq!(
            read_file(&dir.join("absent"), Kind::Secret).unwrap_err(),
            "entity not found"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_previous_secret_is_tried_once_and_then_sent_first_until_the_current_changes() {
        let cell = SecretCell::value(secret("new"), Some(secret("old")));
        assert_eq!(cell.current().await.unwrap(), secret("new"));
        assert_eq!(
            cell.after_refusal(&secret("new")).await,
            Some(secret("old"))
        );
        assert_eq!(cell.current().await.unwrap(), secret("old"), "what worked");
        // The previous one refused too (the server moved on): back to the current one.
        assert_eq!(
            cell.after_refusal(&secret("old")).await,
            Some(secret("new"))
        );
        assert_eq!(cell.current().await.unwrap(), secret("new"));
        let alone = SecretCell::value(secret("only"), None);
        assert_eq!(alone.after_refusal(&secret("only")).await, None);
        let debug = format!("{cell:?}");
        assert!(!debug.contains("new") && !debug.contains("old"), "{debug}");
    }

    struct Provider(
        Mutex<Vec<Result<ClientSecret, Error>>>,
        std::sync::atomic::AtomicUsize,
    );

    impl CredentialProvider for Provider {
        fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { next })
        }
    }

    #[tokio::test]
    async fn a_provider_is_asked_once_and_again_after_a_refusal() {
        let provider = Arc::new(Provider(
            Mutex::new(vec![
                Err(Error::from_source("the vault is sealed")),
                Ok(secret("one")),
                Ok(secret("two")),
                Err(Error::from_source("the vault is sealed")),
                Ok(secret("")),
                Ok(secret("two")),
            ]),
            Default::default(),
        ));
        let counters = Arc::new(Counters::default());
        let cell =
            SecretCell::provider(Kind::Secret, provider.clone(), None, Arc::clone(&counters));
        let error = cell.current().await.unwrap_err();
        assert!(matches!(error, Error::Source(_)), "{error:?}");
        assert_eq!(cell.current().await.unwrap(), secret("one"));
        assert_eq!(cell.current().await.unwrap(), secret("one"), "not asked");
        assert_eq!(provider.1.load(Ordering::SeqCst), 2);
        assert_eq!(
            cell.after_refusal(&secret("one")).await,
            Some(secret("two"))
        );
        assert_eq!(cell.after_refusal(&secret("two")).await, None, "failed");
        assert_eq!(cell.after_refusal(&secret("two")).await, None, "empty");
        assert_eq!(cell.current().await.unwrap(), secret("two"));
        assert_eq!(cell.after_refusal(&secret("two")).await, None, "same");
        let stats = counters.snapshot();
        assert_eq!(
            (stats.credentials_reloaded, stats.credential_errors),
            (1, 3)
        );
    }

    /// An unsigned JWT with these claims (the client never checks the signature).
    fn jwt(claims: serde_json::Value) -> String {
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.c2ln",
            b64(&serde_json::json!({"alg": "RS256", "kid": "k"})),
            b64(&claims)
        )
    }

    fn unix_now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn only_a_jwt_with_an_exp_is_an_assertion() {
        let exp = unix_now() + 600;
        assert_eq!(
            jwt_expiry(&jwt(
                serde_json::json!({"exp": exp, "sub": "system:serviceaccount:a:b"})
            )),
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(exp))
        );
        let cases = [
            (
                "a.b".to_owned(),
                "not a JWT (three base64url parts separated by dots)",
            ),
            (
                "a.b.c.d".to_owned(),
                "not a JWT (three base64url parts separated by dots)",
            ),
            (
                "a.!!.c".to_owned(),
                "not a JWT (its payload is not base64url)",
            ),
            (
                "a.bm90IGpzb24.c".to_owned(),
                "not a JWT (its payload is not a JSON object)",
            ),
            (
                jwt(serde_json::json!({"sub": "x"})),
                "the JWT has no exp claim (RFC 7523 §3 requires one)",
            ),
            (
                jwt(serde_json::json!({"exp": "soon"})),
                "the JWT has no exp claim (RFC 7523 §3 requires one)",
            ),
            (
                jwt(serde_json::json!({"exp": -5})),
                "the JWT has no exp claim (RFC 7523 §3 requires one)",
            ),
            (
                jwt(serde_json::json!({"exp": u64::MAX})),
                "the JWT's exp is out of range",
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(jwt_expiry(&value).unwrap_err(), reason, "{value}");
            assert_eq!(Kind::Assertion.check(&value).unwrap_err(), reason);
            assert_eq!(Kind::Secret.check(&value), Ok(()), "any text is a secret");
        }
        assert_eq!(Kind::Assertion.check("").unwrap_err(), "empty");
    }

    #[tokio::test]
    async fn an_expired_assertion_is_never_sent_and_one_about_to_expire_is_read_again() {
        let dir = dir();
        let path = dir.join("token");
        let fresh = jwt(serde_json::json!({"exp": unix_now() + 3600, "n": 1}));
        write(&path, &fresh);
        let counters = Arc::new(Counters::default());
        let cell = SecretCell::file(
            Kind::Assertion,
            path.clone(),
            Duration::from_secs(3600),
            None,
            Arc::clone(&counters),
        )
        .unwrap();
        assert_eq!(cell.current().await.unwrap().expose_secret(), fresh);
        // Expired on disk (the platform stopped renewing it): an error naming the file.
        let expired = jwt(serde_json::json!({"exp": unix_now() - 30, "n": 2}));
        write(&path, &expired);
        assert_eq!(
            cell.after_refusal(&ClientSecret::new(fresh.clone())).await,
            None
        );
        let error = cell.current().await.unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::Credential { .. }), "{error:?}");
        assert!(text.starts_with("client assertion file "), "{text}");
        assert!(
            text.contains("token: the JWT expired") && text.contains("it is not sent"),
            "{text}"
        );
        assert!(!text.contains(&expired) && !text.contains(&fresh), "{text}");
        // Under a minute left: read again before the interval, and the renewed one taken.
        let short = jwt(serde_json::json!({"exp": unix_now() + 30, "n": 3}));
        write(&path, &short);
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(cell.current().await.unwrap().expose_secret(), short);
        let renewed = jwt(serde_json::json!({"exp": unix_now() + 3600, "n": 4}));
        write(&path, &renewed);
        assert_eq!(
            cell.current().await.unwrap().expose_secret(),
            renewed,
            "read again within the interval: under a minute was left"
        );
        assert_eq!(counters.snapshot().credentials_reloaded, 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_assertion_provider_is_asked_again_when_its_jwt_is_about_to_expire() {
        let soon = jwt(serde_json::json!({"exp": unix_now() + 30}));
        let later = jwt(serde_json::json!({"exp": unix_now() + 600}));
        let provider = Arc::new(Provider(
            Mutex::new(vec![
                Ok(secret("not-a-jwt")),
                Ok(ClientSecret::new(soon.clone())),
                Ok(ClientSecret::new(later.clone())),
            ]),
            Default::default(),
        ));
        let cell = SecretCell::provider(Kind::Assertion, provider.clone(), None, Arc::default());
        let error = cell.current().await.unwrap_err();
        assert!(error.to_string().contains("not a JWT"), "{error}");
        assert!(!error.to_string().contains("not-a-jwt"), "{error}");
        assert_eq!(cell.current().await.unwrap().expose_secret(), soon);
        assert_eq!(cell.current().await.unwrap().expose_secret(), later);
        assert_eq!(
            cell.current().await.unwrap().expose_secret(),
            later,
            "not asked"
        );
        assert_eq!(provider.1.load(Ordering::SeqCst), 3);
    }

    /// What can happen to a secret file between token requests, and the token requests.
    #[derive(Debug, Clone)]
    enum Step {
        /// A new secret renamed into place (as Kubernetes and Vault agent write).
        Rotate(u8),
        /// Rewritten in place with nothing (a writer that truncates first).
        Empty,
        Remove,
        /// A secret planted in a file everyone may write.
        Planted(u8),
        Advance(u64),
        Fetch,
        /// The token endpoint refuses what the last fetch sent.
        Refused,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..4).prop_map(Step::Rotate),
            Just(Step::Empty),
            Just(Step::Remove),
            (0u8..4).prop_map(Step::Planted),
            (0u64..3).prop_map(Step::Advance),
            Just(Step::Fetch),
            Just(Step::Fetch),
            Just(Step::Refused),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 128, ..Default::default() })]

        /// No sequence of file states makes a token request carry an empty secret, a value
        /// never validly on disk, or a secret staler than one check interval (a refusal reads
        /// the file at once).
        #[test]
        fn no_file_history_sends_an_empty_or_stale_secret(steps in proptest::collection::vec(step(), 1..40)) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let dir = dir();
                let path = dir.join("secret");
                let interval = Duration::from_secs(1);
                write(&path, "secret-initial");
                let cell = SecretCell::file(Kind::Secret, path.clone(), interval, None, Arc::default()).unwrap();
                // What the file validly holds now (None: it does not), since when, and every
                // value it ever validly held.
                let mut on_disk: Option<(String, Instant)> = Some(("secret-initial".into(), Instant::now()));
                let mut ever = vec!["secret-initial".to_owned()];
                let mut last_sent: Option<ClientSecret> = None;
                let check = |sent: &ClientSecret, on_disk: &Option<(String, Instant)>, ever: &[String], fresh: bool| {
                    let sent = sent.expose_secret();
                    assert!(!sent.is_empty(), "an empty secret");
                    assert!(ever.iter().any(|v| v == sent), "never on disk: {sent}");
                    if let Some((value, since)) = on_disk {
                        if fresh || since.elapsed() >= interval {
                            assert_eq!(sent, value, "stale by more than one check interval");
                        }
                    }
                };
                for step in steps {
                    match step {
                        Step::Rotate(n) => {
                            let value = format!("secret-{n}");
                            write(&path, &value);
                            on_disk = Some((value.clone(), Instant::now()));
                            ever.push(value);
                        }
                        Step::Empty => {
                            std::fs::write(&path, "").unwrap();
                            on_disk = None;
                        }
                        Step::Remove => {
                            let _ = std::fs::remove_file(&path);
                            on_disk = None;
                        }
                        Step::Planted(n) => {
                            use std::os::unix::fs::PermissionsExt as _;
                            write(&path, &format!("planted-{n}"));
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
                            on_disk = None;
                        }
                        Step::Advance(secs) => tokio::time::advance(Duration::from_millis(secs * 700)).await,
                        Step::Fetch => {
                            let sent = cell.current().await.unwrap();
                            check(&sent, &on_disk, &ever, false);
                            last_sent = Some(sent);
                        }
                        Step::Refused => {
                            if let Some(refused) = last_sent.take() {
                                if let Some(other) = cell.after_refusal(&refused).await {
                                    assert_ne!(other, refused);
                                    check(&other, &on_disk, &ever, true);
                                    last_sent = Some(other);
                                } else if let Some((value, _)) = &on_disk {
                                    assert_eq!(refused.expose_secret(), value, "a new secret on disk was not tried");
                                }
                            }
                        }
                    }
                }
                std::fs::remove_dir_all(dir).unwrap();
            });
        }
    }

    /// What a fleet's store key is made of: a key file by its path (so members share across a
    /// rotation), a key given as a value by itself.
    #[cfg(all(feature = "jwt", feature = "fleet"))]
    #[test]
    fn a_rotating_key_is_named_by_its_file_and_a_fixed_one_is_itself() {
        let dir = dir();
        let path = dir.join("key.pem");
        let pem = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/keys/ec_pkcs8.pem"
        ))
        .unwrap();
        write(&path, &pem);
        let alg = crate::JwsAlgorithm::Es256;
        let file = SecretCell::file(
            Kind::Key(alg),
            path.clone(),
            Duration::ZERO,
            None,
            Arc::default(),
        )
        .unwrap();
        let rotating = KeyCell::text(alg, file, None);
        assert_eq!(
            rotating.rotates(),
            Some(format!("signing key file {}", path.display()))
        );
        assert!(rotating.fixed().is_none());
        let shown = format!("{rotating:?}");
        assert!(
            shown.starts_with("SigningKeyCell { from: SigningKey { file: "),
            "{shown}"
        );
        assert!(
            shown.contains("key.pem") && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
        let key = crate::SigningKey::from_pem(alg, &pem).unwrap();
        let fixed = KeyCell::value(key.clone(), None);
        assert_eq!(fixed.rotates(), None);
        assert_eq!(
            fixed.fixed().map(|k| k.thumbprint()),
            Some(key.thumbprint())
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
