//! Authentication and CSRF: token login into a revocable server-side session (admin or
//! read-only role), bearer tokens for scripts, and per-session CSRF tokens.
//!
//! The cookie carries a random 256-bit session id; the database keeps its SHA-256 and a
//! keyed fingerprint (HMAC-SHA256 with the session secret) of the token that logged in.
//! A session is valid while its row exists, has not expired, and its fingerprint is the
//! current token's: logout deletes the row, and a restart with a rotated token (or an
//! unset role) invalidates every session the old token created.

use axum::http::{HeaderMap, header};
use calsync_domain::dashboard_sessions::{self as store, NewSession};
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

pub use calsync_domain::dashboard_sessions::Role;

use crate::error::PageError;

/// Name of the session cookie.
pub const COOKIE: &str = "calsync_session";
/// Session lifetime (absolute, from login).
pub const SESSION_SECS: i64 = 12 * 3600;

/// A session id as the cookie carries it (hex of 32 random bytes).
#[derive(Clone)]
pub struct SessionId([u8; 32]);

impl SessionId {
    fn random() -> SessionId {
        SessionId(rand::random())
    }

    fn parse(s: &str) -> Option<SessionId> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(SessionId(out))
    }

    fn cookie_value(&self) -> String {
        hex(&self.0)
    }

    /// What the database stores: SHA-256 of the id.
    fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An authenticated caller.
#[derive(Clone)]
pub struct Session {
    pub role: Role,
    /// The cookie session (`None` for bearer callers, who are not CSRF-able).
    id: Option<SessionId>,
}

impl Session {
    /// Whether the caller used a bearer token.
    pub fn bearer(&self) -> bool {
        self.id.is_none()
    }
}

/// What authenticating a request found.
pub enum Caller {
    /// A valid session or bearer token.
    Known(Session),
    /// No credentials at all.
    Anonymous,
    /// A bearer token that is not a configured token (a failed login).
    BadBearer,
}

type HmacSha256 = Hmac<Sha256>;

/// Tokens, the session secret, and what is derived from them.
pub struct Keys {
    secret: Vec<u8>,
    key_id: [u8; 32],
    admin_fp: Option<[u8; 32]>,
    readonly_fp: Option<[u8; 32]>,
}

