//! Google's OAuth 2.0 token endpoint (`POST /token`): the refresh-token grant (per-user
//! OAuth) and the JWT-bearer grant (service accounts, optionally with domain-wide
//! delegation), plus the scope check of access tokens.
//!
//! Followed: Google Identity "Using OAuth 2.0 for Server to Server Applications" (the
//! assertion is an RS256-signed JWT with `iss` = the service account's e-mail, `scope`
//! (space-delimited), `aud` = the token endpoint URL, `iat`, `exp` at most one hour after
//! `iat`, and `sub` = the impersonated user for domain-wide delegation; the request is
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`; the answer has
//! `access_token`, `expires_in`, `token_type` and no refresh token), RFC 7523, and the error
//! answers Google gives (as reported in client-library issue threads):
//! - bad signature / key not registered for the account: 400 `invalid_grant` "Invalid JWT Signature.";
//! - unknown `iss`: 400 `invalid_grant` "Invalid grant: account not found";
//! - wrong `aud`: 400 `invalid_grant` "Invalid JWT: Failed audience check. The right audience is &lt;token URL&gt;";
//! - `iat`/`exp` missing, expired, in the future or more than an hour apart: 400 `invalid_grant`
//!   "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable
//!   timeframe. Check your iat and exp values in the JWT claim.";
//! - `sub` for an account without domain-wide delegation: 401 `unauthorized_client`
//!   "Client is unauthorized to retrieve access tokens using this method, or client not
//!   authorized for any of the scopes requested.";
//! - no `scope`: 400 `invalid_scope`.
//!
//! Signatures are verified for real with `jsonwebtoken` (RustCrypto RSA backend) against the
//! public key registered for the service account.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, json_response, oauth_error};
use crate::state::{Principal, RefreshGrant, State, normalize_email};

/// `grant_type` of the JWT-bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The full Calendar scope.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";

/// Clock skew tolerated on `iat` (a client clock slightly ahead of the fake's).
const CLOCK_SKEW_SECS: i64 = 60;

/// A registered service account.
#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    pub key: DecodingKey,
    pub domain_wide_delegation: bool,
}

/// Parses an RSA public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM).
pub(crate) fn parse_public_key(pem: &str) -> Result<DecodingKey, String> {
    DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| format!("not an RSA public key PEM: {e}"))
}

/// Whether granted `scopes` allow a Calendar API `method` (Google: 403
/// `insufficientPermissions` otherwise).
pub(crate) fn scopes_allow(scopes: &[String], method: &str) -> bool {
    let read_only = matches!(
        method,
        "events.list"
            | "events.get"
            | "events.instances"
            | "calendars.get"
            | "acl.list"
            | "acl.get"
            | "calendarList.list"
            | "calendarList.get"
            | "colors.get"
    );
    let events = method.starts_with("events.");
    let calendar_list = method.starts_with("calendarList.");
    scopes.iter().any(|s| {
        let s = s
            .strip_prefix("https://www.googleapis.com/auth/")
            .unwrap_or(s);
        match s {
            "calendar" => true,
            "calendar.readonly" => read_only,
            "calendar.events" => events,
            "calendar.events.readonly" => events && read_only,
            "calendar.calendarlist" => calendar_list,
            "calendar.calendarlist.readonly" => calendar_list && read_only,
            "calendar.acls" => method.starts_with("acl."),
            "calendar.acls.readonly" => method.starts_with("acl.") && read_only,
            "calendar.calendars" => method.starts_with("calendars."),
            "calendar.calendars.readonly" => method == "calendars.get",
            _ => false,
        }
    })
}

fn form_param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// What the token endpoint answered: the response and the principal it was for.
pub(crate) struct TokenOutcome {
    pub response: Response,
    pub principal: Option<String>,
}

impl From<Response> for TokenOutcome {
    fn from(response: Response) -> Self {
        Self {
            response,
            principal: None,
        }
    }
}

fn token_response(access_token: &str, lifetime: std::time::Duration, scope: &str) -> Response {
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": lifetime.as_secs(),
            "token_type": "Bearer",
            "scope": scope,
        }),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}

/// Handles one token request. `token_urls` are the audiences accepted for assertions (the
/// URL the request was addressed to, and the fake's own token URL).
pub(crate) fn issue_token(
    st: &mut State,
    headers: &HeaderMap,
    body: &[u8],
    token_urls: &[String],
) -> TokenOutcome {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(grant_type) = form_param(&form, "grant_type") else {
        return oauth_error(
            400,
            "invalid_request",
            "Required parameter is missing: grant_type",
        )
        .into();
    };
    match grant_type {
        "refresh_token" => refresh_token_grant(st, headers, &form),
        JWT_BEARER_GRANT => jwt_bearer_grant(st, &form, token_urls),
        other => oauth_error(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        )
        .into(),
    }
}

/// `grant_type=refresh_token&refresh_token=..&client_id=..&client_secret=..`
fn refresh_token_grant(
    st: &mut State,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> TokenOutcome {
    // Client credentials may come in the form or as HTTP Basic auth.
    let basic_auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
    if form_param(form, "client_id").is_none() && !basic_auth {
        return oauth_error(
            400,
            "invalid_request",
            "Could not determine client ID from request.",
        )
        .into();
    }
    let Some(refresh_token) = form_param(form, "refresh_token") else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: refresh_token",
        )
        .into();
    };
    let email = match st.refresh_tokens.get(refresh_token) {
        Some(RefreshGrant {
            revoked: false,
            email,
        }) => email.clone(),
        _ => return oauth_error(400, "invalid_grant", "Token has been expired or revoked.").into(),
    };
    let principal = Principal::User {
        refresh_token: refresh_token.to_string(),
        email,
    };
    let label = principal.label("");
    let (access_token, lifetime) = st.issue_access_token(principal, None);
    TokenOutcome {
        response: token_response(&access_token, lifetime, CALENDAR_SCOPE),
        principal: Some(label),
    }
}

/// The claims Google reads from a service-account assertion.
#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    scope: Option<String>,
    aud: Option<Value>,
    iat: Option<i64>,
    exp: Option<i64>,
    sub: Option<String>,
}

fn invalid_grant(description: &str) -> TokenOutcome {
    oauth_error(400, "invalid_grant", description).into()
}

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`
fn jwt_bearer_grant(
    st: &mut State,
    form: &[(String, String)],
    token_urls: &[String],
) -> TokenOutcome {
    let Some(assertion) = form_param(form, "assertion") else {
        return oauth_error(
            400,
            "invalid_request",
            "Missing required parameter: assertion",
        )
        .into();
    };
    // Read the claims first (unverified) to find whose key must have signed them.
    let header = match jsonwebtoken::decode_header(assertion) {
        Ok(header) => header,
        Err(_) => return invalid_grant("Invalid JWT: malformed assertion."),
    };
    if header.alg != Algorithm::RS256 {
        return invalid_grant("Invalid JWT Signature.");
    }
    let unverified: Claims = match jsonwebtoken::dangerous::insecure_decode::<Claims>(assertion) {
        Ok(data) => data.claims,
        Err(_) => return invalid_grant("Invalid JWT: malformed assertion."),
    };
    let Some(iss) = unverified.iss.as_deref().map(normalize_email) else {
        return invalid_grant("Invalid JWT: missing iss.");
    };
    let Some(account) = st.service_accounts.get(&iss) else {
        return invalid_grant("Invalid grant: account not found");
    };
    ensure_crypto_provider();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &account.key, &validation) {
        Ok(data) => data.claims,
        Err(_) => return invalid_grant("Invalid JWT Signature."),
    };
    let aud_ok =
        matches!(&claims.aud, Some(Value::String(aud)) if token_urls.iter().any(|u| u == aud));
    if !aud_ok {
        let right = token_urls.first().map_or("", String::as_str);
        return invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {right}"
        ));
    }
    let now = chrono::Utc::now().timestamp();
    let times_ok = match (claims.iat, claims.exp) {
        (Some(iat), Some(exp)) => {
            exp > iat && exp - iat <= 3600 && exp > now && iat <= now + CLOCK_SKEW_SECS
        }
        _ => false,
    };
    if !times_ok {
        return invalid_grant(SHORT_LIVED);
    }
    let scopes: Vec<String> = claims
        .scope
        .as_deref()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        )
        .into();
    }
    let principal = match claims.sub.as_deref().map(normalize_email) {
        None => Principal::ServiceAccount { email: iss },
        Some(_) if !account.domain_wide_delegation => {
            return oauth_error(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client \
                 not authorized for any of the scopes requested.",
            )
            .into();
        }
        Some(sub) if !crate::acl::is_email(&sub) => {
            return invalid_grant("Invalid email or User ID");
        }
        Some(sub) => Principal::Delegated {
            service_account: iss,
            subject: sub,
        },
    };
    let label = principal.label("");
    let scope = scopes.join(" ");
    let (access_token, lifetime) = st.issue_access_token(principal, Some(scopes));
    TokenOutcome {
        response: token_response(&access_token, lifetime, &scope),
        principal: Some(label),
    }
}

