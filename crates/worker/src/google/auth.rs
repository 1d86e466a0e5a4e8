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
use crate::{
    backend::Account,
    vault::{Column, Vault, VaultError},
};

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

    /// Google's `quotaUser` value to send with `account`'s calls (`None`: the caller's
    /// own principal is the user Google counts).
    fn quota_user(&self, _account: &Account) -> Option<String> {
        None
    }
}

/// Per-user OAuth: the student's refresh token from `google_credentials`, exchanged at
/// the token endpoint (`grant_type=refresh_token`) for an access token that is cached
/// in the same row until a minute before it expires. `invalid_grant` marks the
/// credentials revoked (the student must sign in again; nothing is retried until then).
///
/// Tokens are stored as envelopes ([`crate::vault`]): opened on use; one that is not
/// AEAD under the active key is re-encrypted in place (flagging nobody); one that
/// cannot be opened (wrong or missing key, corrupt) is `NeedsReauth` with the reason —
/// the user is marked `needs_reauth`, the worker carries on.
#[derive(Clone)]
pub struct UserRefreshTokens {
    client: GoogleClient,
    pool: PgPool,
    vault: Vault,
}

impl fmt::Debug for UserRefreshTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRefreshTokens").finish_non_exhaustive()
    }
}

impl UserRefreshTokens {
    /// Refresh through `client`'s token endpoint, with credentials in `pool`.
    pub fn new(client: GoogleClient, pool: PgPool, vault: Vault) -> UserRefreshTokens {
        UserRefreshTokens {
            client,
            pool,
            vault,
        }
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
                Err(GoogleError::NeedsReauth {
                    detail: format!("Google refused the refresh token ({detail})"),
                })
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

impl UserRefreshTokens {
    /// Replace a row's envelopes with AEAD ones under the active key (same token
    /// reference: flags nobody). A row changed meanwhile is left alone; a failure is only
    /// logged (the next use tries again).
    async fn reencrypt(
        &self,
        creds: &credentials::Credentials,
        token_ref: &str,
        refresh: &Secret,
        access: Option<&Secret>,
    ) {
        let user_id = creds.user_id;
        let new_refresh = self
            .vault
            .seal(user_id, Column::RefreshToken, token_ref, refresh);
        // Without a usable cached access token, the stale one is dropped.
        let new_access = access.map(|a| self.vault.seal(user_id, Column::AccessToken, "", a));
        if let Err(e) = credentials::replace_envelopes(
            &self.pool,
            user_id,
            &creds.refresh_token,
            &new_refresh,
            creds.access_token.as_ref(),
            new_access.as_ref(),
        )
        .await
        {
            tracing::warn!(user_id, error = %e, "could not re-encrypt stored credentials");
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
                detail: "Google refused the refresh token before (it is marked revoked)".into(),
            });
        }
        let unreadable = |e: VaultError| match e {
            VaultError::Database(d) => database(d),
            e => GoogleError::NeedsReauth {
                detail: format!("the stored Google credentials cannot be decrypted: {e}"),
            },
        };
        let refresh = self
            .vault
            .open(
                &self.pool,
                user_id,
                Column::RefreshToken,
                &creds.refresh_token,
            )
            .await
            .map_err(unreadable)?;
        let token_ref = Vault::token_ref(creds.refresh_token.expose()).to_string();
        let cached = match &creds.access_token {
            Some(env) if !force_refresh => self
                .vault
                .open(&self.pool, user_id, Column::AccessToken, env)
                .await
                .ok(),
            _ => None,
        };
        if let (Some(tok), Some(exp)) = (&cached, creds.access_token_expires_at)
            && exp > Utc::now() + chrono::Duration::seconds(60)
        {
            if refresh.stale || tok.stale {
                self.reencrypt(&creds, &token_ref, &refresh.secret, Some(&tok.secret))
                    .await;
            }
            return Ok(tok.secret.clone());
        }
        if refresh.stale {
            self.reencrypt(&creds, &token_ref, &refresh.secret, None)
                .await;
        }
        match self.refresh(&refresh.secret).await {
            Ok((token, expires_in)) => {
                let expires_at = Utc::now() + chrono::Duration::seconds(expires_in.max(0));
                let env = self.vault.seal(user_id, Column::AccessToken, "", &token);
                credentials::store_access_token(&self.pool, user_id, &env, expires_at)
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
