//! Credentials at rest: opening and sealing the envelopes stored in
//! `google_credentials` (formats in [`calsync_domain::credentials`]).
//!
//! * `aead` envelopes: AES-256-GCM (`aes-gcm`) under one of the configured keys, named by
//!   key id; a random 96-bit nonce per value; the associated data binds the ciphertext
//!   to its user, column and token reference, so a value copied to another row or
//!   column does not open. New values use the active (first) key.
//! * `pgp` envelopes: sealed by the database with the registered public key; opened with
//!   the configured private key through pgcrypto (`credentials::unseal`).
//! * `plain` envelopes: legacy, written before a sealing key was registered.
//!
//! Anything but an `aead` envelope under the active key is re-encrypted when the worker
//! next uses it ([`Opened::stale`]), and by `calsync credentials rotate-key`. Without
//! configured keys the vault runs in legacy mode: it opens `plain` envelopes and writes
//! access tokens as `plain` envelopes — which the per-user mode allows only when told to
//! (`CALSYNC_CREDENTIALS_ALLOW_PLAINTEXT`, `config::GoogleAuth::oauth`; the worker then
//! warns at startup).

use std::{collections::BTreeMap, fmt};

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use calsync_domain::{
    DomainError,
    credentials::{self, Secret},
};
use sqlx::PgPool;

const PREFIX: &str = "calsync:v1:";

/// Which column a value lives in (part of the associated data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    RefreshToken,
    AccessToken,
}

impl Column {
    fn as_str(self) -> &'static str {
        match self {
            Column::RefreshToken => "refresh_token",
            Column::AccessToken => "access_token",
        }
    }
}

/// A configuration value for the vault that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error(
        "credentials key {0:?} is malformed: expected KEY_ID:BASE64 (32 random bytes, e.g. `openssl rand -base64 32`), comma- or newline-separated"
    )]
    Malformed(String),
    #[error(
        "a credentials key has no key id: expected KEY_ID:BASE64 (32 random bytes, e.g. `k1:$(openssl rand -base64 32)`), comma- or newline-separated"
    )]
    MissingKeyId,
    #[error("credentials key {kid:?} must be 32 bytes (AES-256), got {len}")]
    WrongLength { kid: String, len: usize },
    #[error("credentials key id {0:?} appears twice")]
    Duplicate(String),
    #[error("credentials key id {0:?} may only contain letters, digits, '-' and '_'")]
    BadKeyId(String),
}

/// The AEAD keys: the active one (first) encrypts, every one decrypts.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, [u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Parse `kid:base64,kid:base64` (or one per line); the first is the active key.
    pub fn parse(spec: &str) -> Result<Option<Keyring>, KeyringError> {
        let mut active = None;
        let mut keys = BTreeMap::new();
        for item in spec
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty() && !s.starts_with('#'))
        {
            // An item without `KEY_ID:` may be the key itself: never echo any of it.
            let (kid, b64) = item.split_once(':').ok_or(KeyringError::MissingKeyId)?;
            let kid = kid.trim();
            if kid.is_empty()
                || !kid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(KeyringError::BadKeyId(kid.to_string()));
            }
            let bytes = B64
                .decode(b64.trim())
                .map_err(|_| KeyringError::Malformed(kid.to_string()))?;
            let key: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyringError::WrongLength {
                        kid: kid.to_string(),
                        len: bytes.len(),
                    })?;
            if keys.insert(kid.to_string(), key).is_some() {
                return Err(KeyringError::Duplicate(kid.to_string()));
            }
            active.get_or_insert_with(|| kid.to_string());
        }
        Ok(active.map(|active| Keyring { active, keys }))
    }

    /// The key new values are encrypted with.
    pub fn active_key_id(&self) -> &str {
        &self.active
    }
}

/// Why a stored value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("not a calsync credentials envelope")]
    NotAnEnvelope,
    #[error("encrypted with key {0:?}, which this worker does not have (CALSYNC_CREDENTIALS_KEYS)")]
    UnknownKey(String),
    #[error("encrypted, but this worker has no credentials keys (CALSYNC_CREDENTIALS_KEYS)")]
    NoKeys,
    #[error("the ciphertext does not open with key {0:?} (corrupt, or copied from another row)")]
    Corrupt(String),
    #[error(
        "sealed by the database, but this worker has no sealing key (CALSYNC_CREDENTIALS_SEALING_KEY_FILE)"
    )]
    NoSealingKey,
    #[error("sealed by the database with a key this worker's sealing key does not open")]
    WrongSealingKey,
    #[error(transparent)]
    Database(#[from] DomainError),
}

impl VaultError {
    /// Whether the value itself cannot be opened (as opposed to the database failing).
    pub fn is_unreadable(&self) -> bool {
        !matches!(self, VaultError::Database(_))
    }
}

