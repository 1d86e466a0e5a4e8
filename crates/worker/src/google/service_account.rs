//! Service-account access tokens: the OAuth 2.0 JWT-bearer grant
//! (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`) with an RS256 assertion
//! signed by the service account's key (`jsonwebtoken`).
//!
//! Tokens are cached per principal — the service account itself, or with domain-wide
//! delegation one per `sub` (the student's Workspace e-mail) — and refreshed five
//! minutes before they expire. A refresh is single-flight: concurrent sessions that
//! need the same principal's token wait for one token request and share its answer.
//! Every session sends `quotaUser=calsync-user-<id>`, so Google's per-user quota is
//! counted per student although one principal makes every call.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use calsync_domain::credentials::Secret;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{
    GoogleClient,
    auth::TokenSource,
    error::{GoogleError, record, retryable},
    method,
};
use crate::backend::Account;

/// The scope calsync asks for.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";
/// The JWT-bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Refresh a cached token when less than this is left.
const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A token obtained this recently is not refreshed again when a session reports it
/// rejected (another session just replaced it).
const FRESH: Duration = Duration::from_secs(30);

/// A service-account key file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "the service-account key is not JSON ({0}); expected the key file downloaded from the Google Cloud console"
    )]
    NotJson(String),
    #[error(
        "the service-account key has no {0:?} field; expected the JSON key file of a service account"
    )]
    Missing(&'static str),
    #[error("the service-account key's \"type\" is {0:?}, expected \"service_account\"")]
    WrongType(String),
    #[error("the service-account key's private_key is not a usable RSA PEM key ({0})")]
    BadPrivateKey(String),
}

/// A parsed service-account JSON key. `Debug` shows the e-mail and key id only.
#[derive(Clone)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key_id: Option<String>,
    private_key: Secret,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Parse and check a Google service-account JSON key (errors never quote the key).
    pub fn from_json(json: &str) -> Result<ServiceAccountKey, KeyError> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| KeyError::NotJson(format!("line {} column {}", e.line(), e.column())))?;
        let field = |name: &'static str| {
            v.get(name)
                .and_then(|x| x.as_str())
                .filter(|s| !s.is_empty())
                .ok_or(KeyError::Missing(name))
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("service_account") => {}
            Some(other) => return Err(KeyError::WrongType(other.chars().take(40).collect())),
            None => return Err(KeyError::Missing("type")),
        }
        let client_email = field("client_email")?.to_string();
        let private_key = Secret::new(field("private_key")?);
        ensure_crypto_provider();
        EncodingKey::from_rsa_pem(private_key.expose().as_bytes())
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Ok(ServiceAccountKey {
            client_email,
            private_key_id: v
                .get("private_key_id")
                .and_then(|x| x.as_str())
                .map(str::to_string),
            private_key,
        })
    }
}