/// Makes sure jsonwebtoken has a crypto provider even if another crate in the process
/// enabled a second backend feature (it then refuses to pick one by itself).
fn ensure_crypto_provider() {
    // An Err only means a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// An authenticated caller: the principal and the label for logs and per-user quotas.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    pub label: String,
}

impl State {
    /// Validates the `Authorization: Bearer ..` header and the token's scopes for `method`.
    pub fn authenticate(&self, headers: &HeaderMap, method: &str) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::login_required());
        };
        let value = value.to_str().map_err(|_| ApiError::auth_error())?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::auth_error()),
        };
        let Some(access) = self
            .access_tokens
            .get(token)
            .filter(|t| t.expires_at > tokio::time::Instant::now())
        else {
            return Err(ApiError::auth_error());
        };
        if let Some(scopes) = &access.scopes
            && !scopes_allow(scopes, method)
        {
            return Err(ApiError::insufficient_permissions());
        }
        let mut principal = access.principal.clone();
        // The e-mail of a refresh-token user may have been registered after the token was issued.
        if let Principal::User {
            refresh_token,
            email,
        } = &mut principal
            && let Some(grant) = self.refresh_tokens.get(refresh_token.as_str())
        {
            email.clone_from(&grant.email);
        }
        let label = principal.label(token);
        Ok(Caller { principal, label })
    }
}
