//! Client secrets that change while the process runs: read from a file, which is read again
//! when it changes, or asked of a [`CredentialProvider`] of the user's own (a secret manager),
//! which is asked again when the token endpoint refuses the client; and the previous secret of a
//! rotation window, tried once when the current one is refused.
//!
//! Only token requests read a secret, so none of this is on the per-request path: a cache hit
//! never looks at the file.
//!
//! One concept, one type: [`SecretCell`] holds where the secret comes from and the last good
//! value. [`SecretCell::current`] is what the next token request sends;
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

/// How often a credential file is looked at (its modification time and size), at most: before a
/// token request, and only when this long has passed since the last look (1 s). A token
/// endpoint answering `invalid_client` makes the next look immediate.
pub const DEFAULT_FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The largest credential file read (64 KiB): a secret, a key or a JWT is far smaller; a
/// larger file is someone else's.
const MAX_FILE_BYTES: u64 = 64 * 1024;

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

/// Where the client secret comes from, and the last good value.
pub(crate) struct SecretCell {
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
    Provider(Arc<dyn CredentialProvider>),
}

#[derive(Default)]
struct State {
    /// The last good value read from the file or the provider.
    current: Option<ClientSecret>,
    /// When the file was last looked at.
    checked_at: Option<Instant>,
    /// The file's modification time and size when it was last read.
    stamp: Option<(SystemTime, u64)>,
    /// The previous secret worked where the current one was refused: send it first.
    use_previous: bool,
}

impl SecretCell {
    /// A secret given as a value.
    pub(crate) fn value(secret: ClientSecret, previous: Option<ClientSecret>) -> Self {
        Self::new(Origin::Value(secret), previous, Arc::default())
    }

    /// A secret read from `path` now (a file that cannot be used is a configuration error), and
    /// again when it changes.
    pub(crate) fn file(
        path: PathBuf,
        check_interval: Duration,
        previous: Option<ClientSecret>,
        counters: Arc<Counters>,
    ) -> Result<Self, crate::ConfigError> {
        let (secret, stamp) = read_file(&path).map_err(|reason| {
            crate::ConfigError::CredentialFile(format!("{}: {reason}", path.display()))
        })?;
        let cell = Self::new(
            Origin::File {
                path,
                check_interval,
            },
            previous,
            counters,
        );
        cell.lock().current = Some(secret);
        cell.lock().stamp = Some(stamp);
        Ok(cell)
    }

    /// A secret asked of `provider` when first needed.
    pub(crate) fn provider(
        provider: Arc<dyn CredentialProvider>,
        previous: Option<ClientSecret>,
        counters: Arc<Counters>,
    ) -> Self {
        Self::new(Origin::Provider(provider), previous, counters)
    }

