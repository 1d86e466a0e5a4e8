//! Where access tokens come from. A [`TokenSource`] hands a session an access token for
//! the user it acts for; sessions ask again (forcing a refresh) once when Google rejects
//! a token. Today's mode is [`UserRefreshTokens`] (each student's OAuth refresh token,
//! access tokens cached in `google_credentials`); a service-account source (JWT-bearer
//! grant) implements the same trait without touching sessions or the sync engine.

use std::fmt;

use async_trait::async_trait;
use calsync_domain::{
    DomainError,
    credentials::{self, Secret},
};
use chrono::Utc;
use sqlx::PgPool;

use super::{
    GoogleClient,
    error::{GoogleError, record, retryable},
    method,
};
use crate::backend::Account;

/// Supplies access tokens for Google calls.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// A usable access token acting for `account`. `force_refresh`: Google rejected the
    /// last one, so do not hand out a cached token again.
    async fn access_token(
        &self,
        account: &Account,
        force_refresh: bool,
    ) -> Result<Secret, GoogleError>;
}

/// Per-user OAuth: the student's refresh token from `google_credentials`, exchanged at
/// the token endpoint (`grant_type=refresh_token`) for an access token that is cached
/// in the same row until a minute before it expires. `invalid_grant` marks the
/// credentials revoked (the student must sign in again; nothing is retried until then).
#[derive(Clone)]
pub struct UserRefreshTokens {
    client: GoogleClient,
    pool: PgPool,
}

impl fmt::Debug for UserRefreshTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRefreshTokens").finish_non_exhaustive()
    }
}

impl UserRefreshTokens {
    /// Refresh through `client`'s token endpoint, with credentials in `pool`.
    pub fn new(client: GoogleClient, pool: PgPool) -> UserRefreshTokens {
        UserRefreshTokens { client, pool }
    }

    /// POST grant_type=refresh_token to the token endpoint.
    async fn refresh(&self, refresh_token: &Secret) -> Result<(Secret, i64), GoogleError> {
        let cfg = self.client.config();
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", refresh_token.expose())
            .append_pair("client_id", &cfg.client_id)
            .append_pair("client_secret", cfg.client_secret.expose())
            .finish();
        let (status, json, started) = self.client.post_form(&cfg.token_url, form).await?;
        if (200..300).contains(&status)
            && let Some(tok) = json["access_token"].as_str()
        {
            record(method::TOKEN, "ok", started);
            return Ok((
                Secret::new(tok),
                json["expires_in"].as_i64().unwrap_or(3600),
            ));
        }
        let error = json["error"].as_str().unwrap_or("");
        let description = json["error_description"].as_str().unwrap_or("");
        let detail = format!("HTTP {status} {error} {description}")
            .trim()
            .to_string();
        match (status, error) {
            (_, "invalid_grant") => {
                record(method::TOKEN, "client_error", started);
                Err(GoogleError::NeedsReauth { detail })
            }
            (429, _) => {
                record(method::TOKEN, "rate_limited", started);
                Err(retryable(method::TOKEN, detail, true))
            }
            (s, _) if s >= 500 || json.is_null() => {
                record(method::TOKEN, "server_error", started);
                Err(retryable(method::TOKEN, detail, false))
            }
            _ => {
                record(method::TOKEN, "client_error", started);
                Err(GoogleError::OAuthClient { detail })
            }
        }
    }
}

fn database(e: DomainError) -> GoogleError {
    GoogleError::Database(e.to_string())
}

#[async_trait]
impl TokenSource for UserRefreshTokens {
    async fn access_token(
        &self,
        account: &Account,
        force_refresh: bool,
    ) -> Result<Secret, GoogleError> {
        let user_id = account.user_id;
        let creds = credentials::get(&self.pool, user_id)
            .await
            .map_err(|e| match e {
                DomainError::NoCredentials(_) => GoogleError::NeedsReauth {
                    detail: "no Google credentials on file".into(),
                },
                other => database(other),
            })?;
        if creds.revoked {
            return Err(GoogleError::NeedsReauth {
                detail: "refresh token previously refused".into(),
            });
        }
        if !force_refresh
            && let (Some(tok), Some(exp)) = (&creds.access_token, creds.access_token_expires_at)
            && exp > Utc::now() + chrono::Duration::seconds(60)
        {
            return Ok(tok.clone());
        }
        match self.refresh(&creds.refresh_token).await {
            Ok((token, expires_in)) => {
                let expires_at = Utc::now() + chrono::Duration::seconds(expires_in.max(0));
                credentials::store_access_token(&self.pool, user_id, &token, expires_at)
                    .await
                    .map_err(database)?;
                Ok(token)
            }
            Err(e @ GoogleError::NeedsReauth { .. }) => {
                credentials::mark_revoked(&self.pool, user_id)
                    .await
                    .map_err(database)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}