/// jsonwebtoken needs a crypto provider chosen once per process.
fn ensure_crypto_provider() {
    // An Err only means a provider is installed already.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires: Instant,
    obtained: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// Access tokens of a service account (optionally acting for each student).
pub struct ServiceAccountTokens {
    client: GoogleClient,
    key: ServiceAccountKey,
    encoding_key: EncodingKey,
    /// Domain-wide delegation: act as the student (`sub` = their e-mail).
    delegate: bool,
    slots: Mutex<HashMap<Option<String>, Slot>>,
}

impl fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("key", &self.key)
            .field("delegate", &self.delegate)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Tokens for `key` through `client`'s token endpoint; `delegate`: one token per
    /// student (domain-wide delegation).
    pub fn new(
        client: GoogleClient,
        key: ServiceAccountKey,
        delegate: bool,
    ) -> Result<ServiceAccountTokens, KeyError> {
        ensure_crypto_provider();
        let encoding_key = EncodingKey::from_rsa_pem(key.private_key.expose().as_bytes())
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        Ok(ServiceAccountTokens {
            client,
            key,
            encoding_key,
            delegate,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The service account's e-mail.
    pub fn email(&self) -> &str {
        &self.key.client_email
    }

    fn slot(&self, sub: &Option<String>) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() > 10_000 {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry(sub.clone()).or_default().clone()
    }

    /// Exchange a fresh assertion for an access token.
    async fn fetch(&self, sub: Option<&str>) -> Result<(Secret, Duration), GoogleError> {
        let token_url = &self.client.config().token_url;
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: &self.key.client_email,
            scope: CALENDAR_SCOPE,
            aud: token_url,
            iat: now,
            exp: now + 3600,
            sub,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key.private_key_id.clone();
        let assertion =
            jsonwebtoken::encode(&header, &claims, &self.encoding_key).map_err(|e| {
                GoogleError::OAuthClient {
                    detail: format!("could not sign the service-account assertion: {e}"),
                }
            })?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER_GRANT)
            .append_pair("assertion", &assertion)
            .finish();
        let (status, json, started) = self.client.post_form(token_url, form).await?;
        if (200..300).contains(&status)
            && let Some(tok) = json["access_token"].as_str()
        {
            record(method::TOKEN, "ok", started);
            let secs = json["expires_in"].as_u64().unwrap_or(3600);
            return Ok((Secret::new(tok), Duration::from_secs(secs)));
        }
        let error = json["error"].as_str().unwrap_or("");
        let description = json["error_description"].as_str().unwrap_or("");
        let who = match sub {
            Some(s) => format!("service account {} acting for {s}", self.key.client_email),
            None => format!("service account {}", self.key.client_email),
        };
        let detail = format!("{who}: HTTP {status} {error} {description}")
            .trim()
            .to_string();
        match status {
            429 => {
                record(method::TOKEN, "rate_limited", started);
                Err(retryable(method::TOKEN, detail, true))
            }
            s if s >= 500 || json.is_null() => {
                record(method::TOKEN, "server_error", started);
                Err(retryable(method::TOKEN, detail, false))
            }
            _ => {
                // invalid_grant (key deleted or wrong, clock skew, unknown `sub`),
                // unauthorized_client (delegation not granted): configuration, not
                // something a retry or the student can fix.
                record(method::TOKEN, "client_error", started);
                Err(GoogleError::OAuthClient { detail })
            }
        }
    }
}

#[async_trait]
impl TokenSource for ServiceAccountTokens {
    async fn access_token(
        &self,
        account: &Account,
        force_refresh: bool,
    ) -> Result<Secret, GoogleError> {
        let sub = self.delegate.then(|| account.email.trim().to_lowercase());
        let slot = self.slot(&sub);
        // One refresh per principal at a time: the others wait here and then find the
        // token it obtained.
        let mut cached = slot.lock().await;
        let now = Instant::now();
        if let Some(c) = cached.as_ref() {
            let usable = c.expires > now + REFRESH_AHEAD;
            let just_obtained = now.duration_since(c.obtained) < FRESH;
            if usable && (!force_refresh || just_obtained) {
                return Ok(c.token.clone());
            }
        }
        let (token, lifetime) = self.fetch(sub.as_deref()).await?;
        let obtained = Instant::now();
        *cached = Some(Cached {
            token: token.clone(),
            expires: obtained + lifetime,
            obtained,
        });
        Ok(token)
    }

    fn quota_user(&self, account: &Account) -> Option<String> {
        Some(format!("calsync-user-{}", account.user_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_key_files_get_clear_errors_without_key_material() {
        assert!(matches!(
            ServiceAccountKey::from_json("{not json"),
            Err(KeyError::NotJson(_))
        ));
        assert_eq!(
            ServiceAccountKey::from_json(r#"{"type":"authorized_user"}"#).unwrap_err(),
            KeyError::WrongType("authorized_user".into())
        );
        assert_eq!(
            ServiceAccountKey::from_json(r#"{"type":"service_account","private_key":"x"}"#)
                .unwrap_err(),
            KeyError::Missing("client_email")
        );
        let err = ServiceAccountKey::from_json(
            r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nsecretsecret\n-----END PRIVATE KEY-----\n"}"#,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::BadPrivateKey(_)), "{err}");
        assert!(!err.to_string().contains("secretsecret"));
        let key =
            ServiceAccountKey::from_json(calsync_fake_google::test_keys::SERVICE_ACCOUNT_JSON)
                .unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }
}