/// An opened value.
#[derive(Debug)]
pub struct Opened {
    pub secret: Secret,
    /// Not AEAD under the active key: re-encrypt it.
    pub stale: bool,
}

/// Keys for the credentials at rest.
#[derive(Clone, Default)]
pub struct Vault {
    keyring: Option<Keyring>,
    /// The sealing key's private half (ASCII-armored OpenPGP secret key).
    sealing_key: Option<Secret>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("keyring", &self.keyring)
            .field("sealing_key", &self.sealing_key.as_ref().map(|_| "set"))
            .finish()
    }
}

struct Parts<'a> {
    token_ref: &'a str,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Pgp(&'a str),
    Aead { kid: &'a str, data: &'a str },
    Plain(&'a str),
}

fn parse(envelope: &str) -> Result<Parts<'_>, VaultError> {
    let rest = envelope
        .strip_prefix(PREFIX)
        .ok_or(VaultError::NotAnEnvelope)?;
    let (token_ref, rest) = rest.split_once(':').ok_or(VaultError::NotAnEnvelope)?;
    let (kind, rest) = rest.split_once(':').ok_or(VaultError::NotAnEnvelope)?;
    let kind = match kind {
        "pgp" => Kind::Pgp(rest),
        "plain" => Kind::Plain(rest),
        "aead" => {
            let (kid, data) = rest.split_once(':').ok_or(VaultError::NotAnEnvelope)?;
            Kind::Aead { kid, data }
        }
        _ => return Err(VaultError::NotAnEnvelope),
    };
    Ok(Parts { token_ref, kind })
}

fn aad(user_id: i64, column: Column, token_ref: &str) -> String {
    format!("calsync:v1:{user_id}:{}:{token_ref}", column.as_str())
}

impl Vault {
    /// A vault with these keys (either may be absent).
    pub fn new(keyring: Option<Keyring>, sealing_key: Option<Secret>) -> Vault {
        Vault {
            keyring,
            sealing_key,
        }
    }

    /// Whether AEAD keys are configured (otherwise: legacy plain storage).
    pub fn encrypts(&self) -> bool {
        self.keyring.is_some()
    }

    /// The active key id, when keys are configured.
    pub fn active_key_id(&self) -> Option<&str> {
        self.keyring.as_ref().map(Keyring::active_key_id)
    }

    /// The configured credentials key ids, the active one first.
    pub fn key_ids(&self) -> Vec<String> {
        let Some(ring) = &self.keyring else {
            return Vec::new();
        };
        std::iter::once(ring.active.clone())
            .chain(ring.keys.keys().filter(|k| **k != ring.active).cloned())
            .collect()
    }

    /// Whether the key `key_id` is configured.
    pub fn has_key(&self, key_id: &str) -> bool {
        self.keyring
            .as_ref()
            .is_some_and(|r| r.keys.contains_key(key_id))
    }

    /// The sealing private key, when configured.
    pub fn sealing_key(&self) -> Option<&Secret> {
        self.sealing_key.as_ref()
    }

    /// The token reference of an envelope (`""` for access tokens and legacy values).
    pub fn token_ref(envelope: &str) -> &str {
        parse(envelope).map(|p| p.token_ref).unwrap_or("")
    }

    /// Open a stored envelope of `user_id`'s `column`.
    pub async fn open(
        &self,
        pool: &PgPool,
        user_id: i64,
        column: Column,
        envelope: &Secret,
    ) -> Result<Opened, VaultError> {
        let parts = parse(envelope.expose())?;
        let active = self.active_key_id();
        match parts.kind {
            Kind::Plain(token) => Ok(Opened {
                secret: Secret::new(token),
                stale: self.encrypts(),
            }),
            Kind::Pgp(data) => {
                let key = self.sealing_key.as_ref().ok_or(VaultError::NoSealingKey)?;
                let secret = credentials::unseal(pool, data, key)
                    .await?
                    .ok_or(VaultError::WrongSealingKey)?;
                Ok(Opened {
                    secret,
                    stale: self.encrypts(),
                })
            }
            Kind::Aead { kid, data } => {
                let ring = self.keyring.as_ref().ok_or(VaultError::NoKeys)?;
                let key = ring
                    .keys
                    .get(kid)
                    .ok_or_else(|| VaultError::UnknownKey(kid.to_string()))?;
                let raw = B64
                    .decode(data)
                    .map_err(|_| VaultError::Corrupt(kid.to_string()))?;
                if raw.len() < 12 + 16 {
                    return Err(VaultError::Corrupt(kid.to_string()));
                }
                let (nonce, ct) = raw.split_at(12);
                let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
                let nonce: [u8; 12] = nonce
                    .try_into()
                    .map_err(|_| VaultError::Corrupt(kid.to_string()))?;
                let aad = aad(user_id, column, parts.token_ref);
                let plain = cipher
                    .decrypt(
                        &Nonce::from(nonce),
                        Payload {
                            msg: ct,
                            aad: aad.as_bytes(),
                        },
                    )
                    .map_err(|_| VaultError::Corrupt(kid.to_string()))?;
                let secret =
                    String::from_utf8(plain).map_err(|_| VaultError::Corrupt(kid.to_string()))?;
                Ok(Opened {
                    secret: Secret::new(secret),
                    stale: active != Some(kid),
                })
            }
        }
    }