impl Keys {
    /// Keys from the configured secret and tokens. The tokens themselves are not kept:
    /// only their keyed fingerprints, which is what a login is compared against.
    pub fn new(secret: &[u8], admin: Option<String>, readonly: Option<String>) -> Keys {
        let mut k = Keys {
            secret: secret.to_vec(),
            key_id: [0; 32],
            admin_fp: None,
            readonly_fp: None,
        };
        k.key_id = k.mac(&[b"calsync-dashboard-key-id"]);
        k.admin_fp = admin.map(|t| k.fingerprint(Role::Admin, &t));
        k.readonly_fp = readonly.map(|t| k.fingerprint(Role::ReadOnly, &t));
        k
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    fn fingerprint(&self, role: Role, token: &str) -> [u8; 32] {
        self.mac(&[b"token", role.as_str().as_bytes(), token.as_bytes()])
    }

    fn current_fp(&self, role: Role) -> Option<&[u8; 32]> {
        match role {
            Role::Admin => self.admin_fp.as_ref(),
            Role::ReadOnly => self.readonly_fp.as_ref(),
        }
    }

    /// The role a presented token grants. Compares fixed-length keyed fingerprints in
    /// constant time, against both roles, so timing tells neither length nor role.
    pub fn role_for_token(&self, token: &str) -> Option<Role> {
        let matches = |role: Role| -> bool {
            let fp = self.fingerprint(role, token);
            self.current_fp(role)
                .is_some_and(|cur| bool::from(cur.ct_eq(&fp)))
        };
        let admin = matches(Role::Admin);
        let readonly = matches(Role::ReadOnly);
        if admin {
            Some(Role::Admin)
        } else if readonly {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    /// The CSRF token of a session (empty for bearer callers).
    pub fn csrf_token(&self, session: &Session) -> String {
        match &session.id {
            Some(id) => hex(&self.mac(&[b"csrf", &id.0])),
            None => String::new(),
        }
    }

    /// Whether `given` is the session's CSRF token.
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        session.id.is_some()
            && bool::from(self.csrf_token(session).as_bytes().ct_eq(given.as_bytes()))
    }

    /// Start a session for `role`: store it and return the `Set-Cookie` value.
    pub async fn login(
        &self,
        pool: &PgPool,
        role: Role,
        client_addr: Option<&str>,
        secure: bool,
    ) -> Result<String, PageError> {
        let fp = self
            .current_fp(role)
            .ok_or_else(|| PageError::Forbidden("this role has no token".into()))?;
        // Housekeeping on the rare write path: expired sessions, and sessions of this
        // secret whose token has been rotated since.
        let purged = store::purge(
            pool,
            &self.key_id,
            self.admin_fp.as_ref().map(|f| f.as_slice()),
            self.readonly_fp.as_ref().map(|f| f.as_slice()),
        )
        .await?;
        if purged > 0 {
            tracing::info!(purged, "dashboard: removed expired or revoked sessions");
        }
        let id = SessionId::random();
        store::create(
            pool,
            &NewSession {
                id_hash: &id.hash(),
                role,
                key_id: &self.key_id,
                token_fingerprint: fp,
                client_addr,
                expires_at: Utc::now() + chrono::Duration::seconds(SESSION_SECS),
            },
        )
        .await?;
        Ok(format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
            id.cookie_value(),
            if secure { "; Secure" } else { "" }
        ))
    }

    /// End the session of a request (if it has one). Returns whether one was ended.
    pub async fn logout(&self, pool: &PgPool, session: &Session) -> Result<bool, PageError> {
        match &session.id {
            Some(id) => Ok(store::delete(pool, &id.hash()).await?),
            None => Ok(false),
        }
    }

    /// The `Set-Cookie` value that clears the session cookie.
    pub fn clear_cookie(secure: bool) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if secure { "; Secure" } else { "" }
        )
    }

    /// Who sent a request: a bearer token first, then the session cookie.
    pub async fn caller(&self, pool: &PgPool, headers: &HeaderMap) -> Result<Caller, PageError> {
        if let Some(token) = bearer_token(headers) {
            return Ok(match self.role_for_token(token) {
                Some(role) => Caller::Known(Session { role, id: None }),
                None => Caller::BadBearer,
            });
        }
        for id in session_cookies(headers) {
            if let Some(session) = self.check_session(pool, id).await? {
                return Ok(Caller::Known(session));
            }
        }
        Ok(Caller::Anonymous)
    }

    async fn check_session(
        &self,
        pool: &PgPool,
        id: SessionId,
    ) -> Result<Option<Session>, PageError> {
        let hash = id.hash();
        let Some(stored) = store::find(pool, &hash).await? else {
            return Ok(None);
        };
        let ours = bool::from(stored.key_id.as_slice().ct_eq(&self.key_id));
        let current = self
            .current_fp(stored.role)
            .is_some_and(|fp| bool::from(stored.token_fingerprint.as_slice().ct_eq(fp)));
        if ours && current {
            return Ok(Some(Session {
                role: stored.role,
                id: Some(id),
            }));
        }
        if ours {
            // Made with our secret by a token that is no longer the role's: revoked.
            store::delete(pool, &hash).await?;
            tracing::info!(
                role = stored.role.as_str(),
                "dashboard: ended a session of a rotated token"
            );
        }
        Ok(None)
    }
}

/// Whether the request carries an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = SessionId> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .filter_map(|(_, v)| SessionId::parse(v))
        .take(4)
}

/// Reject cross-origin form posts: an `Origin` header, when present, must name this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    origin_host.trim_end_matches('/') == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_roles_and_fingerprints_depend_on_the_secret() {
        let k = Keys::new(
            b"secret",
            Some("admin-token-xyz".into()),
            Some("ro-token-xyz".into()),
        );
        assert_eq!(k.role_for_token("admin-token-xyz"), Some(Role::Admin));
        assert_eq!(k.role_for_token("ro-token-xyz"), Some(Role::ReadOnly));
        assert_eq!(k.role_for_token("admin-token-xy"), None);
        assert_eq!(k.role_for_token(""), None);
        let other = Keys::new(b"other", Some("admin-token-xyz".into()), None);
        assert_ne!(k.admin_fp, other.admin_fp);
        assert_ne!(k.key_id, other.key_id);
        assert_eq!(other.role_for_token("ro-token-xyz"), None);
    }

    #[test]
    fn csrf_tokens_are_per_session_and_bearers_have_none() {
        let k = Keys::new(b"secret", Some("admin-token-xyz".into()), None);
        let a = Session {
            role: Role::Admin,
            id: Some(SessionId([1; 32])),
        };
        let b = Session {
            role: Role::Admin,
            id: Some(SessionId([2; 32])),
        };
        let bearer = Session {
            role: Role::Admin,
            id: None,
        };
        assert!(k.csrf_ok(&a, &k.csrf_token(&a)));
        assert!(!k.csrf_ok(&a, &k.csrf_token(&b)));
        assert!(!k.csrf_ok(&a, ""));
        assert!(!k.csrf_ok(&bearer, ""));
    }

    #[test]
    fn session_ids_round_trip_and_reject_junk() {
        let id = SessionId::random();
        let parsed = SessionId::parse(&id.cookie_value()).unwrap();
        assert_eq!(parsed.0, id.0);
        for junk in [
            "",
            "admin|9999999999|x|deadbeef",
            &"g".repeat(64),
            &"a".repeat(63),
        ] {
            assert!(SessionId::parse(junk).is_none(), "{junk}");
        }
    }
}
