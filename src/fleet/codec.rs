//! What a fleet stores for a token: a versioned record, encrypted with AES-256-GCM under the
//! fleet's key, with the store key's name as associated data.
//!
//! ```text
//! encrypted: 0x01 | key id length (1 byte) | key id | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! plaintext: 0x00 | record (JSON)
//! ```
//!
//! The associated data binds a value to the store key it was written under and to the key id,
//! so a value copied to another store key (another client, other scopes) fails to open and
//! counts as a miss. A value that does not open, does not parse, is of an unknown version or
//! is larger than [`MAX_VALUE_LEN`] is a miss too: the fleet replaces it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::source::TokenType;
use crate::{AccessToken, ConfigError, Token};

/// The largest value read or written (a token endpoint's answer is at most 64 KiB by default;
/// a value holds one token and a few numbers).
pub(crate) const MAX_VALUE_LEN: usize = 96 * 1024;

const PLAINTEXT: u8 = 0;
const AES_256_GCM_V1: u8 = 1;
const TAG_LEN: usize = 16;
const RECORD_VERSION: u8 = 1;
/// The longest key id.
const MAX_KEY_ID_LEN: usize = 64;

/// A 256-bit key that encrypts the tokens a fleet stores, with the id that names it in every
/// value (so a fleet can rotate keys: see [`Fleet::decryption_key`](super::Fleet::decryption_key)).
///
/// Every process of a fleet needs the same key: read it from your secret manager. `Debug`
/// shows the id only.
///
/// ```
/// use client_credentials::EncryptionKey;
///
/// let key = EncryptionKey::from_base64("2026-12", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")?;
/// assert_eq!(key.id(), "2026-12");
/// assert!(!format!("{key:?}").contains("AQID"));
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct EncryptionKey {
    id: Arc<str>,
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// A key from its 32 bytes. The id (1 to 64 characters of `A-Z a-z 0-9 . _ -`) names it in
    /// stored values; give each key a new one.
    pub fn new(id: impl Into<String>, key: &[u8]) -> Result<Self, ConfigError> {
        let id = id.into();
        let id_ok = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(ConfigError::InvalidFleet(format!(
                "an encryption key id is 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 . _ -"
            )));
        }
        if key.len() != 32 {
            return Err(ConfigError::InvalidFleet(format!(
                "encryption key `{id}` is {} bytes; AES-256 needs 32",
                key.len()
            )));
        }
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| {
            ConfigError::InvalidFleet(format!("encryption key `{id}` could not be loaded"))
        })?;
        Ok(Self {
            id: Arc::from(id),
            key: Arc::new(LessSafeKey::new(key)),
        })
    }

    /// A key from its 32 bytes in base64 (standard or URL-safe, padded or not), as
    /// `openssl rand -base64 32` prints one.
    pub fn from_base64(id: impl Into<String>, key: &str) -> Result<Self, ConfigError> {
        use base64::Engine as _;
        let id = id.into();
        let text = key.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map(Zeroizing::new)
            .map_err(|_| {
                ConfigError::InvalidFleet(format!("encryption key `{id}` is not base64"))
            })?;
        Self::new(id, &bytes)
    }

    /// The key's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The token and its schedule, as stored (before encryption).
#[derive(Serialize, Deserialize)]
struct Record {
    /// The record's version.
    v: u8,
    /// The access token.
    token: String,
    /// `Bearer` or `DPoP`.
    #[serde(rename = "type")]
    token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// For a DPoP-bound token, the thumbprint of its key.
    #[serde(skip_serializing_if = "Option::is_none")]
    jkt: Option<String>,
    /// The token's lifetime as the writer's cache read it, in milliseconds.
    lifetime_ms: u64,
    /// When its refresh is due, in milliseconds after it was requested.
    refresh_ms: u64,
}

impl Drop for Record {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.token.zeroize();
    }
}

/// A token read from the store, and its schedule.
pub(crate) struct Opened {
    pub(crate) token: Token,
    pub(crate) lifetime: Duration,
    pub(crate) refresh_in: Duration,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("lifetime", &self.lifetime)
            .field("refresh_in", &self.refresh_in)
            .finish_non_exhaustive()
    }
}

/// Seals and opens stored values.
#[derive(Debug, Clone)]
pub(crate) enum Codec {
    /// Encrypt with the first key; open with any (rotation).
    Encrypted(Vec<EncryptionKey>),
    /// The explicit opt-out.
    Plaintext,
}