    /// The envelope calsync stores for `secret` in `user_id`'s `column` under the token
    /// reference `token_ref`: AEAD under the active key, or (no keys configured) a
    /// legacy `plain` envelope.
    pub fn seal(&self, user_id: i64, column: Column, token_ref: &str, secret: &Secret) -> Secret {
        let Some(ring) = &self.keyring else {
            return Secret::new(format!("{PREFIX}{token_ref}:plain:{}", secret.expose()));
        };
        let key = &ring.keys[&ring.active];
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key));
        let nonce: [u8; 12] = rand::random();
        let aad = aad(user_id, column, token_ref);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        Secret::new(format!(
            "{PREFIX}{token_ref}:aead:{}:{}",
            ring.active,
            B64.encode(raw)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap().unwrap()
    }

    #[test]
    fn keyrings_parse_with_the_first_key_active_and_never_echo_key_material() {
        let a = B64.encode([1u8; 32]);
        let b = B64.encode([2u8; 32]);
        let r = ring(&format!("k2:{b}, k1:{a}"));
        assert_eq!(r.active_key_id(), "k2");
        assert!(!format!("{r:?}").contains(&a));
        assert_eq!(Keyring::parse("  ").unwrap().map(|_| ()), None);
        let short = B64.encode([1u8; 16]);
        assert_eq!(
            Keyring::parse(&format!("k:{short}")).unwrap_err(),
            KeyringError::WrongLength {
                kid: "k".into(),
                len: 16
            }
        );
        let err = Keyring::parse(&format!("k1:{a},{b}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KEY_ID:BASE64"), "{err}");
        assert!(
            !err.contains(&b[..8]),
            "a key without id is never echoed: {err}"
        );
        assert!(matches!(
            Keyring::parse(&format!("k:{a},k:{b}")),
            Err(KeyringError::Duplicate(_))
        ));
        assert!(matches!(
            Keyring::parse(&format!("k y:{a}")),
            Err(KeyringError::BadKeyId(_))
        ));
    }

    #[tokio::test]
    async fn aead_envelopes_open_only_for_their_row_and_column_and_rotate() {
        // No database is touched for aead and plain envelopes.
        let pool = PgPool::connect_lazy("postgres://unused@127.0.0.1:1/x").unwrap();
        let k1 = B64.encode([1u8; 32]);
        let k2 = B64.encode([2u8; 32]);
        let old = Vault::new(Some(ring(&format!("k1:{k1}"))), None);
        let new = Vault::new(Some(ring(&format!("k2:{k2},k1:{k1}"))), None);
        let token = Secret::new("1//the-refresh-token");
        let env = old.seal(7, Column::RefreshToken, "r1", &token);
        assert!(!env.expose().contains("the-refresh-token"));
        assert_eq!(Vault::token_ref(env.expose()), "r1");
        let o = old
            .open(&pool, 7, Column::RefreshToken, &env)
            .await
            .unwrap();
        assert_eq!(o.secret, token);
        assert!(!o.stale);
        let o = new
            .open(&pool, 7, Column::RefreshToken, &env)
            .await
            .unwrap();
        assert_eq!(o.secret, token);
        assert!(o.stale, "k1 is no longer the active key");
        assert!(matches!(
            old.open(&pool, 8, Column::RefreshToken, &env).await,
            Err(VaultError::Corrupt(_))
        ));
        assert!(matches!(
            old.open(&pool, 7, Column::AccessToken, &env).await,
            Err(VaultError::Corrupt(_))
        ));
        let only_k2 = Vault::new(Some(ring(&format!("k2:{k2}"))), None);
        assert!(matches!(
            only_k2.open(&pool, 7, Column::RefreshToken, &env).await,
            Err(VaultError::UnknownKey(_))
        ));
        let legacy = Vault::default();
        let plain = legacy.seal(7, Column::AccessToken, "", &token);
        let o = new
            .open(&pool, 7, Column::AccessToken, &plain)
            .await
            .unwrap();
        assert!(o.stale);
        assert!(matches!(
            legacy.open(&pool, 7, Column::RefreshToken, &env).await,
            Err(VaultError::NoKeys)
        ));
    }
}
