//! Authentication and CSRF: token login into an HMAC-signed session cookie (admin or
//! read-only role), bearer tokens for scripts, and per-session CSRF tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, including retry, discard, run now, sync now.
    Admin,
    /// Look, never touch.
    ReadOnly,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "readonly",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "readonly" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Session {
    pub role: Role,
    /// Per-session random value the CSRF token is bound to (empty for bearer callers).
    pub nonce: String,
    /// Whether the caller used a bearer token (not a cookie, so not CSRF-able).
    pub bearer: bool,
}

/// Name of the session cookie.
pub const COOKIE: &str = "calsync_session";
/// Session lifetime.
pub const SESSION_SECS: u64 = 12 * 3600;

/// HMAC-SHA256 (RFC 2104).
pub fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs and checks sessions.
#[derive(Clone)]
pub struct Keys {
    secret: Vec<u8>,
    admin: Option<String>,
    readonly: Option<String>,
}

impl Keys {
    /// Keys from the configured tokens and secret.
    pub fn new(secret: Vec<u8>, admin: Option<String>, readonly: Option<String>) -> Keys {
        Keys {
            secret,
            admin,
            readonly,
        }
    }

    /// The role a presented token grants.
    pub fn role_for_token(&self, token: &str) -> Option<Role> {
        let t = token.as_bytes();
        // Compare against both so timing does not tell which one exists.
        let admin = self
            .admin
            .as_deref()
            .is_some_and(|a| ct_eq(a.as_bytes(), t));
        let ro = self
            .readonly
            .as_deref()
            .is_some_and(|r| ct_eq(r.as_bytes(), t));
        if admin {
            Some(Role::Admin)
        } else if ro {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    /// A fresh session cookie value for `role`.
    pub fn issue(&self, role: Role) -> String {
        let nonce = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let payload = format!("{}|{}|{}", role.as_str(), now() + SESSION_SECS, nonce);
        let sig = hex(&hmac(&self.secret, payload.as_bytes()));
        format!("{payload}|{sig}")
    }

    /// Check a session cookie value.
    pub fn verify(&self, value: &str) -> Option<Session> {
        let (payload, sig) = value.rsplit_once('|')?;
        let want = hex(&hmac(&self.secret, payload.as_bytes()));
        if !ct_eq(want.as_bytes(), sig.as_bytes()) {
            return None;
        }
        let mut parts = payload.split('|');
        let role = Role::parse(parts.next()?)?;
        let expires: u64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_string();
        if expires < now() {
            return None;
        }
        Some(Session {
            role,
            nonce,
            bearer: false,
        })
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, session: &Session) -> String {
        hex(&hmac(
            &self.secret,
            format!("csrf|{}", session.nonce).as_bytes(),
        ))
    }

    /// Whether `given` is the session's CSRF token.
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        ct_eq(self.csrf_token(session).as_bytes(), given.as_bytes())
    }

    /// The caller of a request: bearer token first, then the session cookie.
    pub fn session_from(&self, headers: &HeaderMap) -> Option<Session> {
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return self.role_for_token(token.trim()).map(|role| Session {
                role,
                nonce: String::new(),
                bearer: true,
            });
        }
        let cookies = headers.get_all(header::COOKIE);
        for value in cookies.iter().filter_map(|v| v.to_str().ok()) {
            for pair in value.split(';') {
                if let Some((name, v)) = pair.trim().split_once('=')
                    && name == COOKIE
                    && let Some(s) = self.verify(v)
                {
                    return Some(s);
                }
            }
        }
        None
    }
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
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn sessions_are_signed_and_expire() {
        let k = Keys::new(b"secret".to_vec(), Some("adm".into()), Some("ro".into()));
        let cookie = k.issue(Role::Admin);
        let s = k.verify(&cookie).unwrap();
        assert_eq!(s.role, Role::Admin);
        let forged = cookie.replacen("admin", "readonly", 1);
        assert!(k.verify(&forged).is_none());
        let other = Keys::new(b"other".to_vec(), None, None);
        assert!(other.verify(&cookie).is_none());
        assert!(k.csrf_ok(&s, &k.csrf_token(&s)));
        assert!(!k.csrf_ok(&s, "nope"));
        assert_eq!(k.role_for_token("ro"), Some(Role::ReadOnly));
        assert_eq!(k.role_for_token("x"), None);
    }
}