impl Codec {
    /// The stored value of `token` (its lifetime and refresh point) under the store key `name`.
    pub(crate) fn seal(
        &self,
        name: &str,
        token: &Token,
        lifetime: Duration,
        refresh_in: Duration,
    ) -> Option<Vec<u8>> {
        let record = Record {
            v: RECORD_VERSION,
            token: token.access_token.secret().to_owned(),
            token_type: token.token_type.scheme().to_owned(),
            scope: token.scope.clone(),
            jkt: token.dpop_jkt.as_deref().map(str::to_owned),
            lifetime_ms: millis(lifetime),
            refresh_ms: millis(refresh_in),
        };
        let json = Zeroizing::new(serde_json::to_vec(&record).ok()?);
        let value = match self {
            Codec::Plaintext => {
                let mut value = Vec::with_capacity(1 + json.len());
                value.push(PLAINTEXT);
                value.extend_from_slice(&json);
                value
            }
            Codec::Encrypted(keys) => {
                let key = keys.first()?;
                let mut nonce = [0u8; NONCE_LEN];
                aws_lc_rs::rand::fill(&mut nonce).ok()?;
                let mut sealed = Zeroizing::new(json.to_vec());
                key.key
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad(name, &key.id)),
                        &mut *sealed,
                    )
                    .ok()?;
                let mut value = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + sealed.len());
                value.push(AES_256_GCM_V1);
                // The id is at most 64 bytes (checked in `EncryptionKey::new`).
                value.push(u8::try_from(key.id.len()).ok()?);
                value.extend_from_slice(key.id.as_bytes());
                value.extend_from_slice(&nonce);
                value.extend_from_slice(&sealed);
                value
            }
        };
        (value.len() <= MAX_VALUE_LEN).then_some(value)
    }

    /// The token in a stored value read under the store key `name`, or `None` for anything
    /// that is not one this fleet wrote there.
    pub(crate) fn open(&self, name: &str, value: &[u8]) -> Option<Opened> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let (&format, rest) = value.split_first()?;
        let json: Zeroizing<Vec<u8>> = match (self, format) {
            (Codec::Plaintext, PLAINTEXT) => Zeroizing::new(rest.to_vec()),
            (Codec::Encrypted(keys), AES_256_GCM_V1) => {
                let (&id_len, rest) = rest.split_first()?;
                let id_len = usize::from(id_len);
                if rest.len() < id_len + NONCE_LEN + TAG_LEN {
                    return None;
                }
                let (id, rest) = rest.split_at(id_len);
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                let key = keys.iter().find(|k| k.id.as_bytes() == id)?;
                let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
                let mut buffer = Zeroizing::new(sealed.to_vec());
                let plain = key
                    .key
                    .open_in_place(nonce, Aad::from(aad(name, &key.id)), &mut buffer)
                    .ok()?;
                Zeroizing::new(plain.to_vec())
            }
            _ => return None,
        };
        let record: Record = serde_json::from_slice(&json).ok()?;
        if record.v != RECORD_VERSION {
            return None;
        }
        let token_type = match record.token_type.as_str() {
            "Bearer" => TokenType::Bearer,
            "DPoP" => TokenType::Dpop,
            _ => return None,
        };
        let lifetime = Duration::from_millis(record.lifetime_ms);
        let refresh_in = Duration::from_millis(record.refresh_ms);
        let mut token = Token::new(AccessToken::new(record.token.clone()), Some(lifetime));
        token.token_type = token_type;
        token.scope = record.scope.clone();
        token.dpop_jkt = record.jkt.as_deref().map(Arc::from);
        Some(Opened {
            token,
            lifetime,
            refresh_in,
        })
    }
}