    fn new(origin: Origin, previous: Option<ClientSecret>, counters: Arc<Counters>) -> Self {
        Self {
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

    /// Whether the secret can change while the process runs (a file or a provider).
    #[cfg(feature = "fleet")]
    pub(crate) fn rotates(&self) -> Option<String> {
        match &self.origin {
            Origin::Value(_) => None,
            Origin::File { path, .. } => Some(format!("file {}", path.display())),
            Origin::Provider(_) => Some("provider".to_owned()),
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
    /// last, else the current one (the file looked at again if its check interval has passed;
    /// the provider asked if it has not given a value yet).
    pub(crate) async fn current(&self) -> Result<ClientSecret, Error> {
        if let Some(previous) = self.previous.as_ref().filter(|_| self.lock().use_previous) {
            return Ok(previous.clone());
        }
        match &self.origin {
            Origin::Value(secret) => Ok(secret.clone()),
            Origin::File {
                path,
                check_interval,
            } => {
                let mut state = self.lock();
                let due = state
                    .checked_at
                    .is_none_or(|at| at.elapsed() >= *check_interval);
                if due {
                    self.look(path, &mut state, false);
                }
                state.current.clone().ok_or_else(|| unreachable_empty(path))
            }
            Origin::Provider(provider) => {
                let current = self.lock().current.clone();
                match current {
                    Some(secret) => Ok(secret),
                    None => self.ask(provider).await,
                }
            }
        }
    }

    /// After the token endpoint answered `invalid_client` to `refused`: the value to send once
    /// more, if there is another one. The file is read again (whatever its check interval) or
    /// the provider asked again; a new value is the answer; else the other of the current and
    /// the previous secret, if there is a previous one; else nothing.
    pub(crate) async fn after_refusal(&self, refused: &ClientSecret) -> Option<ClientSecret> {
        let current = match &self.origin {
            Origin::Value(secret) => Some(secret.clone()),
            Origin::File { path, .. } => {
                let mut state = self.lock();
                self.look(path, &mut state, true);
                state.current.clone()
            }
            Origin::Provider(provider) => match self.ask(provider).await {
                Ok(secret) => Some(secret),
                Err(_) => self.lock().current.clone(),
            },
        }?;
        if current != *refused {
            self.lock().use_previous = false;
            return Some(current);
        }
        let previous = self.previous.clone().filter(|p| p != refused)?;
        self.lock().use_previous = true;
        tracing::info!("the token endpoint refused the current client secret; trying the previous one (rotation window)");
        Some(previous)
    }

    /// Looks at the file: reads it when its modification time or size changed (or `force`),
    /// and takes its content when it differs from the last good value. A read that fails keeps
    /// the last good value, and is counted and logged.
    fn look(&self, path: &Path, state: &mut State, force: bool) {
        state.checked_at = Some(Instant::now());
        let changed = match std::fs::metadata(path) {
            Ok(meta) => force || state.stamp != Some(stamp_of(&meta)),
            // A missing file is read, so the failure is reported.
            Err(_) => true,
        };
        if !changed {
            return;
        }
        match read_file(path) {
            Ok((secret, stamp)) => {
                state.stamp = Some(stamp);
                if state.current.as_ref() != Some(&secret) {
                    state.current = Some(secret);
                    state.use_previous = false;
                    self.counters
                        .credentials_reloaded
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(file = %path.display(), "the client secret file changed; the next token request sends the new secret");
                }
            }
            Err(reason) => {
                // Looked at again at the next check, not at every token request.
                state.stamp = None;
                self.counters
                    .credential_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %path.display(), %reason, "the client secret file could not be read; keeping the last good secret");
            }
        }
    }

    /// Asks the provider; a failure keeps the last good value (and is counted and logged), and
    /// is the answer only when there is none.
    async fn ask(&self, provider: &Arc<dyn CredentialProvider>) -> Result<ClientSecret, Error> {
        match provider.credential().await {
            Ok(secret) if !secret.expose_secret().is_empty() => {
                let mut state = self.lock();
                if state.current.as_ref() != Some(&secret) {
                    if state.current.is_some() {
                        self.counters
                            .credentials_reloaded
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!("the client secret provider gave a new secret");
                    }
                    state.current = Some(secret.clone());
                    state.use_previous = false;
                }
                Ok(secret)
            }
            result => {
                let error = result.err().unwrap_or_else(|| {
                    Error::from_source("the client secret provider gave an empty secret")
                });
                self.counters
                    .credential_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "the client secret provider failed; keeping the last good secret");
                self.lock().current.clone().ok_or(error)
            }
        }
    }
}

/// A file cell always holds a value (the first read is at build time); kept as an error, not
/// a panic, all the same.
fn unreachable_empty(path: &Path) -> Error {
    Error::from_source(format!(
        "no client secret was ever read from {}",
        path.display()
    ))
}

fn stamp_of(meta: &std::fs::Metadata) -> (SystemTime, u64) {
    (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    )
}

/// Reads a credential file: at most [`MAX_FILE_BYTES`], not writable by everyone, UTF-8, one
/// trailing line break removed, not empty. The reason of a failure never shows the content.
pub(crate) fn read_file(path: &Path) -> Result<(ClientSecret, (SystemTime, u64)), String> {
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
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(text);
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    Ok((ClientSecret::new(text), stamp_of(&meta)))
}

impl fmt::Debug for SecretCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ClientSecret");
        match &self.origin {
            Origin::Value(_) => d.field("value", &"[redacted]"),
            Origin::File { path, .. } => d.field("file", path),
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
        let error = SecretCell::file(path.clone(), Duration::ZERO, None, Arc::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("writable by every user"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let counters = Arc::new(Counters::default());
        let cell =
            SecretCell::file(path.clone(), Duration::ZERO, None, Arc::clone(&counters)).unwrap();
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
            assert_eq!(read_file(&path).unwrap_err(), reason, "{name}");
        }
        let path = dir.join("exact");
        std::fs::write(&path, vec![b'y'; 64 * 1024]).unwrap();
        assert_eq!(read_file(&path).unwrap().0.expose_secret().len(), 64 * 1024);
        std::fs::write(&path, "a\r\n\n").unwrap();
        assert_eq!(
            read_file(&path).unwrap().0,
            secret("a\r\n"),
            "one line break"
        );
        assert_eq!(read_file(&dir).unwrap_err(), "not a regular file");
        assert_eq!(
            read_file(&dir.join("absent")).unwrap_err(),
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
        let cell = SecretCell::provider(provider.clone(), None, Arc::clone(&counters));
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
}