/// What a value is bound to: its format, the store key's name and the encryption key's id.
fn aad(name: &str, key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(40 + name.len() + key_id.len());
    aad.extend_from_slice(b"client-credentials fleet value v1\0");
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey::new(id, &[byte; 32]).unwrap()
    }

    fn token(value: &str) -> Token {
        let mut token = Token::new(AccessToken::new(value), Some(Duration::from_secs(3600)));
        token.scope = Some("a b".into());
        token
    }

    fn sealed(codec: &Codec, name: &str) -> Vec<u8> {
        codec
            .seal(
                name,
                &token("tok-secret-1"),
                Duration::from_secs(3600),
                Duration::from_secs(2700),
            )
            .unwrap()
    }

    #[test]
    fn a_value_opens_under_its_name_with_its_schedule() {
        let codec = Codec::Encrypted(vec![key("k1", 7)]);
        let value = sealed(&codec, "{cc:x}:token");
        let opened = codec.open("{cc:x}:token", &value).unwrap();
        assert_eq!(opened.token.access_token.secret(), "tok-secret-1");
        assert_eq!(opened.token.scope.as_deref(), Some("a b"));
        assert_eq!(opened.token.token_type, TokenType::Bearer);
        assert_eq!(opened.lifetime, Duration::from_secs(3600));
        assert_eq!(opened.refresh_in, Duration::from_secs(2700));
        // No plaintext token in the value.
        assert!(!value
            .windows(b"tok-secret-1".len())
            .any(|w| w == b"tok-secret-1"));
        assert_eq!(value[0], AES_256_GCM_V1);
    }

    #[test]
    fn values_that_are_not_ours_there_are_misses() {
        let codec = Codec::Encrypted(vec![key("k1", 7)]);
        let value = sealed(&codec, "{cc:x}:token");
        // Copied to another key.
        assert!(codec.open("{cc:y}:token", &value).is_none());
        // Any byte flipped, truncated anywhere.
        for i in 0..value.len() {
            let mut bad = value.clone();
            bad[i] ^= 0x01;
            assert!(
                codec.open("{cc:x}:token", &bad).is_none(),
                "flipped byte {i}"
            );
            assert!(
                codec.open("{cc:x}:token", &value[..i]).is_none(),
                "cut at {i}"
            );
        }
        // Another key, or no key of that id.
        assert!(Codec::Encrypted(vec![key("k1", 8)])
            .open("{cc:x}:token", &value)
            .is_none());
        assert!(Codec::Encrypted(vec![key("k2", 7)])
            .open("{cc:x}:token", &value)
            .is_none());
        // Plaintext where encryption is expected, and the other way round.
        let plain = sealed(&Codec::Plaintext, "{cc:x}:token");
        assert!(codec.open("{cc:x}:token", &plain).is_none());
        assert!(Codec::Plaintext.open("{cc:x}:token", &value).is_none());
        // Oversized.
        let mut huge = plain.clone();
        huge.resize(MAX_VALUE_LEN + 1, b' ');
        assert!(Codec::Plaintext.open("{cc:x}:token", &huge).is_none());
        // Another record version, an unknown token type, not JSON.
        for json in [
            r#"{"v":2,"token":"t","type":"Bearer","lifetime_ms":1,"refresh_ms":1}"#,
            r#"{"v":1,"token":"t","type":"MAC","lifetime_ms":1,"refresh_ms":1}"#,
            "not json",
        ] {
            let mut value = vec![PLAINTEXT];
            value.extend_from_slice(json.as_bytes());
            assert!(
                Codec::Plaintext.open("{cc:x}:token", &value).is_none(),
                "{json}"
            );
        }
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_new_one() {
        let old = Codec::Encrypted(vec![key("2026-11", 1)]);
        let value = sealed(&old, "{cc:x}:token");
        let rotated = Codec::Encrypted(vec![key("2026-12", 2), key("2026-11", 1)]);
        assert!(rotated.open("{cc:x}:token", &value).is_some());
        let new = sealed(&rotated, "{cc:x}:token");
        assert_eq!(&new[2..9], b"2026-12");
        assert!(old.open("{cc:x}:token", &new).is_none());
    }

    #[test]
    fn the_longest_key_id_round_trips() {
        // The length check before the split counts the id's bytes once, not per nonce byte.
        let codec = Codec::Encrypted(vec![key(&"k".repeat(MAX_KEY_ID_LEN), 3)]);
        let value = sealed(&codec, "n");
        let opened = codec.open("n", &value).unwrap();
        assert_eq!(opened.token.access_token.secret(), "tok-secret-1");
        // One byte short of a tag after the id and the nonce: a miss, not a panic.
        let short = &value[..2 + MAX_KEY_ID_LEN + NONCE_LEN + TAG_LEN - 1];
        assert!(codec.open("n", short).is_none());
    }

    #[test]
    fn plaintext_is_versioned_too() {
        let value = sealed(&Codec::Plaintext, "n");
        assert_eq!(value[0], PLAINTEXT);
        let opened = Codec::Plaintext.open("n", &value).unwrap();
        assert_eq!(opened.token.access_token.secret(), "tok-secret-1");
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert!(EncryptionKey::new("k", &[0; 31]).is_err());
        assert!(EncryptionKey::new("", &[0; 32]).is_err());
        assert!(EncryptionKey::new("a b", &[0; 32]).is_err());
        assert!(EncryptionKey::new("k".repeat(65), &[0; 32]).is_err());
        assert!(EncryptionKey::from_base64("k", "not base64!").is_err());
        let key =
            EncryptionKey::from_base64("k", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA").unwrap();
        assert_eq!(format!("{key:?}"), r#"EncryptionKey { id: "k", .. }"#);
        // URL-safe and padded forms are read too.
        let url_safe = format!("{}w=", "_-".repeat(21));
        assert!(EncryptionKey::from_base64("k", &url_safe).is_ok());
    }
}
